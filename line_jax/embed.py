r"""Embeds a Parquet file of texts and/or concept lists with a trained LINE, streaming.

  python -m line_jax.embed --workdir=runs/hpo --input=pairs.parquet --output=runs/hpo_emb

Input: a Parquet file with a `text` column (str) and/or a `concept_ids` column (list<str>,
ids of the run's concepts.parquet) with an optional `negated` column (list<bool>, same
lengths; missing or null = nothing negated). Column names are flags. Output: text.npy and/or
concepts.npy ([N, d] float32 memmaps, row i = input row i) and meta.json in --output, written
chunk by chunk (`--chunk_rows`); a rerun with the same input and flags resumes where a killed
run stopped (`line_jax.api.embed_file`).

An output folder that holds rows of another model (the work dir retrained, e.g. with
--force_new, a later checkpoint, another teacher) is refused before anything is written,
complete or not, so that no output mixes two models' rows: choose another --output, or pass
--restart to discard it and embed from the first row.

Edge cases:
  * Texts need a Hugging Face teacher 1: a run on synthetic or precomputed embeddings stops
    with an error before writing anything (use --parts=concepts there).
  * Texts longer than teacher1.max_length tokens are truncated to it (as in training) and
    counted in meta.json "truncated_texts"; --overlong=error stops at the first one instead.
  * Invalid rows (null text; null or empty concept list; an id not in the run's dictionary;
    a negated list of another length): --invalid=error (default) checks every row before
    embedding and stops at the first with an error naming file, row and field;
    --invalid=nan writes NaN rows and counts them in meta.json ("invalid_rows", with the
    first row numbers in "invalid_examples").
"""

import json
import os
from typing import Sequence

from absl import app, flags
from ml_collections import config_flags

from line_jax.api import embed_file
from line_jax.api.line_model import OVERLONG_CHOICES, LineModel
from line_jax.util import logs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file; default: the "
                                          "config.json saved in --workdir.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Work dir of the trained run (or soup).")
_INPUT = flags.DEFINE_string("input", None, "Parquet file to embed.")
_OUTPUT = flags.DEFINE_string("output", None,
                              "Output folder (text.npy, concepts.npy, meta.json).")
_CHUNK_ROWS = flags.DEFINE_integer("chunk_rows", 4096, "Rows embedded and flushed at a time.")
_PARTS = flags.DEFINE_list("parts", [], "text and/or concepts; default: every part with a "
                           "column.")
_TEXT_COLUMN = flags.DEFINE_string("text_column", "text", "Column of texts.")
_CONCEPTS_COLUMN = flags.DEFINE_string("concepts_column", "concept_ids",
                                       "Column of concept-id lists.")
_NEGATED_COLUMN = flags.DEFINE_string("negated_column", "negated",
                                      "Column of negation flags (optional).")
_OVERLONG = flags.DEFINE_enum("overlong", "truncate", list(OVERLONG_CHOICES),
                              "Texts over teacher1.max_length tokens: truncate (counted) or "
                              "error.")
_INVALID = flags.DEFINE_enum("invalid", "error", list(embed_file.INVALID_CHOICES),
                             "Invalid rows: error (checked before embedding) or nan (counted).")
_RESTART = flags.DEFINE_bool("restart", False, "Discard what --output holds (e.g. rows of "
                             "another model, which are otherwise refused) and embed from the "
                             "first row.")
flags.mark_flags_as_required(["workdir", "input", "output"])


def main(argv: Sequence[str]) -> None:
  del argv
  logs.setup()
  model = LineModel.load(_WORKDIR.value, _CONFIG.value)
  meta = embed_file.embed_parquet(
      model, _INPUT.value, _OUTPUT.value, chunk_rows=_CHUNK_ROWS.value,
      parts=_PARTS.value or None, text_column=_TEXT_COLUMN.value,
      concepts_column=_CONCEPTS_COLUMN.value, negated_column=_NEGATED_COLUMN.value,
      overlong=_OVERLONG.value, invalid=_INVALID.value, restart=_RESTART.value)
  print(json.dumps({k: v for k, v in meta.items() if k != "plan"}, indent=1))
  for part, name in meta["files"].items():
    print(f"{part}: {os.path.join(os.path.abspath(_OUTPUT.value), name)}")


if __name__ == "__main__":
  app.run(main)
