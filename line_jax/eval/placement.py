r"""Placement of concepts the model never saw (a run with `config.data.heldout_terms` > 0).

Training left every entry of the held-out terms out of the pairs, the graph and the
negatives (`line_jax.data.heldout_terms`). Here the whole graph is back: G embeds each
held-out entry from its teacher-2 row and its neighbours, as it would a concept added to
the ontology after training. Three measures, each for the held-out terms and, as the
reference, for queries drawn (seeded; at most `eval.placement_seen_queries`) from terms
the model trained on:

  (a) name -> term: each entry of a held-out term that has other entries (a synonym,
      a layperson name, ...) is a query, embedded as a text (LINE: F of teacher 1's row of
      the string); the dictionary is every entry but the query's own (G for LINE, each
      teacher its own rows), entries of one term scored by their best; the rank of the
      query's term. The query's own entry is left out so that a teacher, whose text and
      concept rows of a string are one vector, is not ranked first by construction;
  (b) name -> own entry (LINE only): the same queries, every entry of the dictionary kept:
      does F of a string land on G of that very string's entry, for a term G never trained
      on? (A teacher scores 1.0 here by construction.) Single-entry terms are queries too;
  (c) definition -> term: the definition texts of held-out terms (pairs.parquet source
      "definition", source_id the term; every split, since none was trained on), ranked
      like (a) with nothing left out, for teacher 1 and LINE (teacher 2 embeds the evaluated
      splits' texts only).

Ranks count the terms scoring strictly higher (1 = first); recall@k and MRR as
`line_jax.search.terms.retrieval_summary`. Part of every evaluation of such a run (report.md,
the `placement` entry of metrics.json); alone: `python -m line_jax.evaluate --workdir=DIR
--only=placement` (DIR/placement.md).
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from line_jax.cache import store as emb_lib
from line_jax.data.dataset import read_optional_columns
from line_jax.eval import retrieval as retrieval_lib
from line_jax.eval import settings as settings_lib
from line_jax.eval import spaces as spaces_lib
from line_jax.search.terms import Groups, dataset_groups, l2_normalize, retrieval_summary

REPORT_FILE = "placement.md"      # the section alone (`--only=placement`)


def exclusion_ranks(queries: np.ndarray, keys: np.ndarray, target: np.ndarray,
                    own: Optional[np.ndarray] = None, groups: Optional[Groups] = None,
                    chunk: int = 256) -> np.ndarray:
  """[M] rank of each query's `target` term among all terms, by the cosine of the query
  to the term's best entry of `keys`, the query's `own` entry (-1: none) left out.

  Args:
    queries: [M, d] query vectors; keys: [C, d] the dictionary's entries.
    target: [M] term of each query; own: optional [M] entry left out of each query's ranking.
    groups: entries -> terms (default: one term per entry).
    chunk: queries scored per block.
  """
  groups = groups or Groups.identity(len(keys))
  q = l2_normalize(np.asarray(queries, np.float32))
  k = l2_normalize(np.asarray(keys, np.float32))
  target = np.asarray(target, np.int64)
  own = np.full(len(q), -1, np.int64) if own is None else np.asarray(own, np.int64)
  ranks = np.zeros(len(q), np.int64)
  for s in range(0, len(q), chunk):
    e = min(s + chunk, len(q))
    scores = q[s:e] @ k.T
    rows = np.flatnonzero(own[s:e] >= 0)
    scores[rows, own[s:e][rows]] = -np.inf
    terms = groups.collapse(scores)
    mine = terms[np.arange(e - s), target[s:e]]
    ranks[s:e] = 1 + (terms > mine[:, None]).sum(axis=1)
  return ranks


def held_terms(groups: Groups, held: np.ndarray) -> np.ndarray:
  """[G] bool: the terms whose entries `held` are kept out of training."""
  out = np.zeros(groups.num_groups, bool)
  out[groups.group_of[held]] = True
  return out


def name_queries(groups: Groups, held_term: np.ndarray, seen_count: int, rng) -> Dict:
  """Entries of held-out terms (`held_term` [G]; and a draw of at most `seen_count` entries
  of trained terms) that are queries of (a), i.e. whose term has other entries, and of (b),
  every entry."""
  size = np.bincount(groups.group_of, minlength=groups.num_groups)
  several = size[groups.group_of] > 1
  out = {}
  for name, mask in (("synonym", several), ("own", np.ones(len(several), bool))):
    heldout = np.flatnonzero(mask & held_term[groups.group_of])
    seen = np.flatnonzero(mask & ~held_term[groups.group_of])
    take = min(len(seen), seen_count)
    out[name] = (heldout, np.sort(rng.choice(seen, size=take, replace=False)))
  return out


def definition_queries(dataset, groups: Groups, held_term: np.ndarray):
  """(pair rows, their defined term) of the definitions of held-out terms (`held_term` [G])
  and of the trained terms' definitions in the evaluated splits (valid and test: never
  trained on)."""
  columns = read_optional_columns(os.path.join(str(dataset.root), "pairs.parquet"),
                                  ["source", "source_id"])
  if "source" not in columns or "source_id" not in columns:
    return None
  index = dataset.concept_index()
  rows, terms = [], []
  for p, (source, sid) in enumerate(zip(columns["source"], columns["source_id"])):
    if source == "definition" and sid in index:
      rows.append(p)
      terms.append(groups.group_of[index[sid]])
  rows, terms = np.asarray(rows, np.int64), np.asarray(terms, np.int64)
  is_held = held_term[terms] if len(terms) else np.zeros(0, bool)
  unseen_split = np.isin(dataset.split[rows], ("valid", "test")) if len(rows) else is_held
  return {"heldout": (rows[is_held], terms[is_held]),
          "seen": (rows[~is_held & unseen_split], terms[~is_held & unseen_split])}


def _spaces(model, labels: Dict[str, str], chunk: int) -> Dict:
  """key -> (label, string rows -> query vectors, pair rows -> text vectors, keys): the
  teachers' own rows, and LINE's F of teacher 1's rows against G (`line_jax.eval.spaces`)."""
  t1 = lambda rows: emb_lib.gather_rows(model.teacher1.concepts, rows, np.float32)  # noqa
  t2 = lambda rows: emb_lib.gather_rows(model.teacher2.concepts, rows, np.float32)  # noqa
  line = spaces_lib.line_space(labels["line"], model, chunk)
  return {
      "teacher1": (labels["teacher1"], t1,
                   spaces_lib.teacher_space("teacher1", labels["teacher1"],
                                            model.teacher1).embed_texts,
                   lambda: model.teacher1.concepts),
      "teacher2": (labels["teacher2"], t2, None, lambda: model.teacher2.concepts),
      "line": (labels["line"],
               lambda rows: spaces_lib.chunked(model.project_texts, t1(rows), chunk),
               line.embed_texts, model.dictionary)}


