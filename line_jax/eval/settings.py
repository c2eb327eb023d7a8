"""The settings of an evaluation, read from the run's config (config.eval.*)."""

from __future__ import annotations

import dataclasses
from typing import Tuple

import ml_collections
import numpy as np

from line_jax.eval import classifier as probe_lib

# Independent random streams per protocol: default_rng([seed, code]).
(RNG_PAIR_CAP, RNG_NEGATIVES, RNG_MAP_CAP, RNG_RELATIONS, RNG_PROBE, RNG_GEOMETRY,
 RNG_PLACEMENT) = range(7)


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """The config fields evaluation reads (config.eval.* unless noted); see config.py."""
  split: str
  num_negatives: int
  seed: int
  cv_folds: int
  max_pairs: int                        # 0 = every pair of the split
  top_k_accuracy: int
  max_relation_pairs: int               # per relation class; 0 = all
  recovery_thresholds: Tuple[float, ...]
  recovery_top_k: int                   # config.recovery.top_k
  training_threshold: float             # config.recovery.threshold (marked in the plot)
  map_ridge: float                      # relative ridge of the least-squares maps
  map_max_train_pairs: int
  geometry_max_points: int
  chunk_size: int                       # rows per matmul / projection call
  search_memory_mb: float               # config.search.memory_budget_mb (recovery search)
  probe: probe_lib.ProbeConfig
  plots: bool = True                    # PNG figures (and their links in report.md)


def plots_enabled(config: ml_collections.ConfigDict) -> bool:
  """config.eval.plots: whether an evaluation draws its PNG figures (runs saved before the
  field existed: yes)."""
  return bool(config.eval.get("plots", True))


def read_settings(config: ml_collections.ConfigDict) -> EvalSettings:
  """`EvalSettings` of a config (a full one: `line_jax.config.base_config` and overrides)."""
  ev = config.eval
  probe = probe_lib.ProbeConfig(
      learning_rate=float(ev.classifier_learning_rate),
      max_epochs=int(ev.classifier_max_epochs),
      tol=float(ev.classifier_tol),
      early_stopping=str(ev.classifier_early_stopping),
      validation_fraction=float(ev.classifier_validation_fraction),
      patience=int(ev.classifier_patience),
      standardize=bool(ev.classifier_standardize),
      weight_decay=float(ev.classifier_weight_decay))
  return EvalSettings(
      split=str(ev.split),
      num_negatives=int(ev.num_negatives),
      seed=int(ev.seed),
      cv_folds=int(ev.cv_folds),
      max_pairs=int(ev.max_pairs),
      top_k_accuracy=int(ev.top_k_accuracy),
      max_relation_pairs=int(ev.max_relation_pairs),
      recovery_thresholds=tuple(float(t) for t in ev.recovery_thresholds),
      recovery_top_k=int(config.recovery.top_k),
      training_threshold=float(config.recovery.threshold),
      map_ridge=float(ev.map_ridge),
      map_max_train_pairs=int(ev.map_max_train_pairs),
      geometry_max_points=int(ev.geometry_max_points),
      chunk_size=int(ev.chunk_size),
      search_memory_mb=float(config.search.memory_budget_mb),
      probe=probe,
      plots=plots_enabled(config))


def rng(settings: EvalSettings, code: int) -> np.random.Generator:
  """The generator of one protocol (`code`: one of the RNG_* above)."""
  return np.random.default_rng([settings.seed, code])
