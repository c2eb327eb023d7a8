"""A dataset folder (docs/data.md), read into flat integer arrays and validated.

Files (Parquet):
  concepts.parquet   concept_id (str), name (str), optional group (str),
                     optional negated_name (str; else `negation_template` makes it)
  relations.parquet  head_id, tail_id, relation (str)   -- the training graph
  heldout_relations.parquet (optional, same columns)    -- edges kept out of training,
                     for evaluation; must not appear in relations.parquet
  pairs.parquet      pair_id, text, concept_ids (list<str>), negated (list<bool>),
                     rho (float in (0, 1]), split (train/valid/test), optional label,
                     optional true_concept_ids (list<str>, synthetic data only),
                     optional synthetic (bool)

Every check raises `DataError` naming the file, the row and the field. Nothing is
dropped: a bad row stops the load, so that the user fixes the data rather than losing it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from typing import Dict, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from line_jax.data import textfile
from line_jax.util.digest import hash_strings
from line_jax.util.files import read_json_or_none

SPLITS = ("train", "valid", "test")
DEFAULT_NEGATION_TEMPLATE = "{name} unobserved"


class DataError(ValueError):
  """Bad input data; the message names the file, the row and the field."""


def iter_json_lines(path: str, error: type = None):
  """(line number, object) of each non-blank line of a JSON-lines file; a line that is not
  UTF-8 (`line_jax.data.textfile`), not JSON, or not a JSON object, and a Parquet file,
  raise `error` (default DataError) naming the file and the line."""
  error = error or DataError
  if textfile.sniff(path) == "parquet":
    raise error(f"{path}: line 1: not JSON lines: {textfile.looks_like(path)[2:]}")
  for number, line in textfile.lines(path, error):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise error(f"{path}: line {number}: not JSON ({e})") from None
    if not isinstance(obj, dict):
      raise error(f"{path}: line {number}: not a JSON object")
    yield number, obj


def data_error(path: str, row: Optional[int], field: str, problem: str) -> DataError:
  where = f"{path}: " + (f"row {row}, " if row is not None else "") + f"field '{field}'"
  return DataError(f"{where}: {problem}")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Concepts, graph and pairs with string ids replaced by row indices into `concept_ids`."""
  root: str
  concept_ids: np.ndarray          # [C] object (str)
  names: np.ndarray                # [C] object (str)
  negated_names: np.ndarray        # [C] object (str)
  groups: Optional[np.ndarray]     # [C] object (str) or None
  relation_types: tuple            # sorted relation names; edge_type indexes this
  edge_head: np.ndarray            # [E] int32
  edge_tail: np.ndarray            # [E] int32
  edge_type: np.ndarray            # [E] int32
  heldout_head: np.ndarray         # [H] int32
  heldout_tail: np.ndarray         # [H] int32
  heldout_relation: np.ndarray     # [H] object (str); may hold types absent from training
  pair_ids: np.ndarray             # [P] object (str)
  texts: np.ndarray                # [P] object (str)
  concept_offsets: np.ndarray      # [P + 1] int64; pair i owns flat[offsets[i]:offsets[i+1]]
  concept_flat: np.ndarray         # [sum m_i] int32
  negated_flat: np.ndarray         # [sum m_i] bool
  rho: np.ndarray                  # [P] float32
  split: np.ndarray                # [P] object (str)
  labels: Optional[np.ndarray]     # [P] or None
  true_offsets: Optional[np.ndarray] = None   # [P + 1] int64 (synthetic truth)
  true_flat: Optional[np.ndarray] = None      # [sum] int32
  synthetic: Optional[np.ndarray] = None      # [P] bool
  heldout_concepts: Optional[np.ndarray] = None   # [k] int32 entries kept out of training
                                                  # (`line_jax.data.heldout_terms`)

  @property
  def num_concepts(self) -> int:
    return len(self.concept_ids)

  @property
  def num_pairs(self) -> int:
    return len(self.pair_ids)

  def split_indices(self, name: str) -> np.ndarray:
    return np.flatnonzero(self.split == name).astype(np.int64)

  def pair_concepts(self, i: int):
    s, e = self.concept_offsets[i], self.concept_offsets[i + 1]
    return self.concept_flat[s:e], self.negated_flat[s:e]

  def concept_index(self) -> dict:
    return {cid: i for i, cid in enumerate(self.concept_ids)}

  def data_hash(self) -> str:
    """Hash of every string a teacher embeds, in order: texts, names, negated names."""
    h = hashlib.sha256()
    for block in (self.texts, self.names, self.negated_names):
      hash_strings(h, block)
    return h.hexdigest()[:16]


