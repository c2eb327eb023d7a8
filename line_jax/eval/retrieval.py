r"""Single-concept protocols of the joint space, beside the paper's list-level ones.

  (a) text -> concept retrieval: each listed (non-negated) concept of a pair ranked among the
      whole dictionary by cosine to the pair's text: recall@k and MRR;
  (b) definition -> defined term: the same ranking, for the term a definition defines;
  (c) recovery of a missing concept on the synthetic pairs (whose true lists are known):
      for each estimator, the top-1 / top-10 hit rate of a true concept the list misses, and
      precision / recall of adding the best candidate when its confidence reaches a threshold.

Every table is broken down by pair source: real text (`synthetic` False: definitions) and
generated vignettes (`synthetic` True). Dictionary entries that name one term (a term and its
synonym entries, `term_id` of concepts.parquet) count as one candidate, scored by the best of
them: a synonym of the right term is a hit, not a miss.

Recovery estimators (`scores_for_recovery`), each scoring every dictionary term c for a text
t with list proxy p (mean of the list's rows) and list sum S = m p:
  residual         cos(t - p, g_c)                         (the paper's residual search)
  completion_gain  cos(t, S + g_c) - cos(t, S)             (how much c completes the list)
  nearest          cos(t, g_c)                             (the text's nearest unlisted term)
and a confidence per pair, on the best candidate not already listed:
  score            its score;
  margin           its score minus the runner-up's.

CLI: python -m line_jax.eval.retrieval --workdir=DIR [--split=valid] [--realtext=FILE.jsonl]
[--realtext_ids_field=FIELD] [--out_dir=DIR] writes joint_<split>.json / .md / .png.
Entry point: `evaluate_joint(model, pair_idx, spaces, workdir)` (called by
`line_jax.evaluate.run_evaluation`); `render_markdown(result)` gives its report section.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from line_jax.eval import metrics

ESTIMATORS = ("residual", "completion_gain", "nearest")
CONFIDENCES = ("score", "margin")
SOURCES = (("all", None), ("real", False), ("vignette", True))
PLOT_FILE = "joint_space.png"


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
  by_term: bool = True                      # eval.retrieval_by_term: synonym entries
                                            # count as their term (False: every entry apart)
  realtext: str = ""                        # eval.realtext: JSONL of annotated sentences
  realtext_ids_field: str = "hpo_ids"       # eval.realtext_ids_field
  num_negatives: int = 100                  # eval.num_negatives (realtext Table 1)
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
      by_term=bool(get("retrieval_by_term", d.by_term)),
      realtext=str(get("realtext", d.realtext) or ""),
      realtext_ids_field=str(get("realtext_ids_field", d.realtext_ids_field)),
      num_negatives=int(get("num_negatives", d.num_negatives)),
      seed=int(get("seed", d.seed)))
  for name in settings.estimators + (settings.estimator,):
    if name not in ESTIMATORS:
      raise ValueError(f"recovery estimator {name!r}: expected one of {ESTIMATORS}")
  if settings.confidence not in CONFIDENCES:
    raise ValueError(f"config.recovery.confidence={settings.confidence!r}: expected one of "
                     f"{CONFIDENCES}")
  if settings.chunk < 1 or not settings.ks or min(settings.ks) < 1:
    raise ValueError(f"config.eval.retrieval_chunk={settings.chunk} and retrieval_ks="
                     f"{settings.ks} must be >= 1")
  return settings


# --------------------------------------------------------------------------------------
# Terms: dictionary entries grouped by the term they name.
# --------------------------------------------------------------------------------------


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


def dataset_groups(dataset) -> Groups:
  """Groups from concepts.parquet's `term_id` column when it has one, else one per entry."""
  path = os.path.join(str(dataset.root), "concepts.parquet")
  term_ids = None
  if os.path.exists(path):
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    if "term_id" in pq.read_schema(path).names:
      term_ids = pq.read_table(path, columns=["term_id"]).column("term_id").to_pylist()
  if term_ids is None or len(term_ids) != dataset.num_concepts or any(
      t is None for t in term_ids):
    return Groups.identity(dataset.num_concepts)
  return Groups.from_ids(dataset.concept_ids, term_ids)


