"""The UMLS import's settings and the build of a dataset folder from a META folder."""

from __future__ import annotations

import collections
import logging
import os
import time
from typing import Optional

import ml_collections
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from line_jax.config import merge_settings
from line_jax.data import atomic
from line_jax.data import rrf
from line_jax.data.dataset import DataError
from line_jax.data.hpo.graph import hold_out_edges, sibling_pairs
from line_jax.data.umls.concepts import (concept_chunks, cui_runs, read_definitions,
                                         read_groups, read_names)
from line_jax.data.umls.relations import (FAMILIES, EdgeList, LinkedPairs, Parents,
                                          edge_table, read_relations, write_edges)
from line_jax.util.files import write_json


def umls_settings() -> ml_collections.ConfigDict:
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
  c.invalid_utf8 = "error"         # bytes that are not UTF-8 in an RRF file: "error" (names
                                   # file, line, field) or "replace" (U+FFFD, counted, logged)
  return c


# The files the import writes (and replaces on a re-import); any other file of the folder
# (pairs.parquet and notes_stats.json of the notes import, ...) is kept.
FILES = ("concepts.parquet", "relations.parquet", "heldout_relations.parquet",
         "definitions.parquet", "stats.json")


def build_umls_dataset(meta: str, out: str, config=None, progress: bool = True) -> dict:
  """Reads the RRF files of `meta` and writes the dataset folder `out`; returns the stats.

  The folder is built beside `out` and swapped in when complete (`atomic.build_aside`): a
  failed or killed import leaves `out` as it was. `out` must be missing, empty, or a folder
  this import wrote before (its `built_by.json` says so); any other folder is refused
  unchanged. A re-import replaces `FILES` and keeps the folder's other files (pairs.parquet
  of the notes import; a warning counts its concept ids the new concepts lack).

  Args:
    meta: the release's META folder (MRCONSO.RRF and MRREL.RRF; MRSTY/MRDEF optional).
    out: the dataset folder to write.
    config: `umls_settings()` or a part of it; missing fields take their defaults.
    progress: show tqdm progress bars.
  """
  started = time.time()
  config = merge_settings(umls_settings(), config, "UMLS import")
  if config.invalid_utf8 not in rrf.INVALID_UTF8:
    raise ValueError(f"UMLS import setting 'invalid_utf8': {config.invalid_utf8!r} is not "
                     f"one of {rrf.INVALID_UTF8}")
  paths = {name: os.path.join(meta, name) for name in rrf.COLUMNS}
  for name in ("MRCONSO.RRF", "MRREL.RRF"):
    if not os.path.isfile(paths[name]):
      found = sorted(os.listdir(meta)) if os.path.isdir(meta) else "no such folder"
      raise DataError(f"{paths[name]}: file not found (a UMLS META folder needs MRCONSO.RRF "
                      f"and MRREL.RRF; found {found})")
  root = os.path.realpath(out)
  with atomic.build_aside(root, "umls", FILES, config.to_dict()) as tmp:
    stats = _build(meta, paths, tmp, root, config, progress, started)
  logging.info("UMLS dataset in %s (%.1f s): %d CUIs, %d concept entries; training "
               "relations %s; held out %s", out, stats["build_seconds"], stats["cuis"],
               stats["concepts"], stats["relations"], stats["heldout_relations"])
  return stats


def _stale_pairs(root: str, concepts_path: str) -> Optional[int]:
  """How many concept ids of `root`/pairs.parquet (another step's file, kept by a
  re-import) the new concepts lack; None without pairs.parquet."""
  pairs = os.path.join(root, "pairs.parquet")
  if not os.path.exists(pairs):
    return None
  try:
    ids = pc.unique(pc.list_flatten(pq.read_table(pairs, columns=["concept_ids"])
                                    .column("concept_ids").combine_chunks()))
  except (pa.ArrowException, OSError, KeyError) as e:
    logging.warning("%s: not checked against the new concepts (%s)", pairs, e)
    return None
  known = pq.read_table(concepts_path, columns=["concept_id"]).column("concept_id")
  missing = len(ids) - (pc.sum(pc.is_in(ids, value_set=known.combine_chunks())).as_py() or 0)
  if missing:
    logging.warning("%s: %d of its %d concept ids are not among the new concepts; run "
                    "line_jax.data.notes again before training on this folder", pairs,
                    missing, len(ids))
  return missing


def _read_cuis(paths: dict, config, stats: dict, progress: bool):
  """(MRCONSO rows kept, every CUI of the file, the kept CUIs in order, each one's first and
  end row); DataError when no CUI is left after the filters."""
  names, every_cui = read_names(paths["MRCONSO.RRF"], config, stats, progress)
  named = set(pc.unique(names.column("CUI")).to_pylist())
  stats["cuis_in_file"] = len(every_cui)
  stats["cuis_without_language_string"] = len(every_cui) - len(named)
  if stats["cuis_without_language_string"]:
    logging.info("%d CUIs have no kept string in %s (languages %s, sabs %s): skipped, with "
                 "their relations", stats["cuis_without_language_string"],
                 paths["MRCONSO.RRF"], list(config.languages), list(config.sabs) or "all")
  ordered, starts, ends = cui_runs(names, config, stats)
  if not len(ordered):
    raise DataError(f"{paths['MRCONSO.RRF']}: no concept left after the filters (languages "
                    f"{list(config.languages)}, sabs {list(config.sabs) or 'all'})")
  return names, every_cui, ordered, starts, ends


