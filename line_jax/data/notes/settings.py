"""The notes import's settings."""

from __future__ import annotations

import ml_collections

from line_jax.config import merge_settings
from line_jax.data.notes.sections import DISCHARGE_SECTIONS, RADIOLOGY_SECTIONS


def notes_settings() -> ml_collections.ConfigDict:
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
  full = merge_settings(notes_settings(), config, "notes")
  if full.text_unit not in ("section", "sentence"):
    raise ValueError(f"notes setting 'text_unit': {full.text_unit!r} is not 'section' or "
                     "'sentence'")
  if not isinstance(full.max_words, int) or full.max_words < 1:
    raise ValueError(f"notes setting 'max_words': {full.max_words!r}; a text needs at least "
                     "one word (expected an integer >= 1)")
  return full
