"""The fine-tune's training loop, checkpointed with orbax every `checkpoint_every` steps: a
killed run resumes at its last checkpoint and ends with the same weights as an
uninterrupted run (batches are a function of seed and step)."""

from __future__ import annotations

import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from line_jax.teachers import bert
from line_jax.teachers.finetune.batches import BatchPlan
from line_jax.teachers.finetune.pairs import FinetuneData
from line_jax.teachers.finetune.settings import FinetuneSettings
from line_jax.teachers.finetune.step import (make_optimizer, make_train_step, merge_params,
                                             split_params, stack_layers, unstack_layers)


def _checkpoints(work: str) -> ocp.CheckpointManager:
  """The two latest checkpoints of a fine-tune in `work`/checkpoints."""
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(work), "checkpoints"),
      options=ocp.CheckpointManagerOptions(
          preservation_policy=ocp.checkpoint_managers.LatestN(2),
          enable_async_checkpointing=False, create=True))


def _restore(mgr: ocp.CheckpointManager, trainable, opt_state, work: str):
  """(trainable, opt_state, first step): the latest checkpoint's, or the given ones at 0."""
  latest = mgr.latest_step()
  if latest is None:
    return trainable, opt_state, 0
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                        {"trainable": trainable, "opt_state": opt_state})
  restored = mgr.restore(latest, args=ocp.args.StandardRestore(target))
  logging.info("fine-tune: resuming at step %d from %s", int(latest), work)
  return restored["trainable"], restored["opt_state"], int(latest)


def _save(mgr: ocp.CheckpointManager, step: int, trainable, opt_state) -> None:
  if step in mgr.all_steps():
    mgr.delete(step)
  mgr.save(step, args=ocp.args.StandardSave({"trainable": trainable, "opt_state": opt_state}),
           force=True)
  mgr.wait_until_finished()


def _padding_fraction(plan: BatchPlan) -> float:
  return 1 - plan.real_tokens / max(plan.padded_tokens, 1)


def train(base_params, config: bert.BertConfig, tokenizer, data: FinetuneData,
          s: FinetuneSettings, pooling: str, work: str, progress_bar: bool = True,
          stop_after_steps: int = 0):
  """Runs (or resumes) the fine-tune in `work`; returns (tuned params, info)."""
  plan = BatchPlan(data, tokenizer, s, config.pad_token_id)
  logging.info("fine-tune batches: lengths %s, %d batches per epoch, %.0f%% padding",
               [int(x) for x in plan.shapes], plan.batches_per_epoch,
               100 * _padding_fraction(plan))
  trainable, frozen = split_params(stack_layers(base_params), s.train_embeddings,
                                   s.train_layers, pooling)
  optimizer = make_optimizer(s)
  trainable = jax.tree.map(jnp.asarray, trainable)
  frozen = jax.tree.map(jnp.asarray, frozen)
  mgr = _checkpoints(work)
  trainable, opt_state, start = _restore(mgr, trainable, optimizer.init(trainable), work)
  step_fn = make_train_step(config, pooling, s.temperature, optimizer)
  losses = []
  seen_pairs, done = 0, start
  t0 = time.time()
  with tqdm(total=s.steps * s.batch_size, initial=start * s.batch_size, unit="pairs",
            unit_scale=True, desc="fine-tune", disable=not progress_bar,
            dynamic_ncols=True) as bar:
    for step in range(start, s.steps):
      batch = plan.batch(step)
      trainable, opt_state, loss = step_fn(trainable, opt_state, frozen, batch)
      seen_pairs += int(batch["valid"].sum())
      bar.update(s.batch_size)
      if (step + 1) % 10 == 0 or step + 1 == s.steps:
        losses.append((step + 1, _finite_loss(loss, step + 1)))
        bar.set_postfix(loss=f"{losses[-1][1]:.3f}")
      done = step + 1
      if done % s.checkpoint_every == 0 or done == s.steps:
        _save(mgr, done, trainable, opt_state)
      if stop_after_steps and done >= stop_after_steps:
        break
  seconds = time.time() - t0
  info = {"steps": s.steps, "stopped": bool(stop_after_steps) and done < s.steps,
          "resumed_at": start, "pairs_trained_this_run": seen_pairs,
          "pairs_per_second": seen_pairs / max(seconds, 1e-9), "loss": losses,
          "batch_lengths": [int(x) for x in plan.shapes],
          "padding_fraction": _padding_fraction(plan)}
  logging.info("fine-tune: %d pairs in %.1fs (%.1f pairs/s)", seen_pairs, seconds,
               info["pairs_per_second"])
  tuned = unstack_layers(merge_params(jax.device_get(trainable), jax.device_get(frozen)))
  return tuned, info


def _finite_loss(loss, step: int) -> float:
  """The loss as a float; FloatingPointError naming the step when it is not finite."""
  value = float(loss)
  if not np.isfinite(value):
    raise FloatingPointError(f"fine-tune: loss {value} at step {step}; lower "
                             "finetune.learning_rate")
  return value
