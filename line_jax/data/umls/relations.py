"""MRREL of a UMLS release as integer edges of the seven relation families, and the edge
views the held-out split reads (without a Python tuple per edge)."""

from __future__ import annotations

import collections
import logging
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from line_jax.data import rrf
from line_jax.data.dataset import DataError

FAMILIES = ("parent_child", "synonym", "related", "broad", "narrow", "other", "quantifiable")
# Families whose edges have no direction: (A, B) and (B, A) are one edge.
SYMMETRIC = ("synonym", "related", "other", "quantifiable")


def _family_codes(config) -> tuple:
  """(REL codes known, {kept REL code: family index}); ValueError for a family that is not
  one of FAMILIES."""
  families = config.rel_families.to_dict()
  bad_family = sorted(set(families.values()) - set(FAMILIES))
  if bad_family:
    raise ValueError(f"config.rel_families maps to {bad_family}, not one of {FAMILIES}")
  known = set(families) | set(config.rel_dropped)
  return known, {code: FAMILIES.index(f) for code, f in families.items()}


class _EdgeReader:
  """MRREL batches to (head, tail, family) index arrays over the kept CUIs, counting what
  is dropped. One lookup per end finds both kinds of CUI: the kept CUIs first, then
  MRCONSO's other CUIs; an index past the kept ones is an unkept CUI, a null one a CUI that
  MRCONSO.RRF lacks (`first_absent`: the first such row, its line and CUIs)."""

  def __init__(self, path: str, reader, cuis: pa.Array, mrconso_cuis: Optional[pa.Array],
               config, counts: collections.Counter, by_code: collections.Counter):
    self.path, self.reader, self.config = path, reader, config
    self.counts, self.by_code = counts, by_code
    self.known, family_codes = _family_codes(config)
    self.family_codes = family_codes
    self.codes_array = pa.array(list(family_codes), pa.string())
    self.code_values = np.asarray(list(family_codes.values()), np.int8)
    self.lookup, self.n_kept = cuis, len(cuis)
    self.check_mrconso = mrconso_cuis is not None
    if mrconso_cuis is not None:
      self.lookup = pa.concat_arrays([cuis, pc.filter(mrconso_cuis, pc.invert(
          pc.is_in(mrconso_cuis, value_set=cuis)))])
    self.first_absent = None

  def _kept_rows(self, line: int, batch):
    """(the rows of kept REL codes and sources, their keep mask); DataError at an unknown
    REL code."""
    counts, rel = self.counts, batch.column("REL")
    for item in pc.value_counts(rel).to_pylist():
      self.by_code[item["values"]] += item["counts"]
    unknown = pc.invert(rrf.is_in(rel, self.known))
    if pc.any(unknown).as_py():
      row = int(np.flatnonzero(unknown.to_numpy(zero_copy_only=False))[0])
      raise DataError(f"{self.path}: line {self.reader.line_of(line + row)}: field 'REL': "
                      f"unknown code {rel[row].as_py()!r}; map it in config.rel_families or "
                      f"drop it with config.rel_dropped (known: {sorted(self.known)})")
    keep = rrf.is_in(rel, self.family_codes)
    counts["dropped_rel_code"] += batch.num_rows - (pc.sum(keep).as_py() or 0)
    keep = rrf.source_filter(batch, keep, self.config, counts)
    return batch.filter(keep), keep

  def _count_absent(self, line: int, part, keep, h, t) -> None:
    absent = pc.or_(pc.is_null(h), pc.is_null(t))
    n_absent = pc.sum(absent).as_py() or 0
    if n_absent and not self.counts["dropped_cui_not_in_mrconso"]:
      row = int(np.flatnonzero(absent.to_numpy(zero_copy_only=False))[0])
      kept_rows = np.flatnonzero(keep.to_numpy(zero_copy_only=False))
      self.first_absent = (line + int(kept_rows[row]), part.column("CUI1")[row].as_py(),
                           part.column("CUI2")[row].as_py())
    self.counts["dropped_cui_not_in_mrconso"] += n_absent

  def edges(self, line: int, batch):
    """(head, tail, family) of one batch's rows whose both CUIs are kept."""
    counts = self.counts
    counts["rows"] += batch.num_rows
    part, keep = self._kept_rows(line, batch)
    h = pc.index_in(part.column("CUI1"), value_set=self.lookup)
    t = pc.index_in(part.column("CUI2"), value_set=self.lookup)
    counts["rows_kept_code"] += part.num_rows
    if self.check_mrconso:
      self._count_absent(line, part, keep, h, t)
    known_ends = pc.fill_null(pc.and_(pc.less(h, self.n_kept), pc.less(t, self.n_kept)),
                              False)
    counts["dropped_unkept_cui"] += part.num_rows - (pc.sum(known_ends).as_py() or 0)
    h = pc.filter(h, known_ends).to_numpy(zero_copy_only=False).astype(np.int64)
    t = pc.filter(t, known_ends).to_numpy(zero_copy_only=False).astype(np.int64)
    code = pc.index_in(pc.filter(part.column("REL"), known_ends), value_set=self.codes_array)
    r = self.code_values[code.to_numpy(zero_copy_only=False)]
    # CHD: CUI2 is a child of CUI1; store every parent_child edge as (child, parent).
    chd = (pc.equal(pc.filter(part.column("REL"), known_ends), "CHD")
           .to_numpy(zero_copy_only=False))
    return np.where(chd, t, h), np.where(chd, h, t), r

  def check_absent(self) -> None:
    """DataError when no kept row names two CUIs of MRCONSO.RRF; a warning when some do
    not."""
    counts = self.counts
    if not counts["dropped_cui_not_in_mrconso"]:
      return
    number, cui1, cui2 = self.first_absent
    number = self.reader.line_of(number)
    message = (f"{self.path}: {counts['dropped_cui_not_in_mrconso']} of "
               f"{counts['rows_kept_code']} rows name a CUI that MRCONSO.RRF does not hold "
               f"(first: line {number}, CUI1 {cui1!r}, CUI2 {cui2!r}); is MRREL.RRF from the "
               "same release?")
    if counts["dropped_cui_not_in_mrconso"] == counts["rows_kept_code"]:
      raise DataError(message)
    logging.warning("%s; those rows are dropped", message)


