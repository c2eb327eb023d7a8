"""Teacher embeddings made elsewhere (the paper's OpenAI teacher, ...), imported into the
work-dir cache (teacher kind "precomputed").

The folder `teacher_cfg.precomputed` holds, per part, one of:
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

import logging
import os
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from line_jax.data.dataset import Dataset, DataError, data_error
from line_jax.cache.store import (PARTS, negated_mode, negated_selection, new_memmap,
                                 storage_dtype)

_COPY_ROWS = 65536
_ID_FIELD = {"text": "pair_id", "concepts": "concept_id", "negated": "concept_id"}


def source_files(folder: str) -> list[str]:
  names = [f"{part}{suffix}" for part in PARTS
           for suffix in (".parquet", ".npy", "_ids.npy", "_ids.txt")]
  return [os.path.join(folder, n) for n in names if os.path.exists(os.path.join(folder, n))]


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


def _plans(source: str, dataset_ids: dict) -> tuple:
  """({part: (file, function yielding its (ids, vectors, first row) blocks)}, the parts
  without a file); DataError when there is none at all."""
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
                    "line_jax.cache.precomputed for the import format)")
  return plans, missing_parts


def _check_vectors(file: str, first: int, vectors: np.ndarray, dim: int,
                   dim_source: str) -> None:
  """DataError naming the row of a block of the wrong dimension or with a non-finite value."""
  if vectors.shape[1] != dim:
    raise data_error(file, first, "embedding", f"dimension {vectors.shape[1]}, but "
                     f"{dim_source} gives {dim}")
  bad = ~np.isfinite(vectors).all(axis=1)
  if bad.any():
    raise data_error(file, first + int(np.flatnonzero(bad)[0]), "embedding",
                     "non-finite value (NaN or inf)")


def _rows_of(file: str, field: str, first: int, ids, index: dict,
             seen: np.ndarray) -> np.ndarray:
  """The dataset rows of a block's ids, each marked in `seen` with its file row; DataError
  for an unknown or repeated id."""
  rows = np.empty(len(ids), np.int64)
  for n, identifier in enumerate(ids):
    row = index.get(str(identifier))
    if row is None:
      raise data_error(file, first + n, field, f"unknown id {identifier!r} "
                       "(not in the dataset)")
    if seen[row] >= 0:
      raise data_error(file, first + n, field, f"duplicate id {identifier!r} "
                       f"(first at row {seen[row]})")
    seen[row] = first + n
    rows[n] = row
  return rows


def _stored(file: str, first: int, vectors: np.ndarray, dtype: np.dtype) -> np.ndarray:
  """`vectors` in the storage dtype; DataError naming the first row that overflows it."""
  stored = vectors.astype(dtype)
  if not np.isfinite(stored).all():
    row = first + int(np.flatnonzero(~np.isfinite(stored).all(axis=1))[0])
    raise data_error(file, row, "embedding", "value overflows float16; set the teacher's "
                     "dtype to float32")
  return stored


def import_precomputed(teacher_cfg, dataset: Dataset, path: str) -> dict:
  """Copies validated precomputed embeddings into the cache folder `path` (see the module docstring).

  Returns the meta.json fields describing what was written.
  """
  source = os.path.abspath(os.path.expanduser(teacher_cfg.get("precomputed")))
  dtype = storage_dtype(teacher_cfg)
  dataset_ids = {"text": dataset.pair_ids, "concepts": dataset.concept_ids,
                 "negated": dataset.concept_ids}
  required = {"text": np.arange(dataset.num_pairs),
              "concepts": np.arange(dataset.num_concepts),
              "negated": negated_selection(teacher_cfg, dataset)}
  dim = int(teacher_cfg.get("dim", 0) or 0) or None
  dim_source = "teacher config field 'dim'" if dim else None
  plans, missing_parts = _plans(source, dataset_ids)
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
      _check_vectors(file, first, vectors, dim, dim_source)
      rows = _rows_of(file, _ID_FIELD[part], first, ids, index, seen)
      stored = _stored(file, first, vectors, dtype)
      if part not in outputs:
        outputs[part] = new_memmap(os.path.join(path, f"{part}.npy"), dtype,
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
      outputs[part] = new_memmap(os.path.join(path, f"{part}.npy"), dtype,
                                 (sizes[part], dim))
    outputs[part].flush()
  outputs.clear()
  return {"source": source, "dim": int(dim), "dtype": dtype.name, "rows": sizes,
          "negated_rows": negated_mode(teacher_cfg), "missing_parts": missing_parts,
          "checked_finite": True}
