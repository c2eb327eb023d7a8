r"""Single-concept protocols of the joint space, beside the paper's list-level ones.

  (a) text -> concept retrieval: each listed (non-negated) concept of a pair ranked among the
      whole dictionary by cosine to the pair's text: recall@k and MRR; also by clause (a
      concept scored by its best cosine over the text and its clauses, every space alike)
      and by the number of concepts a text lists (`line_jax.eval.by_segment`);
  (b) definition -> defined term: the same ranking, for the term a definition defines;
  (c) recovery of a missing concept on the synthetic pairs (whose true lists are known):
      for each estimator, the top-1 / top-10 hit rate of a true concept the list misses, and
      precision / recall of adding the best candidate when its confidence reaches a threshold.

Every table is broken down by pair source: real text (`synthetic` False: definitions) and
generated vignettes (`synthetic` True). Dictionary entries that name one term (a term and its
synonym entries, `term_id` of concepts.parquet) count as one candidate, scored by the best of
them: a synonym of the right term is a hit, not a miss. The grouping, the ranks and the
recovery estimators and confidences (residual, completion_gain, nearest; score, margin) are
`line_jax.search.terms`, which residual recovery in training shares.

Entry point: `evaluate_joint(model, pair_idx, spaces, workdir)` (called by
`line_jax.eval.runner.run_evaluation`); its report section is
`line_jax.eval.retrieval_report.render_markdown(result)`.
Alone, on a trained work dir: `python -m line_jax.evaluate --workdir=DIR --only=joint`
(split and real-text file from --config overrides) replaces the `joint` entry of
metrics.json and writes joint.md.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from line_jax.data import dataset as dataset_lib
from line_jax.util import segments
from line_jax.eval import by_segment
from line_jax.eval import joint_plots
from line_jax.eval import realtext
from line_jax.eval import settings as settings_lib
from line_jax.eval.spaces import list_slices, true_slices
from line_jax.search.terms import (CONFIDENCES, ESTIMATORS, Groups, confidence_of, dataset_groups,
                            segment_candidates, skip_terms_of,
                            listed_targets, recovery_candidates, retrieval_ranks,
                            retrieval_summary)

SOURCES = (("all", None), ("real", False), ("vignette", True))
PLOT_FILE = "joint_space.png"
REPORT_FILE = "joint.md"      # the section alone (`--only=joint`)


# --------------------------------------------------------------------------------------
# Settings.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class JointSettings:
  """config.eval.* (and config.recovery.*) fields these protocols read, with defaults."""
  ks: Tuple[int, ...] = (1, 10)             # eval.retrieval_ks: recall@k reported
  chunk: int = 256                          # eval.retrieval_chunk: queries per score block
  recovery_top_k: int = 10                  # eval.recovery_hit_k: hit rate among the top k
  estimators: Tuple[str, ...] = ESTIMATORS  # eval.recovery_estimators
  min_precision: float = 0.5                # eval.recovery_min_precision: operating point
  min_added: int = 10                       # eval.recovery_min_added: ... adding at least this
  curve_points: int = 41                    # eval.recovery_curve_points (quantile grid)
  estimator: str = "residual"               # recovery.estimator (the one stage 2 applies)
  confidence: str = "score"                 # recovery.confidence
  threshold: float = 0.9                    # recovery.threshold
  explained_k: int = 3                      # recovery.segment_explained_k
  choose_on: str = "valid"                  # eval.recovery_choose_on: the split whose
                                            # vignettes choose each operating point applied
                                            # to the evaluated split ("" = none)
  segment_skip_groups: Tuple[str, ...] = ()  # recovery.segment_skip_groups
  by_term: bool = True                      # eval.retrieval_by_term: synonym entries
                                            # count as their term (False: every entry apart)
  realtext: str = ""                        # eval.realtext: JSONL of annotated sentences
  realtext_ids_field: str = "hpo_ids"       # eval.realtext_ids_field
  num_negatives: int = 100                  # eval.num_negatives (realtext Table 1)
  segment_pattern: str = segments.DEFAULT_PATTERN   # eval.segment_pattern (realtext
                                            # segment-wise retrieval; "" = none)
  seed: int = 0                             # eval.seed


def read_settings(config) -> JointSettings:
  d = JointSettings()
  ev = config.eval
  rc = config.get("recovery", None)
  get = lambda name, default: ev.get(name, default)  # noqa: E731
  rget = lambda name, default: rc.get(name, default) if rc is not None else default  # noqa
  settings = JointSettings(
      ks=tuple(int(k) for k in get("retrieval_ks", d.ks)),
      chunk=int(get("retrieval_chunk", d.chunk)),
      recovery_top_k=int(get("recovery_hit_k", d.recovery_top_k)),
      estimators=tuple(str(e) for e in get("recovery_estimators", d.estimators)),
      min_precision=float(get("recovery_min_precision", d.min_precision)),
      min_added=int(get("recovery_min_added", d.min_added)),
      curve_points=int(get("recovery_curve_points", d.curve_points)),
      estimator=str(rget("estimator", d.estimator)),
      confidence=str(rget("confidence", d.confidence)),
      threshold=float(rget("threshold", d.threshold)),
      explained_k=int(rget("segment_explained_k", d.explained_k)),
      choose_on=str(get("recovery_choose_on", d.choose_on) or ""),
      segment_skip_groups=tuple(str(g) for g in rget("segment_skip_groups",
                                                     d.segment_skip_groups)),
      by_term=bool(get("retrieval_by_term", d.by_term)),
      realtext=str(get("realtext", d.realtext) or ""),
      realtext_ids_field=str(get("realtext_ids_field", d.realtext_ids_field)),
      num_negatives=int(get("num_negatives", d.num_negatives)),
      segment_pattern=str(get("segment_pattern", d.segment_pattern) or ""),
      seed=int(get("seed", d.seed)))
  for name in settings.estimators + (settings.estimator,):
    if name not in ESTIMATORS:
      raise ValueError(f"recovery estimator {name!r}: expected one of {ESTIMATORS}")
  if settings.confidence not in CONFIDENCES:
    raise ValueError(f"config.recovery.confidence={settings.confidence!r}: expected one of "
                     f"{CONFIDENCES}")
  try:
    re.compile(settings.segment_pattern)
  except re.error as e:
    raise ValueError(f"config.eval.segment_pattern={settings.segment_pattern!r} is not a "
                     f"regular expression: {e}") from None
  if settings.chunk < 1 or not settings.ks or min(settings.ks) < 1:
    raise ValueError(f"config.eval.retrieval_chunk={settings.chunk} and retrieval_ks="
                     f"{settings.ks} must be >= 1")
  return settings


# --------------------------------------------------------------------------------------
# (c): recovery of a missing concept.
# --------------------------------------------------------------------------------------


def missing_terms(list_offsets, list_flat, true_offsets, true_flat,
                  groups: Groups) -> List[set]:
  """Per pair, the true terms its (extracted) list does not hold."""
  out = []
  for i in range(len(list_offsets) - 1):
    listed = set(groups.group_of[list_flat[list_offsets[i]:list_offsets[i + 1]]].tolist())
    true = set(groups.group_of[true_flat[true_offsets[i]:true_offsets[i + 1]]].tolist())
    out.append(true - listed)
  return out


def precision_recall_at(conf: np.ndarray, correct: np.ndarray, num_missing: int,
                        threshold: float) -> Dict[str, float]:
  taken = conf >= threshold
  n_taken, n_correct = int(taken.sum()), int((taken & correct).sum())
  return {"threshold": float(threshold), "added": n_taken, "correct": n_correct,
          "precision": n_correct / n_taken if n_taken else float("nan"),
          "recall": n_correct / num_missing if num_missing else float("nan")}


def operating_point(conf: np.ndarray, correct: np.ndarray, num_missing: int,
                    min_precision: float, min_added: int = 1) -> Dict[str, float]:
  """The threshold (a confidence value) of the highest recall with precision >=
  `min_precision` among thresholds adding at least `min_added` concepts (fewer make a noisy
  precision); the highest-precision such point when none reaches it."""
  conf = np.asarray(conf, np.float64)
  finite = np.isfinite(conf)
  if not finite.any() or not num_missing:
    return {"threshold": float("inf"), "added": 0, "correct": 0, "precision": float("nan"),
            "recall": 0.0, "reached": False}
  order = np.argsort(-conf[finite], kind="stable")
  c, ok = conf[finite][order], np.asarray(correct)[finite][order]
  hits = np.cumsum(ok)
  n = np.arange(1, len(c) + 1)
  last = np.r_[c[1:] != c[:-1], True]              # a threshold takes every tie
  precision, recall = hits / n, hits / num_missing
  last &= n >= min(max(1, min_added), len(c))
  valid = last & (precision >= min_precision)
  if valid.any():
    i = int(np.flatnonzero(valid)[np.argmax(recall[valid])])
    reached = True
  else:
    i = int(np.flatnonzero(last)[np.argmax(precision[last])])
    reached = False
  return dict(precision_recall_at(conf, np.asarray(correct), num_missing, c[i]),
              reached=reached)


def recovery_evaluation(texts, proxies, list_offsets, list_flat, true_offsets, true_flat,
                        keys, groups: Groups, settings: JointSettings,
                        real_mask: Optional[np.ndarray] = None,
                        clauses: Optional[Tuple[np.ndarray, np.ndarray]] = None,
                        skip_terms: Optional[np.ndarray] = None,
                        chosen: Optional[Dict] = None) -> Dict:
  """Hit rates, curves and operating points of every estimator x confidence (module doc).

  `clauses`: (embeddings [P, d], text index [P]) of the texts' clauses in this space, for
  the "segment" estimator (skipped, with the reason, without them); `skip_terms`: terms it
  never proposes (`recovery.segment_skip_groups`). `chosen`: another split's result of this
  function; each estimator x confidence then also reports precision and recall here at
  that split's operating point (`at_chosen_point`)."""
  missing = missing_terms(list_offsets, list_flat, true_offsets, true_flat, groups)
  num_missing = int(sum(len(m) for m in missing))
  with_missing = np.array([bool(m) for m in missing])
  out = {"num_pairs": int(len(missing)), "pairs_with_missing": int(with_missing.sum()),
         "num_missing": num_missing, "estimators": {}}
  for estimator in settings.estimators:
    if estimator == "segment":
      if clauses is None:
        out.setdefault("skipped", {})[estimator] = (
            "this space embeds no new strings (the teachers and LINE do, with a Hugging "
            "Face teacher)")
        continue
      cand, best = segment_candidates(clauses[0], clauses[1], len(missing), list_offsets,
                                      list_flat, keys, groups, settings.recovery_top_k,
                                      settings.explained_k, skip_terms, settings.chunk)
    else:
      cand, best = recovery_candidates(texts, proxies, list_offsets, list_flat, keys,
                                       estimator, groups, settings.recovery_top_k,
                                       settings.chunk)
    hit = np.array([[c in m for c in row] for row, m in zip(cand.tolist(), missing)], bool)
    correct = hit[:, 0]
    entry = {"hit@1": float(correct[with_missing].mean()) if with_missing.any() else None,
             f"hit@{settings.recovery_top_k}":
             float(hit[with_missing].any(axis=1).mean()) if with_missing.any() else None}
    for confidence in CONFIDENCES:
      conf = confidence_of(best, confidence)
      finite = conf[np.isfinite(conf)]
      grid = (np.unique(np.quantile(finite, np.linspace(0, 1, settings.curve_points)))
              if len(finite) else np.zeros(0))
      entry[confidence] = {
          "curve": [precision_recall_at(conf, correct, num_missing, t) for t in grid],
          "operating_point": operating_point(conf, correct, num_missing,
                                             settings.min_precision, settings.min_added)}
      point = ((chosen or {}).get("estimators", {}).get(estimator, {}).get(confidence, {})
               .get("operating_point"))
      if point is not None:
        entry[confidence]["at_chosen_point"] = dict(
            precision_recall_at(conf, correct, num_missing, point["threshold"]),
            chosen_precision=point["precision"], chosen_recall=point["recall"],
            reached=point["reached"])
      if estimator == settings.estimator and confidence == settings.confidence:
        entry[confidence]["configured"] = precision_recall_at(conf, correct, num_missing,
                                                              settings.threshold)
    out["estimators"][estimator] = entry
  return out


