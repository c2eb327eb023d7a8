r"""Clinical notes -> pairs.parquet of a dataset folder (texts with extracted concept lists).

    python -m line_jax.data.notes --dataset=DATASET_DIR --notes=FILE \
        [--text_column=text --id_column=note_id] [--notes_config.FIELD=...]
    python -m line_jax.data.notes --dataset=DATASET_DIR --pairs=FILE   # another extractor's
                                               # output; format in line_jax.data.pairs_import

FILE is Parquet (.parquet), CSV (.csv, header row) or JSON lines (.jsonl / .json, one object
per line). It is streamed in batches of `batch_size` notes; only the note ids seen so far
are kept (to refuse a repeated id), so a file of millions of notes runs in bounded memory.

Each note is cut into sections at the configured headers (`section_headers`: a header
opens a line and ends with ':'; the paper's discharge and radiology sections by default),
text before the first header is a section of its own (`preamble`), and a note without any
header is one section. A section longer than `max_words` words is cut at sentence ends
into texts of at most `max_words` words (`text_unit="sentence"`: every sentence is a text).
Concepts are extracted with `ConceptExtractor` over the dataset's names and synonyms
(negation included; see `line_jax.data.extract`); rho = words covered by concepts / words.
A text with no concept is dropped and counted. A note's texts all go to one split (a hash
of the note id), so no note straddles splits. The text's `label` is its section.

When the dataset folder has definitions.parquet (written by `line_jax.data.umls` from
MRDEF.RRF) and `include_definitions` is set, the definitions are texts too (label
"definition", split by a hash of the concept id).

Writes DATASET_DIR/pairs.parquet (pair_id, text, concept_ids, negated, rho, split, label,
note_id, section) and notes_stats.json.
"""

from __future__ import annotations

import bisect
import collections
import json
import logging
import os
import re
import time
from typing import Iterator, Sequence

import ml_collections
import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq
from absl import app
from absl import flags
from ml_collections import config_flags
from tqdm import tqdm

from line_jax.data import extract
from line_jax.data import hpo
from line_jax.data import pairs_import
from line_jax.data.dataset import DataError, data_error

# The paper's sections (MIMIC-IV): discharge summaries, then radiology reports.
DISCHARGE_SECTIONS = (
    "chief complaint", "major surgical or invasive procedure", "history of present illness",
    "past medical history", "social history", "family history", "physical exam",
    "pertinent results", "brief hospital course", "medications on admission",
    "discharge medications", "discharge disposition", "discharge diagnosis",
    "discharge condition", "discharge instructions", "followup instructions",
    "follow-up instructions")
RADIOLOGY_SECTIONS = ("examination", "indication", "technique", "comparison", "findings",
                      "finding", "procedures", "procedure", "impression")
PREAMBLE = "preamble"
DEFINITION = "definition"


def default_config() -> ml_collections.ConfigDict:
  """Every setting of the notes import; `--notes_config.FIELD=value` overrides one."""
  c = ml_collections.ConfigDict()
  c.text_column = "text"
  c.id_column = "note_id"
  c.section_headers = DISCHARGE_SECTIONS + RADIOLOGY_SECTIONS   # case-insensitive
  c.keep_preamble = True           # text before the first header is a section
  c.text_unit = "section"          # "section" (cut at max_words) or "sentence"
  c.max_words = 128                # words per text at most; a longer sentence is cut
  c.min_words = 1                  # shorter texts are dropped and counted
  c.batch_size = 1000              # notes read per batch
  c.seed = 0
  c.split_fractions = (0.8, 0.1, 0.1)   # train, valid, test, drawn per note
  c.include_definitions = True     # texts from definitions.parquet, when present
  # Dictionary and negation (as line_jax.data.hpo's settings of the same names).
  c.map_synonyms_to_term = True    # a synonym match emits its concept (term_id)
  c.dictionary_synonyms = ("synonym", "layperson", "narrow", "related")
  c.stop_phrases = ("all", "was", "has", "had", "his", "her", "not", "and", "with", "can",
                    "may", "left", "right", "normal", "patient", "history", "today",
                    "other", "same", "unit", "date", "time", "name", "day", "yes")
  c.min_match_chars = 3
  c.fold_plurals = True
  c.negation_window = 0
  return c


