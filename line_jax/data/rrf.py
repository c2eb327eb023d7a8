"""Streaming reads of UMLS Rich Release Format files (pipe-delimited, no header).

Every RRF line ends with a trailing `|`; files whose lines lack it are read as well (the
count of `|` on the first line decides). Rows are read with pyarrow's CSV reader in blocks
of `block_size` bytes, so a file of any size holds one block (and the columns asked for) in
memory at a time. A row with the wrong number of fields stops the read with a `DataError`
naming the file, the line and the field count.

RRF files are UTF-8. Bytes that are not stop the read with a `DataError` naming the file,
the line, the field and the byte offset (`invalid_utf8="error"`, the default), or, with
`invalid_utf8="replace"`, become U+FFFD; the reader counts such values (`replaced`) and the
UMLS import logs the count and records it in stats.json. Only the columns read are checked.
A file of 0 bytes has no rows (the UMLS import refuses an empty MRCONSO.RRF or MRREL.RRF).
"""

from __future__ import annotations

import logging
import os
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from line_jax.data import textfile
from line_jax.data.dataset import DataError

INVALID_UTF8 = ("error", "replace")

# Column names of the RRF files read here (UMLS Reference Manual, section 3.3).
COLUMNS = {
    "MRCONSO.RRF": ("CUI", "LAT", "TS", "LUI", "STT", "SUI", "ISPREF", "AUI", "SAUI", "SCUI",
                    "SDUI", "SAB", "TTY", "CODE", "STR", "SRL", "SUPPRESS", "CVF"),
    "MRREL.RRF": ("CUI1", "AUI1", "STYPE1", "REL", "CUI2", "AUI2", "STYPE2", "RELA", "RUI",
                  "SRUI", "SAB", "SL", "RG", "DIR", "SUPPRESS", "CVF"),
    "MRSTY.RRF": ("CUI", "TUI", "STN", "STY", "ATUI", "CVF"),
    "MRDEF.RRF": ("CUI", "AUI", "ATUI", "SATUI", "SAB", "DEF", "SUPPRESS", "CVF"),
}


def is_in(column, values) -> pa.Array:
  """Whether each value of a string column is one of `values` (a boolean array)."""
  return pc.is_in(column, value_set=pa.array(list(values), pa.string()))


def _trailing_field(path: str, names: Sequence[str]) -> bool:
  """Whether lines end with a `|` (one empty field more than `names`); checks line 1."""
  with open(path, "rb") as f:
    first = f.readline().rstrip(b"\r\n")
  if not first:
    return True
  fields = first.count(b"|") + 1
  if fields == len(names) + 1:
    return True
  if fields == len(names):
    return False
  raise DataError(f"{path}: line 1: {fields} fields, expected {len(names)} "
                  f"({'|'.join(names)}, with or without a trailing '|')")


def _bad_line(path: str, expected: int) -> tuple:
  """(line number, field count) of the first line with the wrong number of fields."""
  with open(path, "rb") as f:
    for number, line in enumerate(f, 1):
      line = line.rstrip(b"\r\n")
      if line and line.count(b"|") + 1 != expected:
        return number, line.count(b"|") + 1
  return None, None


