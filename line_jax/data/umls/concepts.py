"""MRCONSO, MRSTY and MRDEF of a UMLS release: concept names, synonym entries, semantic
types (the concept's group) and definitions. Each file is streamed with `rrf.RowReader`."""

from __future__ import annotations

import collections
import logging
import os
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from line_jax.data import obo
from line_jax.data import rrf
from line_jax.data.dataset import DataError
from line_jax.data.hpo.ontology import ConceptTable, build_concepts


def _first_empty(reader: rrf.RowReader, line: int, batch: pa.RecordBatch,
                 field: str) -> None:
  empty = pc.equal(pc.utf8_length(batch.column(field)), 0)
  if pc.any(empty).as_py():
    row = int(np.flatnonzero(empty.to_numpy(zero_copy_only=False))[0])
    raise DataError(f"{reader.path}: line {reader.line_of(line + row)}: field '{field}': "
                    "empty value")


def read_names(path: str, config, stats: dict, progress: bool = True) -> tuple:
  """Kept MRCONSO strings sorted by CUI then preference, and every CUI seen in any language.

  Returns:
    (pa.Table with CUI, STR, rank (higher = more preferred), sorted by CUI then rank
     descending then file order; pa.Array of every distinct CUI in the file).
  """
  reader = rrf.RowReader(path, ["CUI", "LAT", "TS", "STT", "ISPREF", "SAB", "STR",
                                "SUPPRESS"], config.block_size_mb << 20, config.invalid_utf8)
  kept, all_cuis = [], []
  counts = collections.Counter()
  bar = tqdm(total=reader.size, unit="B", unit_scale=True, desc="MRCONSO",
             disable=not progress)
  for line, batch in reader:
    _first_empty(reader, line, batch, "CUI")
    n = batch.num_rows
    counts["rows"] += n
    all_cuis.append(pc.unique(batch.column("CUI")))
    keep = rrf.is_in(batch.column("LAT"), config.languages)
    counts["dropped_language"] += n - pc.sum(keep).as_py() if n else 0
    keep = rrf.source_filter(batch, keep, config, counts)
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
  rrf.log_replaced(reader, counts)
  stats["mrconso"] = dict(counts, rows_kept=sum(t.num_rows for t in kept))
  if counts["rows"] == 0:
    raise rrf.empty_file_error(reader)
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
    table, skipped = build_concepts(terms, group_names, config.include_synonyms,
                                        config.fold_plurals)
    cut = _cap_synonyms(table, limit)
    yield table, skipped, cut



def _cap_synonyms(table: ConceptTable, limit: int) -> int:
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
  reader = rrf.RowReader(path, ["CUI", "STY"], config.block_size_mb << 20,
                         config.invalid_utf8)
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
  rrf.log_replaced(reader, stats["mrsty"])
  if not rows:
    logging.warning("%s: no rows; every group is %s", path, config.unknown_group)
  return groups


def read_definitions(path: str, cuis: set, config, stats: dict,
                     progress: bool = True) -> Optional[dict]:
  """CUI -> its first definition (kept SABs, not suppressed) in MRDEF.RRF, or None."""
  if not os.path.exists(path):
    stats["mrdef"] = "missing"
    return None
  reader = rrf.RowReader(path, ["CUI", "SAB", "DEF", "SUPPRESS"], config.block_size_mb << 20,
                         config.invalid_utf8)
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
  rrf.log_replaced(reader, counts)
  stats["mrdef"] = dict(counts, rows=counts["rows"], kept=len(out))
  if not counts["rows"]:
    logging.warning("%s: no rows; no definitions", path)
  return out
