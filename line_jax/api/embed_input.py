"""The input of `embed_file.embed_parquet`: a Parquet file with a `text` column (str) and/or
a `concept_ids` column (list<str>, ids of the run's concepts.parquet) with an optional
`negated` column (list<bool>, same lengths; missing or null = nothing negated).

Which parts to embed, the column types, and the rows that cannot be embedded (null text;
null or empty concept list; an id not in the run's dictionary; a negated list of another
length), each refused with an error naming file, row and field.
"""

from __future__ import annotations

from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from line_jax.data.dataset import DataError, data_error

PARTS = ("text", "concepts")


def choose_parts(schema_names: Sequence[str], columns: Dict[str, str],
                 parts: Optional[Sequence[str]], input_path: str) -> Tuple[str, ...]:
  """The parts to embed: `parts` if given (their columns must exist), else those present."""
  if parts:
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
      raise ValueError(f"--parts: {unknown} not in {PARTS}")
    for part in parts:
      if columns[part] not in schema_names:
        raise DataError(f"{input_path}: no column {columns[part]!r} (needed for part "
                        f"{part!r}); columns: {list(schema_names)}")
    return tuple(p for p in PARTS if p in parts)
  found = tuple(p for p in PARTS if columns[p] in schema_names)
  if not found:
    raise DataError(f"{input_path}: neither a {columns['text']!r} nor a "
                    f"{columns['concepts']!r} column; columns: {list(schema_names)}")
  return found


def _is_string(t: pa.DataType) -> bool:
  return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_list_of(t: pa.DataType, value_ok) -> bool:
  return (pa.types.is_list(t) or pa.types.is_large_list(t)) and value_ok(t.value_type)


def check_column_types(schema: pa.Schema, input_path: str, parts: Sequence[str],
                       columns: Dict[str, str], has_negated: bool) -> None:
  """Raises DataError naming the file, the column, its type and the type expected, for a
  column of the wrong type (before any row is read): texts are strings, concept lists
  list<string>, negation flags list<bool> (an all-null column counts as nothing negated)."""
  def refuse(column: str, expected: str) -> DataError:
    return data_error(input_path, None, column, f"the column is {schema.field(column).type}; "
                      f"expected {expected}")

  if "text" in parts and not (_is_string(schema.field(columns["text"]).type)
                              or pa.types.is_null(schema.field(columns["text"]).type)):
    raise refuse(columns["text"], "strings (one text per row)")
  if "concepts" in parts:
    if not _is_list_of(schema.field(columns["concepts"]).type, _is_string):
      raise refuse(columns["concepts"], "list<string> (one list of concept ids per row, e.g. "
                   "['C0011849', 'C0020538']; ids are strings)")
    negated_type = schema.field(columns["negated"]).type if has_negated else None
    if negated_type is not None and not (pa.types.is_null(negated_type) or _is_list_of(
        negated_type, pa.types.is_boolean)):
      raise refuse(columns["negated"], "list<bool> (one True/False per concept id of the "
                   "row; strings such as 'false' and numbers are not read as flags)")


def _flat_negated(batch_negated: pa.Array, lengths: np.ndarray, num_flat: int,
                  bad_length: np.ndarray) -> np.ndarray:
  """The flat negation flags of a batch: a null negated list stands for "nothing negated";
  the other lists of the right length fill their positions."""
  neg_null = pc.is_null(batch_negated).to_numpy(zero_copy_only=False)
  good_neg = ~neg_null & ~bad_length
  flat_neg = np.zeros(num_flat, bool)
  flat_neg[np.repeat(good_neg, lengths)] = pc.fill_null(pc.list_flatten(
      pc.filter(batch_negated, pa.array(good_neg))), False).to_numpy(zero_copy_only=False)
  return flat_neg


