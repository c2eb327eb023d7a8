"""Teacher embeddings into the work-dir cache (`line_jax.cache.store` folder format).

`python -m line_jax.export` runs `export_teachers`: builds (or loads) the dataset, then
makes sure both teachers' embedding folders exist. Training (`line_jax.training.trainer`) and `LineModel.load` call `ensure_teacher` themselves when a
folder is missing.

Teacher kinds (`teacher_config().kind`):
  hf           a BERT-family Hugging Face checkpoint run by `line_jax.teachers` (local
               folder, bundled all-MiniLM-L6-v2, or the local HF cache; never the network).
               Pair texts -> text.npy, concept names -> concepts.npy, negated names ->
               negated.npy. With negated_rows "used" only concepts that occur negated in
               some pair get a negated embedding; the other rows of negated.npy are zero
               and meta.json says so ("negated_rows", "negated_embedded").
  precomputed  embeddings made elsewhere (the paper's OpenAI teacher, ...), imported from
               the folder `teacher_cfg.precomputed` (`line_jax.cache.precomputed`).
  synthetic    `line_jax.cache.synthetic.write_synthetic_teacher(dataset, path, cfg)`.

Cache key: `cache_key(model, pooling, max_length, normalize, dataset.data_hash())` where
model is the teacher's model name or path as configured (kind hf), the source folder plus
its files' sizes and modification times (precomputed), or "synthetic-<seed>-<dim>" (the
key every synthetic teacher gets). A changed dataset or setting gets a new folder; an
unchanged one is reused.
The storage dtype and negated_rows are not in the key: a complete folder made with another
dtype, or with negated_rows "used" when "all" is asked for, is re-exported in place.
Two teachers with the same key (e.g. teacher1 and teacher2 both MiniLM with the same
settings) share work: the second one's folder is hard-linked (or copied) from the first.

Export of kind hf is resumable: rows are processed in shards of `shard_rows` consecutive
rows; each shard is embedded, written into the memmapped .npy, flushed, and only then
recorded in `progress.json`. A killed export restarts at the first unrecorded shard.
meta.json is written last, with "complete": true; until then the folder is not used.

Precomputed import: `line_jax.cache.precomputed`.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
import shutil
import time
from typing import Iterator, Optional

import numpy as np
from tqdm.auto import tqdm

from line_jax.util import files
from line_jax.cache import precomputed
from line_jax.cache import synthetic as synthetic_teacher
from line_jax import teachers
from line_jax.teachers import finetune
from line_jax.data import prepare_dataset
from line_jax.data.dataset import Dataset, DataError, data_error
from line_jax.cache.store import (PARTS, TeacherEmbeddings, cache_key, check_file_finite,
                                 load_teacher_embeddings, negated_mode, negated_selection,
                                 new_memmap, part_rows, storage_dtype, teacher_dir, text_mode,
                                 text_selection, write_meta)
from line_jax.util.files import write_json

DEFAULT_SHARD_ROWS = 8192


# --- keys and folder state --------------------------------------------------------------

def key_fields(teacher_cfg, dataset: Dataset) -> dict:
  """The (model, pooling, max_length, normalize, data_hash) a teacher's cache is keyed on."""
  kind = teacher_cfg.get("kind", "hf")
  data_hash = dataset.data_hash()
  if kind == "hf":
    s = teachers.resolve_settings(teacher_cfg)
    return dict(model=s.model, pooling=s.pooling, max_length=s.max_length,
                normalize=s.normalize, data_hash=data_hash)
  if kind == "precomputed":
    folder = os.path.abspath(os.path.expanduser(teacher_cfg.get("precomputed", "") or ""))
    if not teacher_cfg.get("precomputed") or not os.path.isdir(folder):
      raise DataError(f"{folder}: field 'precomputed' of teacher {teacher_cfg.get('name')!r}:"
                      " folder not found (kind 'precomputed' needs a folder with text/"
                      "concepts/negated .parquet or .npy; see line_jax.cache.precomputed)")
    stamps = []
    for path in precomputed.source_files(folder):
      st = os.stat(path)
      stamps.append([os.path.basename(path), st.st_size, st.st_mtime_ns])
    model = "precomputed:" + folder + ":" + json.dumps(stamps)
    return dict(model=model, pooling="precomputed", max_length=0, normalize=False,
                data_hash=data_hash)
  if kind == "finetuned":   # keyed on the fine-tuned model's own key (base + data + settings)
    enc = finetune.encoder_settings(teacher_cfg, finetune.read_settings(teacher_cfg).base)
    return dict(model="finetuned:" + finetune.finetune_key(teacher_cfg, dataset),
                pooling=enc.pooling, max_length=enc.max_length, normalize=enc.normalize,
                data_hash=data_hash)
  if kind == "synthetic":
    return dict(model=f"synthetic-{teacher_cfg.get('seed', 0)}-{teacher_cfg.get('dim', 0)}",
                pooling="none", max_length=0, normalize=True, data_hash=data_hash)
  raise ValueError(f"teacher {teacher_cfg.get('name')!r}: field 'kind': {kind!r} is not "
                   "'hf', 'finetuned', 'precomputed' or 'synthetic'")


