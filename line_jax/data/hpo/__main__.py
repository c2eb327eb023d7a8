r"""Builds the HPO dataset folder (`line_jax.data.hpo.build_hpo_dataset`).

  python -m line_jax.data.hpo --out=DIR [--hpo.max_vignettes=2000 ...]
"""

from __future__ import annotations

import json
from typing import Sequence

from absl import app, flags
from ml_collections import config_flags

from line_jax.util import logs
from line_jax.data import hpo

_OUT = flags.DEFINE_string("out", None, "dataset folder to write")
_HPO = config_flags.DEFINE_config_dict("hpo", hpo.hpo_settings(), "builder settings")
flags.mark_flag_as_required("out")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  logs.setup()
  stats = hpo.build_hpo_dataset(_OUT.value, _HPO.value)
  summary = {k: v for k, v in stats.items() if k != "config"}
  print(json.dumps(summary, indent=1, default=list))


if __name__ == "__main__":
  app.run(main)
