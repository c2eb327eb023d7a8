"""Where a fine-tuned teacher lives: WORKDIR/teachers/<name>-<key>, key = hash(base weights
and config + training/validation strings + settings), so that an unchanged dataset and
config reuse the folder."""

from __future__ import annotations

import hashlib
import json
import os

from line_jax.data.dataset import Dataset
from line_jax.teachers import bert
from line_jax.teachers.finetune.pairs import build_data
from line_jax.teachers.finetune.settings import encoder_settings, read_settings
from line_jax.teachers.resolve import resolve_model_dir
from line_jax.util.files import file_sha256

_KEY_CACHE: dict = {}


def finetune_key(teacher_cfg, dataset: Dataset) -> str:
  """hash(base weights and config + training/validation strings + settings)."""
  s = read_settings(teacher_cfg)
  base_dir = resolve_model_dir(s.base)
  enc = encoder_settings(teacher_cfg, base_dir)
  stamp = []
  for path in [os.path.join(base_dir, "config.json")] + bert._safetensors_files(base_dir):
    st = os.stat(path)
    stamp.append((path, st.st_size, st.st_mtime_ns))
  memo = (json.dumps(stamp), dataset.root, dataset.data_hash(), json.dumps(s.key_dict()))
  if memo not in _KEY_CACHE:
    base_hash = [file_sha256(p) for p, _, _ in stamp]
    data = build_data(dataset, s)
    blob = json.dumps([base_hash, data.digest(), s.key_dict(),
                       [enc.pooling, enc.normalize]])
    _KEY_CACHE[memo] = hashlib.sha256(blob.encode()).hexdigest()[:16]
  return _KEY_CACHE[memo]


def finetuned_dir(teacher_cfg, dataset: Dataset, workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "teachers",
                      f"{teacher_cfg.get('name', 'teacher')}-{finetune_key(teacher_cfg, dataset)}")
