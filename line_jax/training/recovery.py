"""Residual recovery (stage 1 -> stage 2), paper section 2.4.

Recovery: for each training pair, e_i = F(t_i) - mean(G(c_i));
the whole concept dictionary is projected through G (`line_jax.model.projection`); the
dictionary concept with the highest cosine to e_i is added to the pair's list if that cosine
reaches `recovery.threshold` and it is not already in the list. The search is
`line_jax.search.topk.search_topk` (batched matmul + lax.top_k, chunked, sharded over devices); we
take the `recovery.top_k` best so that candidates already in the list can be skipped.
`recovery.estimator` / `recovery.confidence` choose another scoring (the completion gain,
the margin over the runner-up, the texts' unexplained clauses: line_jax.search.terms); that
scoring, and the paper's where dictionary entries group into terms (a synonym entry of a
listed term is then no candidate), runs on the host over terms, adding the term's own
entry. Estimator "segment" embeds every training text's clauses with teacher 1 (minutes on
a CPU: 151 s for 17,847 HPO pairs here). With `recovery.scorer.use` its candidates (the
best terms of every clause) are ranked by the recovery scorer (`line_jax.search.scorer`),
fitted first on the stage-1 space (`line_jax.training.scorer_fit`: vignettes, definitions
and dictionary entries of the training split), and a pair gains its most confident one when
that reaches `recovery.scorer.threshold`. Where the dataset has synthetic
validation pairs, their additions are checked against the true lists and logged
(`validation` in the returned info: how many pairs gained a concept, precision, recall).
The dictionary holds the positive concepts only: negated entries stand for an absence the
text states explicitly, which a residual of missed words should not be matched to.

Memory: G of the dictionary and of the negated entries is held on the host (their rows form
the residuals), the dictionary once more on the devices for the entry-level search; the
pairs go through in blocks of `recovery.pair_block` (their text projections, residuals and
candidates), so the paper's 7.2M pairs need no [P, d] array at all.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

import jax
import numpy as np

from line_jax.data import heldout_terms
from line_jax.util import host_memory
from line_jax.model import kernels
from line_jax.model import projection
from line_jax.search import topk as search_lib
from line_jax.util import segments
from line_jax.search import scorer as scorer_lib
from line_jax.search import terms
from line_jax.training import scorer_fit


def pair_residuals(padded_lists, text_proj: np.ndarray, positive: np.ndarray,
                   negated_concepts: np.ndarray, negated_rows: np.ndarray) -> np.ndarray:
  """e_i = F(t_i) - mean_j G(c_ij) for a block of pairs.

  Args:
    padded_lists: `PairLists.padded(pair_idx)` of the block: (concept [P, M], negated
      [P, M], real slot [P, M]).
    text_proj: [P, d] F(t_i) of those pairs.
    positive: [N, d] G of every dictionary concept.
    negated_concepts: [V] sorted concepts whose negated entry is projected in `negated_rows`
      (every concept that occurs negated in the lists).
    negated_rows: [V, d] G of those negated entries.
  """
  idx, neg, real = padded_lists
  total = np.zeros(text_proj.shape, np.float32)
  for j in range(idx.shape[1]):       # one [P, d] gather per list position, not [P, M, d]
    if not real[:, j].any():
      break
    rows = positive[idx[:, j]]
    negated_here = neg[:, j]
    if negated_here.any():
      rows[negated_here] = negated_rows[np.searchsorted(negated_concepts,
                                                        idx[negated_here, j])]
    rows[~real[:, j]] = 0.0
    total += rows
  return text_proj - total / real.sum(axis=1, keepdims=True)


def choose_additions(scores: np.ndarray, candidates: np.ndarray, padded_lists,
                     threshold: float) -> np.ndarray:
  """The best candidate per pair that reaches `threshold` and is not in its list yet, or -1.

  Args:
    scores: [P, k] cosines, best first per row.
    candidates: [P, k] dictionary indices.
    padded_lists: `PairLists.padded(pair_idx)` of the same pairs.
    threshold: the least cosine accepted.
  """
  idx, _, real = padded_lists
  listed = np.where(real, idx, -1)           # a negated concept's positive form counts too
  present = (candidates[:, :, None] == listed[:, None, :]).any(axis=2)
  accepted = (scores >= threshold) & ~present
  first = accepted.argmax(axis=1)
  return np.where(accepted.any(axis=1), candidates[np.arange(len(first)), first],
                  -1).astype(np.int32)


def recover(params, lists, text: np.ndarray, table, concept_table, negated_table, config,
            pair_idx: np.ndarray, embed_strings: Optional[Callable] = None):
  """Runs residual recovery over `pair_idx`; returns (added [P] int32, info dict).

  `embed_strings` (teacher 1 on new strings -> [n, d_t]) is what estimator "segment" needs:
  the texts' clauses are embedded, projected by F and matched (`terms.segment_candidates`)."""
  # Dictionary-sized arrays, allocated once: returned to the system when freed rather than
  # kept for the train step's buffers (line_jax/util/host_memory.py).
  with host_memory.system_malloc():
    return _recover(params, lists, text, table, concept_table, negated_table, config,
                    pair_idx, embed_strings)


