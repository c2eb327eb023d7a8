"""The figure of `line_jax.eval.retrieval`: recall@k by model and pair source, and the
precision / recall curves of recovering a missing concept."""

from __future__ import annotations

from typing import Dict

import numpy as np

from line_jax.util import files


def plot(result: Dict, path: str) -> str:
  """Left: recall@max(k) of text -> concept retrieval (and real text when present, whole
  sentences and by segment); right:
  recovery precision against recall per model and estimator (confidence = score)."""
  ks = result["settings"]["ks"]
  k = max(ks)
  fig = files.new_figure(figsize=(12, 4.2))
  ax = fig.add_subplot(1, 2, 1)
  bars = {}
  for key, by_source in result["text_to_concept"].items():
    for source, r in by_source.items():
      bars.setdefault(source, {})[key] = r.get(f"recall@{k}", np.nan)
  for key, by_subset in result.get("realtext", {}).get("text_to_concept", {}).items():
    bars.setdefault("real text file", {})[key] = by_subset["all"].get(f"recall@{k}", np.nan)
  for key, by_subset in result.get("realtext", {}).get("text_to_concept_segments",
                                                       {}).items():
    bars.setdefault("real text, by segment", {})[key] = by_subset["all"].get(f"recall@{k}",
                                                                             np.nan)
  models = list(result["text_to_concept"])
  width = 0.8 / max(1, len(bars))
  for i, (source, values) in enumerate(bars.items()):
    x = np.arange(len(models)) + i * width
    ax.bar(x, [values.get(m, np.nan) for m in models], width, label=source)
  ax.set_xticks(np.arange(len(models)) + 0.4 - width / 2)
  ax.set_xticklabels([result["models"].get(m, m) for m in models], rotation=20, fontsize=7)
  ax.set_ylabel(f"recall@{k}")
  ax.set_title("text -> concept retrieval")
  ax.legend(fontsize=7)
  ax = fig.add_subplot(1, 2, 2)
  for key, res in result.get("recovery", {}).get("results", {}).items():
    for j, (est, e) in enumerate(res["estimators"].items()):
      curve = e["score"]["curve"]
      ax.plot([c["recall"] for c in curve], [c["precision"] for c in curve],
              "-" if j == 0 else "--", label=f"{result['models'].get(key, key)}: {est}")
  ax.axhline(result["settings"]["min_precision"], color="grey", lw=0.8)
  ax.set_xlabel("recall of missing concepts")
  ax.set_ylabel("precision of additions")
  ax.set_title("recovery (vignettes)")
  ax.legend(fontsize=6)
  fig.tight_layout()
  return files.save_figure(fig, path, dpi=110)
