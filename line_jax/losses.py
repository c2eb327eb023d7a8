"""LINE's losses: pure functions of projected embeddings and masks (jit-friendly).

Each returns (sum of terms, number of terms) so that a batch split over devices combines
into exactly the one-device mean: psum(sums) / psum(counts).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def squared_distances(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """[n, d], [m, d] -> [n, m] of ||a_i - b_j||^2 as |a|^2 + |b|^2 - 2ab (one matmul)."""
  sq = jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :] - 2.0 * a @ b.T
  return jnp.maximum(sq, 0.0)


def alignment_terms(concept_mean: jnp.ndarray, pair_mask: jnp.ndarray, rho: jnp.ndarray,
                    texts: jnp.ndarray, text_mask: jnp.ndarray, first_index: jnp.ndarray,
                    margin: float, per_anchor: bool = False):
  """rho-weighted triplet loss over in-batch negatives (paper section 2.4).

  score s(c, t) = -||t - mean(c)||^2. For local pair i (global batch position
  first_index + i) and every other valid text i' of the global batch:
    rho_i * max(0, margin - s(p_i) + s(n_{i,i'})).

  Args:
    concept_mean: [b, d] mean projected concept embedding of the local pairs.
    pair_mask: [b] which local pairs are real (the last batch is padded).
    rho: [b] alignment weights.
    texts: [B, d] projected texts of the whole (global) batch.
    text_mask: [B] which of them are real.
    first_index: global position of local pair 0.
    margin: triplet margin.
    per_anchor: count anchors (pairs) instead of (i, i') terms, i.e. sum over the negatives
      and average over the pairs, as the paper's double sum does within a pair.
  Returns:
    (sum of weighted hinge terms, number of (i, i') terms, or of pairs if per_anchor).
  """
  dist = squared_distances(concept_mean, texts)                          # [b, B]
  local = jnp.arange(concept_mean.shape[0]) + first_index
  positive = jnp.take_along_axis(dist, local[:, None], axis=1)           # [b, 1]
  valid = (pair_mask[:, None] & text_mask[None, :]
           & (jnp.arange(texts.shape[0])[None, :] != local[:, None]))
  hinge = jax.nn.relu(margin + positive - dist) * rho[:, None]
  count = jnp.sum(pair_mask) if per_anchor else jnp.sum(valid)
  return jnp.sum(jnp.where(valid, hinge, 0.0)), count.astype(jnp.float32)


def cosine(a: jnp.ndarray, b: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
  num = jnp.sum(a * b, axis=-1)
  den = jnp.sqrt(jnp.maximum(jnp.sum(a * a, -1) * jnp.sum(b * b, -1), eps * eps))
  return num / den


def relational_terms(head: jnp.ndarray, tail: jnp.ndarray, corrupted: jnp.ndarray,
                     mask: jnp.ndarray, margin: float):
  """Known edges vs corrupted edges: max(0, margin - cos(h, t) + cos(h, t')).

  A triplet (contrastive) loss over G's outputs, the same family as the alignment loss:
  known relations of the graph must stay closer than random pairs (paper section 2.4).
  """
  terms = jax.nn.relu(margin - cosine(head, tail) + cosine(head, corrupted))
  return jnp.sum(jnp.where(mask, terms, 0.0)), jnp.sum(mask).astype(jnp.float32)


def negation_terms(positive: jnp.ndarray, negated: jnp.ndarray, weight: jnp.ndarray,
                   delta: float):
  """-log sigmoid(delta - cos(c_pos, c_neg)) per (positive, negated) pair (paper A.1).

  `weight` counts the negated mentions of each pair's concept in the batch (0 for padding):
  every negated mention is one term, so the loss does not depend on how the batch is split.
  """
  weight = weight.astype(jnp.float32)
  terms = jax.nn.softplus(cosine(positive, negated) - delta)
  return jnp.sum(weight * terms), jnp.sum(weight)
