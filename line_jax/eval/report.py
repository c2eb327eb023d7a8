"""report.md from the metrics dictionary, with the tables laid out as in the paper.

Arrows follow the paper's tables: a LINE value that is better than the value of BOTH
teachers gets "↓" where lower is better (mean rank, the text-minus-proxy gap, the geometry
losses) and "↑" where higher is better (everything else). Teacher and baseline rows carry
no arrows.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence

TEACHERS = ("teacher1", "teacher2")
LINE = "line"
MAPS = ("map_t2_to_t1", "map_t1_to_t2")
CLASS_METRICS = (("precision", "Precision"), ("recall", "Recall"), ("f1", "F1"),
                 ("accuracy", "Accuracy"))

PLOT_FILES = {
    "ranks": "rank_histogram.png",
    "roc": "roc_curves.png",
    "recovery": "recovery_precision_recall.png",
    "loss": "loss_curves.png",
}


def fmt(value: Optional[float], digits: int = 3) -> str:
  """A number with fixed decimals; "–" for missing or NaN."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "–"
  return f"{value:.{digits}f}"


def improvement_arrow(value: Optional[float], teacher_values: Sequence[Optional[float]],
                      lower_is_better: bool, magnitude: bool = False) -> str:
  """"↓"/"↑" when `value` beats every teacher value strictly, else "".

  Args:
    value: the LINE value.
    teacher_values: the teachers' values; a missing one means no arrow.
    lower_is_better: the metric's direction; also picks the arrow.
    magnitude: compare absolute values (for signed gaps).
  """
  def usable(v):
    return v is not None and not (isinstance(v, float) and math.isnan(v))
  if not usable(value) or not teacher_values or not all(usable(v) for v in teacher_values):
    return ""
  key = abs if magnitude else (lambda v: v)
  if lower_is_better:
    better = all(key(value) < key(v) for v in teacher_values)
  else:
    better = all(key(value) > key(v) for v in teacher_values)
  return ("↓" if lower_is_better else "↑") if better else ""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return lines


def _line_group_row(width: int) -> List[str]:
  return ["**LINE**"] + [""] * (width - 1)


def _rows_then_line(keys, row, width: int, with_line: bool, line_arrows: bool = True):
  """The rows of `keys` (no arrows), then, if `with_line`, the LINE group header and row."""
  rows = [row(k, False) for k in keys]
  if with_line:
    rows += [_line_group_row(width), row(LINE, line_arrows)]
  return rows


def _figure(label: str, key: str, plots: bool) -> List[str]:
  """The markdown link to one of PLOT_FILES, or nothing when no figures are drawn."""
  return [f"![{label}]({PLOT_FILES[key]})", ""] if plots else []


def _alignment_section(m: Mapping, labels: Mapping[str, str], plots: bool) -> List[str]:
  a = m["alignment"]
  k = a["top_k"]
  res = a["results"]
  cols = (("mean_rank", True), ("mean_reciprocal_rank", False), (f"top{k}_accuracy", False))
  header = ["Models / Metric", "Mean Rank ↓", "Mean Reverse Rank ↑", f"Top{k}@Acc ↑"]
  out = ["## Table 1: alignment of concept lists and texts (section 3.2)", "",
         f"For each positive (concept list, text) pair of the {m['split']} split, "
         f"{a['num_negatives']} other texts of the evaluated pairs, drawn without "
         "replacement, replace the text to form negative pairs; the cosine between the mean "
         "concept embedding and the text embedding ranks the positive among them (rank = 1 + "
         "number of negatives scoring strictly higher, so ties count for the positive). "
         f"{a['num_positives']} positive pairs."]
  if a["used_all_other_texts"]:
    out.append(f"Only {a['pool_size'] - 1} other texts exist, so every other text is a "
               f"negative (the paper draws {a['requested_negatives']}).")
  out.append("")

  def row(key, arrows):
    r = res[key]
    cells = [labels[key]]
    for name, lower in cols:
      arrow = improvement_arrow(r[name], [res[t][name] for t in TEACHERS if t in res],
                                lower) if arrows else ""
      cells.append(fmt(r[name]) + arrow)
    return cells

  rows = _rows_then_line([t for t in TEACHERS if t in res], row, len(header), LINE in res)
  out += _table(header, rows) + [""]
  maps = [k2 for k2 in MAPS if k2 in res]
  if maps:
    out += ["### Table A2: further results for Table 1 (appendix A.4)", "",
            "Least-squares affine maps fitted on the train split from the mean teacher-2 "
            "concept embedding to the teacher-1 text embedding of each pair "
            f"({labels['map_t2_to_t1']}: lists mapped into teacher 1's space, texts as "
            f"teacher 1 embeds them) and the reverse ({labels['map_t1_to_t2']}: texts "
            "mapped into teacher 2's space, lists as teacher 2 embeds them).", ""]
    rows = _rows_then_line(maps, row, len(header), LINE in res, line_arrows=False)
    out += _table(header, rows) + [""]
  out += _figure("rank histograms", "ranks", plots)
  return out