def teacher_cache_dir(teacher_cfg, dataset: Dataset, workdir: str) -> str:
  """The cache folder of this teacher and dataset (whether or not it exists yet)."""
  fields = key_fields(teacher_cfg, dataset)
  return teacher_dir(workdir, teacher_cfg.get("name", "teacher"), cache_key(**fields))


def _read_meta(path: str) -> Optional[dict]:
  return files.read_json_or_none(os.path.join(path, "meta.json"))


def _satisfies(meta: Optional[dict], teacher_cfg) -> bool:
  """A complete folder whose dtype and negated coverage are what the config asks for."""
  if not meta or not meta.get("complete"):
    return False
  kind = teacher_cfg.get("kind", "hf")
  if kind != "synthetic" and meta.get("dtype") != storage_dtype(teacher_cfg).name:
    return False
  if kind in ("hf", "finetuned") and negated_mode(teacher_cfg) == "all" and \
      meta.get("negated_rows") != "all":
    return False
  # A folder with every text serves a teacher that asks for the evaluated ones only.
  return text_mode(teacher_cfg) == "eval" or meta.get("text_rows", "all") == "all"


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
        with files.replacing(dst) as tmp:
          shutil.copyfile(src, tmp)
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
  try:
    with _folder_lock(path):
      if _satisfies(_read_meta(path), teacher_cfg):   # another process finished meanwhile
        return path
      _make_folder(teacher_cfg, dataset, workdir, path, fields, key, encoder, shard_rows,
                   progress_bar)
  except files.WriteError as e:
    raise files.WriteError(
        e.path, f"{e.reason}; the export of teacher {teacher_cfg.get('name')!r} into {path} "
        "stopped there: the folder has no meta.json, so it is not used, and the export is "
        "resumed (or redone) when run again", e.errno) from e
  logging.info("teacher %s: embeddings in %s", teacher_cfg.get("name"), path)
  return path


def _make_folder(teacher_cfg, dataset: Dataset, workdir: str, path: str, fields: dict,
                 key: str, encoder, shard_rows: int, progress_bar: bool) -> None:
  """The work of `ensure_teacher_embeddings` under the folder's lock."""
  stale = os.path.join(path, "meta.json")
  if os.path.exists(stale):
    os.remove(stale)   # a folder about to change is not complete
  if _reuse_identical(path, teacher_cfg, key):
    return
  kind = teacher_cfg.get("kind", "hf")
  meta = dict(fields, kind=kind, teacher=teacher_cfg.get("name"), key=key)
  if kind == "hf":
    meta.update(_export_hf(teacher_cfg, dataset, path, encoder, shard_rows, progress_bar))
  elif kind == "finetuned":   # fine-tune first (cached), then export as kind hf
    folder = finetune.ensure_finetuned(teacher_cfg, dataset, workdir)
    meta.update(_export_hf(finetune.hf_teacher_config(teacher_cfg, folder), dataset, path,
                           encoder, shard_rows, progress_bar), finetuned_dir=folder)
  elif kind == "precomputed":
    meta.update(precomputed.import_precomputed(teacher_cfg, dataset, path))
  else:
    for part in PARTS:   # unlink, never overwrite: files may be shared hard links
      if os.path.lexists(os.path.join(path, f"{part}.npy")):
        os.remove(os.path.join(path, f"{part}.npy"))
    synthetic_teacher.write_synthetic_teacher(dataset, path, teacher_cfg)
    meta.update(_describe_written(path, dataset, teacher_cfg))
  meta["complete"] = True
  write_meta(path, meta)   # last: the folder counts as complete only from here on


