r"""Dictionary entries grouped into the terms they name, and texts scored against terms.

Dictionary entries that name one term (a term and its synonym entries, `term_id` of
concepts.parquet) count as one candidate, scored by the best of them (`Groups`). Used both by
residual recovery in training (line_jax.training.recovery) and by the evaluation protocols
(line_jax.eval.retrieval, line_jax.eval.realtext).

Recovery estimators (`scores_for_recovery`), each scoring every dictionary term c for a text
t with list proxy p (mean of the list's rows) and list sum S = m p:
  residual         cos(t - p, g_c)                         (the paper's residual search)
  completion_gain  cos(t, S + g_c) - cos(t, S)             (how much c completes the list)
  nearest          cos(t, g_c)                             (the text's nearest unlisted term)
  segment          cos(F(clause), g_c) for the best term c of a clause that the list does
                   not explain (`segment_candidates`; needs the text's clauses embedded)
and a confidence per pair, on the best candidate not already listed (`confidence_of`):
  score            its score;
  margin           its score minus the runner-up's.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import pyarrow.parquet as pq

ESTIMATORS = ("residual", "completion_gain", "nearest", "segment")
CONFIDENCES = ("score", "margin")
_EPS = 1e-12


def l2_normalize(x: np.ndarray, eps: float = _EPS) -> np.ndarray:
  """Rows scaled to unit L2 norm (zero rows stay zero)."""
  x = np.asarray(x, dtype=np.float32)
  norms = np.linalg.norm(x, axis=-1, keepdims=True)
  return x / np.maximum(norms, eps)


@dataclasses.dataclass(frozen=True)
class Groups:
  """Dictionary entries [C] grouped into terms [G].

  Attributes:
    group_of: [C] the group of each entry.
    order: [C] entries sorted by group (stable).
    starts: [G] position in `order` where each group starts.
    representative: [G] the entry standing for the group (the one whose id is the term's,
      else its first entry).
  """
  group_of: np.ndarray
  order: np.ndarray
  starts: np.ndarray
  representative: np.ndarray

  @property
  def num_groups(self) -> int:
    return len(self.starts)

  @classmethod
  def identity(cls, num_concepts: int) -> "Groups":
    a = np.arange(num_concepts, dtype=np.int64)
    return cls(a, a, a, a)

  @classmethod
  def from_ids(cls, concept_ids: Sequence[str], term_ids: Sequence[str]) -> "Groups":
    concept_ids = np.asarray(concept_ids, dtype=object)
    names, group_of = np.unique(np.asarray(term_ids, dtype=object).astype(str),
                                return_inverse=True)
    group_of = group_of.astype(np.int64)
    order = np.argsort(group_of, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group_of[order]) != 0])
    representative = order[starts].copy()
    own = np.flatnonzero(concept_ids.astype(str) == np.asarray(names)[group_of])
    representative[group_of[own]] = own
    return cls(group_of, order, starts, representative)

  def collapse(self, scores: np.ndarray) -> np.ndarray:
    """[b, C] entry scores -> [b, G] the best entry of each group."""
    if len(self.order) == len(self.starts):      # one entry per group
      return scores[:, self.order] if not _is_identity(self.order) else scores
    return np.maximum.reduceat(scores[:, self.order], self.starts, axis=1)


def _is_identity(order: np.ndarray) -> bool:
  return bool(np.all(order == np.arange(len(order))))


def term_id_column(dataset) -> Optional[list]:
  """concepts.parquet's `term_id` of every entry, or None where the file has no such column
  or it misses a row's value (then every entry is its own term)."""
  path = os.path.join(str(dataset.root), "concepts.parquet")
  term_ids = None
  if os.path.exists(path):
    if "term_id" in pq.read_schema(path).names:
      term_ids = pq.read_table(path, columns=["term_id"]).column("term_id").to_pylist()
  if term_ids is None or len(term_ids) != dataset.num_concepts or any(
      t is None for t in term_ids):
    return None
  return term_ids


