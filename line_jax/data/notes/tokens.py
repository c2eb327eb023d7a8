"""A note's texts as arrays of token ids, found with numpy on the texts' UTF-8 bytes.

`extract.tokenize` splits a text into words ([A-Za-z0-9]+), lower-cased and plural-folded,
and sentences (ending at . ! ? ; before a white space or the text's end, and at ; before an
ASCII letter). Here the same is found for all of a note's texts at once, without a Python
string per word: a word's characters are digits 1-36 of a base-37 number (mod 2**64),
computed for every word from one cumulative sum over the bytes, with the plural fold
applied to the number. A word of at most 12 characters is its own number (37**12 < 2**64),
so looking the numbers up among the dictionary words' is exact; a longer word is looked up
by its text, in the rare case that its number is one of a long dictionary word's.

Only ASCII letters and digits make words and only ASCII characters end sentences, so bytes
suffice: a character outside ASCII is bytes >= 0x80, none a letter, digit or sentence end.
The one non-ASCII question, whether the character after a sentence-end character is a
white space, is answered by decoding that character.
"""

from __future__ import annotations

import numpy as np

from line_jax.data import extract

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_BASE = len(_ALPHABET) + 1   # digits 1..36: no word is a number with a leading zero
_EXACT_CHARS = 12            # 37**12 < 2**64 <= 37**13


def _byte_table(chars: dict, dtype) -> np.ndarray:
  """byte -> value for the given characters, 0 for the others."""
  table = np.zeros(256, dtype)
  for c, value in chars.items():
    table[ord(c)] = value
  return table


# byte -> digit (either case), 0 for a byte of no word ([A-Za-z0-9] as extract._WORD_RE).
_CODE = _byte_table({**{c: i + 1 for i, c in enumerate(_ALPHABET)},
                     **{c.upper(): i + 1 for i, c in enumerate(_ALPHABET)}}, np.uint8)
# The characters that end a sentence before a white space (extract._SENTENCE_END_RE), and
# the one that also ends one before an ASCII letter (a byte whose _CODE is above 10).
_ENDS = _byte_table(dict.fromkeys(".!?;", True), bool)
_SEMICOLON = ord(";")
_ASCII_SPACE = np.array([chr(i).isspace() for i in range(128)] + [False] * 128)
_I, _E, _S, _U, _Y = (_ALPHABET.index(c) + 1 for c in "iesuy")
# After every text: a line break ends a sentence as a text's end does, and the NUL says
# where the text ended (a NUL within a text is made another byte of no word, no space and
# no sentence end, which tokenises the same).
_TEXT_END = "\n\x00\n"
# Distinct raw long words remembered before starting afresh (bounds memory on a corpus
# with millions of distinct long numbers and misspellings).
_MAX_CACHED_WORDS = 1 << 20


def word_number(word: str) -> int:
  """The base-37 number (mod 2**64) of a normalised word ([0-9a-z]+), as `Tokenizer`
  computes it for the words of a text."""
  h = 0
  for c in word:
    h = (h * _BASE + _ALPHABET.index(c) + 1) % (1 << 64)
  return h


class _Powers:
  """37**k and 37**-k mod 2**64 for k < size, grown on demand."""

  def __init__(self):
    self.up = self.down = np.ones(0, np.uint64)

  def get(self, size: int) -> tuple:
    if len(self.up) < size:
      size = max(size, 2 * len(self.up), 1 << 16)
      self.up, self.down = np.ones(size, np.uint64), np.ones(size, np.uint64)
      np.cumprod(np.full(size - 1, _BASE, np.uint64), out=self.up[1:])
      np.cumprod(np.full(size - 1, pow(_BASE, -1, 1 << 64), np.uint64), out=self.down[1:])
    return self.up, self.down


class _LongWordIds(dict):
  """Raw word -> token id by its text (lower case, plural fold, the vocabulary)."""

  def __init__(self, vocabulary: dict, fold_plurals: bool):
    super().__init__()
    self._vocabulary = vocabulary
    self._fold = fold_plurals

  def __missing__(self, word: str) -> int:
    if len(self) >= _MAX_CACHED_WORDS:
      self.clear()
    norm = word.lower()
    i = self[word] = self._vocabulary.get(extract.fold_plural(norm) if self._fold else norm, 0)
    return i


def _space_at(data: bytes, i: int) -> bool:
  """Whether the (non-ASCII) character whose UTF-8 bytes start at data[i] is a space."""
  lead = data[i]
  size = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
  return data[i:i + size].decode("utf-8", "surrogatepass").isspace()


