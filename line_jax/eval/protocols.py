"""The paper's protocols for a trained LINE model (sections 3.2, 3.3.1, 3.3.3, A.4).

`line_jax.eval.runner.run_evaluation(model, workdir)` runs them and writes the report.

Protocols, on the pairs of `config.eval.split`:
  1. Alignment (Table 1, A2): rank of each (concept list, text) pair among the same list
     scored against `num_negatives` other texts of the split; teacher 1 alone, teacher 2
     alone, LINE and the two least-squares maps between the teachers.
  2. Relation detection (Table 2): per held-out relation class, AUC of the cosine of related
     pairs against group-matched random pairs; teachers vs LINE's G.
  3. Cross-form proxy (Tables 4, 5, A3): a cross-validated linear probe of the pair's label
     on the text embedding and, separately, on the concept-list proxy embedding.
  4. Residual recovery on the synthetic pairs: precision and recall against the true lists
     as a function of the cosine threshold.
  5. Alignment and uniformity of each space.

Every random draw comes from `np.random.default_rng([config.eval.seed, <protocol code>])`, so
that the protocols are reproducible and independent of one another.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from line_jax.search import topk as search
from line_jax.eval import classifier as probe_lib
from line_jax.eval import metrics
from line_jax.eval import settings as settings_lib
from line_jax.eval.settings import EvalSettings
from line_jax.eval.spaces import Space, list_slices, true_slices


# --------------------------------------------------------------------------------------
# 1. Alignment ranks (Table 1).
# --------------------------------------------------------------------------------------


def alignment_protocol(dataset, pair_idx: np.ndarray, spaces, settings, notes: List[str]):
  """Table 1: each pair's list proxy ranks its own text among `settings.num_negatives`
  other texts of the evaluated pairs, the same negatives for every space. Returns (the
  result dict, {space label: ranks}, the number of negatives)."""
  pool_size = len(pair_idx)
  num_negatives = min(settings.num_negatives, pool_size - 1)
  used_all = pool_size - 1 <= settings.num_negatives
  if used_all:
    notes.append(f"{pool_size - 1} other texts per pair among the evaluated pairs, not more "
                 f"than {settings.num_negatives}: every other text is a negative.")
  own_position = np.arange(pool_size)
  negative_idx = metrics.draw_negative_indices(pool_size, pool_size, num_negatives,
                                               own_position,
                                               settings_lib.rng(settings,
                                                                settings_lib.RNG_NEGATIVES))
  alignment = {"num_negatives": int(num_negatives), "requested_negatives":
               settings.num_negatives, "used_all_other_texts": bool(used_all),
               "pool_size": int(pool_size), "num_positives": int(len(pair_idx)),
               "top_k": settings.top_k_accuracy, "results": {}}
  rank_arrays = {}
  for space in spaces:
    start = time.time()
    ranks = metrics.alignment_ranks(space.proxies(dataset, pair_idx),
                                    space.embed_texts(pair_idx), own_position, negative_idx)
    rank_arrays[space.label] = ranks
    alignment["results"][space.key] = metrics.rank_summary(ranks, settings.top_k_accuracy)
    logging.info("alignment %s: %s (%.1fs)", space.key, alignment["results"][space.key],
                 time.time() - start)
  return alignment, rank_arrays, num_negatives


# --------------------------------------------------------------------------------------
# 2. Relation detection.
# --------------------------------------------------------------------------------------


def edge_keys(head: np.ndarray, tail: np.ndarray, num_concepts: int) -> np.ndarray:
  """Direction-free int64 keys of concept pairs."""
  lo = np.minimum(head, tail).astype(np.int64)
  hi = np.maximum(head, tail).astype(np.int64)
  return lo * num_concepts + hi


def check_heldout_absent(dataset) -> Dict[str, int]:
  """Raises AssertionError when a held-out edge is in the training graph (any direction)."""
  n = dataset.num_concepts
  train = edge_keys(dataset.edge_head, dataset.edge_tail, n)
  held = edge_keys(dataset.heldout_head, dataset.heldout_tail, n)
  leaked = np.isin(held, train)
  if leaked.any():
    i = int(np.flatnonzero(leaked)[0])
    raise AssertionError(
        f"{int(leaked.sum())} held-out edges are in the training graph, e.g. "
        f"{dataset.concept_ids[dataset.heldout_head[i]]} - "
        f"{dataset.concept_ids[dataset.heldout_tail[i]]} "
        f"({dataset.heldout_relation[i]}); relation AUCs would be inflated")
  return {"heldout_edges": int(len(held)), "in_training_graph": 0}


def draw_matched_random_pairs(head: np.ndarray, tail: np.ndarray,
                              groups: Optional[np.ndarray], known_keys: np.ndarray,
                              num_concepts: int, rng: np.random.Generator,
                              max_rounds: int = 20) -> Tuple[np.ndarray, np.ndarray, int]:
  """One random pair per related pair, head and tail drawn from the same groups.

  Args:
    head, tail: [H] the related pairs.
    groups: [C] group of each concept, or None (uniform draws).
    known_keys: `edge_keys` of every known edge (training and held out); random pairs that
      hit one, or pair a concept with itself, are redrawn up to `max_rounds` times.
    num_concepts: C.
    rng: the generator.

  Returns:
    (random heads [H], random tails [H], number still colliding after the last round).
  """
  if groups is None:
    codes = np.zeros(num_concepts, np.int64)
  else:
    _, codes = np.unique(groups.astype(str), return_inverse=True)
  order = np.argsort(codes, kind="stable")
  sizes = np.bincount(codes)
  starts = np.r_[0, np.cumsum(sizes)[:-1]]

  def draw(anchors):
    g = codes[anchors]
    return order[starts[g] + np.floor(rng.random(len(anchors)) * sizes[g]).astype(np.int64)]

  rand_head, rand_tail = draw(head), draw(tail)
  bad = np.ones(len(head), bool)
  for _ in range(max_rounds):
    bad = (rand_head == rand_tail) | np.isin(
        edge_keys(rand_head, rand_tail, num_concepts), known_keys)
    if not bad.any():
      break
    rand_head[bad], rand_tail[bad] = draw(head[bad]), draw(tail[bad])
  bad = (rand_head == rand_tail) | np.isin(edge_keys(rand_head, rand_tail, num_concepts),
                                           known_keys)
  return rand_head, rand_tail, int(bad.sum())


def concept_cosines(space: Space, head: np.ndarray, tail: np.ndarray) -> np.ndarray:
  """Cosine of the positive-form concept embeddings of each (head, tail)."""
  ids = np.unique(np.r_[head, tail])
  emb = metrics.l2_normalize(space.embed_concepts(ids, np.zeros(len(ids), bool)))
  pos = {c: i for i, c in enumerate(ids.tolist())}
  h = emb[[pos[c] for c in head.tolist()]]
  t = emb[[pos[c] for c in tail.tolist()]]
  return np.sum(h * t, axis=1)


def relation_detection(dataset, spaces: Sequence[Space], settings: EvalSettings,
                       notes: List[str]) -> Tuple[Dict, Dict]:
  """AUC per held-out relation class (Table 2) and ROC points for the plot."""
  leak = check_heldout_absent(dataset)
  out = {"leak_check": leak, "group_matched": dataset.groups is not None, "classes": []}
  curves: Dict[str, Dict] = {}
  if len(dataset.heldout_head) == 0:
    return out, curves
  rng = settings_lib.rng(settings, settings_lib.RNG_RELATIONS)
  n = dataset.num_concepts
  known = np.unique(np.r_[edge_keys(dataset.edge_head, dataset.edge_tail, n),
                          edge_keys(dataset.heldout_head, dataset.heldout_tail, n)])
  names, counts = np.unique(dataset.heldout_relation.astype(str), return_counts=True)
  for name in names[np.lexsort((names, -counts))]:   # most pairs first, like the paper
    members = np.flatnonzero(dataset.heldout_relation.astype(str) == name)
    total = len(members)
    if settings.max_relation_pairs and total > settings.max_relation_pairs:
      members = np.sort(rng.choice(members, size=settings.max_relation_pairs, replace=False))
    head = dataset.heldout_head[members].astype(np.int64)
    tail = dataset.heldout_tail[members].astype(np.int64)
    rand_head, rand_tail, colliding = draw_matched_random_pairs(
        head, tail, dataset.groups, known, n, rng)
    if colliding:
      notes.append(f"relation {name}: {colliding} random pairs still matched a known edge "
                   "or a self-pair after redrawing (small groups); kept.")
    labels = np.r_[np.ones(len(head), bool), np.zeros(len(rand_head), bool)]
    entry = {"relation": str(name), "count": int(len(head)), "total": int(total),
             "negatives": int(len(rand_head)), "auc": {}}
    curves[str(name)] = {}
    for space in spaces:
      scores = np.r_[concept_cosines(space, head, tail),
                     concept_cosines(space, rand_head, rand_tail)]
      auc = metrics.roc_auc(scores, labels)
      entry["auc"][space.key] = auc
      fpr, tpr = metrics.roc_curve_points(scores, labels)
      curves[str(name)][space.label] = (fpr, tpr, auc)
    out["classes"].append(entry)
    logging.info("relation %s: %d pairs, AUC %s", name, len(head),
                 {k: round(v, 4) for k, v in entry["auc"].items()})
  return out, curves


# --------------------------------------------------------------------------------------
# 3. Cross-form proxy classification.
# --------------------------------------------------------------------------------------


def _usable_label(value) -> bool:
  if value is None:
    return False
  if isinstance(value, float) and np.isnan(value):
    return False
  return str(value) != ""


def cross_form_classification(dataset, pair_idx: np.ndarray, spaces: Sequence[Space],
                              settings: EvalSettings, notes: List[str]) -> Dict:
  """Linear probes on text embeddings and on concept-list proxies (Tables 4, 5, A3)."""
  if dataset.labels is None:
    return {"skipped": "the dataset has no `label` column."}
  raw = dataset.labels[pair_idx]
  usable = np.array([_usable_label(v) for v in raw], bool)
  if (~usable).any():
    notes.append(f"classification: {int((~usable).sum())} pairs without a label left out.")
  idx = pair_idx[usable]
  names, y = np.unique(np.array([str(v) for v in raw[usable]], dtype=object).astype(str),
                       return_inverse=True)
  if len(names) < 2:
    return {"skipped": f"fewer than two label classes among the evaluated pairs "
                       f"({len(names)})."}
  if len(idx) < 2 * settings.cv_folds:
    return {"skipped": f"{len(idx)} labelled pairs are too few for "
                       f"{settings.cv_folds}-fold cross-validation."}
  rng = settings_lib.rng(settings, settings_lib.RNG_PROBE)
  folds = metrics.stratified_folds(y, settings.cv_folds, rng)
  out = {"num_examples": int(len(idx)), "num_classes": int(len(names)),
         "class_counts": {str(n): int(c) for n, c in zip(names, np.bincount(y))},
         "folds": settings.cv_folds, "probe": dataclasses.asdict(settings.probe),
         "results": {}}
  # A fit is a deterministic function of its features (every fit draws from the same
  # generator state), so features equal to an earlier space's (a linear map's input side is
  # a teacher's own rows) reuse that fit instead of training the probes again.
  start = time.time()
  first: Dict[bytes, Tuple[int, str]] = {}    # features -> (fit index, "space form")
  distinct: List[np.ndarray] = []
  which: Dict[Tuple[str, str], Tuple[int, Optional[str]]] = {}
  for space in spaces:
    for form, features in (("concept", space.proxies(dataset, idx)),
                           ("sentence", space.embed_texts(idx))):
      features = np.ascontiguousarray(features, np.float32)
      key = hashlib.sha256(features.tobytes()).digest()
      if key in first:
        which[(space.key, form)] = first[key]
        continue
      first[key] = (len(distinct), f"{space.key} {form}")
      which[(space.key, form)] = (len(distinct), None)
      distinct.append(features)
  # Each fit gets its own generator, so that results do not depend on space order.
  fits = probe_lib.cross_validate_many(
      distinct, y, folds, settings.probe,
      [np.random.default_rng([settings.seed, settings_lib.RNG_PROBE, 1]) for _ in distinct])
  for fit in fits:
    fit.pop("predictions")
  for space in spaces:
    result = {}
    for form in ("concept", "sentence"):
      i, copied_from = which[(space.key, form)]
      result[form] = copy.deepcopy(fits[i])
      if copied_from is not None:
        result[form]["identical_to"] = copied_from
    result["gap"] = {name: result["sentence"][name] - result["concept"][name]
                     for name in ("precision", "recall", "f1", "accuracy")}
    out["results"][space.key] = result
    logging.info("classification %s: concept F1 %.4f, sentence F1 %.4f", space.key,
                 result["concept"]["f1"], result["sentence"]["f1"])
  logging.info("classification: %d probes x %d folds in %.1fs", len(distinct),
               settings.cv_folds, time.time() - start)
  return out


# --------------------------------------------------------------------------------------
# 4. Residual recovery.
# --------------------------------------------------------------------------------------


def residual_recovery(dataset, pair_idx: np.ndarray, spaces: Sequence[Space],
                      dictionaries: Dict[str, Callable[[], np.ndarray]],
                      settings: EvalSettings) -> Dict:
  """Precision and recall of residual recovery against the synthetic true lists."""
  if dataset.synthetic is None or dataset.true_offsets is None:
    return {"skipped": "the dataset has no synthetic pairs with true concept lists."}
  idx = pair_idx[dataset.synthetic[pair_idx]]
  if len(idx) == 0:
    return {"skipped": f"no synthetic pairs in the {settings.split} split."}
  offsets, flat, _ = list_slices(dataset, idx)
  true_offsets, true_flat = true_slices(dataset, idx)
  max_len = int(np.diff(offsets).max())
  thresholds = sorted(set(settings.recovery_thresholds))
  out = {"num_pairs": int(len(idx)), "thresholds": thresholds,
         "training_threshold": settings.training_threshold, "results": {}}
  for space in spaces:
    if space.key not in dictionaries:
      continue
    start = time.time()
    keys = dictionaries[space.key]()
    residual = space.embed_texts(idx) - space.proxies(dataset, idx)
    # Enough candidates that one not in the list always exists.
    k = min(len(keys), max(settings.recovery_top_k, max_len + 1))
    scores, cand = search.cosine_top_k(residual, keys, k, settings.search_memory_mb)
    chosen, best = metrics.first_new_candidate(cand, scores, offsets, flat)
    correct, missing = metrics.recovery_correctness(chosen, offsets, flat, true_offsets,
                                                    true_flat)
    out["num_missing"] = int(missing.sum())
    out["results"][space.key] = metrics.recovery_curve(best, correct, int(missing.sum()),
                                                       thresholds)
    logging.info("recovery %s: %d pairs, %d missing concepts (%.1fs)", space.key, len(idx),
                 int(missing.sum()), time.time() - start)
  return out


# --------------------------------------------------------------------------------------
# 5. Geometry.
# --------------------------------------------------------------------------------------


def geometry(dataset, pair_idx: np.ndarray, spaces: Sequence[Space],
             settings: EvalSettings) -> Dict:
  """Alignment of (text, proxy) pairs and uniformity of texts and of concepts per space."""
  rng = settings_lib.rng(settings, settings_lib.RNG_GEOMETRY)
  cap = settings.geometry_max_points
  text_sample = pair_idx if len(pair_idx) <= cap else np.sort(
      rng.choice(pair_idx, size=cap, replace=False))
  concept_sample = np.arange(dataset.num_concepts) if dataset.num_concepts <= cap else \
      np.sort(rng.choice(dataset.num_concepts, size=cap, replace=False))
  out = {"max_points": cap, "results": {}}
  for space in spaces:
    texts = space.embed_texts(text_sample)
    proxies = space.proxies(dataset, text_sample)
    concepts = space.embed_concepts(concept_sample, np.zeros(len(concept_sample), bool))
    out["results"][space.key] = {
        "alignment": metrics.alignment_loss(texts, proxies),
        "uniformity_text": metrics.uniformity_loss(texts),
        "uniformity_concepts": metrics.uniformity_loss(concepts)}
  return out
