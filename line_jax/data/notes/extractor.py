"""The concept extractor of the notes import: the dataset's dictionary, and a tokeniser and
phrase matcher that work on a note's token ids as arrays."""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from line_jax.data import extract
from line_jax.data.dataset import DataError, optional_column, read_table, require_columns
from line_jax.data.hpo.ontology import ConceptTable, dictionary_surfaces
from line_jax.data.notes.settings import with_defaults
from line_jax.data.notes.token_match import TokenPhrases, resolve
from line_jax.data.notes.tokens import Tokenizer

_KINDS = {"pre": 0, "post": 1, "term": 2, "pseudo": 3}
_PRE, _POST = _KINDS["pre"], _KINDS["post"]


def _negated(m_start, m_end, t_start, t_end, t_kind, sentence, window: int) -> np.ndarray:
  """`extract._is_negated` of every mention at once, given the triggers (sorted, disjoint).

  Walking back from a mention, `_is_negated` passes over post triggers of its sentence and
  the first other trigger decides; a post trigger of another sentence stops the walk, but
  so would any trigger before it. So the nearest non-post trigger ending at or before the
  mention decides: a pre trigger of the same sentence within the window negates. Forwards
  the same with pre and post swapped.
  """
  m_sentence = sentence[m_start]
  t_sentence = sentence[t_start]
  negated = np.zeros(len(m_start), bool)
  for kind, other in ((_PRE, _POST), (_POST, _PRE)):
    keep = t_kind != other
    if not keep.any():
      continue
    starts, ends, kinds, sentences = (t_start[keep], t_end[keep], t_kind[keep],
                                      t_sentence[keep])
    if kind == _PRE:
      j = np.searchsorted(ends, m_start, side="right") - 1
      exists, gap = j >= 0, m_start - ends[np.maximum(j, 0)]
    else:
      j = np.searchsorted(starts, m_end, side="left")
      exists = j < len(starts)
      gap = starts[np.minimum(j, len(starts) - 1)] - m_end
    j = np.clip(j, 0, len(starts) - 1)
    hit = exists & (kinds[j] == kind) & (sentences[j] == m_sentence)
    if window > 0:
      hit &= gap < window
    negated |= hit
  return negated


class TextConcepts(NamedTuple):
  """A text's `Extraction.concepts()` and word counts."""
  concept_ids: list
  negated: list
  num_words: int
  covered_words: int

  @property
  def rho(self) -> float:
    """As `Extraction.rho`."""
    return extract.rho_of(self.covered_words, self.num_words)


class _Found(NamedTuple):
  """The chosen mentions of a few texts' tokens in a row (`StreamingExtractor._match`)."""
  num_words: list       # per text
  first: np.ndarray     # per text and one more: index of its first token
  covered_words: list   # per text
  bounds: list          # per text and one more: index of its first mention
  start: np.ndarray     # per mention: first token
  end: np.ndarray       # per mention: token after the last
  phrase: np.ndarray    # per mention: index into the dictionary's phrases
  negated: np.ndarray   # per mention


