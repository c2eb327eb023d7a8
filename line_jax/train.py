r"""Trains LINE (stage 1, residual recovery, stage 2), then evaluates it.

  python -m line_jax.train --config=configs/test.py --workdir=/tmp/line_test \
      [--config.train.batch_size=64 ...]

Training is `line_jax.trainer.train` (resumable from the work dir's checkpoints); with
config.train.evaluate the trained model is then evaluated (`line_jax.eval.protocols`), as
`python -m line_jax.evaluate` would. Multi-host: pass --distributed; see launch/.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import jax
from absl import app, flags
from ml_collections import config_flags

from line_jax import logs
from line_jax import trainer
from line_jax import workdir as workdir_lib
from line_jax.api import LineModel
from line_jax.eval import protocols

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (get_config()).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (checkpoints, cache, report).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() (multi-host).")
_FORCE_NEW = flags.DEFINE_bool("force_new", False, "Delete the run already in --workdir "
                               "(checkpoints, logs, report) and start over; without it a "
                               "work dir of other data or settings is refused.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: Sequence[str]) -> None:
  del argv
  logs.setup()
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  config, workdir = _CONFIG.value, _WORKDIR.value
  if jax.process_index() != 0:
    return _run(config, workdir)
  with workdir_lib.locked(workdir):   # held through the evaluation too
    _run(config, workdir)


def _run(config, workdir: str) -> None:
  summary = trainer.train(config, workdir, force_new=_FORCE_NEW.value)
  if config.train.evaluate and not summary.get("stopped"):
    protocols.run_evaluation(LineModel.load(workdir, config), workdir)
    summary["report"] = os.path.join(os.path.abspath(workdir), "report.md")
  print(json.dumps({k: v for k, v in summary.items() if k != "recovery"}, indent=1))
  print(f"checkpoints: {summary.get('checkpoint')}")
  if "report" in summary:
    print(f"report: {summary['report']}")


if __name__ == "__main__":
  app.run(main)
