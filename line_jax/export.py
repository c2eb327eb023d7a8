r"""Teacher embeddings into the work-dir cache (`line_jax.embeddings` folder format).

  python -m line_jax.export --config=configs/bge_coder.py --workdir=DIR

builds (or loads) the dataset, then makes sure both teachers' embedding folders exist.
`line_jax.train` calls `ensure_teacher_embeddings` itself when a folder is missing.

Teacher kinds (`teacher_config().kind`):
  hf           a BERT-family Hugging Face checkpoint run by `line_jax.teachers` (local
               folder, bundled all-MiniLM-L6-v2, or the local HF cache; never the network).
               Pair texts -> text.npy, concept names -> concepts.npy, negated names ->
               negated.npy. With negated_rows "used" only concepts that occur negated in
               some pair get a negated embedding; the other rows of negated.npy are zero
               and meta.json says so ("negated_rows", "negated_embedded").
  precomputed  embeddings made elsewhere (the paper's OpenAI teacher, ...), imported from
               the folder `teacher_cfg.precomputed`, see `import_precomputed`.
  synthetic    `line_jax.data.synthetic.write_synthetic_teacher(dataset, path, cfg)`.

Cache key: `cache_key(model, pooling, max_length, normalize, dataset.data_hash())` where
model is the teacher's model name or path as configured (kind hf), the source folder plus
its files' sizes and modification times (precomputed), or "synthetic-<seed>-<dim>" (the
key line_jax.train uses for synthetic teachers). A changed dataset or setting gets a new folder; an unchanged one is reused.
The storage dtype and negated_rows are not in the key: a complete folder made with another
dtype, or with negated_rows "used" when "all" is asked for, is re-exported in place.
Two teachers with the same key (e.g. teacher1 and teacher2 both MiniLM with the same
settings) share work: the second one's folder is hard-linked (or copied) from the first.

Export of kind hf is resumable: rows are processed in shards of `shard_rows` consecutive
rows; each shard is embedded, written into the memmapped .npy, flushed, and only then
recorded in `progress.json`. A killed export restarts at the first unrecorded shard.
meta.json is written last, with "complete": true; until then the folder is not used.

Precomputed import (`teacher_cfg.precomputed` = a folder holding, per part, one of):
  text.parquet       columns pair_id (str) and embedding (list<float>), any row order
  concepts.parquet   columns concept_id (str) and embedding (list<float>)
  negated.parquet    columns concept_id (str) and embedding: the negated form's embedding
  text.npy / concepts.npy / negated.npy   [rows, d] float arrays, with optional ids in
                     text_ids.npy / concepts_ids.npy / negated_ids.npy (string arrays) or
                     text_ids.txt / ... (one id per line); without ids the rows must be in
                     pairs.parquet / concepts.parquet order and the row count must match.
Ids are matched to the dataset (unknown or duplicate ids are errors naming file, row and
field; every dataset id must be covered, except that negated.* only needs the concepts that
negated_rows asks for). Dimensions must agree with each other and with teacher_cfg.dim when
it is set, and every value must be finite. A part with no file at all is written as zeros
and listed in meta.json "missing_parts" (with a warning): e.g. a text-only teacher 1.
Precomputed vectors are stored as given (no normalisation).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import importlib
import json
import logging
import os
import shutil
import time
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from line_jax.data.dataset import Dataset, DataError, data_error
from line_jax.embeddings import (PARTS, cache_key, check_finite, teacher_dir, write_json,
                                 write_meta)

DEFAULT_SHARD_ROWS = 8192
_COPY_ROWS = 65536
_ID_FIELD = {"text": "pair_id", "concepts": "concept_id", "negated": "concept_id"}


# --- keys and folder state --------------------------------------------------------------

def _storage_dtype(teacher_cfg) -> np.dtype:
  name = teacher_cfg.get("dtype", "float16") or "float16"
  if name not in ("float16", "float32"):
    raise ValueError(f"teacher {teacher_cfg.get('name')!r}: field 'dtype': {name!r} is not "
                     "'float16' or 'float32'")
  return np.dtype(name)


def _negated_mode(teacher_cfg) -> str:
  mode = teacher_cfg.get("negated_rows", "used") or "used"
  if mode not in ("used", "all"):
    raise ValueError(f"teacher {teacher_cfg.get('name')!r}: field 'negated_rows': {mode!r} "
                     "is not 'used' or 'all'")
  return mode


def _precomputed_files(folder: str) -> list[str]:
  names = [f"{part}{suffix}" for part in PARTS
           for suffix in (".parquet", ".npy", "_ids.npy", "_ids.txt")]
  return [os.path.join(folder, n) for n in names if os.path.exists(os.path.join(folder, n))]


def key_fields(teacher_cfg, dataset: Dataset) -> dict:
  """The (model, pooling, max_length, normalize, data_hash) a teacher's cache is keyed on."""
  kind = teacher_cfg.get("kind", "hf")
  data_hash = dataset.data_hash()
  if kind == "hf":
    from line_jax.teachers.presets import resolve_settings
    s = resolve_settings(teacher_cfg)
    return dict(model=s.model, pooling=s.pooling, max_length=s.max_length,
                normalize=s.normalize, data_hash=data_hash)
  if kind == "precomputed":
    folder = os.path.abspath(os.path.expanduser(teacher_cfg.get("precomputed", "") or ""))
    if not teacher_cfg.get("precomputed") or not os.path.isdir(folder):
      raise DataError(f"{folder}: field 'precomputed' of teacher {teacher_cfg.get('name')!r}:"
                      " folder not found (kind 'precomputed' needs a folder with text/"
                      "concepts/negated .parquet or .npy; see line_jax.export)")
    stamps = []
    for path in _precomputed_files(folder):
      st = os.stat(path)
      stamps.append([os.path.basename(path), st.st_size, st.st_mtime_ns])
    model = "precomputed:" + folder + ":" + json.dumps(stamps)
    return dict(model=model, pooling="precomputed", max_length=0, normalize=False,
                data_hash=data_hash)
  if kind == "finetuned":   # keyed on the fine-tuned model's own key (base + data + settings)
    from line_jax.teachers import finetune
    enc = finetune.encoder_settings(teacher_cfg, finetune.read_settings(teacher_cfg).base)
    return dict(model="finetuned:" + finetune.finetune_key(teacher_cfg, dataset),
                pooling=enc.pooling, max_length=enc.max_length, normalize=enc.normalize,
                data_hash=data_hash)
  if kind == "synthetic":   # the same key as line_jax.train.ensure_teacher uses
    return dict(model=f"synthetic-{teacher_cfg.get('seed', 0)}-{teacher_cfg.get('dim', 0)}",
                pooling="none", max_length=0, normalize=True, data_hash=data_hash)
  raise ValueError(f"teacher {teacher_cfg.get('name')!r}: field 'kind': {kind!r} is not "
                   "'hf', 'finetuned', 'precomputed' or 'synthetic'")


