"""The concept extractor of the notes import: the dataset's dictionary, and a tokeniser that
builds no per-word objects."""

from __future__ import annotations

import bisect
import os
import re

import numpy as np
import pyarrow.parquet as pq

from line_jax.data import extract
from line_jax.data.dataset import DataError, data_error
from line_jax.data.hpo.ontology import ConceptTable, dictionary_surfaces
from line_jax.data.notes.settings import with_defaults


# fold_plural as substitutions over a whole text (each starts with a literal, which the
# regex engine scans for quickly): "...ies" -> "...y" in words of more than 4 characters,
# then a final "s" dropped in words of more than 3 whose second-last letter is not s, u, i.
_IES_RE = re.compile(r"ies(?<=[a-z0-9]{2}ies)\b")
_PLURAL_S_RE = re.compile(r"s(?<=[a-z0-9]{2}[a-hj-rtv-z0-9]s)\b")


class _SentenceView:
  """`tokens[i].sentence` and `len(tokens)` for `extract._is_negated`, without Tokens."""

  class _S:
    __slots__ = ("sentence",)

    def __init__(self, k):
      self.sentence = k

  def __init__(self, sentence_of_token: list):
    self._of = sentence_of_token
    self._objects = {}

  def __len__(self):
    return len(self._of)

  def __getitem__(self, i):
    k = self._of[i]
    obj = self._objects.get(k)
    if obj is None:
      obj = self._objects[k] = self._S(k)
    return obj


def _find(matcher: extract.PhraseMatcher, joined: str, ends: np.ndarray) -> list:
  """`matcher.find`, given the token ends (offsets of the space after each token), with the
  overlap resolution done on arrays.

  The same greedy choice as PhraseMatcher.find (longest first, then leftmost; a candidate
  overlapping a chosen one is dropped), taken one length at a time from the longest: a
  candidate of length L is dropped if it overlaps a longer chosen one, and among the rest,
  sorted by start, one overlapping the last kept is dropped (equal lengths: only the last
  kept one can reach it). So the same result, without a Python step per candidate.
  """
  hits = matcher.hits(joined)
  if not hits:
    return []
  hits = np.asarray(hits, np.int64)
  phrase = hits[:, 1]
  length = matcher.length_array[phrase]
  end = np.searchsorted(ends, hits[:, 0]) + 1
  start = end - length
  taken = np.zeros(len(ends) + 1, np.int64)
  chosen = []
  for size in np.unique(length)[::-1].tolist():
    members = np.flatnonzero(length == size)
    members = members[np.argsort(start[members], kind="stable")]
    s, e = start[members], end[members]
    before = np.concatenate(([0], np.cumsum(taken)))
    free = before[e] == before[s]
    members, s, e = members[free], s[free], e[free]
    if len(s) > 1 and bool(np.any(s[1:] < e[:-1])):
      keep, reach = [], -1
      for k, (a, b) in enumerate(zip(s.tolist(), e.tolist())):
        if a >= reach:
          keep.append(k)
          reach = b
      members, s, e = members[keep], s[keep], e[keep]
    if len(s):
      taken[(s[:, None] + np.arange(size)).ravel()] = 1
      chosen.append(members)
  if not chosen:
    return []
  chosen = np.concatenate(chosen)
  chosen = chosen[np.argsort(start[chosen], kind="stable")]
  payloads = matcher.payloads
  return [(a, b, payloads[i]) for a, b, i in zip(start[chosen].tolist(), end[chosen].tolist(),
                                                  phrase[chosen].tolist())]