def with_defaults(config) -> ml_collections.ConfigDict:
  full = default_config()
  if config is not None:
    given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    for key, value in given.items():
      if key not in full:
        raise ValueError(f"unknown notes setting {key!r}; known: {sorted(full)}")
      full[key] = tuple(value) if isinstance(value, list) else value
  if full.text_unit not in ("section", "sentence"):
    raise ValueError(f"notes setting 'text_unit': {full.text_unit!r} is not 'section' or "
                     "'sentence'")
  return full


# --- segmentation --------------------------------------------------------------------


def header_pattern(headers: Sequence[str]) -> re.Pattern:
  """A header opens a line (after spaces) and ends with ':'; longest alternatives first."""
  alternatives = sorted({h.strip().lower() for h in headers if h.strip()}, key=len,
                        reverse=True)
  body = "|".join(re.escape(h).replace(r"\ ", r"\s+") for h in alternatives)
  return re.compile(rf"^[ \t]*({body})[ \t]*:", re.IGNORECASE | re.MULTILINE)


def split_sections(text: str, pattern: re.Pattern, keep_preamble: bool = True) -> list:
  """(section name, section text) in order; the name is the header in lower case."""
  matches = list(pattern.finditer(text))
  if not matches:
    return [(PREAMBLE, text)] if text.strip() else []
  out = []
  head = text[:matches[0].start()]
  if keep_preamble and head.strip():
    out.append((PREAMBLE, head))
  for k, m in enumerate(matches):
    end = matches[k + 1].start() if k + 1 < len(matches) else len(text)
    body = text[m.end():end]
    if body.strip():
      out.append((re.sub(r"\s+", " ", m.group(1).lower()), body))
  return out



def split_sentences(text: str) -> list:
  """Sentences as the extractor sees them (ending at . ! ? ; before a space or the end)."""
  parts = re.split(r"(?<=[.!?;])\s+|\n\s*\n", text)
  return [" ".join(p.split()) for p in parts if p.strip()]


def chunk_sentences(sentences: Sequence[str], max_words: int, per_sentence: bool) -> tuple:
  """Texts of whole sentences up to `max_words` words; returns (texts, sentences cut)."""
  texts, current, words, cut = [], [], 0, 0
  for sentence in sentences:
    tokens = sentence.split()
    if len(tokens) > max_words:
      tokens, cut = tokens[:max_words], cut + 1
      sentence = " ".join(tokens)
    if per_sentence:
      texts.append(sentence)
      continue
    if current and words + len(tokens) > max_words:
      texts.append(" ".join(current))
      current, words = [], 0
    current.append(sentence)
    words += len(tokens)
  if current:
    texts.append(" ".join(current))
  return texts, cut


# --- fast extraction -----------------------------------------------------------------

# fold_plural as substitutions over a whole text (each starts with a literal, which the
# regex engine scans for quickly): "...ies" -> "...y" in words of more than 4 characters,
# then a final "s" dropped in words of more than 3 whose second-last letter is not s, u, i.
_IES_RE = re.compile(r"ies(?<=[a-z0-9]{2}ies)\b")
_PLURAL_S_RE = re.compile(r"s(?<=[a-z0-9]{2}[a-hj-rtv-z0-9]s)\b")


class _SentenceView:
  """`tokens[i].sentence` and `len(tokens)` for `extract._is_negated`, without Tokens."""

  class _S:
    __slots__ = ("sentence",)

    def __init__(self, k):
      self.sentence = k

  def __init__(self, sentence_of_token: list):
    self._of = sentence_of_token
    self._objects = {}

  def __len__(self):
    return len(self._of)

  def __getitem__(self, i):
    k = self._of[i]
    obj = self._objects.get(k)
    if obj is None:
      obj = self._objects[k] = self._S(k)
    return obj


def _find(matcher: extract.PhraseMatcher, joined: str, ends: list) -> list:
  """`matcher.find` with token ends as a sorted list and a byte mask of taken tokens.

  Same candidates, same order and the same greedy choice (longest, then leftmost) as
  PhraseMatcher.find, so the same result.
  """
  if not matcher.num_phrases:
    return []
  bisect_left = bisect.bisect_left
  # (-length, start, end, payload): sorting the tuples orders longest first, then leftmost
  # (one span has one text, so no two candidates tie on the first two fields).
  candidates = []
  for end_char, (length, payload) in matcher._automaton.iter(joined):
    last = bisect_left(ends, end_char)
    candidates.append((-length, last + 1 - length, last + 1, payload))
  if not candidates:
    return []
  candidates.sort()
  taken = bytearray(len(ends) + 1)
  chosen = []
  for _, start, end, payload in candidates:
    if end - start == 1:
      if taken[start]:
        continue
      taken[start] = 1
    else:
      if 1 in taken[start:end]:
        continue
      taken[start:end] = b"\x01" * (end - start)
    chosen.append((start, end, payload))
  chosen.sort()
  return chosen


