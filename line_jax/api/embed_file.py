"""Embeds a Parquet file of texts and/or concept lists with a trained LINE, streaming
(`python -m line_jax.embed`; the input is described in `line_jax.api.embed_input`).

Output DIR:
  text.npy       [N, d] float32, row i = F(teacher 1(text of input row i))
  concepts.npy   [N, d] float32, row i = mean of G over the concept list of input row i
  meta.json      what was embedded, with what, and how many rows were truncated or invalid
The .npy files are memmaps written chunk by chunk (`chunk_rows`), so millions of rows never
sit in memory; meta.json records the rows done after each chunk, and a rerun with the same
input and settings resumes where a killed run stopped ("complete": true when done).

meta.json also records the model ("model": `LineModel.fingerprint()`). An output folder that
holds rows of another model is refused before anything is written (`OtherModelError`), so
that no output mixes two models' rows, unless `restart` discards it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Dict, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from line_jax.api.embed_input import (batches, check_column_types, choose_parts,
                                      concept_batch_rows, invalid_rows, needed_columns,
                                      validate_input)
from line_jax.api.line_model import OVERLONG_CHOICES
from line_jax.cache import store as embeddings
from line_jax.data.dataset import data_error
from line_jax.util import files
from line_jax.util.files import write_json

INVALID_CHOICES = ("error", "nan")
OUTPUT_FILES = ("text.npy", "concepts.npy", "meta.json")
_EXAMPLES = 10


class OtherModelError(FileExistsError):
  """The output folder holds embeddings of another model than the one given."""


@dataclasses.dataclass(frozen=True)
class Source:
  """The input file and how to read it: the parts embedded, their columns, whether a
  negated column is read, and the run's concept ids (dictionary row j = id j)."""
  path: str
  parquet: pq.ParquetFile
  parts: tuple
  columns: Dict[str, str]
  has_negated: bool
  dictionary_ids: pa.Array

  @property
  def num_rows(self) -> int:
    return self.parquet.metadata.num_rows


def _model_differences(recorded: Optional[dict], current: dict) -> list:
  if not isinstance(recorded, dict):
    return ["the folder records no model (written before models were recorded)"]
  out = []
  if recorded.get("params_sha256") != current["params_sha256"]:
    there = str(recorded.get("params_sha256"))[:12]
    out.append(f"other parameters (checkpoint step {recorded.get('step')} there, "
               f"{current['step']} here; parameter hashes {there} vs "
               f"{current['params_sha256'][:12]})")
  for teacher in ("teacher1", "teacher2"):
    if recorded.get(teacher) != current[teacher]:
      out.append(f"{teacher}'s embeddings {recorded.get(teacher)!r} there, "
                 f"{current[teacher]!r} here")
  if recorded.get("config_sha256") != current["config_sha256"]:
    out.append("another run config")
  return out


def check_same_model(output_dir: str, previous: dict, fingerprint: dict) -> None:
  """Raises OtherModelError when the output in `output_dir` (its meta.json `previous`) was
  written by another model than the one of `fingerprint`."""
  differences = _model_differences(previous.get("model"), fingerprint)
  if differences:
    done = previous.get("rows_done", 0)
    raise OtherModelError(
        f"{output_dir}: holds embeddings of another model ({'; '.join(differences)}; "
        f"{done} of {previous.get('rows', '?')} rows done"
        f"{', complete' if previous.get('complete') else ''}). Rows of two models must not "
        "be mixed, so nothing was written: choose another --output, or pass --restart "
        "(restart=True) to discard these rows and embed from the first row")


def check_output_dir(output_dir: str) -> None:
  """Refuses an output folder that holds anything but an earlier output of this command
  (a teacher-embedding cache, a dataset, a run's work dir...): it would be overwritten."""
  if not os.path.isdir(output_dir):
    return
  meta_path = os.path.join(output_dir, "meta.json")
  other = sorted(n for n in os.listdir(output_dir) if n not in OUTPUT_FILES
                 and not n.endswith(".tmp"))
  ours = True
  if os.path.exists(meta_path):
    meta = files.read_json_or_none(meta_path)
    ours = meta is not None and "plan" in meta     # a teacher cache's meta.json has no "plan"
  elif any(os.path.exists(os.path.join(output_dir, n)) for n in OUTPUT_FILES):
    ours = False
  if other or not ours:
    raise FileExistsError(
        f"{output_dir}: holds files that `line_jax.embed` did not write "
        f"({', '.join(other) or 'meta.json of another kind'}); it might be a teacher-"
        "embedding cache or other data, and would be overwritten. Choose a new or empty "
        "--output folder")


def _check_choices(invalid: str, overlong: str, chunk_rows: int) -> None:
  if invalid not in INVALID_CHOICES:
    raise ValueError(f"invalid={invalid!r}: expected one of {INVALID_CHOICES}")
  if overlong not in OVERLONG_CHOICES:
    raise ValueError(f"overlong={overlong!r}: expected one of {OVERLONG_CHOICES}")
  if chunk_rows < 1:
    raise ValueError(f"chunk_rows={chunk_rows}: must be >= 1")


