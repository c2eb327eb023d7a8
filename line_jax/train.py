r"""Trains LINE (stage 1, residual recovery, stage 2), then evaluates it.

  python -m line_jax.train --config=configs/test.py --workdir=/tmp/line_test \
      [--config.train.batch_size=64 ...]

Training is `line_jax.training.loop.train` (resumable from the work dir's checkpoints); with
config.train.evaluate the trained model is then evaluated (`line_jax.eval.protocols`), as
`python -m line_jax.evaluate` would.

Many processes (one per host, each driving its local devices): pass --distributed to every
process; the coordinator, the process count and each process's index are detected (SLURM,
Open MPI; see launch/slurm_multihost.sh) or given by --coordinator_address, --num_processes
and --process_id. Process 0 writes the work dir and evaluates (`line_jax.util.processes`).
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from absl import app, flags
from ml_collections import config_flags

from line_jax.util import logs
from line_jax.util import processes as multihost
from line_jax.training import loop as loop_lib
from line_jax.training import workdir as workdir_lib
from line_jax.api.line_model import LineModel
from line_jax.eval import runner

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (get_config()).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (checkpoints, cache, report).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Run as one of many processes "
                                 "(jax.distributed.initialize()).")
_FORCE_NEW = flags.DEFINE_bool("force_new", False, "Delete the run already in --workdir "
                               "(checkpoints, logs, report) and start over; without it a "
                               "work dir of other data or settings is refused.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "With --distributed: host:port "
                                   "of process 0's coordinator; default: detected (SLURM, "
                                   "Open MPI, ...) or $JAX_COORDINATOR_ADDRESS.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --distributed: how many "
                                      "processes take part; default: detected.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --distributed: this process's "
                                   "index (0 = the coordinator); default: detected.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: Sequence[str]) -> None:
  del argv
  logs.setup()
  given = [f.name for f in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID) if f.value is not None]
  if given and not _DISTRIBUTED.value:
    raise app.UsageError(f"--{', --'.join(given)} only apply with --distributed")
  if _DISTRIBUTED.value:
    multihost.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  config, workdir = _CONFIG.value, _WORKDIR.value
  with workdir_lib.locked_by_main(workdir):   # held through the evaluation too
    _run(config, workdir)


def _run(config, workdir: str) -> None:
  summary = loop_lib.train(config, workdir, force_new=_FORCE_NEW.value)
  if config.train.evaluate and not summary.get("stopped"):
    # Host-side work on process 0's devices; the other processes wait for its end.
    multihost.on_main("evaluating", lambda: runner.run_evaluation(
        LineModel.load(workdir, config), workdir))
    summary["report"] = os.path.join(os.path.abspath(workdir), "report.md")
  print(json.dumps({k: v for k, v in summary.items() if k != "recovery"}, indent=1))
  print(f"checkpoints: {summary.get('checkpoint')}")
  if "report" in summary:
    print(f"report: {summary['report']}")


if __name__ == "__main__":
  app.run(main)
