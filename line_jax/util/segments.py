"""Segments of a text for concept retrieval: the whole text and its clauses.

One embedding of a sentence that names several findings ("skeletal involvement includes
short stature, kyphosis, and scoliosis") sits between them, and a concept that only one
clause names competes with every concept near the mean. Scoring each dictionary concept by
its best cosine over the text's segments (max pooling; the whole text is always one of
them) lets each clause find what it names. `LineModel.nearest_concepts(segments=True)` and
the real-text evaluation use it; the report's text -> concept protocol itself stays one
cosine per text.

The split is a regular expression (`config.eval.segment_pattern`): by default commas,
semicolons, colons, brackets, line breaks, sentence ends, and the words "and" / "or".
"""

from __future__ import annotations

import re
from typing import List, Sequence, Tuple

import numpy as np

DEFAULT_PATTERN = r"[,;:()\[\]\n]|\.(?=\s|[A-Z])|\band\b|\bor\b"


def split_segments(text: str, pattern: str = DEFAULT_PATTERN) -> List[str]:
  """[the whole text (stripped)] + its distinct non-empty clauses, in order of appearance.

  A clause is kept when it holds a letter or digit and is not the whole text again; an
  empty `pattern` gives the whole text alone.
  """
  if not isinstance(text, str):
    raise TypeError(f"split_segments takes a string, not a {type(text).__name__}")
  whole = text.strip()
  out = [whole]
  if not pattern:
    return out
  seen = {whole}
  for piece in re.split(pattern, text):
    piece = " ".join(piece.split())
    if piece and piece not in seen and re.search(r"\w", piece):
      seen.add(piece)
      out.append(piece)
  return out


def segment_table(texts: Sequence[str], pattern: str = DEFAULT_PATTERN
                  ) -> Tuple[List[str], np.ndarray]:
  """(every text's segments, one flat list; [P] int64 index of the text each belongs to,
  non-decreasing, every text with at least one segment)."""
  segments: List[str] = []
  owner: List[int] = []
  for i, text in enumerate(texts):
    pieces = split_segments(text, pattern)
    segments += pieces
    owner += [i] * len(pieces)
  return segments, np.asarray(owner, np.int64)


def clause_table(texts: Sequence[str], pattern: str = DEFAULT_PATTERN
                 ) -> Tuple[List[str], np.ndarray]:
  """`segment_table` without the whole texts: (every text's clauses, [P] int64 index of the
  text each belongs to, non-decreasing; a text without a clause has none)."""
  pieces, owner = segment_table(texts, pattern)
  clause = np.r_[False, owner[1:] == owner[:-1]] if len(owner) else np.zeros(0, bool)
  return [p for p, keep in zip(pieces, clause) if keep], owner[clause]


def clause_offsets(texts: Sequence[str], pattern: str = DEFAULT_PATTERN
                   ) -> Tuple[List[str], np.ndarray]:
  """`clause_table` as CSR: (every text's clauses, [len(texts) + 1] int64 offsets: text i's
  clauses are [offsets[i]:offsets[i + 1]])."""
  pieces, owner = clause_table(texts, pattern)
  offsets = np.zeros(len(texts) + 1, np.int64)
  np.cumsum(np.bincount(owner, minlength=len(texts)), out=offsets[1:])
  return pieces, offsets