def _relations_section(m: Mapping, labels: Mapping[str, str], plots: bool) -> List[str]:
  r = m["relations"]
  out = ["## Table 2: AUC for detecting related pairs vs random pairs (section 3.3.1)", ""]
  classes = r["classes"]
  if not classes:
    return out + ["No held-out relations in this dataset "
                  "(heldout_relations.parquet missing or empty).", ""]
  leak = r["leak_check"]
  out += [f"Held-out edges ({leak['heldout_edges']}) are absent from the training graph "
          f"(checked in both directions: {leak['in_training_graph']} found). Each related "
          "pair is matched by one random pair " +
          ("whose head and tail are drawn from the groups of the related pair's head and "
           "tail" if r["group_matched"] else "drawn uniformly (the dataset has no groups)") +
          "; random pairs that are known edges or self-pairs are redrawn. Cosine of the "
          "concept embeddings (teachers: their concept-name embeddings; LINE: G).", ""]
  header = ["Models / Relation"] + [c["relation"] for c in classes]
  model_keys = [k for k in TEACHERS + (LINE,) if k in classes[0]["auc"]]

  def row(key, arrows):
    cells = [labels[key]]
    for c in classes:
      auc = c["auc"][key]
      arrow = improvement_arrow(auc, [c["auc"][t] for t in TEACHERS if t in c["auc"]],
                                False) if arrows else ""
      cells.append(fmt(auc) + arrow)
    return cells

  rows = _rows_then_line([k for k in model_keys if k != LINE], row, len(header),
                         LINE in model_keys)
  rows.append(["# relation pairs"] + [str(c["count"]) for c in classes])
  out += _table(header, rows) + [""] + _figure("ROC curves", "roc", plots)
  return out


def _classification_section(m: Mapping, labels: Mapping[str, str]) -> List[str]:
  c = m["classification"]
  out = ["## Table 4: classifying texts and their concept-list proxies (section 3.3.3)", ""]
  if "skipped" in c:
    return out + [f"Skipped: {c['skipped']}", ""]
  probe = c["probe"]
  out += [f"Task: predict the pair's `label` ({c['num_classes']} classes, "
          f"{c['num_examples']} pairs of the {m['split']} split: " +
          ", ".join(f"{k} {v}" for k, v in c["class_counts"].items()) + "). "
          f"Multinomial logistic regression (Adam, lr {probe['learning_rate']:g}, at most "
          f"{probe['max_epochs']} full-batch epochs, early stopping: "
          f"{probe['early_stopping']}" +
          (f" < {probe['tol']:g}" if probe["early_stopping"] == "loss_change" else
           f", patience {probe['patience']}") +
          f"; features {'standardised per fold' if probe['standardize'] else 'raw'}), "
          f"{c['folds']}-fold stratified cross-validation, macro precision/recall/F1 and "
          "accuracy averaged over folds. \"Concept\" = the mean embedding of the pair's "
          "concept list (the proxy), \"Sentence\" = the text embedding.", ""]
  res = c["results"]
  header = ["Model"] + [f"Concept {n}" for _, n in CLASS_METRICS] + \
      [f"Sentence {n}" for _, n in CLASS_METRICS]

  def row(key, arrows):
    cells = [labels[key]]
    for form in ("concept", "sentence"):
      for name, _ in CLASS_METRICS:
        v = res[key][form][name]
        arrow = improvement_arrow(v, [res[t][form][name] for t in TEACHERS if t in res],
                                  False) if arrows else ""
        cells.append(fmt(v) + arrow)
    return cells

  rows = _rows_then_line([t for t in TEACHERS if t in res], row, len(header), LINE in res)
  out += _table(header, rows) + [""]

  out += ["### Table 5: text-minus-proxy difference (from Table 4)", "",
          "Sentence score minus concept-list score; a LINE difference smaller in magnitude "
          "than both teachers' is marked \"↓\".", ""]
  gap_header = ["Model"] + [n for _, n in CLASS_METRICS]

  def gap_row(key, arrows):
    cells = [labels[key]]
    for name, _ in CLASS_METRICS:
      v = res[key]["gap"][name]
      arrow = improvement_arrow(v, [res[t]["gap"][name] for t in TEACHERS if t in res],
                                True, magnitude=True) if arrows else ""
      cells.append(fmt(v) + arrow)
    return cells

  rows = _rows_then_line([t for t in TEACHERS if t in res], gap_row, len(gap_header),
                         LINE in res)
  out += _table(gap_header, rows) + [""]

  maps = [k for k in MAPS if k in res]
  if maps:
    out += ["### Table A3: further results for Table 4 (appendix A.4)", "",
            "The linear-map baselines of Table A2: each row uses that space's text and "
            "concept-list embeddings. Last columns: the text-minus-proxy F1 difference.", ""]
    header_a3 = header + ["F1 difference"]
    rows = _rows_then_line(maps, lambda k, arrows: row(k, arrows) + [fmt(res[k]["gap"]["f1"])],
                           len(header_a3), LINE in res, line_arrows=False)
    out += _table(header_a3, rows) + [""]
  return out


