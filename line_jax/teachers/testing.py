"""A tiny randomly initialised BERT checkpoint folder, for tests (no download, no torch).

Its tokenizer is a real WordPiece vocabulary: the words of TINY_WORDS whole, and every
lowercase letter and digit as a word start and as a continuation piece (##x), so that any
ASCII word becomes known pieces and only other characters become [UNK].
"""

from __future__ import annotations

import json
import os

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

TINY_WORDS = ("the patient has no chest pain fever cough short stature seizure ataxia left "
              "right arm leg heart lung kidney liver disease syndrome of and with mild severe "
              "acute chronic unobserved").split()


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789"


def tiny_vocab() -> list:
  """[PAD] [UNK] [CLS] [SEP] [MASK] (ids 0-4), the TINY_WORDS, punctuation, the characters
  as word starts and as ##continuations."""
  pieces = ["##s", "##ed", "##ing", ",", ".", "-", "!", "?"] + list(_CHARACTERS)
  pieces += [f"##{c}" for c in _CHARACTERS]
  return list(dict.fromkeys(list(SPECIAL_TOKENS) + list(TINY_WORDS) + pieces))


def write_wordpiece_tokenizer(folder: str, vocab, model_max_length: int) -> None:
  """vocab.txt, tokenizer.json (built with the `tokenizers` library, BERT normalisation and
  [CLS] ... [SEP] template), tokenizer_config.json and special_tokens_map.json."""
  ids = {token: i for i, token in enumerate(vocab)}
  with open(os.path.join(folder, "vocab.txt"), "w") as f:
    f.write("\n".join(vocab) + "\n")
  tokenizer = Tokenizer(models.WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=100))
  tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=None, lowercase=True)
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tokenizer.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
  tokenizer.decoder = decoders.WordPiece(prefix="##")
  tokenizer.save(os.path.join(folder, "tokenizer.json"))
  specials = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
              "sep_token": "[SEP]", "mask_token": "[MASK]"}
  with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
    json.dump(specials, f, indent=1)
  with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
    json.dump(dict(specials, tokenizer_class="BertTokenizer", do_lower_case=True,
                   model_max_length=model_max_length), f, indent=1)


def write_tiny_bert(folder: str, hidden_size: int = 32, num_layers: int = 2,
                    num_heads: int = 4, intermediate_size: int = 64,
                    max_position_embeddings: int = 64, seed: int = 0,
                    weight_prefix: str = "", gamma_beta_names: bool = False,
                    with_pooler: bool = True, extra_tensors: bool = True) -> str:
  """Writes config.json, model.safetensors and a WordPiece tokenizer (`tiny_vocab`) into
  `folder`.

  Args:
    folder: where to write (created).
    hidden_size, num_layers, num_heads, intermediate_size, max_position_embeddings: shape.
    seed: numpy seed of the random weights (same seed -> same weights).
    weight_prefix: e.g. "bert." to mimic a BertForMaskedLM checkpoint.
    gamma_beta_names: name LayerNorm parameters gamma/beta as old checkpoints do.
    with_pooler: include pooler.dense weights.
    extra_tensors: add tensors a loader must ignore (position_ids, an MLM head).

  Returns:
    The folder.
  """
  from safetensors.numpy import save_file

  os.makedirs(folder, exist_ok=True)
  vocab = tiny_vocab()
  write_wordpiece_tokenizer(folder, vocab, max_position_embeddings)

  config = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": len(vocab),
            "hidden_size": hidden_size, "num_hidden_layers": num_layers,
            "num_attention_heads": num_heads, "intermediate_size": intermediate_size,
            "hidden_act": "gelu", "max_position_embeddings": max_position_embeddings,
            "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0,
            "position_embedding_type": "absolute"}
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(config, f, indent=1)

  rng = np.random.default_rng(seed)
  h, i = hidden_size, intermediate_size
  tensors = {}

  def add(name, shape, scale=0.2):
    tensors[name] = (rng.standard_normal(shape) * scale).astype(np.float32)

  def add_norm(prefix):
    weight, bias = ("gamma", "beta") if gamma_beta_names else ("weight", "bias")
    tensors[f"{prefix}.{weight}"] = (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)
    tensors[f"{prefix}.{bias}"] = (0.1 * rng.standard_normal(h)).astype(np.float32)

  def add_dense(prefix, n_in, n_out):
    add(f"{prefix}.weight", (n_out, n_in), scale=1 / np.sqrt(n_in))
    add(f"{prefix}.bias", (n_out,), scale=0.05)

  add("embeddings.word_embeddings.weight", (len(vocab), h))
  add("embeddings.position_embeddings.weight", (max_position_embeddings, h))
  add("embeddings.token_type_embeddings.weight", (2, h))
  add_norm("embeddings.LayerNorm")
  for n in range(num_layers):
    p = f"encoder.layer.{n}"
    for part in ("query", "key", "value"):
      add_dense(f"{p}.attention.self.{part}", h, h)
    add_dense(f"{p}.attention.output.dense", h, h)
    add_norm(f"{p}.attention.output.LayerNorm")
    add_dense(f"{p}.intermediate.dense", h, i)
    add_dense(f"{p}.output.dense", i, h)
    add_norm(f"{p}.output.LayerNorm")
  if with_pooler:
    add_dense("pooler.dense", h, h)
  if extra_tensors:
    tensors["embeddings.position_ids"] = np.arange(max_position_embeddings)[None].astype(
        np.int64)
  tensors = {weight_prefix + name: value for name, value in tensors.items()}
  if extra_tensors:
    tensors["cls.predictions.bias"] = np.zeros(len(vocab), np.float32)
  save_file(tensors, os.path.join(folder, "model.safetensors"))
  return folder