def _recover(params, lists, text, table, concept_table, negated_table, config, pair_idx,
             embed_strings=None):
  """`recover` itself: the dictionary projected once, then the pairs block by block."""
  rc = config.recovery
  estimator = _checked_estimator(rc, embed_strings)
  r = _Recovery(params, lists, text, table, concept_table, negated_table, config, estimator,
                embed_strings)
  pair_idx = np.sort(pair_idx)
  added = np.full(r.dataset.num_pairs, -1, np.int32)
  best = np.zeros(len(pair_idx), np.float32)
  block = int(rc.pair_block)
  if estimator == "segment":    # a block's clauses are embedded at once: smaller blocks
    block = min(block, max(1, int(rc.get("segment_pair_block", 2048))))   # show progress
  held = heldout_terms.held_mask(r.dataset)     # never added (data.heldout_terms)
  started = time.perf_counter()
  for first in range(0, len(pair_idx), block):
    rows = pair_idx[first:first + block]
    proposed, best[first:first + len(rows)] = r.block_additions(rows)
    added[rows] = np.where(held[np.maximum(proposed, 0)], -1, proposed)
    if len(pair_idx) > block:
      logging.info("recovery: %d/%d pairs searched, %.1f s", first + len(rows),
                   len(pair_idx), time.perf_counter() - started)
  info = r.summary(pair_idx, added, best, started)
  r.validate(info, block)
  return added, info


def _checked_estimator(rc, embed_strings) -> str:
  """recovery.estimator, once the block size and the estimator's needs are checked."""
  if int(rc.pair_block) < 1:
    raise ValueError(f"config.recovery.pair_block={rc.pair_block} must be >= 1")
  estimator = str(rc.get("estimator", "residual"))
  if estimator == "segment" and embed_strings is None:
    raise ValueError("recovery.estimator='segment' embeds the texts' clauses: it needs a "
                     "teacher 1 that embeds new strings (kind 'hf' or 'finetuned')")
  return estimator