# --------------------------------------------------------------------------------------
# (a), (b): retrieval ranks.
# --------------------------------------------------------------------------------------


def _blocks(n: int, chunk: int):
  for s in range(0, n, chunk):
    yield s, min(n, s + chunk)


def retrieval_ranks(texts: np.ndarray, keys: np.ndarray, owner: np.ndarray,
                    target: np.ndarray, groups: Optional[Groups] = None,
                    chunk: int = 256) -> np.ndarray:
  """Rank of each target term among all terms by cosine to its text (1 = first).

  Args:
    texts: [N, d] text embeddings.
    keys: [C, d] dictionary embeddings (every entry).
    owner: [M] the text row of each query.
    target: [M] the target group (term) of each query.
    groups: entries -> terms (default: one term per entry).
    chunk: texts scored per block.

  Returns:
    [M] int64 ranks: 1 + the number of terms scoring strictly higher than the target.
  """
  groups = groups or Groups.identity(len(keys))
  owner = np.asarray(owner, np.int64)
  target = np.asarray(target, np.int64)
  q = metrics.l2_normalize(np.asarray(texts, np.float32))
  k = metrics.l2_normalize(np.asarray(keys, np.float32))
  ranks = np.zeros(len(owner), np.int64)
  by_owner = np.argsort(owner, kind="stable")
  sorted_owner = owner[by_owner]
  for s, e in _blocks(len(q), chunk):
    lo, hi = np.searchsorted(sorted_owner, [s, e])
    if lo == hi:
      continue
    sel = by_owner[lo:hi]
    scores = groups.collapse(q[s:e] @ k.T)                      # [b, G]
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


# --------------------------------------------------------------------------------------
# (c): recovery of a missing concept.
# --------------------------------------------------------------------------------------


def scores_for_recovery(texts: np.ndarray, proxies: np.ndarray, list_sizes: np.ndarray,
                        keys: np.ndarray, estimator: str) -> np.ndarray:
  """[b, C] score of every dictionary entry as the concept a list misses (module doc)."""
  texts = np.asarray(texts, np.float32)
  proxies = np.asarray(proxies, np.float32)
  keys = np.asarray(keys, np.float32)
  if estimator == "residual":
    return metrics.l2_normalize(texts - proxies) @ metrics.l2_normalize(keys).T
  if estimator == "nearest":
    return metrics.l2_normalize(texts) @ metrics.l2_normalize(keys).T
  if estimator == "completion_gain":
    total = proxies * np.asarray(list_sizes, np.float32)[:, None]        # S
    t = metrics.l2_normalize(texts)
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


def confidence_of(best: np.ndarray, confidence: str) -> np.ndarray:
  """[N] confidence in each pair's first candidate ("score" or "margin", module doc)."""
  if confidence == "score":
    return best[:, 0]
  if confidence == "margin":
    runner_up = best[:, 1] if best.shape[1] > 1 else np.full(len(best), -np.inf)
    return np.where(np.isfinite(runner_up), best[:, 0] - runner_up, best[:, 0])
  raise ValueError(f"confidence {confidence!r}: expected one of {CONFIDENCES}")


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
                        real_mask: Optional[np.ndarray] = None) -> Dict:
  """Hit rates, curves and operating points of every estimator x confidence (module doc)."""
  missing = missing_terms(list_offsets, list_flat, true_offsets, true_flat, groups)
  num_missing = int(sum(len(m) for m in missing))
  with_missing = np.array([bool(m) for m in missing])
  out = {"num_pairs": int(len(missing)), "pairs_with_missing": int(with_missing.sum()),
         "num_missing": num_missing, "estimators": {}}
  for estimator in settings.estimators:
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
      if estimator == settings.estimator and confidence == settings.confidence:
        entry[confidence]["configured"] = precision_recall_at(conf, correct, num_missing,
                                                              settings.threshold)
    out["estimators"][estimator] = entry
  return out


