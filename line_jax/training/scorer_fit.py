"""Training the recovery confidence (`line_jax.search.scorer`) without real annotated text.

Three sources, settings `config.recovery.scorer`:
  - `vignettes`: synthetic vignettes of the training split (at most `max_vignettes`, drawn
    with `seed`): every clause's candidates against the vignette's affirmed listed concepts
    (what a document's extractor passes to recovery); a candidate is right when it is one of
    the vignette's true affirmed concepts;
  - `definitions`: real texts of the training split that are not synthetic (HPO:
    definitions; at most `max_definitions`): their lists hold what they name, so every
    candidate is taken as wrong (clauses that describe rather than name a finding);
  - `names`: distant supervision from the ontology: the dictionary entries (names, synonyms,
    lay names) of terms that training lists hold and no validation or test pair names (at
    most `max_names`), each as a clause with an empty list; the entry itself is left out of
    the scoring and of the lexical features, so the clause must find its term through the
    term's other entries, as a paraphrase the dictionary lacks would. Right: the entry's
    term. Their clause embeddings are F of teacher 1's cached name rows.
Each source weighs `vignette_weight` / `definition_weight` / `name_weight` in all (spread
evenly over its examples). Never trained on the real annotated documents of the evaluation.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import pyarrow.parquet as pq

from line_jax.search import scorer as scorer_lib
from line_jax.search import terms as terms_lib
from line_jax.util import segments

SOURCES = ("vignettes", "definitions", "names")


def hierarchy_edges(dataset, relation: str) -> Tuple[np.ndarray, np.ndarray]:
  """(child, parent) entry rows of the `relation` edges, training graph and held-out ones
  (the hierarchy is a fact of the ontology, not a training target here)."""
  child, parent = [], []
  if relation in dataset.relation_types:
    sel = dataset.edge_type == dataset.relation_types.index(relation)
    child.append(dataset.edge_head[sel])
    parent.append(dataset.edge_tail[sel])
  held = np.asarray(dataset.heldout_relation, dtype=object) == relation
  if held.any():
    child.append(dataset.heldout_head[held])
    parent.append(dataset.heldout_tail[held])
  if not child:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  return np.concatenate(child).astype(np.int64), np.concatenate(parent).astype(np.int64)


def _as_lists(parts) -> Tuple[np.ndarray, np.ndarray]:
  offsets = np.zeros(len(parts) + 1, np.int64)
  np.cumsum([len(x) for x in parts], out=offsets[1:])
  flat = np.concatenate(parts).astype(np.int64) if len(parts) else np.zeros(0, np.int64)
  return offsets, flat


def list_terms(dataset, groups: terms_lib.Groups, pair_idx: np.ndarray,
               affirmed_only: bool = False) -> Tuple[np.ndarray, np.ndarray]:
  """(offsets [n + 1], terms) of the pairs' lists (`affirmed_only`: without the negated
  concepts)."""
  parts = []
  for p in pair_idx:
    rows, neg = dataset.pair_concepts(int(p))
    parts.append(groups.group_of[rows[~neg] if affirmed_only else rows])
  return _as_lists(parts)


def true_negated(dataset) -> Optional[np.ndarray]:
  """[sum] bool aligned with `dataset.true_flat`: the `true_negated` column of the pairs
  file, or None when the dataset has none."""
  if dataset.true_flat is None:
    return None
  path = os.path.join(str(dataset.root), "pairs.parquet")
  if not os.path.exists(path) or "true_negated" not in pq.read_schema(path).names:
    return None
  table = pq.read_table(path, columns=["pair_id", "true_negated"])
  if table.column("pair_id").to_pylist() != [str(p) for p in dataset.pair_ids]:
    return None
  flags = [bool(x) for row in table.column("true_negated").to_pylist() for x in (row or [])]
  if len(flags) != len(dataset.true_flat):
    return None
  return np.asarray(flags, bool)


def true_terms(dataset, groups: terms_lib.Groups, pair_idx: np.ndarray,
               negated: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
  """(offsets, terms) of the pairs' true lists, without the negated concepts when
  `negated` (`true_negated`) is given."""
  parts = []
  for p in pair_idx:
    s, e = dataset.true_offsets[p], dataset.true_offsets[p + 1]
    rows = dataset.true_flat[s:e]
    if negated is not None:
      rows = rows[~negated[s:e]]
    parts.append(groups.group_of[rows])
  return _as_lists(parts)


def term_info(dataset, groups: terms_lib.Groups, config) -> scorer_lib.TermInfo:
  """The `TermInfo` of a dataset: hierarchy from `recovery.scorer.hierarchy_relation`,
  prior from the training split's lists, skipped terms from `segment_skip_groups`."""
  rc = config.recovery
  child, parent = hierarchy_edges(dataset, str(rc.scorer.hierarchy_relation))
  train = dataset.split_indices("train")
  offsets, flat = list_terms(dataset, groups, train)
  owner = np.repeat(np.arange(len(train)), np.diff(offsets))
  width = groups.num_groups + 1
  distinct = np.unique(owner * width + flat) % width
  prior = np.bincount(distinct, minlength=groups.num_groups)[:groups.num_groups]
  skip = terms_lib.skip_terms_of(dataset, groups, rc.get("segment_skip_groups", ()))
  return scorer_lib.TermInfo.build(dataset.names, groups, child, parent, prior, skip)