# --------------------------------------------------------------------------------------
# The protocols over a model's spaces.
# --------------------------------------------------------------------------------------


def _pair_columns(dataset, names: Sequence[str]) -> Dict[str, np.ndarray]:
  """The optional pairs.parquet columns of `names` that the dataset has (none where the
  file holds another number of rows than the loaded dataset)."""
  columns = dataset_lib.read_optional_columns(
      os.path.join(str(dataset.root), "pairs.parquet"), names)
  return {} if any(len(v) != dataset.num_pairs for v in columns.values()) else columns


def source_masks(dataset, pair_idx: np.ndarray) -> Dict[str, np.ndarray]:
  """{"all", "real", "vignette"} -> [N] bool over `pair_idx` (by the `synthetic` flag)."""
  synthetic = (np.zeros(len(pair_idx), bool) if dataset.synthetic is None
               else np.asarray(dataset.synthetic, bool)[pair_idx])
  return {name: (np.ones(len(pair_idx), bool) if flag is None else synthetic == flag)
          for name, flag in SOURCES}


def _vignette_clauses(model, pair_idx: np.ndarray, settings: JointSettings,
                      embedders: Sequence[tuple]) -> Dict:
  """{space key: (clause embeddings, text index)} of the texts' clauses (the whole text
  left out), for every space that embeds new strings (`embedders`:
  `realtext.string_embedders`)."""
  texts = [str(model.dataset.texts[i]) for i in pair_idx]
  pieces, owner = segments.clause_table(texts, settings.segment_pattern or "")
  out = {}
  for item in embedders:
    if len(item) == 3:
      key, embed, _ = item
      out[key] = (np.asarray(embed(pieces), np.float32) if pieces
                  else np.zeros((0, 1), np.float32), owner)
  logging.info("segment recovery: %d clauses of %d texts, spaces %s", len(pieces),
               len(texts), sorted(out))
  return out