def teacher_cache_dir(teacher_cfg, dataset: Dataset, workdir: str) -> str:
  """The cache folder of this teacher and dataset (whether or not it exists yet)."""
  fields = key_fields(teacher_cfg, dataset)
  return teacher_dir(workdir, teacher_cfg.get("name", "teacher"), cache_key(**fields))


def _read_meta(path: str) -> Optional[dict]:
  try:
    with open(os.path.join(path, "meta.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _satisfies(meta: Optional[dict], teacher_cfg) -> bool:
  """A complete folder whose dtype and negated coverage are what the config asks for."""
  if not meta or not meta.get("complete"):
    return False
  kind = teacher_cfg.get("kind", "hf")
  if kind != "synthetic" and meta.get("dtype") != _storage_dtype(teacher_cfg).name:
    return False
  if kind in ("hf", "finetuned") and _negated_mode(teacher_cfg) == "all":
    return meta.get("negated_rows") == "all"
  return True


@contextlib.contextmanager
def _folder_lock(path: str) -> Iterator[None]:
  """Exclusive lock so that two processes never export into one folder at once."""
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, ".lock"), "w") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


def _reuse_identical(path: str, teacher_cfg, key: str) -> bool:
  """Links the files of a complete folder with the same key (another teacher name)."""
  pattern = os.path.join(os.path.dirname(path), f"*-{key}")
  for other in sorted(glob.glob(pattern)):
    if os.path.abspath(other) == os.path.abspath(path):
      continue
    meta = _read_meta(other)
    if not _satisfies(meta, teacher_cfg):
      continue
    for part in PARTS:
      src, dst = os.path.join(other, f"{part}.npy"), os.path.join(path, f"{part}.npy")
      if os.path.exists(dst):
        os.remove(dst)
      try:
        os.link(src, dst)
      except OSError:
        shutil.copyfile(src, dst)
    meta = dict(meta, teacher=teacher_cfg.get("name"), reused_from=os.path.abspath(other))
    write_meta(path, meta)
    logging.info("teacher %s: same settings and data as %s; linked its embeddings",
                 teacher_cfg.get("name"), other)
    return True
  return False


