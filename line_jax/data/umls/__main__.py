r"""Builds a dataset folder from a UMLS release (`line_jax.data.umls.build_umls_dataset`).

    python -m line_jax.data.umls --meta=META_DIR --out=DATASET_DIR \
        [--sabs=MSH,SNOMEDCT_US] [--languages=ENG] [--max_concepts=0] [--umls.FIELD=...]
"""

from __future__ import annotations

import json
from typing import Sequence

from absl import app
from absl import flags
from ml_collections import config_flags

from line_jax.util import logs
from line_jax.data import umls

_META = flags.DEFINE_string("meta", None, "UMLS META folder (MRCONSO.RRF, MRREL.RRF, ...)")
_OUT = flags.DEFINE_string("out", None, "dataset folder to write")
_SABS = flags.DEFINE_list("sabs", None, "source vocabularies to keep (default: all)")
_LANGUAGES = flags.DEFINE_list("languages", None, "LAT values to keep (default: ENG)")
_MAX_CONCEPTS = flags.DEFINE_integer("max_concepts", None, "keep the first N CUIs (0 = all)")
_CONFIG = config_flags.DEFINE_config_dict("umls", umls.umls_settings(), "import settings")
flags.mark_flags_as_required(["meta", "out"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  logs.setup()
  config = _CONFIG.value
  for field, flag in (("sabs", _SABS), ("languages", _LANGUAGES),
                      ("max_concepts", _MAX_CONCEPTS)):
    if flag.value is not None:
      config[field] = tuple(flag.value) if isinstance(flag.value, list) else flag.value
  stats = umls.build_umls_dataset(_META.value, _OUT.value, config)
  print(json.dumps({k: v for k, v in stats.items() if k != "config"}, indent=1, default=list))


if __name__ == "__main__":
  app.run(main)
