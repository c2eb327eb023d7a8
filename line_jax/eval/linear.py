"""Linear-map baselines (appendix A.4): each teacher mapped onto the other by least squares."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from line_jax.eval import settings as settings_lib
from line_jax.eval.settings import EvalSettings
from line_jax.eval.spaces import Space, teacher_space


def fit_affine_map(x: np.ndarray, y: np.ndarray, ridge: float = 1e-6,
                   chunk: int = 65536) -> Tuple[np.ndarray, np.ndarray]:
  """Least-squares (W, b) minimising ||x W + b - y||^2, with a tiny relative ridge.

  The normal equations are accumulated in float64 over row chunks; the ridge is
  `ridge * mean(diag(X^T X))` on W only (not on the bias), for numerical stability.
  """
  d_in = x.shape[1]
  gram = np.zeros((d_in + 1, d_in + 1), np.float64)
  cross = np.zeros((d_in + 1, y.shape[1]), np.float64)
  for s in range(0, len(x), chunk):
    xs = np.c_[np.asarray(x[s:s + chunk], np.float64), np.ones(len(x[s:s + chunk]))]
    gram += xs.T @ xs
    cross += xs.T @ np.asarray(y[s:s + chunk], np.float64)
  scale = np.mean(np.diag(gram)[:d_in]) if d_in else 1.0
  gram[np.arange(d_in), np.arange(d_in)] += ridge * max(scale, 1e-12)
  try:
    solution = np.linalg.solve(gram, cross)
  except np.linalg.LinAlgError:   # singular without a ridge: the minimum-norm solution
    solution = np.linalg.lstsq(gram, cross, rcond=None)[0]
  return solution[:d_in].astype(np.float32), solution[d_in].astype(np.float32)


def map_spaces(model, dataset, settings: EvalSettings, labels: Dict[str, str],
               notes: List[str]) -> Tuple[List[Space], Optional[Dict]]:
  """The two least-squares baselines, fitted on the train split's pairs."""
  train_idx = dataset.split_indices("train")
  if len(train_idx) < 2:
    notes.append("No train split: the linear-map baselines (Table A2, A3) were skipped.")
    return [], None
  if settings.map_max_train_pairs and len(train_idx) > settings.map_max_train_pairs:
    train_idx = np.sort(settings_lib.rng(settings, settings_lib.RNG_MAP_CAP).choice(
        train_idx, size=settings.map_max_train_pairs, replace=False))
  t1, t2 = model.teacher1, model.teacher2
  t1_space = teacher_space("teacher1", labels["teacher1"], t1)
  t2_space = teacher_space("teacher2", labels["teacher2"], t2)
  text1 = t1_space.embed_texts(train_idx)
  lists2 = t2_space.proxies(dataset, train_idx)
  w21, b21 = fit_affine_map(lists2, text1, settings.map_ridge)
  w12, b12 = fit_affine_map(text1, lists2, settings.map_ridge)

  def r2(pred, target):
    resid = np.sum((pred - target) ** 2)
    total = np.sum((target - target.mean(axis=0)) ** 2)
    return float(1.0 - resid / max(total, 1e-12))

  info = {"train_pairs": int(len(train_idx)), "ridge": settings.map_ridge,
          "train_r2": {"map_t2_to_t1": r2(lists2 @ w21 + b21, text1),
                       "map_t1_to_t2": r2(text1 @ w12 + b12, lists2)}}
  to_t1 = Space("map_t2_to_t1", labels["map_t2_to_t1"],
                embed_texts=t1_space.embed_texts,
                embed_concepts=lambda idx, neg: t2_space.embed_concepts(idx, neg) @ w21 + b21)
  to_t2 = Space("map_t1_to_t2", labels["map_t1_to_t2"],
                embed_texts=lambda idx: t1_space.embed_texts(idx) @ w12 + b12,
                embed_concepts=t2_space.embed_concepts)
  return [to_t1, to_t2], info