def read_table(path: str, columns: Optional[Sequence[str]] = None) -> pa.Table:
  """`pq.read_table`, a damaged or cut-short file (or one that is not Parquet) raising
  DataError naming it."""
  try:
    return pq.read_table(path, columns=columns)
  except (pa.ArrowInvalid, OSError) as e:
    if isinstance(e, FileNotFoundError):
      raise
    raise DataError(f"{path}: not a readable Parquet file ({e}); the file is damaged or cut "
                    "short, or not Parquet") from None


def optional_column(table: pa.Table, name: str, default=None):
  """Column `name` of `table` as a Python list, or `default` when the table has none: an
  optional column of a dataset table."""
  return table.column(name).to_pylist() if name in table.column_names else default


def read_optional_columns(path: str, names: Sequence[str]) -> Dict[str, np.ndarray]:
  """{name: object array} of those of `names` that the Parquet file `path` has (none when
  the file is missing): optional columns read without loading the whole table."""
  if not os.path.exists(path):
    return {}
  present = [n for n in names if n in pq.read_schema(path).names]
  if not present:
    return {}
  table = read_table(path, present)
  return {n: np.asarray(table.column(n).to_pylist(), dtype=object) for n in present}


def _read(path: str, required: Sequence[str]) -> pa.Table:
  if not os.path.exists(path):
    raise DataError(f"{path}: file not found (a dataset folder needs concepts.parquet, "
                    "relations.parquet and pairs.parquet; see docs/data.md)")
  table = read_table(path)
  require_columns(path, table, required)
  return table


def require_columns(path: str, table: pa.Table, names: Sequence[str]) -> None:
  """DataError naming the file and the first of `names` that `table` lacks."""
  for col in names:
    if col not in table.column_names:
      raise data_error(path, None, col, f"missing column; found {table.column_names}")


def _check_strings(path, table, field):
  col = table.column(field)
  nulls = pc.is_null(col)
  if pc.any(nulls).as_py():
    raise data_error(path, int(np.flatnonzero(nulls.to_numpy(zero_copy_only=False))[0]),
                     field, "missing value")
  if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
    raise data_error(path, None, field, f"expected strings, got {col.type}")


def _check_type(path, table, field, ok, expected: str):
  """DataError naming the file, the first row and the field when the column's type is not
  the `expected` one (e.g. "yes"/"no" strings where booleans belong)."""
  col = table.column(field)
  if not ok(col.type):
    first = next((v for v in col.to_pylist() if v is not None), None)
    raise data_error(path, 0 if table.num_rows else None, field,
                     f"expected {expected}, got {col.type} (first value {first!r})")


def _is_string(t) -> bool:
  return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_list_of(t, inner) -> bool:
  return (pa.types.is_list(t) or pa.types.is_large_list(t)) and inner(t.value_type)


def _first(mask: np.ndarray) -> int:
  return int(np.flatnonzero(mask)[0])


def _lookup(path, field, ids: pa.Array, concept_arr: pa.Array, row_of_flat: np.ndarray):
  idx = pc.index_in(ids, value_set=concept_arr)
  if idx.null_count:
    bad = _first(pc.is_null(idx).to_numpy(zero_copy_only=False))
    raise data_error(path, int(row_of_flat[bad]), field,
                     f"unknown concept id {ids[bad].as_py()!r} (not in concepts.parquet)")
  return idx.to_numpy(zero_copy_only=False).astype(np.int32)


def _list_column(path, table, field, concept_arr, check_nonempty=True):
  _check_type(path, table, field, lambda t: _is_list_of(t, _is_string), "a list of strings")
  col = table.column(field).combine_chunks()
  if col.null_count:
    raise data_error(path, _first(pc.is_null(col).to_numpy(zero_copy_only=False)), field,
                     "missing list")
  lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
  if check_nonempty and (lengths == 0).any():
    raise data_error(path, _first(lengths == 0), field, "empty concept list")
  offsets = np.zeros(len(lengths) + 1, np.int64)
  np.cumsum(lengths, out=offsets[1:])
  flat = pc.list_flatten(col)
  row_of_flat = np.repeat(np.arange(len(lengths)), lengths)
  if flat.null_count:
    raise data_error(path, int(row_of_flat[_first(pc.is_null(flat).to_numpy(
        zero_copy_only=False))]), field, "null concept id inside the list")
  return offsets, _lookup(path, field, flat, concept_arr, row_of_flat), lengths


