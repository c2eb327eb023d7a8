"""The evaluation run: the evaluated pairs and compared spaces, every protocol of
`line_jax.eval.protocols` (and the single-concept, transfer and concept-teacher ones) on them,
and the files written: report.md (the paper's tables), metrics.json (every number) and PNG
plots (rank histograms, ROC curves per relation, recovery precision/recall, loss curves).

`run_evaluation(model, workdir)` runs it all (`python -m line_jax.evaluate` and
`python -m line_jax.train` call it); `run_alone(model, workdir, which)` one protocol of
`ALONE` (`python -m line_jax.evaluate --only`).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
from absl import logging

from line_jax.cache import segments as segments_cache
from line_jax.util import files as files_lib
from line_jax.training import guards
from line_jax.eval import placement as placement_lib
from line_jax.eval import plots
from line_jax.eval import protocols
from line_jax.eval import report as report_lib
from line_jax.eval import reuse as reuse_lib
from line_jax.eval import retrieval as retrieval_lib
from line_jax.eval import retrieval_report
from line_jax.eval.transfer import protocol as transfer_run
from line_jax.eval.transfer import report as transfer_report
from line_jax.eval.transfer import settings as transfer_settings
from line_jax.eval.linear import map_spaces
from line_jax.eval import settings as settings_lib
from line_jax.eval.settings import EvalSettings, read_settings
from line_jax.eval.spaces import line_space, teacher_concept_rows, teacher_space
from line_jax.teachers import finetune


def _labels(config) -> Dict[str, str]:
  def name(part, fallback):
    sub = config.get(part, None)
    value = sub.get("name", "") if sub is not None else ""
    return value or fallback
  t1, t2 = name("teacher1", "teacher 1"), name("teacher2", "teacher 2")
  line = f"{t1}+{t2}"
  if t1 == t2:        # one encoder in both roles (the HPO default): keep the rows apart
    t1, t2 = f"{t1} (teacher 1)", f"{t2} (teacher 2)"
  return {"teacher1": t1, "teacher2": t2, "line": line,
          "map_t2_to_t1": f"{t2}→{t1}", "map_t1_to_t2": f"{t1}→{t2}"}


def evaluated_pairs(dataset, settings: EvalSettings,
                    notes: List[str]) -> Tuple[np.ndarray, np.ndarray]:
  """(the split's pairs, the evaluated ones: at most config.eval.max_pairs of them)."""
  split_idx = dataset.split_indices(settings.split)
  if len(split_idx) < 2:
    raise ValueError(f"{dataset.root}: the {settings.split!r} split has {len(split_idx)} "
                     "pairs; evaluation needs at least two (set config.eval.split)")
  pair_idx = split_idx
  if settings.max_pairs and len(split_idx) > settings.max_pairs:
    pair_idx = np.sort(settings_lib.rng(settings, settings_lib.RNG_PAIR_CAP).choice(
        split_idx, size=settings.max_pairs, replace=False))
    notes.append(f"{settings.max_pairs} of the {len(split_idx)} pairs of the split drawn "
                 "(config.eval.max_pairs); every protocol uses these pairs, and the alignment "
                 "negatives are drawn among their texts.")
  if len(pair_idx) < 2:
    raise ValueError(f"config.eval.max_pairs={settings.max_pairs} leaves {len(pair_idx)} "
                     "pair; evaluation needs at least two")
  logging.info("evaluating %d pairs of the %s split (%d in the split)", len(pair_idx),
               settings.split, len(split_idx))
  return split_idx, pair_idx


def _clause_rows(model, which: str):
  """() -> the teacher's rows of the evaluated pairs' clauses (config eval.segment_pattern;
  `line_jax.cache.segments`, embedded once and kept), made when first asked for."""
  made = []

  def get():
    if not made:
      pattern = str(model.config.eval.get("segment_pattern", "") or "")
      if not pattern:
        raise ValueError("config.eval.segment_pattern is empty: no clauses")
      made.append(segments_cache.ensure_segments(model.config[which], getattr(model, which),
                                                 model.dataset, pattern, "eval"))
    return made[0]

  return get


def model_spaces(model, settings: EvalSettings, labels: Dict[str, str], notes: List[str]):
  """(teacher 1, teacher 2, LINE, [linear maps], map info): the spaces every protocol
  compares."""
  clauses = {which: _clause_rows(model, which) for which in ("teacher1", "teacher2")}
  teacher1 = teacher_space("teacher1", labels["teacher1"], model.teacher1, clauses["teacher1"])
  teacher2 = teacher_space("teacher2", labels["teacher2"], model.teacher2, clauses["teacher2"])
  line = guards.finite_space(line_space(labels["line"], model, settings.chunk_size,
                                        clauses["teacher1"]))
  maps, map_info = map_spaces(model, model.dataset, settings, labels, notes)
  return teacher1, teacher2, line, maps, map_info


def _kept_evaluation(model, workdir: str, key: str) -> Optional[Dict]:
  """The evaluation already in workdir when config.eval.reuse is on and it is current."""
  if not model.config.eval.get("reuse", False):
    return None
  previous = reuse_lib.previous_result(workdir, key)
  if previous is not None:
    logging.info("evaluation in %s is current (same parameters, teachers, data, settings "
                 "and code): kept; --config.eval.reuse=False evaluates again", workdir)
  return previous


def _run_protocols(model, workdir: str, settings: EvalSettings, labels: Dict[str, str],
                   notes: List[str], started: float) -> Tuple[Dict, Dict]:
  """Every protocol on the evaluated pairs: (the result's entries, what the plots draw)."""
  dataset = model.dataset
  split_idx, pair_idx = evaluated_pairs(dataset, settings, notes)
  teacher1, teacher2, line, maps, map_info = model_spaces(model, settings, labels, notes)
  all_spaces = [teacher1, teacher2, line] + maps
  logging.info("linear-map baselines fitted (%.1fs)", time.time() - started)

  # 1. Alignment ranks: the same negatives for every space, drawn among the evaluated pairs.
  alignment, rank_arrays, num_negatives = protocols.alignment_protocol(
      dataset, pair_idx, all_spaces, settings, notes)

  # 2. Relations, 3. classification, 4. recovery, 5. geometry.
  relations, roc = protocols.relation_detection(dataset, [teacher1, teacher2, line], settings,
                                                notes)
  classification = protocols.cross_form_classification(dataset, pair_idx, all_spaces,
                                                        settings, notes)
  recovery = protocols.residual_recovery(
      dataset, pair_idx, [line, teacher1],
      {"line": lambda: np.asarray(model.dictionary(), np.float32),
       "teacher1": lambda: np.asarray(model.teacher1.concepts, np.float32)}, settings)
  geo = protocols.geometry(dataset, pair_idx, all_spaces, settings)
  # 6. Single concepts: retrieval, definitions, recovery, real text; 7. transfer; 8. the
  # fine-tuned concept teacher's own validation.
  joint = retrieval_lib.evaluate_joint(model, pair_idx, all_spaces, workdir)
  placement = placement_lib.evaluate_placement(model, labels)   # None: no held-out terms
  transfer = transfer_protocol(model, workdir)
  concept_teacher = finetune.report_metrics(model)
  finetune.write_report_files(concept_teacher, workdir)
  entries = {
      "num_pairs_in_split": int(len(split_idx)), "num_pairs_evaluated": int(len(pair_idx)),
      "alignment": alignment, "linear_maps": map_info,
      "relations": relations, "classification": classification, "recovery": recovery,
      "geometry": geo, "transfer": transfer, "joint": joint, "placement": placement,
      "concept_teacher": concept_teacher}
  return entries, {"ranks": rank_arrays, "num_negatives": num_negatives, "roc": roc}


def _write_files(workdir: str, result: Dict, figures: Dict, train_records: List[Dict],
                 settings: EvalSettings) -> None:
  """The plots, report.md and metrics.json (last) of an evaluation."""
  # Each file is written whole or not at all, and metrics.json last: a rerun with
  # eval.reuse keeps an evaluation only when its metrics.json holds this evaluation's key,
  # so a write that fails (a full disk) cannot leave an old report or missing plots taken
  # for this evaluation's.
  if settings.plots:
    _write_plots(workdir, result, figures, train_records, settings)
  files_lib.write_text(os.path.join(workdir, "report.md"),
                       report_lib.render_report(result, settings.plots)
                       + retrieval_report.render_markdown(result["joint"])
                       + placement_lib.render_section(result.get("placement"))
                       + transfer_report.render_section(result["transfer"])
                       + finetune.report_section(result["concept_teacher"], result["models"]))
  files_lib.write_json(os.path.join(workdir, "metrics.json"), files_lib.json_safe(result),
                       ensure_ascii=False)


def _write_plots(workdir: str, result: Dict, figures: Dict, train_records: List[Dict],
                 settings: EvalSettings) -> None:
  """The evaluation's PNG figures (eval.plots)."""
  labels, recovery = result["models"], result["recovery"]
  files = report_lib.PLOT_FILES
  plots.rank_histograms(figures["ranks"], figures["num_negatives"],
                        os.path.join(workdir, files["ranks"]))
  plots.roc_curves(figures["roc"], os.path.join(workdir, files["roc"]))
  if "results" in recovery:
    plots.recovery_curves({labels[k]: v for k, v in recovery["results"].items()},
                          os.path.join(workdir, files["recovery"]),
                          settings.training_threshold)
  if train_records:
    plots.loss_curves(train_records, os.path.join(workdir, files["loss"]))


def run_evaluation(model, workdir: str) -> Dict:
  """Runs every protocol on `model` and writes report.md, metrics.json and PNGs to workdir.

  Args:
    model: a `line_jax.api.line_model.LineModel` (or any object with its attributes:
      config, dataset, teacher1, teacher2, project_texts, project_concepts, dictionary).
    workdir: output folder (created if missing); `train_log.jsonl` there is plotted.

  Returns:
    The metrics dictionary written to metrics.json (NaN written as null).
  """
  guards.check_model_finite(model)   # NaN scores would rank every positive first
  os.makedirs(workdir, exist_ok=True)
  key = reuse_lib.evaluation_key(model, workdir)
  previous = _kept_evaluation(model, workdir, key)
  if previous is not None:
    return previous
  settings = read_settings(model.config)
  labels = _labels(model.config)
  notes: List[str] = []
  started = time.time()
  entries, figures = _run_protocols(model, workdir, settings, labels, notes, started)

  log_path = os.path.join(workdir, "train_log.jsonl")
  train_records = plots.read_train_log(log_path) if os.path.exists(log_path) else []
  result = {
      "split": settings.split, "dataset": model.dataset.root, "seed": settings.seed,
      "num_pairs_in_split": entries["num_pairs_in_split"],
      "num_pairs_evaluated": entries["num_pairs_evaluated"],
      "models": labels, "notes": notes, "alignment": entries["alignment"],
      "linear_maps": entries["linear_maps"], "relations": entries["relations"],
      "classification": entries["classification"], "recovery": entries["recovery"],
      "geometry": entries["geometry"], "transfer": entries["transfer"],
      "joint": entries["joint"], "placement": entries["placement"],
      "concept_teacher": entries["concept_teacher"],
      "training_log": {"records": len(train_records)} if train_records else None,
      reuse_lib.KEY_FIELD: key,
  }
  _write_files(workdir, result, figures, train_records, settings)
  logging.info("evaluation written to %s (%.1fs)", workdir, time.time() - started)
  return files_lib.json_safe(result)


def transfer_protocol(model, workdir: str) -> Dict:
  """`line_jax.eval.transfer` on the model's dataset: one-hot ids, teachers' and G's rows."""
  settings, labels = read_settings(model.config), _labels(model.config)
  embedders = {
      "teacher1": (labels["teacher1"], functools.partial(teacher_concept_rows, model.teacher1)),
      "teacher2": (labels["teacher2"], functools.partial(teacher_concept_rows, model.teacher2)),
      "line": (f"LINE's G ({labels['line']})", line_space(labels["line"], model,
                                                          settings.chunk_size).embed_concepts)}
  return files_lib.json_safe(transfer_run.run_transfer(
      model.dataset, embedders, transfer_settings.read_config(model.config),
      os.path.join(workdir, transfer_settings.PLOT_FILE) if settings.plots else None))


def joint_protocol(model, workdir: str) -> Dict:
  """`line_jax.eval.retrieval` alone: the pairs and spaces of `run_evaluation`."""
  guards.check_model_finite(model)
  os.makedirs(workdir, exist_ok=True)
  settings, labels = read_settings(model.config), _labels(model.config)
  _, pair_idx = evaluated_pairs(model.dataset, settings, [])
  teacher1, teacher2, line, maps, _ = model_spaces(model, settings, labels, [])
  spaces = [teacher1, teacher2, line] + maps
  result = retrieval_lib.evaluate_joint(model, pair_idx, spaces, workdir)
  # Table 1 on the same pairs, so that a split's alignment can be read without the rest.
  alignment, _, _ = protocols.alignment_protocol(model.dataset, pair_idx, spaces, settings, [])
  return files_lib.json_safe(dict(result, split=settings.split, alignment=alignment))


ALONE = ("transfer", "joint", "placement")   # what `python -m line_jax.evaluate --only` runs


def run_alone(model, workdir: str, which: str) -> str:
  """Runs one protocol (of ALONE) on `model`: its entry of workdir/metrics.json is replaced
  (other entries kept) and its report section written beside it; returns that file's path."""
  if which == "transfer":
    result = transfer_protocol(model, workdir)
    section, report = transfer_report.render_section(result), transfer_settings.REPORT_FILE
  elif which == "joint":
    result = joint_protocol(model, workdir)
    section, report = retrieval_report.render_markdown(result), retrieval_lib.REPORT_FILE
  elif which == "placement":
    guards.check_model_finite(model)
    result = placement_lib.evaluate_placement(model, _labels(model.config))
    if result is None:
      raise ValueError(f"{workdir}: the run held no terms out of training "
                       "(config.data.heldout_terms is 0): there is no placement to measure")
    section, report = placement_lib.render_section(result), placement_lib.REPORT_FILE
  else:
    raise ValueError(f"protocol {which!r}: expected one of {ALONE}")
  return reuse_lib.replace_entry(workdir, which, result, report, section)