def ensure_teacher_embeddings(teacher_cfg, dataset: Dataset, workdir: str, *,
                              encoder=None, shard_rows: int = DEFAULT_SHARD_ROWS,
                              progress_bar: bool = True) -> str:
  """Makes sure the teacher's cache folder is complete; returns its path.

  Does nothing when a complete folder (meta.json "complete": true, same dtype and negated
  coverage) exists; reuses an identical teacher's folder; otherwise embeds (kind hf,
  resuming an interrupted export), imports (precomputed) or generates (synthetic).

  Args:
    teacher_cfg: a `line_jax.config.teacher_config()` ConfigDict.
    dataset: the loaded dataset.
    workdir: the work dir; the folder is `teacher_dir(workdir, name, key)`.
    encoder: an already loaded `line_jax.teachers.Encoder` (kind hf); loaded on demand.
    shard_rows: rows per resumable shard (kind hf).
    progress_bar: show a tqdm bar per part (kind hf).
  """
  fields = key_fields(teacher_cfg, dataset)
  key = cache_key(**fields)
  path = teacher_dir(workdir, teacher_cfg.get("name", "teacher"), key)
  if _satisfies(_read_meta(path), teacher_cfg):
    return path
  with _folder_lock(path):
    if _satisfies(_read_meta(path), teacher_cfg):   # another process finished meanwhile
      return path
    stale = os.path.join(path, "meta.json")
    if os.path.exists(stale):
      os.remove(stale)   # a folder about to change is not complete
    if _reuse_identical(path, teacher_cfg, key):
      return path
    kind = teacher_cfg.get("kind", "hf")
    meta = dict(fields, kind=kind, teacher=teacher_cfg.get("name"), key=key)
    if kind == "hf":
      meta.update(_export_hf(teacher_cfg, dataset, path, encoder, shard_rows, progress_bar))
    elif kind == "finetuned":   # fine-tune first (cached), then export as kind hf
      from line_jax.teachers import finetune
      folder = finetune.ensure_finetuned(teacher_cfg, dataset, workdir)
      meta.update(_export_hf(finetune.hf_teacher_config(teacher_cfg, folder), dataset, path,
                             encoder, shard_rows, progress_bar), finetuned_dir=folder)
    elif kind == "precomputed":
      meta.update(import_precomputed(teacher_cfg, dataset, path))
    else:
      for part in PARTS:   # unlink, never overwrite: files may be shared hard links
        if os.path.lexists(os.path.join(path, f"{part}.npy")):
          os.remove(os.path.join(path, f"{part}.npy"))
      synthetic = importlib.import_module("line_jax.data.synthetic")
      synthetic.write_synthetic_teacher(dataset, path, teacher_cfg)
      meta.update(_describe_written(path, dataset, teacher_cfg))
    meta["complete"] = True
    write_meta(path, meta)   # last: the folder counts as complete only from here on
  logging.info("teacher %s: embeddings in %s", teacher_cfg.get("name"), path)
  return path