class StreamingExtractor(extract.ConceptExtractor):
  """`ConceptExtractor` whose matching works on a note's token ids as arrays.

  The same dictionary, negation rules and results as the base class (the tests compare
  them text by text); a call's texts are tokenised at once by `Tokenizer` (numpy on their
  bytes) and phrases are found among the token ids by `TokenPhrases` (hashes looked up
  with numpy), so no Python object is made per word or per dictionary hit. That is what
  makes hundreds of 2,000-word notes per second possible.
  """

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    # Concept id per phrase, to pick a text's ids with one fancy index.
    self._payload_array = np.empty(len(self._concepts.payloads), object)
    self._payload_array[:] = self._concepts.payloads
    concepts, triggers = self._concepts.phrases, self._triggers.phrases
    vocabulary = {}
    for phrase in concepts + triggers:
      for word in phrase.split(" "):
        vocabulary.setdefault(word, len(vocabulary) + 1)
    self._tokenize = Tokenizer(vocabulary, self.fold_plurals)
    size = len(vocabulary) + 1
    self._concept_phrases = TokenPhrases(
        [[vocabulary[w] for w in p.split(" ")] for p in concepts], size)
    self._trigger_phrases = TokenPhrases(
        [[vocabulary[w] for w in p.split(" ")] for p in triggers], size)
    self._trigger_kinds = np.array([_KINDS[k] for k in self._triggers.payloads], np.int64)

  def extract(self, text: str) -> extract.Extraction:
    return self.extract_many([text])[0]

  def extract_many(self, texts) -> list:
    """`extract` of each text, with the matching done once over all of them (`_match`)."""
    texts = list(texts)      # any iterable of strings, a generator too: read twice below
    found = self._match(texts)
    offset = found.first[np.searchsorted(found.first, found.start, side="right") - 1]
    payloads, mention = self._concepts.payloads, extract.Mention
    mentions = [mention(payloads[p], n, s, e) for p, n, s, e in zip(
        found.phrase.tolist(), found.negated.tolist(), (found.start - offset).tolist(),
        (found.end - offset).tolist())]
    bounds = found.bounds
    return [extract.Extraction(tuple(mentions[bounds[k]:bounds[k + 1]]), found.num_words[k],
                               found.covered_words[k]) for k in range(len(texts))]

  def concepts_many(self, texts) -> list:
    """`TextConcepts` of each text: what the notes import keeps of `extract_many`, without
    a `Mention` object per mention (which would cost as much as the matching)."""
    texts = list(texts)
    found = self._match(texts)
    ids = self._payload_array[found.phrase].tolist()
    negated, bounds = found.negated.tolist(), found.bounds
    out = []
    for k in range(len(texts)):
      # Extraction.concepts(): one per (id, polarity), in order of first mention.
      pairs = dict.fromkeys(zip(ids[bounds[k]:bounds[k + 1]],
                                negated[bounds[k]:bounds[k + 1]]))
      out.append(TextConcepts([c for c, _ in pairs], [n for _, n in pairs],
                              found.num_words[k], found.covered_words[k]))
    return out

  def _match(self, texts) -> _Found:
    """The chosen mentions of all texts, as arrays over the texts' tokens in a row.

    The texts' tokens are put one after the other with a sentence end between texts; no
    dictionary phrase or trigger spans a sentence end and a negation scope ends at one, so
    each text's result is what `extract` gives it alone (the tests compare them); a note's
    texts in one call save the per-call work that dominates for short texts.
    """
    ids, sentence, first = self._tokenize(texts)
    num_tokens = len(ids)
    start, size, phrase = self._concept_phrases.hits(ids, sentence)
    chosen = resolve(start, size, num_tokens)
    start, end, phrase = start[chosen], start[chosen] + size[chosen], phrase[chosen]
    # covered[i]: words before token i that lie in a chosen phrase (phrases are disjoint).
    inside = np.cumsum(np.bincount(start, minlength=num_tokens + 1)
                       - np.bincount(end, minlength=num_tokens + 1))[:num_tokens]
    covered = np.concatenate(([0], np.cumsum(inside)))
    negated = np.zeros(len(start), bool)
    if len(start):
      t_start, t_size, t_phrase = self._trigger_phrases.hits(ids, sentence)
      t_chosen = resolve(t_start, t_size, num_tokens)
      t_start, t_end = t_start[t_chosen], t_start[t_chosen] + t_size[t_chosen]
      free = covered[t_end] == covered[t_start]   # a trigger inside a concept is not one
      if free.any():
        negated = _negated(start, end, t_start[free], t_end[free],
                           self._trigger_kinds[t_phrase[t_chosen][free]], sentence,
                           self.window)
    return _Found(np.diff(first).tolist(), first,
                  (covered[first[1:]] - covered[first[:-1]]).tolist(),
                  np.searchsorted(start, first).tolist(), start, end, phrase, negated)


def _dictionary(dataset: str) -> ConceptTable:
  """The dataset's concepts as the HPO builder's ConceptTable (term_id/kind if present)."""
  path = os.path.join(dataset, "concepts.parquet")
  if not os.path.exists(path):
    raise DataError(f"{path}: file not found (run line_jax.data.umls first, or give a "
                    "dataset folder with concepts.parquet)")
  table = read_table(path)
  require_columns(path, table, ("concept_id", "name"))
  ids = table.column("concept_id").to_pylist()
  names = table.column("name").to_pylist()
  n = len(ids)
  term_ids = optional_column(table, "term_id", ids)
  kinds = optional_column(table, "kind", ["term"] * n)
  groups = optional_column(table, "group", [""] * n)
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
