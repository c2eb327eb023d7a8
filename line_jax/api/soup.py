"""Model soup: the average of the LINE parameters of several runs (BioLORD-2023's last phase,
after Wortsman et al., "Model soups", ICML 2022), saved and evaluated as a work dir
(`python -m line_jax.soup`).

Every ingredient is the latest checkpoint of a `line_jax.train` work dir. They must share
the dataset (same data hash), the teachers' settings and every parameter shape; seeds,
learning rates and schedules may differ. The soup work dir gets config.json (the first
ingredient's), soup.json (ingredients, comparison), links to the first ingredient's teacher
cache, and an orbax checkpoint in the training layout (so `LineModel.load(out)`,
`python -m line_jax.evaluate` and `python -m line_jax.embed` work on it). It is evaluated with
`line_jax.eval.runner.run_evaluation`, and a table compares it with each ingredient (whose
metrics.json is read, or computed when missing).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Sequence

import jax
import numpy as np

from line_jax.api.line_model import LineModel
from line_jax.eval import runner
from line_jax.training import checkpoint as ckpt_lib
from line_jax.training import state as state_lib

# (label, path into metrics.json, higher is better)
COMPARED_METRICS = (
    ("mean rank", ("alignment", "results", "line", "mean_rank"), False),
    ("MRR", ("alignment", "results", "line", "mean_reciprocal_rank"), True),
    ("top-10", ("alignment", "results", "line", "top10_accuracy"), True),
    ("F1 concepts", ("classification", "results", "line", "concept", "f1"), True),
    ("F1 text", ("classification", "results", "line", "sentence", "f1"), True),
)
# Teacher fields that change what the cached embeddings are.
_TEACHER_FIELDS = ("kind", "model", "preset", "pooling", "normalize", "max_length",
                   "precomputed", "dim", "seed", "finetune")


class SoupError(ValueError):
  """Ingredients that cannot be averaged."""


def average_params(param_trees: Sequence[dict]) -> dict:
  """The element-wise mean of parameter pytrees of identical structure and shapes."""
  if not param_trees:
    raise SoupError("a soup needs at least one ingredient")
  check_same_shapes(param_trees, [str(i) for i in range(len(param_trees))])
  return jax.tree.map(lambda *leaves: np.mean(np.stack([np.asarray(l, np.float32)
                                                        for l in leaves]), axis=0),
                      *param_trees)


def check_same_shapes(param_trees: Sequence[dict], names: Sequence[str]) -> None:
  """SoupError naming the first ingredient and parameter whose structure or shape differs."""
  first = jax.tree_util.tree_flatten_with_path(param_trees[0])
  first_shapes = {jax.tree_util.keystr(p): np.shape(v) for p, v in first[0]}
  for name, tree in zip(names[1:], param_trees[1:]):
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    shapes = {jax.tree_util.keystr(p): np.shape(v) for p, v in leaves}
    if set(shapes) != set(first_shapes):
      raise SoupError(f"{name}: parameters {sorted(set(shapes) ^ set(first_shapes))} are not "
                      f"in both it and {names[0]}")
    for key, shape in shapes.items():
      if shape != first_shapes[key]:
        raise SoupError(f"{name}: parameter {key} has shape {shape}, {names[0]} has "
                        f"{first_shapes[key]}")


def check_compatible(models: Sequence, names: Sequence[str]) -> None:
  """SoupError unless the runs share dataset, relation types and teacher settings."""
  base = models[0]
  for name, model in zip(names[1:], models[1:]):
    if model.dataset.data_hash() != base.dataset.data_hash():
      raise SoupError(f"{name}: trained on {model.dataset.root}, whose texts and names differ "
                      f"from those of {names[0]} ({base.dataset.root})")
    if tuple(model.dataset.relation_types) != tuple(base.dataset.relation_types):
      raise SoupError(f"{name}: relation types {model.dataset.relation_types} differ from "
                      f"{names[0]}'s {base.dataset.relation_types}")
    for teacher in ("teacher1", "teacher2"):
      for field in _TEACHER_FIELDS:
        a, b = model.config[teacher].get(field), base.config[teacher].get(field)
        if a != b:
          raise SoupError(f"{name}: {teacher}.{field} is {a!r}, {names[0]} has {b!r}")
    for field in ("normalize",):
      if model.config.loss[field] != base.config.loss[field]:
        raise SoupError(f"{name}: loss.{field} differs from {names[0]}'s")
  check_same_shapes([m.params for m in models], names)


def metric_value(metrics: dict, path: Sequence[str]) -> float:
  value = metrics
  for key in path:
    if not isinstance(value, dict) or key not in value:
      return float("nan")
    value = value[key]
  return float("nan") if value is None else float(value)


def comparison_rows(named_metrics: Dict[str, dict], soup_name: str) -> List[dict]:
  """Rows {name, metric label: value} for each ingredient, their mean and the soup."""
  rows = []
  for name, metrics in named_metrics.items():
    rows.append({"name": name, **{label: metric_value(metrics, path)
                                  for label, path, _ in COMPARED_METRICS}})
  ingredients = [r for r in rows if r["name"] != soup_name]
  if ingredients:
    mean = {"name": "ingredients' mean"}
    best = {"name": "best ingredient"}
    for label, _, higher in COMPARED_METRICS:
      values = np.asarray([r[label] for r in ingredients], np.float64)
      mean[label] = float(np.mean(values))
      best[label] = float(np.max(values) if higher else np.min(values))
    rows = ingredients + [mean, best] + [r for r in rows if r["name"] == soup_name]
  return rows


# metrics.json fields that must agree for the numbers of two runs to be comparable.
_PROTOCOL_FIELDS = (("split",), ("seed",), ("num_pairs_evaluated",),
                    ("alignment", "num_negatives"), ("classification", "folds"))


def protocol_differences(named_metrics: Dict[str, dict], reference: str) -> List[str]:
  """Messages for runs whose evaluation protocol differs from `reference`'s (e.g. an
  ingredient's metrics.json computed with other eval settings)."""
  def field(metrics, path):
    value = metrics
    for key in path:
      value = value.get(key) if isinstance(value, dict) else None
    return value

  base = named_metrics[reference]
  messages = []
  for name, metrics in named_metrics.items():
    for path in _PROTOCOL_FIELDS:
      if field(metrics, path) != field(base, path):
        messages.append(f"{name}: {'.'.join(path)} is {field(metrics, path)!r} but "
                        f"{field(base, path)!r} for {reference}: rerun with --reevaluate to "
                        "compare like with like")
  return messages