# --------------------------------------------------------------------------------------
# The protocols over a model's spaces.
# --------------------------------------------------------------------------------------


def _pair_columns(dataset, names: Sequence[str]) -> Dict[str, np.ndarray]:
  path = os.path.join(str(dataset.root), "pairs.parquet")
  if not os.path.exists(path):
    return {}
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  present = [n for n in names if n in pq.read_schema(path).names]
  if not present:
    return {}
  table = pq.read_table(path, columns=present)
  if table.num_rows != dataset.num_pairs:
    return {}
  return {n: np.asarray(table.column(n).to_pylist(), dtype=object) for n in present}


def _segments(offsets, pair_idx, *flat):
  pair_idx = np.asarray(pair_idx, np.int64)
  starts = offsets[pair_idx]
  lengths = offsets[pair_idx + 1] - starts
  new = np.zeros(len(pair_idx) + 1, np.int64)
  np.cumsum(lengths, out=new[1:])
  pos = np.repeat(starts - new[:-1], lengths) + np.arange(new[-1])
  return (new,) + tuple(np.asarray(a)[pos] for a in flat)


def source_masks(dataset, pair_idx: np.ndarray) -> Dict[str, np.ndarray]:
  """{"all", "real", "vignette"} -> [N] bool over `pair_idx` (by the `synthetic` flag)."""
  synthetic = (np.zeros(len(pair_idx), bool) if dataset.synthetic is None
               else np.asarray(dataset.synthetic, bool)[pair_idx])
  return {name: (np.ones(len(pair_idx), bool) if flag is None else synthetic == flag)
          for name, flag in SOURCES}


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
  offsets, flat, negated = _segments(dataset.concept_offsets, pair_idx, dataset.concept_flat,
                                     dataset.negated_flat)
  owner, target = listed_targets(offsets, flat, negated, groups)
  columns = _pair_columns(dataset, ("source", "source_id"))
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
  def_rows, def_target = np.asarray(def_rows, np.int64), np.asarray(def_target, np.int64)
  synthetic = masks["vignette"]
  vig_rows = np.flatnonzero(synthetic) if dataset.true_offsets is not None else np.zeros(0, int)

  out = {"num_pairs": int(len(pair_idx)), "num_terms": int(groups.num_groups),
         "num_entries": int(dataset.num_concepts),
         "pairs_by_source": {k: int(v.sum()) for k, v in masks.items()},
         "settings": dataclasses.asdict(settings), "models": {}, "text_to_concept": {},
         "definition_to_term": ({"skipped": "pairs.parquet has no source/source_id columns"}
                                if "source" not in columns else
                                {"num_definitions": int(len(def_rows)),
                                 "unknown_defined_terms": unknown_defined, "results": {}}),
         "recovery": {"skipped": "no synthetic pairs with true lists"} if not len(vig_rows)
         else {"results": {}}}
  if len(vig_rows):
    true_offsets, true_flat = _segments(dataset.true_offsets, pair_idx[vig_rows],
                                        dataset.true_flat)
    vig_offsets, vig_flat, _ = _segments(dataset.concept_offsets, pair_idx[vig_rows],
                                         dataset.concept_flat, dataset.negated_flat)
  for space in spaces:
    out["models"][space.key] = space.label
    texts = np.asarray(space.embed_texts(pair_idx), np.float32)
    keys = np.asarray(space.embed_concepts(np.arange(dataset.num_concepts),
                                           np.zeros(dataset.num_concepts, bool)), np.float32)
    ranks = retrieval_ranks(texts, keys, owner, target, groups, settings.chunk)
    out["text_to_concept"][space.key] = {
        name: retrieval_summary(ranks[mask[owner]], settings.ks) for name, mask in
        masks.items()}
    if len(def_rows):
      def_ranks = retrieval_ranks(texts, keys, def_rows, def_target, groups, settings.chunk)
      out["definition_to_term"]["results"][space.key] = retrieval_summary(def_ranks,
                                                                          settings.ks)
    if len(vig_rows):
      proxies = np.asarray(space.proxies(dataset, pair_idx[vig_rows]), np.float32)
      out["recovery"]["results"][space.key] = recovery_evaluation(
          texts[vig_rows], proxies, vig_offsets, vig_flat, true_offsets, true_flat, keys,
          groups, settings)
    logging.info("joint space %s: text->concept %s", space.key,
                 out["text_to_concept"][space.key]["all"])
  if settings.realtext:
    from line_jax.eval import realtext  # pylint: disable=g-import-not-at-top
    out["realtext"] = realtext.evaluate_realtext(model, settings, groups)
  try:
    from line_jax.eval import joint_plots  # pylint: disable=g-import-not-at-top
    joint_plots.plot(out, os.path.join(workdir, PLOT_FILE))
    out["plot"] = PLOT_FILE
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("joint space plot not written: %s", e)
  return out


