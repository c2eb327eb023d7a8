"""Dictionary concept extraction with NegEx/ConText-style negation, like NILE in the paper.

Choice of tools: matching uses `pyahocorasick` (a maintained C Aho-Corasick automaton; one
pass over a text finds every dictionary phrase at once, which keeps tens of thousands of
texts against ~40k surface forms to a few seconds). Negation is a small rule set written
here rather than medspacy's ConText: medspacy pulls in spaCy and its models for what is,
for our purpose, a list of trigger phrases and a scope rule, and we want the rules, the
tokenisation and the word counts behind rho to be one deterministic, dependency-light piece.

Matching is on normalised word tokens: lower case, punctuation dropped (a hyphen or slash
splits words), optionally a light plural fold ("seizures" -> "seizure", "abnormalities" ->
"abnormality"). A dictionary phrase only matches whole tokens inside one sentence; where
matches overlap the longest wins (then the leftmost).

Negation (after Chapman et al.'s NegEx and Harkema et al.'s ConText):
- a pre-negation trigger ("no", "denies", "without", "negative for", ...) negates the
  concepts after it, a post-negation trigger ("was ruled out", "is absent", ...) those
  before it;
- the scope ends at the sentence end, at a termination term ("but", "however",
  "although", "except", ...) or after `window` words (0 = no word limit);
- pseudo-triggers ("no increase", "not ruled out", ...) are consumed and negate nothing;
- a trigger that lies inside a matched concept ("Absence of the thumb" as a dictionary
  entry) is part of the concept, not a trigger.

rho = words covered by matched concepts / words of the text (the paper's alignment weight).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Optional, Sequence

import ahocorasick

PRE_NEGATION = (
    "no", "not", "without", "denies", "denied", "deny", "denying", "negative for",
    "absence of", "free of", "ruled out", "rules out", "rule out", "no evidence of",
    "no sign of", "no signs of", "no history of", "never had", "never", "nor",
    "did not have", "does not have", "do not have", "has not had", "not have", "no known",
    "failed to reveal", "fails to reveal", "no further", "lack of", "lacks",
)
POST_NEGATION = (
    "was ruled out", "were ruled out", "is ruled out", "are ruled out",
    "has been ruled out", "have been ruled out", "is absent", "are absent", "was absent",
    "were absent", "not seen", "was not seen", "were not seen", "not observed",
    "was not observed", "were not observed", "not present", "is not present",
    "are not present", "was not present", "were not present", "was excluded",
    "were excluded", "has been excluded", "have been excluded", "not detected",
    "was not detected", "were not detected",
)
TERMINATION = (
    "but", "however", "although", "though", "except", "apart from", "aside from", "yet",
    "whereas", "nevertheless", "instead",
)
PSEUDO_NEGATION = (
    "no increase", "no change", "no significant change", "not only", "not necessarily",
    "without difficulty", "not ruled out", "cannot be ruled out", "can not be ruled out",
    "could not be ruled out", "not be ruled out", "not excluded", "not certain",
    "gram negative",
)

_WORD_RE = re.compile(r"[A-Za-z0-9]+")
# A sentence ends at . ! ? ; followed by white space or the end of the text, and at a
# semicolon followed by an ASCII letter: sentences joined without a space ("... have not been
# reported.;Visual deficits including myopia") otherwise run into one, and a negation
# trigger of the first would reach the findings of the second. A full stop before a letter
# does not end one ("E.Coli", "St.John's").
_SENTENCE_END_RE = re.compile(r"[.!?;](?=\s|$)|;(?=[A-Za-z])")
_SENTENCE_BREAK = "|"  # placed between sentences in the normalised string; never a token


@dataclasses.dataclass(frozen=True)
class Token:
  """A word of the text: normalised form, character span in the original, sentence index."""
  norm: str
  start: int
  end: int
  sentence: int


@dataclasses.dataclass(frozen=True)
class Mention:
  """A matched concept: tokens [start, end) of the text, polarity, matched surface id."""
  concept_id: str
  negated: bool
  start: int
  end: int


def rho_of(covered_words: int, num_words: int) -> float:
  """Fraction of words covered by matched concepts (0 for a text without words)."""
  return covered_words / num_words if num_words else 0.0


@dataclasses.dataclass(frozen=True)
class Extraction:
  """The mentions found in one text and the word counts behind rho."""
  mentions: tuple
  num_words: int
  covered_words: int

  @property
  def rho(self) -> float:
    """Fraction of words covered by matched concepts (0 when nothing matched)."""
    return rho_of(self.covered_words, self.num_words)

  def concepts(self) -> tuple:
    """(concept ids, negated flags) in order of first mention, one per (id, polarity)."""
    return unique_mentions([m.concept_id for m in self.mentions],
                           [m.negated for m in self.mentions])


def unique_mentions(ids, negated) -> tuple:
  """(concept ids, negated flags) of mentions in order of first mention, one per (id,
  polarity)."""
  seen, out_ids, out_neg = set(), [], []
  for c, n in zip(ids, negated):
    if (c, n) not in seen:
      seen.add((c, n))
      out_ids.append(c)
      out_neg.append(n)
  return out_ids, out_neg


def fold_plural(word: str) -> str:
  """A light plural fold, applied alike to dictionary and text ("cysts" -> "cyst")."""
  if len(word) > 4 and word.endswith("ies"):
    return word[:-3] + "y"
  if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
    return word[:-1]
  return word


def tokenize(text: str, fold_plurals: bool = True) -> list:
  """Splits a text into normalised `Token`s with sentence indices."""
  ends = [m.start() for m in _SENTENCE_END_RE.finditer(text)]
  tokens, sentence, e = [], 0, 0
  for m in _WORD_RE.finditer(text):
    while e < len(ends) and ends[e] < m.start():
      sentence, e = sentence + 1, e + 1
    word = m.group(0).lower()
    tokens.append(Token(fold_plural(word) if fold_plurals else word, m.start(), m.end(),
                        sentence))
  return tokens


def normalize_phrase(phrase: str, fold_plurals: bool = True) -> str:
  """The normalised form a dictionary phrase is matched under (tokens joined by spaces)."""
  return " ".join(t.norm for t in tokenize(phrase, fold_plurals))


def _joined(tokens: Sequence[Token]) -> tuple:
  """' tok tok | tok ' and, per character offset of a token's end, the token index."""
  parts, end_to_token, pos, prev_sentence = [" "], {}, 1, 0
  for i, tok in enumerate(tokens):
    if tok.sentence != prev_sentence:
      parts.append(_SENTENCE_BREAK + " ")
      pos += 2
      prev_sentence = tok.sentence
    parts.append(tok.norm + " ")
    pos += len(tok.norm)
    end_to_token[pos] = i  # index of the space after the token
    pos += 1
  return "".join(parts), end_to_token


