r"""A UMLS release (Rich Release Format) as a LINE dataset folder, without the pairs.

    python -m line_jax.data.umls --meta=META_DIR --out=DATASET_DIR \
        [--sabs=MSH,SNOMEDCT_US] [--languages=ENG] [--max_concepts=0] [--umls.FIELD=...]

Reads from META_DIR (pipe-delimited, no header, streamed in blocks; see `line_jax.data.rrf`):
  MRCONSO.RRF  (required) concept names: one concept per CUI, named by its preferred string
               in `languages` (TS=P, then STT=PF, then ISPREF=Y, then file order); the other
               distinct strings of the CUI become synonym entries `<CUI>#syn<k>` linked to
               it by a `synonym` edge, as the HPO builder does for its synonyms.
  MRREL.RRF    (required) relations, mapped to the seven relation families by
               `config.rel_families` (PAR/CHD -> parent_child with head = child, tail =
               parent; SY -> synonym; RL -> related; RB -> broad; RN -> narrow; RO -> other;
               RQ -> quantifiable). REL codes listed in `config.rel_dropped` (AQ, QB, SIB,
               ...) are dropped and counted; any other code is an error.
  MRSTY.RRF    (optional) the concept's first semantic type becomes its `group`
               (`config.unknown_group` without it).
  MRDEF.RRF    (optional) the first definition of each kept CUI, written to
               definitions.parquet; `line_jax.data.notes` can add them as texts.

Writes into DATASET_DIR: concepts.parquet (concept_id, name, negated_name from
`negation_template`, group, term_id, kind), relations.parquet, heldout_relations.parquet
(`heldout_fraction` of each family in `heldout_relations`, removed from training with any
other edge joining the same pair, plus evaluation-only `sibling` pairs: two children of one
parent), definitions.parquet (when MRDEF.RRF is there) and stats.json (rows read, kept and
dropped by reason). `line_jax.data.notes` then writes pairs.parquet into the same folder.

Memory: MRCONSO's kept strings and MRREL's kept edges (as integer codes) are held; each file
is read one block at a time.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import time
from typing import Optional, Sequence

import ml_collections
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from absl import app
from absl import flags
from ml_collections import config_flags
from tqdm import tqdm

from line_jax.data import hpo
from line_jax.data import obo
from line_jax.data import rrf
from line_jax.data.dataset import DataError

# The paper's seven relation families, in the order of configs/bge_coder.py's graph.relations.
FAMILIES = ("parent_child", "synonym", "related", "broad", "narrow", "other", "quantifiable")
# Families whose edges have no direction: (A, B) and (B, A) are one edge.
SYMMETRIC = ("synonym", "related", "other", "quantifiable")


def default_config() -> ml_collections.ConfigDict:
  """Every setting of the UMLS import; `--umls.FIELD=value` overrides one."""
  c = ml_collections.ConfigDict()
  c.sabs = ()                      # source vocabularies kept (MRCONSO and MRREL); () = all
  c.languages = ("ENG",)           # LAT values whose strings name concepts
  c.max_concepts = 0               # keep the first N CUIs in CUI order; 0 = all
  c.drop_suppressed = ("O", "E", "Y")   # SUPPRESS values dropped (N = not suppressible)
  c.include_synonyms = True        # other strings of a CUI as synonym entries
  c.max_synonyms = 0               # synonym entries per CUI (best-ranked first); 0 = all
  c.fold_plurals = True            # synonyms equal to the name after normalising are skipped
  c.negation_template = "{name} unobserved"
  c.unknown_group = "Unknown"      # group of a CUI without a semantic type in MRSTY.RRF
  c.rel_families = dict(PAR="parent_child", CHD="parent_child", SY="synonym", RL="related",
                        RB="broad", RN="narrow", RO="other", RQ="quantifiable")
  c.rel_dropped = ("AQ", "QB", "SIB", "DEL", "RU", "XR", "")   # known codes, dropped and counted
  c.heldout_fraction = 0.05
  c.heldout_relations = FAMILIES
  c.num_sibling_pairs = 2000       # evaluation-only `sibling` pairs
  c.seed = 0
  c.block_size_mb = 16             # bytes per streamed CSV block
  c.concept_chunk = 100_000        # CUIs turned into concept entries at a time (memory bound)
  return c


# --- names ---------------------------------------------------------------------------


def _is_in(column, values) -> pa.Array:
  return pc.is_in(column, value_set=pa.array(list(values), pa.string()))


def _first_empty(path: str, line: int, batch: pa.RecordBatch, field: str) -> None:
  empty = pc.equal(pc.utf8_length(batch.column(field)), 0)
  if pc.any(empty).as_py():
    row = int(np.flatnonzero(empty.to_numpy(zero_copy_only=False))[0])
    raise DataError(f"{path}: line {line + row}: field '{field}': empty value")


def read_names(path: str, config, stats: dict, progress: bool = True) -> tuple:
  """Kept MRCONSO strings sorted by CUI then preference, and every CUI seen in any language.

  Returns:
    (pa.Table with CUI, STR, rank (higher = more preferred), sorted by CUI then rank
     descending then file order; pa.Array of every distinct CUI in the file).
  """
  reader = rrf.RowReader(path, ["CUI", "LAT", "TS", "STT", "ISPREF", "SAB", "STR",
                                "SUPPRESS"], config.block_size_mb << 20)
  kept, all_cuis = [], []
  counts = collections.Counter()
  bar = tqdm(total=reader.size, unit="B", unit_scale=True, desc="MRCONSO",
             disable=not progress)
  for line, batch in reader:
    _first_empty(path, line, batch, "CUI")
    n = batch.num_rows
    counts["rows"] += n
    all_cuis.append(pc.unique(batch.column("CUI")))
    keep = _is_in(batch.column("LAT"), config.languages)
    counts["dropped_language"] += n - pc.sum(keep).as_py() if n else 0
    if config.sabs:
      sab_ok = _is_in(batch.column("SAB"), config.sabs)
      counts["dropped_sab"] += pc.sum(pc.and_(keep, pc.invert(sab_ok))).as_py() or 0
      keep = pc.and_(keep, sab_ok)
    if config.drop_suppressed:
      suppressed = _is_in(batch.column("SUPPRESS"), config.drop_suppressed)
      counts["dropped_suppressed"] += pc.sum(pc.and_(keep, suppressed)).as_py() or 0
      keep = pc.and_(keep, pc.invert(suppressed))
    empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(batch.column("STR"))), 0)
    counts["dropped_empty_string"] += pc.sum(pc.and_(keep, empty)).as_py() or 0
    keep = pc.and_(keep, pc.invert(empty))
    part = batch.filter(keep)
    rank = pc.add(pc.add(
        pc.multiply(pc.cast(pc.equal(part.column("TS"), "P"), pa.int8()), 4),
        pc.multiply(pc.cast(pc.equal(part.column("STT"), "PF"), pa.int8()), 2)),
        pc.cast(pc.equal(part.column("ISPREF"), "Y"), pa.int8()))
    kept.append(pa.table({"CUI": part.column("CUI"), "STR": part.column("STR"),
                          "rank": rank}))
    bar.update(reader.bytes_read - bar.n)
  bar.close()
  stats["mrconso"] = dict(counts, rows_kept=sum(t.num_rows for t in kept))
  if counts["rows"] == 0:
    raise DataError(f"{path}: no rows")
  table = pa.concat_tables(kept) if kept else pa.table(
      {"CUI": pa.array([], pa.string()), "STR": pa.array([], pa.string()),
       "rank": pa.array([], pa.int8())})
  table = table.take(pc.sort_indices(table, sort_keys=[("CUI", "ascending"),
                                                       ("rank", "descending")]))
  every = pc.unique(pa.chunked_array(all_cuis, pa.string()).combine_chunks())
  return table, every


def cui_runs(names: pa.Table, config, stats: dict) -> tuple:
  """(CUI of each kept run, start row, end row) over the sorted names, max_concepts applied."""
  cui_np = np.asarray(names.column("CUI").to_pylist(), dtype=object)
  if len(cui_np) == 0:
    return np.zeros(0, object), np.zeros(0, np.int64), np.zeros(0, np.int64)
  starts = np.flatnonzero(np.concatenate([[True], cui_np[1:] != cui_np[:-1]]))
  ends = np.append(starts[1:], len(cui_np))
  if config.max_concepts and len(starts) > config.max_concepts:
    stats["cuis_dropped_max_concepts"] = int(len(starts) - config.max_concepts)
    starts, ends = starts[:config.max_concepts], ends[:config.max_concepts]
  return cui_np[starts], starts, ends


def concept_chunks(names: pa.Table, ordered, starts, ends, group_names: dict, config,
                   chunk: int = 100_000):
  """Yields (ConceptTable, synonyms skipped, synonyms cut) for `chunk` CUIs at a time.

  Each CUI is an obo.Term (name = its best string, synonyms = its other strings) passed
  through the HPO builder's build_concepts; chunks bound the objects alive at once.
  """
  limit = config.max_synonyms if config.include_synonyms else 0
  for c0 in range(0, len(ordered), chunk):
    lo, hi = int(starts[c0]), int(ends[min(c0 + chunk, len(ordered)) - 1])
    strings = names.column("STR").slice(lo, hi - lo).to_pylist()
    terms = {}
    for cui, s, e in zip(ordered[c0:c0 + chunk], starts[c0:c0 + chunk] - lo,
                         ends[c0:c0 + chunk] - lo):
      others = strings[s + 1:e]
      if limit:
        others = others[:limit * 4]   # spare for duplicates; _cap_synonyms cuts to `limit`
      terms[cui] = obo.Term(cui, strings[s],
                            synonyms=tuple(obo.Synonym(t, "EXACT") for t in others))
    table, skipped = hpo.build_concepts(terms, group_names, config.include_synonyms,
                                        config.fold_plurals)
    cut = _cap_synonyms(table, limit)
    yield table, skipped, cut


class _Edges:
  """The edge list hpo.hold_out_edges reads, as (head, tail, relation) tuples made on demand
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