def ensure_teacher(teacher_cfg, dataset: Dataset, workdir: str) -> TeacherEmbeddings:
  """The teacher's cached embeddings, exported (HF), imported (precomputed) or made
  (synthetic) first if missing."""
  return load_teacher_embeddings(ensure_teacher_embeddings(teacher_cfg, dataset, workdir),
                                 dataset)


# --- kind hf: resumable sharded export ------------------------------------------------

def _open_output(path: str, rows: int, dim: int, dtype: np.dtype, reuse: bool) -> np.ndarray:
  if reuse and os.path.exists(path):
    try:
      existing = np.load(path, mmap_mode="r+")
      if existing.shape == (rows, dim) and existing.dtype == dtype:
        files.reserve(path)   # a file left by an older export may be sparse
        return existing
    except (OSError, ValueError):
      pass
  return new_memmap(path, dtype, (rows, dim))


def _export_hf(teacher_cfg, dataset: Dataset, path: str, encoder, shard_rows: int,
               progress_bar: bool) -> dict:
  if encoder is None:
    encoder = teachers.load_encoder(teacher_cfg)
  dtype = storage_dtype(teacher_cfg)
  dim = int(encoder.dim)
  negated_rows = negated_selection(teacher_cfg, dataset)
  texts = text_mode(teacher_cfg)
  text_rows = text_selection(texts, dataset)
  work = {"text": (text_rows, dataset.texts),
          "concepts": (np.arange(dataset.num_concepts, dtype=np.int64), dataset.names),
          "negated": (negated_rows, dataset.negated_names)}
  plan = {"dim": dim, "dtype": dtype.name, "shard_rows": int(shard_rows),
          "data_hash": dataset.data_hash(),
          "negated_rows": hashlib.sha256(negated_rows.tobytes()).hexdigest()[:16],
          "text_rows": hashlib.sha256(text_rows.tobytes()).hexdigest()[:16]}
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
  sizes = part_rows(dataset)
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
          "rows": dict(sizes), "negated_rows": negated_mode(teacher_cfg),
          "negated_embedded": int(len(negated_rows)), "text_rows": texts,
          "text_embedded": int(len(text_rows)), "checked_finite": True}


# --- kind synthetic ---------------------------------------------------------------------

def _describe_written(path: str, dataset: Dataset, teacher_cfg) -> dict:
  """Validates arrays another writer put in `path`; returns the meta fields about them."""
  expected = part_rows(dataset)
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
    check_file_finite(file, arr)
  expected_dim = int(teacher_cfg.get("dim", 0) or 0)
  if expected_dim and expected_dim != dim:
    raise data_error(os.path.join(path, "text.npy"), None, "dim", f"dimension {dim}, but the "
                     f"teacher config's dim is {expected_dim}")
  return {"dim": int(dim), "dtype": np.dtype(dtype).name, "rows": expected,
          "negated_rows": "all", "checked_finite": True}


def export_teachers(config, workdir: str) -> list[str]:
  """prepare_dataset(config), then ensure_teacher_embeddings for teacher1 and teacher2."""
  dataset = prepare_dataset(config)
  return [ensure_teacher_embeddings(config[name], dataset, workdir)
          for name in ("teacher1", "teacher2")]