def concept_batch_rows(batch_ids: pa.ChunkedArray | pa.Array,
                       batch_negated: Optional[pa.Array], dictionary_ids: pa.Array
                       ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Dict[str, np.ndarray]]:
  """Flat dictionary rows of a batch of concept lists, with the invalid rows left empty.

  Args:
    batch_ids: list<str> array, one list per input row.
    batch_negated: list<bool> array of the same lists, or None.
    dictionary_ids: the run's concept ids (row j = dictionary row j).

  Returns:
    (offsets [n + 1], flat rows, flat negated flags, {problem: bool mask [n]}) where every
    row flagged by a problem ("null", "empty", "unknown id", "negated length") has an empty
    segment (its proxy comes out NaN).
  """
  n = len(batch_ids)
  lengths = pc.fill_null(pc.list_value_length(batch_ids), 0).to_numpy(
      zero_copy_only=False).astype(np.int64)
  flat_ids = pc.list_flatten(batch_ids)
  flat_rows = pc.index_in(flat_ids, value_set=dictionary_ids)
  unknown_flat = pc.is_null(flat_rows).to_numpy(zero_copy_only=False)
  owner = np.repeat(np.arange(n), lengths)
  problems = {"null": pc.is_null(batch_ids).to_numpy(zero_copy_only=False),
              "empty": (lengths == 0) & ~pc.is_null(batch_ids).to_numpy(zero_copy_only=False),
              "unknown id": np.bincount(owner[unknown_flat], minlength=n) > 0,
              "negated length": np.zeros(n, bool)}
  if batch_negated is not None:
    neg_lengths = pc.list_value_length(batch_negated).to_numpy(zero_copy_only=False)
    neg_null = pc.is_null(batch_negated).to_numpy(zero_copy_only=False)
    problems["negated length"] = ~neg_null & (np.nan_to_num(neg_lengths, nan=-1) != lengths)
    flat_neg = _flat_negated(batch_negated, lengths, len(flat_ids), problems["negated length"])
  else:
    flat_neg = np.zeros(len(flat_ids), bool)
  bad = invalid_rows(problems, n)
  keep_flat = ~bad[owner]
  kept_lengths = np.where(bad, 0, lengths)
  offsets = np.concatenate([[0], np.cumsum(kept_lengths)]).astype(np.int64)
  rows = flat_rows.to_numpy(zero_copy_only=False)[keep_flat].astype(np.int64)
  return offsets, rows, flat_neg[keep_flat], problems


def invalid_rows(problems: Dict[str, np.ndarray], n: int) -> np.ndarray:
  """[n] bool: the rows flagged by any problem of `concept_batch_rows`."""
  bad = np.zeros(n, bool)
  for mask in problems.values():
    bad |= mask
  return bad


def _first_problem(problems: Dict[str, np.ndarray]) -> Optional[Tuple[int, str]]:
  firsts = [(int(np.flatnonzero(m)[0]), name) for name, m in problems.items() if m.any()]
  return min(firsts) if firsts else None


def batches(parquet: pq.ParquetFile, columns: Sequence[str], chunk_rows: int,
            skip_rows: int = 0) -> Iterator[Tuple[int, pa.RecordBatch]]:
  """(first row, batch) over the file, from the batch that starts at `skip_rows` (batches
  are deterministic for a file and chunk_rows, so a recorded batch end is a batch start)."""
  start = 0
  for batch in parquet.iter_batches(batch_size=chunk_rows, columns=list(columns)):
    if start >= skip_rows:
      yield start, batch
    start += len(batch)


def needed_columns(parts: Sequence[str], columns: Dict[str, str],
                   has_negated: bool) -> list:
  """The input columns that embedding `parts` reads."""
  needed = [columns[p] for p in parts]
  if "concepts" in parts and has_negated:
    needed.append(columns["negated"])
  return needed


def _concepts_error(input_path: str, start: int, batch: pa.RecordBatch,
                    columns: Dict[str, str], dictionary_ids: pa.Array, row: int,
                    problem: str) -> DataError:
  """The DataError of the first invalid concept list of a batch, naming row and field."""
  field = columns["negated"] if problem == "negated length" else columns["concepts"]
  detail = {"null": "null concept list", "empty": "empty concept list (a proxy needs "
            "at least one concept)", "unknown id": "a concept id that is not in the "
            "run's concepts.parquet", "negated length": "negated list of another length "
            "than the concept list"}[problem]
  if problem == "unknown id":
    ids = pa.array(batch.column(columns["concepts"])[row].as_py(), pa.string())
    known = pc.is_in(ids, value_set=dictionary_ids).to_numpy(zero_copy_only=False)
    detail = (f"concept id {ids[int(np.flatnonzero(~known)[0])].as_py()!r} is not in "
              "the run's concepts.parquet")
  return data_error(input_path, start + row, field, detail)


def validate_input(parquet: pq.ParquetFile, input_path: str, parts: Sequence[str],
                   columns: Dict[str, str], dictionary_ids: pa.Array, chunk_rows: int,
                   has_negated: bool) -> None:
  """Reads only the needed columns once; raises naming the first invalid row and field."""
  for start, batch in batches(parquet, needed_columns(parts, columns, has_negated),
                              chunk_rows):
    if "text" in parts:
      nulls = pc.is_null(batch.column(columns["text"])).to_numpy(zero_copy_only=False)
      if nulls.any():
        raise data_error(input_path, start + int(np.flatnonzero(nulls)[0]), columns["text"],
                         "null text")
    if "concepts" in parts:
      negated = batch.column(columns["negated"]) if has_negated else None
      *_, problems = concept_batch_rows(batch.column(columns["concepts"]), negated,
                                        dictionary_ids)
      first = _first_problem(problems)
      if first is not None:
        raise _concepts_error(input_path, start, batch, columns, dictionary_ids, *first)