def _cap_synonyms(table: hpo.ConceptTable, limit: int) -> int:
  """Keeps the first `limit` synonym entries of each term; returns how many were cut."""
  if not limit:
    return 0
  keep_rows, per_term, cut = [], collections.Counter(), 0
  for i, kind in enumerate(table.kinds):
    if kind != "term":
      per_term[table.term_ids[i]] += 1
      if per_term[table.term_ids[i]] > limit:
        cut += 1
        continue
    keep_rows.append(i)
  kept_ids = {table.concept_ids[i] for i in keep_rows}
  for name in ("concept_ids", "names", "groups", "term_ids", "kinds"):
    values = getattr(table, name)
    setattr(table, name, [values[i] for i in keep_rows])
  table.synonym_edges = [e for e in table.synonym_edges if e[1] in kept_ids]
  return cut


def read_groups(path: str, cuis: set, config, stats: dict, progress: bool = True) -> dict:
  """CUI -> its first semantic type name (STY) in MRSTY.RRF, for the kept CUIs."""
  if not os.path.exists(path):
    stats["mrsty"] = "missing: every group is " + config.unknown_group
    return {}
  reader = rrf.RowReader(path, ["CUI", "STY"], config.block_size_mb << 20)
  groups, rows = {}, 0
  bar = tqdm(total=reader.size, unit="B", unit_scale=True, desc="MRSTY", disable=not progress)
  for _, batch in reader:
    rows += batch.num_rows
    for c, sty in zip(batch.column("CUI").to_pylist(), batch.column("STY").to_pylist()):
      if c in cuis and c not in groups:
        groups[c] = sty
    bar.update(reader.bytes_read - bar.n)
  bar.close()
  stats["mrsty"] = dict(rows=rows, cuis_with_type=len(groups))
  return groups


