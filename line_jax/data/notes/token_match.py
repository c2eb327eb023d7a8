"""Dictionary phrases found in a note's token ids, one phrase length at a time on arrays.

A note becomes an array of token ids (0 for a word in no phrase) and each word's sentence
index. A phrase of L tokens is a rolling hash of its ids; the windows of L tokens that
could start a phrase are hashed with numpy and looked up with `np.searchsorted` among the
phrases' hashes. Only windows whose first L tokens are a prefix of some phrase go on to
length L + 1, so the work shrinks quickly with L however long the longest phrase is.
A hash match is then checked token by token, so a collision can never produce a hit; two
phrases of one length with the same hash are refused when the table is built (another
multiplier is tried), so no hit can be lost to one either.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Odd 64-bit multipliers for h -> h * m + id (mod 2**64); the next is used if one gives two
# phrases of one length the same hash.
_MULTIPLIERS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                0xD6E8FEB86659FD93)


def _member(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple:
  """(found mask, index into sorted_keys) of each key."""
  where = np.searchsorted(sorted_keys, keys)
  where[where == len(sorted_keys)] = 0
  found = sorted_keys[where] == keys if len(sorted_keys) else np.zeros(len(keys), bool)
  return found, where


class TokenPhrases:
  """Phrases as sequences of token ids (each id >= 1), found in token-id arrays.

  `hits` gives every occurrence inside one sentence, as `PhraseMatcher.hits` does on the
  joined text, but as arrays.
  """

  def __init__(self, phrases: Sequence[Sequence[int]], vocab_size: int):
    """Args: phrases: distinct token-id sequences; vocab_size: ids are < vocab_size."""
    lengths = np.array([len(p) for p in phrases], np.int64)
    self.num_phrases = len(lengths)
    self.max_length = int(lengths.max()) if self.num_phrases else 0
    self._offsets = np.concatenate(([0], np.cumsum(lengths)))
    self._tokens = np.fromiter((t for p in phrases for t in p), np.int64,
                               int(self._offsets[-1]))
    # Length 1 by table, per id: the phrase it is alone, else -1 if it starts one, else -2.
    self._first = np.full(vocab_size, -2, np.int32)
    if self.num_phrases:
      self._first[self._tokens[self._offsets[:-1]]] = -1
      ones = np.flatnonzero(lengths == 1)
      self._first[self._tokens[self._offsets[ones]]] = ones
    for multiplier in _MULTIPLIERS:
      if self._hash_tables(lengths, np.uint64(multiplier)):
        self._multiplier = np.uint64(multiplier)
        break
    else:
      raise ValueError("dictionary phrases: hash collisions under every multiplier")

  def _hash_tables(self, lengths: np.ndarray, multiplier: np.uint64) -> bool:
    """Per length L >= 2 the sorted hashes of phrase prefixes of L tokens and, for each,
    the phrase of L tokens with that hash or -1 (one lookup answers both questions);
    False if two phrases of one length have the same hash."""
    self._keys, self._phrase_at = {}, {}
    h = np.zeros(self.num_phrases, np.uint64)
    rows = np.arange(self.num_phrases)
    for k in range(self.max_length):
      rows = rows[lengths[rows] > k]
      h[rows] = h[rows] * multiplier + self._tokens[self._offsets[rows] + k].astype(np.uint64)
      if k == 0:
        continue
      keys = np.unique(h[rows])
      whole = rows[lengths[rows] == k + 1]
      where = np.searchsorted(keys, h[whole])
      if len(np.unique(where)) < len(where):
        return False
      self._keys[k + 1] = keys
      self._phrase_at[k + 1] = np.full(len(keys), -1, np.int32)
      self._phrase_at[k + 1][where] = whole
    return True

  def hits(self, ids: np.ndarray, sentence: np.ndarray) -> tuple:
    """(start token, phrase length, phrase index) arrays of every occurrence.

    Args:
      ids: token ids of the note (0: a word in no phrase).
      sentence: each token's sentence index (non-decreasing); no phrase spans two.
    """
    n = len(ids)
    if not self.num_phrases or not n:
      return (np.zeros(0, np.int64),) * 3
    first = self._first[ids]
    one = np.flatnonzero(first >= 0)
    starts, sizes, found = [one], [np.ones(len(one), np.int64)], [first[one]]
    alive = np.flatnonzero(first >= -1)
    h = ids[alive].astype(np.uint64)
    for size in range(2, self.max_length + 1):
      alive = alive[alive + size - 1 < n]
      h = h[:len(alive)]   # alive is sorted: the dropped ones were the last
      last = alive + size - 1
      ok = (sentence[last] == sentence[alive]) & (ids[last] > 0)
      h = h[ok] * self._multiplier + ids[last[ok]].astype(np.uint64)
      alive = alive[ok]
      prefix, where = _member(self._keys[size], h)
      alive, h = alive[prefix], h[prefix]
      if not len(alive):
        break
      phrase = self._phrase_at[size][where[prefix]]
      whole = phrase >= 0
      if whole.any():
        at, phrase = alive[whole], phrase[whole]
        # The hash says which phrase it must be; the tokens say whether it is.
        k = np.arange(size)
        same = (ids[at[:, None] + k] ==
                self._tokens[self._offsets[phrase][:, None] + k]).all(axis=1)
        starts.append(at[same])
        sizes.append(np.full(int(same.sum()), size, np.int64))
        found.append(phrase[same])
    return (np.concatenate(starts), np.concatenate(sizes),
            np.concatenate(found).astype(np.int64))


def resolve(start: np.ndarray, size: np.ndarray, num_tokens: int) -> np.ndarray:
  """Indices of the chosen candidates, by start: `PhraseMatcher.find`'s greedy choice
  (longest first, then leftmost; a candidate overlapping a chosen one is dropped).

  Taken one length at a time from the longest: a candidate of length L is dropped if it
  overlaps a longer chosen one, and among the rest, sorted by start, one overlapping the
  last kept is dropped (equal lengths: only the last kept one can reach it). So the same
  result, without a Python step per candidate.
  """
  if not len(start):
    return np.zeros(0, np.int64)
  order = np.lexsort((start, -size))   # longest first, then leftmost
  start, size = start[order], size[order]
  groups = np.concatenate(([0], np.flatnonzero(size[1:] != size[:-1]) + 1, [len(size)]))
  taken = np.zeros(num_tokens, np.int64)
  chosen = []
  for g in range(len(groups) - 1):
    members = np.arange(groups[g], groups[g + 1])
    length = int(size[groups[g]])
    s = start[members]
    e = s + length
    if g:   # nothing is taken before the longest
      before = np.concatenate(([0], np.cumsum(taken)))
      free = before[e] == before[s]
      members, s, e = members[free], s[free], e[free]
    overlaps = s[1:] < e[:-1]   # with the one before
    if overlaps.any():
      # Only runs of overlapping candidates need the greedy walk: one that overlaps
      # neither neighbour is kept (the ends are sorted too, so nothing before reaches it).
      chained = np.zeros(len(s), bool)
      chained[1:] |= overlaps
      chained[:-1] |= overlaps
      walk = np.flatnonzero(chained)
      keep, reach = np.ones(len(s), bool), -1
      for k, a, b in zip(walk.tolist(), s[walk].tolist(), e[walk].tolist()):
        if a >= reach:
          reach = b
        else:
          keep[k] = False
      members, s = members[keep], s[keep]
    if len(s):
      taken[(s[:, None] + np.arange(length)).ravel()] = 1
      chosen.append(members)
  if not chosen:
    return np.zeros(0, np.int64)
  chosen = np.concatenate(chosen)
  return order[chosen[np.argsort(start[chosen])]]
