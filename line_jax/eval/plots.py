"""PNG figures of the evaluation report.

Figures are drawn on `matplotlib.figure.Figure` objects with the Agg canvas, so that no
pyplot state or global backend is touched (the module is safe to import in a notebook).
Every function takes plain arrays and a path, writes one PNG and returns the path.
"""

from __future__ import annotations

import json
import math
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from line_jax.util import files

LOSS_FIELDS = ("loss", "align", "relational", "negation")
# Plotted when a record has them non-zero (optional terms) or changing (a schedule's rate).
OPTIONAL_FIELDS = ("concept", "name", "text", "uniformity", "learning_rate")


def _save(fig, path: str) -> str:
  fig.tight_layout()
  return files.save_figure(fig, path, dpi=110)


def _grid(count: int, max_cols: int = 3) -> Tuple[int, int]:
  cols = max(1, min(max_cols, count))
  return int(math.ceil(count / cols)), cols


def rank_histograms(ranks: Mapping[str, np.ndarray], num_negatives: int, path: str) -> str:
  """One panel per model: histogram of the positive's rank among its negatives."""
  rows, cols = _grid(len(ranks))
  fig = files.new_figure(figsize=(4.2 * cols, 3.2 * rows))
  bins = np.arange(1, num_negatives + 3) - 0.5
  for i, (label, r) in enumerate(ranks.items()):
    ax = fig.add_subplot(rows, cols, i + 1)
    ax.hist(np.asarray(r), bins=bins, color="C%d" % (i % 10), histtype="stepfilled")
    ax.set_yscale("log")
    ax.set_title(f"{label}\nmean rank {np.mean(r):.2f}", fontsize=9)
    ax.set_xlabel(f"rank among {num_negatives} negatives + 1")
    ax.set_ylabel("pairs")
  return _save(fig, path)


def roc_curves(curves: Mapping[str, Mapping[str, Tuple[np.ndarray, np.ndarray, float]]],
               path: str) -> str:
  """One panel per relation class; in each, one ROC curve per model.

  Args:
    curves: relation -> model label -> (fpr, tpr, auc).
    path: output PNG.
  """
  rows, cols = _grid(max(len(curves), 1))
  fig = files.new_figure(figsize=(4.0 * cols, 3.6 * rows))
  for i, (relation, by_model) in enumerate(curves.items()):
    ax = fig.add_subplot(rows, cols, i + 1)
    for j, (label, (fpr, tpr, auc)) in enumerate(by_model.items()):
      ax.plot(fpr, tpr, color="C%d" % (j % 10), label=f"{label} ({auc:.3f})")
    ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=1)
    ax.set_title(relation, fontsize=9)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="lower right")
  if not curves:
    ax = fig.add_subplot(1, 1, 1)
    ax.text(0.5, 0.5, "no held-out relations", ha="center", va="center")
    ax.set_axis_off()
  return _save(fig, path)


def recovery_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str,
                    training_threshold: float = float("nan")) -> str:
  """Precision and recall of residual recovery against the cosine threshold, per model."""
  fig = files.new_figure(figsize=(6.4, 4.0))
  ax = fig.add_subplot(1, 1, 1)
  for j, (label, curve) in enumerate(curves.items()):
    color = "C%d" % (j % 10)
    ax.plot(curve["threshold"], curve["precision"], color=color, marker="o", markersize=3,
            label=f"{label} precision")
    ax.plot(curve["threshold"], curve["recall"], color=color, marker="s", markersize=3,
            linestyle="--", label=f"{label} recall")
  if np.isfinite(training_threshold):
    ax.axvline(training_threshold, color="0.6", linestyle=":", linewidth=1,
               label=f"training threshold {training_threshold:g}")
  ax.set_xlabel("cosine threshold")
  ax.set_ylim(-0.02, 1.02)
  ax.set_title("residual recovery on synthetic vignettes", fontsize=10)
  ax.legend(fontsize=7)
  return _save(fig, path)


def read_train_log(path: str) -> List[Dict]:
  """The records of `train_log.jsonl` (one JSON object a line; unreadable lines skipped)."""
  records = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


def curve_fields(records: Sequence[Mapping]) -> List[str]:
  """The fields of `train_log.jsonl` records that `loss_curves` draws: the paper's terms and
  the total, the optional terms that are on, and the learning rate when it changes."""
  fields = [f for f in LOSS_FIELDS if any(f in r for r in records)]
  for f in OPTIONAL_FIELDS:
    values = {float(r[f]) for r in records if f in r}
    if (len(values) > 1 if f == "learning_rate" else any(values)):
      fields.append(f)
  return fields


def loss_curves(records: Sequence[Mapping], path: str) -> str:
  """One panel per field of `curve_fields` against the record index, coloured by stage."""
  fields = curve_fields(records)
  rows, cols = _grid(max(len(fields), 1), max_cols=2)
  fig = files.new_figure(figsize=(5.0 * cols, 3.2 * rows))
  position = np.arange(len(records))
  stages = np.array([int(r.get("stage", 1)) for r in records])
  for i, field in enumerate(fields):
    ax = fig.add_subplot(rows, cols, i + 1)
    values = np.array([float(r.get(field, np.nan)) for r in records])
    for k, stage in enumerate(sorted(set(stages.tolist()))):
      mask = stages == stage
      ax.plot(position[mask], values[mask], color="C%d" % k, label=f"stage {stage}")
    ax.set_title(field, fontsize=9)
    ax.set_xlabel("logged step")
    ax.legend(fontsize=7)
  if not fields:
    ax = fig.add_subplot(1, 1, 1)
    ax.text(0.5, 0.5, "no loss records", ha="center", va="center")
    ax.set_axis_off()
  return _save(fig, path)