def read_definitions(path: str, cuis: set, config, stats: dict,
                     progress: bool = True) -> Optional[dict]:
  """CUI -> its first definition (kept SABs, not suppressed) in MRDEF.RRF, or None."""
  if not os.path.exists(path):
    stats["mrdef"] = "missing"
    return None
  reader = rrf.RowReader(path, ["CUI", "SAB", "DEF", "SUPPRESS"], config.block_size_mb << 20)
  out, counts = {}, collections.Counter()
  sabs = set(config.sabs)
  drop = set(config.drop_suppressed)
  bar = tqdm(total=reader.size, unit="B", unit_scale=True, desc="MRDEF", disable=not progress)
  for _, batch in reader:
    counts["rows"] += batch.num_rows
    for c, sab, text, sup in zip(*(batch.column(k).to_pylist()
                                   for k in ("CUI", "SAB", "DEF", "SUPPRESS"))):
      if c not in cuis:
        counts["dropped_unkept_cui"] += 1
      elif sabs and sab not in sabs:
        counts["dropped_sab"] += 1
      elif sup in drop:
        counts["dropped_suppressed"] += 1
      elif not text.strip():
        counts["dropped_empty"] += 1
      elif c in out:
        counts["dropped_not_first"] += 1
      else:
        out[c] = text
    bar.update(reader.bytes_read - bar.n)
  bar.close()
  stats["mrdef"] = dict(counts, kept=len(out))
  return out


