"""Files written whole or not at all: a reader (or a run killed mid-write) never sees half
of one, and a write that fails (a full disk, a quota, a file-size limit) raises `WriteError`
naming the file and leaves no temporary file behind to hold the space."""

import contextlib
import errno
import hashlib
import json
import os
from typing import Iterator

import numpy as np

# What a failed write's errno means for the user: the disk is full, in one of its forms.
DISK_FULL = {errno.ENOSPC: "the disk is full: free space and run again",
             errno.EDQUOT: "the disk quota is exceeded: free space and run again",
             errno.EFBIG: "the file would exceed the largest file size allowed (the "
                          "file system's, or the process's `ulimit -f`)"}
# posix_fallocate's answers from a file system that cannot reserve space ahead: not an error.
_NO_FALLOCATE = {errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class WriteError(OSError):
  """A file could not be written; the message names it, and says when the disk is full.
  `errno` is the operating system's (errno.ENOSPC for a full disk)."""

  def __init__(self, path: str, reason: str, code=None):
    self.path, self.reason = path, reason
    hint = DISK_FULL.get(code)
    self.message = (f"{path}: could not be written: {reason}"
                    + (f" ({hint})" if hint else ""))
    super().__init__(code, self.message)

  def __str__(self) -> str:
    return self.message


def write_error(path: str, error: BaseException) -> WriteError:
  """The `WriteError` for `error` (an OSError, or an exception whose text has the OS
  error), naming `path`."""
  if isinstance(error, WriteError):
    return error
  reason = getattr(error, "strerror", None)
  if not reason:
    text = str(error).strip()
    reason = text.splitlines()[0] if text else type(error).__name__
  return WriteError(path, reason, getattr(error, "errno", None))


def _remove(path: str) -> None:
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


@contextlib.contextmanager
def replacing(path: str) -> Iterator[str]:
  """Yields a temporary path beside `path` for the caller to write; when the block ends it
  is synced and renamed over `path`. When the block (or the rename) fails the temporary
  file is removed, `path` is left as it was, and an OSError becomes a `WriteError` naming
  `path`."""
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    yield tmp
    fd = os.open(tmp, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)
    os.replace(tmp, path)
  except OSError as e:
    _remove(tmp)
    raise write_error(path, e) from e
  except BaseException:
    _remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  """Writes `text` atomically: a temporary file renamed over `path`."""
  with replacing(path) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)


def write_json(path: str, value, **dump_args) -> None:
  """Writes JSON atomically (indent 1 unless `dump_args` say otherwise)."""
  write_text(path, json.dumps(value, **{"indent": 1, **dump_args}))


def read_json_or_none(path: str):
  """The JSON value in `path`, or None when the file is missing, unreadable or not JSON (a
  record that is only a hint: a cache's meta.json, a build marker)."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def json_safe(value):
  """`value` as strict JSON takes it: NaN and inf become None, numpy arrays lists, numpy
  scalars Python numbers, tuples lists and dictionary keys strings."""
  if isinstance(value, dict):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if isinstance(value, np.ndarray):
    return json_safe(value.tolist())
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, (float, np.floating)):
    v = float(value)
    return v if np.isfinite(v) else None
  return value


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
  """The SHA-256 (hex) of a file's bytes, read `chunk` bytes at a time."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(chunk):
      h.update(block)
  return h.hexdigest()


class _Stream:
  """A file's write method alone: np.save then writes through it, in chunks, rather than
  with ndarray.tofile, whose short write on a full disk is an OSError without errno."""

  def __init__(self, f):
    self.write = f.write


def save_npy(path: str, array: np.ndarray) -> None:
  """np.save, atomically."""
  with replacing(path) as tmp:
    with open(tmp, "wb") as f:
      np.save(_Stream(f), array)


def append_text(path: str, text: str) -> None:
  """Appends `text` to `path` (created if missing). A write that fails is cut off again,
  so that the file keeps whole records only, and raises `WriteError` naming the file."""
  data = memoryview(text.encode("utf-8"))
  try:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
  except OSError as e:
    raise write_error(path, e) from e
  try:
    size = os.fstat(fd).st_size
    try:
      while data:
        data = data[os.write(fd, data):]
    except OSError as e:
      try:
        os.ftruncate(fd, size)
      except OSError:
        pass
      raise write_error(path, e) from e
  finally:
    os.close(fd)


def reserve(path: str) -> None:
  """Allocates the disk blocks of every byte of `path` now (posix_fallocate), so that a
  memory-mapped file of that size cannot run out of space while it is written: writing a
  page of a sparse mapping on a full disk kills the process with SIGBUS, with no error to
  report. A full disk raises `WriteError` here instead; on a file system that cannot
  reserve space ahead, nothing happens."""
  fd = os.open(path, os.O_RDWR)
  try:
    size = os.fstat(fd).st_size
    if size:
      os.posix_fallocate(fd, 0, size)
  except OSError as e:
    if e.errno not in _NO_FALLOCATE:
      raise write_error(path, e) from e
  finally:
    os.close(fd)


def new_figure(**figure_args):
  """A matplotlib `Figure` on the Agg canvas (no pyplot state, no display). matplotlib is
  imported here, on the first figure, not with the modules that draw: it takes about half a
  second, and training or embedding processes that draw nothing need not pay it."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(**figure_args)
  FigureCanvasAgg(fig)
  return fig


def save_figure(fig, path: str, **savefig_args) -> str:
  """fig.savefig(path), atomically (the format from the file's extension); returns path."""
  fmt = os.path.splitext(path)[1][1:].lower() or "png"
  with replacing(path) as tmp:
    fig.savefig(tmp, format=fmt, **savefig_args)
  return path