def _segment_embedders(model) -> List[tuple]:
  """`realtext.string_embedders(model)`, or none (logged) where a teacher's encoder cannot
  be loaded: the segment estimator is then skipped, with the reason, in every space."""
  try:
    return realtext.string_embedders(model)
  except (ValueError, OSError) as e:      # a teacher whose encoder cannot be loaded
    logging.warning("segment recovery skipped: the teachers' encoders cannot be loaded (%s)",
                    e)
    return []


def _definition_rows(dataset, pair_idx: np.ndarray, groups: Groups,
                     columns: Dict[str, np.ndarray]) -> Tuple[np.ndarray, np.ndarray, int]:
  """(b)'s queries: the rows of `pair_idx` that are definitions, the terms they define, and
  how many define a term not in the dictionary."""
  index = dataset.concept_index()
  def_rows, def_target, unknown_defined = [], [], 0
  if "source" in columns:
    for row, p in enumerate(pair_idx):
      if columns["source"][p] == "definition":
        c = index.get(columns["source_id"][p])
        if c is None:
          unknown_defined += 1
        else:
          def_rows.append(row)
          def_target.append(groups.group_of[c])
  return np.asarray(def_rows, np.int64), np.asarray(def_target, np.int64), unknown_defined


def _choice_pairs(dataset, pair_idx: np.ndarray, settings: JointSettings) -> np.ndarray:
  """The vignettes of split `settings.choose_on`, which choose the operating points; none
  where that split shares a pair with the evaluated ones."""
  choose = dataset.split_indices(settings.choose_on)
  choose = choose[source_masks(dataset, choose)["vignette"]]
  if np.isin(choose, pair_idx).any():
    choose = np.zeros(0, np.int64)
  return choose