def open_source(model, input_path: str, columns: Dict[str, str],
                parts: Optional[Sequence[str]]) -> Source:
  """The input file with its parts and column types checked; for texts, the model's text
  encoder loaded (it fails now, before anything is written, if texts cannot be embedded)."""
  if not os.path.exists(input_path):
    raise FileNotFoundError(f"{input_path}: not found")
  parquet = pq.ParquetFile(input_path)
  schema = parquet.schema_arrow
  parts = choose_parts(schema.names, columns, parts, input_path)
  has_negated = columns["negated"] in schema.names
  check_column_types(schema, input_path, parts, columns, has_negated)
  if has_negated and pa.types.is_null(schema.field(columns["negated"]).type):
    has_negated = False        # an all-null column: nothing negated
  if "text" in parts:
    model.text_encoder()
  dictionary_ids = pa.array([str(c) for c in model.dataset.concept_ids], pa.string())
  return Source(input_path, parquet, parts, columns, has_negated, dictionary_ids)


def _plan(model, source: Source, chunk_rows: int, overlong: str, invalid: str) -> dict:
  stat = os.stat(source.path)
  return {"workdir": model.workdir, "input": os.path.abspath(source.path),
          "input_size": stat.st_size, "input_mtime_ns": stat.st_mtime_ns,
          "parts": list(source.parts), "columns": dict(source.columns),
          "chunk_rows": int(chunk_rows), "overlong": overlong, "invalid": invalid}


def _previous_output(output_dir: str, plan: dict, fingerprint: dict,
                     restart: bool) -> Optional[dict]:
  """The meta.json of an earlier output of this model, input and settings (None: none, or
  `restart`); OtherModelError for one of another model, unless `restart`."""
  meta_path = os.path.join(output_dir, "meta.json")
  if not os.path.exists(meta_path):
    return None
  with open(meta_path) as f:
    previous = json.load(f)
  if not restart:
    check_same_model(output_dir, previous, fingerprint)
  if restart or previous.get("plan") != plan:
    return None
  return previous


def _new_meta(model, source: Source, plan: dict, fingerprint: dict) -> dict:
  parts = source.parts
  teacher1 = model.config.teacher1
  return {"plan": plan, "model": fingerprint, "rows": source.num_rows, "dim": model.dim,
          "dtype": "float32",
          "files": {part: f"{part}.npy" for part in parts},
          "normalized": bool(model.config.loss.normalize),
          "teacher1": {"name": teacher1.name, "kind": teacher1.kind, "model": teacher1.model,
                       "max_length": int(teacher1.max_length)},
          "truncated_texts": 0, "invalid_rows": {part: 0 for part in parts},
          "invalid_examples": {part: [] for part in parts}, "rows_done": 0, "complete": False}


def _open_outputs(output_dir: str, parts: Sequence[str], resuming: bool, num_rows: int,
                  dim: int) -> dict:
  """{part: memmap [num_rows, dim] float32}: the begun ones when resuming, else new ones
  whose disk space is reserved (a full disk is an error here, not a crash later)."""
  outputs = {}
  for part in parts:
    path = os.path.join(output_dir, f"{part}.npy")
    if resuming:
      outputs[part] = np.load(path, mmap_mode="r+")
      files.reserve(path)   # an output begun by an older version may be sparse
    else:
      outputs[part] = embeddings.new_memmap(path, np.dtype(np.float32), (num_rows, dim))
  return outputs


def _count_invalid(meta: dict, part: str, start: int, bad: np.ndarray) -> None:
  if bad.any():
    meta["invalid_rows"][part] += int(bad.sum())
    room = _EXAMPLES - len(meta["invalid_examples"][part])
    meta["invalid_examples"][part] += [start + int(i) for i in np.flatnonzero(bad)[:room]]


def _embed_texts(model, source: Source, start: int, batch: pa.RecordBatch, overlong: str,
                 meta: dict) -> np.ndarray:
  """[n, d] F(teacher 1(text)) of a batch, NaN rows for null texts (counted in `meta`, as
  are the texts truncated to teacher1.max_length)."""
  column = source.columns["text"]
  out = np.full((len(batch), model.dim), np.nan, np.float32)
  texts = batch.column(column)
  valid = ~pc.is_null(texts).to_numpy(zero_copy_only=False)
  strings = [str(t) for t in pc.filter(texts, pa.array(valid)).to_pylist()]
  if strings:
    overlong_idx = model.overlong_texts(strings)
    if overlong == "error" and len(overlong_idx):
      rows = np.flatnonzero(valid)[overlong_idx]
      raise data_error(source.path, start + int(rows[0]), column,
                       f"longer than teacher1.max_length="
                       f"{model.config.teacher1.max_length} tokens (--overlong=error)")
    meta["truncated_texts"] += int(len(overlong_idx))
    out[valid] = model.embed_texts(strings)
  _count_invalid(meta, "text", start, ~valid)
  return out


