r"""Evaluates a trained LINE model as in the paper (`line_jax.eval.protocols`).

  python -m line_jax.evaluate --workdir=DIR [--config=configs/test.py]

writes into DIR: report.md (the paper's tables), metrics.json (every number) and PNG plots.
Without --config the config saved with the model in DIR is used.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from absl import app, flags
from ml_collections import config_flags

from line_jax import logs
from line_jax.api import LineModel
from line_jax.eval import protocols

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "ml_collections config file; default: the config saved with the model "
    "in --workdir.")
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Work dir of the trained model; outputs go there.")
flags.mark_flag_as_required("workdir")


def main(argv: Sequence[str]) -> None:
  del argv
  logs.setup()
  workdir = _WORKDIR.value
  result = protocols.run_evaluation(LineModel.load(workdir, _CONFIG.value), workdir)
  print(json.dumps(result["alignment"]["results"], indent=1))
  print(f"report: {os.path.join(os.path.abspath(workdir), 'report.md')}")


if __name__ == "__main__":
  app.run(main)