@dataclasses.dataclass(frozen=True)
class _Vignettes:
  """One split's vignettes as (c) reads them."""
  idx: np.ndarray                        # their pairs
  lists: Tuple[np.ndarray, np.ndarray]   # (offsets, flat) of the extracted lists
  true: Tuple[np.ndarray, np.ndarray]    # (offsets, flat) of the true lists
  clauses: Dict                          # `_vignette_clauses` ({} without embedders)


def _vignettes(model, idx: np.ndarray, settings: JointSettings,
               embedders: Sequence[tuple]) -> _Vignettes:
  dataset = model.dataset
  true = true_slices(dataset, idx)
  lists = tuple(list_slices(dataset, idx)[:2])
  clauses = _vignette_clauses(model, idx, settings, embedders) if embedders else {}
  return _Vignettes(idx, lists, true, clauses)


def _space_recovery(space, dataset, texts: np.ndarray, keys: np.ndarray, groups: Groups,
                    settings: JointSettings, evaluated: _Vignettes,
                    chooser: Optional[_Vignettes], skip_terms) -> Dict:
  """(c) in one space on the evaluated vignettes (`texts`: their embeddings), each operating
  point chosen on `chooser`'s vignettes too when there are any."""
  proxies = np.asarray(space.proxies(dataset, evaluated.idx), np.float32)
  chosen = None
  if chooser is not None:
    chosen = recovery_evaluation(
        np.asarray(space.embed_texts(chooser.idx), np.float32),
        np.asarray(space.proxies(dataset, chooser.idx), np.float32), *chooser.lists,
        *chooser.true, keys, groups, settings, clauses=chooser.clauses.get(space.key),
        skip_terms=skip_terms)
  return recovery_evaluation(
      texts, proxies, *evaluated.lists, *evaluated.true, keys, groups, settings,
      clauses=evaluated.clauses.get(space.key), skip_terms=skip_terms, chosen=chosen)


