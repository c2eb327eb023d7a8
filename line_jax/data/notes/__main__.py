r"""Writes pairs.parquet of a dataset folder from notes (`line_jax.data.notes.build_pairs`)
or from another extractor's pairs (`line_jax.data.notes.import_pairs`).

    python -m line_jax.data.notes --dataset=DATASET_DIR --notes=FILE \
        [--text_column=text --id_column=note_id] [--notes_config.FIELD=...]
    python -m line_jax.data.notes --dataset=DATASET_DIR --pairs=FILE [--pairs_config.FIELD=...]
"""

from __future__ import annotations

import json
from typing import Sequence

from absl import app
from absl import flags
from ml_collections import config_flags

from line_jax.util import logs
from line_jax.data import notes
from line_jax.data.notes import pairs_import

_DATASET = flags.DEFINE_string("dataset", None, "dataset folder with concepts.parquet; "
                               "pairs.parquet is written there")
_NOTES = flags.DEFINE_string("notes", None, "notes file (.parquet, .csv or .jsonl)")
_TEXT_COLUMN = flags.DEFINE_string("text_column", None, "column of the note text "
                                   "(default: text)")
_ID_COLUMN = flags.DEFINE_string("id_column", None, "column of the note id (default: note_id)")
_PAIRS = flags.DEFINE_string("pairs", None, "instead of --notes: pairs made by another "
                             "extractor (.jsonl or .parquet; see "
                             "line_jax.data.notes.pairs_import)")
_CONFIG = config_flags.DEFINE_config_dict("notes_config", notes.notes_settings(),
                                          "notes settings")
_PAIRS_CONFIG = config_flags.DEFINE_config_dict(
    "pairs_config", pairs_import.pairs_import_settings(), "settings of --pairs")
flags.mark_flags_as_required(["dataset"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  logs.setup()
  if (_NOTES.value is None) == (_PAIRS.value is None):
    raise app.UsageError("give one of --notes=FILE (extract concepts here) or --pairs=FILE "
                         "(pairs from another extractor)")
  if _PAIRS.value is not None:
    stats = notes.import_pairs(_DATASET.value, _PAIRS.value, _PAIRS_CONFIG.value)
    print(json.dumps({k: v for k, v in stats.items() if k != "config"}, indent=1))
    return
  config = _CONFIG.value
  if _TEXT_COLUMN.value is not None:
    config.text_column = _TEXT_COLUMN.value
  if _ID_COLUMN.value is not None:
    config.id_column = _ID_COLUMN.value
  stats = notes.build_pairs(_DATASET.value, _NOTES.value, config)
  print(json.dumps({k: v for k, v in stats.items() if k != "config"}, indent=1, default=list))


if __name__ == "__main__":
  app.run(main)