class StreamingExtractor(extract.ConceptExtractor):
  """`ConceptExtractor` with a tokeniser that builds no per-word objects.

  The same automata, negation rules and results as the base class (the tests compare them
  text by text); words are found by one regular expression per sentence and plural-folded
  by two substitutions over the whole text, which is what makes hundreds of 2,000-word
  notes per second possible.
  """

  def extract(self, text: str) -> extract.Extraction:
    segments, sentence_ids, counts = [], [], []
    findall = extract._WORD_RE.findall
    for k, piece in enumerate(extract._SENTENCE_END_RE.split(text)):
      words = findall(piece)
      if words:
        segments.append(" ".join(words))
        sentence_ids.append(k)
        counts.append(len(words))
    num_words = sum(counts)
    if not num_words:
      return extract.Extraction((), 0, 0)
    lead = " " + (extract._SENTENCE_BREAK + " " if sentence_ids[0] != 0 else "")
    joined = (lead + (" " + extract._SENTENCE_BREAK + " ").join(segments) + " ").lower()
    if self.fold_plurals:
      joined = _PLURAL_S_RE.sub("", _IES_RE.sub("y", joined))
    # A token ends where a space follows a word character (not the space after a break).
    chars = np.frombuffer(joined.encode("ascii"), np.uint8)
    ends = (np.flatnonzero((chars[1:] == 32) & (chars[:-1] != 32) & (chars[:-1] != 124))
            + 1).tolist()
    found = _find(self._concepts, joined, ends)
    if not found:
      return extract.Extraction((), num_words, 0)
    taken = bytearray(num_words)
    for start, end, _ in found:
      taken[start:end] = b"\x01" * (end - start)
    covered = taken.count(1)
    triggers = [t for t in _find(self._triggers, joined, ends)
                if 1 not in taken[t[0]:t[1]]]
    if not triggers:
      mentions = tuple(extract.Mention(c, False, start, end) for start, end, c in found)
      return extract.Extraction(mentions, num_words, covered)
    sentence_of = []
    for k, n in zip(sentence_ids, counts):
      sentence_of.extend([k] * n)
    tokens = _SentenceView(sentence_of)
    mentions = tuple(
        extract.Mention(concept_id,
                        extract._is_negated(start, end, tokens, triggers, self.window),
                        start, end)
        for start, end, concept_id in found)
    return extract.Extraction(mentions, num_words, covered)


def _dictionary(dataset: str) -> hpo.ConceptTable:
  """The dataset's concepts as the HPO builder's ConceptTable (term_id/kind if present)."""
  path = os.path.join(dataset, "concepts.parquet")
  if not os.path.exists(path):
    raise DataError(f"{path}: file not found (run line_jax.data.umls first, or give a "
                    "dataset folder with concepts.parquet)")
  table = pq.read_table(path)
  for field in ("concept_id", "name"):
    if field not in table.column_names:
      raise data_error(path, None, field, f"missing column; found {table.column_names}")
  ids = table.column("concept_id").to_pylist()
  names = table.column("name").to_pylist()
  n = len(ids)
  term_ids = table.column("term_id").to_pylist() if "term_id" in table.column_names else ids
  kinds = table.column("kind").to_pylist() if "kind" in table.column_names else ["term"] * n
  groups = table.column("group").to_pylist() if "group" in table.column_names else [""] * n
  return hpo.ConceptTable(ids, names, groups, term_ids, kinds, [])


def make_extractor(dataset: str, config) -> StreamingExtractor:
  """The dictionary of `dataset` (names first, then synonym entries) as an extractor."""
  table = _dictionary(dataset)
  config = with_defaults(config)
  surfaces = hpo.dictionary_surfaces(table, set(table.term_ids), config.map_synonyms_to_term,
                                     tuple(config.dictionary_synonyms))
  return StreamingExtractor(surfaces, fold_plurals=config.fold_plurals,
                            min_chars=config.min_match_chars, window=config.negation_window,
                            stop_phrases=tuple(config.stop_phrases))