class _Recovery:
  """One recovery: the dictionary projected through G, how candidates are searched and
  scored, and the additions of a block of pairs."""

  def __init__(self, params, lists, text, table, concept_table, negated_table, config,
               estimator: str, embed_strings):
    """Projects the dictionary (and its negated entries), sets up the search and fits the
    recovery scorer when recovery.scorer.use is on."""
    self.params, self.lists, self.text, self.config = params, lists, text, config
    rc = self.rc = config.recovery
    self.estimator, self.embed_strings = estimator, embed_strings
    self.normalize = bool(config.loss.normalize)
    dataset = self.dataset = lists.dataset
    self.projected_at = time.perf_counter()
    self._project(table, concept_table, negated_table)
    self.confidence = str(rc.get("confidence", "score"))
    self.groups = terms.dataset_groups(dataset)
    # The paper's search over dictionary entries, unless another estimator or confidence is
    # configured or entries group into terms (then a synonym entry of a listed term is no
    # candidate): the term-level scoring of line_jax.search.terms, which evaluation reports.
    self.by_term = (estimator, self.confidence) != ("residual", "score") or (
        self.groups.num_groups < dataset.num_concepts)
    # The device copy of the dictionary serves the entry-level search alone.
    self.dictionary = None if self.by_term else search_lib.Dictionary(
        self.positive, min(int(rc.top_k), dataset.num_concepts), normalize=True,
        devices=jax.local_devices(),   # multi-host: every process recovers the same lists
        **search_lib.search_config_kwargs(config.search))
    self.skip_terms = terms.skip_terms_of(dataset, self.groups,
                                          rc.get("segment_skip_groups", ()))
    self.pattern = str(config.eval.get("segment_pattern", segments.DEFAULT_PATTERN) or "")
    self.scorer = self.term_info = self.scorer_info = None
    if "scorer" in rc and bool(rc.scorer.get("use", False)):
      self._fit_scorer()

  def _project(self, table, concept_table, negated_table) -> None:
    """G of every dictionary concept (`positive`) and of every negated entry the lists
    hold (`neg_rows`, of the sorted concepts `neg_concepts`)."""
    config, dataset = self.config, self.dataset
    logging.info("recovery: projecting %d dictionary concepts through G", dataset.num_concepts)
    settings = projection.ProjectionSettings.from_config(
        config, kernels.use_kernel(str(config.model.cpu_kernel), concept_table))
    self.positive = projection.project_concepts(self.params, table, concept_table,
                                                negated_table, np.arange(dataset.num_concepts),
                                                np.zeros(dataset.num_concepts, bool), settings)
    self.neg_concepts = np.unique(dataset.concept_flat[dataset.negated_flat])
    self.neg_rows = projection.project_concepts(self.params, table, concept_table,
                                                negated_table, self.neg_concepts,
                                                np.ones(len(self.neg_concepts), bool), settings)

  def _fit_scorer(self) -> None:
    """Fits the recovery scorer on the stage-1 space (`line_jax.training.scorer_fit`)."""
    rc, dataset = self.rc, self.dataset
    if self.estimator != "segment":
      raise ValueError("config.recovery.scorer.use scores the segment estimator's "
                       f"candidates: set recovery.estimator='segment' (not {self.estimator!r})")
    fit_started = time.perf_counter()
    self.scorer, fit_counts, self.term_info = scorer_fit.fit_scorer(
        dataset, self.embed_clauses,
        lambda rows: self.embed_clauses([str(dataset.names[r]) for r in rows]),
        self.positive, self.groups, self.config)
    self.scorer_info = dict(fit_counts, threshold=float(rc.scorer.threshold),
                            seconds=time.perf_counter() - fit_started)

  def embed_clauses(self, pieces):
    """F of teacher 1's embedding of each string of `pieces` ([n, d])."""
    return (projection.project_texts(self.params,
                                     np.asarray(self.embed_strings(pieces), np.float32),
                                     self.rc.dictionary_chunk, self.normalize)
            if pieces else np.zeros((0, self.positive.shape[1]), np.float32))

  def scored_additions(self, rows, pieces, emb, owner, offsets, listed):
    """The most confident candidate of each pair (`line_jax.search.scorer`), added when its
    confidence reaches recovery.scorer.threshold."""
    groups = self.groups
    cands = scorer_lib.clause_candidates(emb, owner, pieces, offsets, listed, self.positive,
                                         groups, self.term_info,
                                         **scorer_fit.candidate_settings(self.config))
    added = np.full(len(rows), -1, np.int64)
    conf = np.zeros(len(rows), np.float32)
    if len(cands):
      text, term, best, _ = scorer_lib.best_per_text(cands, self.scorer.predict(cands.features))
      first = np.r_[True, text[1:] != text[:-1]]
      text, term, best = text[first], term[first], best[first]
      conf[text] = best
      take = best >= float(self.rc.scorer.threshold)
      added[text[take]] = groups.representative[term[take]]
    return added.astype(np.int32), conf

  def segment_additions(self, rows):
    """Estimator "segment": the best term of the pairs' unexplained clauses."""
    rc, groups = self.rc, self.groups
    pieces, owner = segments.clause_table([str(self.dataset.texts[i]) for i in rows],
                                          self.pattern)
    emb = self.embed_clauses(pieces)
    idx, _, real = self.lists.padded(rows)
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(real.sum(axis=1), out=offsets[1:])
    if self.scorer is not None:
      return self.scored_additions(rows, pieces, emb, owner, offsets,
                                   groups.group_of[idx[real]])
    cand, best = terms.segment_candidates(emb, owner, len(rows), offsets, idx[real],
                                          self.positive, groups, 1,
                                          int(rc.get("segment_explained_k", 3)),
                                          self.skip_terms)
    take = (best[:, 0] >= float(rc.threshold)) & (cand[:, 0] >= 0)
    added = np.where(take, groups.representative[np.maximum(cand[:, 0], 0)], -1)
    return (added.astype(np.int32),
            np.where(np.isfinite(best[:, 0]), best[:, 0], 0.0).astype(np.float32))

  def block_additions(self, rows):
    """(added concept [P] or -1, confidence [P]) of the pairs `rows`."""
    rc = self.rc
    if self.estimator == "segment":
      return self.segment_additions(rows)
    text_proj = projection.project_texts(self.params, self.text, rc.dictionary_chunk,
                                         self.normalize, rows=rows)
    padded = self.lists.padded(rows)
    residuals = pair_residuals(padded, text_proj, self.positive, self.neg_concepts,
                               self.neg_rows)
    if not self.by_term:
      scores, candidates = self.dictionary.search(residuals)
      return choose_additions(scores, candidates, padded, float(rc.threshold)), scores[:, 0]
    return term_additions(text_proj, text_proj - residuals, padded, self.positive,
                          self.groups, self.estimator, self.confidence, float(rc.threshold))

  def summary(self, pair_idx, added, best, started: float) -> dict:
    """The info dict of the additions to `pair_idx` (also logged)."""
    rc, scorer = self.rc, self.scorer
    gained = int((added >= 0).sum())
    info = dict(pairs=int(len(pair_idx)), gained=gained, threshold=float(rc.threshold),
                estimator=self.estimator, confidence=self.confidence,
                by_term=bool(self.by_term),
                scorer=self.scorer_info if scorer is not None else None,
                mean_best_cosine=float(best.mean()) if len(best) else 0.0,
                # G of the dictionary (and its device copy), then the pairs' search.
                dictionary_s=started - self.projected_at,
                search_s=time.perf_counter() - started)
    logging.info("recovery: %d of %d pairs gained a concept (%s, %s >= %.4f, mean best %.3f)",
                 gained, len(pair_idx), self.estimator,
                 "scorer" if scorer is not None else self.confidence,
                 rc.scorer.threshold if scorer is not None else rc.threshold,
                 info["mean_best_cosine"])
    return info

  def validate(self, info: dict, block: int) -> None:
    """Where the dataset has synthetic validation pairs, their additions checked against
    the true lists (`info["validation"]`, also logged)."""
    check = validation_pairs(self.dataset)
    if len(check):
      check_added = np.concatenate([self.block_additions(check[s:s + block])[0]
                                    for s in range(0, len(check), block)])
      info["validation"] = addition_precision(self.dataset, check, check_added, self.groups)
      v = info["validation"]
      logging.info("recovery on the %d synthetic validation pairs: %d gained a concept, "
                   "precision %s against their true lists (%d of %d missing concepts)",
                   len(check), v["added"], "n/a" if v["precision"] is None else
                   f"{v['precision']:.3f}", v["correct"], v["missing"])


