"""A teacher's embeddings of the pair texts' clauses: what a model.text_vectors="segments"
run trains on (teacher 1, every pair) and what evaluation scores texts by clause with (both
teachers, the evaluated pairs).

Layout, inside the teacher's cache folder (`line_jax.cache.store`):
  <teacher folder>/segments-<key>/
      segments.npy         [N_seg, d]  every clause of the embedded pairs' texts, in order
      segment_offsets.npy  [P + 1]     int64: pair i's clauses are rows [o[i]:o[i + 1]]
      meta.json            {"pattern", "data_hash", "text_rows", "num_segments", "dim",
                            "dtype", "distinct", "complete": true}
`key` hashes the clause pattern (config data.segment_pattern, or eval.segment_pattern for
evaluation) and the data, so another pattern or dataset gets its own folder. The whole
text is not stored again: it is the teacher's text.npy row. `text_rows` "eval" embeds the
clauses of the pairs outside the train split only (the others have no rows); a folder of
"all" serves an "eval" request. Clauses (`line_jax.util.segments.clause_table`) that repeat
are embedded once.

Kinds: "hf" and "finetuned" teachers embed the clauses with their encoder (the fine-tuned
folder for "finetuned"), "synthetic" ones make them (`line_jax.cache.synthetic.segment_rows`);
a "precomputed" teacher cannot embed new strings: `SegmentsUnavailableError`.

The folder is built aside (`segments-<key>.partial`) and renamed when complete, so a
killed export leaves no folder that looks complete; it resumes at its first unfinished
shard of distinct clauses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from typing import Iterator, Optional, Tuple

import numpy as np
from tqdm.auto import tqdm

from line_jax import teachers
from line_jax.cache import synthetic as synthetic_teacher
from line_jax.cache.store import (TeacherEmbeddings, check_file_finite, new_memmap, open_npy,
                                  gather_rows, storage_dtype, text_selection,
                                  write_meta)
from line_jax.data.dataset import Dataset, DataError, data_error
from line_jax.teachers import finetune
from line_jax.util import segments as segments_lib
from line_jax.util.files import write_json

ROWS_FILE = "segments.npy"
OFFSETS_FILE = "segment_offsets.npy"
SHARD_ROWS = 8192
KINDS = ("hf", "finetuned", "synthetic")


class SegmentsUnavailableError(ValueError):
  """A teacher that cannot embed the texts' clauses (kind "precomputed")."""


@dataclasses.dataclass(frozen=True)
class SegmentEmbeddings:
  """A teacher's clause rows of the pair texts (module doc).

  Attributes:
    rows: [N_seg, d] memmap.
    offsets: [P + 1] int64; pair i's clauses are rows[offsets[i]:offsets[i + 1]].
    embedded: [P] bool, where the pair's clauses were embedded; None: every pair.
    meta: the folder's meta.json.
    path: the folder.
  """
  rows: np.ndarray
  offsets: np.ndarray
  embedded: Optional[np.ndarray]
  meta: dict
  path: str

  @property
  def counts(self) -> np.ndarray:
    """[P] clauses of each pair."""
    return np.diff(self.offsets)

  def pair_rows(self, pair_idx: np.ndarray, dtype=None) -> Tuple[np.ndarray, np.ndarray]:
    """(the clause rows of the pairs `pair_idx`, in that order [n, d]; [n] int64 position in
    `pair_idx` of the pair each belongs to); ValueError for pairs whose clauses were not
    embedded (text_rows "eval")."""
    pair_idx = np.asarray(pair_idx, np.int64)
    if self.embedded is not None and len(pair_idx) and not self.embedded[pair_idx].all():
      missing = pair_idx[~self.embedded[pair_idx]]
      raise ValueError(f"{self.path}: the clauses of {len(missing)} requested pairs were not "
                       f"embedded (text_rows {self.meta.get('text_rows')!r}; first: pair "
                       f"{int(missing[0])})")
    starts = self.offsets[pair_idx]
    lengths = self.offsets[pair_idx + 1] - starts
    owner = np.repeat(np.arange(len(pair_idx)), lengths)
    first = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    flat = first + np.arange(len(owner))
    rows = gather_rows(self.rows, flat, dtype) if len(flat) else np.zeros(
        (0, self.rows.shape[1]), dtype or self.rows.dtype)
    return rows, owner


def segments_key(pattern: str, data_hash: str) -> str:
  blob = json.dumps(["segments", pattern, data_hash])
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def segments_dir(teacher: TeacherEmbeddings, pattern: str, dataset: Dataset) -> str:
  return os.path.join(teacher.path, f"segments-{segments_key(pattern, dataset.data_hash())}")