def evaluate_joint(model, pair_idx: np.ndarray, spaces: Sequence, workdir: str) -> Dict:
  """(a), (b), (c) on `pair_idx` for every space, and the real-text set when configured.

  Args:
    model: the evaluated `LineModel` (config, dataset; teachers for the real-text set).
    pair_idx: the evaluated pairs.
    spaces: objects with `key`, `label`, `embed_texts(idx)`, `embed_concepts(idx, neg)`,
      `proxies(dataset, idx)` (line_jax.evaluate's spaces).
    workdir: where the plot goes.
  """
  settings = read_settings(model.config)
  dataset = model.dataset
  groups = (dataset_groups(dataset) if settings.by_term
            else Groups.identity(dataset.num_concepts))
  pair_idx = np.asarray(pair_idx, np.int64)
  masks = source_masks(dataset, pair_idx)
  offsets, flat, negated = list_slices(dataset, pair_idx)
  owner, target = listed_targets(offsets, flat, negated, groups)
  text_masks = dict(masks, **by_segment.size_masks(by_segment.target_counts(owner,
                                                                            len(pair_idx))))
  columns = _pair_columns(dataset, ("source", "source_id"))
  def_rows, def_target, unknown_defined = _definition_rows(dataset, pair_idx, groups, columns)
  synthetic = masks["vignette"]
  vig_rows = np.flatnonzero(synthetic) if dataset.true_offsets is not None else np.zeros(0, int)
  out = _joint_header(dataset, pair_idx, groups, masks, settings, columns, def_rows,
                      unknown_defined, vig_rows)
  embedders, evaluated, chooser = _recovery_vignettes(model, pair_idx, vig_rows, settings, out)
  skip_terms = skip_terms_of(dataset, groups, settings.segment_skip_groups)
  for space in spaces:
    out["models"][space.key] = space.label
    texts = np.asarray(space.embed_texts(pair_idx), np.float32)
    keys = np.asarray(space.embed_concepts(np.arange(dataset.num_concepts),
                                           np.zeros(dataset.num_concepts, bool)), np.float32)
    _space_retrieval(out, space, pair_idx, texts, keys, owner, target, groups, settings,
                     text_masks, def_rows, def_target)
    if evaluated is not None:
      out["recovery"]["results"][space.key] = _space_recovery(
          space, dataset, texts[vig_rows], keys, groups, settings, evaluated, chooser,
          skip_terms)
    logging.info("joint space %s: text->concept %s", space.key,
                 out["text_to_concept"][space.key]["all"])
  if settings.realtext:
    out["realtext"] = realtext.evaluate_realtext(model, settings, groups,
                                                 embedders or None)
  if not settings_lib.plots_enabled(model.config):
    return out
  try:
    joint_plots.plot(out, os.path.join(workdir, PLOT_FILE))
    out["plot"] = PLOT_FILE
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("joint space plot not written: %s", e)
  return out