def _recovery_section(m: Mapping, labels: Mapping[str, str], plots: bool) -> List[str]:
  r = m["recovery"]
  out = ["## Residual recovery on the synthetic vignettes (section 2.4, appendix A.2)", ""]
  if "skipped" in r:
    return out + [f"Skipped: {r['skipped']}", ""]
  out += [f"{r['num_pairs']} synthetic pairs of the {m['split']} split; "
          f"{r['num_missing']} true concepts are missing from their extracted lists. For "
          "each pair the residual e = text - mean(concepts) is searched against the concept "
          "dictionary; the best candidate not already in the list is recovered when its "
          "cosine reaches the threshold, and is correct when it is one of the missing true "
          "concepts. Precision = correct / recovered, recall = correct / missing. "
          f"Training uses threshold {fmt(r['training_threshold'], 2)}.", ""]
  keys = [k for k in (LINE,) + TEACHERS if k in r["results"]]
  header = ["Threshold"]
  for k in keys:
    header += [f"{labels[k]} recovered", f"{labels[k]} correct", f"{labels[k]} precision",
               f"{labels[k]} recall"]
  rows = []
  for i, tau in enumerate(r["thresholds"]):
    cells = [fmt(tau, 2)]
    for k in keys:
      curve = r["results"][k]
      cells += [str(curve["recovered"][i]), str(curve["correct"][i]),
                fmt(curve["precision"][i]), fmt(curve["recall"][i])]
    rows.append(cells)
  out += _table(header, rows) + [""] + _figure("recovery", "recovery", plots)
  return out


def _geometry_section(m: Mapping, labels: Mapping[str, str]) -> List[str]:
  g = m["geometry"]
  res = g["results"]
  out = ["## Embedding-space diagnostics (alignment and uniformity, seed 003)", "",
         "Alignment = mean ||t̂ - ĉ||² over the positive (text, concept-list proxy) pairs of "
         "the split (L2-normalised); uniformity = log mean exp(-2||x̂ - ŷ||²) over pairs of "
         f"texts, resp. of dictionary concepts (at most {g['max_points']} points, seeded). "
         "Lower is better for all three.", ""]
  cols = (("alignment", "Alignment ↓"), ("uniformity_text", "Uniformity (texts) ↓"),
          ("uniformity_concepts", "Uniformity (concepts) ↓"))
  header = ["Space"] + [n for _, n in cols]

  def row(key, arrows):
    cells = [labels[key]]
    for name, _ in cols:
      arrow = improvement_arrow(res[key][name], [res[t][name] for t in TEACHERS if t in res],
                                True) if arrows else ""
      cells.append(fmt(res[key][name]) + arrow)
    return cells

  rows = _rows_then_line([t for t in TEACHERS if t in res] + [k for k in MAPS if k in res],
                         row, len(header), LINE in res)
  return out + _table(header, rows) + [""]


def render_report(m: Mapping, plots: bool = True) -> str:
  """The whole report.md text for a metrics dictionary built by `line_jax.eval.protocols`;
  `plots`: link the figures of PLOT_FILES (False when the evaluation drew none)."""
  labels: Dict[str, str] = dict(m["models"])
  out = [f"# LINE evaluation: {m['split']} split", "",
         f"Dataset `{m['dataset']}`; {m['num_pairs_evaluated']} of the "
         f"{m['num_pairs_in_split']} pairs of the split evaluated; seed {m['seed']}. "
         f"Teacher 1 (text encoder): {labels['teacher1']}; teacher 2 (concept encoder): "
         f"{labels['teacher2']}; LINE: {labels[LINE]} (F on teacher-1 texts, G on "
         "teacher-2 concepts). Teacher rows use the raw teacher embeddings of both the text "
         "and the concept names (negated occurrences use the negated form's embedding). "
         "Arrows mark LINE values better than both teachers (↓ lower is better, "
         "↑ higher is better).", ""]
  if m.get("notes"):
    out += ["Notes:", ""] + [f"- {n}" for n in m["notes"]] + [""]
  out += _alignment_section(m, labels, plots)
  out += _relations_section(m, labels, plots)
  out += _classification_section(m, labels)
  out += _recovery_section(m, labels, plots)
  out += _geometry_section(m, labels)
  out += ["## Training loss curves", ""]
  if m.get("training_log"):
    out += [f"{m['training_log']['records']} records of `train_log.jsonl`.", ""]
    out += _figure("loss curves", "loss", plots)
  else:
    out += ["No `train_log.jsonl` in the work dir.", ""]
  return "\n".join(out)