class StreamingExtractor(extract.ConceptExtractor):
  """`ConceptExtractor` with a tokeniser that builds no per-word objects.

  The same automata, negation rules and results as the base class (the tests compare them
  text by text); words are found by one regular expression per sentence and plural-folded
  by two substitutions over the whole text, which is what makes hundreds of 2,000-word
  notes per second possible.
  """

  def extract(self, text: str) -> extract.Extraction:
    return self.extract_many([text])[0]

  def extract_many(self, texts) -> list:
    """`extract` of each text, with one pass of each automaton over all of them.

    The texts are joined with sentence breaks between them; no dictionary phrase or trigger
    spans a break and a negation scope ends at one, so each text's result is what `extract`
    gives it alone (the tests compare them); a note's texts in one call save the per-call
    work that dominates for short texts.
    """
    segments, counts, spans = [], [], []   # spans: (first token, num tokens) per text
    findall = extract._WORD_RE.findall
    num_tokens = 0
    for text in texts:
      first = num_tokens
      for piece in extract._SENTENCE_END_RE.split(text):
        words = findall(piece)
        if words:
          segments.append(" ".join(words))
          counts.append(len(words))
          num_tokens += len(words)
      spans.append((first, num_tokens - first))
    if not num_tokens:
      return [extract.Extraction((), 0, 0) for _ in texts]
    joined = (" " + (" " + extract._SENTENCE_BREAK + " ").join(segments) + " ").lower()
    if self.fold_plurals:
      joined = _PLURAL_S_RE.sub("", _IES_RE.sub("y", joined))
    # A token ends where a space follows a word character (not the space after a break).
    chars = np.frombuffer(joined.encode("ascii"), np.uint8)
    ends = np.flatnonzero((chars[1:] == 32) & (chars[:-1] != 32) & (chars[:-1] != 124)) + 1
    found = _find(self._concepts, joined, ends)
    taken = bytearray(num_tokens)
    for start, end, _ in found:
      taken[start:end] = b"\x01" * (end - start)
    triggers = ([t for t in _find(self._triggers, joined, ends)
                 if 1 not in taken[t[0]:t[1]]] if found else [])
    tokens = None   # each token's sentence, built only when a trigger needs it
    if triggers:
      sentence_of = []
      for sentence, n in enumerate(counts):
        sentence_of.extend([sentence] * n)
      tokens = _SentenceView(sentence_of)
    out, k = [], 0
    for first, count in spans:
      stop = first + count
      mentions, scope = [], None
      while k < len(found) and found[k][0] < stop:
        start, end, concept_id = found[k]
        k += 1
        if scope is None:
          scope = _in_span(triggers, first, stop)
        negated = bool(scope) and extract._is_negated(start, end, tokens, scope, self.window)
        mentions.append(extract.Mention(concept_id, negated, start - first, end - first))
      covered = taken.count(1, first, stop) if mentions else 0
      out.append(extract.Extraction(tuple(mentions), count, covered))
    return out


def _in_span(triggers: list, first: int, stop: int) -> list:
  """The triggers (sorted by start) within tokens [first, stop)."""
  lo = bisect.bisect_left(triggers, (first,))
  hi = bisect.bisect_left(triggers, (stop,))
  return triggers[lo:hi]


def _dictionary(dataset: str) -> ConceptTable:
  """The dataset's concepts as the HPO builder's ConceptTable (term_id/kind if present)."""
  path = os.path.join(dataset, "concepts.parquet")
  if not os.path.exists(path):
    raise DataError(f"{path}: file not found (run line_jax.data.umls first, or give a "
                    "dataset folder with concepts.parquet)")
  table = pq.read_table(path)
  for field in ("concept_id", "name"):
    if field not in table.column_names:
      raise data_error(path, None, field, f"missing column; found {table.column_names}")
  ids = table.column("concept_id").to_pylist()
  names = table.column("name").to_pylist()
  n = len(ids)
  term_ids = table.column("term_id").to_pylist() if "term_id" in table.column_names else ids
  kinds = table.column("kind").to_pylist() if "kind" in table.column_names else ["term"] * n
  groups = table.column("group").to_pylist() if "group" in table.column_names else [""] * n
  return ConceptTable(ids, names, groups, term_ids, kinds, [])


def make_extractor(dataset: str, config) -> StreamingExtractor:
  """The dictionary of `dataset` (names first, then synonym entries) as an extractor."""
  table = _dictionary(dataset)
  config = with_defaults(config)
  surfaces = dictionary_surfaces(table, set(table.term_ids), config.map_synonyms_to_term,
                                 tuple(config.dictionary_synonyms))
  return StreamingExtractor(surfaces, fold_plurals=config.fold_plurals,
                            min_chars=config.min_match_chars, window=config.negation_window,
                            stop_phrases=tuple(config.stop_phrases))
