"""Text -> concept retrieval scored both ways, and broken down by the size of a text's list.

Sentence level: one cosine per text (its whole-text vector). Clause level: a concept's score
against a text is its best cosine over the text and its clauses (`line_jax.util.segments`,
config eval.segment_pattern), for every space alike: LINE (F of teacher 1's clause rows),
teacher 1 and teacher 2 (their own clause rows: `line_jax.cache.segments`, the evaluated
pairs' clauses embedded once per teacher and pattern). One vector cannot sit near five
concepts, so the figures are also given by the number of concepts a text lists
(`size_masks`: 1, 2, 3-4, 5+).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np

from line_jax.search.terms import retrieval_ranks, retrieval_summary

SIZE_BUCKETS = (("1 concept", 1, 1), ("2 concepts", 2, 2), ("3-4 concepts", 3, 4),
                ("5+ concepts", 5, None))


def size_masks(counts: np.ndarray) -> Dict[str, np.ndarray]:
  """{bucket name: [N] bool} of texts by their number of target concepts `counts` [N]
  (a text of none is in no bucket)."""
  counts = np.asarray(counts)
  return {name: (counts >= lo) & (counts <= (hi if hi is not None else np.inf))
          for name, lo, hi in SIZE_BUCKETS}


def target_counts(owner: np.ndarray, num_texts: int) -> np.ndarray:
  """[num_texts] the number of targets (`owner`: the text of each) of each text."""
  return np.bincount(np.asarray(owner, np.int64), minlength=num_texts)


def with_segments(texts: np.ndarray, clauses: np.ndarray, clause_owner: np.ndarray
                  ) -> Tuple[np.ndarray, np.ndarray]:
  """(every text's vectors, the whole text first then its clauses; [N'] their text index,
  non-decreasing) from texts [N, d] and clauses [P, d] of texts `clause_owner` [P]."""
  vectors = np.concatenate([np.asarray(texts, np.float32), np.asarray(clauses, np.float32)])
  owner = np.concatenate([np.arange(len(texts)), np.asarray(clause_owner, np.int64)])
  order = np.argsort(owner, kind="stable")
  return vectors[order], owner[order]


def clause_level(texts: np.ndarray, clauses: Optional[Tuple[np.ndarray, np.ndarray]],
                 keys: np.ndarray, owner: np.ndarray, target: np.ndarray, groups,
                 chunk: int, masks: Dict[str, np.ndarray], ks) -> Dict[str, Dict]:
  """{mask name: retrieval summary} of the targets ranked by the best segment of their
  text (`clauses`: the texts' clause vectors and their text index)."""
  vectors, text_owner = with_segments(texts, *clauses)
  ranks = retrieval_ranks(vectors, keys, owner, target, groups, chunk, text_owner=text_owner)
  return {name: retrieval_summary(ranks[mask[owner]], ks) for name, mask in masks.items()}


def space_clauses(space, pair_idx: np.ndarray) -> Tuple[Optional[Tuple], str]:
  """((clause vectors, their position in `pair_idx`), "") of a space that has them
  (`Space.embed_clauses`), else (None, why not)."""
  embed: Optional[Callable] = getattr(space, "embed_clauses", None)
  if embed is None:
    return None, "this space has no clause vectors"
  try:
    return embed(pair_idx), ""
  except (ValueError, OSError) as e:      # a teacher that cannot embed new strings
    return None, str(e)
