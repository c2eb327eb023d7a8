"""Writes train/dev/test BIO files from a dataset's texts (`line_jax.eval.ner`):

    python -m line_jax.eval.ner --bio_dataset=DATASET_DIR --bio_out=DIR
"""

import json
import os
from typing import Sequence

from absl import app
from absl import flags

from line_jax.eval.ner import bio

_BIO_DATASET = flags.DEFINE_string("bio_dataset", None,
                                   "dataset folder whose pairs become BIO sentences")
_BIO_OUT = flags.DEFINE_string("bio_out", None, "folder for train.bio, dev.bio, test.bio")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  counts = bio.write_bio_from_dataset(_BIO_DATASET.value, _BIO_OUT.value)
  print(json.dumps(dict(sentences=counts, out=os.path.abspath(_BIO_OUT.value),
                        note="spans from the dictionary extractor; synthetic texts")))


if __name__ == "__main__":
  flags.mark_flags_as_required(["bio_dataset", "bio_out"])
  app.run(main)