# --------------------------------------------------------------------------------------
# Report section.
# --------------------------------------------------------------------------------------


def _f(x, digits=3):
  return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else \
      f"{x:.{digits}f}"


def _retrieval_table(results: Dict, models: Dict, ks, by_source: bool) -> List[str]:
  cols = [f"R@{k}" for k in ks] + ["MRR", "n"]
  lines = ["| model | " + (" source |" if by_source else "") + " | ".join(cols) + " |",
           "|---|" + ("---|" if by_source else "") + "---|" * len(cols)]
  for key, res in results.items():
    for name, r in (res.items() if by_source else [("", res)]):
      cells = [_f(r.get(f"recall@{k}")) for k in ks] + [_f(r.get("mrr")), str(r["count"])]
      lines.append(f"| {models.get(key, key)} | " + (f"{name} | " if by_source else "")
                   + " | ".join(cells) + " |")
  return lines


def render_markdown(result: Optional[Dict]) -> str:
  if not result:
    return ""
  s = result["settings"]
  ks = s["ks"]
  models = result["models"]
  lines = ["", "## Single concepts in the joint space", "",
           f"Dictionary: {result['num_terms']} terms ({result['num_entries']} entries"
           + ("; a term's synonym entries count as that term, scored by the best of them"
              if s.get("by_term", True) else "; every entry ranked on its own") + "). Pairs: "
           + ", ".join(f"{k} {v}" for k, v in result["pairs_by_source"].items())
           + " (real = definitions, vignette = generated).", "",
           "### (a) Text -> concept retrieval (each listed non-negated concept among the "
           "whole dictionary)", ""]
  lines += _retrieval_table(result["text_to_concept"], models, ks, True)
  d = result["definition_to_term"]
  lines += ["", "### (b) Definition -> defined term", ""]
  if "skipped" in d:
    lines.append(f"Skipped: {d['skipped']}")
  else:
    lines.append(f"{d['num_definitions']} definitions ({d['unknown_defined_terms']} defined "
                 "terms not in the dictionary).")
    lines.append("")
    lines += _retrieval_table(d["results"], models, ks, False)
  rec = result["recovery"]
  lines += ["", "### (c) Recovery of a missing concept (synthetic vignettes)", ""]
  if "skipped" in rec:
    lines.append(f"Skipped: {rec['skipped']}")
  else:
    first = next(iter(rec["results"].values()), None)
    if first:
      lines.append(f"{first['num_pairs']} vignettes, {first['pairs_with_missing']} with a "
                   f"missing true concept, {first['num_missing']} missing concepts. Hit@k: a "
                   "missing concept among the k best candidates not yet listed (pairs with "
                   "one). Operating point: highest recall at precision >= "
                   f"{s['min_precision']} adding at least {s['min_added']}; configured: "
                   f"recovery.estimator={s['estimator']}, confidence={s['confidence']}, "
                   "threshold="
                   f"{s['threshold']}.")
      lines.append("")
    hk = s["recovery_top_k"]
    lines += [f"| model | estimator | hit@1 | hit@{hk} | confidence | op. threshold | "
              "op. precision | op. recall | configured precision | configured recall |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for key, res in rec["results"].items():
      for est, e in res["estimators"].items():
        for conf in CONFIDENCES:
          op = e[conf]["operating_point"]
          cfg = e[conf].get("configured", {})
          lines.append(
              f"| {models.get(key, key)} | {est} | {_f(e['hit@1'])} | "
              f"{_f(e[f'hit@{hk}'])} | {conf} | {_f(op['threshold'], 4)} | "
              f"{_f(op['precision'])} | {_f(op['recall'])} | {_f(cfg.get('precision'))} | "
              f"{_f(cfg.get('recall'))} |")
  if "realtext" in result:
    from line_jax.eval import realtext  # pylint: disable=g-import-not-at-top
    lines += realtext.render_markdown(result["realtext"], ks)
  if result.get("plot"):
    lines += ["", f"![single concepts]({result['plot']})"]
  return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# CLI: these protocols alone, on a trained work dir.
# --------------------------------------------------------------------------------------


def evaluate_workdir(workdir: str, split: str = "", realtext: str = "",
                     realtext_ids_field: str = "", out_dir: str = "",
                     by_term: Optional[bool] = None) -> Dict:
  """Loads the model of `workdir`, runs `evaluate_joint` on `split` (default: the config's)
  for both teachers, the linear maps and LINE; writes joint_<split>.json / .md to out_dir
  (default: workdir)."""
  import json  # pylint: disable=g-import-not-at-top
  from line_jax import evaluate  # pylint: disable=g-import-not-at-top
  from line_jax.api import LineModel, load_config  # pylint: disable=g-import-not-at-top
  config = load_config(workdir)
  for field, value in (("split", split), ("realtext", realtext),
                       ("realtext_ids_field", realtext_ids_field)):
    if value:
      config.eval[field] = value
  if by_term is not None:
    config.eval.retrieval_by_term = bool(by_term)
  model = LineModel.load(workdir, config)
  settings = evaluate.read_settings(config)
  labels = evaluate._labels(config)  # pylint: disable=protected-access
  spaces = [evaluate.teacher_space("teacher1", labels["teacher1"], model.teacher1),
            evaluate.teacher_space("teacher2", labels["teacher2"], model.teacher2),
            evaluate.line_space(labels["line"], model, settings.chunk_size)]
  spaces += evaluate.map_spaces(model, model.dataset, settings, labels, [])[0]
  out_dir = out_dir or workdir
  os.makedirs(out_dir, exist_ok=True)
  result = evaluate_joint(model, model.dataset.split_indices(settings.split), spaces, out_dir)
  result["split"] = settings.split
  name = f"joint_{settings.split}" + ("" if read_settings(config).by_term else "_entries")
  if result.get("plot"):
    os.replace(os.path.join(out_dir, result["plot"]), os.path.join(out_dir, name + ".png"))
    result["plot"] = name + ".png"
  with open(os.path.join(out_dir, name + ".json"), "w") as f:
    json.dump(evaluate._json_safe(result), f, indent=1)  # pylint: disable=protected-access
  with open(os.path.join(out_dir, name + ".md"), "w") as f:
    f.write(f"# Single concepts, {settings.split} split of {workdir}\n" +
            render_markdown(result))
  return result


def main(argv) -> None:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  result = evaluate_workdir(f.workdir, f.split, f.realtext, f.realtext_ids_field, f.out_dir,
                            f.by_term)
  print(render_markdown(result))


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
  flags.DEFINE_string("workdir", None, "Work dir of a trained model.")
  flags.DEFINE_string("split", "", "Evaluated split (default: the saved config's).")
  flags.DEFINE_string("realtext", "", "JSONL of real annotated sentences (config.eval."
                      "realtext; default: the saved config's).")
  flags.DEFINE_string("realtext_ids_field", "", "Its field of concept ids.")
  flags.DEFINE_string("out_dir", "", "Where joint_<split>.json/.md/.png go (default: workdir).")
  flags.DEFINE_bool("by_term", None, "config.eval.retrieval_by_term (default: the saved "
                    "config's); False writes joint_<split>_entries.*")
  flags.mark_flag_as_required("workdir")
  app.run(main)