class PhraseMatcher:
  """Whole-token, longest-match phrase lookup over normalised text.

  The automaton's value for a phrase is its index into `phrases`, `lengths` (tokens per
  phrase) and `payloads`, so that a scan's hits are pairs of ints.
  """

  def __init__(self, phrases: Iterable[tuple]):
    """Args: phrases: (normalised phrase, payload); the first payload of a phrase wins."""
    self._automaton = ahocorasick.Automaton()
    self.phrases, self.lengths, self.payloads = [], [], []
    self.num_duplicates = 0
    for phrase, payload in phrases:
      if not phrase:
        continue
      key = f" {phrase} "
      if key in self._automaton:
        self.num_duplicates += 1
        continue
      self._automaton.add_word(key, len(self.payloads))
      self.phrases.append(phrase)
      self.lengths.append(len(phrase.split()))
      self.payloads.append(payload)
    self.num_phrases = len(self.payloads)
    if self.num_phrases:
      self._automaton.make_automaton()

  def hits(self, joined: str) -> list:
    """(offset of the trailing space, phrase index) of every phrase occurrence."""
    return list(self._automaton.iter(joined)) if self.num_phrases else []

  def find(self, joined: str, end_to_token: dict) -> list:
    """Non-overlapping (start token, end token, payload), longest first then leftmost."""
    candidates = []
    for end_char, i in self.hits(joined):
      last = end_to_token[end_char]  # iter reports the trailing space's offset
      candidates.append((last + 1 - self.lengths[i], last + 1, self.payloads[i]))
    candidates.sort(key=lambda c: (c[0] - c[1], c[0]))
    taken, chosen = set(), []
    for start, end, payload in candidates:
      if not taken.intersection(range(start, end)):
        taken.update(range(start, end))
        chosen.append((start, end, payload))
    chosen.sort()
    return chosen


@dataclasses.dataclass(frozen=True)
class NegationRules:
  """Trigger phrase lists (raw text; normalised when the extractor is built)."""
  pre: tuple = PRE_NEGATION
  post: tuple = POST_NEGATION
  termination: tuple = TERMINATION
  pseudo: tuple = PSEUDO_NEGATION


