"""The teacher-embedding cache: one folder per (teacher, dataset), read with memmap.

Layout (docs/data.md):
  <workdir>/embeddings/<teacher name>-<key>/
      text.npy       [P, d]  row i = pairs.parquet row i
      concepts.npy   [C, d]  row j = concepts.parquet row j (the concept's name)
      negated.npy    [C, d]  row j = the negated surface form of concept j
      meta.json      {"model", "pooling", "max_length", "normalize", "data_hash", "dim",
                      "dtype", "rows": {"text", "concepts", "negated"}, "complete": true}
`key` hashes (model, pooling, max length, normalisation, data hash), so that a changed
dataset or teacher setting gets a new folder and an unchanged one is reused. Arrays are
float16 or float32 and are opened with `np.load(mmap_mode="r")`, so that millions of rows
never need to fit in memory. Embeddings made elsewhere (OpenAI, ...) enter through the
same folder (`line_jax.cache.precomputed`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import mmap
import os
from typing import Optional

import numpy as np

from line_jax.data.dataset import Dataset, DataError, data_error
from line_jax.util import files
from line_jax.util.files import write_json

PARTS = ("text", "concepts", "negated")
_CHECK_ROWS = 65536


def cache_key(model: str, pooling: str, max_length: int, normalize: bool,
              data_hash: str) -> str:
  blob = json.dumps([model, pooling, int(max_length), bool(normalize), data_hash])
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def teacher_dir(workdir: str, teacher_name: str, key: str) -> str:
  return os.path.join(os.path.abspath(workdir), "embeddings", f"{teacher_name}-{key}")


@dataclasses.dataclass(frozen=True)
class TeacherEmbeddings:
  text: np.ndarray       # [P, d] memmap
  concepts: np.ndarray   # [C, d] memmap
  negated: np.ndarray    # [C, d] memmap
  meta: dict
  path: str
  text_embedded: Optional[np.ndarray] = None   # [P] bool where text rows were embedded;
                                               # None: every row

  @property
  def dim(self) -> int:
    return int(self.text.shape[1])

  def text_rows(self, idx: np.ndarray, dtype=None) -> np.ndarray:
    """Text embeddings of pairs `idx`; raises if some were not embedded (text_rows="eval")."""
    idx = np.asarray(idx, np.int64)
    if self.text_embedded is not None and len(idx) and not self.text_embedded[idx].all():
      missing = idx[~self.text_embedded[idx]]
      raise ValueError(
          f"{self.path}: teacher {self.meta.get('teacher')!r} embedded only the texts of "
          f"pairs outside the train split (field 'text_rows': "
          f"{self.meta.get('text_rows')!r}), but {len(missing)} requested pairs are not "
          f"among them (first: pair {int(missing[0])}); set text_rows='all' for this teacher")
    return gather_rows(self.text, idx, dtype)


def open_npy(path: str) -> np.ndarray:
  """np.load with mmap_mode="r", advised for random access: batches gather scattered rows,
  and the kernel's default read-ahead would otherwise pull (and keep resident) far more of
  the file than the rows asked for."""
  arr = np.load(path, mmap_mode="r")
  mapping = getattr(arr, "_mmap", None)
  if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_RANDOM"):
    mapping.madvise(mmap.MADV_RANDOM)
  return arr


def _blocks(arr: np.ndarray):
  """(first row, block) over a 2-D array; a memmapped .npy is streamed with file reads, so
  the scan leaves no page of it resident in this process."""
  filename = getattr(arr, "filename", None)
  if not isinstance(arr, np.memmap) or filename is None or arr.ndim != 2:
    for start in range(0, arr.shape[0], _CHECK_ROWS):
      yield start, np.asarray(arr[start:start + _CHECK_ROWS])
    return
  row_bytes = arr.dtype.itemsize * arr.shape[1]
  with open(filename, "rb") as f:
    f.seek(arr.offset)
    for start in range(0, arr.shape[0], _CHECK_ROWS):
      rows = min(_CHECK_ROWS, arr.shape[0] - start)
      data = f.read(rows * row_bytes)
      if len(data) != rows * row_bytes:
        raise DataError(f"{filename}: file ends before row {start + rows}")
      yield start, np.frombuffer(data, arr.dtype).reshape(rows, arr.shape[1])


_EXPONENT = {np.dtype(np.float16): (np.uint16, 0x7C00), np.dtype(np.float32): (np.uint32,
                                                                             0x7F800000)}


def _nonfinite_rows(block: np.ndarray) -> np.ndarray:
  """Rows holding NaN or inf: an all-ones exponent, tested on the bits (several times
  faster than np.isfinite on float16)."""
  if block.dtype in _EXPONENT:
    uint, mask = _EXPONENT[block.dtype]
    return ((block.view(uint) & mask) == mask).any(axis=1)
  return ~np.isfinite(block).all(axis=1)


def check_file_finite(path: str, arr: np.ndarray, field: str = "embedding") -> None:
  """Scans a (memmapped) array read from file `path` in chunks; DataError naming the file
  and the first row with NaN/inf."""
  for start, block in _blocks(arr):
    bad = _nonfinite_rows(block)
    if bad.any():
      raise data_error(path, start + int(np.flatnonzero(bad)[0]), field,
                       "non-finite value (NaN or inf)")


def part_rows(dataset: Dataset) -> dict:
  """{part: rows of its array}: a text row per pair, a concept and a negated row per
  concept."""
  return {"text": dataset.num_pairs, "concepts": dataset.num_concepts,
          "negated": dataset.num_concepts}


def load_teacher_embeddings(path: str, dataset: Dataset, expected_dim: Optional[int] = None,
                            check_values: bool = True) -> TeacherEmbeddings:
  """Opens a cache folder and validates it against the dataset."""
  meta_path = os.path.join(path, "meta.json")
  if not os.path.exists(meta_path):
    raise DataError(f"{meta_path}: file not found (run `python -m line_jax.export` or "
                    "import precomputed embeddings)")
  with open(meta_path) as f:
    meta = json.load(f)
  expected_rows = part_rows(dataset)
  arrays = {}
  dim = expected_dim
  for part in PARTS:
    p = os.path.join(path, f"{part}.npy")
    if not os.path.exists(p):
      raise DataError(f"{p}: file not found")
    arr = open_npy(p)
    if arr.ndim != 2:
      raise data_error(p, None, "shape", f"expected a 2-D array, got shape {arr.shape}")
    if arr.dtype not in (np.float16, np.float32):
      raise data_error(p, None, "dtype", f"expected float16 or float32, got {arr.dtype}")
    if arr.shape[0] != expected_rows[part]:
      raise data_error(p, None, "rows", f"{arr.shape[0]} rows but the dataset has "
                       f"{expected_rows[part]} ({'pairs' if part == 'text' else 'concepts'})")
    if dim is None:
      dim = arr.shape[1]
    if arr.shape[1] != dim:
      raise data_error(p, None, "dim", f"dimension {arr.shape[1]}, expected {dim}")
    if check_values:   # on every open: a row may have been written since the last one
      check_file_finite(p, arr)
    arrays[part] = arr
  text_embedded = None
  if meta.get("text_rows", "all") != "all":
    text_embedded = np.zeros(dataset.num_pairs, bool)
    text_embedded[text_selection(meta["text_rows"], dataset)] = True
  return TeacherEmbeddings(text=arrays["text"], concepts=arrays["concepts"],
                           negated=arrays["negated"], meta=meta, path=path,
                           text_embedded=text_embedded)


def read_rows(arr: np.ndarray, chunk_rows: int = _CHECK_ROWS) -> np.ndarray:
  """A memmapped .npy read into an ordinary array with file reads, chunk by chunk.

  Copying through the mapping would leave every page of the file resident in this process
  (counted in its RSS) besides the copy; plain reads go through the page cache only.
  """
  filename = getattr(arr, "filename", None)
  if not isinstance(arr, np.memmap) or filename is None:
    return np.asarray(arr)
  out = np.empty(arr.shape, arr.dtype)
  flat = out.reshape(-1).view(np.uint8)
  row_bytes = arr.dtype.itemsize * int(np.prod(arr.shape[1:]))
  with open(filename, "rb") as f:
    f.seek(arr.offset)
    for start in range(0, arr.shape[0], chunk_rows):
      stop = min(arr.shape[0], start + chunk_rows)
      view = memoryview(flat[start * row_bytes:stop * row_bytes])
      if f.readinto(view) != len(view):
        raise DataError(f"{filename}: file ends before row {stop}")
  return out


def gather_rows(arr: np.ndarray, rows: np.ndarray, dtype=None) -> np.ndarray:
  """arr[rows] (as `dtype`, default as stored), each distinct row read once; a memmapped
  .npy is read with positioned file reads (one per distinct row).

  Fancy indexing through the mapping was seen to leave most of the file resident in this
  process (RSS ~ file size after a few hundred random batches); reads go through the page
  cache only, so streaming a dataset larger than memory keeps the process small.
  """
  rows = np.asarray(rows, np.int64)
  unique, inverse = np.unique(rows, return_inverse=True)
  filename = getattr(arr, "filename", None)
  if not isinstance(arr, np.memmap) or filename is None or arr.ndim != 2:
    out = np.asarray(arr[unique])
  else:
    out = np.empty((len(unique), arr.shape[1]), arr.dtype)
    row_bytes = arr.dtype.itemsize * arr.shape[1]
    view = out.view(np.uint8).reshape(len(unique), row_bytes)
    fd = os.open(filename, os.O_RDONLY)
    try:
      for i, r in enumerate(unique.tolist()):
        if os.preadv(fd, [view[i]], arr.offset + r * row_bytes) != row_bytes:
          raise DataError(f"{filename}: short read at row {r}")
    finally:
      os.close(fd)
  if dtype is not None:
    out = out.astype(dtype, copy=False)
  return out[inverse.reshape(-1)]


# --- cache-folder settings and files (export and import) -----------------------------

def storage_dtype(teacher_cfg) -> np.dtype:
  name = teacher_cfg.get("dtype", "float16") or "float16"
  if name not in ("float16", "float32"):
    raise ValueError(f"teacher {teacher_cfg.get('name')!r}: field 'dtype': {name!r} is not "
                     "'float16' or 'float32'")
  return np.dtype(name)


def negated_mode(teacher_cfg) -> str:
  mode = teacher_cfg.get("negated_rows", "used") or "used"
  if mode not in ("used", "all"):
    raise ValueError(f"teacher {teacher_cfg.get('name')!r}: field 'negated_rows': {mode!r} "
                     "is not 'used' or 'all'")
  return mode


def text_mode(teacher_cfg) -> str:
  """The teacher's `text_rows`: "all" for kinds that make every row (precomputed,
  synthetic) whatever the field says."""
  mode = teacher_cfg.get("text_rows", "all") or "all"
  if mode not in ("all", "eval"):
    raise ValueError(f"teacher {teacher_cfg.get('name')!r}: field 'text_rows': {mode!r} is "
                     "not 'all' or 'eval'")
  return mode if teacher_cfg.get("kind", "hf") in ("hf", "finetuned") else "all"


def text_selection(mode: str, dataset: Dataset) -> np.ndarray:
  """Pair rows whose text a teacher with `text_rows` = mode embeds."""
  if mode == "all":
    return np.arange(dataset.num_pairs, dtype=np.int64)
  return np.flatnonzero(dataset.split != "train").astype(np.int64)


def negated_selection(teacher_cfg, dataset: Dataset) -> np.ndarray:
  if negated_mode(teacher_cfg) == "all":
    return np.arange(dataset.num_concepts, dtype=np.int64)
  return np.unique(dataset.concept_flat[dataset.negated_flat]).astype(np.int64)


def new_memmap(path: str, dtype: np.dtype, shape: tuple) -> np.ndarray:
  """A fresh zero-filled .npy memmap whose disk space is reserved (`files.reserve`): on a
  full disk this raises `files.WriteError` naming the file, and removes it, rather than
  the writes into the mapping killing the process later. An old file is unlinked first,
  never truncated: it may be a hard link shared with another teacher's folder (see
  _reuse_identical)."""
  if os.path.lexists(path):
    os.remove(path)
  try:
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    files.reserve(path)
  except OSError as e:
    if os.path.lexists(path):
      os.remove(path)
    raise files.write_error(path, e) from e
  return arr


def write_meta(path: str, meta: dict) -> None:
  write_json(os.path.join(path, "meta.json"), meta)
