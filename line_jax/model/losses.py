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


def concept_contrastive_terms(texts: jnp.ndarray, concepts: jnp.ndarray,
                              concept_mask: jnp.ndarray, occ_slot: jnp.ndarray,
                              occ_mask: jnp.ndarray, temperature: float,
                              concept_group: jnp.ndarray | None = None,
                              segment_mask: jnp.ndarray | None = None,
                              pooling: str = "max", segment_temperature: float = 0.05):
  """Per-concept InfoNCE: each text against each concept of its own list, by cosine.

  For pair i and each listed (positive) concept p of it, with s_ik = cos(t_i, g_k) / tau:
    -log( exp(s_ip) / (exp(s_ip) + sum_{k not in list_i} exp(s_ik)) ).
  The candidates k are the device's in-batch concepts (`concepts`, one row per distinct
  concept); the other concepts of the same list are left out of the denominator (they are
  positives of that text too), so a list's concepts do not compete with each other. This
  puts every single concept near the texts that mention it, which the list-mean alignment
  loss alone does not ask for.

  Args:
    texts: [b, d] projected texts (any norm; compared by cosine).
    concepts: [U, d] G of the device's distinct in-batch concepts (any norm).
    concept_mask: [U] which rows are real.
    occ_slot: [b, M] row of `concepts` of each listed concept.
    occ_mask: [b, M] which entries are real positives (padding, negated mentions and
      padded pairs False).
    temperature: tau > 0.
    concept_group: optional [U] term of each row of `concepts` (a term and its synonym
      entries share one): a row of the same term as one of the text's positives is left out
      of the denominator too, as retrieval counts a term's entries as one answer.
    segment_mask: with texts [b, S, d], the segments of each text ([b, S] bool, segment 0
      the whole text): many vectors per text. A text's cosine to a concept is then its
      segments' best (`pooling` "max": late interaction, as retrieval by segment scores
      it; the positive is its best-matching segment), or their mean weighted by the
      softmax of cosine / `segment_temperature` ("softmax"); padded segments take no part.
  Returns:
    (sum of terms, number of (pair, listed concept) terms).
  """
  logits, in_list = _concept_logits(texts, concepts, occ_slot, occ_mask, temperature,
                                    concept_group, segment_mask, pooling, segment_temperature)
  u = concepts.shape[0]
  negative = concept_mask[None, :] & ~in_list
  # A finite floor rather than -inf: a text with no negative gets terms of ~0 and no NaN.
  neg_lse = jax.nn.logsumexp(jnp.where(negative, logits, -1e9), axis=1)  # [b]
  positive = jnp.take_along_axis(logits, jnp.clip(occ_slot, 0, u - 1), axis=1)   # [b, M]
  terms = jnp.logaddexp(positive, neg_lse[:, None]) - positive
  return jnp.sum(jnp.where(occ_mask, terms, 0.0)), jnp.sum(occ_mask).astype(jnp.float32)


def text_contrastive_terms(texts: jnp.ndarray, text_mask: jnp.ndarray,
                           concepts: jnp.ndarray, occ_slot: jnp.ndarray,
                           occ_mask: jnp.ndarray, temperature: float,
                           concept_group: jnp.ndarray | None = None):
  """The other direction of `concept_contrastive_terms`: each listed concept against the
  batch's texts that do not list it.

  For pair i and each listed concept p, with s_jp = cos(t_j, g_p) / tau:
    -log( exp(s_ip) / (exp(s_ip) + sum_{j: p not in list_j} exp(s_jp)) ).
  A concept that sits close to every text (a hub, which then tops the dictionary search for
  texts that do not mention it) pays for it here; the text -> concept direction alone
  never compares one concept's cosines across texts.

  Args: as `concept_contrastive_terms`, with text_mask [b]: which texts are real.
  Returns:
    (sum of terms, number of (pair, listed concept) terms).
  """
  logits, in_list = _concept_logits(texts, concepts, occ_slot, occ_mask, temperature,
                                    concept_group)
  u = concepts.shape[0]
  negative = text_mask[:, None] & ~in_list                               # [b, U]
  neg_lse = jax.nn.logsumexp(jnp.where(negative, logits, -1e9), axis=0)  # [U]
  slot = jnp.clip(occ_slot, 0, u - 1)
  positive = jnp.take_along_axis(logits, slot, axis=1)                   # [b, M]
  terms = jnp.logaddexp(positive, neg_lse[slot]) - positive
  return jnp.sum(jnp.where(occ_mask, terms, 0.0)), jnp.sum(occ_mask).astype(jnp.float32)


