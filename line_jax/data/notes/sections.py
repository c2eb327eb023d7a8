"""A note cut into texts: sections at their headers, then sentences, then texts of at most
`max_words` words."""

from __future__ import annotations

import re
from typing import Sequence

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


def split_sections(text: str, pattern: re.Pattern, keep_preamble: bool = True) -> list:
  """(section name, section text) in order; the name is the header in lower case."""
  matches = list(pattern.finditer(text))
  if not matches:
    return [(PREAMBLE, text)] if text.strip() else []
  out = []
  head = text[:matches[0].start()]
  if keep_preamble and head.strip():
    out.append((PREAMBLE, head))
  for k, m in enumerate(matches):
    end = matches[k + 1].start() if k + 1 < len(matches) else len(text)
    body = text[m.end():end]
    if body.strip():
      out.append((re.sub(r"\s+", " ", m.group(1).lower()), body))
  return out



def split_sentences(text: str) -> list:
  """Sentences as the extractor sees them (ending at . ! ? ; before a space or the end)."""
  parts = re.split(r"(?<=[.!?;])\s+|\n\s*\n", text)
  return [" ".join(p.split()) for p in parts if p.strip()]


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


def note_texts(text: str, pattern: re.Pattern, config) -> tuple:
  """(section, text) pairs of one note, and the number of over-long sentences cut."""
  out, cut = [], 0
  for section, body in split_sections(text, pattern, config.keep_preamble):
    texts, c = chunk_sentences(split_sentences(body), config.max_words,
                               config.text_unit == "sentence")
    cut += c
    out.extend((section, t) for t in texts)
  return out, cut
