"""The fine-tune's model, loss and jitted step, as pure functions over the JAX BERT of
`line_jax.teachers.bert`, and the weight average of base and fine-tuned model.

The layers run under lax.scan (one layer body to compile). The embedding tables are frozen
unless `train_embeddings` (their dense gradient is a large part of a CPU step, and they are
shared with every word the training never saw); `train_layers` > 0 trains only the top
layers. The loss is symmetric InfoNCE with in-batch negatives at `temperature`; two strings
of the same term (or the same string twice) in one batch are not negatives.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from line_jax.teachers import bert
from line_jax.teachers.finetune.settings import FinetuneSettings

_FROZEN = ("word", "position", "token_type")   # embedding tables frozen unless trained


def split_params(params: Mapping, train_embeddings: bool, train_layers: int = 0,
                 pooling: str = "mean"):
  """(trainable, frozen) of params with stacked layers (`stack_layers`): the embedding tables
  are frozen unless train_embeddings; only the top `train_layers` layers train (0 = all);
  the pooler trains only with pooler pooling."""
  trainable, frozen = dict(params), {}
  if not train_embeddings:
    emb = dict(params["embeddings"])
    frozen["embeddings"] = {k: emb.pop(k) for k in _FROZEN}
    trainable["embeddings"] = emb
  n = jax.tree.leaves(params["layers"])[0].shape[0]
  if 0 < train_layers < n:
    frozen["layers"] = jax.tree.map(lambda x: x[:n - train_layers], params["layers"])
    trainable["layers"] = jax.tree.map(lambda x: x[n - train_layers:], params["layers"])
  if "pooler" in params and pooling != "pooler":
    frozen["pooler"] = trainable.pop("pooler")
  return trainable, frozen


def merge_params(trainable: Mapping, frozen: Mapping) -> dict:
  """The inverse of split_params."""
  params = dict(trainable)
  params["embeddings"] = {**trainable["embeddings"], **frozen.get("embeddings", {})}
  if "layers" in frozen:
    params["layers"] = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), frozen["layers"],
                                    trainable["layers"])
  if "pooler" in frozen:
    params["pooler"] = frozen["pooler"]
  return params


def info_nce(za: jax.Array, zb: jax.Array, valid: jax.Array, negative_ok: jax.Array,
             temperature: float) -> jax.Array:
  """Symmetric InfoNCE: row i's positive is column i; other valid columns allowed by
  `negative_ok` are negatives. za, zb [B, D] (cosine scores on unit vectors); returns the
  mean over valid rows of the two directions' cross-entropies."""
  logits = jnp.matmul(za, zb.T) / temperature
  allowed = negative_ok & valid[None, :] & valid[:, None]
  allowed = allowed | jnp.eye(za.shape[0], dtype=bool)
  logits = jnp.where(allowed, logits, -1e9)
  diag = jnp.diagonal(logits)
  a_to_b = jax.nn.logsumexp(logits, axis=1) - diag
  b_to_a = jax.nn.logsumexp(logits, axis=0) - diag
  per_row = 0.5 * (a_to_b + b_to_a)
  weights = valid.astype(per_row.dtype)
  return jnp.sum(per_row * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def stack_layers(params: Mapping) -> dict:
  """params["layers"] (a tuple of per-layer dicts) -> one dict of [num_layers, ...] arrays,
  so that the layers run under lax.scan: one layer body to compile, not num_layers."""
  return dict(params, layers=jax.tree.map(lambda *x: np.stack([np.asarray(v) for v in x]),
                                          *params["layers"]))


def unstack_layers(params: Mapping) -> dict:
  stacked = params["layers"]
  n = jax.tree.leaves(stacked)[0].shape[0]
  return dict(params, layers=tuple(jax.tree.map(lambda x: np.asarray(x[i]), stacked)
                                   for i in range(n)))


def _run_layers(hidden, stacked, key_mask, config):
  def layer(h, layer_params):
    return bert.encoder_layer(layer_params, h, key_mask, config), None
  return jax.lax.scan(layer, hidden, stacked)[0]


def embed_split(trainable, frozen, ids, mask, config: bert.BertConfig,
                pooling: str) -> jax.Array:
  """Pooled, L2-normalised embeddings (the loss compares directions) of split, stacked
  params: frozen layers first (no gradient flows through them), then the trained ones."""
  emb = {**trainable["embeddings"], **frozen.get("embeddings", {})}
  hidden = bert.embed_tokens({"embeddings": emb}, ids, config)
  key_mask = mask.astype(bool)
  if "layers" in frozen:
    hidden = _run_layers(hidden, frozen["layers"], key_mask, config)
  hidden = _run_layers(hidden, trainable["layers"], key_mask, config)
  return bert.pool({**frozen, **trainable}, hidden, mask, pooling, normalize=True)


def make_optimizer(s: FinetuneSettings) -> optax.GradientTransformation:
  warmup = min(s.warmup_steps, max(s.steps - 1, 0))
  schedule = optax.warmup_cosine_decay_schedule(0.0, s.learning_rate, max(warmup, 1),
                                                max(s.steps, warmup + 1), 0.0)
  return optax.adamw(schedule, weight_decay=s.weight_decay)


def make_train_step(config: bert.BertConfig, pooling: str, temperature: float,
                    optimizer: optax.GradientTransformation):
  """jit(step)(trainable, opt_state, frozen, batch) -> (trainable, opt_state, loss)."""

  def loss_fn(trainable, frozen, batch):
    z = embed_split(trainable, frozen, batch["ids"], batch["mask"], config, pooling)
    half = batch["valid"].shape[0]
    return info_nce(z[:half], z[half:], batch["valid"], batch["negative_ok"], temperature)

  def step(trainable, opt_state, frozen, batch):
    loss, grads = jax.value_and_grad(loss_fn)(trainable, frozen, batch)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1))


def average(base: Mapping, tuned: Mapping, alpha: float):
  """alpha * tuned + (1 - alpha) * base, leaf by leaf (float32 numpy)."""
  return jax.tree.map(lambda b, t: (alpha * np.asarray(t, np.float32)
                                    + (1.0 - alpha) * np.asarray(b, np.float32)), base, tuned)
