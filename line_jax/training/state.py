"""The train state, its optimiser and the progress record: what a checkpoint holds.

Built here once for the trainer (`line_jax.training.trainer`), the API's restore target
(`line_jax.api.line_model`) and the soup (`line_jax.soup`), so that the three agree on the tree.

A state is {"params", "opt_state", "step"} (plus "added", the recovered concept of each
pair, when it is checkpointed). The progress record says where a run stands:
{"stage", "epoch", "batch", "step", "seed", "recovered"}; stage 1 and 2 are the two
training stages and `STAGE_FINISHED` follows the last one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from line_jax.model import network as model_lib

STAGE_FINISHED = 3      # progress["stage"] once stage 2 is done: nothing is left to train


LR_SCHEDULES = ("constant", "cosine")


LR_BATCH_RULES = ("none", "sqrt", "linear")


def batch_scale(config: ml_collections.ConfigDict) -> float:
  """What train.learning_rate is multiplied by at train.batch_size B: (B / R)^p with R =
  train.lr_reference_batch and p = 1/2 for train.lr_batch_rule "sqrt", 1 for "linear", 0
  for "none". Measured on the HPO default at equal epochs (docs/benchmarks.md): with the
  alignment term scaled to the reference batch (loss.align_batch_reference), "sqrt" kept
  validation and real-text retrieval within noise of batch 128 up to 512 and within 0.01 at
  1024; "linear" lost 0.02-0.03 of real-text recall@10 at 1024."""
  tc = config.train
  rule = str(tc.get("lr_batch_rule", "none"))
  if rule not in LR_BATCH_RULES:
    raise ValueError(f"train.lr_batch_rule={rule!r}: expected one of {LR_BATCH_RULES}")
  reference = int(tc.get("lr_reference_batch", 128))
  if reference < 1:
    raise ValueError(f"train.lr_reference_batch={reference} must be >= 1")
  power = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}[rule]
  return (int(tc.batch_size) / reference) ** power


def learning_rate(config: ml_collections.ConfigDict, steps_per_epoch: int = 1):
  """train.learning_rate, or (train.lr_schedule="cosine") a schedule of the optimiser's
  step count: within each stage, half a cosine from the peak down to
  peak * train.lr_final_fraction, starting again at the peak when stage 2 starts (its
  recovered concepts are new targets). Stage lengths are epochs * steps_per_epoch.

  The schedule reads Adam's own step count, which a skipped non-finite step
  (train.on_nonfinite="skip") does not advance: after k skips the schedule runs k steps
  behind the trainer's step (k <= train.max_nonfinite_skips).

  Constant and cosine give optimiser states of different trees (optax keeps a step count for
  a schedule), so a run's checkpoints restore only under its own train.lr_schedule: the
  work-dir check (`line_jax.training.workdir.differences`) and `LineModel.load` use the run's."""
  tc = config.train
  kind = str(tc.get("lr_schedule", "constant"))
  if kind not in LR_SCHEDULES:
    raise ValueError(f"train.lr_schedule={kind!r}: expected one of {LR_SCHEDULES}")
  peak = float(tc.learning_rate) * batch_scale(config)
  if kind == "constant":
    return peak
  final = float(tc.get("lr_final_fraction", 0.0))
  if not 0.0 <= final <= 1.0:
    raise ValueError(f"train.lr_final_fraction={final} must be in [0, 1]")
  first = int(tc.stage1_epochs) * int(steps_per_epoch)
  second = int(tc.stage2_epochs) * int(steps_per_epoch)

  def schedule(count):
    count = jnp.asarray(count, jnp.float32)
    in_second = count >= first
    local = jnp.where(in_second, count - first, count)
    length = jnp.where(in_second, max(second, 1), max(first, 1))
    frac = jnp.clip(local / length, 0.0, 1.0)
    return peak * (final + (1.0 - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac)))

  return schedule


def make_optimizer(config: ml_collections.ConfigDict,
                   steps_per_epoch: int = 1) -> optax.GradientTransformation:
  """Adam (the paper's). The tree of its state does not depend on steps_per_epoch, so a
  restore target may be built with the default."""
  return optax.adam(learning_rate(config, steps_per_epoch))


def model_dim(config: ml_collections.ConfigDict, text_dim: int) -> int:
  """The joint space's dimension d: config.model.dim, or teacher 1's when it is 0."""
  return int(config.model.dim or text_dim)


def init_params_from_config(config: ml_collections.ConfigDict, text_dim: int,
                            concept_dim: int, num_relation_types: int, seed: int) -> dict:
  """LINE's parameters initialised from `seed` as the config's model section says."""
  return model_lib.init_params(jax.random.PRNGKey(seed), text_dim, concept_dim,
                               model_dim(config, text_dim), num_relation_types,
                               config.model.init, config.model.init_scale,
                               int(config.model.get("text_hidden", 0)),
                               int(config.model.get("concept_hidden", 0)))


def state_of(config: ml_collections.ConfigDict, params: dict) -> dict:
  """The train state of `params`: a fresh optimiser state, step 0."""
  return {"params": params, "opt_state": make_optimizer(config).init(params),
          "step": np.zeros((), np.int32)}


def init_state(config: ml_collections.ConfigDict, text_dim: int, concept_dim: int,
               num_relation_types: int, seed: int) -> dict:
  """A new run's train state (parameters initialised from `seed`)."""
  return state_of(config, init_params_from_config(config, text_dim, concept_dim,
                                                  num_relation_types, seed))


def abstract_state(config: ml_collections.ConfigDict, num_relation_types: int,
                   text_dim: int, concept_dim: int, num_pairs: int) -> dict:
  """A checkpointed state with the shapes and dtypes a run of `config` saves."""
  state = init_state(config, text_dim, concept_dim, num_relation_types, seed=0)
  state["added"] = np.zeros(num_pairs, np.int32)
  return state


def new_progress(seed: int) -> dict:
  """The progress record of a run that has not trained yet."""
  return {"stage": 1, "epoch": 0, "batch": 0, "step": 0, "seed": int(seed),
          "recovered": False}


def finished_progress(seed: int, **extra) -> dict:
  """The progress record of a state that is complete (`line_jax.train` leaves it as is)."""
  return {"stage": STAGE_FINISHED, "epoch": 0, "batch": 0, "step": 0, "seed": int(seed),
          "recovered": True, **extra}