def candidate_settings(config) -> Dict:
  """The keyword arguments of `scorer.clause_candidates` that the config sets."""
  sc = config.recovery.scorer
  return dict(top_k=int(sc.top_k), explained_k=int(config.recovery.segment_explained_k),
              cue_words=tuple(sc.cue_words))


def segment_pattern(config) -> str:
  return str(config.eval.get("segment_pattern", segments.DEFAULT_PATTERN) or "")


def draw_pairs(dataset, split: str, synthetic: bool, limit: int, seed: int, code: int
               ) -> np.ndarray:
  """Pairs of `split` that are (not) synthetic, at most `limit` (0 = all) drawn by
  default_rng([seed, code]), sorted. Synthetic ones need a true list."""
  if dataset.synthetic is None:
    return np.zeros(0, np.int64)
  if synthetic and dataset.true_offsets is None:
    return np.zeros(0, np.int64)
  idx = dataset.split_indices(split)
  idx = idx[np.asarray(dataset.synthetic, bool)[idx] == synthetic]
  if limit and len(idx) > limit:
    idx = np.sort(np.random.default_rng([seed, code]).choice(idx, limit, replace=False))
  return idx


def text_examples(dataset, pair_idx: np.ndarray, embed_strings: Callable, keys: np.ndarray,
                  groups: terms_lib.Groups, info: scorer_lib.TermInfo, config,
                  labelled: bool) -> Tuple[scorer_lib.Candidates, np.ndarray]:
  """(candidates, right) of pairs' texts against their affirmed lists; `labelled`: right
  when a true affirmed concept (vignettes), else all wrong (definitions)."""
  offsets, flat = list_terms(dataset, groups, pair_idx, affirmed_only=True)
  cands, _ = scorer_lib.text_candidates(
      [str(dataset.texts[i]) for i in pair_idx], offsets, flat, embed_strings, keys, groups,
      info, segment_pattern(config), **candidate_settings(config))
  right = np.zeros(len(cands), bool)
  if labelled and len(cands):
    t_off, t_flat = true_terms(dataset, groups, pair_idx, true_negated(dataset))
    width = groups.num_groups + 1
    owner = np.repeat(np.arange(len(pair_idx)), np.diff(t_off))
    right = np.isin(cands.text * width + cands.term, owner * width + t_flat)
  return cands, right


def name_rows(dataset, groups: terms_lib.Groups, limit: int, seed: int) -> np.ndarray:
  """Dictionary entries of terms that training lists hold and no validation / test pair
  names (listed or true), at most `limit` (0 = all) drawn by `seed`, sorted."""
  g = groups.num_groups
  marks = {}
  for split in ("train", "valid", "test"):
    idx = dataset.split_indices(split)
    mark = np.zeros(g, bool)
    mark[list_terms(dataset, groups, idx)[1]] = True
    if dataset.true_offsets is not None and split != "train":
      mark[true_terms(dataset, groups, idx)[1]] = True
    marks[split] = mark
  eligible = marks["train"] & ~marks["valid"] & ~marks["test"]
  rows = np.flatnonzero(eligible[groups.group_of])
  if limit and len(rows) > limit:
    rows = np.sort(np.random.default_rng([seed, 3]).choice(rows, limit, replace=False))
  return rows