def _read_meta(path: str) -> Optional[dict]:
  try:
    with open(os.path.join(path, "meta.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _satisfies(meta: Optional[dict], mode: str) -> bool:
  return bool(meta and meta.get("complete")) and (mode == "eval" or
                                                 meta.get("text_rows") == "all")


def load_segments(path: str, dataset: Dataset, dim: int) -> SegmentEmbeddings:
  """Opens a complete segments folder and checks it against the dataset."""
  meta = _read_meta(path)
  if not meta or not meta.get("complete"):
    raise DataError(f"{path}/meta.json: missing or incomplete segments folder")
  offsets_path, rows_path = os.path.join(path, OFFSETS_FILE), os.path.join(path, ROWS_FILE)
  for p in (offsets_path, rows_path):
    if not os.path.exists(p):
      raise DataError(f"{p}: file not found")
  offsets = np.load(offsets_path)
  if offsets.shape != (dataset.num_pairs + 1,) or offsets[0] != 0 or (
      len(offsets) > 1 and np.any(np.diff(offsets) < 0)):
    raise data_error(offsets_path, None, "offsets", f"expected {dataset.num_pairs + 1} "
                     f"non-decreasing offsets from 0, got shape {offsets.shape}")
  rows = open_npy(rows_path)
  if rows.ndim != 2 or rows.shape != (int(offsets[-1]), dim):
    raise data_error(rows_path, None, "shape", f"{rows.shape}, expected "
                     f"({int(offsets[-1])}, {dim}) by {OFFSETS_FILE} and the teacher")
  embedded = None
  if meta.get("text_rows", "all") != "all":
    embedded = np.zeros(dataset.num_pairs, bool)
    embedded[text_selection(meta["text_rows"], dataset)] = True
  return SegmentEmbeddings(rows, offsets.astype(np.int64), embedded, meta, path)


@contextlib.contextmanager
def _lock(path: str) -> Iterator[None]:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".lock", "w") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_segments(teacher_cfg, teacher: TeacherEmbeddings, dataset: Dataset,
                    pattern: str, mode: str = "all", encoder=None,
                    progress_bar: bool = True) -> SegmentEmbeddings:
  """The teacher's clause rows of the pairs' texts (`mode` "all": every pair; "eval": the
  pairs outside the train split), embedded first when its folder is missing (module doc).

  Raises SegmentsUnavailableError for a teacher that cannot embed new strings."""
  if mode not in ("all", "eval"):
    raise ValueError(f"segments mode {mode!r}: expected 'all' or 'eval'")
  kind = teacher_cfg.get("kind", "hf")
  if kind not in KINDS:
    raise SegmentsUnavailableError(
        f"teacher {teacher_cfg.get('name')!r} is a {kind!r} teacher: it cannot embed the "
        "texts' clauses (model.text_vectors='segments' and the clause-level figures need "
        f"a teacher of kind {', '.join(repr(k) for k in KINDS)})")
  if kind == "synthetic":
    mode = "all"          # made at once, every pair's
  if not teacher.path:
    raise SegmentsUnavailableError(f"teacher {teacher_cfg.get('name')!r} has no cache folder "
                                   "to keep its clause rows in")
  path = segments_dir(teacher, pattern, dataset)
  if not _satisfies(_read_meta(path), mode):
    encode = _encode_fn(teacher_cfg, teacher, dataset, encoder)   # before writing anything
    with _lock(path):
      if not _satisfies(_read_meta(path), mode):
        _build(teacher_cfg, teacher, dataset, pattern, mode, path, encode, progress_bar)
  return load_segments(path, dataset, teacher.dim)


def _encode_fn(teacher_cfg, teacher: TeacherEmbeddings, dataset: Dataset, encoder):
  """strings -> [n, d] float32, as the teacher embeds new strings."""
  if teacher_cfg.get("kind") == "synthetic":
    return lambda strings, progress=None: synthetic_teacher.segment_rows(
        dataset, teacher_cfg, strings).astype(np.float32)
  if encoder is None:
    cfg = finetune.new_strings_config(teacher_cfg, teacher.meta)
    if cfg.kind != "hf":
      raise SegmentsUnavailableError(
          f"teacher {teacher_cfg.get('name')!r}: its fine-tuned folder "
          f"{teacher.meta.get('finetuned_dir')!r} is gone; it cannot embed the clauses")
    try:
      encoder = teachers.load_encoder(cfg)
    except (ValueError, OSError) as e:
      raise SegmentsUnavailableError(f"teacher {teacher_cfg.get('name')!r}: its encoder "
                                     f"cannot be loaded to embed the clauses ({e})") from e
  return lambda strings, progress=None: np.asarray(encoder.encode(list(strings),
                                                                  progress=progress),
                                                   np.float32)


def _build(teacher_cfg, teacher, dataset, pattern, mode, path, encode, progress_bar):
  """Embeds the clauses into `path`.partial, then renames it to `path`."""
  started = time.perf_counter()
  selected = text_selection(mode, dataset)
  texts = [str(t) for t in dataset.texts]
  chosen = np.zeros(dataset.num_pairs, bool)
  chosen[selected] = True
  pieces, owner = segments_lib.clause_table([t if c else "" for t, c in zip(texts, chosen)],
                                            pattern)
  offsets = np.zeros(dataset.num_pairs + 1, np.int64)
  np.cumsum(np.bincount(owner, minlength=dataset.num_pairs), out=offsets[1:])
  dtype = storage_dtype(teacher_cfg)
  synthetic = teacher_cfg.get("kind") == "synthetic"
  # Repeated clauses are embedded once (a synthetic teacher's noise is drawn per clause).
  distinct, inverse = ((np.asarray(pieces, dtype=object), np.arange(len(pieces)))
                       if synthetic or not pieces else np.unique(np.asarray(pieces, object),
                                                                 return_inverse=True))
  inverse = np.asarray(inverse).reshape(-1)
  work = path + ".partial"
  os.makedirs(work, exist_ok=True)
  plan = {"pattern": pattern, "data_hash": dataset.data_hash(), "text_rows": mode,
          "distinct": int(len(distinct)), "dim": teacher.dim, "dtype": dtype.name,
          "shard_rows": SHARD_ROWS}
  progress_path = os.path.join(work, "progress.json")
  progress = _read_json(progress_path)
  resuming = progress.get("plan") == plan
  done = set(progress.get("done", [])) if resuming else set()
  unique_path = os.path.join(work, "distinct.npy")
  if resuming and os.path.exists(unique_path):
    table = np.load(unique_path, mmap_mode="r+")
    if table.shape != (len(distinct), teacher.dim):
      table, done = new_memmap(unique_path, dtype, (len(distinct), teacher.dim)), set()
  else:
    table = new_memmap(unique_path, dtype, (len(distinct), teacher.dim))
    done = set()
  write_json(progress_path, {"plan": plan, "done": sorted(done)})
  shards = -(-len(distinct) // SHARD_ROWS)
  todo = [s for s in range(shards) if s not in done]
  with tqdm(total=len(distinct), initial=len(distinct) - sum(
      len(distinct[s * SHARD_ROWS:(s + 1) * SHARD_ROWS]) for s in todo), unit="rows",
            unit_scale=True, desc=f"{teacher_cfg.get('name')} clauses",
            disable=not progress_bar, dynamic_ncols=True) as bar:
    if synthetic and todo:      # made at once (its noise is one draw over every clause)
      table[:] = encode(list(distinct)).astype(dtype)
      bar.update(len(distinct))
      done = set(range(shards))
    for s in ([] if synthetic else todo):
      part = distinct[s * SHARD_ROWS:(s + 1) * SHARD_ROWS]
      vectors = encode(list(part), progress=bar.update)
      stored = vectors.astype(dtype)
      bad = ~np.isfinite(stored).all(axis=1)
      if bad.any():
        raise data_error(os.path.join(path, ROWS_FILE), None, "embedding",
                         f"non-finite value from the encoder for the clause "
                         f"{part[int(np.flatnonzero(bad)[0])]!r}")
      table[s * SHARD_ROWS:s * SHARD_ROWS + len(part)] = stored
      table.flush()
      done.add(s)
      write_json(progress_path, {"plan": plan, "done": sorted(done)})
  rows = new_memmap(os.path.join(work, ROWS_FILE), dtype, (len(pieces), teacher.dim))
  for s in range(0, len(pieces), SHARD_ROWS):
    rows[s:s + SHARD_ROWS] = table[inverse[s:s + SHARD_ROWS]]
  rows.flush()
  check_file_finite(os.path.join(work, ROWS_FILE), rows)
  del rows, table
  np.save(os.path.join(work, OFFSETS_FILE), offsets)
  os.remove(unique_path)
  os.remove(progress_path)
  write_meta(work, dict(plan, num_segments=int(len(pieces)), teacher=teacher_cfg.get("name"),
                        complete=True))
  old = path + ".old"
  if os.path.exists(path):       # an "eval" folder replaced by an "all" one
    os.replace(path, old)
  os.replace(work, path)
  if os.path.exists(old):
    shutil.rmtree(old)
  logging.info("teacher %s: %d clauses (%d distinct) of %d pairs embedded in %.1f s into %s",
               teacher_cfg.get("name"), len(pieces), len(distinct), len(selected),
               time.perf_counter() - started, path)


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}
