r"""Evaluates a trained LINE model as in the paper (`line_jax.eval.protocols`).

  python -m line_jax.evaluate --workdir=DIR [--config=configs/test.py]

writes into DIR: report.md (the paper's tables), metrics.json (every number) and PNG plots.
Without --config the config saved with the model in DIR is used; --config.FIELD=VALUE
overrides one field (e.g. --config.eval.split=valid). `--only=transfer`, `--only=joint`,
`--only=placement` (a run with held-out terms) or `--only=recognition` runs that protocol
alone: its entry of metrics.json is replaced and its section written to DIR/transfer.md,
DIR/joint.md, DIR/placement.md or DIR/recognition.md.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from absl import app, flags
from ml_collections import config_flags

from line_jax.util import logs
from line_jax.api.line_model import LineModel
from line_jax.eval.ner import protocol as ner_protocol
from line_jax.eval import recognition
from line_jax.eval import runner

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "ml_collections config file; default: the config saved with the model "
    "in --workdir.")
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Work dir of the trained model; outputs go there.")
_ONLY = flags.DEFINE_enum("only", "", ["", *runner.ALONE, recognition.KEY],
                          "Run one protocol alone (transfer: the CNN transfer; joint: single "
                          "concepts in the joint space; placement: the terms a run with "
                          "data.heldout_terms kept out of training; recognition: concepts of "
                          "annotated documents, line_jax.eval.recognition); its numbers "
                          "replace that entry of metrics.json.")
_NER = flags.DEFINE_string("ner", None, "CoNLL/BIO file or folder: run only the token-level "
                           "NER protocol (line_jax.eval.ner), outputs in WORKDIR/ner")
flags.mark_flag_as_required("workdir")


def main(argv: Sequence[str]) -> None:
  del argv
  logs.setup()
  workdir = _WORKDIR.value
  model = LineModel.load(workdir, _CONFIG.value)
  if _NER.value:   # the token-level NER protocol alone
    ner_protocol.main_for_evaluate(model, _NER.value, workdir)
    return
  if _ONLY.value == recognition.KEY:
    print(recognition.run_alone(model, workdir))
    return
  if _ONLY.value:
    print(runner.run_alone(model, workdir, _ONLY.value))
    return
  result = runner.run_evaluation(model, workdir)
  print(json.dumps(result["alignment"]["results"], indent=1))
  print(f"report: {os.path.join(os.path.abspath(workdir), 'report.md')}")


if __name__ == "__main__":
  app.run(main)