# --- kind hf: resumable sharded export ------------------------------------------------

def _negated_selection(teacher_cfg, dataset: Dataset) -> np.ndarray:
  if _negated_mode(teacher_cfg) == "all":
    return np.arange(dataset.num_concepts, dtype=np.int64)
  return np.unique(dataset.concept_flat[dataset.negated_flat]).astype(np.int64)


def _new_memmap(path: str, dtype: np.dtype, shape: tuple) -> np.ndarray:
  """A fresh zero-filled .npy memmap. An old file is unlinked first, never truncated: it
  may be a hard link shared with another teacher's folder (see _reuse_identical)."""
  if os.path.lexists(path):
    os.remove(path)
  return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


def _open_output(path: str, rows: int, dim: int, dtype: np.dtype, reuse: bool) -> np.ndarray:
  if reuse and os.path.exists(path):
    try:
      existing = np.load(path, mmap_mode="r+")
      if existing.shape == (rows, dim) and existing.dtype == dtype:
        return existing
    except (OSError, ValueError):
      pass
  return _new_memmap(path, dtype, (rows, dim))


def _export_hf(teacher_cfg, dataset: Dataset, path: str, encoder, shard_rows: int,
               progress_bar: bool) -> dict:
  from tqdm.auto import tqdm
  if encoder is None:
    from line_jax.teachers import load_encoder
    encoder = load_encoder(teacher_cfg)
  dtype = _storage_dtype(teacher_cfg)
  dim = int(encoder.dim)
  negated_rows = _negated_selection(teacher_cfg, dataset)
  work = {"text": (np.arange(dataset.num_pairs, dtype=np.int64), dataset.texts),
          "concepts": (np.arange(dataset.num_concepts, dtype=np.int64), dataset.names),
          "negated": (negated_rows, dataset.negated_names)}
  plan = {"dim": dim, "dtype": dtype.name, "shard_rows": int(shard_rows),
          "data_hash": dataset.data_hash(),
          "negated_rows": hashlib.sha256(negated_rows.tobytes()).hexdigest()[:16]}
  progress_path = os.path.join(path, "progress.json")
  progress = {}
  if os.path.exists(progress_path):
    with open(progress_path) as f:
      progress = json.load(f)
  resuming = progress.get("plan") == plan
  done = {part: set(progress.get("done", {}).get(part, [])) if resuming else set()
          for part in PARTS}
  if not resuming:
    write_json(progress_path, {"plan": plan, "done": {p: [] for p in PARTS}})
  elif any(done.values()):
    logging.info("teacher %s: resuming export in %s (%s)", teacher_cfg.get("name"), path,
                 ", ".join(f"{p}: {len(d)} shards done" for p, d in done.items()))
  sizes = {"text": dataset.num_pairs, "concepts": dataset.num_concepts,
           "negated": dataset.num_concepts}
  for part in PARTS:
    rows, strings = work[part]
    file = os.path.join(path, f"{part}.npy")
    output = _open_output(file, sizes[part], dim, dtype, reuse=resuming)
    num_shards = -(-len(rows) // shard_rows)
    todo = [s for s in range(num_shards) if s not in done[part]]
    finished_rows = len(rows) - sum(len(rows[s * shard_rows:(s + 1) * shard_rows])
                                    for s in todo)
    start_time = time.perf_counter()
    with tqdm(total=len(rows), initial=finished_rows, unit="rows", unit_scale=True,
              desc=f"{teacher_cfg.get('name')} {part}", disable=not progress_bar,
              dynamic_ncols=True) as bar:
      for shard in todo:
        shard_rows_idx = rows[shard * shard_rows:(shard + 1) * shard_rows]
        vectors = encoder.encode([strings[r] for r in shard_rows_idx], progress=bar.update)
        stored = vectors.astype(dtype)
        bad = ~np.isfinite(stored).all(axis=1)
        if bad.any():
          row = int(shard_rows_idx[np.flatnonzero(bad)[0]])
          why = " (overflows float16; set dtype float32)" if np.isfinite(vectors[bad]).all() \
              else ""
          raise data_error(file, row, "embedding", f"non-finite value from the encoder{why}")
        output[shard_rows_idx] = stored
        output.flush()
        done[part].add(shard)
        write_json(progress_path, {"plan": plan,
                                    "done": {p: sorted(d) for p, d in done.items()}})
    if todo:
      seconds = time.perf_counter() - start_time
      embedded = len(rows) - finished_rows
      logging.info("teacher %s: %s: %d rows in %.1fs (%.1f rows/s)", teacher_cfg.get("name"),
                   part, embedded, seconds, embedded / max(seconds, 1e-9))
    del output
  os.remove(progress_path)
  return {"model_dir": getattr(encoder, "model_dir", ""), "dim": dim, "dtype": dtype.name,
          "rows": dict(sizes), "negated_rows": _negated_mode(teacher_cfg),
          "negated_embedded": int(len(negated_rows)), "checked_finite": True}


# --- kind synthetic ---------------------------------------------------------------------

def _describe_written(path: str, dataset: Dataset, teacher_cfg) -> dict:
  """Validates arrays another writer put in `path`; returns the meta fields about them."""
  expected = {"text": dataset.num_pairs, "concepts": dataset.num_concepts,
              "negated": dataset.num_concepts}
  dim, dtype = None, None
  for part in PARTS:
    file = os.path.join(path, f"{part}.npy")
    if not os.path.exists(file):
      raise DataError(f"{file}: file not found (the teacher writer did not produce it)")
    arr = np.load(file, mmap_mode="r")
    if arr.ndim != 2 or arr.shape[0] != expected[part]:
      raise data_error(file, None, "rows", f"shape {arr.shape}, expected "
                       f"({expected[part]}, d)")
    if dim is not None and arr.shape[1] != dim:
      raise data_error(file, None, "dim", f"dimension {arr.shape[1]}, expected {dim}")
    dim, dtype = arr.shape[1], arr.dtype
    check_finite(file, arr)
  expected_dim = int(teacher_cfg.get("dim", 0) or 0)
  if expected_dim and expected_dim != dim:
    raise data_error(os.path.join(path, "text.npy"), None, "dim", f"dimension {dim}, but the "
                     f"teacher config's dim is {expected_dim}")
  return {"dim": int(dim), "dtype": np.dtype(dtype).name, "rows": expected,
          "negated_rows": "all", "checked_finite": True}


# --- kind precomputed -----------------------------------------------------------------

def _read_ids(path: str) -> np.ndarray:
  if path.endswith(".txt"):
    with open(path, encoding="utf-8") as f:
      return np.asarray([line.rstrip("\n") for line in f if line.rstrip("\n")], dtype=object)
  ids = np.load(path, allow_pickle=False)
  if ids.ndim != 1:
    raise data_error(path, None, "id", f"expected a 1-D array of ids, got shape {ids.shape}")
  return ids.astype(str).astype(object)


def _parquet_blocks(path: str, id_field: str) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
  """(ids, vectors [n, d] float32, first row) per record batch of a Parquet file."""
  import pyarrow as pa
  import pyarrow.compute as pc
  import pyarrow.parquet as pq
  file = pq.ParquetFile(path)
  names = file.schema_arrow.names
  for field in (id_field, "embedding"):
    if field not in names:
      raise data_error(path, None, field, f"missing column; found {names}")
  first = 0
  for batch in file.iter_batches(columns=[id_field, "embedding"], batch_size=_COPY_ROWS):
    ids = batch.column(0)
    if ids.null_count:
      raise data_error(path, first + int(np.flatnonzero(
          pc.is_null(ids).to_numpy(zero_copy_only=False))[0]), id_field, "missing id")
    column = batch.column(1)
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)):
      raise data_error(path, None, "embedding", f"expected a list of floats, got {column.type}")
    if column.null_count:
      raise data_error(path, first + int(np.flatnonzero(
          pc.is_null(column).to_numpy(zero_copy_only=False))[0]), "embedding", "missing value")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
      row = int(np.flatnonzero(lengths != lengths[0])[0])
      raise data_error(path, first + row, "embedding", f"length {lengths[row]}, but row "
                       f"{first} has {lengths[0]}")
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    dim = int(lengths[0]) if len(lengths) else 0
    vectors = np.asarray(values, dtype=np.float32).reshape(len(lengths), dim)
    yield np.asarray(ids.to_pylist(), dtype=object), vectors, first
    first += len(lengths)


