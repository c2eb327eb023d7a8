r"""Exports (or imports) both teachers' embeddings of a dataset into the work-dir cache.

  python -m line_jax.export --config=configs/bge_coder.py --workdir=DIR

builds (or loads) the dataset, then makes sure both teachers' embedding folders exist
(`line_jax.cache.export`) and prints their paths.
"""

from __future__ import annotations

from typing import Sequence

from absl import app, flags
from ml_collections import config_flags

from line_jax.cache import export as exporter
from line_jax.util import logs

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "work dir (embedding cache, checkpoints)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logs.setup()
  paths = exporter.export_teachers(_CONFIG.value, _WORKDIR.value)
  for name, path in zip(("teacher1", "teacher2"), paths):
    print(f"{name}: {path}")


if __name__ == "__main__":
  app.run(main)
