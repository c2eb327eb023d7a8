"""The fine-tune's batches, in length buckets and in an order fixed by (seed, step).

Both strings of a pair are padded to the smallest of `buckets` that holds the longer one, a
batch holds pairs of one bucket only and embeds them as one [2B, L] array, so the jitted step
compiles once per bucket (three by default). Batches are a function of seed and step, so a
resumed run trains on the same batches as an uninterrupted one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from line_jax.teachers.finetune.pairs import FinetuneData, norm_text
from line_jax.teachers.finetune.settings import FinetuneSettings


def _bucket(lengths: np.ndarray, buckets: Sequence[int]) -> np.ndarray:
  b = np.asarray(buckets)
  return b[np.minimum(np.searchsorted(b, lengths, side="left"), len(b) - 1)]


def _tokenize(tokenizer, texts, max_length: int) -> list:
  return tokenizer(list(texts), truncation=True, max_length=max_length, padding=False,
                   return_attention_mask=False, return_token_type_ids=False)["input_ids"]


def _positive_ids(data: FinetuneData, tokenizer, s: FinetuneSettings) -> list:
  """Token ids of each pair's positive: entries cut at the name length, definitions at the
  definition length."""
  is_def = data.kind == "definition"
  pos = [None] * len(data.positive)
  entry_idx, def_idx = np.flatnonzero(~is_def), np.flatnonzero(is_def)
  for idx, max_len in ((entry_idx, s.name_max_length), (def_idx, s.definition_max_length)):
    if len(idx):
      for i, ids in zip(idx, _tokenize(tokenizer, data.positive[idx], max_len)):
        pos[i] = ids
  return pos


def _string_codes(strings) -> np.ndarray:
  """One code per normalised string: equal strings of a batch are not each other's
  negatives."""
  return np.unique(np.asarray([norm_text(x) for x in strings]), return_inverse=True)[1]


class BatchPlan:
  """Token ids of every pair and a deterministic batch order: batch `step` is a function of
  (seed, step). Pairs are grouped by their (anchor, positive) padded-length bucket; a bucket's
  last batch is padded with masked rows."""

  def __init__(self, data: FinetuneData, tokenizer, s: FinetuneSettings, pad_id: int):
    self.s, self.pad_id = s, pad_id
    self.group = data.group
    name_buckets = [b for b in s.buckets if b < s.name_max_length] + [s.name_max_length]
    def_buckets = [b for b in s.buckets if b < s.definition_max_length] + [
        s.definition_max_length]
    self.anchor_ids = _tokenize(tokenizer, data.anchor, s.name_max_length)
    self.positive_ids = _positive_ids(data, tokenizer, s)
    la = np.fromiter((len(x) for x in self.anchor_ids), np.int64, len(self.anchor_ids))
    lb = np.fromiter((len(x) for x in self.positive_ids), np.int64, len(self.positive_ids))
    # Both strings of a pair are padded to one bucket, the smallest that holds the longer:
    # a step embeds [2B, L] token ids, so each bucket is one compiled shape.
    self.length = _bucket(np.maximum(la, lb), sorted(set(name_buckets) | set(def_buckets)))
    # String identities: same anchor / positive string in a batch is not a negative.
    self.anchor_code = _string_codes(data.anchor)
    self.positive_code = _string_codes(data.positive)
    self.padded_tokens = int(2 * self.length.sum())
    self.real_tokens = int((la + lb).sum())
    self.shapes, self.shape_of_pair = np.unique(self.length, return_inverse=True)
    self.shape_of_pair = self.shape_of_pair.reshape(-1)
    self._epochs: dict = {}
    sizes = np.bincount(self.shape_of_pair, minlength=len(self.shapes))
    self.batches_per_epoch = int(sum(-(-n // s.batch_size) for n in sizes))

  def _epoch(self, epoch: int) -> list:
    if epoch not in self._epochs:
      rng = np.random.default_rng([self.s.seed, 17, epoch])
      batches = []
      for k in range(len(self.shapes)):
        members = rng.permutation(np.flatnonzero(self.shape_of_pair == k))
        for start in range(0, len(members), self.s.batch_size):
          batches.append((k, members[start:start + self.s.batch_size]))
      order = rng.permutation(len(batches))
      self._epochs = {epoch: [batches[i] for i in order]}   # keep one epoch in memory
    return self._epochs[epoch]

  def _negative_ok(self, members: np.ndarray) -> np.ndarray:
    """[B, B]: whether column j may be a negative of row i (not the same term or string;
    the diagonal, the positive, is allowed)."""
    b, n = self.s.batch_size, len(members)
    g = np.full(b, -1, np.int64)
    g[:n] = self.group[members]
    ca = np.full(b, -1, np.int64)
    ca[:n] = self.anchor_code[members]
    cb = np.full(b, -1, np.int64)
    cb[:n] = self.positive_code[members]
    same = ((g[:, None] == g[None, :]) | (ca[:, None] == ca[None, :])
            | (cb[:, None] == cb[None, :])) & (g[:, None] >= 0)
    return ~same | np.eye(b, dtype=bool)

  def batch(self, step: int) -> dict:
    epoch, i = divmod(int(step), self.batches_per_epoch)
    k, members = self._epoch(epoch)[i]
    length = int(self.shapes[k])
    b = self.s.batch_size
    ids = np.full((2 * b, length), self.pad_id, np.int32)
    mask = np.zeros((2 * b, length), np.int32)
    mask[:, 0] = 1   # padding rows attend to one token: no empty softmax
    valid = np.zeros(b, bool)
    for r, p in enumerate(members):
      for row, tokens in ((r, self.anchor_ids[p]), (b + r, self.positive_ids[p])):
        tokens = tokens[:length]
        ids[row, :len(tokens)], mask[row, :len(tokens)] = tokens, 1
      valid[r] = True
    return {"ids": ids, "mask": mask, "valid": valid,
            "negative_ok": self._negative_ok(members)}
