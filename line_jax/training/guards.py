"""Non-finite guards: a diverged run stops (or skips the batch) instead of training on NaN,
and evaluation refuses NaN/inf embeddings instead of ranking them.

Training (config `train.on_nonfinite`):
  "stop" (default): the first step whose loss, a loss term or a gradient is NaN/inf raises
    `NonFiniteError` naming the step and the term, before any checkpoint of the damaged
    state is written (the guard is flushed before every save).
  "skip": such a step leaves parameters and optimizer state unchanged (selected inside the
    jitted step); each skip is logged with its step and term, and more than
    `train.max_nonfinite_skips` of them stop the run as "stop" would.
The step's flags are read from the device only when the trainer logs or saves, so the guard
adds no synchronisation per step.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np

MODES = ("stop", "skip")
TERMS = ("align", "relational", "negation", "concept", "uniformity", "name", "text",
         "sentence_concept")


class NonFiniteError(FloatingPointError):
  """A loss, gradient or embedding that is NaN or inf."""


def check_mode(mode: str) -> str:
  if mode not in MODES:
    raise ValueError(f"train.on_nonfinite={mode!r}: expected one of {MODES}")
  return mode


def tree_finite(tree: Any) -> jax.Array:
  """Scalar bool: every element of every leaf is finite (traceable)."""
  leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def guard_step(old_state: dict, new_state: dict, loss, grads, skip: bool
               ) -> Tuple[dict, jax.Array]:
  """(state to keep, ok flag) inside the jitted step: with skip=True a step whose loss or
  gradients are not finite keeps the old parameters and optimizer state (the step counter
  still advances, so the data order and RNG stay those of an unskipped run)."""
  ok = jnp.isfinite(loss) & tree_finite(grads)
  if skip:
    keep = lambda new, old: jnp.where(ok, new, old)
    new_state = {**new_state,
                 "params": jax.tree.map(keep, new_state["params"], old_state["params"]),
                 "opt_state": jax.tree.map(keep, new_state["opt_state"],
                                           old_state["opt_state"])}
  return new_state, ok


def bad_term(values: dict) -> str:
  """The first non-finite loss term of one step's metrics ('' if all are finite)."""
  for term in TERMS:
    if term in values and not np.isfinite(values[term]):
      return term
  if "loss" in values and not np.isfinite(values["loss"]):
    return "loss"
  if not bool(values.get("finite", True)):
    return "gradient"
  return ""


class NonFiniteGuard:
  """Collects each step's metrics (device arrays) and checks them on `flush`."""

  def __init__(self, mode: str = "stop", max_skips: int = 0):
    self.mode = check_mode(mode)
    self.max_skips = int(max_skips)
    self.skipped: List[int] = []
    self._pending: List[Tuple[int, int, Any]] = []

  def observe(self, step: int, stage: int, metrics: Any) -> None:
    self._pending.append((step, stage, metrics))

  def flush(self) -> None:
    if not self._pending:
      return
    pending, self._pending = self._pending, []
    values = jax.device_get([m for _, _, m in pending])
    for (step, stage, _), v in zip(pending, values):
      term = bad_term(v)
      if not term:
        continue
      what = (f"step {step} (stage {stage}): the {term} " +
              ("gradient" if term == "gradient" else "loss") +
              " is not finite (" + ", ".join(
                  f"{t} {float(v[t])}" for t in ("loss",) + TERMS if t in v) + ")")
      if self.mode == "stop":
        raise NonFiniteError(f"{what}; training stopped (train.on_nonfinite='stop') and "
                             "nothing after the last checkpoint was saved. Lower "
                             "train.learning_rate, or set train.on_nonfinite='skip'")
      self.skipped.append(step)
      logging.warning("%s; batch skipped (train.on_nonfinite='skip', %d skipped so far)",
                      what, len(self.skipped))
      if len(self.skipped) > self.max_skips:
        raise NonFiniteError(f"{what}; {len(self.skipped)} batches skipped, more than "
                             f"train.max_nonfinite_skips={self.max_skips}: training stopped")


def check_finite(name: str, array: Any, what: str = "rows") -> None:
  """Raises NonFiniteError naming `name` and its first non-finite row."""
  arr = np.asarray(array)
  if arr.size == 0:
    return
  bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1) if arr.ndim else \
      ~np.isfinite(arr.reshape(1))
  if bad.any():
    raise NonFiniteError(f"{name}: {int(bad.sum())} of {len(bad)} {what} hold NaN or inf "
                         f"(first: {what[:-1] if what.endswith('s') else what} "
                         f"{int(np.flatnonzero(bad)[0])}); refusing to rank them")


def check_model_finite(model) -> None:
  """Evaluation's entry check: LINE's parameters are finite (a diverged run would otherwise
  rank every positive first: NaN scores compare false). Models without `params` pass."""
  params = getattr(model, "params", None)
  if params is None:
    return
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if not np.isfinite(np.asarray(leaf)).all():
      raise NonFiniteError(f"{getattr(model, 'workdir', '') or 'the model'}: parameter "
                           f"{jax.tree_util.keystr(path)} holds NaN or inf (a diverged "
                           "run?); refusing to evaluate it")


def finite_space(space):
  """The evaluation `Space` with every embedding it hands out checked for NaN/inf."""
  def checked(fn, what):
    def wrapped(*args):
      out = fn(*args)
      check_finite(f"{space.label}: {what} embeddings", out, "rows")
      return out
    return wrapped

  return dataclasses.replace(space, embed_texts=checked(space.embed_texts, "text"),
                             embed_concepts=checked(space.embed_concepts, "concept"))
