"""Keeps freed host memory for reuse, so XLA:CPU steps do not page-fault (glibc only).

XLA:CPU allocates a step's temporary buffers afresh on every call. glibc serves allocations
of more than 32 MiB with mmap, and frees them with munmap (as it does whole per-thread
heaps), so every step asks the kernel for new zeroed pages: at batch 128, d = 384 that is
about 17,000 page faults and 14 ms of a 52 ms step, measured with
`python -m line_jax.bench --what=train --dim=384` on a 2-core machine. `tune()` sets glibc's
malloc to serve everything from one heap that is never trimmed below 1 GiB (mallopt:
M_MMAP_MAX = 0, M_TRIM_THRESHOLD = 1 GiB, M_ARENA_MAX = 1), after which a step reuses the
same pages: no page faults, the same step in 38 ms.

The arena setting only applies to threads that have not allocated yet, so it has to run
before JAX starts its CPU thread pool: `line_jax` calls it when imported. Set
LINE_JAX_SYSTEM_MALLOC=1 to leave malloc as it is. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
TRIM_THRESHOLD = 1 << 30

STATE = {"tuned": False, "reason": "not tried"}


def tune() -> bool:
  """Applies the settings above once; returns whether they are in effect."""
  if STATE["tuned"] or STATE["reason"] != "not tried":
    return STATE["tuned"]
  if os.environ.get("LINE_JAX_SYSTEM_MALLOC", "") not in ("", "0"):
    STATE["reason"] = "LINE_JAX_SYSTEM_MALLOC is set"
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
    libc.gnu_get_libc_version   # glibc only: the parameters below are glibc's
  except (OSError, AttributeError):
    STATE["reason"] = "not glibc"
    return False
  mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
  ok = (mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        and mallopt(_M_ARENA_MAX, 1) == 1)
  STATE.update(tuned=ok, reason="mallopt applied" if ok else "mallopt refused")
  return ok
