"""Orbax checkpoints of a LINE run: the train state pytree plus JSON progress.

state pytree: {"params", "opt_state", "step", "added"} where "added" [P] int32 is the
concept residual recovery added to each pair (-1 for none): the refined stage-2 pair lists.
progress JSON: {"stage", "epoch", "batch" (next batch of the epoch), "step", "seed",
"recovered"}. The RNG is counter-based (line_jax.graph.hash_u32 over seed and step, and
numpy generators keyed by (seed, stage, epoch)), so seed + step + position restore it exactly.

Integrity: the progress record also carries "checksum", a SHA-256 over every array of the
state (dtype, shape and bytes, in tree order). A restore recomputes it, so flipped bytes are
detected rather than loaded; a checkpoint that fails to read or to match is skipped with a
warning naming it, and the newest intact one is used instead (`restore_latest`). Orbax
writes a checkpoint into a temporary folder and renames it when finished, and lists only
finished ones, so a reader never sees a checkpoint being written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from typing import Any, List, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

CHECKSUM_KEY = "checksum"
_LISTING_RETRIES = 5
_SETTLE_S = 0.5        # a failed read waits this long to tell deletion from damage
DAMAGED_DIR = "damaged_checkpoints"   # beside checkpoints/: where a trainer moves bad ones


class CheckpointError(RuntimeError):
  """Checkpoints exist but none of them is intact."""


def _retry_listing(fn):
  """fn() again when a checkpoint folder vanished while orbax listed it (a trainer saving
  into the same work dir deletes old checkpoints)."""
  for attempt in range(_LISTING_RETRIES):
    try:
      return fn()
    except FileNotFoundError:
      if attempt == _LISTING_RETRIES - 1:
        raise
      time.sleep(0.05 * (attempt + 1))


def manager(workdir: str, keep: int, local: bool = False) -> ocp.CheckpointManager:
  """The work dir's checkpoint manager. Where there are many processes (`jax.distributed`)
  every process must make and use it alike (a trainer), unless `local`: this process's
  alone (a reader, e.g. the evaluation on process 0), which syncs with no other."""
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  alone = local and jax.process_count() > 1
  if alone:    # orbax creates the folder only where every process takes part
    os.makedirs(directory, exist_ok=True)
  options = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.LatestN(keep),
      enable_async_checkpointing=False, create=not alone,
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          primary_host=jax.process_index(), active_processes={jax.process_index()})
      if alone else ocp.options.MultiprocessingOptions())
  return _retry_listing(lambda: ocp.CheckpointManager(directory, options=options,
                                                      item_names=("state", "progress")))


def state_checksum(state: Any) -> str:
  """SHA-256 over the state's arrays in tree order (dtype, shape, C-order bytes)."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(state):
    arr = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
  return h.hexdigest()


def save(mgr: ocp.CheckpointManager, step: int, state: Any, progress: dict) -> None:
  """Saves at `step`, replacing a checkpoint already there (e.g. an epoch end that is also
  a stage end); the progress record gets the state's checksum."""
  record = {**progress, CHECKSUM_KEY: state_checksum(state)}
  if step in mgr.all_steps():
    mgr.delete(step)
  mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                         progress=ocp.args.JsonSave(record)), force=True)
  mgr.wait_until_finished()


def _restore_step(mgr: ocp.CheckpointManager, step: int, target: Any):
  restored = mgr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), progress=ocp.args.JsonRestore()))
  state, progress = restored["state"], dict(restored["progress"])
  expected = progress.pop(CHECKSUM_KEY, None)
  if expected is None:
    logging.info("checkpoint %s/%d has no checksum (written before checksums); not verified",
                 mgr.directory, step)
  else:
    found = state_checksum(state)
    if found != expected:
      raise CheckpointError(f"checksum mismatch (stored {expected[:12]}..., arrays give "
                            f"{found[:12]}...): its arrays were changed after the save")
  state["added"] = np.asarray(state["added"])
  return state, progress


def restore_latest(mgr: ocp.CheckpointManager, abstract_state: Any,
                   quarantine: bool = False):
  """Returns (state, progress) of the newest intact checkpoint, or (None, None) if none.

  A checkpoint that cannot be read, or whose arrays do not match its checksum, is skipped
  with a warning naming it; quarantine=True (the trainer, which owns the work dir) moves it
  to <workdir>/damaged_checkpoints so that new saves do not collide with it. Raises
  CheckpointError when checkpoints exist but none is intact.
  """
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  damaged: List[str] = []
  for attempt in range(2):
    steps = sorted(_retry_listing(mgr.all_steps), reverse=True)
    for step in steps:
      path = os.path.join(str(mgr.directory), str(step))
      if path in damaged:
        continue
      try:
        state, progress = _restore_step(mgr, step, target)
      except Exception as e:   # orbax/TensorStore raise many types for a bad file
        error = e
        if not quarantine:     # a reader: a trainer may be deleting or replacing it now
          time.sleep(_SETTLE_S)
          _retry_listing(mgr.reload)
          if not os.path.exists(path) or step not in mgr.all_steps():
            continue           # deleted while we read: not damaged
          try:                 # replaced while we read: read the new one
            state, progress = _restore_step(mgr, step, target)
            error = None
          except Exception as again:   # same as above
            error = again
        if error is not None:
          damaged.append(path)
          logging.warning("checkpoint %s is damaged and is skipped (%s: %s); falling back "
                          "to an older one", path, type(error).__name__,
                          str(error).splitlines()[0][:300])
          continue
      if quarantine:
        _quarantine(mgr, damaged)
      return state, progress
    _retry_listing(mgr.reload)   # the listing may have changed under a concurrent save
    if not mgr.all_steps() or set(mgr.all_steps()) <= {
        int(os.path.basename(p)) for p in damaged}:
      break
  if damaged:
    raise CheckpointError(f"{mgr.directory}: no intact checkpoint; damaged: "
                          f"{', '.join(damaged)} (train with --force_new to start over)")
  return None, None


def _quarantine(mgr: ocp.CheckpointManager, damaged: List[str]) -> None:
  if not damaged:
    return
  dest_root = os.path.join(os.path.dirname(str(mgr.directory)), DAMAGED_DIR)
  os.makedirs(dest_root, exist_ok=True)
  for path in damaged:
    dest = os.path.join(dest_root, os.path.basename(path))
    n = 0
    while os.path.exists(dest):
      n += 1
      dest = os.path.join(dest_root, f"{os.path.basename(path)}.{n}")
    shutil.move(path, dest)
    logging.warning("moved the damaged checkpoint %s to %s", path, dest)
  mgr.reload()
