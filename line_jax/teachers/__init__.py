"""Frozen teacher encoders: BERT-family Hugging Face checkpoints run in JAX.

  encoder = load_encoder(config.teacher1)     # a teacher_config() ConfigDict
  vectors = encoder.encode(["chest pain", ...])   # float32 [N, encoder.dim]

See `presets` for how a preset combines with explicit fields, `resolve` for where models
are looked up (never the network), `bert` for the pure-function model and `encoder` for
length bucketing.
"""

from line_jax.teachers.bert import BertConfig, bert_embed, load_bert
from line_jax.teachers.encoder import Encoder, bucket_lengths, load_encoder, load_tokenizer
from line_jax.teachers.presets import PRESETS, EncoderSettings, resolve_settings
from line_jax.teachers.resolve import (BUNDLED_MINILM_NAMES, ModelNotFoundError,
                                       bundled_minilm_dir, resolve_model_dir)

__all__ = [
    "BUNDLED_MINILM_NAMES", "BertConfig", "Encoder", "EncoderSettings", "ModelNotFoundError",
    "PRESETS", "bert_embed", "bucket_lengths", "bundled_minilm_dir", "load_bert",
    "load_encoder", "load_tokenizer", "resolve_model_dir", "resolve_settings",
]