def _unique_edges(head: np.ndarray, tail: np.ndarray, rtype: np.ndarray, num_cuis: int,
                  counts: collections.Counter) -> np.ndarray:
  """(head, tail, rtype, the rows kept): no self loops, one edge per (head, tail, family)
  and per unordered pair of a symmetric family (counted in `counts`)."""
  loops = head == tail
  counts["dropped_self_loop"] = int(loops.sum())
  head, tail, rtype = head[~loops], tail[~loops], rtype[~loops]
  symmetric = np.isin(rtype, [FAMILIES.index(f) for f in SYMMETRIC])
  lo, hi = np.minimum(head, tail), np.maximum(head, tail)
  head, tail = np.where(symmetric, lo, head), np.where(symmetric, hi, tail)
  n = max(num_cuis, 1)
  key = (rtype.astype(np.int64) * n + head) * n + tail
  _, first = np.unique(key, return_index=True)
  first.sort()
  counts["dropped_duplicate"] = int(len(key) - len(first))
  return head, tail, rtype, first


def read_relations(path: str, cuis: pa.Array, config, stats: dict,
                   progress: bool = True, mrconso_cuis: Optional[pa.Array] = None) -> tuple:
  """MRREL rows mapped to the families, as unique integer edges over `cuis`.

  A row whose CUI is not kept (`cuis`) is dropped and counted; when `mrconso_cuis` (every
  CUI of MRCONSO.RRF) is given, one naming a CUI that MRCONSO.RRF lacks altogether (MRREL
  of another release?) is counted apart (`dropped_cui_not_in_mrconso`) and logged with its
  first line (such rows are within `dropped_unkept_cui` too); an MRREL.RRF none of whose
  rows of a kept REL code has both CUIs in MRCONSO.RRF is an error.

  Returns:
    (head [E] int64, tail [E] int64, family index [E] int8 into FAMILIES), deduplicated:
    one edge per (head, tail, family), and per unordered pair for symmetric families; no
    self-loops.
  """
  _family_codes(config)   # a bad family is refused before the file is read
  reader = rrf.RowReader(path, ["CUI1", "REL", "CUI2", "SAB", "SUPPRESS"],
                         config.block_size_mb << 20, config.invalid_utf8)
  counts, by_code = collections.Counter(), collections.Counter()
  edges = _EdgeReader(path, reader, cuis, mrconso_cuis, config, counts, by_code)
  heads, tails, types = [], [], []
  bar = tqdm(total=reader.size, unit="B", unit_scale=True, desc="MRREL", disable=not progress)
  for line, batch in reader:
    h, t, r = edges.edges(line, batch)
    heads.append(h)
    tails.append(t)
    types.append(r)
    bar.update(reader.bytes_read - bar.n)
  bar.close()
  if not counts["rows"]:
    raise rrf.empty_file_error(reader)
  edges.check_absent()
  rrf.log_replaced(reader, counts)
  head = np.concatenate(heads) if heads else np.zeros(0, np.int64)
  tail = np.concatenate(tails) if tails else np.zeros(0, np.int64)
  rtype = np.concatenate(types) if types else np.zeros(0, np.int8)
  head, tail, rtype, first = _unique_edges(head, tail, rtype, len(cuis), counts)
  stats["mrrel"] = dict(counts, rows_by_rel_code=dict(sorted(by_code.items())),
                        edges_kept=int(len(first)))
  return head[first], tail[first], rtype[first]