def _joint_header(dataset, pair_idx: np.ndarray, groups: Groups, masks: Dict,
                  settings: JointSettings, columns: Dict, def_rows: np.ndarray,
                  unknown_defined: int, vig_rows: np.ndarray) -> Dict:
  """The result's counts and settings, with empty tables for the spaces (or why a protocol
  is skipped)."""
  return {"num_pairs": int(len(pair_idx)), "num_terms": int(groups.num_groups),
          "num_entries": int(dataset.num_concepts),
          "pairs_by_source": {k: int(v.sum()) for k, v in masks.items()},
          "settings": dataclasses.asdict(settings), "models": {}, "text_to_concept": {},
          "definition_to_term": ({"skipped": "pairs.parquet has no source/source_id columns"}
                                 if "source" not in columns else
                                 {"num_definitions": int(len(def_rows)),
                                  "unknown_defined_terms": unknown_defined, "results": {}}),
          "recovery": {"skipped": "no synthetic pairs with true lists"} if not len(vig_rows)
          else {"results": {}}}


def _recovery_vignettes(model, pair_idx: np.ndarray, vig_rows: np.ndarray,
                        settings: JointSettings, out: Dict):
  """(embedders, evaluated vignettes, choosing vignettes or None) for (c); the choosing
  split is noted in `out`."""
  dataset = model.dataset
  # The teachers' encoders, loaded once for the segment estimator's splits: their
  # encodings of the same strings are kept (realtext.string_embedders).
  embedders = (_segment_embedders(model) if len(vig_rows) and "segment" in settings.estimators
               else [])
  evaluated = _vignettes(model, pair_idx[vig_rows], settings, embedders) if len(vig_rows) \
      else None
  # The split whose vignettes choose the operating points (never the evaluated pairs).
  choose = (_choice_pairs(dataset, pair_idx, settings) if len(vig_rows) and settings.choose_on
            else np.zeros(0, np.int64))
  chooser = None
  if len(choose):
    chooser = _vignettes(model, choose, settings, embedders)
    out["recovery"]["chosen_on"] = {"split": settings.choose_on, "vignettes": int(len(choose))}
  return embedders, evaluated, chooser


def _space_retrieval(out: Dict, space, pair_idx: np.ndarray, texts: np.ndarray,
                     keys: np.ndarray, owner: np.ndarray, target: np.ndarray, groups: Groups,
                     settings: JointSettings, text_masks: Dict, def_rows: np.ndarray,
                     def_target: np.ndarray) -> None:
  """(a) (by text and, where the space embeds clauses, by clause) and (b) in one space,
  into `out`."""
  ranks = retrieval_ranks(texts, keys, owner, target, groups, settings.chunk)
  out["text_to_concept"][space.key] = {
      name: retrieval_summary(ranks[mask[owner]], settings.ks) for name, mask in
      text_masks.items()}
  if settings.segment_pattern and space.embed_clauses is not None:   # by clause too
    clauses, why = by_segment.space_clauses(space, pair_idx)
    if clauses is None:
      out.setdefault("text_to_concept_segments_skipped", {})[space.key] = why
    else:
      out.setdefault("text_to_concept_segments", {})[space.key] = by_segment.clause_level(
          texts, clauses, keys, owner, target, groups, settings.chunk, text_masks,
          settings.ks)
  if len(def_rows):
    def_ranks = retrieval_ranks(texts, keys, def_rows, def_target, groups, settings.chunk)
    out["definition_to_term"]["results"][space.key] = retrieval_summary(def_ranks,
                                                                        settings.ks)
