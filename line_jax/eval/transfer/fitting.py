"""Training of the list CNN with early stopping, every seed at once (the parameters carry a
leading seed axis and the jitted step is `vmap`ped over it), and its scores."""

from __future__ import annotations

import dataclasses
import functools
from typing import Dict, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from line_jax.eval import metrics
from line_jax.eval.transfer.cnn import (entry_functions, logits_fn, packed_logits,
                                        pooled_features)
from line_jax.eval.transfer.packing import pack_batches, packing_capacity
from line_jax.eval.transfer.settings import TransferConfig


@dataclasses.dataclass
class Problem:
  """What every fit of one embedding shares: the padded lists, labels and the table."""
  ids: jax.Array        # [N, L]
  mask: jax.Array       # [N, L]
  labels: jax.Array     # [N]
  table: jax.Array      # [U, d], or [1, 1] for one-hot inputs
  vocab_size: int       # U for one-hot inputs, else 0
  num_classes: int
  cfg: TransferConfig
  capacity: int = 0     # entries per packed batch; 0: from this problem's lists

  def host_lists(self) -> Tuple[np.ndarray, np.ndarray]:
    """(ids, mask) as numpy arrays, for packing batches on the host."""
    if not hasattr(self, "_host"):
      object.__setattr__(self, "_host", (np.asarray(self.ids), np.asarray(self.mask)))
    return self._host


def _optimizer(train_conv: bool) -> optax.GradientTransformation:
  """Adam's direction (the step multiplies it by -learning rate, a traced argument, so that
  one compilation serves every learning rate); linear-only: the conv gets none."""
  adam = optax.scale_by_adam()
  if train_conv:
    return adam
  return optax.multi_transform(
      {"train": adam, "frozen": optax.set_to_zero()},
      lambda params: {k: jax.tree.map(lambda _: "frozen" if k == "conv" else "train", v)
                      for k, v in params.items()})