def dataset_groups(dataset) -> Groups:
  """Groups from concepts.parquet's `term_id` column when it has one, else one per entry."""
  term_ids = term_id_column(dataset)
  if term_ids is None:
    return Groups.identity(dataset.num_concepts)
  return Groups.from_ids(dataset.concept_ids, term_ids)


def _blocks(n: int, chunk: int):
  for s in range(0, n, chunk):
    yield s, min(n, s + chunk)


def retrieval_ranks(texts: np.ndarray, keys: np.ndarray, owner: np.ndarray,
                    target: np.ndarray, groups: Optional[Groups] = None,
                    chunk: int = 256, text_owner: Optional[np.ndarray] = None
                    ) -> np.ndarray:
  """Rank of each target term among all terms by cosine to its text (1 = first).

  Args:
    texts: [N, d] text embeddings.
    keys: [C, d] dictionary embeddings (every entry).
    owner: [M] the text row of each query.
    target: [M] the target group (term) of each query.
    groups: entries -> terms (default: one term per entry).
    chunk: texts scored per block.
    text_owner: optional [N] non-decreasing: the rows of `texts` are segments of texts
      0..text_owner[-1] (`line_jax.util.segments`), every text with at least one; a text scores
      each entry by the best cosine of its segments, and `owner` indexes texts.

  Returns:
    [M] int64 ranks: 1 + the number of terms scoring strictly higher than the target.
  """
  groups = groups or Groups.identity(len(keys))
  owner = np.asarray(owner, np.int64)
  target = np.asarray(target, np.int64)
  q = l2_normalize(np.asarray(texts, np.float32))
  k = l2_normalize(np.asarray(keys, np.float32))
  ranks = np.zeros(len(owner), np.int64)
  by_owner = np.argsort(owner, kind="stable")
  sorted_owner = owner[by_owner]
  if text_owner is not None:
    text_owner = np.asarray(text_owner, np.int64)
    if len(text_owner) != len(q) or (len(q) and (
        np.any(np.diff(text_owner) < 0) or text_owner[0] != 0
        or len(np.unique(text_owner)) != text_owner[-1] + 1)):
      raise ValueError("text_owner must give each of the N text rows a text index, "
                       "non-decreasing from 0, every text with at least one segment")
  num_texts = len(q) if text_owner is None else (int(text_owner[-1]) + 1 if len(q) else 0)
  for s, e in _blocks(num_texts, chunk):
    lo, hi = np.searchsorted(sorted_owner, [s, e])
    if lo == hi:
      continue
    sel = by_owner[lo:hi]
    if text_owner is None:
      raw = q[s:e] @ k.T
    else:                                  # best segment of each text, per entry
      first = np.searchsorted(text_owner, np.arange(s, e + 1))
      raw = np.maximum.reduceat(q[first[0]:first[-1]] @ k.T, first[:-1] - first[0], axis=0)
    scores = groups.collapse(raw)                               # [b, G]
    rows = owner[sel] - s
    own = scores[rows, target[sel]]
    ranks[sel] = 1 + (scores[rows] > own[:, None]).sum(axis=1)
  return ranks


def retrieval_summary(ranks: np.ndarray, ks: Sequence[int] = (1, 10)) -> Dict[str, float]:
  ranks = np.asarray(ranks, np.float64)
  out = {"count": int(len(ranks))}
  for k in ks:
    out[f"recall@{k}"] = float(np.mean(ranks <= k)) if len(ranks) else float("nan")
  out["mrr"] = float(np.mean(1.0 / ranks)) if len(ranks) else float("nan")
  return out


def listed_targets(offsets: np.ndarray, flat: np.ndarray, negated: np.ndarray,
                   groups: Groups) -> Tuple[np.ndarray, np.ndarray]:
  """(owner row, target term) of each distinct non-negated listed term of each list."""
  owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
  keep = ~np.asarray(negated, bool)
  pairs = np.unique(np.stack([owner[keep], groups.group_of[np.asarray(flat)[keep]]], 1)
                    .reshape(-1, 2), axis=0)
  return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


