"""Per-word token features of a teacher for the NER protocol: the last-layer state of each
word's first sub-word token, and the Hugging Face config that stands for a teacher."""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from line_jax.teachers import bert
from line_jax.teachers import encoder as encoder_lib
from line_jax.teachers import finetune
from line_jax.teachers.presets import resolve_settings
from line_jax.teachers.resolve import resolve_model_dir
from line_jax.eval.ner.bio import Sentence


class TokenFeatures:
  """Per-word features of a Hugging Face BERT teacher: its first sub-word's last state."""

  def __init__(self, teacher_cfg, rows: int = 32):
    if teacher_cfg.get("kind", "hf") != "hf":
      raise ValueError(f"teacher {teacher_cfg.get('name')!r} is a {teacher_cfg.kind!r} "
                       "teacher; token-level embeddings need a Hugging Face BERT (kind 'hf'; "
                       "a fine-tuned teacher through `token_teacher_config`)")
    self.settings = resolve_settings(teacher_cfg)
    model_dir = resolve_model_dir(self.settings.model)
    self.config, params = bert.load_bert(model_dir)
    self.tokenizer = encoder_lib.load_tokenizer(model_dir)
    self.params = jax.device_put(params)
    self.rows = rows
    self.buckets = encoder_lib.bucket_lengths(self.settings.max_length)
    self._states = jax.jit(functools.partial(bert.token_states, config=self.config,
                                             normalize=self.settings.normalize))

  @property
  def dim(self) -> int:
    return self.config.hidden_size

  def _windows(self, words: Sequence[str]) -> list:
    """(word offset, token ids, token index of each word's first piece) within max_length."""
    out, start = [], 0
    while start < len(words):
      enc = self.tokenizer(list(words[start:]), is_split_into_words=True, truncation=True,
                           max_length=self.settings.max_length)
      word_ids = enc.word_ids()
      first = {}
      for position, w in enumerate(word_ids):
        if w is not None and w not in first:
          first[w] = position
      # Every word whose first piece fits is covered (only that piece's state is used).
      complete = max(first) if first else -1
      if complete < 0:
        raise ValueError(f"word {words[start]!r} does not fit in max_length "
                         f"{self.settings.max_length}")
      ids = enc["input_ids"]
      out.append((start, ids, [first[w] for w in range(complete + 1)]))
      start += complete + 1
    return out

  def __call__(self, sentences: Sequence[Sentence],
               progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """[total words, dim] float32, sentence after sentence."""
    items = []   # (row offset of the window's first word, ids, first-piece positions)
    offset = 0
    for sentence in sentences:
      for start, ids, firsts in self._windows(sentence.words):
        items.append((offset + start, ids, firsts))
      offset += len(sentence.words)
    out = np.zeros((offset, self.dim), np.float32)
    order = sorted(range(len(items)), key=lambda i: len(items[i][1]))
    pad = self.config.pad_token_id
    for s in range(0, len(order), self.rows):
      batch = [items[i] for i in order[s:s + self.rows]]
      longest = max(len(ids) for _, ids, _ in batch)
      length = next(b for b in self.buckets if b >= longest)
      input_ids = np.full((self.rows, length), pad, np.int32)
      mask = np.zeros((self.rows, length), np.int32)
      mask[len(batch):, 0] = 1
      for r, (_, ids, _) in enumerate(batch):
        input_ids[r, :len(ids)] = ids
        mask[r, :len(ids)] = 1
      states = np.asarray(self._states(self.params, input_ids, mask))
      for r, (first_row, _, firsts) in enumerate(batch):
        out[first_row:first_row + len(firsts)] = states[r, firsts]
      if progress is not None:
        progress(len(batch))
    return out


def token_teacher_config(model, which: str):
  """The kind-"hf" config whose token states stand for `which` ("teacher1" / "teacher2") of
  `model`: a fine-tuned teacher is its saved Hugging Face folder (recorded in its embedding
  cache's meta). A ValueError naming the teacher for one that has no token states."""
  cfg = model.config[which]
  meta = getattr(getattr(model, which, None), "meta", None)
  resolved = finetune.new_strings_config(cfg, meta)
  kind = resolved.get("kind", "hf")
  if kind == "finetuned":
    folder = (meta or {}).get("finetuned_dir", "")
    where = (f"its folder {folder} is gone" if folder else
             "its embedding cache records no fine-tuned folder")
    raise ValueError(f"{which} {cfg.get('name')!r} is a fine-tuned teacher, but {where}; "
                     "rebuild it with `python -m line_jax.finetune --config=... "
                     "--workdir=RUN` (the run's config and workdir) and evaluate again")
  if kind != "hf":
    raise ValueError(f"{which} {cfg.get('name')!r} is a {kind!r} teacher; token-level "
                     "embeddings need a Hugging Face BERT (kind 'hf' or 'finetuned')")
  return resolved
