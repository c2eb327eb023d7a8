"""Keeps freed host memory for reuse, so XLA:CPU steps do not page-fault (glibc only).

XLA:CPU allocates a step's temporary buffers afresh on every call. glibc serves allocations
of more than 32 MiB with mmap, and frees them with munmap (as it does whole per-thread
heaps), so every step asks the kernel for new zeroed pages (`python -m line_jax.bench
--what=train` prints `page_faults_per_step`; docs/benchmarks.md has the figures).

Two settings (mallopt) fix it:
  * `use_one_arena()`: every thread allocates from the main heap (M_ARENA_MAX = 1). It only
    applies to threads that have not allocated yet, so it has to run before JAX starts its
    CPU thread pool: `line_jax` calls it when imported.
  * `keep_freed_memory()`: no mmap, and the heap is not trimmed below 1 GiB
    (M_MMAP_MAX = 0, M_TRIM_THRESHOLD = 1 GiB), so a step reuses the pages of the last one.
    In the first tens of steps the heap still grows by a whole buffer now and then, while
    small allocations split the freed holes; then it settles. The trainer calls it once its
    set-up is done, so that set-up's large short-lived arrays still go back to the system
    when freed.
Work that allocates a few very large arrays once rather than a step's buffers again and
again (residual recovery: dictionary-sized arrays) runs under `system_malloc()`, which
lets large allocations go back to mmap and trims the heap on the way in and out, so they
are returned to the system when freed instead of staying in the kept heap.
The one arena has a price where many threads allocate at once: exporting teacher embeddings
(`python -m line_jax.bench --what=export`) runs a little slower with it. Set
LINE_JAX_SYSTEM_MALLOC=1 to leave malloc as it is. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from typing import Iterator, Optional

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
TRIM_THRESHOLD = 1 << 30
# glibc's defaults, restored by `system_malloc`.
_DEFAULT_MMAP_MAX, _DEFAULT_TRIM_THRESHOLD = 65536, 128 * 1024

STATE = {"one_arena": False, "keep_freed": False, "reason": "not tried"}


def _mallopt() -> Optional[ctypes._CFuncPtr]:
  if os.environ.get("LINE_JAX_SYSTEM_MALLOC", "") not in ("", "0"):
    STATE["reason"] = "LINE_JAX_SYSTEM_MALLOC is set"
    return None
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
    libc.gnu_get_libc_version   # glibc only: the parameters below are glibc's
  except (OSError, AttributeError):
    STATE["reason"] = "not glibc"
    return None
  mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
  return mallopt


def _malloc_trim() -> None:
  libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  libc.malloc_trim.argtypes = [ctypes.c_size_t]
  libc.malloc_trim(0)


def use_one_arena() -> bool:
  """M_ARENA_MAX = 1 (see the module doc); returns whether it is in effect."""
  if not STATE["one_arena"]:
    mallopt = _mallopt()
    if mallopt is not None:
      STATE["one_arena"] = mallopt(_M_ARENA_MAX, 1) == 1
      STATE["reason"] = "mallopt applied" if STATE["one_arena"] else "mallopt refused"
  return STATE["one_arena"]


def keep_freed_memory() -> bool:
  """M_MMAP_MAX = 0 and M_TRIM_THRESHOLD = 1 GiB (see the module doc); returns whether
  freed memory is now kept for reuse."""
  if not STATE["keep_freed"] and STATE["one_arena"]:
    mallopt = _mallopt()
    if mallopt is not None:
      STATE["keep_freed"] = (mallopt(_M_MMAP_MAX, 0) == 1
                             and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
      if not STATE["keep_freed"]:
        STATE["reason"] = "mallopt refused M_MMAP_MAX or M_TRIM_THRESHOLD"
  return STATE["keep_freed"]


@contextlib.contextmanager
def system_malloc() -> Iterator[None]:
  """glibc's own large-allocation policy inside the block (see the module doc): large
  arrays are mmapped and unmapped when freed, and the kept heap is trimmed on entry and
  exit. Does nothing unless `keep_freed_memory` is in effect."""
  mallopt = _mallopt() if STATE["keep_freed"] else None
  if mallopt is None:
    yield
    return
  mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
  mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
  _malloc_trim()
  try:
    yield
  finally:
    _malloc_trim()
    mallopt(_M_MMAP_MAX, 0)
    mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