# --- reading notes -------------------------------------------------------------------


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
    with open(path, encoding="utf-8") as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          obj = json.loads(line)
        except json.JSONDecodeError as e:
          raise DataError(f"{path}: line {number}: not a JSON object ({e})") from None
        if not isinstance(obj, dict):
          raise DataError(f"{path}: line {number}: not a JSON object")
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


# --- the build -----------------------------------------------------------------------

PAIR_SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("text", pa.string()), ("concept_ids", pa.list_(pa.string())),
    ("negated", pa.list_(pa.bool_())), ("rho", pa.float32()), ("split", pa.string()),
    ("label", pa.string()), ("note_id", pa.string()), ("section", pa.string())])


def note_texts(text: str, pattern: re.Pattern, config) -> tuple:
  """(section, text) pairs of one note, and the number of over-long sentences cut."""
  out, cut = [], 0
  for section, body in split_sections(text, pattern, config.keep_preamble):
    texts, c = chunk_sentences(split_sentences(body), config.max_words,
                               config.text_unit == "sentence")
    cut += c
    out.extend((section, t) for t in texts)
  return out, cut


class _Writer:
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


def build_pairs(dataset: str, notes_path: str, config=None, progress: bool = True) -> dict:
  """Writes `dataset`/pairs.parquet from the notes file; returns the stats.

  Args:
    dataset: a dataset folder with concepts.parquet (e.g. from line_jax.data.umls).
    notes_path: Parquet, CSV or JSON-lines file of notes.
    config: `default_config()` or a part of it.
    progress: show a progress bar.
  """
  started = time.time()
  config = with_defaults(config)
  extractor = make_extractor(dataset, config)
  dictionary_seconds = time.time() - started
  cpu_started = time.process_time()
  pattern = header_pattern(config.section_headers)
  fractions = tuple(config.split_fractions)
  counts = collections.Counter()
  splits, sections = collections.Counter(), collections.Counter()
  rho_sum = 0.0
  seen = {}
  out_path = os.path.join(dataset, "pairs.parquet")
  tmp_path = out_path + ".partial"
  writer = _Writer(tmp_path)

  def emit(pair_id, text, note_id, section, split):
    nonlocal rho_sum
    if len(text.split()) < config.min_words:
      counts["texts_dropped_too_short"] += 1
      return
    extraction = extractor.extract(text)
    counts["texts"] += 1
    counts["words"] += extraction.num_words
    ids, negated = extraction.concepts()
    if not ids:
      counts["texts_dropped_no_concept"] += 1
      return
    counts["mentions"] += len(ids)
    counts["negated_mentions"] += sum(negated)
    rho_sum += extraction.rho
    splits[split] += 1
    sections[section] += 1
    writer.add(pair_id=pair_id, text=text, concept_ids=ids, negated=negated,
               rho=extraction.rho, split=split, label=section, note_id=note_id,
               section=section)

  try:
    bar = tqdm(unit=" notes", desc="notes", disable=not progress)
    for first, ids, texts in read_notes(notes_path, config.id_column, config.text_column,
                                        config.batch_size):
      for k, (note_id, text) in enumerate(zip(ids, texts)):
        row = first + k
        if note_id is None or not note_id.strip():
          raise data_error(notes_path, row, config.id_column, "missing note id")
        if note_id in seen:
          raise data_error(notes_path, row, config.id_column,
                           f"note id {note_id!r} repeated (first at row {seen[note_id]})")
        seen[note_id] = row
        counts["notes"] += 1
        if text is not None and not isinstance(text, str):
          raise data_error(notes_path, row, config.text_column,
                           f"expected a string, got {type(text).__name__}")
        if text is None or not text.strip():
          counts["notes_skipped_empty"] += 1
          continue
        split = hpo.split_of(config.seed, "note:" + note_id, fractions)
        pieces, cut = note_texts(text, pattern, config)
        counts["sentences_cut_max_words"] += cut
        for j, (section, piece) in enumerate(pieces):
          emit(f"{note_id}#{j}", piece, note_id, section, split)
      bar.update(len(ids))
    bar.close()
    def_path = os.path.join(dataset, "definitions.parquet")
    if config.include_definitions and os.path.exists(def_path):
      table = pq.read_table(def_path)
      for cui, text in zip(table.column("concept_id").to_pylist(),
                           table.column("text").to_pylist()):
        counts["definitions"] += 1
        short, _ = hpo.leading_sentences(text, config.max_words)
        emit(f"def:{cui}", short, f"def:{cui}", DEFINITION,
             hpo.split_of(config.seed, "concept:" + cui, fractions))
    writer.close()
  except BaseException:
    writer.close()
    os.remove(tmp_path)
    raise
  if writer.written == 0:
    os.remove(tmp_path)
    raise DataError(f"{notes_path}: no text with a concept ({counts['notes']} notes, "
                    f"{counts['texts']} texts); is the dictionary in {dataset} the right one?")
  os.replace(tmp_path, out_path)
  if counts["notes_skipped_empty"]:
    logging.info("%s: %d empty notes skipped", notes_path, counts["notes_skipped_empty"])
  if counts["texts_dropped_no_concept"]:
    logging.info("%d of %d texts dropped: no concept extracted",
                 counts["texts_dropped_no_concept"], counts["texts"])
  seconds = time.time() - started
  note_seconds = seconds - dictionary_seconds
  cpu_seconds = time.process_time() - cpu_started
  stats = dict(counts, notes_path=os.path.abspath(notes_path), pairs=writer.written,
               pairs_by_split=dict(sorted(splits.items())),
               pairs_by_section=dict(sorted(sections.items())),
               mean_rho=rho_sum / max(writer.written, 1),
               dictionary_surfaces=extractor.num_surfaces,
               dictionary_ambiguous_surfaces=extractor.num_ambiguous_surfaces,
               seconds=round(seconds, 2), dictionary_seconds=round(dictionary_seconds, 2),
               notes_per_second=round(counts["notes"] / max(note_seconds, 1e-9), 1),
               notes_per_cpu_second=round(counts["notes"] / max(cpu_seconds, 1e-9), 1),
               config=config.to_dict())
  with open(os.path.join(dataset, "notes_stats.json"), "w") as f:
    json.dump(stats, f, indent=1, default=list)
  logging.info("pairs in %s: %d from %d notes (%s)", out_path, writer.written,
               counts["notes"], stats["pairs_by_split"])
  return stats