def _check_complete(root: str) -> None:
  """DataError when the builder's marker (`line_jax.data.atomic`) says that it was stopped
  while moving its files into `root` (old and new files may be mixed)."""
  path = os.path.join(root, "built_by.json")
  marker = read_json_or_none(path)
  if isinstance(marker, dict) and marker.get("complete") is False:
    raise DataError(f"{path}: the {marker.get('builder')} build was stopped while moving its "
                    "files into this folder (old and new files may be mixed); run it again")


def check_max_concepts_per_pair(value) -> None:
  """config data.max_concepts_per_pair: an integer >= 1."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"data.max_concepts_per_pair={value!r} must be an integer >= 1 "
                     "(longer concept lists are cut to it)")


def ignored_edges(head: np.ndarray, tail: np.ndarray, etype: np.ndarray):
  """(rows other than self loops that repeat an earlier row's head, tail and relation;
  self loops, head = tail): the edges the training graph (`line_jax.model.graph.NeighbourTable`)
  does not add."""
  loop = head == tail
  head, tail, etype = head[~loop], tail[~loop], etype[~loop]
  loops = int(loop.sum())
  if len(head) < 2:
    return 0, loops
  order = np.lexsort((tail, head, etype))
  h, t, k = head[order], tail[order], etype[order]
  repeats = int(((h[1:] == h[:-1]) & (t[1:] == t[:-1]) & (k[1:] == k[:-1])).sum())
  return repeats, loops


def _log_ignored_edges(path: str, head, tail, etype) -> None:
  repeats, loops = ignored_edges(head, tail, etype)
  if repeats or loops:
    logging.warning("%s: %d of %d rows repeat an earlier row (same head_id, tail_id and "
                    "relation) and %d are self loops (head_id = tail_id); the graph has "
                    "each edge once and every concept's self loop already, so they add "
                    "nothing", path, repeats, len(head), loops)


def _read_concepts(root: str, negation_template: str):
  """concepts.parquet: (Arrow ids, ids, names, negated names, groups or None)."""
  cpath = os.path.join(root, "concepts.parquet")
  ct = _read(cpath, ["concept_id", "name"])
  _check_strings(cpath, ct, "concept_id")
  _check_strings(cpath, ct, "name")
  concept_arr = ct.column("concept_id").combine_chunks()
  concept_ids = np.asarray(concept_arr.to_pylist(), dtype=object)
  uniq, counts = np.unique(concept_ids.astype(str), return_counts=True)
  if (counts > 1).any():
    dup = uniq[counts > 1][0]
    rows = np.flatnonzero(concept_ids.astype(str) == dup)
    raise data_error(cpath, int(rows[1]), "concept_id",
                     f"duplicate id {str(dup)!r} (first at row {int(rows[0])})")
  names = np.asarray(ct.column("name").to_pylist(), dtype=object)
  empty = np.array([not n.strip() for n in names], bool)
  if empty.any():
    raise data_error(cpath, _first(empty), "name", "empty name")
  if "negated_name" in ct.column_names:
    _check_strings(cpath, ct, "negated_name")
    negated_names = np.asarray(ct.column("negated_name").to_pylist(), dtype=object)
  else:
    negated_names = np.asarray([negation_template.format(name=n) for n in names], object)
  groups = optional_column(ct, "group")
  if groups is not None:
    groups = np.asarray([g if g is not None else "" for g in groups], dtype=object)
  return concept_arr, concept_ids, names, negated_names, groups


def _read_edges(path: str):
  """(table, relation names) of a relations file with string head_id, tail_id, relation."""
  table = _read(path, ["head_id", "tail_id", "relation"])
  for f in ("head_id", "tail_id", "relation"):
    _check_strings(path, table, f)
  return table, np.asarray(table.column("relation").to_pylist(), dtype=object)


def _edge_rows(path: str, table: pa.Table, concept_arr: pa.Array):
  """(head, tail) concept rows of a relations table; DataError at the first unknown id."""
  rows = np.arange(table.num_rows)
  head = _lookup(path, "head_id", table.column("head_id").combine_chunks(), concept_arr, rows)
  tail = _lookup(path, "tail_id", table.column("tail_id").combine_chunks(), concept_arr, rows)
  return head, tail


def _relation_types(rpath: str, rel_names: np.ndarray,
                    relations: Optional[Sequence[str]]) -> tuple:
  """The allowed relation types (every one found when `relations` is None); DataError at
  the first edge of another type."""
  if relations is None:
    return tuple(sorted(set(rel_names.tolist())))
  allowed = list(relations)
  bad = np.array([r not in set(allowed) for r in rel_names], bool)
  if bad.any():
    raise data_error(rpath, _first(bad), "relation",
                     f"relation {rel_names[_first(bad)]!r} is not in the config's "
                     f"graph.relations {allowed}")
  return tuple(allowed)


def _read_graph(root: str, concept_arr: pa.Array, relations: Optional[Sequence[str]]):
  """relations.parquet: (relation types, head, tail, type of each edge)."""
  rpath = os.path.join(root, "relations.parquet")
  rt, rel_names = _read_edges(rpath)
  if rt.num_rows == 0:
    raise data_error(rpath, None, "head_id", "no edges: the training graph needs at least "
                     "one relation")
  relation_types = _relation_types(rpath, rel_names, relations)
  head, tail = _edge_rows(rpath, rt, concept_arr)
  type_index = {r: i for i, r in enumerate(relation_types)}
  etype = np.asarray([type_index[r] for r in rel_names], np.int32)
  _log_ignored_edges(rpath, head, tail, etype)
  return relation_types, head, tail, etype


def _read_heldout(root: str, concept_arr: pa.Array, head: np.ndarray, tail: np.ndarray):
  """heldout_relations.parquet (optional): (head, tail, relation); DataError for an edge
  that is also a training edge, in either direction."""
  hpath = os.path.join(root, "heldout_relations.parquet")
  if not os.path.exists(hpath):
    return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, object)
  ht, h_rel = _read_edges(hpath)
  h_head, h_tail = _edge_rows(hpath, ht, concept_arr)
  n = len(concept_arr)
  train_keys = set((np.minimum(head, tail).astype(np.int64) * n
                    + np.maximum(head, tail)).tolist())
  h_keys = np.minimum(h_head, h_tail).astype(np.int64) * n + np.maximum(h_head, h_tail)
  leak = np.array([k in train_keys for k in h_keys.tolist()], bool)
  if leak.any():
    raise data_error(hpath, _first(leak), "head_id",
                     "held-out edge also present in relations.parquet (either direction); "
                     "held-out edges must be removed from the training graph")
  return h_head, h_tail, h_rel


def _read_negated(ppath: str, pt: pa.Table, lengths: np.ndarray) -> np.ndarray:
  """The flat negation flags of pairs.parquet, one per concept id of each list."""
  _check_type(ppath, pt, "negated", lambda t: _is_list_of(t, pa.types.is_boolean),
              "a list of booleans")
  neg = pt.column("negated").combine_chunks()
  if neg.null_count:
    raise data_error(ppath, _first(pc.is_null(neg).to_numpy(zero_copy_only=False)),
                     "negated", "missing list")
  neg_len = pc.list_value_length(neg).to_numpy(zero_copy_only=False).astype(np.int64)
  if (neg_len != lengths).any():
    r = _first(neg_len != lengths)
    raise data_error(ppath, r, "negated",
                     f"length {neg_len[r]} differs from concept_ids length {lengths[r]}")
  neg_flat_arr = pc.list_flatten(neg)
  if neg_flat_arr.null_count:
    raise data_error(ppath, int(np.repeat(np.arange(len(lengths)), lengths)[
        _first(pc.is_null(neg_flat_arr).to_numpy(zero_copy_only=False))]), "negated",
                     "null inside the list")
  return neg_flat_arr.to_numpy(zero_copy_only=False).astype(bool)


def _read_rho_and_split(ppath: str, pt: pa.Table):
  """(rho [P] float64 in (0, 1], split [P] one of SPLITS) of pairs.parquet."""
  _check_type(ppath, pt, "rho", lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
              "numbers")
  rho = pt.column("rho").to_numpy(zero_copy_only=False).astype(np.float64)
  bad = ~np.isfinite(rho) | (rho <= 0) | (rho > 1)
  if bad.any():
    r = _first(bad)
    raise data_error(ppath, r, "rho", f"value {rho[r]!r} outside (0, 1]")
  split = np.asarray(pt.column("split").to_pylist(), dtype=object)
  bad = np.array([s not in SPLITS for s in split], bool)
  if bad.any():
    r = _first(bad)
    raise data_error(ppath, r, "split", f"value {split[r]!r} is not one of {SPLITS}")
  return rho, split


def _read_pairs(root: str, concept_arr: pa.Array) -> dict:
  """pairs.parquet as the pair fields of `Dataset`."""
  ppath = os.path.join(root, "pairs.parquet")
  pt = _read(ppath, ["pair_id", "text", "concept_ids", "negated", "rho", "split"])
  _check_strings(ppath, pt, "text")
  pair_ids = np.asarray([str(p) for p in pt.column("pair_id").to_pylist()], dtype=object)
  if len(set(pair_ids.tolist())) != len(pair_ids):
    _, inv, cnt = np.unique(pair_ids.astype(str), return_inverse=True, return_counts=True)
    raise data_error(ppath, _first(cnt[inv] > 1), "pair_id", "duplicate pair_id")
  texts = np.asarray(pt.column("text").to_pylist(), dtype=object)
  empty_text = np.array([not t.strip() for t in texts], bool)
  if empty_text.any():
    raise data_error(ppath, _first(empty_text), "text", "empty text")
  offsets, flat, lengths = _list_column(ppath, pt, "concept_ids", concept_arr)
  neg_flat = _read_negated(ppath, pt, lengths)
  rho, split = _read_rho_and_split(ppath, pt)
  labels = optional_column(pt, "label")
  true_offsets = true_flat = None
  if "true_concept_ids" in pt.column_names:
    true_offsets, true_flat, _ = _list_column(ppath, pt, "true_concept_ids", concept_arr,
                                              check_nonempty=False)
  synthetic = None
  if "synthetic" in pt.column_names:
    synthetic = pt.column("synthetic").to_numpy(zero_copy_only=False).astype(bool)
  return dict(pair_ids=pair_ids, texts=texts, concept_offsets=offsets, concept_flat=flat,
              negated_flat=neg_flat, rho=rho.astype(np.float32), split=split,
              labels=None if labels is None else np.asarray(labels, dtype=object),
              true_offsets=true_offsets, true_flat=true_flat, synthetic=synthetic)


def load_dataset(root: str, relations: Optional[Sequence[str]] = None,
                 negation_template: str = DEFAULT_NEGATION_TEMPLATE) -> Dataset:
  """Reads and validates a dataset folder.

  Args:
    root: the folder.
    relations: allowed relation types (the config's `graph.relations`); None allows every
      type found in relations.parquet. A relation not in the list is an error.
    negation_template: surface form of a negated concept when concepts.parquet has no
      `negated_name` column.
  """
  root = os.path.abspath(root)
  _check_complete(root)
  concept_arr, concept_ids, names, negated_names, groups = _read_concepts(
      root, negation_template)
  relation_types, head, tail, etype = _read_graph(root, concept_arr, relations)
  h_head, h_tail, h_rel = _read_heldout(root, concept_arr, head, tail)
  return Dataset(
      root=root, concept_ids=concept_ids, names=names, negated_names=negated_names,
      groups=groups, relation_types=relation_types, edge_head=head, edge_tail=tail,
      edge_type=etype, heldout_head=h_head, heldout_tail=h_tail, heldout_relation=h_rel,
      **_read_pairs(root, concept_arr))


def write_dataset(root: str, concepts: dict, relations: dict, pairs: dict,
                  heldout_relations: Optional[dict] = None) -> None:
  """Writes column dicts (name -> list/array) as the dataset's Parquet files."""
  os.makedirs(root, exist_ok=True)
  pq.write_table(pa.table(concepts), os.path.join(root, "concepts.parquet"))
  pq.write_table(pa.table(relations), os.path.join(root, "relations.parquet"))
  pq.write_table(pa.table(pairs), os.path.join(root, "pairs.parquet"))
  if heldout_relations is not None:
    pq.write_table(pa.table(heldout_relations),
                   os.path.join(root, "heldout_relations.parquet"))
