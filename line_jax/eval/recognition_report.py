"""The report of `line_jax.eval.recognition`: its markdown section and its precision /
recall curves."""

from __future__ import annotations

from typing import Dict, List

from line_jax.search import scorer as scorer_lib
from line_jax.util import files as files_lib

REPORT_FILE = "recognition.md"
PLOT_FILE = "recognition_pr.png"
SYSTEMS = ("scorer", "cosine", "scorer_alone", "cosine_alone")   # beside the extractor

_LABELS = {"extractor": "extractor", "scorer": "extractor + LINE (scorer)",
           "cosine": "extractor + LINE (cosine)", "scorer_alone": "LINE alone (scorer)",
           "cosine_alone": "LINE alone (cosine)"}


def plot_curves(result: Dict, path: str) -> str:
  """Precision / recall curves of each system, one panel per corpus half."""
  panels = [(name, half, row) for name, entry in result["corpora"].items()
            for half, row in entry.items() if isinstance(row, dict) and "curves" in row]
  cols = max(1, min(3, len(panels)))
  rows = (len(panels) + cols - 1) // cols
  fig = files_lib.new_figure(figsize=(4.6 * cols, 3.9 * max(rows, 1)))
  for k, (name, half, row) in enumerate(panels):
    ax = fig.add_subplot(rows, cols, k + 1)
    for j, (system, c) in enumerate(row["curves"].items()):
      if c["recall"]:
        ax.plot(c["recall"], c["precision"], color=f"C{j + 1}", label=_LABELS[system],
                linewidth=1.2)
      at = row[system]["micro"]
      ax.plot([at["recall"]], [at["precision"]], marker="o", color=f"C{j + 1}",
              markersize=5)
    ext = row["extractor"]["micro"]
    ax.plot([ext["recall"]], [ext["precision"]], marker="*", color="C0", markersize=10,
            label="extractor", linestyle="none")
    ax.set_xlabel("recall (micro)")
    ax.set_ylabel("precision (micro)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{name}: {half}", fontsize=9)
    ax.legend(fontsize=6, loc="lower left")
  fig.tight_layout()
  return files_lib.save_figure(fig, path, dpi=110)


def render_markdown(result: Dict) -> List[str]:
  """The report section."""
  lines = ["", "## Recognition on annotated documents", ""]
  if "skipped" in result:
    return lines + [f"Skipped: {result['skipped']}."] + [f"- {n}" for n in result["notes"]]
  lines += [f"- {n}" for n in result["notes"]]
  lines.append("")
  for c, p in result["points"].items():
    added = ("nothing added" if p["added_precision"] is None
             else f"additions' precision {p['added_precision']:.3f}")
    lines.append(f"- {c}: point {p['threshold']:g} chosen on {result['chosen_on']}, there "
                 f"F1 {p['f1']:.3f}, combined precision {p['precision']:.3f}, {added}"
                 + (" (**shipped**)" if c == result["confidence"] else ""))
  lines += ["", f"Rule: {result['point']['rule']}; the shipped confidence is the one of "
            "higher F1 there (eval.recognition_confidences).", "",
            "| corpus | half | system | threshold | micro P | micro R | micro F1 | "
            "macro P | macro R | macro F1 |", "|---|---|---|---|---|---|---|---|---|---|"]
  for name, entry in result["corpora"].items():
    for half, row in entry.items():
      if not isinstance(row, dict) or "extractor" not in row:
        continue
      for system in ("extractor",) + SYSTEMS:
        s = row[system]
        t = s.get("threshold")
        lines.append(f"| {name} | {half} | {_LABELS[system]} | "
                     f"{'' if t is None else format(t, 'g')} | "
                     + " | ".join(f"{s[a][m]:.3f}" for a in ("micro", "macro")
                                  for m in ("precision", "recall", "f1")) + " |")
      b = row["scorer_best_on_itself"]
      lines.append(f"| {name} | {half} | extractor + LINE at its best threshold on this "
                   f"half (upper bound) | {b['threshold']:.3g} | {b['precision']:.3f} | "
                   f"{b['recall']:.3f} | {b['f1']:.3f} | | | |")
  point = (f"operating point and scorer: "
           f"`{result.get('point_file', scorer_lib.POINT_FILE)}`.")
  lines += ["", f"Curves: `{result['plot']}`; {point}" if result.get("plot")
            else point[0].upper() + point[1:]]
  return lines
