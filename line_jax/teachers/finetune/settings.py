"""The validated `finetune` block of a teacher config, and the base model it starts from."""

from __future__ import annotations

import dataclasses

from line_jax.teachers import bert
from line_jax.teachers.encoder import check_tokenizer_files
from line_jax.teachers.presets import resolve_settings


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
  """The validated `finetune` block of a teacher config (see line_jax.config)."""
  base: str
  steps: int
  batch_size: int
  learning_rate: float
  warmup_steps: int
  weight_decay: float
  temperature: float
  alpha: float
  select_alpha: bool
  alphas: tuple
  relations: tuple
  entry_relations: tuple
  use_definitions: bool
  max_definitions: int
  name_max_length: int
  definition_max_length: int
  buckets: tuple
  train_embeddings: bool
  train_layers: int
  eval_candidates: int
  validation_size: int
  seed: int
  checkpoint_every: int
  eval_batch_size: int

  def key_dict(self) -> dict:
    """The fields that change the weights (not checkpointing or evaluation batching)."""
    d = dataclasses.asdict(self)
    for field in ("checkpoint_every", "eval_batch_size"):
      d.pop(field)
    return d


def _check_numbers(block, field) -> None:
  """ValueError naming the first count, rate or weight of `block` out of its range."""
  for key in ("steps", "batch_size", "name_max_length", "definition_max_length",
              "checkpoint_every", "eval_batch_size"):
    if int(block[key]) <= 0:
      raise ValueError(f"{field(key)}: {block[key]} must be > 0")
  if int(block.batch_size) < 2:
    raise ValueError(f"{field('batch_size')}: {block.batch_size} must be at least 2 (the "
                     "other pairs of a batch are the negatives)")
  for key in ("learning_rate", "temperature"):
    if not float(block[key]) > 0:
      raise ValueError(f"{field(key)}: {block[key]} must be > 0")
  for key in ("warmup_steps", "validation_size", "max_definitions", "train_layers",
              "eval_candidates"):
    if int(block[key]) < 0:
      raise ValueError(f"{field(key)}: {block[key]} must be >= 0")
  if float(block.weight_decay) < 0:
    raise ValueError(f"{field('weight_decay')}: {block.weight_decay} must be >= 0")


def _check_merge_and_pairs(block, field, alphas: tuple, relations: tuple) -> None:
  """ValueError naming the merge weight, or the positive pairs, that cannot work."""
  for a in (float(block.alpha),) + alphas:
    if not 0.0 <= a <= 1.0:
      raise ValueError(f"{field('alpha' if a == float(block.alpha) else 'alphas')}: {a} is "
                       "outside [0, 1] (the merge weight of the fine-tuned model)")
  if block.select_alpha and not alphas:
    raise ValueError(f"{field('alphas')}: empty while select_alpha is True")
  if block.select_alpha and int(block.validation_size) == 0:
    raise ValueError(f"{field('validation_size')}: 0 while select_alpha is True (alpha is "
                     "chosen on the validation synonyms)")
  if not relations and not block.use_definitions:
    raise ValueError(f"{field('relations')}: empty and use_definitions is False: no "
                     "positive pairs")


def read_settings(teacher_cfg) -> FinetuneSettings:
  """Validates the teacher's `finetune` block; raises ValueError naming the field."""
  name = teacher_cfg.get("name", "teacher")
  block = teacher_cfg.get("finetune", None)
  if block is None:
    raise ValueError(f"teacher {name!r}: kind 'finetuned' needs a 'finetune' block "
                     "(line_jax.config.finetune_config())")

  def field(key):
    return f"teacher {name!r}: field 'finetune.{key}'"

  base = block.get("base", "") or teacher_cfg.get("model", "") or ""
  if not base:
    raise ValueError(f"{field('base')}: empty (the model to fine-tune, e.g. "
                     "'all-MiniLM-L6-v2' or a local folder)")
  _check_numbers(block, field)
  alphas = tuple(float(a) for a in block.alphas)
  relations = tuple(str(r) for r in block.relations)
  _check_merge_and_pairs(block, field, alphas, relations)
  buckets = tuple(sorted({int(b) for b in block.buckets}))
  if not buckets or buckets[0] < 2:
    raise ValueError(f"{field('buckets')}: {list(block.buckets)} must be lengths >= 2")
  return FinetuneSettings(
      base=str(base), steps=int(block.steps), batch_size=int(block.batch_size),
      learning_rate=float(block.learning_rate), warmup_steps=int(block.warmup_steps),
      weight_decay=float(block.weight_decay), temperature=float(block.temperature),
      alpha=float(block.alpha), select_alpha=bool(block.select_alpha), alphas=alphas,
      relations=relations, entry_relations=tuple(str(r) for r in block.entry_relations),
      use_definitions=bool(block.use_definitions), max_definitions=int(block.max_definitions),
      name_max_length=int(block.name_max_length),
      definition_max_length=int(block.definition_max_length), buckets=buckets,
      train_embeddings=bool(block.train_embeddings), train_layers=int(block.train_layers),
      eval_candidates=int(block.eval_candidates),
      validation_size=int(block.validation_size), seed=int(block.seed),
      checkpoint_every=int(block.checkpoint_every),
      eval_batch_size=int(block.eval_batch_size))


def encoder_settings(teacher_cfg, model: str):
  """The teacher's pooling / normalize / max_length (preset rules) for `model`."""
  cfg = dict(teacher_cfg.to_dict() if hasattr(teacher_cfg, "to_dict") else teacher_cfg)
  cfg["model"] = model
  return resolve_settings(cfg)


def check_base_folder(model_dir: str) -> bert.BertConfig:
  """A BERT config.json, safetensors weights and tokenizer files, or a DataError."""
  config = bert.read_bert_config(model_dir)   # names the field of a non-BERT config
  bert._safetensors_files(model_dir)          # names the missing weights file
  check_tokenizer_files(model_dir)            # the fine-tuned teacher copies the base's
  return config
