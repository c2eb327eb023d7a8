"""Teacher presets and how they combine with the explicit fields of a teacher config.

Precedence (highest first), field by field for pooling, normalize and max_length:
  1. a value set explicitly in the config, i.e. one that differs from
     `line_jax.config.teacher_config()`'s default (pooling "cls", normalize True,
     max_length 512) or, equivalently, any value when the field is unset ("", 0 or None);
  2. the preset's value;
  3. the config default.
A field left at its default therefore takes the preset's value; to force a default value
against a preset (say CLS pooling with preset "minilm"), clear the preset and set the
three fields. `model` falls back to the preset's Hugging Face name when left empty.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from line_jax.teachers.bert import POOLINGS


@dataclasses.dataclass(frozen=True)
class Preset:
  pooling: str
  normalize: bool
  max_length: int
  model: str          # Hugging Face name used when the config leaves `model` empty


PRESETS: dict[str, Preset] = {
    # BGE: CLS + L2 normalise (BAAI's model card), 512 tokens.
    "bge": Preset("cls", True, 512, "BAAI/bge-base-en-v1.5"),
    # CODER: CLS (its training used the pooler output; set pooling="pooler" for that), names.
    "coder": Preset("cls", False, 32, "GanjinZero/coder_eng"),
    # SapBERT: CLS, names of at most 25 tokens (the authors' inference code).
    "sapbert": Preset("cls", False, 25, "cambridgeltl/SapBERT-from-PubMedBERT-fulltext"),
    # sentence-transformers all-MiniLM-L6-v2: masked mean + normalise, 256 tokens.
    "minilm": Preset("mean", True, 256, "sentence-transformers/all-MiniLM-L6-v2"),
}

# teacher_config()'s defaults; a field still equal to these is "not given".
_CONFIG_DEFAULTS = {"pooling": "cls", "normalize": True, "max_length": 512}


@dataclasses.dataclass(frozen=True)
class EncoderSettings:
  """The resolved settings that decide a teacher's embeddings (and its cache key)."""
  model: str
  pooling: str
  normalize: bool
  max_length: int


def _unset(value: Any) -> bool:
  # `is` comparisons: False == 0 in Python, and normalize=False is a real setting.
  return value is None or (isinstance(value, str) and not value) or (
      type(value) is int and value == 0)


def _given(value: Any, field: str) -> bool:
  return not _unset(value) and value != _CONFIG_DEFAULTS[field]


def resolve_settings(teacher_cfg: Mapping[str, Any]) -> EncoderSettings:
  """Combines `preset` with the explicit fields of a teacher config (see module doc)."""
  preset_name = teacher_cfg.get("preset", "") or ""
  preset: Optional[Preset] = None
  if preset_name:
    if preset_name not in PRESETS:
      raise ValueError(f"teacher {teacher_cfg.get('name')!r}: field 'preset': "
                       f"{preset_name!r} is not one of {sorted(PRESETS)} (or '' for none)")
    preset = PRESETS[preset_name]
  values = {}
  for field in ("pooling", "normalize", "max_length"):
    value = teacher_cfg.get(field)
    if _given(value, field) or preset is None:
      values[field] = _CONFIG_DEFAULTS[field] if _unset(value) else value
    else:
      values[field] = getattr(preset, field)
  model = teacher_cfg.get("model", "") or (preset.model if preset else "")
  if not model:
    raise ValueError(f"teacher {teacher_cfg.get('name')!r}: field 'model' is empty and no "
                     "preset names a default model")
  if values["pooling"] not in POOLINGS:
    raise ValueError(f"teacher {teacher_cfg.get('name')!r}: field 'pooling': "
                     f"{values['pooling']!r} is not one of {POOLINGS}")
  max_length = int(values["max_length"])
  if max_length < 2:
    raise ValueError(f"teacher {teacher_cfg.get('name')!r}: field 'max_length': "
                     f"{max_length} is too small (needs room for [CLS] and [SEP])")
  return EncoderSettings(model=str(model), pooling=values["pooling"],
                         normalize=bool(values["normalize"]), max_length=max_length)
