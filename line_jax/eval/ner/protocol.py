"""The NER protocol (`run_ner`) for teacher 1, teacher 2 and LINE of a model: features,
classifiers over seeds, and the files written (metrics.json, report.md, f1.png)."""

from __future__ import annotations

import json
import os
import time

import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from line_jax import config as config_lib
from line_jax.util import files as files_lib
from line_jax.eval.ner import bio
from line_jax.eval.ner import features as token_features
from line_jax.eval.ner import tagger


def settings_of(config) -> ml_collections.ConfigDict:
  """config.eval.ner over its defaults (line_jax.config; a run's config may predate it)."""
  full = config_lib.base_config().eval.ner
  given = config.get("eval", {}).get("ner", None) if config is not None else None
  if given:
    for key, value in given.items():
      full[key] = tuple(value) if isinstance(value, list) else value
  return full


def run_ner(model, path: str, out_dir: str) -> dict:
  """The protocol for teacher 1, teacher 2 and LINE of `model`; writes out_dir files.

  Args:
    model: a `line_jax.api.line_model.LineModel` (uses config.teacher1/2 and project_texts).
    path: a BIO file or folder.
    out_dir: where metrics.json, report.md and f1.png go.
  """
  started = time.time()
  # Every teacher is resolved before any work: a refused one fails here, not after features.
  teacher_cfgs = {which: token_features.token_teacher_config(model, which)
                  for which in ("teacher1", "teacher2")}
  settings = settings_of(model.config)
  data = bio.load_bio(path, settings)
  os.makedirs(out_dir, exist_ok=True)
  counts = {s: dict(sentences=len(v), words=sum(len(x.words) for x in v),
                    entities=sum(len(bio.entities(x.tags)) for x in v))
            for s, v in data.items()}
  logging.info("NER data %s: %s", path, counts)
  results = {}
  spaces = (("teacher1", "teacher1", None), ("teacher2", "teacher2", None),
            ("line", "teacher1", model.project_texts))
  features_of = {}
  for key, teacher, project in spaces:
    if teacher not in features_of:
      encoder = token_features.TokenFeatures(teacher_cfgs[teacher],
                                             settings.encode_batch_rows)
      features_of[teacher] = {}
      for split in bio.SPLITS:
        bar = tqdm(desc=f"{teacher} tokens ({split})", unit=" windows", leave=False)
        features_of[teacher][split] = encoder(data[split], progress=bar.update)
        bar.close()
    feats = features_of[teacher]
    if project is not None:
      feats = {s: np.asarray(project(v), np.float32) for s, v in feats.items()}
    results[key] = tagger.evaluate_features(feats, data, settings)
    logging.info("NER %s: %s", key, results[key]["summary"])
  labels = {"teacher1": model.config.teacher1.get("name", "teacher 1"),
            "teacher2": model.config.teacher2.get("name", "teacher 2"), "line": "LINE"}
  metrics = dict(path=os.path.abspath(path), counts=counts, models=labels,
                 settings=settings.to_dict(), results=results,
                 seconds=round(time.time() - started, 1))
  # Whole files or none (a full disk), metrics.json last.
  plot_f1(metrics, os.path.join(out_dir, "f1.png"))
  files_lib.write_text(os.path.join(out_dir, "report.md"), render_report(metrics))
  files_lib.write_json(os.path.join(out_dir, "metrics.json"), metrics, default=list)
  return metrics


def main_for_evaluate(model, path: str, workdir: str) -> dict:
  """What `python -m line_jax.evaluate --ner=PATH` runs: the protocol, a printed summary."""
  metrics = run_ner(model, path, os.path.join(workdir, "ner"))
  print(json.dumps({k: v["summary"] for k, v in metrics["results"].items()}, indent=1))
  print(f"report: {os.path.join(os.path.abspath(workdir), 'ner', 'report.md')}")
  return metrics


def render_report(metrics: dict) -> str:
  s = metrics["settings"]
  lines = ["# Token-level NER (Table 3 protocol)", "",
           f"Data: `{metrics['path']}`; {metrics['counts']}.",
           f"Linear token classifier, Adam (lr {s['learning_rate']}), {s['epochs']} epochs, "
           f"mean ± std over seeds {list(s['seeds'])}; entity-level F1 (x100).", "",
           "| Model | Test micro F1 | Test macro F1 | Val. micro F1 | Val. macro F1 |",
           "|---|---|---|---|---|"]
  for key, r in metrics["results"].items():
    m = r["summary"]
    cells = [f"{100 * m[f'{sp}_{k}']:.1f} ± {100 * m[f'{sp}_{k}_std']:.1f}"
             for sp in ("test", "valid") for k in ("micro_f1", "macro_f1")]
    lines.append(f"| {metrics['models'][key]} | " + " | ".join(cells) + " |")
  lines += ["", "![F1](f1.png)", ""]
  return "\n".join(lines)


def plot_f1(metrics: dict, path: str) -> str:
  """Bars of mean F1 (error bars: std over seeds) per model, split and average."""
  keys = list(metrics["results"])
  fig = files_lib.new_figure(figsize=(6, 3.5))
  ax = fig.add_subplot(1, 1, 1)
  width = 0.2
  for j, (split, metric) in enumerate((("test", "micro_f1"), ("test", "macro_f1"),
                                       ("valid", "micro_f1"), ("valid", "macro_f1"))):
    values = [metrics["results"][k]["summary"][f"{split}_{metric}"] for k in keys]
    errors = [metrics["results"][k]["summary"][f"{split}_{metric}_std"] for k in keys]
    ax.bar(np.arange(len(keys)) + (j - 1.5) * width, values, width, yerr=errors,
           label=f"{split} {metric.replace('_', ' ')}")
  ax.set_xticks(np.arange(len(keys)))
  ax.set_xticklabels([metrics["models"][k] for k in keys])
  ax.set_ylabel("entity-level F1")
  ax.set_ylim(0, 1)
  ax.legend(fontsize=7)
  fig.tight_layout()
  return files_lib.save_figure(fig, path, dpi=110)
