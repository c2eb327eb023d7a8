"""The transfer protocol's plot (macro F1 bars) and its report section (markdown)."""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from line_jax.util import files
from line_jax.eval.transfer.settings import STRATEGIES, STRATEGY_LABELS


def plot_transfer(result: Mapping, path: str) -> str:
  """Macro F1 bars (mean ± std over seeds): one panel per variant and direction."""
  panels = [(v, d, res) for v, info in result["variants"].items()
            for d, res in info["directions"].items()]
  cols = 2
  rows = max(1, int(np.ceil(len(panels) / cols)))
  fig = files.new_figure(figsize=(6.0 * cols, 3.6 * rows))
  for i, (variant, direction, res) in enumerate(panels):
    ax = fig.add_subplot(rows, cols, i + 1)
    keys = list(res)
    width = 0.8 / len(STRATEGIES)
    for j, strategy in enumerate(STRATEGIES):
      mean = [res[k]["results"][strategy]["f1"] for k in keys]
      std = [res[k]["results"][strategy]["f1_std"] for k in keys]
      ax.bar(np.arange(len(keys)) + (j - (len(STRATEGIES) - 1) / 2) * width, mean, width,
             yerr=std, capsize=2, color="C%d" % j, label=STRATEGY_LABELS[strategy])
    ax.set_xticks(np.arange(len(keys)))
    ax.set_xticklabels([result["embeddings"].get(k, k) for k in keys], fontsize=7,
                       rotation=12)
    ax.set_ylabel("macro F1 on the target's test part")
    ax.set_title(f"{direction} ({variant.replace('_', ' ')})", fontsize=9)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6)
  fig.tight_layout()
  return files.save_figure(fig, path, dpi=110)


def _fmt(mean: float, std: float) -> str:
  return f"{mean:.3f} ± {std:.3f}"


def render_section(result: Optional[Mapping]) -> str:
  """The report.md section of the transfer protocol (markdown)."""
  out = ["## Transfer of a list CNN between sites", ""]
  if not result:
    return "\n".join(out + ["Not run.", ""])
  if "skipped" in result:
    return "\n".join(out + [f"Skipped: {result['skipped']}", ""])
  s = result["settings"]
  a, b = result["sites"]
  out += [f"Pairs by site (`{result['site_column']}`"
          + (f", pattern `{result['site_pattern']}`" if result["site_pattern"] else "")
          + f"): {a} {result['site_counts'][a]}, {b} {result['site_counts'][b]}; "
          f"{len(result['classes'])} label classes. A CNN (width-1 convolution with "
          f"{s['filters']} filters over the list of concept embeddings, ReLU, masked max "
          "pooling, fully connected layer; negated concepts are their own entries) is "
          f"trained at one site ({s['validation_fraction']:.0%} held out for early "
          f"stopping) and used at the other: *direct*; *linear-only tuning* and *full "
          f"tuning* on a labelled {s['target_fraction']:.0%} of the target; *target only* "
          "trains the same CNN on that labelled part alone. Macro F1 and accuracy on the "
          f"rest of the target, mean ± standard deviation over {s['num_seeds']} seed(s).", ""]
  if result["label_is_concept_group"]:
    out += ["The label is one of the concepts' groups (for the HPO data: the most frequent "
            "top-level branch among the vignette's present findings), i.e. a function of "
            "the listed concepts' branches. A branch-root concept (e.g. *Abnormality of the "
            "nervous system*) would name a label outright, so the tables are repeated with "
            "the branch-root concepts removed from the lists (*without branch roots*). That "
            "does not make the task more than a lookup: every other concept belongs to one "
            "branch too, and a model that learns (one-hot) or reads (embedding) each "
            "concept's branch solves most of it.", ""]
  for note in result.get("notes", []):
    out.append(f"- {note}")
  if result.get("notes"):
    out.append("")
  for variant, info in result["variants"].items():
    title = variant.replace("_", " ")
    extra = ""
    if "branch_root_concepts" in info:
      extra = (f" {info['branch_root_concepts']} branch-root entries; "
               f"{info['pairs_with_a_root']} pairs had one; {info['entries_removed']} "
               f"occurrences removed; {info['empty_lists']} lists left empty.")
    for direction, res in info["directions"].items():
      first = next(iter(res.values()))
      sizes = first["sizes"]
      out += [f"### {direction}, {title}", "",
              f"Source: {sizes['source_fit']} to train, {sizes['source_validation']} to "
              f"validate; target: {sizes['target_labelled']} labelled "
              f"({sizes['target_tune_validation']} of them to validate), "
              f"{sizes['target_test']} to test.{extra}", ""]
      header = ["Embedding", "Source (validation)"] + [STRATEGY_LABELS[k]
                                                      for k in STRATEGIES] + \
          ["Unseen target entries"]
      rows = []
      for metric in ("f1", "accuracy"):
        for key, r in res.items():
          name = result["embeddings"].get(key, key)
          if r.get("identical_to"):
            name += f" (= {result['embeddings'].get(r['identical_to'])})"
          cells = [f"{name}, {'macro F1' if metric == 'f1' else 'accuracy'}",
                   _fmt(r["source_validation"][metric], r["source_validation"][
                       f"{metric}_std"])]
          cells += [_fmt(r["results"][k][metric], r["results"][k][f"{metric}_std"])
                    for k in STRATEGIES]
          cells.append(f"{r['target_entries_unseen_at_source']:.1%}")
          rows.append(cells)
      out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
      out += ["| " + " | ".join(r) + " |" for r in rows] + [""]
  if result.get("plot"):
    out += [f"![transfer]({result['plot']})", ""]
  load = result.get("load_average")
  out += [f"Protocol time: {result['seconds']:.1f} s wall, {result.get('cpu_seconds', 0):.1f} "
          "s CPU" + (f" (load average {load[0]:.1f} at the end)" if load else "") + ".", ""]
  return "\n".join(out)
