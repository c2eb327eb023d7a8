"""Wall-clock timing of a benchmark's calls."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def timed(run: Callable[[], Any], repeats: int) -> list:
  """Wall times of `repeats` calls of `run` (at least one; call it once before, to compile,
  and make it block until its result is ready)."""
  times = []
  for _ in range(max(1, repeats)):
    started = time.perf_counter()
    run()
    times.append(time.perf_counter() - started)
  return times


def median_seconds(run: Callable[[], Any], repeats: int) -> float:
  """Median wall time of `repeats` calls of `run` (call it once before, to compile)."""
  return statistics.median(timed(run, repeats))
