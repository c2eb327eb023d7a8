r"""Pairs made by another concept extractor (NILE, cTAKES, MetaMap, medspaCy, ...).

    python -m line_jax.data.notes --dataset=DATASET_DIR --pairs=FILE

FILE is JSON lines (.jsonl, one object per line) or Parquet, one row per text:

  field        type                      required  meaning
  text         string                    yes       the text the concepts were found in
  concept_ids  list of strings           yes       concept ids of the dataset (CUIs), in
                                                   order of mention; repeats are merged
  negated      list of booleans          no        one per concept id (default: all false)
  spans        list of [start, end]      no        character offsets of each mention in
                                                   `text` (end exclusive); gives rho
  rho          number in (0, 1]          no        used when there are no spans
  pair_id      string                    no        unique; default "import:<row>"
  note_id      string                    no        texts of one note share a split
                                                   (default: the pair id)
  split        train / valid / test      no        default: drawn from a hash of note_id
  label        string                    no        e.g. the section

Example line:
  {"text": "No fever, cough since Monday.", "concept_ids": ["C0015967", "C0010200"],
   "negated": [true, false], "spans": [[3, 8], [10, 15]], "note_id": "n1"}

rho is the paper's alignment weight, words covered by the mentions / words of the text
(words as `line_jax.data.extract` tokenises them); without spans or rho, `default_rho`.
Every row is checked; a bad row is an error naming the file, the row and the field. Rows
with an empty text or no concept are skipped and counted (as the notes import drops texts
without a concept); concept ids missing from the dataset are an error, or, with
`unknown_concepts="drop"`, dropped and counted. A file that is not what its name says
(a truncated Parquet file, JSON lines named .parquet, Parquet named .jsonl) or a line that
is not UTF-8 is an error naming the file and the line (and the byte offset).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import time

import ml_collections

from line_jax.config import merge_settings
from line_jax.data import extract
from line_jax.data.dataset import (SPLITS, DataError, data_error, iter_json_lines,
                                   read_table)
from line_jax.data.hpo.splits import split_of
from line_jax.data.notes.pairs_file import PairWriter
from line_jax.data.notes.reader import check_file, parquet_batches, parquet_file
from line_jax.util.files import write_json


def pairs_import_settings() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.default_rho = 1.0              # rho of a row with neither spans nor rho
  c.unknown_concepts = "error"     # or "drop": ids not in concepts.parquet are removed
  c.seed = 0
  c.split_fractions = (0.8, 0.1, 0.1)
  c.batch_size = 10000
  return c


def _rows(path: str, batch_size: int):
  """(row number, dict) of the file; rows count from 1 (JSON lines) or 0 (Parquet)."""
  check_file(path)
  if path.lower().endswith((".parquet", ".pq")):
    f = parquet_file(path, "with columns text and concept_ids (one row per text)")
    row = 0
    for batch in parquet_batches(path, f, batch_size):
      for item in batch.to_pylist():
        yield row, item
        row += 1
  elif path.lower().endswith((".jsonl", ".json", ".ndjson")):
    yield from iter_json_lines(path)
  else:
    raise DataError(f"{path}: unknown pairs format; use .jsonl or .parquet")


def rho_from_spans(text: str, spans) -> float:
  """Words of `text` overlapping any span / words of `text` (0 when the text has none)."""
  tokens = extract.tokenize(text, fold_plurals=False)
  covered = sum(any(t.start < end and start < t.end for start, end in spans) for t in tokens)
  return extract.rho_of(covered, len(tokens))


def validate_row(path: str, row: int, obj: dict, known: set, config, counts) -> dict:
  """Checks one row; returns the cleaned row, or None when it is skipped (counted)."""
  def err(field, problem):
    return data_error(path, row, field, problem)

  text = obj.get("text")
  if "text" not in obj:
    raise err("text", "missing")
  if text is not None and not isinstance(text, str):
    raise err("text", f"expected a string, got {type(text).__name__}")
  if text is None or not text.strip():
    counts["skipped_empty_text"] += 1
    return None
  ids = obj.get("concept_ids")
  if "concept_ids" not in obj:
    raise err("concept_ids", "missing")
  if not isinstance(ids, (list, tuple)) or not all(isinstance(c, str) for c in ids):
    raise err("concept_ids", "expected a list of strings")
  negated = obj.get("negated")
  if negated is None:
    negated = [False] * len(ids)
  if not isinstance(negated, (list, tuple)) or not all(isinstance(n, bool) for n in negated):
    raise err("negated", "expected a list of booleans")
  if len(negated) != len(ids):
    raise err("negated", f"length {len(negated)} differs from concept_ids length {len(ids)}")
  spans = obj.get("spans")
  if spans is not None:
    if (not isinstance(spans, (list, tuple)) or len(spans) != len(ids) or not all(
        isinstance(s, (list, tuple)) and len(s) == 2 and all(isinstance(v, int) for v in s)
        and 0 <= s[0] < s[1] <= len(text) for s in spans)):
      raise err("spans", f"expected {len(ids)} [start, end] pairs with 0 <= start < end <= "
                f"{len(text)} (the text's length)")
  unknown = [c for c in ids if c not in known]
  if unknown:
    if config.unknown_concepts != "drop":
      raise err("concept_ids", f"unknown concept id {unknown[0]!r} (not in concepts.parquet;"
                " set unknown_concepts='drop' to drop such ids)")
    counts["concept_ids_dropped_unknown"] += len(unknown)
    keep = [c in known for c in ids]
    ids = [c for c, k in zip(ids, keep) if k]
    negated = [n for n, k in zip(negated, keep) if k]
    spans = [s for s, k in zip(spans, keep) if k] if spans is not None else None
  if not ids:
    counts["skipped_no_concept"] += 1
    return None
  if spans is not None:
    rho = rho_from_spans(text, spans)
  elif obj.get("rho") is not None:
    rho = obj["rho"]
    if not isinstance(rho, (int, float)) or not math.isfinite(rho) or not 0 < rho <= 1:
      raise err("rho", f"value {rho!r} outside (0, 1]")
  else:
    rho = config.default_rho
  if rho <= 0:
    raise err("spans", "the spans cover no word of the text (rho would be 0)")
  out_ids, out_neg = extract.unique_mentions(ids, negated)
  split = obj.get("split")
  if split is not None and split not in SPLITS:
    raise err("split", f"value {split!r} is not one of {SPLITS}")
  for field in ("pair_id", "note_id", "label"):
    if obj.get(field) is not None and not isinstance(obj[field], str):
      raise err(field, f"expected a string, got {type(obj[field]).__name__}")
  return dict(text=text, concept_ids=out_ids, negated=out_neg, rho=float(rho), split=split,
              pair_id=obj.get("pair_id"), note_id=obj.get("note_id"),
              label=obj.get("label") or "")


def import_pairs(dataset: str, path: str, config=None) -> dict:
  """Validates `path` and writes `dataset`/pairs.parquet; returns the stats. A file without a
  usable row is an error, and pairs.parquet is then left as it was."""
  started = time.time()
  full = merge_settings(pairs_import_settings(), config, "pairs import")
  config = full
  if config.unknown_concepts not in ("error", "drop"):
    raise ValueError(f"pairs import setting 'unknown_concepts': {config.unknown_concepts!r} "
                     "is not 'error' or 'drop'")
  cpath = os.path.join(dataset, "concepts.parquet")
  if not os.path.exists(cpath):
    raise DataError(f"{cpath}: file not found (run line_jax.data.umls first)")
  known = set(read_table(cpath, ["concept_id"]).column("concept_id").to_pylist())
  counts, splits = collections.Counter(), collections.Counter()
  seen = {}
  out_path = os.path.join(dataset, "pairs.parquet")
  tmp = out_path + ".partial"
  writer = PairWriter(tmp)
  try:
    for row, obj in _rows(path, config.batch_size):
      counts["rows"] += 1
      item = validate_row(path, row, obj, known, config, counts)
      if item is None:
        continue
      pair_id = item["pair_id"] or f"import:{row}"
      if pair_id in seen:
        raise data_error(path, row, "pair_id",
                         f"duplicate pair_id {pair_id!r} (first at row {seen[pair_id]})")
      seen[pair_id] = row
      note_id = item["note_id"] or pair_id
      split = item["split"] or split_of(config.seed, "note:" + note_id,
                                        tuple(config.split_fractions))
      splits[split] += 1
      writer.add(pair_id=pair_id, text=item["text"], concept_ids=item["concept_ids"],
                 negated=item["negated"], rho=item["rho"], split=split,
                 label=item["label"], note_id=note_id, section=item["label"])
    writer.close()
  except BaseException:
    writer.close()
    os.remove(tmp)
    raise
  if not writer.written:
    os.remove(tmp)
    found = (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) if counts
             else "the file has no rows")
    raise DataError(f"{path}: no usable row ({found}); expected rows with a text and its "
                    f"concept_ids; {out_path} is left as it was")
  os.replace(tmp, out_path)
  for key in ("skipped_empty_text", "skipped_no_concept", "concept_ids_dropped_unknown"):
    if counts[key]:
      logging.info("%s: %s: %d", path, key, counts[key])
  stats = dict(counts, pairs=writer.written, pairs_by_split=dict(sorted(splits.items())),
               pairs_path=os.path.abspath(path), seconds=round(time.time() - started, 2),
               config=config.to_dict())
  write_json(os.path.join(dataset, "pairs_import_stats.json"), stats, default=list)
  return stats