def scores_for_recovery(texts: np.ndarray, proxies: np.ndarray, list_sizes: np.ndarray,
                        keys: np.ndarray, estimator: str) -> np.ndarray:
  """[b, C] score of every dictionary entry as the concept a list misses (module doc)."""
  texts = np.asarray(texts, np.float32)
  proxies = np.asarray(proxies, np.float32)
  keys = np.asarray(keys, np.float32)
  if estimator == "residual":
    return l2_normalize(texts - proxies) @ l2_normalize(keys).T
  if estimator == "nearest":
    return l2_normalize(texts) @ l2_normalize(keys).T
  if estimator == "completion_gain":
    total = proxies * np.asarray(list_sizes, np.float32)[:, None]        # S
    t = l2_normalize(texts)
    ts = np.sum(t * total, axis=1, keepdims=True)                         # t . S
    ss = np.sum(total * total, axis=1, keepdims=True)                     # |S|^2
    tg = t @ keys.T                                                       # t . g_c
    sg = total @ keys.T                                                   # S . g_c
    gg = np.sum(keys * keys, axis=1)[None, :]                             # |g_c|^2
    with_c = (ts + tg) / np.sqrt(np.maximum(ss + 2 * sg + gg, 1e-12))
    return with_c - ts / np.sqrt(np.maximum(ss, 1e-12))
  raise ValueError(f"recovery estimator {estimator!r}: expected one of {ESTIMATORS}")


def recovery_candidates(texts: np.ndarray, proxies: np.ndarray, list_offsets: np.ndarray,
                        list_flat: np.ndarray, keys: np.ndarray, estimator: str,
                        groups: Optional[Groups] = None, top_k: int = 10,
                        chunk: int = 256) -> Tuple[np.ndarray, np.ndarray]:
  """The best `top_k` terms per pair that its list does not hold yet, best first.

  Args:
    texts, proxies: [N, d] text embeddings and list proxies (mean of the list's rows).
    list_offsets, list_flat: the lists (entry indices, negated ones included: a term listed
      in either polarity is never a candidate).
    keys: [C, d] the dictionary.
    estimator: one of ESTIMATORS.
    groups: entries -> terms.

  Returns:
    ([N, k] term indices, [N, k] their scores; -1 / -inf where fewer terms remain).
  """
  groups = groups or Groups.identity(len(keys))
  list_offsets = np.asarray(list_offsets, np.int64)
  sizes = np.diff(list_offsets)
  listed_group = groups.group_of[np.asarray(list_flat, np.int64)]
  owner = np.repeat(np.arange(len(sizes)), sizes)
  k = min(top_k, groups.num_groups)
  cand = np.full((len(texts), top_k), -1, np.int64)
  best = np.full((len(texts), top_k), -np.inf, np.float64)
  for s, e in _blocks(len(texts), chunk):
    scores = groups.collapse(scores_for_recovery(texts[s:e], proxies[s:e], sizes[s:e], keys,
                                                 estimator)).astype(np.float64)
    here = (owner >= s) & (owner < e)
    scores[owner[here] - s, listed_group[here]] = -np.inf
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    cand[s:e, :k] = np.take_along_axis(part, order, axis=1)
    best[s:e, :k] = np.take_along_axis(part_scores, order, axis=1)
  cand[~np.isfinite(best)] = -1
  return cand, best


