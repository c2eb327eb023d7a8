"""`Encoder`: texts -> pooled teacher embeddings, with length-bucketed jit-compiled batches.

Texts are tokenised without padding, grouped by token length into bucket lengths
(8, 12, 16, 24, 32, 48, ...: steps of x1.5 / x1.33, so that padding wastes at most a third
of a row; capped by and including max_length), and each bucket runs in batches
of a fixed number of rows (the last batch is padded with dummy rows). Every (rows, length)
shape therefore compiles once, so the number of compilations is the number of buckets used.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from line_jax.teachers import bert
from line_jax.teachers.presets import EncoderSettings, resolve_settings
from line_jax.teachers.resolve import resolve_model_dir

_MIN_BUCKET = 8
_TOKENS_PER_ROW_AT_FULL_BATCH = 128   # longer buckets shrink the batch to bound memory


def bucket_lengths(max_length: int, min_length: int = _MIN_BUCKET) -> tuple[int, ...]:
  """Powers of two from `min_length` and 1.5x each, below `max_length`, then max_length.

  E.g. max_length 256 -> (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256); 25 -> (8, 12, 16,
  25). Halfway steps cut the padding of ~20-token sentences (24 instead of 32) and of
  9-12-token names at the price of one more compilation per octave used.
  """
  lengths = []
  length = min_length
  while length <= 0.8 * max_length:   # no bucket just below max_length (24 for 25)
    lengths.append(length)
    if length * 3 // 2 <= 0.8 * max_length:
      lengths.append(length * 3 // 2)
    length *= 2
  lengths.append(max_length)
  return tuple(lengths)


def rows_per_batch(bucket_length: int, batch_size: int) -> int:
  """At most `batch_size` rows and `batch_size * 128` tokens per batch (at least 1 row)."""
  budget = batch_size * _TOKENS_PER_ROW_AT_FULL_BATCH
  return max(1, min(batch_size, budget // bucket_length))


class Encoder:
  """A frozen BERT teacher: `encode(texts) -> float32 [N, dim]`.

  Attributes:
    settings: model name/path, pooling, normalize and max_length in effect.
    model_dir: the checkpoint folder the weights came from.
    dim: the embedding dimension (the model's hidden size).
    batch_size: default rows per batch.
    compile_count: how many batch shapes have been traced and compiled so far.
  """

  def __init__(self, params: bert.Params, config: bert.BertConfig, tokenizer,
               settings: EncoderSettings, model_dir: str = "", batch_size: int = 64,
               precision=jax.lax.Precision.HIGHEST,
               buckets: Optional[Sequence[int]] = None):
    if settings.max_length > config.max_position_embeddings:
      raise ValueError(f"{model_dir}: max_length {settings.max_length} exceeds the model's "
                       f"max_position_embeddings {config.max_position_embeddings}")
    if settings.pooling == "pooler" and "pooler" not in params:
      raise ValueError(f"{model_dir}: pooling 'pooler' needs pooler.dense weights, which "
                       "this checkpoint lacks; use pooling 'cls' or 'mean'")
    self.settings = settings
    self.model_dir = model_dir
    self.config = config
    self.tokenizer = tokenizer
    self.batch_size = int(batch_size)
    self.buckets = tuple(buckets) if buckets else bucket_lengths(settings.max_length)
    if max(self.buckets) < settings.max_length:
      raise ValueError(f"buckets {self.buckets} do not reach max_length {settings.max_length}")
    self.compile_count = 0
    self._params = jax.device_put(params)
    embed = functools.partial(bert.bert_embed, config=config, pooling=settings.pooling,
                              normalize=settings.normalize, precision=precision)

    def traced(params, input_ids, attention_mask):
      self.compile_count += 1   # runs once per new input shape, i.e. per compilation
      return embed(params, input_ids, attention_mask)

    self._embed = jax.jit(traced)

  @property
  def dim(self) -> int:
    return self.config.hidden_size

  def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids with [CLS]/[SEP], truncated to max_length, unpadded."""
    encoded = self.tokenizer(list(texts), truncation=True, max_length=self.settings.max_length,
                             padding=False, return_attention_mask=False,
                             return_token_type_ids=False)
    return encoded["input_ids"]

  def encode(self, texts: Sequence[str], batch_size: Optional[int] = None,
             progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """Embeds texts; returns float32 [len(texts), dim] in input order.

    Args:
      texts: the strings to embed.
      batch_size: maximum rows per batch (default: the encoder's); each bucket uses a fixed
        row count, see `rows_per_batch`.
      progress: called with the number of real rows after each batch finishes.
    """
    texts = [str(t) for t in texts]
    out = np.zeros((len(texts), self.dim), np.float32)
    if not texts:
      return out
    batch_size = int(batch_size or self.batch_size)
    token_ids = self.tokenize(texts)
    lengths = np.fromiter((len(t) for t in token_ids), np.int64, len(token_ids))
    bucket_of_row = np.searchsorted(np.asarray(self.buckets), lengths, side="left")
    order = np.lexsort((lengths, bucket_of_row))   # by bucket, then by length
    pad_id = self.config.pad_token_id
    pending = []   # (row indices, device result): dispatch runs ahead of the host copy

    def finish(item):
      rows, result = item
      out[rows] = np.asarray(result)[:len(rows)]
      if progress is not None:
        progress(len(rows))

    for bucket in np.unique(bucket_of_row):
      length = self.buckets[bucket]
      rows_in_bucket = order[bucket_of_row[order] == bucket]
      rows = rows_per_batch(length, batch_size)
      for start in range(0, len(rows_in_bucket), rows):
        batch_rows = rows_in_bucket[start:start + rows]
        input_ids = np.full((rows, length), pad_id, np.int32)
        mask = np.zeros((rows, length), np.int32)
        mask[len(batch_rows):, 0] = 1    # dummy rows attend to one token: no empty softmax
        for r, row in enumerate(batch_rows):
          ids = token_ids[row]
          input_ids[r, :len(ids)] = ids
          mask[r, :len(ids)] = 1
        pending.append((batch_rows, self._embed(self._params, input_ids, mask)))
        if len(pending) > 2:
          finish(pending.pop(0))
    for item in pending:
      finish(item)
    return out


def load_tokenizer(model_dir: str):
  """The checkpoint's tokenizer through transformers.AutoTokenizer, offline, no remote code."""
  from transformers import AutoTokenizer
  try:
    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True,
                                         trust_remote_code=False)
  except Exception as e:
    raise ValueError(f"{model_dir}: cannot load the tokenizer with transformers.AutoTokenizer "
                     f"({type(e).__name__}: {e}); the folder needs tokenizer.json or "
                     "vocab.txt plus tokenizer_config.json") from e


def load_encoder(teacher_cfg, batch_size: Optional[int] = None,
                 precision=jax.lax.Precision.HIGHEST) -> Encoder:
  """Builds the Encoder a teacher config describes (kind "hf").

  `teacher_cfg` is a `line_jax.config.teacher_config()` ConfigDict (or a mapping with its
  fields); the preset fills pooling / normalize / max_length / model as described in
  `line_jax.teachers.presets`. The model is resolved with `resolve_model_dir` (local
  folder, bundled MiniLM, local HF cache; never the network, never remote code).
  """
  settings = resolve_settings(teacher_cfg)
  model_dir = resolve_model_dir(settings.model)
  config, params = bert.load_bert(model_dir)
  tokenizer = load_tokenizer(model_dir)
  if batch_size is None:
    batch_size = int(teacher_cfg.get("batch_size", 64) or 64)
  expected_dim = int(teacher_cfg.get("dim", 0) or 0)
  if expected_dim and expected_dim != config.hidden_size:
    raise ValueError(f"teacher {teacher_cfg.get('name')!r}: field 'dim': {expected_dim}, but "
                     f"{os.path.join(model_dir, 'config.json')} has hidden_size "
                     f"{config.hidden_size}")
  logging.info("teacher %s: %s (%s pooling, normalize=%s, max_length=%d, dim=%d)",
               teacher_cfg.get("name"), model_dir, settings.pooling, settings.normalize,
               settings.max_length, config.hidden_size)
  return Encoder(params, config, tokenizer, settings, model_dir=model_dir,
                 batch_size=batch_size, precision=precision)
