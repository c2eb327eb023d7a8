"""Atomic dataset builds: a builder writes into a temporary folder beside the target and
moves the finished files into place, `pairs.parquet` last, so a killed build leaves either
no dataset or the whole one, never a half-written file or a dataset missing its held-out
edges.

A marker file (`MARKER`, JSON: builder, settings, pid, host) records that a folder's
dataset files were made by a builder. A builder never writes into a folder that holds a
dataset file without that marker (the user's own data, perhaps misnamed), nor into one whose
marker names another builder: it raises `DataError` naming the files instead.

Importers whose folder later gains the files of other steps (the UMLS import, to whose
folder the notes import adds pairs.parquet) use `build_aside`: the whole folder is built
beside the target, the target's other files are hard-linked into it, and the two folders
are swapped in one step (Linux `renameat2(RENAME_EXCHANGE)`), so a reader sees either the
old dataset or the new one. Where the swap cannot be made in one step (another system, or
a folder that is a mount point), the files are moved one by one under a marker that says
`"complete": false`, which `load_dataset` refuses until a rerun completes the move.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import socket
import stat
import sys
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


def marker_builder(root: str) -> Optional[str]:
  """The builder `root`'s marker names; None without a marker, "unknown" when it cannot be
  read."""
  path = os.path.join(root, MARKER)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      marker = json.load(f)
    return str(marker["builder"])
  except (OSError, ValueError, KeyError, TypeError):
    return "unknown"


def check_target(root: str, builder: str) -> None:
  """DataError when `root` holds dataset files the builder did not make."""
  root = os.path.abspath(root)
  made_by = marker_builder(root)
  if made_by not in (None, builder) and any(
      os.path.exists(os.path.join(root, n)) for n in BUILT_FILES):
    raise DataError(f"{root}: holds a dataset that the {made_by} builder made ({MARKER}); "
                    f"the {builder} builder does not write over it. Point data.dir at an "
                    "empty or new folder")
  found = foreign_files(root)
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
  with _partial_folder(root) as tmp:
    yield tmp
    with open(os.path.join(tmp, MARKER), "w") as f:
      json.dump({"builder": builder, "settings": settings, "pid": os.getpid(),
                 "host": socket.gethostname(), "time": time.time()}, f, indent=1,
                default=str)
    _install(tmp, root, builder)


@contextlib.contextmanager
def _partial_folder(root: str) -> Iterator[str]:
  """A new folder beside `root` (stale ones of killed builds removed first), removed with
  whatever is left in it when the block ends."""
  parent, base = os.path.dirname(root), os.path.basename(root)
  os.makedirs(parent, exist_ok=True)
  _remove_stale(parent, base)
  tmp = tempfile.mkdtemp(prefix=f".{base}{_PARTIAL}{os.getpid()}-", dir=parent)
  try:
    yield tmp
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


# --- build_aside: a folder built beside its target and swapped in -----------------------

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(a: str, b: str) -> bool:
  """Swaps the paths `a` and `b` in one step (Linux renameat2 with RENAME_EXCHANGE); False
  where the system or the file system cannot (the caller then swaps another way)."""
  if not sys.platform.startswith("linux"):
    return False
  try:
    renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
  except (OSError, AttributeError):
    return False
  renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                        ctypes.c_uint]
  if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
    return True
  code = ctypes.get_errno()
  if code in (errno.EINVAL, errno.ENOSYS, errno.EBUSY, errno.EXDEV, errno.EOPNOTSUPP,
              errno.EPERM):
    return False
  raise OSError(code, os.strerror(code), b)


def check_own_folder(root: str, builder: str, command: str = "--out") -> None:
  """DataError unless `root` is missing, an empty folder, or a folder whose marker says
  `builder` wrote it; nothing is changed."""
  if os.path.lexists(root) and not os.path.isdir(root):
    raise DataError(f"{root}: not a folder (a file?); the {builder} import writes a dataset "
                    f"folder: point {command} at a new or empty folder")
  if not os.path.isdir(root) or not os.listdir(root):
    return
  made_by = marker_builder(root)
  if made_by == builder:
    return
  if made_by is None:
    names = sorted(os.listdir(root))
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise DataError(f"{root}: holds {shown} but no {MARKER} of the {builder} import; it "
                    f"writes only into a new or empty folder, or one it wrote before, so it "
                    f"leaves this one as it is: point {command} at a new folder")
  raise DataError(f"{root}: holds a dataset that the {made_by} builder made ({MARKER}); the "
                  f"{builder} import does not write over it: point {command} at a new folder")


def _write_marker(folder: str, builder: str, settings, complete: bool) -> None:
  tmp = os.path.join(folder, f".{MARKER}.partial-{os.getpid()}")
  with open(tmp, "w") as f:
    json.dump({"builder": builder, "settings": settings, "complete": complete,
               "pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}, f,
              indent=1, default=str)
  os.replace(tmp, os.path.join(folder, MARKER))


def _link_or_copy(src: str, dst: str) -> None:
  try:
    os.link(src, dst)
  except OSError:
    shutil.copy2(src, dst)


def _swap_in(tmp: str, root: str, builder: str, own: tuple, settings) -> None:
  if not os.path.lexists(root):
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    os.rename(tmp, root)
    return
  check_own_folder(root, builder)       # again: another writer may have been at work
  for name in os.listdir(root):         # the other steps' files stay (hard links)
    if name in own or name == MARKER:
      continue
    src, dst = os.path.join(root, name), os.path.join(tmp, name)
    if os.path.isdir(src) and not os.path.islink(src):
      shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
    elif os.path.islink(src):
      os.symlink(os.readlink(src), dst)
    else:
      _link_or_copy(src, dst)
  os.chmod(tmp, stat.S_IMODE(os.stat(root).st_mode))
  if exchange(tmp, root):
    return                              # `tmp` now holds the old folder
  _write_marker(root, builder, settings, complete=False)
  for name in own:
    src, dst = os.path.join(tmp, name), os.path.join(root, name)
    if os.path.exists(src):
      os.replace(src, dst)
    elif os.path.exists(dst):
      os.remove(dst)                    # an older import's file this one does not write
  os.replace(os.path.join(tmp, MARKER), os.path.join(root, MARKER))


@contextlib.contextmanager
def build_aside(root: str, builder: str, own: tuple,
                settings: Optional[dict] = None) -> Iterator[str]:
  """`with build_aside(root, "umls", FILES) as out:` write the files `own` into `out`.

  `root` must be missing, empty, or written by `builder` before (else DataError, nothing
  changed). On normal exit the new folder, with `root`'s other files, replaces `root` in one
  step; on an exception or a kill `root` is as it was.
  """
  root = os.path.realpath(root)
  check_own_folder(root, builder)
  with _partial_folder(root) as tmp:
    yield tmp
    _write_marker(tmp, builder, settings, complete=True)
    _swap_in(tmp, root, builder, tuple(own), settings)
