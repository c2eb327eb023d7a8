"""The evaluation report's section on the fine-tuned concept teacher(s): held-out synonym
-> term retrieval of base, fine-tuned and averaged model, and the alpha curve's plot."""

from __future__ import annotations

import os
import shutil
from typing import Mapping, Optional

import numpy as np

from line_jax.teachers.finetune.alpha import retrieval_metrics
from line_jax.teachers.finetune.folder import read_info
from line_jax.util import files as files_lib


def _all_terms_retrieval(concepts: np.ndarray, queries: Mapping) -> dict:
  """Held-out synonym -> term among every term name, from a teacher's exported rows."""
  cand = np.asarray(queries["candidates"], np.int64)
  position = np.full(len(concepts), -1, np.int64)
  position[cand] = np.arange(len(cand))
  keys = np.asarray(concepts[np.sort(cand)], np.float32)[np.argsort(np.argsort(cand))]
  out = {}
  for split in ("validation", "test"):
    rows, terms = (np.asarray(x, np.int64) for x in queries[split])
    out[split] = retrieval_metrics(np.asarray(concepts[np.sort(rows)], np.float32)[
        np.argsort(np.argsort(rows))], position[terms], keys)
  return out


def report_metrics(model) -> Optional[dict]:
  """The fine-tuned teachers of a LineModel-like object (None if none): {teacher key:
  finetune.json + "folder" + "all_terms"}, where all_terms scores the held-out synonyms among
  every term name with the exported embeddings: the saved (averaged) teacher's own, and the
  base's where the other teacher is the base model with the same pooling."""
  out = {}
  for key, other in (("teacher1", "teacher2"), ("teacher2", "teacher1")):
    teacher = getattr(model, key, None)
    meta = getattr(teacher, "meta", None) or {}
    folder = meta.get("finetuned_dir")
    info = read_info(folder) if folder else None
    if info is None or "queries" not in info:
      continue
    all_terms = {"averaged (saved)": _all_terms_retrieval(teacher.concepts, info["queries"])}
    base = getattr(model, other, None)
    base_meta = getattr(base, "meta", None) or {}
    if (base_meta.get("model_dir") == info["base_dir"]
        and base_meta.get("pooling") == info["pooling"]
        and bool(base_meta.get("normalize")) == bool(info["normalize"])):
      all_terms["base"] = _all_terms_retrieval(base.concepts, info["queries"])
    info = {k: v for k, v in info.items() if k != "queries"}
    out[key] = dict(info, folder=folder, all_terms=all_terms)
  return out or None


def _f(x) -> str:
  return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.3f}"


def _all_terms_table(info: Mapping) -> list:
  """Markdown lines: the exported embeddings among every term name (none without them)."""
  all_terms = info.get("all_terms") or {}
  if not all_terms:
    return []
  lines = [f"Among all {info['counts']['candidates']} term names (the exported embeddings):",
           "", "| model | validation acc@1 | validation MRR | test acc@1 | test MRR |",
           "|---|---|---|---|---|"]
  for label in ("base", "averaged (saved)"):
    if label in all_terms:
      v, t = all_terms[label]["validation"], all_terms[label]["test"]
      lines.append(f"| {label} | {_f(v['acc@1'])} | {_f(v['mrr'])} | {_f(t['acc@1'])} | "
                   f"{_f(t['mrr'])} |")
  return lines + [""]


def _curve_table(info: Mapping, curve: Mapping) -> list:
  """Markdown lines: base, fine-tuned and averaged model on the alpha curve's candidates."""
  c = info["counts"]
  lines = [f"Among {c.get('eval_candidates', c['candidates'])} term names (every "
           "query's term and a fixed random sample of the others; the curve that chose "
           "alpha):", "",
           "| model | alpha | validation acc@1 | validation MRR | test acc@1 | test MRR |",
           "|---|---|---|---|---|---|"]
  for label, a in (("base", 0.0), ("fine-tuned", 1.0), ("averaged (saved)", info["alpha"])):
    if a not in curve:
      continue
    v, t = curve[a]["validation"], curve[a]["test"]
    lines.append(f"| {label} | {a:g} | {_f(v['acc@1'])} | {_f(v['mrr'])} | "
                 f"{_f(t['acc@1'])} | {_f(t['mrr'])} |")
  return lines


def _teacher_section(key: str, label: str, info: Mapping) -> list:
  curve = {c["alpha"]: c for c in info["curve"]}
  c = info["counts"]
  lines = [f"Teacher **{label}**: {info['base']} fine-tuned "
           f"({info['settings']['steps']} steps of {info['settings']['batch_size']} pairs, "
           f"{c['entry_pairs']} name/synonym and {c['definition_pairs']} name/definition "
           f"training pairs), then averaged with alpha = {info['alpha']:g}. Queries: synonym "
           f"strings never trained on (validation: {c['validation_queries']} synonyms "
           "held out of the training edges, which chose alpha; test: "
           f"{c['test_queries']} synonym edges of heldout_relations.parquet); the target "
           "is the query's term.", ""]
  lines += _all_terms_table(info) + _curve_table(info, curve)
  return lines + ["", "Validation acc@1 over alpha: " + ", ".join(
      f"{a:g}: {_f(curve[a]['validation']['acc@1'])}" for a in sorted(curve))
      + f". Fine-tune speed: {info['train']['pairs_per_second']:.0f} pairs/s.",
      "", f"![alpha curve]({key}_alpha_curve.png)", ""]


def report_section(metrics: Optional[Mapping], labels: Mapping[str, str]) -> str:
  """Markdown: held-out synonym -> term retrieval for base, fine-tuned and averaged."""
  if not metrics:
    return ""
  lines = ["", "## Concept teacher: held-out synonyms", ""]
  for key, info in metrics.items():
    lines += _teacher_section(key, labels.get(key, key), info)
  return "\n".join(lines)


def write_report_files(metrics: Optional[Mapping], workdir: str) -> None:
  """Copies each fine-tuned teacher's alpha curve plot next to the report."""
  for key, info in (metrics or {}).items():
    src = os.path.join(info["folder"], "alpha_curve.png")
    if os.path.exists(src):
      with files_lib.replacing(os.path.join(workdir, f"{key}_alpha_curve.png")) as tmp:
        shutil.copyfile(src, tmp)
