"""A note cut into texts: sections at their headers, then sentences, then texts of at most
`max_words` words."""

from __future__ import annotations

import functools
import re
from typing import Optional, Sequence

# The paper's sections (MIMIC-IV): discharge summaries, then radiology reports.
DISCHARGE_SECTIONS = (
    "chief complaint", "major surgical or invasive procedure", "history of present illness",
    "past medical history", "social history", "family history", "physical exam",
    "pertinent results", "brief hospital course", "medications on admission",
    "discharge medications", "discharge disposition", "discharge diagnosis",
    "discharge condition", "discharge instructions", "followup instructions",
    "follow-up instructions")
RADIOLOGY_SECTIONS = ("examination", "indication", "technique", "comparison", "findings",
                      "finding", "procedures", "procedure", "impression")
PREAMBLE = "preamble"


def header_pattern(headers: Sequence[str]) -> re.Pattern:
  """A header opens a line (after spaces) and ends with ':'; longest alternatives first."""
  alternatives = sorted({h.strip().lower() for h in headers if h.strip()}, key=len,
                        reverse=True)
  body = "|".join(re.escape(h).replace(r"\ ", r"\s+") for h in alternatives)
  return re.compile(rf"^[ \t]*({body})[ \t]*:", re.IGNORECASE | re.MULTILINE)


@functools.lru_cache(maxsize=16)
def _after_line_break(pattern: re.Pattern) -> Optional[re.Pattern]:
  """A `header_pattern` with '^' made a line break, to run on '\\n' + text (None for
  another pattern): the regex engine scans quickly for a literal first character, where
  '^' is tried at every character (ten times the time on a note)."""
  if not (pattern.pattern.startswith("^[ \\t]*(") and pattern.flags & re.MULTILINE):
    return None
  return re.compile("\n" + pattern.pattern[1:], pattern.flags)


def _headers(text: str, pattern: re.Pattern) -> list:
  """(start, end, header) of each match of `pattern` in `text`."""
  fast = _after_line_break(pattern)
  if fast is None:
    return [(m.start(), m.end(), m.group(1)) for m in pattern.finditer(text)]
  # Offsets in '\n' + text: a match starts at the break before its line, so its start is
  # the line's start in `text`; its end is one more than in `text`.
  return [(m.start(), m.end() - 1, m.group(1)) for m in fast.finditer("\n" + text)]


def split_sections(text: str, pattern: re.Pattern, keep_preamble: bool = True) -> list:
  """(section name, section text) in order; the name is the header in lower case."""
  matches = _headers(text, pattern)
  if not matches:
    return [(PREAMBLE, text)] if text.strip() else []
  out = []
  head = text[:matches[0][0]]
  if keep_preamble and head.strip():
    out.append((PREAMBLE, head))
  for k, (_, header_end, header) in enumerate(matches):
    end = matches[k + 1][0] if k + 1 < len(matches) else len(text)
    body = text[header_end:end]
    if body.strip():
      out.append((re.sub(r"\s+", " ", header.lower()), body))
  return out



# A sentence ends at white space after . ! ? ; or at a blank line (split_sentences). Found
# in two steps whose patterns start with a literal or a character class, which the regex
# engine scans for quickly (one pattern with a look-behind tries every character).
_BLANK_LINE_RE = re.compile(r"\n\s*\n")
_SENTENCE_END_RE = re.compile(r"([.!?;])\s+")


def _sentence_words(text: str) -> list:
  """The words of each sentence of `split_sentences`.

  A white-space run is one sentence break if a sentence-end character precedes it or it
  holds two line breaks; splitting at blank lines first, then at the ends (kept with the
  sentence before), finds the same breaks.
  """
  out = []
  for block in _BLANK_LINE_RE.split(text):
    parts = _SENTENCE_END_RE.split(block)   # text, end, text, end, ..., text
    for k in range(0, len(parts) - 1, 2):
      words = (parts[k] + parts[k + 1]).split()
      if words:
        out.append(words)
    words = parts[-1].split()
    if words:
      out.append(words)
  return out


def split_sentences(text: str) -> list:
  """Sentences as the extractor sees them (ending at . ! ? ; before a space or the end),
  also broken at blank lines, with white space runs made one space."""
  return [" ".join(words) for words in _sentence_words(text)]


def chunk_sentences(sentences: Sequence[str], max_words: int, per_sentence: bool) -> tuple:
  """Texts of whole sentences up to `max_words` words; returns (texts, sentences cut)."""
  texts, current, words, cut = [], [], 0, 0
  for sentence in sentences:
    tokens = sentence.split()
    if len(tokens) > max_words:
      tokens, cut = tokens[:max_words], cut + 1
      sentence = " ".join(tokens)
    if per_sentence:
      texts.append(sentence)
      continue
    if current and words + len(tokens) > max_words:
      texts.append(" ".join(current))
      current, words = [], 0
    current.append(sentence)
    words += len(tokens)
  if current:
    texts.append(" ".join(current))
  return texts, cut


def _chunk_words(sentences: Sequence[list], max_words: int, per_sentence: bool) -> tuple:
  """`chunk_sentences` of sentences given as their words (as `_sentence_words` gives)."""
  texts, current, cut = [], [], 0
  for words in sentences:
    if len(words) > max_words:
      words, cut = words[:max_words], cut + 1
    if per_sentence:
      texts.append(" ".join(words))
      continue
    if current and len(current) + len(words) > max_words:
      texts.append(" ".join(current))
      current = []
    current += words   # sentences joined by a space: their words joined by a space
  if current:
    texts.append(" ".join(current))
  return texts, cut


def note_texts(text: str, pattern: re.Pattern, config) -> tuple:
  """(section, text) pairs of one note, and the number of over-long sentences cut."""
  out, cut = [], 0
  max_words, per_sentence = config.max_words, config.text_unit == "sentence"
  for section, body in split_sections(text, pattern, config.keep_preamble):
    texts, c = _chunk_words(_sentence_words(body), max_words, per_sentence)
    cut += c
    out.extend((section, t) for t in texts)
  return out, cut
