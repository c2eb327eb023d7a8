"""Files written whole or not at all: a reader (or a run killed mid-write) never sees half
of one."""

import json
import os


def write_json(path: str, value) -> None:
  """Writes JSON atomically: a temporary file renamed over `path`."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=1)
  os.replace(tmp, path)