class EdgeList:
  """The edge list hold_out_edges reads, as (head, tail, relation) tuples made on demand
  from integer arrays (a list of tens of millions of tuples would not fit the memory bound).

  Relation edges: CUI indices `head`/`tail` into `ordered` and family index `rtype`; then
  synonym edges: CUI index `syn_head` -> entry id `syn_tail`, relation "synonym".
  """

  def __init__(self, ordered, head, tail, rtype, syn_head, syn_tail):
    self.ordered, self.head, self.tail, self.rtype = ordered, head, tail, rtype
    self.syn_head, self.syn_tail = syn_head, syn_tail
    self.families = np.asarray(FAMILIES, dtype=object)
    self.n = len(head)

  def __len__(self):
    return self.n + len(self.syn_head)

  def __getitem__(self, i):
    if i < self.n:
      return (self.ordered[self.head[i]], self.ordered[self.tail[i]],
              self.families[self.rtype[i]])
    j = i - self.n
    return (self.ordered[self.syn_head[j]], self.syn_tail[j], "synonym")

  def __iter__(self):
    ordered, families = self.ordered, self.families
    for s in range(0, self.n, 1 << 20):
      yield from zip(ordered[self.head[s:s + (1 << 20)]], ordered[self.tail[s:s + (1 << 20)]],
                     families[self.rtype[s:s + (1 << 20)]])
    yield from zip(ordered[self.syn_head], self.syn_tail,
                   ["synonym"] * len(self.syn_head))


class LinkedPairs:
  """`(a, b) in linked` for string pairs, backed by sorted integer keys (no set of tuples)."""

  def __init__(self, head: np.ndarray, tail: np.ndarray, index: dict):
    self._n = max(len(index), 1)
    self._index = index
    lo, hi = np.minimum(head, tail), np.maximum(head, tail)
    self._keys = np.unique(lo.astype(np.int64) * self._n + hi)

  def __contains__(self, pair) -> bool:
    a, b = self._index.get(pair[0]), self._index.get(pair[1])
    if a is None or b is None:
      return False
    key = min(a, b) * self._n + max(a, b)
    i = np.searchsorted(self._keys, key)
    return bool(i < len(self._keys) and self._keys[i] == key)


class Parents:
  """What sibling_pairs reads of a term: its parents."""

  def __init__(self, parents: tuple):
    self.parents = parents


def write_edges(edges: list, path: str, chunk: int = 1 << 20) -> None:
  """Writes (head, tail, relation) tuples to Parquet a chunk at a time."""
  schema = pa.schema([("head_id", pa.string()), ("tail_id", pa.string()),
                      ("relation", pa.string())])
  with pq.ParquetWriter(path, schema) as writer:
    for s in range(0, max(len(edges), 1), chunk):
      writer.write_table(pa.table(edge_table(edges[s:s + chunk]), schema=schema))


def edge_table(edges: Sequence[tuple]) -> dict:
  return dict(head_id=pa.array([e[0] for e in edges], pa.string()),
              tail_id=pa.array([e[1] for e in edges], pa.string()),
              relation=pa.array([e[2] for e in edges], pa.string()))