def term_additions(text_proj: np.ndarray, proxies: np.ndarray, padded_lists, positive,
                   groups, estimator: str, confidence: str, threshold: float):
  """(added concept [P] or -1, confidence [P]): the best term not listed yet (in either
  polarity) by `estimator`, added as its representative entry when `confidence` of it
  reaches `threshold` (line_jax.search.terms)."""
  idx, _, real = padded_lists
  offsets = np.zeros(len(idx) + 1, np.int64)
  np.cumsum(real.sum(axis=1), out=offsets[1:])
  cand, best = terms.recovery_candidates(text_proj, proxies, offsets, idx[real], positive,
                                         estimator, groups, top_k=2)
  conf = terms.confidence_of(best, confidence)
  take = (conf >= threshold) & (cand[:, 0] >= 0)
  added = np.where(take, groups.representative[np.maximum(cand[:, 0], 0)], -1)
  return added.astype(np.int32), np.where(np.isfinite(conf), conf, 0.0).astype(np.float32)


def validation_pairs(dataset) -> np.ndarray:
  """The synthetic validation pairs (true lists known), where additions are checked."""
  if dataset.synthetic is None or dataset.true_offsets is None:
    return np.zeros(0, np.int64)
  valid = dataset.split_indices("valid")
  return valid[np.asarray(dataset.synthetic, bool)[valid]]


def addition_precision(dataset, pair_idx: np.ndarray, added: np.ndarray, groups) -> dict:
  """How many of the additions to `pair_idx` are true terms their lists miss."""
  correct = missing = 0
  for p, a in zip(pair_idx, added):
    listed = set(groups.group_of[dataset.concept_flat[
        dataset.concept_offsets[p]:dataset.concept_offsets[p + 1]]].tolist())
    true = set(groups.group_of[dataset.true_flat[
        dataset.true_offsets[p]:dataset.true_offsets[p + 1]]].tolist()) - listed
    missing += len(true)
    correct += int(a >= 0 and groups.group_of[a] in true)
  n = int((added >= 0).sum())
  return dict(pairs=int(len(pair_idx)), added=n, correct=correct, missing=missing,
              precision=correct / n if n else None,      # None: strict JSON, no NaN
              recall=correct / missing if missing else None)