def format_table(rows: Sequence[dict]) -> str:
  """A Markdown table of `comparison_rows`."""
  labels = [label for label, _, _ in COMPARED_METRICS]
  arrows = {label: "↑" if higher else "↓" for label, _, higher in COMPARED_METRICS}
  lines = ["| model | " + " | ".join(f"{l} {arrows[l]}" for l in labels) + " |",
           "|---|" + "---:|" * len(labels)]
  for row in rows:
    lines.append(f"| {row['name']} | " + " | ".join(f"{row[l]:.4f}" for l in labels) + " |")
  return "\n".join(lines)


def _link_teacher_caches(source_workdir: str, out: str) -> None:
  """Links each teacher cache folder of `source_workdir` into `out`/embeddings."""
  src = os.path.join(source_workdir, "embeddings")
  dst = os.path.join(out, "embeddings")
  if not os.path.isdir(src):
    return
  os.makedirs(dst, exist_ok=True)
  for name in os.listdir(src):
    target = os.path.join(dst, name)
    if not os.path.lexists(target):
      os.symlink(os.path.realpath(os.path.join(src, name)), target)


def ingredient_metrics(model, recompute: bool = False) -> dict:
  """The run's metrics.json, evaluated (and written) first when missing or `recompute`."""
  path = os.path.join(model.workdir, "metrics.json")
  if recompute or not os.path.exists(path):
    logging.info("evaluating ingredient %s", model.workdir)
    return runner.run_evaluation(model, model.workdir)
  with open(path) as f:
    return json.load(f)