# --- relations -----------------------------------------------------------------------


def read_relations(path: str, cuis: pa.Array, config, stats: dict,
                   progress: bool = True) -> tuple:
  """MRREL rows mapped to the families, as unique integer edges over `cuis`.

  Returns:
    (head [E] int64, tail [E] int64, family index [E] int8 into FAMILIES), deduplicated:
    one edge per (head, tail, family), and per unordered pair for symmetric families; no
    self-loops.
  """
  families = config.rel_families.to_dict()
  bad_family = sorted(set(families.values()) - set(FAMILIES))
  if bad_family:
    raise ValueError(f"config.rel_families maps to {bad_family}, not one of {FAMILIES}")
  known = set(families) | set(config.rel_dropped)
  family_codes = {code: FAMILIES.index(f) for code, f in families.items()}
  reader = rrf.RowReader(path, ["CUI1", "REL", "CUI2", "SAB", "SUPPRESS"],
                         config.block_size_mb << 20)
  heads, tails, types = [], [], []
  counts, by_code = collections.Counter(), collections.Counter()
  bar = tqdm(total=reader.size, unit="B", unit_scale=True, desc="MRREL", disable=not progress)
  codes_array = pa.array(list(family_codes), pa.string())
  code_values = np.asarray(list(family_codes.values()), np.int8)
  for line, batch in reader:
    n = batch.num_rows
    counts["rows"] += n
    rel = batch.column("REL")
    for item in pc.value_counts(rel).to_pylist():
      by_code[item["values"]] += item["counts"]
    unknown = pc.invert(_is_in(rel, known))
    if pc.any(unknown).as_py():
      row = int(np.flatnonzero(unknown.to_numpy(zero_copy_only=False))[0])
      raise DataError(f"{path}: line {line + row}: field 'REL': unknown code "
                      f"{rel[row].as_py()!r}; map it in config.rel_families or drop it with "
                      f"config.rel_dropped (known: {sorted(known)})")
    keep = _is_in(rel, family_codes)
    counts["dropped_rel_code"] += n - (pc.sum(keep).as_py() or 0)
    if config.sabs:
      sab_ok = _is_in(batch.column("SAB"), config.sabs)
      counts["dropped_sab"] += pc.sum(pc.and_(keep, pc.invert(sab_ok))).as_py() or 0
      keep = pc.and_(keep, sab_ok)
    if config.drop_suppressed:
      suppressed = _is_in(batch.column("SUPPRESS"), config.drop_suppressed)
      counts["dropped_suppressed"] += pc.sum(pc.and_(keep, suppressed)).as_py() or 0
      keep = pc.and_(keep, pc.invert(suppressed))
    part = batch.filter(keep)
    h = pc.index_in(part.column("CUI1"), value_set=cuis)
    t = pc.index_in(part.column("CUI2"), value_set=cuis)
    known_ends = pc.and_(pc.is_valid(h), pc.is_valid(t))
    counts["dropped_unkept_cui"] += part.num_rows - (pc.sum(known_ends).as_py() or 0)
    h = pc.filter(h, known_ends).to_numpy(zero_copy_only=False).astype(np.int64)
    t = pc.filter(t, known_ends).to_numpy(zero_copy_only=False).astype(np.int64)
    code = pc.index_in(pc.filter(part.column("REL"), known_ends), value_set=codes_array)
    r = code_values[code.to_numpy(zero_copy_only=False)]
    # CHD: CUI2 is a child of CUI1; store every parent_child edge as (child, parent).
    chd = (pc.equal(pc.filter(part.column("REL"), known_ends), "CHD")
           .to_numpy(zero_copy_only=False))
    h, t = np.where(chd, t, h), np.where(chd, h, t)
    heads.append(h)
    tails.append(t)
    types.append(r)
    bar.update(reader.bytes_read - bar.n)
  bar.close()
  head = np.concatenate(heads) if heads else np.zeros(0, np.int64)
  tail = np.concatenate(tails) if tails else np.zeros(0, np.int64)
  rtype = np.concatenate(types) if types else np.zeros(0, np.int8)
  loops = head == tail
  counts["dropped_self_loop"] = int(loops.sum())
  head, tail, rtype = head[~loops], tail[~loops], rtype[~loops]
  symmetric = np.isin(rtype, [FAMILIES.index(f) for f in SYMMETRIC])
  lo, hi = np.minimum(head, tail), np.maximum(head, tail)
  head, tail = np.where(symmetric, lo, head), np.where(symmetric, hi, tail)
  n = max(len(cuis), 1)
  key = (rtype.astype(np.int64) * n + head) * n + tail
  _, first = np.unique(key, return_index=True)
  first.sort()
  counts["dropped_duplicate"] = int(len(key) - len(first))
  stats["mrrel"] = dict(counts, rows_by_rel_code=dict(sorted(by_code.items())),
                        edges_kept=int(len(first)))
  return head[first], tail[first], rtype[first]