def segment_candidates(segments: np.ndarray, segment_owner: np.ndarray, num_texts: int,
                       list_offsets: np.ndarray, list_flat: np.ndarray, keys: np.ndarray,
                       groups: Optional[Groups] = None, top_k: int = 10,
                       explained_k: int = 3, skip_terms: Optional[np.ndarray] = None,
                       chunk: int = 256) -> Tuple[np.ndarray, np.ndarray]:
  """The "segment" estimator: concepts named by a clause that the list does not explain.

  Each clause of a text (`line_jax.util.segments`; not the whole text) is scored against every
  term by cosine. A clause is explained when one of its `explained_k` best terms is listed
  (either polarity; equal cosines are ordered arbitrarily) or its best term is in
  `skip_terms` (terms recovery never adds, e.g. modifiers such as "Mild"); every other
  clause proposes its best term, with that cosine.
  A text's candidates are its clauses' proposals, best first (a term proposed twice keeps
  its best cosine).

  Args:
    segments: [P, d] clause embeddings; segment_owner: [P] their text (any order).
    num_texts: N.
    list_offsets, list_flat: the N lists (entry indices).
    keys: [C, d] the dictionary.
    groups: entries -> terms.
    top_k: candidates kept per text.
    explained_k: a clause with a listed term among its this many best is explained.
    skip_terms: optional term indices never proposed (their clause counts as explained).
    chunk: clauses scored per block.

  Returns:
    ([N, top_k] term indices, [N, top_k] cosines; -1 / -inf where fewer were proposed), as
    `recovery_candidates`.
  """
  groups = groups or Groups.identity(len(keys))
  segment_owner = np.asarray(segment_owner, np.int64)
  list_offsets = np.asarray(list_offsets, np.int64)
  listed = groups.group_of[np.asarray(list_flat, np.int64)]
  cand = np.full((num_texts, top_k), -1, np.int64)
  best = np.full((num_texts, top_k), -np.inf, np.float64)
  if not len(segment_owner) or top_k < 1:
    return cand, best
  skip = np.zeros(groups.num_groups, bool)
  if skip_terms is not None:
    skip[np.asarray(skip_terms, np.int64)] = True
  q = l2_normalize(np.asarray(segments, np.float32))
  k_unit = l2_normalize(np.asarray(keys, np.float32))
  n_best = max(1, min(explained_k, groups.num_groups))
  proposals = {}
  for s, e in _blocks(len(q), chunk):
    scores = groups.collapse(q[s:e] @ k_unit.T)                  # [b, G]
    top = np.argpartition(-scores, n_best - 1, axis=1)[:, :n_best]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1), 1)
    for row in range(e - s):
      text = int(segment_owner[s + row])
      mine = listed[list_offsets[text]:list_offsets[text + 1]]
      first = int(top[row, 0])
      if skip[first] or np.isin(top[row], mine).any():
        continue
      score = float(scores[row, first])
      props = proposals.setdefault(text, {})
      props[first] = max(props.get(first, -np.inf), score)
  for text, props in proposals.items():
    ranked = sorted(props.items(), key=lambda item: (-item[1], item[0]))[:top_k]
    cand[text, :len(ranked)] = [t for t, _ in ranked]
    best[text, :len(ranked)] = [v for _, v in ranked]
  return cand, best


def skip_terms_of(dataset, groups: Groups, skip_groups: Sequence[str]) -> np.ndarray:
  """Terms with an entry whose concept group (concepts.parquet `group`) is in `skip_groups`
  (config.recovery.segment_skip_groups)."""
  if not skip_groups or getattr(dataset, "groups", None) is None:
    return np.zeros(0, np.int64)
  return np.unique(groups.group_of[np.isin(dataset.groups, [str(g) for g in skip_groups])])


def confidence_of(best: np.ndarray, confidence: str) -> np.ndarray:
  """[N] confidence in each pair's first candidate ("score" or "margin", module doc)."""
  if confidence == "score":
    return best[:, 0]
  if confidence == "margin":
    runner_up = best[:, 1] if best.shape[1] > 1 else np.full(len(best), -np.inf)
    with np.errstate(invalid="ignore"):       # -inf - -inf where no candidate: not taken
      return np.where(np.isfinite(runner_up), best[:, 0] - runner_up, best[:, 0])
  raise ValueError(f"confidence {confidence!r}: expected one of {CONFIDENCES}")
