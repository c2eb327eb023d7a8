"""Projecting whole dictionaries through G, and residual recovery (stage 1 -> stage 2).

Residual recovery (paper section 2.4): for each training pair, e_i = F(t_i) - mean(G(c_i));
the whole concept dictionary is projected through G (deterministic neighbours); the
dictionary concept with the highest cosine to e_i is added to the pair's list if that cosine
reaches `recovery.threshold` and it is not already in the list. The search is
`line_jax.search.search_topk` (batched matmul + lax.top_k, chunked, sharded over devices); we
take the `recovery.top_k` best so that candidates already in the list can be skipped.
`recovery.estimator` / `recovery.confidence` choose another scoring (the completion gain,
the margin over the runner-up: line_jax.eval.retrieval); that scoring, and the paper's where
dictionary entries group into terms (a synonym entry of a listed term is then no candidate),
runs on the host over terms, adding the term's own entry. Where the dataset has synthetic
validation pairs, their additions are checked against the true lists and logged
(`validation` in the returned info: how many pairs gained a concept, precision, recall).
The dictionary holds the positive concepts only: negated entries stand for an absence the
text states explicitly, which a residual of missed words should not be matched to.

Memory: G of the dictionary and of the negated entries is held on the host (their rows form
the residuals), the dictionary once more on the devices (the search); the pairs go through
in blocks of `recovery.pair_block`
(their text projections, residuals and candidates), so the paper's 7.2M pairs need no
[P, d] array at all.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from line_jax import embeddings as emb_lib
from line_jax import graph as graph_lib
from line_jax import host_memory
from line_jax import kernels
from line_jax import model as model_lib


@functools.partial(jax.jit, static_argnames=("num_receivers", "num_types", "slope",
                                             "normalize", "cpu_kernel", "kernel_threads"))
def _project_chunk(params, graph, concept_table, negated_table, *, num_receivers, num_types,
                   slope, normalize, cpu_kernel=False, kernel_threads=0):
  out = model_lib.graph_attention(params, graph, concept_table, negated_table, num_receivers,
                                  num_types, slope, cpu_kernel, kernel_threads)
  return model_lib.l2_normalize(out) if normalize else out


@functools.partial(jax.jit, static_argnames=("normalize",))
def _project_text_chunk(params, text, *, normalize):
  out = model_lib.project_text(params, text)
  return model_lib.l2_normalize(out) if normalize else out


def project_texts(params, text: np.ndarray, chunk: int, normalize: bool,
                  rows: Optional[np.ndarray] = None) -> np.ndarray:
  """F over the rows `rows` (default: all) of a (memmapped) text-embedding array, chunked
  and padded to one shape; a memmap is read chunk by chunk, never whole."""
  n = text.shape[0] if rows is None else len(rows)
  out = []
  for s in range(0, n, chunk):
    block = (np.asarray(text[s:s + chunk]) if rows is None
             else emb_lib.gather_rows(text, rows[s:s + chunk]))
    pad = chunk - len(block)
    if pad:
      block = np.concatenate([block, np.zeros((pad, block.shape[1]), block.dtype)])
    out.append(np.asarray(_project_text_chunk(params, block, normalize=normalize))[:chunk - pad])
  return np.concatenate(out) if out else np.zeros((0, params["text_proj"]["w"].shape[1]),
                                                  np.float32)


def project_concepts(params, table: graph_lib.NeighbourTable, concept_table, negated_table,
                     concepts: np.ndarray, negated: np.ndarray, fanout: int, chunk: int,
                     slope: float, normalize: bool, edge_block: int = 4,
                     cpu_kernel: bool = False, kernel_threads: int = 0) -> np.ndarray:
  """G of the given (concept, negated) entries with deterministic neighbours, chunked
  (cpu_kernel: G's edge attention on the fused CPU kernel, `kernels.use_kernel`)."""
  concepts = np.asarray(concepts, np.int64)
  negated = np.asarray(negated, bool)
  n = len(concepts)
  chunk = max(1, min(chunk, n))
  # Written in place: a list of chunks joined at the end held the dictionary twice.
  out = np.empty((n, params["concept_proj"]["w"].shape[1]), np.float32)
  for s in range(0, n, chunk):
    c = concepts[s:s + chunk]
    g = negated[s:s + chunk]
    real = len(c)
    if real < chunk:
      c = np.concatenate([c, np.zeros(chunk - real, np.int64)])
      g = np.concatenate([g, np.zeros(chunk - real, bool)])
    ids, mask = graph_lib.sample_neighbours(table, c, fanout, deterministic=True)
    # Edge capacity bucketed to a power of two (times the block): few shapes, few
    # compilations.
    blocks = -(-graph_lib.num_edges(mask, edge_block) // edge_block)
    capacity = edge_block << max(0, int(blocks - 1).bit_length())
    graph = graph_lib.build_graph(c.astype(np.int32), g, ids, mask, capacity, edge_block)
    res = _project_chunk(params, graph, concept_table, negated_table, num_receivers=chunk,
                         num_types=table.num_types, slope=slope, normalize=normalize,
                         cpu_kernel=cpu_kernel, kernel_threads=kernel_threads)
    out[s:s + real] = np.asarray(res)[:real]
  return out


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
            pair_idx: np.ndarray):
  """Runs residual recovery over `pair_idx`; returns (added [P] int32, info dict)."""
  # Dictionary-sized arrays, allocated once: returned to the system when freed rather than
  # kept for the train step's buffers (line_jax/host_memory.py).
  with host_memory.system_malloc():
    return _recover(params, lists, text, table, concept_table, negated_table, config,
                    pair_idx)


def _recover(params, lists, text, table, concept_table, negated_table, config, pair_idx):
  from line_jax import search as search_lib  # the sharded top-k search
  rc, gc = config.recovery, config.graph
  if int(rc.pair_block) < 1:
    raise ValueError(f"config.recovery.pair_block={rc.pair_block} must be >= 1")
  normalize = bool(config.loss.normalize)
  slope = float(config.model.leaky_relu_slope)
  dataset = lists.dataset
  logging.info("recovery: projecting %d dictionary concepts through G", dataset.num_concepts)
  kernel = (kernels.use_kernel(str(config.model.cpu_kernel), concept_table),
            int(config.model.cpu_kernel_threads))
  positive = project_concepts(params, table, concept_table, negated_table,
                              np.arange(dataset.num_concepts), np.zeros(dataset.num_concepts,
                                                                        bool),
                              gc.fanout, rc.dictionary_chunk, slope, normalize, gc.edge_block,
                              *kernel)
  neg_concepts = np.unique(dataset.concept_flat[dataset.negated_flat])
  neg_rows = project_concepts(params, table, concept_table, negated_table, neg_concepts,
                              np.ones(len(neg_concepts), bool), gc.fanout,
                              rc.dictionary_chunk, slope, normalize, gc.edge_block, *kernel)
  dictionary = search_lib.Dictionary(
      positive, min(int(rc.top_k), dataset.num_concepts), normalize=True,
      devices=jax.local_devices(),   # multi-host: every process recovers the same lists
      **search_lib.search_config_kwargs(config.search))
  estimator = str(rc.get("estimator", "residual"))
  confidence = str(rc.get("confidence", "score"))
  groups = term_groups(dataset)
  # The paper's search over dictionary entries, unless another estimator or confidence is
  # configured or entries group into terms (then a synonym entry of a listed term is no
  # candidate): the term-level scoring of line_jax.eval.retrieval, which evaluation reports.
  by_term = (estimator, confidence) != ("residual", "score") or (
      groups.num_groups < dataset.num_concepts)

  def block_additions(rows):
    text_proj = project_texts(params, text, rc.dictionary_chunk, normalize, rows=rows)
    padded = lists.padded(rows)
    residuals = pair_residuals(padded, text_proj, positive, neg_concepts, neg_rows)
    if not by_term:
      scores, candidates = dictionary.search(residuals)
      return choose_additions(scores, candidates, padded, float(rc.threshold)), scores[:, 0]
    return term_additions(text_proj, text_proj - residuals, padded, positive, groups,
                          estimator, confidence, float(rc.threshold))

  pair_idx = np.sort(pair_idx)
  added = np.full(dataset.num_pairs, -1, np.int32)
  best = np.zeros(len(pair_idx), np.float32)
  block = int(rc.pair_block)
  started = time.perf_counter()
  for first in range(0, len(pair_idx), block):
    rows = pair_idx[first:first + block]
    added[rows], best[first:first + len(rows)] = block_additions(rows)
    if len(pair_idx) > block:
      logging.info("recovery: %d/%d pairs searched, %.1f s", first + len(rows),
                   len(pair_idx), time.perf_counter() - started)
  gained = int((added >= 0).sum())
  info = dict(pairs=int(len(pair_idx)), gained=gained, threshold=float(rc.threshold),
              estimator=estimator, confidence=confidence, by_term=bool(by_term),
              mean_best_cosine=float(best.mean()) if len(best) else 0.0)
  logging.info("recovery: %d of %d pairs gained a concept (%s, %s >= %.4f, mean best %.3f)",
               gained, len(pair_idx), estimator, confidence, rc.threshold,
               info["mean_best_cosine"])
  check = validation_pairs(dataset)
  if len(check):
    check_added = np.concatenate([block_additions(check[s:s + block])[0]
                                  for s in range(0, len(check), block)])
    info["validation"] = addition_precision(dataset, check, check_added, groups)
    v = info["validation"]
    logging.info("recovery on the %d synthetic validation pairs: %d gained a concept, "
                 "precision %s against their true lists (%d of %d missing concepts)",
                 len(check), v["added"], "n/a" if v["precision"] is None else
                 f"{v['precision']:.3f}", v["correct"], v["missing"])
  return added, info


def term_groups(dataset):
  from line_jax.eval import retrieval  # pylint: disable=g-import-not-at-top
  return retrieval.dataset_groups(dataset)


def term_additions(text_proj: np.ndarray, proxies: np.ndarray, padded_lists, positive,
                   groups, estimator: str, confidence: str, threshold: float):
  """(added concept [P] or -1, confidence [P]): the best term not listed yet (in either
  polarity) by `estimator`, added as its representative entry when `confidence` of it
  reaches `threshold` (line_jax.eval.retrieval)."""
  from line_jax.eval import retrieval  # pylint: disable=g-import-not-at-top
  idx, _, real = padded_lists
  offsets = np.zeros(len(idx) + 1, np.int64)
  np.cumsum(real.sum(axis=1), out=offsets[1:])
  cand, best = retrieval.recovery_candidates(text_proj, proxies, offsets, idx[real], positive,
                                             estimator, groups, top_k=2)
  conf = retrieval.confidence_of(best, confidence)
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