def _ingredients(workdirs: Sequence[str], out: str):
  """(absolute work dirs, absolute out, loaded models, names) after the checks that the
  list is a soup's: two or more distinct work dirs, none of them `out`."""
  workdirs = [os.path.abspath(w) for w in workdirs]
  out = os.path.abspath(out)
  if len(workdirs) < 2:
    raise SoupError(f"--workdirs: {len(workdirs)} given; a soup needs at least two")
  if len(set(workdirs)) != len(workdirs):
    raise SoupError("--workdirs: the same work dir is listed twice")
  if out in workdirs:
    raise SoupError(f"--out {out} is one of the ingredients")
  models = [LineModel.load(w) for w in workdirs]
  names = [os.path.basename(w) or w for w in workdirs]
  if len(set(names)) != len(names):
    names = workdirs
  return workdirs, out, models, names


def _write_workdir(out: str, base, soup_params, workdirs: Sequence[str]) -> None:
  """The soup's work dir: the first ingredient's config.json and teacher caches, and a
  finished checkpoint of `soup_params` (replacing any there)."""
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "config.json"), "w") as f:
    f.write(base.config.to_json_best_effort(indent=1))
  _link_teacher_caches(base.workdir, out)
  state = dict(state_lib.state_of(base.config, soup_params),
               added=np.full(base.dataset.num_pairs, -1, np.int32))
  mgr = ckpt_lib.manager(out, base.config.train.keep_checkpoints)
  for step in mgr.all_steps():
    mgr.delete(step)
  # Finished: `line_jax.train` on this dir would not train it further.
  ckpt_lib.save(mgr, 0, state, state_lib.finished_progress(base.config.train.seed,
                                                           soup_of=workdirs))


def _compare(models: Sequence, names: Sequence[str], out: str,
             reevaluate_ingredients: bool) -> dict:
  """Evaluates the soup in `out`: {rows, table, warnings} comparing it with each
  ingredient."""
  soup_model = LineModel.load(out)
  named = {name: ingredient_metrics(m, reevaluate_ingredients)
           for name, m in zip(names, models)}
  soup_name = "soup" if "soup" not in names else f"soup {out}"
  named[soup_name] = runner.run_evaluation(soup_model, out)
  rows = comparison_rows(named, soup_name)
  warnings = protocol_differences(named, soup_name)
  for warning in warnings:
    logging.warning("%s", warning)
  return dict(rows=rows, table=format_table(rows), warnings=warnings)


def make_soup(workdirs: Sequence[str], out: str, evaluate_soup: bool = True,
              reevaluate_ingredients: bool = False) -> dict:
  """Averages the runs' parameters into work dir `out`, evaluates it, compares.

  Args:
    workdirs: ingredient work dirs (at least two, distinct from `out`).
    out: the soup's work dir (created; an existing soup checkpoint there is replaced).
    evaluate_soup: run the evaluation on the soup and the comparison table.
    reevaluate_ingredients: evaluate every ingredient again instead of reading metrics.json.

  Returns:
    soup.json's dictionary: ingredients, steps, and (if evaluated) "rows" and "table".
  """
  workdirs, out, models, names = _ingredients(workdirs, out)
  check_compatible(models, names)
  soup_params = average_params([m.params for m in models])
  _write_workdir(out, models[0], soup_params, workdirs)
  summary = {"ingredients": workdirs,
             "ingredient_steps": [int(m.progress["step"]) for m in models],
             "seeds": [int(m.config.train.seed) for m in models],
             "averaging": "uniform mean of params"}
  if evaluate_soup:
    summary.update(_compare(models, names, out, reevaluate_ingredients))
  with open(os.path.join(out, "soup.json"), "w") as f:
    json.dump(summary, f, indent=1, ensure_ascii=False)
  return summary
