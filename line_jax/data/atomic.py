"""Atomic dataset builds: a builder writes into a temporary folder beside the target and
moves the finished files into place, `pairs.parquet` last, so a killed build leaves either
no dataset or the whole one, never a half-written file or a dataset missing its held-out
edges.

A marker file (`MARKER`, JSON: builder, settings, pid, host) records that a folder's
dataset files were made by a builder. A builder never writes into a folder that holds a
dataset file without that marker (the user's own data, perhaps misnamed): it raises
`DataError` naming the files instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from typing import Iterator, Optional

from line_jax.data.dataset import DataError

MARKER = "built_by.json"
# Every file a builder writes, in the order they are moved into place: pairs.parquet (whose
# presence marks a dataset as complete) last.
BUILT_FILES = ("stats.json", "concepts.parquet", "relations.parquet",
               "heldout_relations.parquet", "pairs.parquet")
_PARTIAL = ".partial-"


def foreign_files(root: str) -> list:
  """Dataset files in `root` that no builder made there (no marker)."""
  if not os.path.isdir(root) or os.path.exists(os.path.join(root, MARKER)):
    return []
  return [n for n in BUILT_FILES if n.endswith(".parquet")
          and os.path.exists(os.path.join(root, n))]


def check_target(root: str, builder: str) -> None:
  """DataError when `root` holds dataset files the builder did not make."""
  found = foreign_files(os.path.abspath(root))
  if found:
    raise DataError(f"{os.path.abspath(root)}: holds {', '.join(found)} that no builder "
                    f"made (no {MARKER}); the {builder} builder does not write over them. "
                    "If this is your dataset, it needs pairs.parquet (check the file "
                    "names); otherwise point data.dir at an empty or new folder")


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _remove_stale(parent: str, base: str) -> None:
  """Deletes temporary folders of builds of `base` whose process has died."""
  prefix = f".{base}{_PARTIAL}"
  for name in os.listdir(parent):
    if not name.startswith(prefix):
      continue
    try:
      pid = int(name[len(prefix):].split("-")[0])
    except ValueError:
      continue
    if not _pid_alive(pid):
      shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


@contextlib.contextmanager
def build_into(root: str, builder: str, settings: Optional[dict] = None) -> Iterator[str]:
  """`with build_into(root, "synthetic") as out:` write the dataset into `out`; on normal
  exit its files are moved into `root`, on an exception (or a kill) `root` is untouched."""
  root = os.path.abspath(root)
  check_target(root, builder)
  parent, base = os.path.dirname(root), os.path.basename(root)
  os.makedirs(parent, exist_ok=True)
  _remove_stale(parent, base)
  tmp = tempfile.mkdtemp(prefix=f".{base}{_PARTIAL}{os.getpid()}-", dir=parent)
  try:
    yield tmp
    with open(os.path.join(tmp, MARKER), "w") as f:
      json.dump({"builder": builder, "settings": settings, "pid": os.getpid(),
                 "host": socket.gethostname(), "time": time.time()}, f, indent=1,
                default=str)
    _install(tmp, root, builder)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _install(tmp: str, root: str, builder: str) -> None:
  if not os.path.exists(root):
    try:
      os.rename(tmp, root)     # the whole folder at once
      return
    except OSError:
      if not os.path.exists(root):
        raise
  # The folder exists: empty, holding other files, or a build of ours (maybe interrupted).
  check_target(root, builder)  # a concurrent writer may have put foreign files there
  if os.path.exists(os.path.join(root, "pairs.parquet")):
    return                     # a concurrent build finished first; keep its files
  os.replace(os.path.join(tmp, MARKER), os.path.join(root, MARKER))
  for name in BUILT_FILES:
    src = os.path.join(tmp, name)
    if os.path.exists(src):
      os.replace(src, os.path.join(root, name))
    elif os.path.exists(os.path.join(root, name)):
      os.remove(os.path.join(root, name))     # left by an older build of ours