def _weighted_cross_entropy(logits, y, w):
  """Mean cross-entropy of the rows, weighted by w (rows of weight 0 are padding)."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  return jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1e-12)


def _descend(params, opt_state, updates, new_state, w, learning_rate):
  """(params, optimizer state) after a step along -learning_rate x `updates`; unchanged
  for a batch whose weights are all zero (padding)."""
  new_params = jax.tree.map(lambda p, u: p - learning_rate * u, params, updates)
  active = jnp.sum(w) > 0
  keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
  return jax.tree.map(keep, new_params, params), jax.tree.map(keep, new_state, opt_state)


@functools.lru_cache(maxsize=32)
def _functions(num_classes: int, filters: int, vocab_size: int, train_conv: bool):
  """(optimizer, jitted step over every seed), cached per setting.

  The step takes parameters with a leading seed axis [S, ...] and one packed batch per seed
  (`pack_batches`); a batch whose weights are all zero (padding) leaves that seed's
  parameters and optimizer untouched. Shapes depend only on the batch size, the packing
  capacity and the list width, so one compilation serves every epoch and training set.
  """
  del num_classes, filters   # part of the cache key: the parameters' shapes
  optimizer = _optimizer(train_conv)

  def loss_fn(params, flat_ids, local_idx, local_mask, y, w, table):
    logits = packed_logits(params, flat_ids, local_idx, local_mask, table, vocab_size)
    return _weighted_cross_entropy(logits, y, w)

  def step(params, opt_state, rows, w, flat_ids, local_idx, local_mask, data_y, table,
           learning_rate):
    """One Adam step of one seed on its packed batch (rows of weight 0 are padding)."""
    loss, grads = jax.value_and_grad(loss_fn)(params, flat_ids, local_idx, local_mask,
                                              data_y[rows], w, table)
    updates, new_state = optimizer.update(grads, opt_state, params)
    return _descend(params, opt_state, updates, new_state, w, learning_rate) + (loss,)

  seeds_step = jax.vmap(step, in_axes=(0, 0, 0, 0, 0, 0, 0, None, None, None))
  return optimizer, jax.jit(seeds_step)


@jax.jit
def _keep_improved(improved, new, old):
  """Per seed: `new` where improved [S], else `old`."""
  return jax.tree.map(
      lambda n, o: jnp.where(improved.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old)


class _Best:
  """Early stopping over seeds: each seed's parameters at its lowest validation loss, and
  whether every seed has gone `patience` epochs without improving."""

  def __init__(self, params, loss: np.ndarray, patience: int):
    self.params, self.loss, self.patience = params, loss, patience
    self.epoch = np.zeros(len(loss), np.int64)
    self.since = np.zeros(len(loss), np.int64)

  def update(self, epoch: int, params, loss: np.ndarray) -> bool:
    improved = loss < self.loss
    self.loss = np.where(improved, loss, self.loss)
    self.epoch = np.where(improved, epoch, self.epoch)
    self.since = np.where(improved, 0, self.since + 1)
    self.params = _keep_improved(jnp.asarray(improved), params, self.params)
    return bool((self.since >= self.patience).all())


def _stack(index_sets: Sequence[np.ndarray], width: int) -> Tuple[np.ndarray, np.ndarray]:
  idx = np.zeros((len(index_sets), width), np.int32)
  w = np.zeros((len(index_sets), width), np.float32)
  for s, rows in enumerate(index_sets):
    idx[s, :len(rows)] = rows
    w[s, :len(rows)] = 1.0
  return idx, w


def logits_of(problem: Problem, params, index_sets: Sequence[np.ndarray]) -> List[np.ndarray]:
  """Logits of seed s's model on rows `index_sets[s]`, in static chunks.

  Large sets (more list slots than distinct entries, e.g. a target site's test part) first
  run the width-1 convolution once over the distinct entries and then pool each list from
  those features; small ones (the validation parts scored every epoch) run the padded
  `ListCNN` on their rows. Both compute the same function.
  """
  longest = max(len(r) for r in index_sets)
  # Small sets (validation parts, scored every epoch) get a small power-of-two chunk.
  chunk = min(problem.cfg.eval_chunk, max(32, 1 << int(np.ceil(np.log2(max(longest, 1))))))
  idx, _ = _stack(index_sets, max(1, int(np.ceil(longest / chunk))) * chunk)
  entries = problem.vocab_size or int(problem.table.shape[0])
  parts = []
  if longest * int(problem.ids.shape[1]) > entries:
    features_fn, pool_fn = entry_functions(problem.vocab_size)
    features = features_fn(params, problem.table)
    for s in range(0, idx.shape[1], chunk):
      parts.append(np.asarray(pool_fn(params, features, jnp.asarray(idx[:, s:s + chunk]),
                                      problem.ids, problem.mask)))
  else:
    fn = logits_fn(problem.num_classes, problem.cfg.filters, problem.vocab_size)
    for s in range(0, idx.shape[1], chunk):
      parts.append(np.asarray(fn(params, jnp.asarray(idx[:, s:s + chunk]), problem.ids,
                                 problem.mask, problem.table)))
  full = np.concatenate(parts, axis=1)
  return [full[s, :len(rows)] for s, rows in enumerate(index_sets)]


def _losses(problem: Problem, params, index_sets) -> np.ndarray:
  labels = np.asarray(problem.labels)
  out = []
  for logit, rows in zip(logits_of(problem, params, index_sets), index_sets):
    z = logit - logit.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    out.append(float(-log_p[np.arange(len(rows)), labels[rows]].mean()))
  return np.array(out)


def fit(problem: Problem, params, fit_sets: Sequence[np.ndarray],
        val_sets: Sequence[np.ndarray], learning_rate: float, train_conv: bool,
        max_epochs: int, rng: np.random.Generator):
  """Trains seed s on `fit_sets[s]`, keeping the parameters of its best validation loss.

  Stops when every seed has gone `patience` epochs without improving (or `max_epochs`).

  Returns:
    (best parameters [S, ...], epochs run, best epoch of each seed).
  """
  cfg = problem.cfg
  if not train_conv:
    return _fit_dense(problem, params, fit_sets, val_sets, learning_rate, max_epochs, rng)
  optimizer, step_fn = _functions(problem.num_classes, cfg.filters, problem.vocab_size,
                                  train_conv)
  ids, mask = problem.host_lists()
  # One capacity per problem (from all its lists), so that every fit of it, on either
  # site, shares one compiled step.
  capacity = problem.capacity or packing_capacity(mask.sum(axis=1), cfg.batch_size,
                                                  ids.shape[1])
  opt_state = jax.vmap(optimizer.init)(params)
  best = _Best(params, _losses(problem, params, val_sets), cfg.patience)
  epochs = 0
  lr = jnp.float32(learning_rate)
  for epochs in range(1, max_epochs + 1):
    packed = pack_batches(ids, mask, [rng.permutation(r) for r in fit_sets], cfg.batch_size,
                          capacity)
    for t in range(packed["rows"].shape[1]):
      params, opt_state, _ = step_fn(params, opt_state, *(packed[k][:, t] for k in (
          "rows", "w", "flat_ids", "local_idx", "local_mask")), problem.labels, problem.table,
                                     lr)
    if best.update(epochs, params, _losses(problem, params, val_sets)):
      break
  return best.params, epochs, best.epoch


@functools.lru_cache(maxsize=4)
def _dense_functions():
  """(jitted Adam step of the fully connected layer on pooled features, per-seed mean
  validation cross-entropy), both over seeds [S, ...]."""
  optimizer = optax.scale_by_adam()

  def loss_fn(dense, x, y, w):
    return _weighted_cross_entropy(x @ dense["kernel"] + dense["bias"], y, w)

  def step(dense, opt_state, pooled, rows, w, data_y, learning_rate):
    grads = jax.grad(loss_fn)(dense, pooled[rows], data_y[rows], w)
    updates, new_state = optimizer.update(grads, opt_state, dense)
    return _descend(dense, opt_state, updates, new_state, w, learning_rate)

  def losses(dense, pooled, rows, w, data_y):
    return jax.vmap(loss_fn)(dense, jax.vmap(lambda p, r: p[r])(pooled, rows), data_y[rows],
                             w)

  return (optimizer, jax.jit(jax.vmap(step, in_axes=(0, 0, 0, 0, 0, None, None))),
          jax.jit(losses))


def _fit_dense(problem: Problem, params, fit_sets, val_sets, learning_rate: float,
               max_epochs: int, rng: np.random.Generator):
  """`fit` with the convolution frozen (linear-only tuning): each list's pooled features
  are fixed, so they are computed once and only the fully connected layer trains on them,
  with the same Adam, batches, validation loss and early stopping."""
  cfg = problem.cfg
  features_fn, _ = entry_functions(problem.vocab_size)
  pooled = pooled_features(features_fn(params, problem.table), problem.ids, problem.mask)
  optimizer, step_fn, losses_fn = _dense_functions()
  dense = params["dense"]
  opt_state = jax.vmap(optimizer.init)(dense)
  batch = cfg.batch_size
  steps = max(1, int(np.ceil(max(len(r) for r in fit_sets) / batch)))
  val_idx, val_w = _stack(val_sets, max(len(r) for r in val_sets))

  def val_loss(d):   # the mean cross-entropy `_losses` computes through the whole model
    return np.asarray(losses_fn(d, pooled, val_idx, val_w, problem.labels))

  best = _Best(dense, val_loss(dense), cfg.patience)
  epochs = 0
  lr = jnp.float32(learning_rate)
  for epochs in range(1, max_epochs + 1):
    idx, w = _stack([rng.permutation(r) for r in fit_sets], steps * batch)
    idx, w = idx.reshape(len(fit_sets), steps, batch), w.reshape(len(fit_sets), steps, batch)
    for t in range(steps):
      dense, opt_state = step_fn(dense, opt_state, pooled, idx[:, t], w[:, t],
                                 problem.labels, lr)
    if best.update(epochs, dense, val_loss(dense)):
      break
  return {"conv": params["conv"], "dense": best.params}, epochs, best.epoch


def scores(problem: Problem, params, index_sets) -> List[Dict[str, float]]:
  labels = np.asarray(problem.labels)
  return [metrics.classification_scores(labels[rows], logit.argmax(axis=1))
          for logit, rows in zip(logits_of(problem, params, index_sets), index_sets)]
