"""Streaming reads of UMLS Rich Release Format files (pipe-delimited, no header).

Every RRF line ends with a trailing `|`; files whose lines lack it are read as well (the
count of `|` on the first line decides). Rows are read with pyarrow's CSV reader in blocks
of `block_size` bytes, so a file of any size holds one block (and the columns asked for) in
memory at a time. A row with the wrong number of fields stops the read with a `DataError`
naming the file, the line and the field count.
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from line_jax.data.dataset import DataError

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
  """Iterates over (first line number, RecordBatch of string columns) of one RRF file.

  Attributes:
    bytes_read: how far into the file the reader has got (for progress bars).
    size: the file's size in bytes.
  """

  def __init__(self, path: str, columns: Sequence[str], block_size: int = 16 << 20):
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
    self.size = os.path.getsize(path)
    self.bytes_read = 0
    self._trailing = _trailing_field(path, self.names)

  def __iter__(self) -> Iterator[tuple]:
    names = self.names + (["_trailing"] if self._trailing else [])
    invalid = []

    def on_invalid(row):
      invalid.append(row)
      return "skip"

    with open(self.path, "rb") as f:
      reader = pv.open_csv(
          f, read_options=pv.ReadOptions(column_names=names, block_size=self.block_size,
                                         use_threads=True),
          parse_options=pv.ParseOptions(delimiter="|", quote_char=False, escape_char=False,
                                        double_quote=False, newlines_in_values=False,
                                        invalid_row_handler=on_invalid),
          convert_options=pv.ConvertOptions(
              include_columns=self.columns,
              column_types={c: pa.string() for c in self.columns},
              strings_can_be_null=False, quoted_strings_can_be_null=False))
      line = 1
      for batch in reader:
        if invalid:
          self._raise_invalid(len(names))
        self.bytes_read = f.tell()
        yield line, batch
        line += batch.num_rows
      if invalid:
        self._raise_invalid(len(names))
      self.bytes_read = self.size

  def _raise_invalid(self, expected: int):
    number, found = _bad_line(self.path, expected)
    raise DataError(f"{self.path}: line {number}: {found} fields, expected {expected} "
                    f"({'|'.join(self.names)}{'|' if self._trailing else ''})")


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
