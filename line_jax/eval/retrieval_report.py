"""The report section of the single-concept protocols (`line_jax.eval.retrieval`):
markdown of `retrieval.evaluate_joint`'s result, written into report.md and, alone, joint.md.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from line_jax.eval import realtext
from line_jax.search.terms import CONFIDENCES


def _f(x, digits=3):
  return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else \
      f"{x:.{digits}f}"


def _retrieval_table(results: Dict, models: Dict, ks, by_source: bool) -> List[str]:
  cols = [f"R@{k}" for k in ks] + ["MRR", "n"]
  lines = ["| model | " + (" source |" if by_source else "") + " | ".join(cols) + " |",
           "|---|" + ("---|" if by_source else "") + "---|" * len(cols)]
  for key, res in results.items():
    for name, r in (res.items() if by_source else [("", res)]):
      cells = [_f(r.get(f"recall@{k}")) for k in ks] + [_f(r.get("mrr")), str(r["count"])]
      lines.append(f"| {models.get(key, key)} | " + (f"{name} | " if by_source else "")
                   + " | ".join(cells) + " |")
  return lines


def render_markdown(result: Optional[Dict]) -> str:
  if not result:
    return ""
  s = result["settings"]
  ks = s["ks"]
  lines = ["", "## Single concepts in the joint space", "",
           f"Dictionary: {result['num_terms']} terms ({result['num_entries']} entries"
           + ("; a term's synonym entries count as that term, scored by the best of them"
              if s.get("by_term", True) else "; every entry ranked on its own") + "). Pairs: "
           + ", ".join(f"{k} {v}" for k, v in result["pairs_by_source"].items())
           + " (real = definitions, vignette = generated).", ""]
  lines += _retrieval_sections(result)
  lines += _recovery_section(result)
  if "realtext" in result:
    lines += realtext.render_markdown(result["realtext"], ks)
  if result.get("plot"):
    lines += ["", f"![single concepts]({result['plot']})"]
  return "\n".join(lines) + "\n"


def _retrieval_sections(result: Dict) -> List[str]:
  """(a) text -> concept (by text and by clause) and (b) definition -> defined term."""
  ks = result["settings"]["ks"]
  models = result["models"]
  lines = ["### (a) Text -> concept retrieval (each listed non-negated concept among the "
           "whole dictionary)", ""]
  lines += _retrieval_table(result["text_to_concept"], models, ks, True)
  if result.get("text_to_concept_segments"):
    lines += ["", "By clause: each concept scored by its best cosine over the text and its "
              "clauses (config.eval.segment_pattern), in every space.", ""]
    lines += _retrieval_table(result["text_to_concept_segments"], models, ks, True)
  for key, why in result.get("text_to_concept_segments_skipped", {}).items():
    lines.append(f"- {models.get(key, key)}: no clause-level figures ({why})")
  d = result["definition_to_term"]
  lines += ["", "### (b) Definition -> defined term", ""]
  if "skipped" in d:
    lines.append(f"Skipped: {d['skipped']}")
  else:
    lines.append(f"{d['num_definitions']} definitions ({d['unknown_defined_terms']} defined "
                 "terms not in the dictionary).")
    lines.append("")
    lines += _retrieval_table(d["results"], models, ks, False)
  return lines


def _recovery_section(result: Dict) -> List[str]:
  """(c) recovery of a missing concept: its counts and settings, then one row per space,
  estimator and confidence."""
  s = result["settings"]
  models = result["models"]
  rec = result["recovery"]
  lines = ["", "### (c) Recovery of a missing concept (synthetic vignettes)", ""]
  if "skipped" in rec:
    lines.append(f"Skipped: {rec['skipped']}")
    return lines
  first = next(iter(rec["results"].values()), None)
  if first:
    lines.append(f"{first['num_pairs']} vignettes, {first['pairs_with_missing']} with a "
                 f"missing true concept, {first['num_missing']} missing concepts. Hit@k: a "
                 "missing concept among the k best candidates not yet listed (pairs with "
                 "one). Operating point: highest recall at precision >= "
                 f"{s['min_precision']} adding at least {s['min_added']}; configured: "
                 f"recovery.estimator={s['estimator']}, confidence={s['confidence']}, "
                 "threshold="
                 f"{s['threshold']}.")
    lines.append("")
  hk = s["recovery_top_k"]
  chosen_on = rec.get("chosen_on")
  if chosen_on:
    lines += [f"Chosen on {chosen_on['split']}: each operating point chosen on the "
              f"{chosen_on['vignettes']} vignettes of split `{chosen_on['split']}` "
              "(eval.recovery_choose_on) and applied here, its threshold, precision and "
              "recall there, then here.", ""]
  lines += [f"| model | estimator | hit@1 | hit@{hk} | confidence | op. threshold | "
            "op. precision | op. recall | configured precision | configured recall |"
            + (" chosen threshold | chosen there (P / R) | here (P / R) |"
               if chosen_on else ""),
            "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if chosen_on
                                                          else "")]
  for key, res in rec["results"].items():
    for est, e in res["estimators"].items():
      for conf in CONFIDENCES:
        lines.append(_recovery_row(models.get(key, key), est, e, conf, hk, chosen_on))
  for key, res in rec["results"].items():
    if res.get("skipped"):
      lines.append(f"- {models.get(key, key)}: " + "; ".join(
          f"{est} skipped, {why}" for est, why in res["skipped"].items()))
  return lines


def _recovery_row(model: str, est: str, e: Dict, conf: str, hk: int, chosen_on) -> str:
  """One (c) row: a space's estimator under one confidence."""
  op = e[conf]["operating_point"]
  cfg = e[conf].get("configured", {})
  at = e[conf].get("at_chosen_point")
  return (f"| {model} | {est} | {_f(e['hit@1'])} | "
          f"{_f(e[f'hit@{hk}'])} | {conf} | {_f(op['threshold'], 4)} | "
          f"{_f(op['precision'])} | {_f(op['recall'])} | {_f(cfg.get('precision'))} | "
          f"{_f(cfg.get('recall'))} |"
          + ((f" {_f(at['threshold'], 4)} | {_f(at['chosen_precision'])} / "
              f"{_f(at['chosen_recall'])} | {_f(at['precision'])} / {_f(at['recall'])} |")
             if at else (" | | |" if chosen_on else "")))