def name_examples(dataset, rows: np.ndarray, name_emb: np.ndarray, keys: np.ndarray,
                  groups: terms_lib.Groups, info: scorer_lib.TermInfo, config
                  ) -> Tuple[scorer_lib.Candidates, np.ndarray]:
  """(candidates, right) of dictionary entries `rows` as clauses (embedded: `name_emb`),
  each entry left out of its own scoring."""
  n = len(rows)
  cands = scorer_lib.clause_candidates(
      name_emb, np.arange(n), [str(dataset.names[r]) for r in rows],
      np.zeros(n + 1, np.int64), np.zeros(0, np.int64), keys, groups, info,
      exclude_entry=np.asarray(rows, np.int64), entry_names=dataset.names,
      **candidate_settings(config))
  right = cands.term == groups.group_of[np.asarray(rows, np.int64)][cands.clause]
  return cands, right


def fit(sources: Dict[str, Tuple[scorer_lib.Candidates, np.ndarray]],
        weights: Dict[str, float], l2: float) -> Tuple[scorer_lib.LogisticScorer, Dict]:
  """A `LogisticScorer` on the named sources, each weighing `weights[name]` in all."""
  xs, ys, ws, counts = [], [], [], {}
  for name, (cands, right) in sources.items():
    counts[name] = {"candidates": int(len(cands)), "right": int(np.sum(right))}
    if not len(cands) or weights.get(name, 0.0) <= 0:
      continue
    xs.append(cands.features)
    ys.append(np.asarray(right, np.float64))
    ws.append(np.full(len(cands), float(weights[name]) / len(cands)))
  if not xs:
    raise ValueError(f"no examples to train the recovery scorer on: {counts}")
  w = np.concatenate(ws)
  model = scorer_lib.LogisticScorer.fit(np.concatenate(xs), np.concatenate(ys), l2=l2,
                                        sample_weight=w * len(w) / w.sum())
  logging.info("recovery scorer fitted on %s: weights %s", counts,
               dict(zip(model.features, np.round(model.weights, 3).tolist())))
  return model, counts


def fit_scorer(dataset, embed_strings: Callable, embed_names: Callable, keys: np.ndarray,
               groups: terms_lib.Groups, config
               ) -> Tuple[scorer_lib.LogisticScorer, Dict, scorer_lib.TermInfo]:
  """Fits the recovery scorer of a model (module doc).

  Args:
    dataset: the run's dataset.
    embed_strings: strings -> F of teacher 1 [n, d] (the clauses of the texts).
    embed_names: dictionary entry rows -> F of teacher 1's cached name rows [n, d].
    keys: [C, d] G of the dictionary.
    groups: entries -> terms.
    config: the run's config (`recovery.scorer`).

  Returns:
    (the scorer, {source: counts}, the dataset's `TermInfo`).
  """
  sc = config.recovery.scorer
  info = term_info(dataset, groups, config)
  seed = int(sc.seed)
  weights = {"vignettes": float(sc.vignette_weight),
             "definitions": float(sc.definition_weight), "names": float(sc.name_weight)}
  sources = {}
  for name, synthetic, limit, code in (("vignettes", True, sc.max_vignettes, 1),
                                       ("definitions", False, sc.max_definitions, 2)):
    pairs = draw_pairs(dataset, "train", synthetic, int(limit), seed, code)
    if len(pairs) and weights[name] > 0:
      sources[name] = text_examples(dataset, pairs, embed_strings, keys, groups, info,
                                    config, labelled=synthetic)
  rows = name_rows(dataset, groups, int(sc.max_names), seed)
  if len(rows) and weights["names"] > 0:
    sources["names"] = name_examples(dataset, rows, np.asarray(embed_names(rows), np.float32),
                                     keys, groups, info, config)
  model, counts = fit(sources, weights, float(sc.l2))
  return model, counts, info
