"""Embedding spaces: how each compared model embeds texts and concepts.

A `Space` maps pair indices to text vectors and (concept, negated) indices to concept
vectors; the protocols (`line_jax.eval.protocols`) score every space the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Tuple

import numpy as np

from line_jax.cache import store as emb_lib
from line_jax.model import projection
from line_jax.eval import metrics


def teacher_concept_rows(teacher, concept_idx: np.ndarray,
                         negated: np.ndarray) -> np.ndarray:
  """A teacher's concept rows; negated occurrences take the negated form's row."""
  negated = np.asarray(negated, bool)
  rows = emb_lib.gather_rows(teacher.concepts, concept_idx, np.float32)
  if negated.any():
    rows[negated] = emb_lib.gather_rows(teacher.negated, np.asarray(concept_idx)[negated],
                                        np.float32)
  return rows


@dataclasses.dataclass(frozen=True)
class Space:
  """One compared model: a text embedder and a concept embedder into one space.

  Attributes:
    key: stable id used in metrics.json ("teacher1", "teacher2", "line", "map_...").
    label: the row name in the report.
    embed_texts: pair indices [N] -> [N, d].
    embed_concepts: (concept indices [M], negated [M]) -> [M, d].
    embed_clauses: optional, pair indices [N] -> (the clause vectors of their texts [P, d],
      [P] position in the indices of the pair each belongs to) (`line_jax.eval.by_segment`);
      ValueError where the space cannot have them.
  """
  key: str
  label: str
  embed_texts: Callable[[np.ndarray], np.ndarray]
  embed_concepts: Callable[[np.ndarray, np.ndarray], np.ndarray]
  embed_clauses: Optional[Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]] = None

  def proxies(self, dataset, pair_idx: np.ndarray) -> np.ndarray:
    """Mean concept embedding of each pair's list: [N] -> [N, d]."""
    offsets, flat, negated = list_slices(dataset, pair_idx)
    return metrics.segment_mean(self.embed_concepts(flat, negated), offsets)


def gather_segments(offsets: np.ndarray, pair_idx: np.ndarray,
                    *flat_arrays: np.ndarray) -> Tuple[np.ndarray, ...]:
  """The segments of `pair_idx` (in that order) from flat arrays indexed by `offsets`.

  Returns:
    (new offsets [N+1], then each flat array restricted to those segments).
  """
  pair_idx = np.asarray(pair_idx, np.int64)
  starts = offsets[pair_idx]
  lengths = offsets[pair_idx + 1] - starts
  new_offsets = np.zeros(len(pair_idx) + 1, np.int64)
  np.cumsum(lengths, out=new_offsets[1:])
  flat_pos = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(new_offsets[-1])
  return (new_offsets,) + tuple(a[flat_pos] for a in flat_arrays)


def list_slices(dataset, pair_idx: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(offsets [N+1], concept indices, negated flags) of the lists of `pair_idx`, in order."""
  return gather_segments(dataset.concept_offsets, pair_idx, dataset.concept_flat,
                         dataset.negated_flat)


def true_slices(dataset, pair_idx: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(offsets [N+1], concept indices) of the true (synthetic) lists of `pair_idx`."""
  return gather_segments(dataset.true_offsets, pair_idx, dataset.true_flat)


def chunked(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, chunk: int) -> np.ndarray:
  """fn over `x` in blocks of `chunk` rows, float32."""
  parts = [np.asarray(fn(x[s:s + chunk]), np.float32) for s in range(0, len(x), chunk)]
  return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def teacher_space(key: str, label: str, teacher, clauses: Optional[Callable] = None) -> Space:
  """A teacher's own rows; `clauses`: () -> its `SegmentEmbeddings` of the pairs' clauses
  (called when first needed)."""
  return Space(key, label,
               embed_texts=lambda idx: teacher.text_rows(idx, np.float32),
               embed_concepts=lambda idx, neg: teacher_concept_rows(teacher, idx, neg),
               embed_clauses=None if clauses is None else
               lambda idx: clauses().pair_rows(idx, np.float32))


def line_space(label: str, model, chunk: int, clauses: Optional[Callable] = None) -> Space:
  """F on teacher-1 texts; G from the cached dictionary, negated forms through G;
  `clauses`: () -> teacher 1's `SegmentEmbeddings` of the pairs' clauses, projected by F."""
  def embed_texts(idx):
    return chunked(model.project_texts,
                    emb_lib.gather_rows(model.teacher1.text, idx, np.float32), chunk)

  def embed_clauses(idx):
    rows, owner = clauses().pair_rows(idx, np.float32)
    return chunked(model.project_texts, rows, chunk).reshape(len(rows), -1), owner

  def embed_concepts(idx, neg):
    idx = np.asarray(idx, np.int64)
    neg = np.asarray(neg, bool)
    dictionary = model.dictionary()
    rows = np.asarray(dictionary[idx], np.float32)
    if neg.any():
      rows[neg] = projection.project_negated(model.project_concepts, idx[neg], chunk)
    return rows

  return Space("line", label, embed_texts, embed_concepts,
               None if clauses is None else embed_clauses)

