"""The list CNN: a width-1 convolution over a list's entries, ReLU, max pooling over the
list (padding masked out) and a fully connected layer. Padded (`ListCNN`), packed
(`packed_logits`) and per-entry (`entry_functions`) forms compute the same function."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def masked_max(h, mask):
  """Max over the list axis of entry features h [..., L, F] where mask [..., L] is True;
  0 for a list with no entry."""
  pooled = jnp.max(jnp.where(mask[..., None], h, -jnp.inf), axis=-2)
  return jnp.where(jnp.any(mask, axis=-1, keepdims=True), pooled, 0.0)


class EntryConv(nn.Module):
  """Width-1 convolution over the entries of a list.

  `vocab_size` > 0: one-hot inputs over that many entries (the kernel row of each id);
  else the rows `table[ids]` of a fixed embedding table.
  """
  features: int
  vocab_size: int = 0

  @nn.compact
  def __call__(self, ids, table):
    width = self.vocab_size or table.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (width, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    if self.vocab_size:
      return kernel[ids] + bias
    return table[ids] @ kernel + bias


class ListCNN(nn.Module):
  """Conv (width 1) -> ReLU -> masked max over the list -> fully connected."""
  num_classes: int
  filters: int = 100
  vocab_size: int = 0

  @nn.compact
  def __call__(self, ids, mask, table):
    h = nn.relu(EntryConv(self.filters, self.vocab_size, name="conv")(ids, table))
    return nn.Dense(self.num_classes, name="dense")(masked_max(h, mask))


@functools.lru_cache(maxsize=16)
def logits_fn(num_classes: int, filters: int, vocab_size: int):
  """Jitted logits of every seed's model [S, ...] on its rows idx [S, M]."""
  model = ListCNN(num_classes, filters, vocab_size)

  def logits(params, idx, data_ids, data_mask, table):
    return jax.vmap(lambda p, i: model.apply({"params": p}, data_ids[i], data_mask[i],
                                             table))(params, idx)
  return jax.jit(logits)


def packed_logits(params, flat_ids, local_idx, local_mask, table, vocab_size: int):
  """`ListCNN` on packed lists: the same function, computed without list padding.

  A batch's list entries sit back to back in `flat_ids` [C] (C a fixed capacity, the tail
  padding); `local_idx` [B, L] points each list slot at its entry there (`local_mask` marks
  the real slots). The width-1 convolution runs once per real entry instead of once per
  padded slot (the default's lists are 5.7 entries long on average and padded to 10), then
  each list gathers its entries' features for the masked max.
  """
  conv, dense = params["conv"], params["dense"]
  if vocab_size:   # a row lookup per slot costs no more than per entry, and needs no scatter
    h = nn.relu(conv["kernel"][flat_ids[local_idx]] + conv["bias"])     # [B, L, F]
  else:
    h = nn.relu(table[flat_ids] @ conv["kernel"] + conv["bias"])[local_idx]
  return masked_max(h, local_mask) @ dense["kernel"] + dense["bias"]


def init_cnn_params(num_classes: int, filters: int, vocab_size: int, table: np.ndarray,
                keys: jax.Array):
  """Parameters of one model per key in `keys` [S], stacked on a leading seed axis."""
  model = ListCNN(num_classes, filters, vocab_size)
  ids = jnp.zeros((1, 1), jnp.int32)
  mask = jnp.ones((1, 1), bool)
  return jax.vmap(lambda k: model.init(k, ids, mask, jnp.asarray(table))["params"])(keys)


@functools.lru_cache(maxsize=16)
def entry_functions(vocab_size: int):
  """Jitted (entry features [S, U, F] of every seed, logits [S, M, K] from them)."""

  def features(params, table):
    def one(p):
      conv = p["conv"]
      h = conv["kernel"] if vocab_size else table @ conv["kernel"]
      return nn.relu(h + conv["bias"])
    return jax.vmap(one)(params)

  def logits(params, features, idx, data_ids, data_mask):
    def one(p, h, i):
      pooled = masked_max(h[data_ids[i]], data_mask[i])
      return pooled @ p["dense"]["kernel"] + p["dense"]["bias"]
    return jax.vmap(one)(params, features, idx)

  return jax.jit(features), jax.jit(logits)


@jax.jit
def pooled_features(features, data_ids, data_mask):
  """[S, N, F] max-pooled list features of every row from entry features [S, U, F]."""
  return jax.vmap(lambda h: masked_max(h[data_ids], data_mask))(features)
