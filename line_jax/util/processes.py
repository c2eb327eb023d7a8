"""Runs of many processes (`jax.distributed`): who does what, and how the others wait.

Every process runs the same training loop on its own devices (`line_jax.training.loop`) and writes
its part of each checkpoint; the rest of the work on shared files is process 0's alone: the
work dir's lock, the dataset build and the work dir's check, the logs and JSON records, and
the evaluation. The other processes wait for process
0's word on the coordinator's key-value store (`main_first`, `on_main`) and raise its error
where it failed, so that a refused work dir or a broken dataset stops every process at once
rather than leaving the others in a collective until a timeout. With one process every
helper here is a plain call.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from typing import Any, Callable, Optional

import jax
from jax._src import distributed
from jax.experimental import multihost_utils
import numpy as np


# How long a process waits for process 0's word (its data build, teacher export or
# evaluation may take hours); a process 0 that dies stops the others sooner, through the
# coordinator's heartbeats.
WAIT_MS = 7 * 24 * 3600 * 1000
_KEY = "line_jax/"
_CALLS = itertools.count()    # the same sequence of calls on every process: the same keys


class ProcessError(RuntimeError):
  """Process 0 failed in a step the other processes waited for."""


def initialize(coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
  """jax.distributed.initialize(); what is not given is detected (SLURM, Open MPI, ...).
  On a CPU, collectives between processes go over gloo (jax's default there)."""
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
  logging.info("process %d of %d; %d local devices of %d", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  # A first collective while the processes are in step: it fails here, clearly, where
  # collectives cannot cross processes, and it sets up the communicator the steps use (on a
  # CPU, gloo allows 30 s between the processes' arrival at the first one).
  ranks = np.asarray(multihost_utils.process_allgather(np.int32(jax.process_index())))
  if ranks.tolist() != list(range(jax.process_count())):
    raise ProcessError(f"a collective across the processes returned {ranks.tolist()} for "
                       f"their indices 0..{jax.process_count() - 1}")


def is_main() -> bool:
  """Whether this is process 0 (the one that writes)."""
  return jax.process_index() == 0


def _client():
  """The coordinator's client (jax has no public handle on it; orbax reads it alike)."""
  if distributed.global_state.client is None:
    raise RuntimeError("jax.process_count() > 1 but jax.distributed is not initialised")
  return distributed.global_state.client


def _post(key: str, error: str) -> None:
  _client().key_value_set(key, "ok" if not error else "error:" + error)


def _wait(key: str, what: str) -> None:
  word = _client().blocking_key_value_get(key, WAIT_MS)
  if word != "ok":
    raise ProcessError(f"process 0 failed while {what}: {word[len('error:'):]}")


def _error_text(e: BaseException) -> str:
  return f"{type(e).__name__}: {e}"[:2000]


@contextlib.contextmanager
def main_first(what: str):
  """The block runs on process 0 first; the other processes run it once process 0 got
  through it (finding its work done), and raise `ProcessError` with its error where it
  failed. `what` names the step in that error."""
  if jax.process_count() == 1:
    yield
    return
  key = f"{_KEY}{next(_CALLS)}"
  if not is_main():
    _wait(key, what)
    yield
    return
  try:
    yield
  except BaseException as e:
    _post(key, _error_text(e))
    raise
  _post(key, "")


def on_main(what: str, fn: Callable[[], Any]) -> Any:
  """fn() on process 0 (its result; None on the others, which wait for it to finish and
  raise `ProcessError` with its error where it failed)."""
  result = None
  with main_first(what):
    if is_main():
      result = fn()
  return result


def put(x, sharding) -> jax.Array:
  """jax.device_put(x, sharding) of a host array that every process holds alike. Where the
  sharding spans processes, each process places its own devices' part; jax.device_put would
  first gather the whole array from every process onto every device to check that the
  copies agree (a teacher table many times over)."""
  if (jax.process_count() == 1 or sharding is None
      or getattr(sharding, "is_fully_addressable", True)):
    return jax.device_put(x, sharding)
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def broadcast_from_main(value: np.ndarray) -> np.ndarray:
  """Process 0's copy of an array every process holds in the same shape."""
  if jax.process_count() == 1:
    return np.asarray(value)
  return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(value)))


def check_same(what: str, value: int) -> None:
  """Raises on every process where the processes hold different `value`s of `what`."""
  if jax.process_count() == 1:
    return
  values = np.asarray(multihost_utils.process_allgather(np.asarray(value, np.int32)))
  if (values != values[0]).any():
    raise ProcessError(f"the processes disagree on {what}: {values.tolist()} (process 0 "
                       "first)")
