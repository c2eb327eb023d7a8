"""Notes files (Parquet, CSV, JSON lines) read in batches.

A file that cannot be read as its name says is an error naming the file and what it seems to
be instead (a truncated Parquet file, JSON lines named .parquet, Parquet named .csv/.jsonl);
a CSV row with the wrong number of fields names its line; bytes that are not UTF-8 name the
row, the field and the byte offset (`line_jax.data.textfile`).
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq

from line_jax.data import textfile
from line_jax.data.dataset import DataError, data_error, iter_json_lines


def _format(path: str) -> str:
  lower = path.lower()
  for suffix, kind in ((".parquet", "parquet"), (".pq", "parquet"), (".csv", "csv"),
                       (".jsonl", "jsonl"), (".json", "jsonl"), (".ndjson", "jsonl")):
    if lower.endswith(suffix):
      return kind
  raise DataError(f"{path}: unknown notes format; use .parquet, .csv or .jsonl")


def check_file(path: str) -> None:
  """DataError when `path` is missing or not a file."""
  if not os.path.exists(path):
    raise DataError(f"{path}: file not found")
  if not os.path.isfile(path):
    raise DataError(f"{path}: not a file (a folder?); expected one file")


def parquet_file(path: str, expected: str) -> pq.ParquetFile:
  """The opened Parquet file, or a DataError saying what the file is instead."""
  try:
    return pq.ParquetFile(path)
  except (pa.ArrowException, OSError) as e:
    kind = textfile.sniff(path)
    why = {"parquet": "it starts as Parquet but its end is missing or damaged (a copy cut "
                      "short?)",
           "empty": "it is empty (0 bytes)",
           "json": "it looks like JSON lines (it starts with '{'); name it .jsonl"}.get(
               kind, "it has no Parquet magic bytes (PAR1); a text file?")
    raise DataError(f"{path}: not a readable Parquet file: {why} ({e}); expected Parquet "
                    f"{expected}") from None


def parquet_batches(path: str, f: pq.ParquetFile, batch_size: int,
                    columns: Sequence[str] = None) -> Iterator[pa.RecordBatch]:
  """`f.iter_batches`, a damaged row group raising DataError naming the file and the rows."""
  row = 0
  batches = f.iter_batches(batch_size=batch_size, columns=columns)
  while True:
    try:
      batch = next(batches)
    except StopIteration:
      return
    except (pa.ArrowException, OSError) as e:
      raise DataError(f"{path}: rows from {row}: cannot be read ({e}); the Parquet file is "
                      "damaged") from None
    yield batch
    row += batch.num_rows


def _csv_batches(path: str, columns: Sequence[str], check) -> Iterator[tuple]:
  """(first data row, {column: [str]}) of a CSV file, the columns read as UTF-8."""
  kind = textfile.sniff(path)
  if kind in ("empty", "parquet"):
    raise DataError(f"{path}: not a CSV file: {textfile.looks_like(path)[2:]}; expected a "
                    f"header row naming the columns ({', '.join(columns)}) and a row per note")
  invalid = []

  def on_invalid(row):
    invalid.append(row)
    return "error"

  def parse_error(e):
    if invalid:
      bad = invalid[0]
      where = f"line {bad.number}" if bad.number is not None else "a row"
      return DataError(f"{path}: {where}: {bad.actual_columns} fields, expected "
                       f"{bad.expected_columns} (as the header row); a text holding a comma "
                       f"needs double quotes ({bad.text[:80]!r})")
    return DataError(f"{path}: not a readable CSV file ({e}); expected a header row naming "
                     f"the columns ({', '.join(columns)})")

  with open(path, "rb") as raw:
    try:
      reader = pv.open_csv(
          raw, read_options=pv.ReadOptions(block_size=4 << 20, use_threads=False),
          parse_options=pv.ParseOptions(newlines_in_values=True,
                                        invalid_row_handler=on_invalid),
          convert_options=pv.ConvertOptions(column_types={c: pa.binary() for c in columns}))
      header = reader.schema.names
    except pa.ArrowInvalid as e:
      raise parse_error(e) from None
    except UnicodeDecodeError:     # in the header row: name its line and byte
      for _ in textfile.lines(path, DataError):
        break
      raise
    check(header, " in the header row")
    row = 0
    while True:
      try:
        batch = reader.read_next_batch()
      except StopIteration:
        return
      except pa.ArrowInvalid as e:
        raise parse_error(e) from None
      out = {}
      for c in columns:
        out[c] = textfile.decode_column(path, batch.column(c), c,
                                        lambda i, r=row: f"row {r + i}",
                                        DataError)[0].to_pylist()
      yield row, out
      row += batch.num_rows


def read_notes(path: str, id_column: str, text_column: str,
               batch_size: int = 1000) -> Iterator[tuple]:
  """Yields (first row number, [note ids], [texts]) batches; row numbers count from 0
  (Parquet/CSV data rows) or 1 (JSON lines). A missing column is an error naming it."""
  check_file(path)
  kind = _format(path)

  def check(columns, where):
    for field in (id_column, text_column):
      if field not in columns:
        raise data_error(path, None, field, f"missing column{where}; found {list(columns)} "
                         "(set --text_column / --id_column)")
      if list(columns).count(field) > 1:
        raise data_error(path, None, field, f"{list(columns).count(field)} columns of this "
                         f"name{where}; expected one")

  if kind == "parquet":
    f = parquet_file(path, f"with columns {id_column} and {text_column}")
    check(f.schema_arrow.names, "")
    id_type = f.schema_arrow.field(id_column).type
    if not (pa.types.is_string(id_type) or pa.types.is_large_string(id_type)
            or pa.types.is_integer(id_type)):
      raise data_error(path, None, id_column, f"expected strings or integers, got {id_type}")
    row = 0
    for batch in parquet_batches(path, f, batch_size, [id_column, text_column]):
      ids = [None if v is None else str(v) for v in batch.column(id_column).to_pylist()]
      yield row, ids, batch.column(text_column).to_pylist()
      row += batch.num_rows
  elif kind == "csv":
    for row, columns in _csv_batches(path, [id_column, text_column], check):
      yield row, columns[id_column], columns[text_column]
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
