"""The notes import: a notes file -> pairs.parquet of a dataset folder."""

from __future__ import annotations

import collections
import logging
import os
import time

from tqdm import tqdm

from line_jax.data.dataset import DataError, data_error, read_table, require_columns
from line_jax.data.hpo.splits import split_of
from line_jax.data.hpo.vignettes import leading_sentences
from line_jax.data.notes.extractor import make_extractor
from line_jax.data.notes.pairs_file import PairWriter
from line_jax.data.notes.reader import check_file, read_notes
from line_jax.data.notes.sections import header_pattern, note_texts
from line_jax.data.notes.settings import with_defaults
from line_jax.util.files import write_json

DEFINITION = "definition"


def _too_short(text: str, min_words: int) -> bool:
  """Whether `text` has fewer than `min_words` white-space separated words; with the
  default of 1, without splitting it (a split per text is a few percent of the import)."""
  if min_words <= 1:
    return min_words == 1 and not text.strip()
  return len(text.split()) < min_words


def _nothing_found(notes_path: str, dataset: str, counts, config) -> DataError:
  """The error of a notes file that gives no pair (pairs.parquet is then left as it was)."""
  kept = f"{os.path.join(dataset, 'pairs.parquet')} is left as it was"
  if not counts["notes"]:
    return DataError(f"{notes_path}: no notes (no data row); expected a row per note with "
                     f"columns {config.id_column} and {config.text_column}; {kept}")
  if counts["notes"] == counts["notes_skipped_empty"]:
    return DataError(f"{notes_path}: field '{config.text_column}': every one of the "
                     f"{counts['notes']} notes is empty; {kept}")
  return DataError(f"{notes_path}: no note text with a concept ({counts['notes']} notes, "
                   f"{counts['texts']} texts, {counts['texts_dropped_too_short']} too short); "
                   f"is the dictionary in {dataset} the right one, and the note text in "
                   f"column '{config.text_column}'? {kept}")


class _PairSink:
  """Extracts the concepts of texts and writes the pairs that have one, counting what is
  kept and dropped: one note's texts at a time (the extractor makes one pass over them)."""

  def __init__(self, extractor, writer: PairWriter, min_words: int):
    self.extractor, self.writer, self.min_words = extractor, writer, min_words
    self.counts = collections.Counter()
    self.splits, self.sections = collections.Counter(), collections.Counter()
    self.rho_sum = 0.0

  def emit(self, items, source: str = "notes") -> None:
    """Writes (pair id, text, note id, section, split) items whose text has a concept."""
    counts = self.counts
    kept = []
    for item in items:
      if _too_short(item[1], self.min_words):
        counts["texts_dropped_too_short"] += 1
      else:
        kept.append(item)
    extractions = self.extractor.concepts_many([item[1] for item in kept])
    for (pair_id, text, note_id, section, split), extraction in zip(kept, extractions):
      counts["texts"] += 1
      counts["words"] += extraction.num_words
      ids, negated = extraction.concept_ids, extraction.negated
      if not ids:
        counts["texts_dropped_no_concept"] += 1
        continue
      counts["mentions"] += len(ids)
      counts["negated_mentions"] += sum(negated)
      self.rho_sum += extraction.rho
      self.splits[split] += 1
      self.sections[section] += 1
      counts[f"pairs_from_{source}"] += 1
      self.writer.add(pair_id=pair_id, text=text, concept_ids=ids, negated=negated,
                      rho=extraction.rho, split=split, label=section, note_id=note_id,
                      section=section)


def _note_text(notes_path: str, row: int, note_id, text, seen: dict, config):
  """The note's text, or None for an empty note; DataError naming row and field for a
  missing or repeated note id, or a text that is not a string."""
  if note_id is None or not note_id.strip():
    raise data_error(notes_path, row, config.id_column, "missing note id")
  if note_id in seen:
    raise data_error(notes_path, row, config.id_column,
                     f"note id {note_id!r} repeated (first at row {seen[note_id]})")
  seen[note_id] = row
  if text is not None and not isinstance(text, str):
    raise data_error(notes_path, row, config.text_column,
                     f"expected a string, got {type(text).__name__}")
  return text if text is not None and text.strip() else None


