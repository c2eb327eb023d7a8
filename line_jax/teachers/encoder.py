"""`Encoder`: texts -> pooled teacher embeddings, with length-bucketed jit-compiled batches.

Texts are tokenised without padding, grouped by token length into bucket lengths
(6, 8, ..., 16, 20, ..., 32, 48, 64, 96, ...; see `bucket_lengths`; capped by and including
max_length), and each bucket runs in batches
of a fixed number of rows (the last batch is padded with dummy rows). Every (rows, length)
shape therefore compiles once, so the number of compilations is the number of buckets used.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import os
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from line_jax.data.dataset import DataError
from line_jax.teachers import bert
from line_jax.teachers.presets import EncoderSettings, resolve_settings
from line_jax.teachers.resolve import resolve_model_dir

# Tokens per batch. On CPU, small batches keep a layer's activations in cache: on the 2-core
# test machine (MiniLM) 256-token batches ran 1.2-1.5x more rows/s than 4096-token ones,
# single- or multi-threaded. More cores need more rows per op to share: the budget is
# 128 tokens per core, at least 256. Accelerators want big batches: batch_size * 128.
CPU_TOKENS_PER_CORE = 128
_ACCELERATOR_TOKENS_PER_ROW = 128


def bucket_lengths(max_length: int) -> tuple[int, ...]:
  """Padded lengths: 6 to 16 in steps of 2, to 32 in steps of 4, then x1.5 / x1.33.

  E.g. max_length 256 -> (6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 48, 64, 96, 128, 192, 256);
  25 -> (6, 8, 10, 12, 14, 16, 20, 25). Concept names are mostly 4-14 tokens, where each
  padding token costs as much as a real one; on HPO term names these buckets pad 8% of
  tokens where powers of two (8, 16, 32) pad 25%, for a few more one-off compilations.
  Lengths above 0.8 * max_length are dropped so that no bucket sits just below max_length.
  """
  lengths = list(range(6, 16, 2)) + list(range(16, 32, 4))
  length = 32
  while length < max_length:
    lengths += [length, length * 3 // 2]
    length *= 2
  kept = [n for n in lengths if n <= 0.8 * max_length]
  return tuple(kept) + (max_length,)


def default_tokens_per_batch(batch_size: int) -> int:
  """128 per CPU core (at least 256) on CPU, `batch_size * 128` on GPU/TPU."""
  if jax.default_backend() == "cpu":
    return max(256, CPU_TOKENS_PER_CORE * (os.cpu_count() or 1))
  return batch_size * _ACCELERATOR_TOKENS_PER_ROW


def rows_per_batch(bucket_length: int, batch_size: int, tokens_per_batch: int) -> int:
  """At most `batch_size` rows and `tokens_per_batch` tokens per batch (at least 1 row)."""
  return max(1, min(batch_size, tokens_per_batch // bucket_length))


_TRACES: collections.Counter = collections.Counter()   # traces (compilations) per jit key


def _jit_embed(key, config, pooling, normalize, precision):
  embed = functools.partial(bert.bert_embed, config=config, pooling=pooling,
                            normalize=normalize, precision=precision)

  def traced(params, input_ids, attention_mask):
    _TRACES[key] += 1   # runs once per new input shape, i.e. per compilation
    return embed(params, input_ids, attention_mask)

  return jax.jit(traced)


@functools.lru_cache(maxsize=None)
def _shared_embed(config, pooling, normalize, precision):
  """One jitted embedding per architecture and pooling: the weights are an argument, so a
  second teacher of the same architecture (the fine-tuned concept teacher next to its base)
  reuses the compiled batch shapes instead of compiling every length bucket again."""
  return _jit_embed((config, pooling, normalize, precision), config, pooling, normalize,
                    precision)


class Encoder:
  """A frozen BERT teacher: `encode(texts) -> float32 [N, dim]`.

  Attributes:
    settings: model name/path, pooling, normalize and max_length in effect.
    model_dir: the checkpoint folder the weights came from.
    dim: the embedding dimension (the model's hidden size).
    batch_size: default maximum rows per batch.
    tokens_per_batch: maximum padded tokens per batch (None: `default_tokens_per_batch`).
    compile_count: how many batch shapes this encoder's calls have traced and compiled
      (with `share_compiled`, shapes another encoder of the same architecture compiled
      first are not compiled again, so not counted).
  """

  def __init__(self, params: bert.Params, config: bert.BertConfig, tokenizer,
               settings: EncoderSettings, model_dir: str = "", batch_size: int = 64,
               precision=jax.lax.Precision.HIGHEST,
               buckets: Optional[Sequence[int]] = None,
               tokens_per_batch: Optional[int] = None,
               share_compiled: bool = True):
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
    self.tokens_per_batch = tokens_per_batch
    self.buckets = tuple(sorted(set(buckets))) if buckets else bucket_lengths(
        settings.max_length)
    if max(self.buckets) < settings.max_length or (
        max(self.buckets) > config.max_position_embeddings):
      raise ValueError(f"buckets {self.buckets} must reach max_length {settings.max_length} "
                       f"and stay within {config.max_position_embeddings} positions")
    self.compile_count = 0
    self._params = jax.device_put(params)
    key = (config, settings.pooling, bool(settings.normalize), precision)
    if share_compiled:
      self._key, self._embed = key, _shared_embed(*key)
    else:
      self._key = (id(self),) + key
      self._embed = _jit_embed(self._key, *key)

  @property
  def dim(self) -> int:
    return self.config.hidden_size

  def set_params(self, params: bert.Params) -> None:
    """Other weights of the same architecture; the compiled batch shapes are kept."""
    old = jax.tree.structure(self._params)
    if jax.tree.structure(params) != old or any(
        np.shape(a) != np.shape(b) for a, b in zip(jax.tree.leaves(params),
                                                   jax.tree.leaves(self._params))):
      raise ValueError(f"{self.model_dir}: set_params needs weights shaped like the "
                       "encoder's own")
    self._params = jax.device_put(params)

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
        row count, see `rows_per_batch`, so each bucket compiles once.
      progress: called with the number of real rows after each batch finishes.
    """
    texts = [str(t) for t in texts]
    out = np.zeros((len(texts), self.dim), np.float32)
    if not texts:
      return out
    batch_size = int(batch_size or self.batch_size)
    tokens_per_batch = self.tokens_per_batch or default_tokens_per_batch(batch_size)
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
      rows = rows_per_batch(length, batch_size, tokens_per_batch)
      for start in range(0, len(rows_in_bucket), rows):
        batch_rows = rows_in_bucket[start:start + rows]
        input_ids = np.full((rows, length), pad_id, np.int32)
        mask = np.zeros((rows, length), np.int32)
        mask[len(batch_rows):, 0] = 1    # dummy rows attend to one token: no empty softmax
        for r, row in enumerate(batch_rows):
          ids = token_ids[row]
          input_ids[r, :len(ids)] = ids
          mask[r, :len(ids)] = 1
        traced = _TRACES[self._key]
        pending.append((batch_rows, self._embed(self._params, input_ids, mask)))
        self.compile_count += _TRACES[self._key] - traced
        if len(pending) > 2:
          finish(pending.pop(0))
    for item in pending:
      finish(item)
    return out


# The files that hold a tokenizer's vocabulary: without either, transformers builds a
# tokenizer from tokenizer_config.json alone that knows only its special tokens.
TOKENIZER_VOCAB_FILES = ("tokenizer.json", "vocab.txt")
# Common words a working English / biomedical vocabulary knows: the loaded tokenizer must
# turn them into at least one token that is neither special nor unknown.
TOKENIZER_PROBE = "the patient has a fever and pain of the heart"


def _provide_tokenizer_hint(model_dir: str) -> str:
  return ("Copy the tokenizer files (tokenizer.json, or vocab.txt, with "
          "tokenizer_config.json and special_tokens_map.json) of the checkpoint these weights "
          f"came from into {model_dir}: on a machine with internet, "
          "`huggingface-cli download NAME --local-dir DIR` fetches them with the weights, or "
          "`AutoTokenizer.from_pretrained(NAME).save_pretrained(DIR)` writes them alone.")


def check_tokenizer_files(model_dir: str) -> None:
  """A DataError unless the folder holds tokenizer.json or vocab.txt."""
  if any(os.path.isfile(os.path.join(model_dir, f)) for f in TOKENIZER_VOCAB_FILES):
    return
  found = sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else []
  raise DataError(f"{model_dir}: no tokenizer files (missing: tokenizer.json and vocab.txt; "
                  f"the folder holds {found}); without a vocabulary every word would become "
                  "[UNK] and texts would differ only by their length. "
                  + _provide_tokenizer_hint(model_dir))


def _model_vocab_size(model_dir: str) -> Optional[int]:
  try:
    with open(os.path.join(model_dir, "config.json")) as f:
      return int(json.load(f)["vocab_size"])
  except (OSError, ValueError, KeyError, TypeError):
    return None


def check_tokenizer(tokenizer, model_dir: str, vocab_size: Optional[int] = None) -> None:
  """A DataError unless the tokenizer has a vocabulary beyond its special tokens, fits the
  model's embedding table (`vocab_size` rows, when given) and encodes TOKENIZER_PROBE into at
  least one token that is neither special nor [UNK]."""
  special = set(tokenizer.all_special_ids)
  size = len(tokenizer)
  if size <= len(special):
    raise DataError(f"{model_dir}: the tokenizer knows {size} tokens, only its special "
                    f"tokens {sorted(tokenizer.all_special_tokens)}: every word would become "
                    f"[UNK]. {_provide_tokenizer_hint(model_dir)}")
  if vocab_size is not None and size > vocab_size:
    raise DataError(f"{os.path.join(model_dir, 'config.json')}: field 'vocab_size': "
                    f"{vocab_size}, but the folder's tokenizer has {size} tokens: the "
                    "tokenizer files belong to another model. "
                    f"{_provide_tokenizer_hint(model_dir)}")
  ids = tokenizer(TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]
  known = [i for i in ids if i not in special and i != tokenizer.unk_token_id]
  if not known:
    tokens = tokenizer.convert_ids_to_tokens(ids)
    raise DataError(f"{model_dir}: the tokenizer turns {TOKENIZER_PROBE!r} into {tokens}: "
                    f"no word is in its vocabulary of {size} tokens, so every text would "
                    f"embed as unknown tokens. {_provide_tokenizer_hint(model_dir)}")


_NO_ADVISORY = "TRANSFORMERS_NO_ADVISORY_WARNINGS"


def _auto_tokenizer():
  """transformers.AutoTokenizer, imported without the advisory transformers logs at import
  when PyTorch is missing ("PyTorch was not found. Models won't be available ..."): only its
  tokenizers are used here, so the message would be noise. The variable that silences it
  (read when the message is issued) is set for the import alone unless the user set it."""
  user_set = _NO_ADVISORY in os.environ
  os.environ.setdefault(_NO_ADVISORY, "1")
  try:
    from transformers import AutoTokenizer
  finally:
    if not user_set:
      os.environ.pop(_NO_ADVISORY, None)
  return AutoTokenizer


def load_tokenizer(model_dir: str):
  """The checkpoint's tokenizer through transformers.AutoTokenizer, offline, no remote code.

  Refused with a DataError naming the folder: a folder without tokenizer.json or vocab.txt,
  and a tokenizer that fails `check_tokenizer` (e.g. one that maps common words to [UNK]).
  """
  AutoTokenizer = _auto_tokenizer()
  check_tokenizer_files(model_dir)
  try:
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True,
                                              trust_remote_code=False)
  except Exception as e:
    raise ValueError(f"{model_dir}: cannot load the tokenizer with transformers.AutoTokenizer "
                     f"({type(e).__name__}: {e}); the folder needs tokenizer.json or "
                     "vocab.txt plus tokenizer_config.json") from e
  check_tokenizer(tokenizer, model_dir, _model_vocab_size(model_dir))
  return tokenizer


def load_encoder(teacher_cfg, batch_size: Optional[int] = None,
                 precision=jax.lax.Precision.HIGHEST,
                 buckets: Optional[Sequence[int]] = None,
                 share_compiled: bool = True) -> Encoder:
  """Builds the Encoder a teacher config describes (kind "hf").

  `teacher_cfg` is a `line_jax.config.teacher_config()` ConfigDict (or a mapping with its
  fields); the preset fills pooling / normalize / max_length / model as described in
  `line_jax.teachers.presets`. The model is resolved with `resolve_model_dir` (local
  folder, bundled MiniLM, local HF cache; never the network, never remote code).
  `batch_size` (default teacher_cfg.batch_size), `precision` and `buckets` (default
  `bucket_lengths(max_length)`) are passed to `Encoder`.
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
                 batch_size=batch_size, precision=precision, buckets=buckets,
                 share_compiled=share_compiled)
