"""Metric functions of the evaluation: ranks, AUC, classification scores, geometry, recovery.

Every function is a pure numpy function over arrays; none draws random numbers unless it
takes a `np.random.Generator`, so that a rerun with the same seed gives the same numbers.

Conventions:
  * Rank of a positive among its negatives (paper, Table 1): 1 + the number of negatives
    whose score is strictly greater than the positive's. A tie therefore counts in the
    positive's favour (the optimistic rank); with continuous cosines ties are rare.
  * AUC is the Mann-Whitney statistic with tied scores counted as one half, which equals
    `sklearn.metrics.roc_auc_score`.
  * Macro precision, recall and F1 average the per-class values over the classes present in
    either the truth or the predictions (sklearn's default), with 0 for an undefined ratio
    (sklearn's `zero_division=0`); macro F1 is the mean of the per-class F1 values.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from line_jax.search.terms import l2_normalize  # pylint: disable=unused-import (re-exported)

_EPS = 1e-12


# --------------------------------------------------------------------------------------
# Vectors and lists of concepts.
# --------------------------------------------------------------------------------------


def rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Cosine between row i of `a` and row i of `b`: [N, d], [N, d] -> [N]."""
  return np.sum(l2_normalize(a) * l2_normalize(b), axis=-1)


def segment_mean(rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
  """Mean of consecutive row segments: segment i is rows[offsets[i]:offsets[i+1]].

  Args:
    rows: [M, d] rows of every list, concatenated.
    offsets: [N + 1] nondecreasing, offsets[0] == 0, offsets[-1] == M.

  Returns:
    [N, d] float32 means; an empty segment gives a zero row.
  """
  rows = np.asarray(rows, dtype=np.float32)
  offsets = np.asarray(offsets, dtype=np.int64)
  lengths = np.diff(offsets)
  out = np.zeros((len(lengths), rows.shape[1]), np.float32)
  nonempty = lengths > 0
  if nonempty.any():
    sums = np.add.reduceat(rows, offsets[:-1][nonempty], axis=0, dtype=np.float64)
    out[nonempty] = (sums / lengths[nonempty, None]).astype(np.float32)
  return out


# --------------------------------------------------------------------------------------
# Alignment ranks (Table 1).
# --------------------------------------------------------------------------------------


def draw_negative_indices(num_queries: int, pool_size: int, num_negatives: int,
                          exclude: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """For each query, `num_negatives` distinct pool indices other than its own.

  Args:
    num_queries: Q.
    pool_size: n, the number of candidate texts.
    num_negatives: K <= n - 1 (callers cap it).
    exclude: [Q] the pool index of each query's own text.
    rng: the generator; rows are drawn in query order, so the draw is reproducible.

  Returns:
    [Q, K] int64, each row without repeats and without `exclude[q]`.
  """
  if num_negatives > pool_size - 1:
    raise ValueError(f"{num_negatives} negatives asked from a pool of {pool_size - 1}")
  out = np.empty((num_queries, num_negatives), np.int64)
  for q in range(num_queries):
    draw = rng.choice(pool_size - 1, size=num_negatives, replace=False)
    out[q] = draw + (draw >= exclude[q])   # skip the query's own slot
  return out


def ranks_against_negatives(positive_scores: np.ndarray,
                            negative_scores: np.ndarray) -> np.ndarray:
  """Rank of each positive among its negatives: 1 + #(negative > positive).

  Args:
    positive_scores: [N].
    negative_scores: [N, K].

  Returns:
    [N] int64 ranks in 1..K+1.
  """
  positive_scores = np.asarray(positive_scores)
  return 1 + np.sum(np.asarray(negative_scores) > positive_scores[:, None], axis=1)


def alignment_ranks(proxies: np.ndarray, pool_texts: np.ndarray, own_position: np.ndarray,
                    negative_idx: np.ndarray, max_block_bytes: int = 64 << 20) -> np.ndarray:
  """Rank of each pair's own text among its negatives, by cosine to the list's proxy.

  Only the K + 1 candidate texts of each query are scored (gathered in row blocks of at
  most `max_block_bytes`), so memory does not grow with the pool.

  Args:
    proxies: [N, d] concept-list embeddings of the evaluated pairs.
    pool_texts: [n, d] text embeddings of the candidate pool.
    own_position: [N] index of each pair's own text in the pool.
    negative_idx: [N, K] pool indices of its negatives.
    max_block_bytes: bound on one gathered [rows, K + 1, d] block.

  Returns:
    [N] ranks (1 = the own text beats every negative).
  """
  queries = l2_normalize(proxies)
  keys = l2_normalize(pool_texts)
  candidates = np.concatenate([np.asarray(own_position)[:, None], negative_idx], axis=1)
  rows = max(1, int(max_block_bytes // (4 * candidates.shape[1] * max(keys.shape[1], 1))))
  ranks = np.empty(len(queries), np.int64)
  for s in range(0, len(queries), rows):
    block = keys[candidates[s:s + rows]]                        # [r, K + 1, d]
    scores = np.einsum("rd,rkd->rk", queries[s:s + rows], block)
    ranks[s:s + rows] = ranks_against_negatives(scores[:, 0], scores[:, 1:])
  return ranks


def rank_summary(ranks: np.ndarray, top_k: int = 10) -> Dict[str, float]:
  """Mean rank, mean reciprocal ("reverse") rank and top-k accuracy of [N] ranks."""
  ranks = np.asarray(ranks, dtype=np.float64)
  if ranks.size == 0:
    return {"mean_rank": float("nan"), "mean_reciprocal_rank": float("nan"),
            f"top{top_k}_accuracy": float("nan")}
  return {"mean_rank": float(ranks.mean()),
          "mean_reciprocal_rank": float(np.mean(1.0 / ranks)),
          f"top{top_k}_accuracy": float(np.mean(ranks <= top_k))}


# --------------------------------------------------------------------------------------
# ROC and AUC (Table 2).
# --------------------------------------------------------------------------------------


def average_ranks(values: np.ndarray) -> np.ndarray:
  """1-based ranks of `values` in ascending order, ties given their average rank."""
  values = np.asarray(values)
  order = np.argsort(values, kind="mergesort")
  sorted_values = values[order]
  # Start of each run of equal values.
  starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
  ends = np.r_[starts[1:], len(values)]
  run_rank = (starts + ends + 1) / 2.0          # mean of 1-based positions start+1..end
  ranks_sorted = np.repeat(run_rank, ends - starts)
  ranks = np.empty(len(values), np.float64)
  ranks[order] = ranks_sorted
  return ranks


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Area under the ROC curve of `scores` for binary `labels` (1 = positive).

  Mann-Whitney U / (n_pos * n_neg) with tied scores counted one half. NaN when one class
  is empty.
  """
  scores = np.asarray(scores, dtype=np.float64)
  labels = np.asarray(labels).astype(bool)
  n_pos = int(labels.sum())
  n_neg = int(labels.size - n_pos)
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  rank_sum = average_ranks(scores)[labels].sum()
  u = rank_sum - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def roc_curve_points(scores: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """False- and true-positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
  scores = np.asarray(scores, dtype=np.float64)
  labels = np.asarray(labels).astype(bool)
  order = np.argsort(-scores, kind="mergesort")
  sorted_scores, sorted_labels = scores[order], labels[order]
  # Last index of each run of equal scores: the curve moves once per distinct threshold.
  run_ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
  tps = np.cumsum(sorted_labels)[run_ends]
  fps = (run_ends + 1) - tps
  n_pos, n_neg = max(int(labels.sum()), 1), max(int((~labels).sum()), 1)
  fpr = np.r_[0.0, fps / n_neg]
  tpr = np.r_[0.0, tps / n_pos]
  return fpr, tpr


# --------------------------------------------------------------------------------------
# Classification (Tables 4-5).
# --------------------------------------------------------------------------------------


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray) -> Dict[str, float]:
  """Macro precision, recall, F1 and accuracy of integer labels (see module docstring)."""
  y_true = np.asarray(y_true, dtype=np.int64)
  y_pred = np.asarray(y_pred, dtype=np.int64)
  classes = np.union1d(y_true, y_pred)
  if classes.size == 0:
    nan = float("nan")
    return {"precision": nan, "recall": nan, "f1": nan, "accuracy": nan}
  true_pos = np.array([np.sum((y_true == c) & (y_pred == c)) for c in classes], np.float64)
  predicted = np.array([np.sum(y_pred == c) for c in classes], np.float64)
  actual = np.array([np.sum(y_true == c) for c in classes], np.float64)
  precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
  recall = np.divide(true_pos, actual, out=np.zeros_like(true_pos), where=actual > 0)
  denom = precision + recall
  f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
  return {"precision": float(precision.mean()), "recall": float(recall.mean()),
          "f1": float(f1.mean()), "accuracy": float(np.mean(y_true == y_pred))}


def stratified_folds(labels: np.ndarray, num_folds: int,
                     rng: np.random.Generator) -> np.ndarray:
  """Fold index in [0, num_folds) of every example, each class spread evenly over folds.

  The members of each class are shuffled and dealt round-robin, continuing from where the
  previous class stopped, so fold sizes differ by at most one.
  """
  labels = np.asarray(labels)
  folds = np.empty(len(labels), np.int64)
  next_fold = 0
  for c in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == c))
    folds[members] = (next_fold + np.arange(len(members))) % num_folds
    next_fold = (next_fold + len(members)) % num_folds
  return folds


# --------------------------------------------------------------------------------------
# Embedding-space geometry (Wang & Isola; seed 003).
# --------------------------------------------------------------------------------------


def alignment_loss(x: np.ndarray, y: np.ndarray, alpha: float = 2.0) -> float:
  """Mean ||x_i - y_i||^alpha over positive pairs of L2-normalised rows (lower = aligned)."""
  diff = l2_normalize(x).astype(np.float64) - l2_normalize(y).astype(np.float64)
  return float(np.mean(np.linalg.norm(diff, axis=1) ** alpha))


def uniformity_loss(x: np.ndarray, t: float = 2.0, max_points: int = 0,
                    rng: Optional[np.random.Generator] = None) -> float:
  """log mean over distinct pairs i < j of exp(-t ||x_i - x_j||^2), rows L2-normalised.

  Lower means more uniform on the sphere. With `max_points` > 0 and more rows than that, a
  seeded subset of rows is used.
  """
  x = l2_normalize(x).astype(np.float64)
  if max_points and len(x) > max_points:
    if rng is None:
      raise ValueError("uniformity_loss needs rng to subsample")
    x = x[np.sort(rng.choice(len(x), size=max_points, replace=False))]
  n = len(x)
  if n < 2:
    return float("nan")
  gram = x @ x.T
  sq_dist = np.maximum(2.0 - 2.0 * gram[np.triu_indices(n, k=1)], 0.0)
  logits = -t * sq_dist
  peak = logits.max()
  return float(peak + np.log(np.mean(np.exp(logits - peak))))


# --------------------------------------------------------------------------------------
# Residual recovery (synthetic vignettes).
# --------------------------------------------------------------------------------------


def first_new_candidate(candidate_idx: np.ndarray, candidate_scores: np.ndarray,
                        list_offsets: np.ndarray,
                        list_flat: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """The best-scoring candidate of each query that is not already in its concept list.

  Args:
    candidate_idx: [Q, k] concept indices, best first.
    candidate_scores: [Q, k] their cosines.
    list_offsets: [Q + 1] offsets of each query's extracted list in `list_flat`.
    list_flat: the extracted concept indices (negated or not).

  Returns:
    ([Q] concept index or -1 when every candidate is already listed, [Q] its score or -inf).
  """
  q, k = candidate_idx.shape
  owner = np.repeat(np.arange(q), np.diff(list_offsets))
  num_concepts = int(max(candidate_idx.max(initial=0), list_flat.max(initial=0))) + 1
  listed_keys = np.unique(owner.astype(np.int64) * num_concepts + list_flat)
  cand_keys = np.arange(q, dtype=np.int64)[:, None] * num_concepts + candidate_idx
  is_new = ~np.isin(cand_keys, listed_keys)
  has_new = is_new.any(axis=1)
  first = np.argmax(is_new, axis=1)
  chosen = np.where(has_new, candidate_idx[np.arange(q), first], -1)
  score = np.where(has_new, candidate_scores[np.arange(q), first], -np.inf)
  return chosen.astype(np.int64), score.astype(np.float64)


def recovery_correctness(chosen: np.ndarray, list_offsets: np.ndarray, list_flat: np.ndarray,
                         true_offsets: np.ndarray,
                         true_flat: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Whether each chosen concept is a true concept missing from the list; missing counts.

  Returns:
    ([Q] bool: chosen is in the true list and not in the extracted one,
     [Q] int: number of true concepts absent from the extracted list).
  """
  q = len(chosen)
  num_concepts = int(max(chosen.max(initial=0), list_flat.max(initial=0),
                         true_flat.max(initial=0))) + 1
  list_keys = np.unique(np.repeat(np.arange(q), np.diff(list_offsets)).astype(np.int64)
                        * num_concepts + list_flat)
  true_owner = np.repeat(np.arange(q), np.diff(true_offsets)).astype(np.int64)
  true_keys = np.unique(true_owner * num_concepts + true_flat)
  missing_keys = true_keys[~np.isin(true_keys, list_keys)]
  missing_per_query = np.bincount(missing_keys // num_concepts, minlength=q)
  chosen_keys = np.arange(q, dtype=np.int64) * num_concepts + np.maximum(chosen, 0)
  correct = (chosen >= 0) & np.isin(chosen_keys, missing_keys)
  return correct, missing_per_query.astype(np.int64)


def recovery_curve(best_scores: np.ndarray, correct: np.ndarray, num_missing: int,
                   thresholds: Sequence[float]) -> Dict[str, list]:
  """Precision and recall of residual recovery at each cosine threshold.

  A query recovers its candidate when the score is >= the threshold. Precision =
  correct / recovered (NaN when nothing is recovered), recall = correct / num_missing.
  """
  best_scores = np.asarray(best_scores, dtype=np.float64)
  correct = np.asarray(correct, dtype=bool)
  out = {"threshold": [], "recovered": [], "correct": [], "precision": [], "recall": []}
  for tau in thresholds:
    taken = best_scores >= tau
    n_taken = int(taken.sum())
    n_correct = int((taken & correct).sum())
    out["threshold"].append(float(tau))
    out["recovered"].append(n_taken)
    out["correct"].append(n_correct)
    out["precision"].append(n_correct / n_taken if n_taken else float("nan"))
    out["recall"].append(n_correct / num_missing if num_missing else float("nan"))
  return out
