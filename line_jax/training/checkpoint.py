"""Orbax checkpoints of a LINE run: the train state pytree plus JSON progress.

state pytree: {"params", "opt_state", "step", "added"} where "added" [P] int32 is the
concept residual recovery added to each pair (-1 for none): the refined stage-2 pair lists.
progress JSON: {"stage", "epoch", "batch" (next batch of the epoch), "step", "seed",
"recovered"}. The RNG is counter-based (line_jax.model.graph.hash_u32 over seed and step, and
numpy generators keyed by (seed, stage, epoch)), so seed + step + position restore it exactly.

Integrity: the progress record also carries "checksum", a SHA-256 over every array of the
state (dtype, shape and bytes, in tree order). A restore recomputes it, so flipped bytes are
detected rather than loaded; a checkpoint that fails to read or to match is skipped with a
warning naming it, and the newest intact one is used instead (`restore_latest`). Orbax
writes a checkpoint into a temporary folder and renames it when finished, and lists only
finished ones, so a reader never sees a checkpoint being written.

A save that fails (a full disk, above all) raises `CheckpointSaveError` naming the
checkpoint and the OS error; its unfinished folder is removed (it would hold the space) and
the older checkpoints are left as they were, so a rerun resumes from the newest of them.
Where a step is saved again (an epoch end that is also a stage end), the checkpoint it
replaces is kept aside (hard links, no extra space) in <workdir>/replaced_checkpoint until
the new one is finished, and put back if the save fails or the run is killed meanwhile.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
import shutil
import time
from typing import Any, List, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from line_jax.util import files

CHECKSUM_KEY = "checksum"
_LISTING_RETRIES = 5
_SETTLE_S = 0.5        # a failed read waits this long to tell deletion from damage
DAMAGED_DIR = "damaged_checkpoints"   # beside checkpoints/: where a trainer moves bad ones
REPLACED_DIR = "replaced_checkpoint"  # beside checkpoints/: one being saved again
_TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's unfinished checkpoint folders end so


class CheckpointError(RuntimeError):
  """Checkpoints exist but none of them is intact."""


class CheckpointSaveError(files.WriteError):
  """A checkpoint could not be saved (its message names it, the OS error and the
  checkpoint a rerun resumes from)."""


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
  a stage end); the progress record gets the state's checksum. A failed save raises
  `CheckpointSaveError` and leaves the checkpoints as they were (see the module doc)."""
  record = {**progress, CHECKSUM_KEY: state_checksum(state)}
  aside = None
  if step in mgr.all_steps():
    aside = _set_aside(mgr, step)
    mgr.delete(step)
  try:
    mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                           progress=ocp.args.JsonSave(record)), force=True)
    mgr.wait_until_finished()
  except Exception as e:   # orbax/TensorStore raise many types for a failed write
    raise _save_failed(mgr, step, aside, e) from e
  if aside is not None:
    shutil.rmtree(aside, ignore_errors=True)


def _primary() -> bool:
  return jax.process_index() == 0     # orbax's primary host writes and deletes folders


def _set_aside(mgr: ocp.CheckpointManager, step: int) -> Optional[str]:
  """Hard links of checkpoint `step`'s files in <workdir>/replaced_checkpoint/<step>
  (primary host), so that deleting it to save the step again loses nothing until the new
  one is finished; None where the file system has no hard links (then it is not kept)."""
  if not _primary():
    return None
  directory = str(mgr.directory)
  aside = os.path.join(os.path.dirname(directory), REPLACED_DIR, str(step))
  shutil.rmtree(aside, ignore_errors=True)
  try:
    shutil.copytree(os.path.join(directory, str(step)), aside, copy_function=os.link)
  except OSError as e:
    shutil.rmtree(aside, ignore_errors=True)
    logging.warning("checkpoint %s/%d is saved again without a copy kept aside (%s)",
                    directory, step, e)
    return None
  return aside


def _restore_set_aside(mgr: ocp.CheckpointManager) -> None:
  """Puts a checkpoint kept aside back where its step has no finished checkpoint (a save
  that failed or was killed), and drops it where the new one was finished."""
  root = os.path.join(os.path.dirname(str(mgr.directory)), REPLACED_DIR)
  if not os.path.isdir(root):
    return
  for name in os.listdir(root):
    path = os.path.join(root, name)
    if name.isdigit() and int(name) not in mgr.all_steps():
      os.replace(path, os.path.join(str(mgr.directory), name))
      logging.warning("checkpoint %s/%s: its new save did not finish; the one it was to "
                      "replace is put back", mgr.directory, name)
    else:
      shutil.rmtree(path, ignore_errors=True)
  shutil.rmtree(root, ignore_errors=True)
  mgr.reload()


def _remove_unfinished(mgr: ocp.CheckpointManager, step: Optional[int] = None) -> None:
  """Deletes orbax's unfinished folders (of `step`, or all): a failed or killed save's,
  which would hold disk space that a full disk needs back."""
  pattern = f"{step if step is not None else '*'}{_TMP_SUFFIX}*"
  for path in glob.glob(os.path.join(str(mgr.directory), pattern)):
    shutil.rmtree(path, ignore_errors=True)


def _save_failed(mgr: ocp.CheckpointManager, step: int, aside: Optional[str],
                 error: Exception) -> CheckpointSaveError:
  """Cleans up after a failed save of `step`; the error to raise."""
  if _primary():
    _remove_unfinished(mgr, step)
    if aside is not None:
      if os.path.exists(os.path.join(str(mgr.directory), str(step))):
        shutil.rmtree(aside, ignore_errors=True)
      else:
        os.replace(aside, os.path.join(str(mgr.directory), str(step)))
      shutil.rmtree(os.path.dirname(aside), ignore_errors=True)
  try:
    mgr.reload()
    kept = sorted(mgr.all_steps())
  except Exception:   # the listing itself may fail on a broken disk: say nothing of it
    kept = None
  text = str(error)
  found = re.search(r"os_error_code='?(\d+)", text)   # TensorStore's form of errno
  code = int(found.group(1)) if found else getattr(error, "errno", None)
  reason = os.strerror(code) if code else files.write_error("", error).reason[:300]
  if kept:
    reason += (f"; the save of checkpoint {step} failed, the checkpoints there ("
               f"{', '.join(map(str, kept))}) are as they were: a rerun resumes from step "
               f"{kept[-1]}")
  elif kept is not None:
    reason += f"; the save of checkpoint {step} failed and there is no other checkpoint"
  return CheckpointSaveError(os.path.join(str(mgr.directory), str(step)), reason, code)


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
  to <workdir>/damaged_checkpoints so that new saves do not collide with it, and first
  undoes what a failed or killed save left (a checkpoint kept aside is put back, unfinished
  folders are deleted). Raises CheckpointError when checkpoints exist but none is intact.
  """
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  if quarantine:   # the trainer: undo what a failed or killed save left
    _restore_set_aside(mgr)
    _remove_unfinished(mgr)
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
