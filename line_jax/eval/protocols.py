"""Evaluation of a trained LINE model as in the paper (sections 3.2, 3.3.1, 3.3.3, A.4).

`run_evaluation(model, workdir)` writes into workdir: report.md (the paper's tables),
metrics.json (every number) and PNG plots (rank histograms, ROC curves per relation,
recovery precision/recall, loss curves). `python -m line_jax.evaluate` and
`python -m line_jax.train` run it.

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
import functools
import hashlib
import json
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from line_jax.cache import segments as segments_cache
from line_jax.util import files as files_lib
from line_jax.training import guards
from line_jax.search import topk as search
from line_jax.eval import classifier as probe_lib
from line_jax.eval import metrics
from line_jax.eval import plots
from line_jax.eval import report as report_lib
from line_jax.eval import reuse as reuse_lib
from line_jax.eval import retrieval as retrieval_lib
from line_jax.eval import transfer as transfer_lib
from line_jax.eval.linear import map_spaces
from line_jax.eval import settings as settings_lib
from line_jax.eval.settings import EvalSettings, read_settings
from line_jax.eval.spaces import (Space, line_space, list_slices, teacher_concept_rows,
                                  teacher_space, true_slices)
from line_jax.teachers import finetune


# --------------------------------------------------------------------------------------
# 1. Alignment ranks.
# --------------------------------------------------------------------------------------


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
  queries = metrics.l2_normalize(proxies)
  keys = metrics.l2_normalize(pool_texts)
  candidates = np.concatenate([np.asarray(own_position)[:, None], negative_idx], axis=1)
  rows = max(1, int(max_block_bytes // (4 * candidates.shape[1] * max(keys.shape[1], 1))))
  ranks = np.empty(len(queries), np.int64)
  for s in range(0, len(queries), rows):
    block = keys[candidates[s:s + rows]]                        # [r, K + 1, d]
    scores = np.einsum("rd,rkd->rk", queries[s:s + rows], block)
    ranks[s:s + rows] = metrics.ranks_against_negatives(scores[:, 0], scores[:, 1:])
  return ranks


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


# --------------------------------------------------------------------------------------
# The whole evaluation.
# --------------------------------------------------------------------------------------


def _labels(config) -> Dict[str, str]:
  def name(part, fallback):
    sub = config.get(part, None)
    value = sub.get("name", "") if sub is not None else ""
    return value or fallback
  t1, t2 = name("teacher1", "teacher 1"), name("teacher2", "teacher 2")
  line = f"{t1}+{t2}"
  if t1 == t2:        # one encoder in both roles (the HPO default): keep the rows apart
    t1, t2 = f"{t1} (teacher 1)", f"{t2} (teacher 2)"
  return {"teacher1": t1, "teacher2": t2, "line": line,
          "map_t2_to_t1": f"{t2}→{t1}", "map_t1_to_t2": f"{t1}→{t2}"}


def _json_safe(value):
  """NaN/inf become None so that metrics.json is strict JSON; numpy scalars become Python."""
  if isinstance(value, dict):
    return {str(k): _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  if isinstance(value, np.ndarray):
    return _json_safe(value.tolist())
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    v = float(value)
    return v if np.isfinite(v) else None
  return value


def evaluated_pairs(dataset, settings: EvalSettings,
                    notes: List[str]) -> Tuple[np.ndarray, np.ndarray]:
  """(the split's pairs, the evaluated ones: at most config.eval.max_pairs of them)."""
  split_idx = dataset.split_indices(settings.split)
  if len(split_idx) < 2:
    raise ValueError(f"{dataset.root}: the {settings.split!r} split has {len(split_idx)} "
                     "pairs; evaluation needs at least two (set config.eval.split)")
  pair_idx = split_idx
  if settings.max_pairs and len(split_idx) > settings.max_pairs:
    pair_idx = np.sort(settings_lib.rng(settings, settings_lib.RNG_PAIR_CAP).choice(
        split_idx, size=settings.max_pairs, replace=False))
    notes.append(f"{settings.max_pairs} of the {len(split_idx)} pairs of the split drawn "
                 "(config.eval.max_pairs); every protocol uses these pairs, and the alignment "
                 "negatives are drawn among their texts.")
  if len(pair_idx) < 2:
    raise ValueError(f"config.eval.max_pairs={settings.max_pairs} leaves {len(pair_idx)} "
                     "pair; evaluation needs at least two")
  logging.info("evaluating %d pairs of the %s split (%d in the split)", len(pair_idx),
               settings.split, len(split_idx))
  return split_idx, pair_idx


def _clause_rows(model, which: str):
  """() -> the teacher's rows of the evaluated pairs' clauses (config eval.segment_pattern;
  `line_jax.cache.segments`, embedded once and kept), made when first asked for."""
  made = []

  def get():
    if not made:
      pattern = str(model.config.eval.get("segment_pattern", "") or "")
      if not pattern:
        raise ValueError("config.eval.segment_pattern is empty: no clauses")
      made.append(segments_cache.ensure_segments(model.config[which], getattr(model, which),
                                                 model.dataset, pattern, "eval"))
    return made[0]

  return get


def model_spaces(model, settings: EvalSettings, labels: Dict[str, str], notes: List[str]):
  """(teacher 1, teacher 2, LINE, [linear maps], map info): the spaces every protocol
  compares."""
  clauses = {which: _clause_rows(model, which) for which in ("teacher1", "teacher2")}
  teacher1 = teacher_space("teacher1", labels["teacher1"], model.teacher1, clauses["teacher1"])
  teacher2 = teacher_space("teacher2", labels["teacher2"], model.teacher2, clauses["teacher2"])
  line = guards.finite_space(line_space(labels["line"], model, settings.chunk_size,
                                        clauses["teacher1"]))
  maps, map_info = map_spaces(model, model.dataset, settings, labels, notes)
  return teacher1, teacher2, line, maps, map_info


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
    ranks = alignment_ranks(space.proxies(dataset, pair_idx), space.embed_texts(pair_idx),
                            own_position, negative_idx)
    rank_arrays[space.label] = ranks
    alignment["results"][space.key] = metrics.rank_summary(ranks, settings.top_k_accuracy)
    logging.info("alignment %s: %s (%.1fs)", space.key, alignment["results"][space.key],
                 time.time() - start)
  return alignment, rank_arrays, num_negatives


def run_evaluation(model, workdir: str) -> Dict:
  """Runs every protocol on `model` and writes report.md, metrics.json and PNGs to workdir.

  Args:
    model: a `line_jax.api.line_model.LineModel` (or any object with its attributes: config, dataset,
      teacher1, teacher2, project_texts, project_concepts, dictionary).
    workdir: output folder (created if missing); `train_log.jsonl` there is plotted.

  Returns:
    The metrics dictionary written to metrics.json (NaN written as null).
  """
  guards.check_model_finite(model)   # NaN scores would rank every positive first
  os.makedirs(workdir, exist_ok=True)
  key = reuse_lib.evaluation_key(model, workdir)
  if model.config.eval.get("reuse", False):
    previous = reuse_lib.previous_result(workdir, key)
    if previous is not None:
      logging.info("evaluation in %s is current (same parameters, teachers, data, settings "
                   "and code): kept; --config.eval.reuse=False evaluates again", workdir)
      return previous
  settings = read_settings(model.config)
  dataset = model.dataset
  labels = _labels(model.config)
  notes: List[str] = []
  started = time.time()

  split_idx, pair_idx = evaluated_pairs(dataset, settings, notes)
  teacher1, teacher2, line, maps, map_info = model_spaces(model, settings, labels, notes)
  all_spaces = [teacher1, teacher2, line] + maps
  logging.info("linear-map baselines fitted (%.1fs)", time.time() - started)

  # 1. Alignment ranks: the same negatives for every space, drawn among the evaluated pairs.
  alignment, rank_arrays, num_negatives = alignment_protocol(dataset, pair_idx, all_spaces,
                                                             settings, notes)

  # 2. Relations, 3. classification, 4. recovery, 5. geometry.
  relations, roc = relation_detection(dataset, [teacher1, teacher2, line], settings, notes)
  classification = cross_form_classification(dataset, pair_idx, all_spaces, settings, notes)
  recovery = residual_recovery(
      dataset, pair_idx, [line, teacher1],
      {"line": lambda: np.asarray(model.dictionary(), np.float32),
       "teacher1": lambda: np.asarray(model.teacher1.concepts, np.float32)}, settings)
  geo = geometry(dataset, pair_idx, all_spaces, settings)
  # 6. Single concepts: retrieval, definitions, recovery, real text; 7. transfer; 8. the
  # fine-tuned concept teacher's own validation.
  joint = retrieval_lib.evaluate_joint(model, pair_idx, all_spaces, workdir)
  transfer = transfer_protocol(model, workdir)
  concept_teacher = finetune.report_metrics(model)
  finetune.write_report_files(concept_teacher, workdir)

  log_path = os.path.join(workdir, "train_log.jsonl")
  train_records = plots.read_train_log(log_path) if os.path.exists(log_path) else []

  result = {
      "split": settings.split, "dataset": dataset.root, "seed": settings.seed,
      "num_pairs_in_split": int(len(split_idx)), "num_pairs_evaluated": int(len(pair_idx)),
      "models": labels, "notes": notes, "alignment": alignment, "linear_maps": map_info,
      "relations": relations, "classification": classification, "recovery": recovery,
      "geometry": geo, "transfer": transfer, "joint": joint,
      "concept_teacher": concept_teacher,
      "training_log": {"records": len(train_records)} if train_records else None,
      reuse_lib.KEY_FIELD: key,
  }
  # Each file is written whole or not at all, and metrics.json last: a rerun with
  # eval.reuse keeps an evaluation only when its metrics.json holds this evaluation's key,
  # so a write that fails (a full disk) cannot leave an old report or missing plots taken
  # for this evaluation's.
  files = report_lib.PLOT_FILES
  plots.rank_histograms(rank_arrays, num_negatives, os.path.join(workdir, files["ranks"]))
  plots.roc_curves(roc, os.path.join(workdir, files["roc"]))
  if "results" in recovery:
    plots.recovery_curves({labels[k]: v for k, v in recovery["results"].items()},
                          os.path.join(workdir, files["recovery"]),
                          settings.training_threshold)
  if train_records:
    plots.loss_curves(train_records, os.path.join(workdir, files["loss"]))
  files_lib.write_text(os.path.join(workdir, "report.md"),
                       report_lib.render_report(result) + retrieval_lib.render_markdown(joint)
                       + transfer_lib.render_section(transfer)
                       + finetune.report_section(concept_teacher, labels))
  files_lib.write_json(os.path.join(workdir, "metrics.json"), _json_safe(result),
                       ensure_ascii=False)
  logging.info("evaluation written to %s (%.1fs)", workdir, time.time() - started)
  return _json_safe(result)


def transfer_protocol(model, workdir: str) -> Dict:
  """`line_jax.eval.transfer` on the model's dataset: one-hot ids, teachers' and G's rows."""
  settings, labels = read_settings(model.config), _labels(model.config)
  embedders = {
      "teacher1": (labels["teacher1"], functools.partial(teacher_concept_rows, model.teacher1)),
      "teacher2": (labels["teacher2"], functools.partial(teacher_concept_rows, model.teacher2)),
      "line": (f"LINE's G ({labels['line']})", line_space(labels["line"], model,
                                                          settings.chunk_size).embed_concepts)}
  return _json_safe(transfer_lib.run_transfer(
      model.dataset, embedders, transfer_lib.read_config(model.config),
      os.path.join(workdir, transfer_lib.PLOT_FILE)))


def joint_protocol(model, workdir: str) -> Dict:
  """`line_jax.eval.retrieval` alone: the pairs and spaces of `run_evaluation`."""
  guards.check_model_finite(model)
  os.makedirs(workdir, exist_ok=True)
  settings, labels = read_settings(model.config), _labels(model.config)
  _, pair_idx = evaluated_pairs(model.dataset, settings, [])
  teacher1, teacher2, line, maps, _ = model_spaces(model, settings, labels, [])
  spaces = [teacher1, teacher2, line] + maps
  result = retrieval_lib.evaluate_joint(model, pair_idx, spaces, workdir)
  # Table 1 on the same pairs, so that a split's alignment can be read without the rest.
  alignment, _, _ = alignment_protocol(model.dataset, pair_idx, spaces, settings, [])
  return _json_safe(dict(result, split=settings.split, alignment=alignment))


ALONE = ("transfer", "joint")    # protocols `python -m line_jax.evaluate --only` runs alone


def run_alone(model, workdir: str, which: str) -> str:
  """Runs one protocol (of ALONE) on `model`: its entry of workdir/metrics.json is replaced
  (other entries kept) and its report section written beside it; returns that file's path."""
  if which == "transfer":
    result = transfer_protocol(model, workdir)
    section, report = transfer_lib.render_section(result), transfer_lib.REPORT_FILE
  elif which == "joint":
    result = joint_protocol(model, workdir)
    section, report = retrieval_lib.render_markdown(result), retrieval_lib.REPORT_FILE
  else:
    raise ValueError(f"protocol {which!r}: expected one of {ALONE}")
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "metrics.json")
  merged = {}
  if os.path.exists(path):
    with open(path) as f:
      merged = json.load(f)
  merged[which] = result
  # The file no longer holds one evaluation of one setting: a rerun must not keep it whole.
  merged.pop(reuse_lib.KEY_FIELD, None)
  files_lib.write_json(path, merged, ensure_ascii=False)
  report = os.path.join(workdir, report)
  files_lib.write_text(report, section)
  return os.path.abspath(report)