def evaluate_placement(model, labels: Dict[str, str]) -> Optional[Dict]:
  """The protocol (module doc) on a run with held-out terms; None for a run without."""
  dataset = model.dataset
  if dataset.heldout_concepts is None or not len(dataset.heldout_concepts):
    return None
  held = np.asarray(dataset.heldout_concepts, np.int64)
  settings = settings_lib.read_settings(model.config)
  joint = retrieval_lib.read_settings(model.config)     # retrieval_ks, retrieval_chunk
  ks, chunk = joint.ks, joint.chunk
  groups = dataset_groups(dataset)
  held_term = held_terms(groups, held)
  queries = name_queries(groups, held_term,
                         int(model.config.eval.get("placement_seen_queries", 2000)),
                         settings_lib.rng(settings, settings_lib.RNG_PLACEMENT))
  spaces = _spaces(model, labels, settings.chunk_size)
  keys = {key: np.asarray(space[3](), np.float32) for key, space in spaces.items()}

  def summary(key, vectors, target, own, by_term=True):
    return retrieval_summary(exclusion_ranks(vectors, keys[key], target, own,
                                             groups if by_term else None, chunk), ks)

  result = {"fraction": float(model.config.data.heldout_terms),
            "heldout_terms": int(held_term.sum()),
            "heldout_entries": int(len(held)), "num_terms": int(groups.num_groups),
            "ks": list(ks), "models": {key: space[0] for key, space in spaces.items()},
            "name_to_term": {key: {part: summary(key, space[1](rows), groups.group_of[rows],
                                                 rows)
                                   for part, rows in zip(("heldout", "seen"),
                                                         queries["synonym"])}
                             for key, space in spaces.items()},
            "name_to_own_entry": {"line": {
                part: summary("line", spaces["line"][1](rows), rows, None, by_term=False)
                for part, rows in zip(("heldout", "seen"), queries["own"])}}}
  definitions = definition_queries(dataset, groups, held_term)
  result["definition_to_term"] = (
      {"skipped": "pairs.parquet has no source/source_id columns"} if definitions is None
      else {key: {part: summary(key, spaces[key][2](rows), terms, None)
                  for part, (rows, terms) in definitions.items()}
            for key in ("teacher1", "line")})
  return result


# --------------------------------------------------------------------------------------
# Report section.
# --------------------------------------------------------------------------------------


def _f(x) -> str:
  return "–" if x is None or not np.isfinite(x) else f"{x:.3f}"


def _table(block: Dict, models: Dict, ks: Sequence[int]) -> List[str]:
  cols = [f"R@{k}" for k in ks] + ["MRR", "n"]
  lines = ["| model | terms | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
  for key, parts in block.items():
    for part, name in (("heldout", "held out"), ("seen", "trained on")):
      r = parts[part]
      lines.append(f"| {models.get(key, key)} | {name} | "
                   + " | ".join([_f(r.get(f"recall@{k}")) for k in ks] + [_f(r["mrr"]),
                                                                          str(r["count"])])
                   + " |")
  return lines


def render_section(result: Optional[Dict]) -> str:
  """Markdown of `evaluate_placement`'s result ("" for a run without held-out terms)."""
  if not result:
    return ""
  models, ks = result["models"], result["ks"]
  lines = ["", "## Placement of concepts the model never saw", "",
           f"{result['heldout_terms']} of the {result['num_terms']} terms "
           f"({result['heldout_entries']} dictionary entries; data.heldout_terms="
           f"{result['fraction']:g}) were kept out of training: pairs, graph and negatives. "
           "G embeds them from their teacher-2 rows and, now, their neighbours. The "
           "reference rows are queries drawn from the terms the model trained on.", ""]
  if result["name_to_term"]["line"]["heldout"]["count"]:
    lines += ["Name -> term (each entry of a term with other entries, embedded as a text; "
              "its own entry left out of the dictionary):", ""]
    lines += _table(result["name_to_term"], models, ks)
  else:
    lines += ["Name -> term: no held-out term has a second entry (concepts.parquet "
              "`term_id`), so there is nothing to rank."]
  lines += ["", "Name -> its own entry (LINE: F of the string vs G of every entry; a "
            "teacher is 1.0 by construction):", ""]
  lines += _table(result["name_to_own_entry"], models, ks)
  defs = result["definition_to_term"]
  if "skipped" in defs:
    lines += ["", f"Definition -> term: skipped ({defs['skipped']})."]
  else:
    lines += ["", "Definition -> term (held out: every definition of a held-out term; "
              "trained on: the valid and test definitions of the others):", ""]
    lines += _table(defs, models, ks)
  return "\n".join(lines) + "\n"
