"""pairs.parquet as the notes import and the pairs import write it: the schema and a
writer that buffers rows into row groups."""

from __future__ import annotations

import collections

import pyarrow as pa
import pyarrow.parquet as pq

PAIR_SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("text", pa.string()), ("concept_ids", pa.list_(pa.string())),
    ("negated", pa.list_(pa.bool_())), ("rho", pa.float32()), ("split", pa.string()),
    ("label", pa.string()), ("note_id", pa.string()), ("section", pa.string())])


class PairWriter:
  """Buffers pair rows and writes them to Parquet in row groups."""

  def __init__(self, path: str, rows_per_group: int = 50000):
    self.path = path
    self._writer = pq.ParquetWriter(path, PAIR_SCHEMA)
    self._rows = collections.defaultdict(list)
    self._count = 0
    self.rows_per_group = rows_per_group
    self.written = 0

  def add(self, **row):
    for key, value in row.items():
      self._rows[key].append(value)
    self._count += 1
    if self._count >= self.rows_per_group:
      self.flush()

  def flush(self):
    if self._count:
      self._writer.write_table(pa.table(dict(self._rows), schema=PAIR_SCHEMA))
      self.written += self._count
      self._rows, self._count = collections.defaultdict(list), 0

  def close(self):
    self.flush()
    self._writer.close()
