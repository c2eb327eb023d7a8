"""The fine-tuned teacher's Hugging Face folder: config.json (the base's, architectures
BertModel), model.safetensors with BertModel tensor names, the base's tokenizer files,
finetune.json (settings, counts, the validation curve) and alpha_curve.png; and the kind-"hf"
teacher config that embeds with it."""

from __future__ import annotations

import json
import os
import shutil
from typing import Mapping, Optional

import ml_collections
import numpy as np

from line_jax.teachers import bert
from line_jax.teachers.encoder import TOKENIZER_VOCAB_FILES
from line_jax.teachers.finetune.settings import encoder_settings
from line_jax.util.files import read_json_or_none

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                   "special_tokens_map.json")
FOLDER_FILES = ("config.json", "model.safetensors", "finetune.json")


def params_to_tensors(params: Mapping, config: bert.BertConfig) -> dict:
  """The inverse of bert.params_from_tensors: BertModel tensor names, [out, in] kernels."""
  h = config.hidden_size
  t = {}

  def dense(prefix, layer):
    t[f"{prefix}.weight"] = np.ascontiguousarray(np.asarray(layer["kernel"], np.float32).T)
    t[f"{prefix}.bias"] = np.asarray(layer["bias"], np.float32)

  def norm(prefix, layer):
    t[f"{prefix}.weight"] = np.asarray(layer["scale"], np.float32)
    t[f"{prefix}.bias"] = np.asarray(layer["bias"], np.float32)

  emb = params["embeddings"]
  t["embeddings.word_embeddings.weight"] = np.asarray(emb["word"], np.float32)
  t["embeddings.position_embeddings.weight"] = np.asarray(emb["position"], np.float32)
  t["embeddings.token_type_embeddings.weight"] = np.asarray(emb["token_type"], np.float32)
  norm("embeddings.LayerNorm", emb["norm"])
  for n, layer in enumerate(params["layers"]):
    p = f"encoder.layer.{n}"
    kernel, bias = np.asarray(layer["qkv"]["kernel"]), np.asarray(layer["qkv"]["bias"])
    for j, part in enumerate(("query", "key", "value")):
      dense(f"{p}.attention.self.{part}", {"kernel": kernel[:, j * h:(j + 1) * h],
                                           "bias": bias[j * h:(j + 1) * h]})
    dense(f"{p}.attention.output.dense", layer["attention_out"])
    norm(f"{p}.attention.output.LayerNorm", layer["attention_norm"])
    dense(f"{p}.intermediate.dense", layer["ffn_in"])
    dense(f"{p}.output.dense", layer["ffn_out"])
    norm(f"{p}.output.LayerNorm", layer["ffn_norm"])
  if "pooler" in params:
    dense("pooler.dense", params["pooler"])
  return t


def write_hf_folder(folder: str, params: Mapping, config: bert.BertConfig,
                    base_dir: str) -> None:
  """config.json (the base's, architectures BertModel), model.safetensors, tokenizer files."""
  from safetensors.numpy import save_file
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(base_dir, "config.json")) as f:
    hf_config = json.load(f)
  hf_config["architectures"] = ["BertModel"]
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(hf_config, f, indent=1)
  save_file(params_to_tensors(params, config), os.path.join(folder, "model.safetensors"),
            metadata={"format": "pt"})
  copy_tokenizer_files(base_dir, folder)


def is_complete(folder: str) -> bool:
  """The weights, finetune.json and the tokenizer's vocabulary (tokenizer.json or vocab.txt)
  are all there."""
  return (all(os.path.exists(os.path.join(folder, f)) for f in FOLDER_FILES)
          and has_tokenizer_files(folder))


def has_tokenizer_files(folder: str) -> bool:
  return any(os.path.isfile(os.path.join(folder, f)) for f in TOKENIZER_VOCAB_FILES)


def copy_tokenizer_files(base_dir: str, folder: str) -> None:
  """The base's tokenizer files into `folder` (fine-tuning never changes the tokenizer); each
  is copied aside and renamed into place, so a killed copy leaves no half file."""
  for name in TOKENIZER_FILES:
    src = os.path.join(base_dir, name)
    if os.path.exists(src):
      dst = os.path.join(folder, name)
      shutil.copyfile(src, dst + ".tmp")
      os.replace(dst + ".tmp", dst)


def read_info(folder: str) -> Optional[dict]:
  """The folder's finetune.json, or None when it is missing or unreadable."""
  return read_json_or_none(os.path.join(folder, "finetune.json"))


def hf_teacher_config(teacher_cfg, model_dir: str):
  """The kind-"hf" teacher config that embeds with the fine-tuned folder."""
  cfg = ml_collections.ConfigDict(teacher_cfg.to_dict())
  enc = encoder_settings(teacher_cfg, model_dir)
  cfg.kind, cfg.model, cfg.preset = "hf", model_dir, ""
  cfg.pooling, cfg.normalize, cfg.max_length = enc.pooling, enc.normalize, enc.max_length
  return cfg


def new_strings_config(teacher_cfg, meta: Optional[Mapping]):
  """The config that embeds new strings as this teacher's cache was made: a fine-tuned
  teacher's folder (recorded in its cache's `meta`) as a kind-"hf" teacher; other kinds, or
  a fine-tuned teacher whose folder is gone, unchanged."""
  folder = (meta or {}).get("finetuned_dir", "")
  if teacher_cfg.get("kind") == "finetuned" and folder and os.path.isdir(folder):
    return hf_teacher_config(teacher_cfg, folder)
  return teacher_cfg