def _npy_blocks(path: str, ids_path: Optional[str], dataset_ids: np.ndarray,
                id_field: str) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
  arr = np.load(path, mmap_mode="r", allow_pickle=False)
  if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
    raise data_error(path, None, "embedding", f"expected a 2-D float array, got shape "
                     f"{arr.shape} dtype {arr.dtype}")
  if ids_path is not None:
    ids = _read_ids(ids_path)
    if len(ids) != arr.shape[0]:
      raise data_error(ids_path, None, id_field, f"{len(ids)} ids for {arr.shape[0]} rows "
                       f"of {path}")
  else:
    if arr.shape[0] != len(dataset_ids):
      raise data_error(path, None, "rows", f"{arr.shape[0]} rows but the dataset has "
                       f"{len(dataset_ids)}; without an ids file the rows must be in dataset "
                       "order")
    logging.warning("%s: no ids file; assuming rows are in dataset order", path)
    ids = dataset_ids
  for first in range(0, arr.shape[0], _COPY_ROWS):
    yield (ids[first:first + _COPY_ROWS],
           np.asarray(arr[first:first + _COPY_ROWS], dtype=np.float32), first)


def import_precomputed(teacher_cfg, dataset: Dataset, path: str) -> dict:
  """Copies validated precomputed embeddings into the cache folder `path` (see module doc).

  Returns the meta.json fields describing what was written.
  """
  source = os.path.abspath(os.path.expanduser(teacher_cfg.get("precomputed")))
  dtype = _storage_dtype(teacher_cfg)
  dataset_ids = {"text": dataset.pair_ids, "concepts": dataset.concept_ids,
                 "negated": dataset.concept_ids}
  required = {"text": np.arange(dataset.num_pairs),
              "concepts": np.arange(dataset.num_concepts),
              "negated": _negated_selection(teacher_cfg, dataset)}
  dim = int(teacher_cfg.get("dim", 0) or 0) or None
  dim_source = "teacher config field 'dim'" if dim else None
  missing_parts, plans = [], {}
  for part in PARTS:
    parquet = os.path.join(source, f"{part}.parquet")
    npy = os.path.join(source, f"{part}.npy")
    if os.path.exists(parquet):
      plans[part] = (parquet, lambda p=parquet, part=part: _parquet_blocks(p, _ID_FIELD[part]))
    elif os.path.exists(npy):
      ids_path = next((os.path.join(source, f"{part}_ids{s}") for s in (".npy", ".txt")
                       if os.path.exists(os.path.join(source, f"{part}_ids{s}"))), None)
      plans[part] = (npy, lambda p=npy, i=ids_path, part=part: _npy_blocks(
          p, i, dataset_ids[part], _ID_FIELD[part]))
    else:
      missing_parts.append(part)
  if len(missing_parts) == len(PARTS):
    raise DataError(f"{source}: no text/concepts/negated .parquet or .npy files (see "
                    "line_jax.export for the import format)")
  for part in missing_parts:
    logging.warning("precomputed teacher %s: no %s.parquet/.npy in %s; its %d rows are "
                    "written as zeros", teacher_cfg.get("name"), part, source,
                    len(dataset_ids[part]))
  sizes = {part: len(ids) for part, ids in dataset_ids.items()}
  outputs = {}
  for part in PARTS:
    if part not in plans:
      continue
    file, blocks = plans[part]
    index = {str(i): n for n, i in enumerate(dataset_ids[part])}
    seen = np.full(sizes[part], -1, np.int64)
    for ids, vectors, first in blocks():
      if dim is None:
        dim, dim_source = vectors.shape[1], file
      if vectors.shape[1] != dim:
        raise data_error(file, first, "embedding", f"dimension {vectors.shape[1]}, but "
                         f"{dim_source} gives {dim}")
      bad = ~np.isfinite(vectors).all(axis=1)
      if bad.any():
        raise data_error(file, first + int(np.flatnonzero(bad)[0]), "embedding",
                         "non-finite value (NaN or inf)")
      rows = np.empty(len(ids), np.int64)
      for n, identifier in enumerate(ids):
        row = index.get(str(identifier))
        if row is None:
          raise data_error(file, first + n, _ID_FIELD[part], f"unknown id {identifier!r} "
                           "(not in the dataset)")
        if seen[row] >= 0:
          raise data_error(file, first + n, _ID_FIELD[part], f"duplicate id {identifier!r} "
                           f"(first at row {seen[row]})")
        seen[row] = first + n
        rows[n] = row
      stored = vectors.astype(dtype)
      if not np.isfinite(stored).all():
        row = first + int(np.flatnonzero(~np.isfinite(stored).all(axis=1))[0])
        raise data_error(file, row, "embedding", "value overflows float16; set the teacher's "
                         "dtype to float32")
      if part not in outputs:
        outputs[part] = _new_memmap(os.path.join(path, f"{part}.npy"), dtype,
                                      (sizes[part], dim))
      outputs[part][rows] = stored
    uncovered = required[part][seen[required[part]] < 0]
    if len(uncovered):
      raise data_error(file, None, _ID_FIELD[part], f"{len(uncovered)} dataset ids have no "
                       f"embedding, e.g. {dataset_ids[part][uncovered[0]]!r}")
  if dim is None:
    raise DataError(f"{source}: the files hold no rows, so the dimension is unknown")
  for part in PARTS:
    if part not in outputs:
      outputs[part] = _new_memmap(os.path.join(path, f"{part}.npy"), dtype,
                                    (sizes[part], dim))
    outputs[part].flush()
  outputs.clear()
  return {"source": source, "dim": int(dim), "dtype": dtype.name, "rows": sizes,
          "negated_rows": _negated_mode(teacher_cfg), "missing_parts": missing_parts,
          "checked_finite": True}


# --- command line -----------------------------------------------------------------------

def export_teachers(config, workdir: str) -> list[str]:
  """prepare_dataset(config), then ensure_teacher_embeddings for teacher1 and teacher2."""
  from line_jax.data import prepare_dataset
  dataset = prepare_dataset(config)
  return [ensure_teacher_embeddings(config[name], dataset, workdir)
          for name in ("teacher1", "teacher2")]


def _main(argv: Sequence[str]) -> None:
  from absl import flags
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
  for name, path in zip(("teacher1", "teacher2"), export_teachers(config, workdir)):
    print(f"{name}: {path}")


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "ml_collections config file",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "work dir (embedding cache, checkpoints)")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(_main)