class _LinkedPairs:
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


class _Parents:
  """What hpo.sibling_pairs reads of a term: its parents."""

  def __init__(self, parents: tuple):
    self.parents = parents


def _write_edges(edges: list, path: str, chunk: int = 1 << 20) -> None:
  """Writes (head, tail, relation) tuples to Parquet a chunk at a time."""
  schema = pa.schema([("head_id", pa.string()), ("tail_id", pa.string()),
                      ("relation", pa.string())])
  with pq.ParquetWriter(path, schema) as writer:
    for s in range(0, max(len(edges), 1), chunk):
      writer.write_table(pa.table(_edge_table(edges[s:s + chunk]), schema=schema))


def _edge_table(edges: Sequence[tuple]) -> dict:
  return dict(head_id=pa.array([e[0] for e in edges], pa.string()),
              tail_id=pa.array([e[1] for e in edges], pa.string()),
              relation=pa.array([e[2] for e in edges], pa.string()))


# --- the build -----------------------------------------------------------------------


def build_umls_dataset(meta: str, out: str, config=None, progress: bool = True) -> dict:
  """Reads the RRF files of `meta` and writes the dataset folder `out`; returns the stats.

  Args:
    meta: the release's META folder (MRCONSO.RRF and MRREL.RRF; MRSTY/MRDEF optional).
    out: the dataset folder to write (created; files in it are replaced).
    config: `default_config()` or a part of it; missing fields take their defaults.
    progress: show tqdm progress bars.
  """
  started = time.time()
  full = default_config()
  if config is not None:
    given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    for key, value in given.items():
      if key not in full:
        raise ValueError(f"unknown UMLS import setting {key!r}; known: {sorted(full)}")
      full[key] = tuple(value) if isinstance(value, list) else value
  config = full
  paths = {name: os.path.join(meta, name) for name in rrf.COLUMNS}
  for name in ("MRCONSO.RRF", "MRREL.RRF"):
    if not os.path.exists(paths[name]):
      found = sorted(os.listdir(meta)) if os.path.isdir(meta) else "no such folder"
      raise DataError(f"{paths[name]}: file not found (a UMLS META folder needs MRCONSO.RRF "
                      f"and MRREL.RRF; found {found})")
  stats = dict(meta=os.path.abspath(meta))
  rng = np.random.default_rng(config.seed)

  # Concepts.
  names, every_cui = read_names(paths["MRCONSO.RRF"], config, stats, progress)
  named = set(pc.unique(names.column("CUI")).to_pylist())
  stats["cuis_in_file"] = len(every_cui)
  stats["cuis_without_language_string"] = len(every_cui) - len(named)
  if stats["cuis_without_language_string"]:
    logging.info("%d CUIs have no kept string in %s (languages %s, sabs %s): skipped, with "
                 "their relations", stats["cuis_without_language_string"],
                 paths["MRCONSO.RRF"], list(config.languages), list(config.sabs) or "all")
  del every_cui
  ordered, starts, ends = cui_runs(names, config, stats)
  if not len(ordered):
    raise DataError(f"{paths['MRCONSO.RRF']}: no concept left after the filters (languages "
                    f"{list(config.languages)}, sabs {list(config.sabs) or 'all'})")
  kept = set(ordered.tolist())
  groups = read_groups(paths["MRSTY.RRF"], kept, config, stats, progress)
  stats["cuis_unknown_group"] = len(kept) - len(groups)
  group_names = {c: groups.get(c, config.unknown_group) for c in ordered.tolist()}
  del groups
  index = {c: i for i, c in enumerate(ordered.tolist())}

  # Concepts, written chunk by chunk; the synonym edges kept as arrays.
  os.makedirs(out, exist_ok=True)
  writer = None
  syn_head, syn_tail = [], []
  counts = collections.Counter()
  bar = tqdm(total=len(ordered), unit=" CUIs", desc="concepts", disable=not progress)
  for table, skipped, cut in concept_chunks(names, ordered, starts, ends, group_names, config,
                                            config.concept_chunk):
    part = pa.table(dict(
        concept_id=pa.array(table.concept_ids, pa.string()),
        name=pa.array(table.names, pa.string()),
        negated_name=pa.array([config.negation_template.format(name=n) for n in table.names],
                              pa.string()),
        group=pa.array(table.groups, pa.string()), term_id=pa.array(table.term_ids,
                                                                    pa.string()),
        kind=pa.array(table.kinds, pa.string())))
    if writer is None:
      writer = pq.ParquetWriter(os.path.join(out, "concepts.parquet"), part.schema)
    writer.write_table(part)
    counts.update(concepts=part.num_rows, skipped=skipped, cut=cut)
    syn_head.append(np.fromiter((index[h] for h, _, _ in table.synonym_edges), np.int64,
                                len(table.synonym_edges)))
    syn_tail.append(np.asarray([t for _, t, _ in table.synonym_edges], dtype=object))
    bar.update(len(set(table.term_ids)))
  bar.close()
  writer.close()
  del names, starts, ends, group_names
  syn_head = np.concatenate(syn_head)
  syn_tail = np.concatenate(syn_tail)
  stats.update(concepts=counts["concepts"], cuis=len(ordered),
               synonym_entries=counts["concepts"] - len(kept),
               synonyms_skipped_duplicate=counts["skipped"],
               synonyms_cut_max_synonyms=counts["cut"])
  definitions = read_definitions(paths["MRDEF.RRF"], kept, config, stats, progress)
  del kept

  # Relations.
  cui_array = pa.array(ordered.tolist(), pa.string())
  head, tail, rtype = read_relations(paths["MRREL.RRF"], cui_array, config, stats, progress)
  del cui_array
  family_names = np.asarray(FAMILIES, dtype=object)
  stats["relations_before_holdout"] = dict(sorted(collections.Counter(
      family_names[rtype]).items()))
  stats["relations_before_holdout"]["synonym"] = (
      stats["relations_before_holdout"].get("synonym", 0) + len(syn_head))
  train_edges, heldout, collateral = hpo.hold_out_edges(
      _Edges(ordered, head, tail, rtype, syn_head, syn_tail),
      tuple(config.heldout_relations), config.heldout_fraction, rng)
  del syn_head, syn_tail
  parents = collections.defaultdict(list)
  pc_index = FAMILIES.index("parent_child")
  for h, t in zip(head[rtype == pc_index].tolist(), tail[rtype == pc_index].tolist()):
    parents[ordered[h]].append(ordered[t])
  parent_terms = {c: _Parents(tuple(p)) for c, p in parents.items()}
  for c, p in list(parents.items()):
    for q in p:
      parent_terms.setdefault(q, _Parents(()))
  heldout += hpo.sibling_pairs(parent_terms, config.num_sibling_pairs,
                               _LinkedPairs(head, tail, index), rng)
  del parents, parent_terms, index, head, tail, rtype
  stats["relations"] = dict(sorted(collections.Counter(r for _, _, r in train_edges).items()))
  stats["heldout_relations"] = dict(sorted(collections.Counter(r for _, _, r in heldout)
                                           .items()))
  stats["heldout_collateral_edges_removed"] = collateral

  # Files (concepts.parquet is written above).
  _write_edges(train_edges, os.path.join(out, "relations.parquet"))
  del train_edges
  pq.write_table(pa.table(_edge_table(heldout)),
                 os.path.join(out, "heldout_relations.parquet"))
  if definitions is not None:
    cuis = sorted(definitions)
    pq.write_table(pa.table(dict(concept_id=pa.array(cuis, pa.string()),
                                 text=pa.array([definitions[c] for c in cuis], pa.string()))),
                   os.path.join(out, "definitions.parquet"))
  stats["build_seconds"] = round(time.time() - started, 2)
  stats["config"] = config.to_dict()
  with open(os.path.join(out, "stats.json"), "w") as f:
    json.dump(stats, f, indent=1, default=list)
  logging.info("UMLS dataset in %s (%.1f s): %d CUIs, %d concept entries; training "
               "relations %s; held out %s", out, stats["build_seconds"], len(ordered),
               stats["concepts"], stats["relations"], stats["heldout_relations"])
  return stats


# --- command line --------------------------------------------------------------------

_META = flags.DEFINE_string("meta", None, "UMLS META folder (MRCONSO.RRF, MRREL.RRF, ...)")
_OUT = flags.DEFINE_string("out", None, "dataset folder to write")
_SABS = flags.DEFINE_list("sabs", None, "source vocabularies to keep (default: all)")
_LANGUAGES = flags.DEFINE_list("languages", None, "LAT values to keep (default: ENG)")
_MAX_CONCEPTS = flags.DEFINE_integer("max_concepts", None, "keep the first N CUIs (0 = all)")
_CONFIG = config_flags.DEFINE_config_dict("umls", default_config(), "import settings")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  config = _CONFIG.value
  for field, flag in (("sabs", _SABS), ("languages", _LANGUAGES),
                      ("max_concepts", _MAX_CONCEPTS)):
    if flag.value is not None:
      config[field] = tuple(flag.value) if isinstance(flag.value, list) else flag.value
  stats = build_umls_dataset(_META.value, _OUT.value, config)
  print(json.dumps({k: v for k, v in stats.items() if k != "config"}, indent=1, default=list))


if __name__ == "__main__":
  flags.mark_flags_as_required(["meta", "out"])
  app.run(main)
