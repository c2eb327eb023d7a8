"""Text files a user gives (RRF, CSV, JSON lines, CoNLL/BIO): UTF-8 checks whose errors name
the file, the line and the byte offset, and a look at a file's first bytes to say what a
misnamed file really is (a Parquet file named .jsonl, JSON lines named .parquet).

Every such file is read as UTF-8; a byte sequence that is not UTF-8 is an error (of the class
the caller gives, `DataError` for data files) naming the file, the line, the byte offset in
the file and the bytes around it. (The UMLS import can
instead replace them, counted and logged: `line_jax.data.umls`, setting `invalid_utf8`.)
A UTF-8 byte order mark at the start of a file is skipped.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from typing import Callable, Iterator, Optional

import pyarrow as pa

PARQUET_MAGIC = b"PAR1"
BOM = b"\xef\xbb\xbf"


def sniff(path: str) -> Optional[str]:
  """What the first bytes of `path` say it is: "empty" (0 bytes), "parquet" (starts with
  PAR1), "json" (starts with '{' after white space), or None (anything else)."""
  with open(path, "rb") as f:
    head = f.read(4096)
  if not head:
    return "empty"
  if head.startswith(PARQUET_MAGIC):
    return "parquet"
  if head.lstrip(BOM).lstrip().startswith(b"{"):
    return "json"
  return None


_LOOKS_LIKE = {"empty": "it is empty (0 bytes)",
               "parquet": "it is a Parquet file (it starts with PAR1); name it .parquet",
               "json": "it looks like JSON lines (it starts with '{'); name it .jsonl"}


def looks_like(path: str) -> str:
  """"; <what the file seems to be>" for an error message, or "" when nothing is known."""
  try:
    kind = sniff(path)
  except OSError:
    return ""
  return f"; {_LOOKS_LIKE[kind]}" if kind in _LOOKS_LIKE else ""


def _snippet(raw: bytes, at: int) -> str:
  return repr(raw[max(0, at - 20):at + 20])


def utf8_error(path: str, line: int, offset: int, raw: bytes, at: int, error: type,
               field: Optional[str] = None, remedy: str = "") -> Exception:
  """`error` for bytes that are not UTF-8: `raw` (line `line`, starting at byte `offset` of
  the file) has the first bad byte at index `at`."""
  where = f"line {line}" + (f", field '{field}'" if field else "")
  return error(f"{path}: {where}: not UTF-8 text: byte 0x{raw[at]:02x} at byte offset "
               f"{offset + at} of the file, in {_snippet(raw, at)}; expected UTF-8{remedy}")


def lines(path: str, error: type) -> Iterator[tuple]:
  """(line number from 1, text) of each line of a UTF-8 text file, the line ending kept;
  bytes that are not UTF-8 raise `error` naming the file, the line and the byte offset."""
  offset = 0
  with open(path, "rb") as f:
    for number, raw in enumerate(f, 1):
      if number == 1 and raw.startswith(BOM):
        offset, raw = len(BOM), raw[len(BOM):]
      try:
        text = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise utf8_error(path, number, offset, raw, e.start, error) from None
      yield number, text
      offset += len(raw)


@contextlib.contextmanager
def open_utf8(path: str, error: type) -> Iterator[Iterator[str]]:
  """`with open_utf8(path) as f: for line in f:` reads as `open(path, encoding="utf-8")`
  does, but bytes that are not UTF-8 raise `error` naming the file, the line and the byte
  offset (a UnicodeDecodeError names neither)."""
  numbered = lines(path, error)
  try:
    yield (text for _, text in numbered)
  finally:
    numbered.close()


def locate(path: str, needle: bytes) -> Optional[tuple]:
  """(line number, byte offset) of the first occurrence of `needle` in the file, or None."""
  if not needle or not os.path.getsize(path):
    return None
  with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
    at = m.find(needle)
    if at < 0:
      return None
    return m[:at].count(b"\n") + 1, at


def decode_column(path: str, values, field: str, where: Callable[[int], str], error: type,
                  replace: bool = False, remedy: str = "") -> tuple:
  """A binary Arrow column as UTF-8 strings: (string array, values with replaced bytes).

  `where(i)` names row i for an error (e.g. "line 12" or "row 3"). Bytes that are not UTF-8
  raise `error` naming the file, the row, the field and the byte offset in the file, or,
  with `replace`, become U+FFFD and are counted.
  """
  try:
    return values.cast(pa.string()), 0
  except pa.ArrowInvalid:
    pass
  out, replaced = [], 0
  for i, raw in enumerate(values.to_pylist()):
    if raw is None:
      out.append(None)
      continue
    try:
      out.append(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
      if not replace:
        found, row = locate(path, raw), where(i)
        place = "" if not found else (
            f" (byte offset {found[1] + e.start} of the file"
            + ("" if row.startswith("line") else f", line {found[0]}") + ")")
        raise error(f"{path}: {row}, field '{field}': not UTF-8 text: byte "
                        f"0x{raw[e.start]:02x} at byte {e.start} of the value{place}, in "
                        f"{_snippet(raw, e.start)}; expected UTF-8{remedy}") from None
      out.append(raw.decode("utf-8", "replace"))
      replaced += 1
  return pa.array(out, pa.string()), replaced