def _group_names(paths: dict, ordered: np.ndarray, kept: set, config, stats: dict,
                 progress: bool) -> dict:
  """{CUI: its semantic type's group} (`unknown_group` for a CUI MRSTY.RRF lacks)."""
  groups = read_groups(paths["MRSTY.RRF"], kept, config, stats, progress)
  stats["cuis_unknown_group"] = len(kept) - len(groups)
  return {c: groups.get(c, config.unknown_group) for c in ordered.tolist()}


def _write_concepts(out: str, names, ordered, starts, ends, group_names: dict, index: dict,
                    config, progress: bool):
  """Writes concepts.parquet chunk by chunk; returns (synonym edge heads [E] CUI rows,
  synonym edge tails [E] entry ids, counts of concepts, skipped and cut synonyms)."""
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
  return np.concatenate(syn_head), np.concatenate(syn_tail), counts


def _parent_terms(ordered: np.ndarray, head: np.ndarray, tail: np.ndarray,
                  rtype: np.ndarray) -> dict:
  """{CUI: Parents} of the parent_child edges, for the sibling pairs (every parent a key)."""
  parents = collections.defaultdict(list)
  pc_index = FAMILIES.index("parent_child")
  for h, t in zip(head[rtype == pc_index].tolist(), tail[rtype == pc_index].tolist()):
    parents[ordered[h]].append(ordered[t])
  parent_terms = {c: Parents(tuple(p)) for c, p in parents.items()}
  for p in parents.values():
    for q in p:
      parent_terms.setdefault(q, Parents(()))
  return parent_terms


def _relation_counts(edges) -> dict:
  return dict(sorted(collections.Counter(r for _, _, r in edges).items()))


def _write_files(out: str, root: str, train_edges, heldout, definitions: Optional[dict],
                 stats: dict) -> None:
  """relations.parquet, heldout_relations.parquet and definitions.parquet (concepts.parquet
  is written before); counts the concept ids of a kept pairs.parquet the concepts lack."""
  write_edges(train_edges, os.path.join(out, "relations.parquet"))
  pq.write_table(pa.table(edge_table(heldout)),
                 os.path.join(out, "heldout_relations.parquet"))
  if definitions is not None:
    cuis = sorted(definitions)
    pq.write_table(pa.table(dict(concept_id=pa.array(cuis, pa.string()),
                                 text=pa.array([definitions[c] for c in cuis], pa.string()))),
                   os.path.join(out, "definitions.parquet"))
  stale = _stale_pairs(root, os.path.join(out, "concepts.parquet"))
  if stale is not None:
    stats["pairs_parquet_unknown_concept_ids"] = stale


def _build(meta: str, paths: dict, out: str, root: str, config, progress: bool,
           started: float) -> dict:
  """The import proper, writing into the folder `out` (swapped in as `root` later). The
  large tables are dropped as soon as they are used (`del`), to bound the peak memory."""
  stats = dict(meta=os.path.abspath(meta))
  rng = np.random.default_rng(config.seed)
  names, every_cui, ordered, starts, ends = _read_cuis(paths, config, stats, progress)
  kept = set(ordered.tolist())
  group_names = _group_names(paths, ordered, kept, config, stats, progress)
  index = {c: i for i, c in enumerate(ordered.tolist())}
  os.makedirs(out, exist_ok=True)
  syn_head, syn_tail, counts = _write_concepts(out, names, ordered, starts, ends, group_names,
                                               index, config, progress)
  del names, starts, ends, group_names
  stats.update(concepts=counts["concepts"], cuis=len(ordered),
               synonym_entries=counts["concepts"] - len(kept),
               synonyms_skipped_duplicate=counts["skipped"],
               synonyms_cut_max_synonyms=counts["cut"])
  definitions = read_definitions(paths["MRDEF.RRF"], kept, config, stats, progress)
  del kept
  cui_array = pa.array(ordered.tolist(), pa.string())
  head, tail, rtype = read_relations(paths["MRREL.RRF"], cui_array, config, stats, progress,
                                     every_cui)
  del cui_array, every_cui
  before = dict(sorted(collections.Counter(np.asarray(FAMILIES, dtype=object)[rtype]).items()))
  before["synonym"] = before.get("synonym", 0) + len(syn_head)
  stats["relations_before_holdout"] = before
  train_edges, heldout, collateral = hold_out_edges(
      EdgeList(ordered, head, tail, rtype, syn_head, syn_tail),
      tuple(config.heldout_relations), config.heldout_fraction, rng)
  del syn_head, syn_tail
  heldout += sibling_pairs(_parent_terms(ordered, head, tail, rtype), config.num_sibling_pairs,
                           LinkedPairs(head, tail, index), rng)
  del index, head, tail, rtype
  stats["relations"] = _relation_counts(train_edges)
  stats["heldout_relations"] = _relation_counts(heldout)
  stats["heldout_collateral_edges_removed"] = collateral
  if not len(train_edges):
    raise DataError(f"{paths['MRREL.RRF']}: no relation left for training (MRREL "
                    f"{stats['mrrel']}; synonym entries {stats['synonym_entries']}); a "
                    "dataset needs at least one edge")
  _write_files(out, root, train_edges, heldout, definitions, stats)
  stats["build_seconds"] = round(time.time() - started, 2)
  stats["config"] = config.to_dict()
  write_json(os.path.join(out, "stats.json"), stats, default=list)
  return stats
