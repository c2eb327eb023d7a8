"""Trust checks for the compiled kernel in the cache folder, before it is loaded.

Loading a shared library runs its code, and its cache name is predictable, so a file found
there is loaded only when (1) it and its folder belong to this user and are writable by no
one else, and (2) its SHA-256 equals the one recorded beside it (`<name>.sha256`) when this
package built it. Anything else (a truncated file from a killed build or a full disk, a
file someone else put there) is reported by `problem` and the caller builds it afresh.
"""

from __future__ import annotations

import os
import stat
from typing import Optional

from line_jax.util.files import file_sha256


def digest_path(library: str) -> str:
  return library + ".sha256"


def _ownership_problem(path: str) -> Optional[str]:
  st = os.stat(path)
  if hasattr(os, "getuid") and st.st_uid != os.getuid():
    return f"{path} belongs to uid {st.st_uid}, not to this user ({os.getuid()})"
  if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
    return f"{path} is writable by other users (mode {stat.filemode(st.st_mode)})"
  return None


def problem(library: str) -> Optional[str]:
  """Why `library` must not be loaded as it is (None: it is trusted and intact)."""
  if not os.path.exists(library):
    return f"{library} does not exist"
  for path in (os.path.dirname(library), library):
    reason = _ownership_problem(path)
    if reason:
      return reason
  recorded = digest_path(library)
  if not os.path.exists(recorded):
    return f"{library} has no recorded checksum ({recorded}); not built here"
  reason = _ownership_problem(recorded)
  if reason:
    return reason
  with open(recorded) as f:
    expected = f.read().strip()
  if file_sha256(library) != expected:
    return f"{library} does not match its recorded checksum (truncated or changed)"
  return None


def record(library: str) -> None:
  """Writes the checksum of a freshly built `library` beside it (atomically)."""
  tmp = digest_path(library) + f".tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(file_sha256(library) + "\n")
  os.chmod(tmp, 0o644)
  os.replace(tmp, digest_path(library))