def _add_notes(sink: _PairSink, notes_path: str, config, progress: bool) -> None:
  """The pairs of every note's sections (or sentences), split per note."""
  pattern = header_pattern(config.section_headers)
  fractions = tuple(config.split_fractions)
  counts, seen = sink.counts, {}
  bar = tqdm(unit=" notes", desc="notes", disable=not progress)
  for first, ids, texts in read_notes(notes_path, config.id_column, config.text_column,
                                      config.batch_size):
    for k, (note_id, text) in enumerate(zip(ids, texts)):
      counts["notes"] += 1
      text = _note_text(notes_path, first + k, note_id, text, seen, config)
      if text is None:
        counts["notes_skipped_empty"] += 1
        continue
      split = split_of(config.seed, "note:" + note_id, fractions)
      pieces, cut = note_texts(text, pattern, config)
      counts["sentences_cut_max_words"] += cut
      sink.emit([(f"{note_id}#{j}", piece, note_id, section, split)
                 for j, (section, piece) in enumerate(pieces)])
    bar.update(len(ids))
  bar.close()


def _add_definitions(sink: _PairSink, dataset: str, config) -> None:
  """The pairs of definitions.parquet's texts (when there is one and they are wanted),
  split per concept."""
  def_path = os.path.join(dataset, "definitions.parquet")
  if not (config.include_definitions and os.path.exists(def_path)):
    return
  table = read_table(def_path)
  require_columns(def_path, table, ("concept_id", "text"))
  fractions = tuple(config.split_fractions)
  for cui, text in zip(table.column("concept_id").to_pylist(),
                       table.column("text").to_pylist()):
    sink.counts["definitions"] += 1
    short, _ = leading_sentences(text, config.max_words)
    sink.emit([(f"def:{cui}", short, f"def:{cui}", DEFINITION,
                split_of(config.seed, "concept:" + cui, fractions))], "definitions")


def _stats(sink: _PairSink, notes_path: str, extractor, seconds: float,
           dictionary_seconds: float, cpu_seconds: float, config) -> dict:
  counts, written = sink.counts, sink.writer.written
  note_seconds = seconds - dictionary_seconds
  return dict(counts, notes_path=os.path.abspath(notes_path), pairs=written,
              pairs_by_split=dict(sorted(sink.splits.items())),
              pairs_by_section=dict(sorted(sink.sections.items())),
              mean_rho=sink.rho_sum / max(written, 1),
              dictionary_surfaces=extractor.num_surfaces,
              dictionary_ambiguous_surfaces=extractor.num_ambiguous_surfaces,
              seconds=round(seconds, 2), dictionary_seconds=round(dictionary_seconds, 2),
              notes_per_second=round(counts["notes"] / max(note_seconds, 1e-9), 1),
              notes_per_cpu_second=round(counts["notes"] / max(cpu_seconds, 1e-9), 1),
              config=config.to_dict())


def build_pairs(dataset: str, notes_path: str, config=None, progress: bool = True) -> dict:
  """Writes `dataset`/pairs.parquet from the notes file; returns the stats.

  A notes file that gives no pair (no rows, only empty notes, no concept found) is an error
  naming it, and pairs.parquet is left as it was: the definitions alone are not written.

  Args:
    dataset: a dataset folder with concepts.parquet (e.g. from line_jax.data.umls).
    notes_path: Parquet, CSV or JSON-lines file of notes.
    config: `notes_settings()` or a part of it.
    progress: show a progress bar.
  """
  started = time.time()
  config = with_defaults(config)
  check_file(notes_path)          # before the dictionary is built
  extractor = make_extractor(dataset, config)
  dictionary_seconds = time.time() - started
  cpu_started = time.process_time()
  out_path = os.path.join(dataset, "pairs.parquet")
  tmp_path = out_path + ".partial"
  sink = _PairSink(extractor, PairWriter(tmp_path), config.min_words)
  counts = sink.counts
  try:
    _add_notes(sink, notes_path, config, progress)
    if not counts["pairs_from_notes"]:    # definitions alone are no import of these notes
      raise _nothing_found(notes_path, dataset, counts, config)
    _add_definitions(sink, dataset, config)
    sink.writer.close()
  except BaseException:
    sink.writer.close()
    os.remove(tmp_path)
    raise
  os.replace(tmp_path, out_path)
  if counts["notes_skipped_empty"]:
    logging.info("%s: %d empty notes skipped", notes_path, counts["notes_skipped_empty"])
  if counts["texts_dropped_no_concept"]:
    logging.info("%d of %d texts dropped: no concept extracted",
                 counts["texts_dropped_no_concept"], counts["texts"])
  stats = _stats(sink, notes_path, extractor, time.time() - started, dictionary_seconds,
                 time.process_time() - cpu_started, config)
  write_json(os.path.join(dataset, "notes_stats.json"), stats, default=list)
  logging.info("pairs in %s: %d from %d notes (%s)", out_path, sink.writer.written,
               counts["notes"], stats["pairs_by_split"])
  return stats
