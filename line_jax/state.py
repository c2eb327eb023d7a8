"""The train state, its optimiser and the progress record: what a checkpoint holds.

Built here once for the trainer (`line_jax.trainer`), the API's restore target
(`line_jax.api`) and the soup (`line_jax.soup`), so that the three agree on the tree.

A state is {"params", "opt_state", "step"} (plus "added", the recovered concept of each
pair, when it is checkpointed). The progress record says where a run stands:
{"stage", "epoch", "batch", "step", "seed", "recovered"}; stage 1 and 2 are the two
training stages and `STAGE_FINISHED` follows the last one.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import optax

from line_jax import model as model_lib

STAGE_FINISHED = 3      # progress["stage"] once stage 2 is done: nothing is left to train


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return optax.adam(config.train.learning_rate)


def model_dim(config: ml_collections.ConfigDict, text_dim: int) -> int:
  """The joint space's dimension d: config.model.dim, or teacher 1's when it is 0."""
  return int(config.model.dim or text_dim)


def init_params(config: ml_collections.ConfigDict, text_dim: int, concept_dim: int,
                num_relation_types: int, seed: int) -> dict:
  return model_lib.init_params(jax.random.PRNGKey(seed), text_dim, concept_dim,
                               model_dim(config, text_dim), num_relation_types,
                               config.model.init, config.model.init_scale)


def state_of(config: ml_collections.ConfigDict, params: dict) -> dict:
  """The train state of `params`: a fresh optimiser state, step 0."""
  return {"params": params, "opt_state": make_optimizer(config).init(params),
          "step": np.zeros((), np.int32)}


def init_state(config: ml_collections.ConfigDict, text_dim: int, concept_dim: int,
               num_relation_types: int, seed: int) -> dict:
  """A new run's train state (parameters initialised from `seed`)."""
  return state_of(config, init_params(config, text_dim, concept_dim, num_relation_types,
                                      seed))


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