class Tokenizer:
  """Token ids of a few texts' words in a row, as `extract.tokenize` and a vocabulary
  would give them."""

  def __init__(self, vocabulary: dict, fold_plurals: bool):
    """Args: vocabulary: normalised word -> id (>= 1); fold_plurals: as `tokenize`."""
    self.fold_plurals = fold_plurals
    short = [(word_number(w), i) for w, i in vocabulary.items() if len(w) <= _EXACT_CHARS]
    short.sort()
    self._short_keys = np.array([k for k, _ in short], np.uint64)
    self._short_ids = np.array([i for _, i in short], np.int64)
    self._long_keys = np.unique(np.array(
        [word_number(w) for w in vocabulary if len(w) > _EXACT_CHARS], np.uint64))
    self._long_ids = _LongWordIds(vocabulary, fold_plurals)
    self._powers = _Powers()

  def __call__(self, texts) -> tuple:
    """(ids, sentence, first): each word's token id (0: not in the vocabulary) and sentence
    index (non-decreasing; a text's end ends a sentence), and per text and one more the
    index of its first word."""
    if any("\x00" in text for text in texts):
      texts = [text.replace("\x00", "\x01") for text in texts]
    # A line break first: every word has a byte before it.
    data = ("\n" + _TEXT_END.join(texts) + _TEXT_END if texts else "\n").encode(
        "utf-8", "surrogatepass")
    b = np.frombuffer(data, np.uint8)
    code = _CODE.take(b)
    edge = np.diff((code > 0).view(np.int8))
    start = np.flatnonzero(edge == 1) + 1
    end = np.flatnonzero(edge == -1) + 1   # the text ends with a line break: all end
    # Sentence ends: . ! ? ; before a white space (the line breaks after a text included),
    # ; before an ASCII letter.
    ends = np.flatnonzero(_ENDS.take(b))
    after = b[ends + 1]
    is_end = _ASCII_SPACE.take(after) | ((b[ends] == _SEMICOLON) & (code[ends + 1] > 10))
    for k in np.flatnonzero(after >= 0x80).tolist():   # no ASCII letter: a space or not
      is_end[k] = _space_at(data, int(ends[k]) + 1)
    text_ends = np.flatnonzero(b == 0)
    breaks = np.sort(np.concatenate((ends[is_end], text_ends)))
    sentence = np.searchsorted(breaks, start)
    first = np.concatenate(([0], np.searchsorted(start, text_ends)))
    return self._ids(data, code, start, end), sentence, first

  def _ids(self, data: bytes, code: np.ndarray, start: np.ndarray, end: np.ndarray):
    """The token id of each word [start, end) of the bytes."""
    up, down = self._powers.get(len(code) + 1)
    # prefix[i] = sum of code[j] * 37**-j for j < i, so a word's number is
    # (prefix[end] - prefix[start]) * 37**(end - 1).
    prefix = np.zeros(len(code) + 1, np.uint64)
    np.cumsum(code * down[:len(code)], out=prefix[1:])
    size = end - start
    if self.fold_plurals:
      # extract.fold_plural: "...ies" -> "...y" past 4 characters, else a final "s" dropped
      # past 3 unless after s, u or i (the indices before a word are masked by its size).
      last, second, third = code[end - 1], code[end - 2], code[end - 3]
      ies = (size > 4) & (third == _I) & (second == _E) & (last == _S)
      s = ~ies & (size > 3) & (last == _S) & (second != _S) & (second != _U) & (second != _I)
      stem_end = end - np.where(ies, 3, s.astype(np.int64))
      number = (prefix[stem_end] - prefix[start]) * up[stem_end - 1]
      number[ies] = number[ies] * np.uint64(_BASE) + np.uint64(_Y)
      size = stem_end - start + ies
    else:
      number = (prefix[end] - prefix[start]) * up[end - 1]
    ids = np.zeros(len(start), np.int64)
    short = np.flatnonzero(size <= _EXACT_CHARS)
    if len(self._short_keys):
      at = np.minimum(np.searchsorted(self._short_keys, number[short]),
                      len(self._short_keys) - 1)
      found = self._short_keys[at] == number[short]
      ids[short[found]] = self._short_ids[at[found]]
    long = np.flatnonzero(size > _EXACT_CHARS)
    if len(long) and len(self._long_keys):
      at = np.minimum(np.searchsorted(self._long_keys, number[long]),
                      len(self._long_keys) - 1)
      for k in long[self._long_keys[at] == number[long]].tolist():
        ids[k] = self._long_ids[data[start[k]:end[k]].decode("ascii")]
    return ids
