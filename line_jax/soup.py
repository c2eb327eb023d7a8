r"""Model soup: the average of the LINE parameters of several runs, saved and evaluated as
a work dir (`line_jax.api.soup`).

  python -m line_jax.soup --workdirs=runs/s0,runs/s1,runs/s2 --out=runs/soup

Every ingredient is the latest checkpoint of a `line_jax.train` work dir; they must share the
dataset, the teachers' settings and every parameter shape. With --evaluate (default) the soup
is evaluated and a table compares it with each ingredient (--reevaluate: evaluate the
ingredients again rather than read their metrics.json).
"""

import os
from typing import Sequence

from absl import app, flags

from line_jax.api import soup
from line_jax.util import logs

_WORKDIRS = flags.DEFINE_list("workdirs", None, "Comma-separated ingredient work dirs.")
_OUT = flags.DEFINE_string("out", None, "Work dir for the soup.")
_EVALUATE = flags.DEFINE_bool("evaluate", True, "Evaluate the soup and print the comparison.")
_REEVALUATE = flags.DEFINE_bool("reevaluate", False, "Evaluate ingredients again even if they "
                                "have metrics.json.")
flags.mark_flags_as_required(["workdirs", "out"])


def main(argv: Sequence[str]) -> None:
  del argv
  logs.setup()
  summary = soup.make_soup(_WORKDIRS.value, _OUT.value, evaluate_soup=_EVALUATE.value,
                           reevaluate_ingredients=_REEVALUATE.value)
  if "table" in summary:
    print(summary["table"])
    for warning in summary["warnings"]:
      print("warning:", warning)
  print(f"soup: {os.path.abspath(_OUT.value)}")


if __name__ == "__main__":
  app.run(main)