class ConceptExtractor:
  """Finds dictionary concepts in text and marks each as negated or not."""

  def __init__(self, surfaces: Iterable[tuple], rules: NegationRules = NegationRules(),
               fold_plurals: bool = True, min_chars: int = 3, window: int = 0,
               stop_phrases: Sequence[str] = ()):
    """Builds the automata.

    Args:
      surfaces: (surface text, concept id) in priority order: where two concepts share a
        normalised surface the first one listed is emitted.
      rules: negation trigger lists.
      fold_plurals: apply `fold_plural` to every word of texts and surfaces.
      min_chars: surfaces whose normalised form is shorter are not matched.
      window: a negation scope spans at most this many words (0 = up to the sentence end or
        a termination term).
      stop_phrases: surfaces never matched (common words that happen to be concept names).
    """
    self.fold_plurals = fold_plurals
    self.window = window
    stops = {normalize_phrase(s, fold_plurals) for s in stop_phrases}
    entries, self.num_too_short, self.num_stopped = [], 0, 0
    for surface, concept_id in surfaces:
      phrase = normalize_phrase(surface, fold_plurals)
      if len(phrase.replace(" ", "")) < min_chars:
        self.num_too_short += 1
      elif phrase in stops:
        self.num_stopped += 1
      else:
        entries.append((phrase, concept_id))
    self._concepts = PhraseMatcher(entries)
    triggers = []
    for kind, phrases in (("pre", rules.pre), ("post", rules.post),
                          ("term", rules.termination), ("pseudo", rules.pseudo)):
      triggers.extend((normalize_phrase(p, fold_plurals), kind) for p in phrases)
    self._triggers = PhraseMatcher(triggers)

  @property
  def num_surfaces(self) -> int:
    """Distinct normalised surfaces in the dictionary."""
    return self._concepts.num_phrases

  @property
  def num_ambiguous_surfaces(self) -> int:
    """Surfaces listed for more than one concept (the first listed is emitted)."""
    return self._concepts.num_duplicates

  def extract(self, text: str) -> Extraction:
    """Concept mentions of `text` with polarity, and the word counts behind rho."""
    tokens = tokenize(text, self.fold_plurals)
    joined, end_to_token = _joined(tokens)
    found = self._concepts.find(joined, end_to_token)
    covered = set()
    for start, end, _ in found:
      covered.update(range(start, end))
    triggers = [t for t in self._triggers.find(joined, end_to_token)
                if not covered.intersection(range(t[0], t[1]))]
    mentions = tuple(
        Mention(concept_id, _is_negated(start, end, tokens, triggers, self.window),
                start, end)
        for start, end, concept_id in found)
    return Extraction(mentions, len(tokens), len(covered))


def _is_negated(start: int, end: int, tokens: Sequence[Token], triggers: Sequence[tuple],
                window: int) -> bool:
  """Whether a pre trigger before, or a post trigger after, has the span in its scope."""
  sentence = tokens[start].sentence
  limit = window if window > 0 else len(tokens)
  # Pre triggers: the nearest trigger or terminator before the span decides.
  for t_start, t_end, kind in reversed([t for t in triggers if t[1] <= start]):
    if tokens[t_start].sentence != sentence or kind in ("term", "pseudo"):
      break
    if kind == "pre":
      if start - t_end < limit:
        return True
      break
  # Post triggers: the nearest trigger or terminator after the span decides.
  for t_start, t_end, kind in [t for t in triggers if t[0] >= end]:
    if tokens[t_start].sentence != sentence or kind in ("term", "pseudo"):
      break
    if kind == "post":
      return t_start - end < limit
  return False


def extract_all(extractor: ConceptExtractor, texts: Iterable[str]) -> list:
  """`extractor.extract` over many texts."""
  return [extractor.extract(t) for t in texts]


def micro_precision_recall(predicted: Sequence[Sequence[tuple]],
                           truth: Sequence[Sequence[tuple]]) -> dict:
  """Micro-averaged precision/recall/F1 over per-text sets of (concept id, negated).

  A concept found with the wrong polarity counts as a false positive and a false negative.
  """
  tp = fp = fn = 0
  for pred, true in zip(predicted, truth):
    pred, true = set(pred), set(true)
    tp += len(pred & true)
    fp += len(pred - true)
    fn += len(true - pred)
  precision = tp / (tp + fp) if tp + fp else 0.0
  recall = tp / (tp + fn) if tp + fn else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return dict(precision=precision, recall=recall, f1=f1, true_positives=tp,
              false_positives=fp, false_negatives=fn)


def concept_lists(extraction: Extraction, id_map: Optional[dict] = None) -> list:
  """(id, negated) tuples of an extraction, ids mapped through `id_map` when given."""
  ids, negated = extraction.concepts()
  if id_map is not None:
    ids = [id_map.get(i, i) for i in ids]
  return list(zip(ids, negated))
