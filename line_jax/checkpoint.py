"""Orbax checkpoints of a LINE run: the train state pytree plus JSON progress.

state pytree: {"params", "opt_state", "step", "added"} where "added" [P] int32 is the
concept residual recovery added to each pair (-1 for none): the refined stage-2 pair lists.
progress JSON: {"stage", "epoch", "batch" (next batch of the epoch), "step", "seed",
"recovered"}. The RNG is counter-based (line_jax.graph.hash_uniform over seed and step, and
numpy generators keyed by (seed, stage, epoch)), so seed + step + position restore it exactly.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp


def manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  options = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.LatestN(keep),
      enable_async_checkpointing=False, create=True)
  return ocp.CheckpointManager(directory, options=options,
                               item_names=("state", "progress"))


def save(mgr: ocp.CheckpointManager, step: int, state: Any, progress: dict) -> None:
  """Saves at `step`, replacing a checkpoint already there (e.g. an epoch end that is also
  a stage end)."""
  if step in mgr.all_steps():
    mgr.delete(step)
  mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                         progress=ocp.args.JsonSave(progress)), force=True)
  mgr.wait_until_finished()


def restore_latest(mgr: ocp.CheckpointManager, abstract_state: Any):
  """Returns (state, progress) of the latest checkpoint, or (None, None)."""
  step: Optional[int] = mgr.latest_step()
  if step is None:
    return None, None
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  restored = mgr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), progress=ocp.args.JsonRestore()))
  state = restored["state"]
  state["added"] = np.asarray(state["added"])
  return state, dict(restored["progress"])