def _embed_concepts(model, source: Source, start: int, batch: pa.RecordBatch,
                    meta: dict) -> np.ndarray:
  """[n, d] concept-list proxies of a batch, NaN rows for invalid lists (counted)."""
  negated = batch.column(source.columns["negated"]) if source.has_negated else None
  offsets, rows, flags, problems = concept_batch_rows(
      batch.column(source.columns["concepts"]), negated, source.dictionary_ids)
  _count_invalid(meta, "concepts", start, invalid_rows(problems, len(batch)))
  return model.embed_concept_rows(offsets, rows, flags)


def _embed_chunks(model, source: Source, outputs: dict, meta: dict, meta_path: str,
                  chunk_rows: int, overlong: str, progress_bar: bool,
                  stop_after_rows: int) -> None:
  """Embeds the chunks from meta["rows_done"] on, flushing the outputs and recording the
  rows done after each."""
  needed = needed_columns(source.parts, source.columns, source.has_negated)
  with tqdm(total=source.num_rows, initial=meta["rows_done"], unit="rows", unit_scale=True,
            desc="embed", disable=not progress_bar, dynamic_ncols=True) as bar:
    for start, batch in batches(source.parquet, needed, chunk_rows, meta["rows_done"]):
      n = len(batch)
      if "text" in source.parts:
        outputs["text"][start:start + n] = _embed_texts(model, source, start, batch,
                                                        overlong, meta)
      if "concepts" in source.parts:
        outputs["concepts"][start:start + n] = _embed_concepts(model, source, start, batch,
                                                               meta)
      for array in outputs.values():
        array.flush()
      meta["rows_done"] = start + n
      write_json(meta_path, meta)
      bar.update(n)
      if stop_after_rows and meta["rows_done"] >= stop_after_rows:
        break


def _log_losses(meta: dict, max_length: int) -> None:
  if meta["truncated_texts"]:
    logging.warning("%d texts were longer than teacher1.max_length=%d tokens and were "
                    "truncated", meta["truncated_texts"], max_length)
  for part, count in meta["invalid_rows"].items():
    if count:
      logging.warning("%s: %d invalid rows written as NaN (first: %s)", part, count,
                      meta["invalid_examples"][part])


def embed_parquet(model, input_path: str, output_dir: str, *, chunk_rows: int = 4096,
                  parts: Optional[Sequence[str]] = None, text_column: str = "text",
                  concepts_column: str = "concept_ids", negated_column: str = "negated",
                  overlong: str = "truncate", invalid: str = "error",
                  progress_bar: bool = True, stop_after_rows: int = 0,
                  restart: bool = False) -> dict:
  """Streams `input_path` through `model` into memmapped .npy files in `output_dir`.

  Args:
    model: a `line_jax.api.line_model.LineModel`.
    input_path: Parquet file (see `line_jax.api.embed_input` for its columns).
    output_dir: created if missing; receives text.npy / concepts.npy and meta.json.
    chunk_rows: rows read, embedded and flushed at a time.
    parts: "text" and/or "concepts"; default: those whose column the file has.
    text_column, concepts_column, negated_column: column names.
    overlong: "truncate" (count in meta.json) or "error" for texts over max_length tokens.
    invalid: "error" (validate everything first) or "nan" (NaN rows, counted).
    progress_bar: show a tqdm bar over rows.
    stop_after_rows: if > 0, return after the chunk that reaches this many rows, leaving a
      resumable output (meta.json "complete": false); a later call continues.
    restart: discard an earlier output in `output_dir` and embed from the first row; without
      it, an output of another model raises OtherModelError (before anything is written),
      and one of this model resumes (same input and flags) or is redone (other ones).

  Returns:
    The meta.json dictionary.
  """
  _check_choices(invalid, overlong, chunk_rows)
  columns = {"text": text_column, "concepts": concepts_column, "negated": negated_column}
  source = open_source(model, input_path, columns, parts)
  check_output_dir(output_dir)
  os.makedirs(output_dir, exist_ok=True)
  meta_path = os.path.join(output_dir, "meta.json")
  plan = _plan(model, source, chunk_rows, overlong, invalid)
  fingerprint = model.fingerprint()
  previous = _previous_output(output_dir, plan, fingerprint, restart)
  if previous is not None and previous.get("complete"):
    logging.info("%s: already complete for this input and these flags", output_dir)
    return previous
  resuming = previous is not None and previous.get("rows_done", 0) > 0
  if invalid == "error" and not resuming:
    validate_input(source.parquet, input_path, source.parts, columns, source.dictionary_ids,
                   chunk_rows, source.has_negated)
  meta = previous if resuming else _new_meta(model, source, plan, fingerprint)
  outputs = _open_outputs(output_dir, source.parts, resuming, source.num_rows, model.dim)
  write_json(meta_path, meta)
  started = time.perf_counter()
  _embed_chunks(model, source, outputs, meta, meta_path, chunk_rows, overlong, progress_bar,
                stop_after_rows)
  meta["complete"] = meta["rows_done"] >= source.num_rows
  meta["seconds"] = meta.get("seconds", 0.0) + time.perf_counter() - started
  write_json(meta_path, meta)
  _log_losses(meta, model.config.teacher1.max_length)
  return meta
