"""Notes files (Parquet, CSV, JSON lines) read in batches."""

from __future__ import annotations

import os
from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq

from line_jax.data.dataset import DataError, data_error, iter_json_lines


def _format(path: str) -> str:
  lower = path.lower()
  for suffix, kind in ((".parquet", "parquet"), (".pq", "parquet"), (".csv", "csv"),
                       (".jsonl", "jsonl"), (".json", "jsonl"), (".ndjson", "jsonl")):
    if lower.endswith(suffix):
      return kind
  raise DataError(f"{path}: unknown notes format; use .parquet, .csv or .jsonl")


def read_notes(path: str, id_column: str, text_column: str,
               batch_size: int = 1000) -> Iterator[tuple]:
  """Yields (first row number, [note ids], [texts]) batches; row numbers count from 0
  (Parquet/CSV data rows) or 1 (JSON lines). A missing column is an error naming it."""
  if not os.path.exists(path):
    raise DataError(f"{path}: file not found")
  kind = _format(path)

  def check(columns, where):
    for field in (id_column, text_column):
      if field not in columns:
        raise data_error(path, None, field, f"missing column{where}; found {list(columns)} "
                         "(set --text_column / --id_column)")

  if kind == "parquet":
    f = pq.ParquetFile(path)
    check(f.schema_arrow.names, "")
    row = 0
    for batch in f.iter_batches(batch_size=batch_size, columns=[id_column, text_column]):
      ids = [None if v is None else str(v) for v in batch.column(id_column).to_pylist()]
      yield row, ids, batch.column(text_column).to_pylist()
      row += batch.num_rows
  elif kind == "csv":
    reader = pv.open_csv(path, read_options=pv.ReadOptions(block_size=4 << 20),
                         parse_options=pv.ParseOptions(newlines_in_values=True),
                         convert_options=pv.ConvertOptions(
                             column_types={id_column: pa.string(), text_column: pa.string()}))
    check(reader.schema.names, " in the header row")
    row = 0
    for batch in reader:
      yield (row, batch.column(id_column).to_pylist(), batch.column(text_column).to_pylist())
      row += batch.num_rows
  else:
    ids, texts, first = [], [], 1
    for number, obj in iter_json_lines(path):
      for field in (id_column, text_column):
        if field not in obj:
          raise DataError(f"{path}: line {number}: field '{field}': missing (keys: "
                          f"{sorted(obj)}; set --text_column / --id_column)")
      if not ids:
        first = number
      ids.append(None if obj[id_column] is None else str(obj[id_column]))
      texts.append(obj[text_column])
      if len(ids) >= batch_size:
        yield first, ids, texts
        ids, texts = [], []
    if ids:
      yield first, ids, texts
