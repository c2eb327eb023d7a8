"""What `LineModel.missing_concepts` and `nearest_concepts` return, and the work dir's
operating point they apply (`line_jax.search.scorer.POINT_FILE`, written by
`python -m line_jax.evaluate --only=recognition`, `line_jax.eval.recognition`).

With a stored point each result says how confident recovery is in it and whether it passes
the point (`passes`); without one (or with `operating_point=None`) they return the plain
tuples of before.
"""

from __future__ import annotations

import logging
import os
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from line_jax.search import scorer as scorer_lib
from line_jax.search import terms as terms_lib
from line_jax.training import checkpoint as ckpt_lib
from line_jax.training import scorer_fit
from line_jax.util import segments as segments_lib

STORED = "stored"


class Recovered(NamedTuple):
  """A concept that a clause names and the list does not explain."""
  concept_id: str
  name: str
  cosine: float          # cos(F(clause), G(term))
  clause: str
  confidence: float      # the stored point's confidence (scorer probability or cosine)
  passes: bool           # confidence >= the stored threshold


class Nearest(NamedTuple):
  """A dictionary concept near a text, with recovery's confidence in it."""
  concept_id: str
  name: str
  cosine: float
  confidence: float
  passes: bool


def operating_point(model, operating_point) -> Optional[dict]:
  """The point to apply: None for `operating_point=None` or when the work dir has none (or
  one made for other parameters: a warning); the stored one for "stored"."""
  if operating_point is None:
    return None
  if operating_point != STORED:
    raise ValueError(f"operating_point={operating_point!r}: expected {STORED!r} (the work "
                     "dir's) or None (no point: the plain results)")
  cache = model.__dict__.setdefault("_recovery_point", {})
  path = scorer_lib.point_path(model.workdir)
  stamp = os.stat(path).st_mtime_ns if os.path.exists(path) else None
  if cache.get("stamp", "unread") != stamp:        # read again when the file changed
    point = scorer_lib.read_point(model.workdir)
    if point is not None and point.get("params_sha256") != ckpt_lib.state_checksum(
        model.params):
      logging.warning("%s was made for other parameters than this checkpoint's: not used; "
                      "evaluate again with --only=recognition",
                      scorer_lib.point_path(model.workdir))
      point = None
    cache["point"], cache["stamp"] = point, stamp
  return cache["point"]


def _terms(model) -> Tuple[terms_lib.Groups, scorer_lib.TermInfo]:
  cache = model.__dict__.setdefault("_recovery_point", {})
  if "info" not in cache:
    groups = terms_lib.dataset_groups(model.dataset)
    cache["info"] = (groups, scorer_fit.term_info(model.dataset, groups, model.config))
  return cache["info"]


def _settings(point: dict) -> dict:
  c = point["candidates"]
  return dict(top_k=int(c["top_k"]), explained_k=int(c["explained_k"]),
              cue_words=tuple(c["cue_words"]))


def by_cosine(model, clauses: Sequence[str], listed: np.ndarray, groups, skip) -> List[tuple]:
  """The previous recovery of one text: (term, cosine, clause) of the best term of each
  clause its list does not explain, a term proposed twice keeping its best, best first."""
  n = len(clauses)
  cand, best = terms_lib.segment_candidates(
      model.embed_texts(list(clauses)), np.arange(n), n,
      np.arange(n + 1, dtype=np.int64) * len(listed), np.tile(listed, n),
      model.dictionary(), groups, 1,
      int(model.config.recovery.get("segment_explained_k", 3)), skip)
  found = {}
  for clause, term, score in zip(clauses, cand[:, 0], best[:, 0]):
    if term >= 0 and (term not in found or score > found[term][0]):
      found[int(term)] = (float(score), clause)
  return sorted(((t, s, c) for t, (s, c) in found.items()), key=lambda x: -x[1])


def missing(model, text: str, listed: np.ndarray, k: int, point: Optional[dict]) -> list:
  """`LineModel.missing_concepts` (its doc): plain tuples without a point, else
  `Recovered` ranked by the point's confidence."""
  pattern = model.config.eval.get("segment_pattern", segments_lib.DEFAULT_PATTERN) or ""
  clauses, _ = segments_lib.clause_table([text], pattern)
  if not clauses:
    return []
  groups, info = _terms(model)
  names = lambda t: (str(model.dataset.concept_ids[groups.representative[t]]),   # noqa
                     str(model.dataset.names[groups.representative[t]]))
  if point is None or point.get("confidence", "scorer") == "cosine":
    ranked = by_cosine(model, clauses, listed, groups, np.flatnonzero(info.skip))[:k]
    if point is None:
      return [names(t) + (s, c) for t, s, c in ranked]
    return [Recovered(*names(t), s, c, s, s >= point["threshold"]) for t, s, c in ranked]
  emb = model.embed_texts(clauses)
  terms = np.unique(groups.group_of[listed])
  cands = scorer_lib.clause_candidates(emb, np.zeros(len(clauses), np.int64), clauses,
                                       np.asarray([0, len(terms)]), terms, model.dictionary(),
                                       groups, info, **_settings(point))
  if not len(cands):
    return []
  conf = point["model"].predict(cands.features)
  _, term, conf, rows = scorer_lib.best_per_text(cands, conf)
  return [Recovered(*names(t), float(cands.cosine[r]), clauses[cands.clause[r]], float(c),
                    bool(c >= point["threshold"]))
          for t, c, r in zip(term[:k], conf[:k], rows[:k])]


def nearest(model, text: str, hits: List[tuple], pieces: Sequence[str],
            point: dict) -> List[Nearest]:
  """`hits` (id, name, cosine) of `nearest_concepts` with the point's confidence in each:
  the cosine, or the scorer's best confidence over `pieces` (the text, or the text and its
  clauses) against an empty list; 0 for a term recovery never proposes."""
  if point.get("confidence", "scorer") == "cosine":
    return [Nearest(c, n, s, s, s >= point["threshold"]) for c, n, s in hits]
  groups, info = _terms(model)
  settings = dict(_settings(point), top_k=max(len(hits), int(point["candidates"]["top_k"])))
  n = len(pieces)
  cands = scorer_lib.clause_candidates(model.embed_texts(list(pieces)), np.zeros(n, np.int64),
                                       list(pieces), np.zeros(2, np.int64),
                                       np.zeros(0, np.int64), model.dictionary(), groups, info,
                                       **settings)
  conf = {}
  if len(cands):
    _, term, best, _ = scorer_lib.best_per_text(cands, point["model"].predict(cands.features))
    conf = dict(zip(term.tolist(), best.tolist()))
  index = model.dataset.concept_index()
  out = []
  for cid, name, score in hits:
    c = float(conf.get(int(groups.group_of[index[cid]]), 0.0))
    out.append(Nearest(cid, name, score, c, c >= point["threshold"]))
  return out