class RowReader:
  """Iterates over (first row number, RecordBatch of string columns) of one RRF file; rows
  count from 1 and are the file's lines unless it has blank lines (`line_of` maps them).

  Attributes:
    bytes_read: how far into the file the reader has got (for progress bars).
    size: the file's size in bytes.
    replaced: values whose bytes that are not UTF-8 were replaced (invalid_utf8="replace").
  """

  def __init__(self, path: str, columns: Sequence[str], block_size: int = 16 << 20,
               invalid_utf8: str = "error"):
    name = os.path.basename(path).upper()
    if name not in COLUMNS:
      raise ValueError(f"{path}: not one of the RRF files read here {sorted(COLUMNS)}")
    self.path = path
    self.names = list(COLUMNS[name])
    unknown = [c for c in columns if c not in self.names]
    if unknown:
      raise ValueError(f"{path}: unknown columns {unknown}; the file has {self.names}")
    self.columns = list(columns)
    self.block_size = int(block_size)
    if invalid_utf8 not in INVALID_UTF8:
      raise ValueError(f"UMLS import setting 'invalid_utf8': {invalid_utf8!r} is not one of "
                       f"{INVALID_UTF8}")
    self.invalid_utf8 = invalid_utf8
    self.replaced = 0
    if os.path.isdir(path):
      raise DataError(f"{path}: a folder, expected the RRF file")
    self.size = os.path.getsize(path)
    self.bytes_read = 0
    self._trailing = _trailing_field(path, self.names)

  def __iter__(self) -> Iterator[tuple]:
    if not self.size:
      return
    names = self.names + (["_trailing"] if self._trailing else [])
    invalid = []

    def on_invalid(row):
      invalid.append(row)
      return "skip"

    remedy = ("; set the UMLS import's invalid_utf8='replace' to read them as U+FFFD "
              "(counted)")
    with open(self.path, "rb") as f:
      try:
        reader = pv.open_csv(
            f, read_options=pv.ReadOptions(column_names=names, block_size=self.block_size,
                                           use_threads=True),
            parse_options=pv.ParseOptions(delimiter="|", quote_char=False, escape_char=False,
                                          double_quote=False, newlines_in_values=False,
                                          invalid_row_handler=on_invalid),
            convert_options=pv.ConvertOptions(
                include_columns=self.columns,
                column_types={c: pa.binary() for c in self.columns},   # checked below
                strings_can_be_null=False, quoted_strings_can_be_null=False))
      except pa.ArrowInvalid as e:
        if invalid:
          self._raise_invalid(len(names))
        raise DataError(f"{self.path}: not a readable RRF file ({e}); expected lines of "
                        f"{'|'.join(self.names)}") from None
      line = 1
      while True:
        try:
          batch = reader.read_next_batch()
        except StopIteration:
          break
        except pa.ArrowInvalid as e:
          if invalid:
            self._raise_invalid(len(names))
          raise DataError(f"{self.path}: after line {line - 1}: not a readable RRF file "
                          f"({e})") from None
        if invalid:
          self._raise_invalid(len(names))
        columns = []
        for c in self.columns:
          column, replaced = textfile.decode_column(
              self.path, batch.column(c), c,
              lambda i, first=line: f"line {self.line_of(first + i)}", DataError,
              replace=self.invalid_utf8 == "replace", remedy=remedy)
          columns.append(column)
          self.replaced += replaced
        batch = pa.RecordBatch.from_arrays(columns, names=self.columns)
        self.bytes_read = f.tell()
        yield line, batch
        line += batch.num_rows
      if invalid:
        self._raise_invalid(len(names))
      self.bytes_read = self.size

  def line_of(self, row: int) -> int:
    """The line number in the file of row `row` (the numbers the reader yields count rows
    from 1; blank lines, which it skips, make them differ). Reads the file up to that row:
    for error messages."""
    seen = 0
    with open(self.path, "rb") as f:
      for number, raw in enumerate(f, 1):
        if raw.rstrip(b"\r\n"):
          seen += 1
          if seen == row:
            return number
    return row

  def _raise_invalid(self, expected: int):
    number, found = _bad_line(self.path, expected)
    raise DataError(f"{self.path}: line {number}: {found} fields, expected {expected} "
                    f"({'|'.join(self.names)}{'|' if self._trailing else ''})")


def empty_file_error(reader: RowReader) -> DataError:
  """The error of a required RRF file without rows."""
  what = "empty file (0 bytes)" if not reader.size else "no rows (only blank lines)"
  return DataError(f"{reader.path}: {what}; expected lines of "
                   f"{'|'.join(reader.names)}| (was the release unpacked completely?)")


def log_replaced(reader: RowReader, counts: dict) -> None:
  """Records in `counts` (and logs) the values read with U+FFFD for bytes not UTF-8."""
  if reader.replaced:
    counts["invalid_utf8_replaced"] = reader.replaced
    logging.warning("%s: %d values held bytes that are not UTF-8, read with U+FFFD in their "
                    "place (invalid_utf8='replace')", reader.path, reader.replaced)


def source_filter(batch, keep, config, counts: dict):
  """`keep` narrowed to the rows of the configured source vocabularies (`config.sabs`; all
  when empty) that are not suppressed (`config.drop_suppressed`), counting in `counts` the
  kept rows each filter drops (`dropped_sab`, `dropped_suppressed`)."""
  if config.sabs:
    sab_ok = is_in(batch.column("SAB"), config.sabs)
    counts["dropped_sab"] += pc.sum(pc.and_(keep, pc.invert(sab_ok))).as_py() or 0
    keep = pc.and_(keep, sab_ok)
  if config.drop_suppressed:
    suppressed = is_in(batch.column("SUPPRESS"), config.drop_suppressed)
    counts["dropped_suppressed"] += pc.sum(pc.and_(keep, suppressed)).as_py() or 0
    keep = pc.and_(keep, pc.invert(suppressed))
  return keep
