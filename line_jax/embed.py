r"""Embeds a Parquet file of texts and/or concept lists with a trained LINE, streaming.

  python -m line_jax.embed --workdir=runs/hpo --input=pairs.parquet --output=runs/hpo_emb

Input: a Parquet file with a `text` column (str) and/or a `concept_ids` column (list<str>,
ids of the run's concepts.parquet) with an optional `negated` column (list<bool>, same
lengths; missing or null = nothing negated). Column names are flags.

Output DIR:
  text.npy       [N, d] float32, row i = F(teacher 1(text of input row i))
  concepts.npy   [N, d] float32, row i = mean of G over the concept list of input row i
  meta.json      what was embedded, with what, and how many rows were truncated or invalid
The .npy files are memmaps written chunk by chunk (`--chunk_rows`), so millions of rows never
sit in memory; meta.json records the rows done after each chunk, and a rerun with the same
input and flags resumes where a killed run stopped ("complete": true when done).

meta.json also records the model ("model": `LineModel.fingerprint()`: a hash of the
checkpoint's parameters and its step, both teachers' cache keys, a hash of the run's
config). An output folder that holds rows of another model (the work dir retrained, e.g.
with --force_new, a later checkpoint, another teacher) is refused before anything is
written, complete or not, so that no output mixes two models' rows: choose another
--output, or pass --restart to discard it and embed from the first row.

Edge cases:
  * Texts need a Hugging Face teacher 1: a run on synthetic or precomputed embeddings stops
    with an error before writing anything (use --parts=concepts there).
  * Texts longer than teacher1.max_length tokens are truncated to it (as in training) and
    counted in meta.json "truncated_texts"; --overlong=error stops at the first one instead.
  * Invalid rows (null text; null or empty concept list; an id not in the run's dictionary;
    a negated list of another length): --invalid=error (default) checks every row before
    embedding and stops at the first with an error naming file, row and field;
    --invalid=nan writes NaN rows and counts them in meta.json ("invalid_rows", with the
    first row numbers in "invalid_examples").
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from absl import app, flags
from ml_collections import config_flags
from tqdm.auto import tqdm

from line_jax.cache import store as embeddings
from line_jax.util import files
from line_jax.util import logs
from line_jax.api.line_model import OVERLONG_CHOICES, LineModel
from line_jax.data.dataset import DataError, data_error
from line_jax.util.files import write_json

PARTS = ("text", "concepts")
INVALID_CHOICES = ("error", "nan")
_EXAMPLES = 10

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file; default: the "
                                          "config.json saved in --workdir.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Work dir of the trained run (or soup).")
_INPUT = flags.DEFINE_string("input", None, "Parquet file to embed.")
_OUTPUT = flags.DEFINE_string("output", None,
                              "Output folder (text.npy, concepts.npy, meta.json).")
_CHUNK_ROWS = flags.DEFINE_integer("chunk_rows", 4096, "Rows embedded and flushed at a time.")
_PARTS = flags.DEFINE_list("parts", [], "text and/or concepts; default: every part with a "
                           "column.")
_TEXT_COLUMN = flags.DEFINE_string("text_column", "text", "Column of texts.")
_CONCEPTS_COLUMN = flags.DEFINE_string("concepts_column", "concept_ids",
                                       "Column of concept-id lists.")
_NEGATED_COLUMN = flags.DEFINE_string("negated_column", "negated",
                                      "Column of negation flags (optional).")
_OVERLONG = flags.DEFINE_enum("overlong", "truncate", list(OVERLONG_CHOICES),
                              "Texts over teacher1.max_length tokens: truncate (counted) or "
                              "error.")
_INVALID = flags.DEFINE_enum("invalid", "error", list(INVALID_CHOICES),
                             "Invalid rows: error (checked before embedding) or nan (counted).")
_RESTART = flags.DEFINE_bool("restart", False, "Discard what --output holds (e.g. rows of "
                             "another model, which are otherwise refused) and embed from the "
                             "first row.")
flags.mark_flags_as_required(["workdir", "input", "output"])


def choose_parts(schema_names: Sequence[str], columns: Dict[str, str],
                 parts: Optional[Sequence[str]], input_path: str) -> Tuple[str, ...]:
  """The parts to embed: `parts` if given (their columns must exist), else those present."""
  if parts:
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
      raise ValueError(f"--parts: {unknown} not in {PARTS}")
    for part in parts:
      if columns[part] not in schema_names:
        raise DataError(f"{input_path}: no column {columns[part]!r} (needed for part "
                        f"{part!r}); columns: {list(schema_names)}")
    return tuple(p for p in PARTS if p in parts)
  found = tuple(p for p in PARTS if columns[p] in schema_names)
  if not found:
    raise DataError(f"{input_path}: neither a {columns['text']!r} nor a "
                    f"{columns['concepts']!r} column; columns: {list(schema_names)}")
  return found


def _is_string(t: pa.DataType) -> bool:
  return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_list_of(t: pa.DataType, value_ok) -> bool:
  return (pa.types.is_list(t) or pa.types.is_large_list(t)) and value_ok(t.value_type)


def check_column_types(schema: pa.Schema, input_path: str, parts: Sequence[str],
                       columns: Dict[str, str], has_negated: bool) -> None:
  """Raises DataError naming the file, the column, its type and the type expected, for a
  column of the wrong type (before any row is read): texts are strings, concept lists
  list<string>, negation flags list<bool> (an all-null column counts as nothing negated)."""
  def refuse(column: str, expected: str) -> DataError:
    return data_error(input_path, None, column, f"the column is {schema.field(column).type}; "
                      f"expected {expected}")

  if "text" in parts and not (_is_string(schema.field(columns["text"]).type)
                              or pa.types.is_null(schema.field(columns["text"]).type)):
    raise refuse(columns["text"], "strings (one text per row)")
  if "concepts" in parts:
    if not _is_list_of(schema.field(columns["concepts"]).type, _is_string):
      raise refuse(columns["concepts"], "list<string> (one list of concept ids per row, e.g. "
                   "['C0011849', 'C0020538']; ids are strings)")
    negated_type = schema.field(columns["negated"]).type if has_negated else None
    if negated_type is not None and not (pa.types.is_null(negated_type) or _is_list_of(
        negated_type, pa.types.is_boolean)):
      raise refuse(columns["negated"], "list<bool> (one True/False per concept id of the "
                   "row; strings such as 'false' and numbers are not read as flags)")


def concept_batch_rows(batch_ids: pa.ChunkedArray | pa.Array,
                       batch_negated: Optional[pa.Array], dictionary_ids: pa.Array
                       ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Dict[str, np.ndarray]]:
  """Flat dictionary rows of a batch of concept lists, with the invalid rows left empty.

  Args:
    batch_ids: list<str> array, one list per input row.
    batch_negated: list<bool> array of the same lists, or None.
    dictionary_ids: the run's concept ids (row j = dictionary row j).

  Returns:
    (offsets [n + 1], flat rows, flat negated flags, {problem: bool mask [n]}) where every
    row flagged by a problem ("null", "empty", "unknown id", "negated length") has an empty
    segment (its proxy comes out NaN).
  """
  n = len(batch_ids)
  lengths = pc.fill_null(pc.list_value_length(batch_ids), 0).to_numpy(
      zero_copy_only=False).astype(np.int64)
  flat_ids = pc.list_flatten(batch_ids)
  flat_rows = pc.index_in(flat_ids, value_set=dictionary_ids)
  unknown_flat = pc.is_null(flat_rows).to_numpy(zero_copy_only=False)
  owner = np.repeat(np.arange(n), lengths)
  problems = {"null": pc.is_null(batch_ids).to_numpy(zero_copy_only=False),
              "empty": (lengths == 0) & ~pc.is_null(batch_ids).to_numpy(zero_copy_only=False),
              "unknown id": np.bincount(owner[unknown_flat], minlength=n) > 0,
              "negated length": np.zeros(n, bool)}
  if batch_negated is not None:
    neg_lengths = pc.list_value_length(batch_negated).to_numpy(zero_copy_only=False)
    neg_null = pc.is_null(batch_negated).to_numpy(zero_copy_only=False)
    problems["negated length"] = ~neg_null & (np.nan_to_num(neg_lengths, nan=-1) != lengths)
    # A null negated list stands for "nothing negated"; the others fill their positions.
    good_neg = ~neg_null & ~problems["negated length"]
    flat_neg = np.zeros(len(flat_ids), bool)
    flat_neg[np.repeat(good_neg, lengths)] = pc.fill_null(pc.list_flatten(
        pc.filter(batch_negated, pa.array(good_neg))), False).to_numpy(zero_copy_only=False)
  else:
    flat_neg = np.zeros(len(flat_ids), bool)
  bad = np.zeros(n, bool)
  for mask in problems.values():
    bad |= mask
  keep_flat = ~bad[owner]
  kept_lengths = np.where(bad, 0, lengths)
  offsets = np.concatenate([[0], np.cumsum(kept_lengths)]).astype(np.int64)
  rows = flat_rows.to_numpy(zero_copy_only=False)[keep_flat].astype(np.int64)
  return offsets, rows, flat_neg[keep_flat], problems


def _first_problem(problems: Dict[str, np.ndarray]) -> Optional[Tuple[int, str]]:
  firsts = [(int(np.flatnonzero(m)[0]), name) for name, m in problems.items() if m.any()]
  return min(firsts) if firsts else None


def _batches(parquet: pq.ParquetFile, columns: Sequence[str], chunk_rows: int,
             skip_rows: int = 0) -> Iterator[Tuple[int, pa.RecordBatch]]:
  """(first row, batch) over the file, from the batch that starts at `skip_rows` (batches
  are deterministic for a file and chunk_rows, so a recorded batch end is a batch start)."""
  start = 0
  for batch in parquet.iter_batches(batch_size=chunk_rows, columns=list(columns)):
    if start >= skip_rows:
      yield start, batch
    start += len(batch)


def validate_input(parquet: pq.ParquetFile, input_path: str, parts: Sequence[str],
                   columns: Dict[str, str], dictionary_ids: pa.Array, chunk_rows: int,
                   has_negated: bool) -> None:
  """Reads only the needed columns once; raises naming the first invalid row and field."""
  needed = []
  if "text" in parts:
    needed.append(columns["text"])
  if "concepts" in parts:
    needed.append(columns["concepts"])
    if has_negated:
      needed.append(columns["negated"])
  for start, batch in _batches(parquet, needed, chunk_rows):
    if "text" in parts:
      nulls = pc.is_null(batch.column(columns["text"])).to_numpy(zero_copy_only=False)
      if nulls.any():
        raise data_error(input_path, start + int(np.flatnonzero(nulls)[0]), columns["text"],
                         "null text")
    if "concepts" in parts:
      negated = batch.column(columns["negated"]) if has_negated else None
      *_, problems = concept_batch_rows(batch.column(columns["concepts"]), negated,
                                        dictionary_ids)
      first = _first_problem(problems)
      if first is not None:
        row, problem = first
        field = columns["negated"] if problem == "negated length" else columns["concepts"]
        detail = {"null": "null concept list", "empty": "empty concept list (a proxy needs "
                  "at least one concept)", "unknown id": "a concept id that is not in the "
                  "run's concepts.parquet", "negated length": "negated list of another length "
                  "than the concept list"}[problem]
        if problem == "unknown id":
          ids = pa.array(batch.column(columns["concepts"])[row].as_py(), pa.string())
          known = pc.is_in(ids, value_set=dictionary_ids).to_numpy(zero_copy_only=False)
          detail = (f"concept id {ids[int(np.flatnonzero(~known)[0])].as_py()!r} is not in "
                    "the run's concepts.parquet")
        raise data_error(input_path, start + row, field, detail)


def _plan(model, input_path: str, parts: Sequence[str], columns: Dict[str, str],
          chunk_rows: int, overlong: str, invalid: str) -> dict:
  stat = os.stat(input_path)
  return {"workdir": model.workdir, "input": os.path.abspath(input_path),
          "input_size": stat.st_size, "input_mtime_ns": stat.st_mtime_ns,
          "parts": list(parts), "columns": dict(columns), "chunk_rows": int(chunk_rows),
          "overlong": overlong, "invalid": invalid}


OUTPUT_FILES = ("text.npy", "concepts.npy", "meta.json")


class OtherModelError(FileExistsError):
  """The output folder holds embeddings of another model than the one given."""


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
    try:
      with open(meta_path) as f:
        ours = "plan" in json.load(f)      # a teacher cache's meta.json has no "plan"
    except (OSError, ValueError):
      ours = False
  elif any(os.path.exists(os.path.join(output_dir, n)) for n in OUTPUT_FILES):
    ours = False
  if other or not ours:
    raise FileExistsError(
        f"{output_dir}: holds files that `line_jax.embed` did not write "
        f"({', '.join(other) or 'meta.json of another kind'}); it might be a teacher-"
        "embedding cache or other data, and would be overwritten. Choose a new or empty "
        "--output folder")


def embed_parquet(model, input_path: str, output_dir: str, *, chunk_rows: int = 4096,
                  parts: Optional[Sequence[str]] = None, text_column: str = "text",
                  concepts_column: str = "concept_ids", negated_column: str = "negated",
                  overlong: str = "truncate", invalid: str = "error",
                  progress_bar: bool = True, stop_after_rows: int = 0,
                  restart: bool = False) -> dict:
  """Streams `input_path` through `model` into memmapped .npy files in `output_dir`.

  Args:
    model: a `line_jax.api.line_model.LineModel`.
    input_path: Parquet file (see the module docstring for its columns).
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
  if invalid not in INVALID_CHOICES:
    raise ValueError(f"invalid={invalid!r}: expected one of {INVALID_CHOICES}")
  if overlong not in OVERLONG_CHOICES:
    raise ValueError(f"overlong={overlong!r}: expected one of {OVERLONG_CHOICES}")
  if chunk_rows < 1:
    raise ValueError(f"chunk_rows={chunk_rows}: must be >= 1")
  if not os.path.exists(input_path):
    raise FileNotFoundError(f"{input_path}: not found")
  parquet = pq.ParquetFile(input_path)
  columns = {"text": text_column, "concepts": concepts_column, "negated": negated_column}
  parts = choose_parts(parquet.schema_arrow.names, columns, parts, input_path)
  has_negated = negated_column in parquet.schema_arrow.names
  check_column_types(parquet.schema_arrow, input_path, parts, columns, has_negated)
  if has_negated and pa.types.is_null(parquet.schema_arrow.field(negated_column).type):
    has_negated = False        # an all-null column: nothing negated
  if "text" in parts:
    model.text_encoder()     # fails now, before anything is written, if texts cannot be
  dictionary_ids = pa.array([str(c) for c in model.dataset.concept_ids], pa.string())
  num_rows = parquet.metadata.num_rows
  check_output_dir(output_dir)
  os.makedirs(output_dir, exist_ok=True)
  meta_path = os.path.join(output_dir, "meta.json")
  plan = _plan(model, input_path, parts, columns, chunk_rows, overlong, invalid)
  fingerprint = model.fingerprint()
  previous = None
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      previous = json.load(f)
    if not restart:
      check_same_model(output_dir, previous, fingerprint)
    if restart or previous.get("plan") != plan:
      previous = None
  if previous is not None and previous.get("complete"):
    logging.info("%s: already complete for this input and these flags", output_dir)
    return previous
  resuming = previous is not None and previous.get("rows_done", 0) > 0
  if invalid == "error" and not resuming:
    validate_input(parquet, input_path, parts, columns, dictionary_ids, chunk_rows,
                   has_negated)
  meta = previous if resuming else {
      "plan": plan, "model": fingerprint, "rows": num_rows, "dim": model.dim,
      "dtype": "float32",
      "files": {part: f"{part}.npy" for part in parts},
      "normalized": bool(model.config.loss.normalize),
      "teacher1": {"name": model.config.teacher1.name, "kind": model.config.teacher1.kind,
                   "model": model.config.teacher1.model,
                   "max_length": int(model.config.teacher1.max_length)},
      "truncated_texts": 0, "invalid_rows": {part: 0 for part in parts},
      "invalid_examples": {part: [] for part in parts}, "rows_done": 0, "complete": False}
  outputs = {}
  for part in parts:
    path = os.path.join(output_dir, f"{part}.npy")
    if resuming:
      outputs[part] = np.load(path, mmap_mode="r+")
      files.reserve(path)   # an output begun by an older version may be sparse
    else:   # its disk space reserved: a full disk is an error here, not a crash later
      outputs[part] = embeddings.new_memmap(path, np.dtype(np.float32),
                                            (num_rows, model.dim))
  write_json(meta_path, meta)
  needed = [columns[p] for p in parts] + (
      [negated_column] if "concepts" in parts and has_negated else [])
  started = time.perf_counter()
  done_at_start = meta["rows_done"]
  with tqdm(total=num_rows, initial=done_at_start, unit="rows", unit_scale=True,
            desc="embed", disable=not progress_bar, dynamic_ncols=True) as bar:
    for start, batch in _batches(parquet, needed, chunk_rows, done_at_start):
      n = len(batch)
      if "text" in parts:
        out = np.full((n, model.dim), np.nan, np.float32)
        texts = batch.column(text_column)
        valid = ~pc.is_null(texts).to_numpy(zero_copy_only=False)
        strings = [str(t) for t in pc.filter(texts, pa.array(valid)).to_pylist()]
        if strings:
          overlong_idx = model.overlong_texts(strings)
          if overlong == "error" and len(overlong_idx):
            rows = np.flatnonzero(valid)[overlong_idx]
            raise data_error(input_path, start + int(rows[0]), text_column,
                             f"longer than teacher1.max_length="
                             f"{model.config.teacher1.max_length} tokens (--overlong=error)")
          meta["truncated_texts"] += int(len(overlong_idx))
          out[valid] = model.embed_texts(strings)
        _count_invalid(meta, "text", start, ~valid)
        outputs["text"][start:start + n] = out
      if "concepts" in parts:
        negated = batch.column(negated_column) if has_negated else None
        offsets, rows, flags, problems = concept_batch_rows(
            batch.column(concepts_column), negated, dictionary_ids)
        bad = np.zeros(n, bool)
        for mask in problems.values():
          bad |= mask
        _count_invalid(meta, "concepts", start, bad)
        outputs["concepts"][start:start + n] = model.embed_concept_rows(offsets, rows, flags)
      for array in outputs.values():
        array.flush()
      meta["rows_done"] = start + n
      write_json(meta_path, meta)
      bar.update(n)
      if stop_after_rows and meta["rows_done"] >= stop_after_rows:
        break
  meta["complete"] = meta["rows_done"] >= num_rows
  meta["seconds"] = meta.get("seconds", 0.0) + time.perf_counter() - started
  write_json(meta_path, meta)
  if meta["truncated_texts"]:
    logging.warning("%d texts were longer than teacher1.max_length=%d tokens and were "
                    "truncated", meta["truncated_texts"], model.config.teacher1.max_length)
  for part, count in meta["invalid_rows"].items():
    if count:
      logging.warning("%s: %d invalid rows written as NaN (first: %s)", part, count,
                      meta["invalid_examples"][part])
  return meta


def _count_invalid(meta: dict, part: str, start: int, bad: np.ndarray) -> None:
  if bad.any():
    meta["invalid_rows"][part] += int(bad.sum())
    room = _EXAMPLES - len(meta["invalid_examples"][part])
    meta["invalid_examples"][part] += [start + int(i) for i in np.flatnonzero(bad)[:room]]


def main(argv: Sequence[str]) -> None:
  del argv
  logs.setup()
  model = LineModel.load(_WORKDIR.value, _CONFIG.value)
  meta = embed_parquet(model, _INPUT.value, _OUTPUT.value, chunk_rows=_CHUNK_ROWS.value,
                       parts=_PARTS.value or None, text_column=_TEXT_COLUMN.value,
                       concepts_column=_CONCEPTS_COLUMN.value,
                       negated_column=_NEGATED_COLUMN.value, overlong=_OVERLONG.value,
                       invalid=_INVALID.value, restart=_RESTART.value)
  print(json.dumps({k: v for k, v in meta.items() if k != "plan"}, indent=1))
  for part, name in meta["files"].items():
    print(f"{part}: {os.path.join(os.path.abspath(_OUTPUT.value), name)}")


if __name__ == "__main__":
  app.run(main)