SEGMENT_POOLINGS = ("max", "softmax")


def pool_segments(cos: jnp.ndarray, segment_mask: jnp.ndarray, pooling: str,
                  temperature: float) -> jnp.ndarray:
  """[b, S, U] cosines of each text's segments -> [b, U]: the best real segment's ("max"),
  or the real segments' mean weighted by softmax(cos / temperature) ("softmax"). A text
  with no real segment gets -2 (below any cosine)."""
  mask = segment_mask[:, :, None]
  if pooling == "max":
    return jnp.max(jnp.where(mask, cos, -2.0), axis=1)
  if pooling == "softmax":
    weight = jax.nn.softmax(jnp.where(mask, cos / temperature, -1e9), axis=1)
    pooled = jnp.sum(jnp.where(mask, weight * cos, 0.0), axis=1)
    return jnp.where(jnp.any(mask, axis=1), pooled, -2.0)
  raise ValueError(f"segment pooling {pooling!r}: expected one of {SEGMENT_POOLINGS}")


def _concept_logits(texts, concepts, occ_slot, occ_mask, temperature, concept_group,
                    segment_mask=None, pooling="max", segment_temperature=0.05):
  """Cosines / tau of texts [b, d] (or [b, S, d] segments, pooled: `pool_segments`) x
  concepts [U, d], and which (text, concept) cells are a listed concept of that text (or,
  with concept_group, of a listed concept's term)."""
  b, u = texts.shape[0], concepts.shape[0]
  t = texts * jax.lax.rsqrt(jnp.maximum(jnp.sum(texts * texts, -1, keepdims=True), 1e-24))
  g = concepts * jax.lax.rsqrt(jnp.maximum(jnp.sum(concepts * concepts, -1, keepdims=True),
                                           1e-24))
  if segment_mask is None:
    logits = (t @ g.T) / temperature                                     # [b, U]
  else:
    cos = jnp.einsum("bsd,ud->bsu", t, g)                                # [b, S, U]
    logits = pool_segments(cos, segment_mask, pooling, segment_temperature) / temperature
  if concept_group is None:
    in_list = jnp.zeros((b, u), bool).at[jnp.arange(b)[:, None],
                                         jnp.where(occ_mask, occ_slot, u)].set(True,
                                                                               mode="drop")
  else:
    listed = concept_group[jnp.clip(occ_slot, 0, u - 1)]               # [b, M]
    in_list = jnp.any(occ_mask[:, :, None]
                      & (listed[:, :, None] == concept_group[None, None, :]), axis=1)
  return logits, in_list


def uniformity_terms(x: jnp.ndarray, mask: jnp.ndarray, t: float = 2.0):
  """Uniformity of the rows of x on the sphere (Wang and Isola, 2020):
    log mean_{i != j, both real} exp(-t ||x_i/|x_i| - x_j/|x_j|||^2).

  Lower is more spread out. Not a sum over terms, so it comes back as (value, 1) when at
  least two rows are real (else (0, 0)): over devices, the mean of the devices' values.
  """
  z = x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), 1e-24))
  sq = jnp.maximum(2.0 - 2.0 * z @ z.T, 0.0)
  n = x.shape[0]
  valid = mask[:, None] & mask[None, :] & ~jnp.eye(n, dtype=bool)
  count = jnp.sum(valid)
  lse = jax.nn.logsumexp(jnp.where(valid, -t * sq, -1e9))
  ok = count > 0
  value = jnp.where(ok, lse - jnp.log(jnp.maximum(count, 1).astype(jnp.float32)), 0.0)
  return value, ok.astype(jnp.float32)