# --- command line --------------------------------------------------------------------

_DATASET = flags.DEFINE_string("dataset", None, "dataset folder with concepts.parquet; "
                               "pairs.parquet is written there")
_NOTES = flags.DEFINE_string("notes", None, "notes file (.parquet, .csv or .jsonl)")
_TEXT_COLUMN = flags.DEFINE_string("text_column", None, "column of the note text "
                                   "(default: text)")
_ID_COLUMN = flags.DEFINE_string("id_column", None, "column of the note id (default: note_id)")
_PAIRS = flags.DEFINE_string("pairs", None, "instead of --notes: pairs made by another "
                             "extractor (.jsonl or .parquet; see line_jax.data.pairs_import)")
_CONFIG = config_flags.DEFINE_config_dict("notes_config", default_config(), "notes settings")
_PAIRS_CONFIG = config_flags.DEFINE_config_dict(
    "pairs_config", pairs_import.default_config(), "settings of --pairs")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if (_NOTES.value is None) == (_PAIRS.value is None):
    raise app.UsageError("give one of --notes=FILE (extract concepts here) or --pairs=FILE "
                         "(pairs from another extractor)")
  if _PAIRS.value is not None:
    stats = pairs_import.import_pairs(_DATASET.value, _PAIRS.value, _PAIRS_CONFIG.value)
    print(json.dumps({k: v for k, v in stats.items() if k != "config"}, indent=1))
    return
  config = _CONFIG.value
  if _TEXT_COLUMN.value is not None:
    config.text_column = _TEXT_COLUMN.value
  if _ID_COLUMN.value is not None:
    config.id_column = _ID_COLUMN.value
  stats = build_pairs(_DATASET.value, _NOTES.value, config)
  print(json.dumps({k: v for k, v in stats.items() if k != "config"}, indent=1, default=list))


if __name__ == "__main__":
  flags.mark_flags_as_required(["dataset"])
  app.run(main)
