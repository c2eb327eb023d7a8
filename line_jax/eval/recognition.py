r"""Recognition on annotated documents: what the extractor finds, and what LINE adds.

Measured as HPO concept recognisers are scored: per document, the set of annotated ids
against the set of predicted ids (alt ids mapped to primary ids, both sides kept inside the
subtree of `config.eval.recognition_subtree`, HPO: Phenotypic abnormality, using the
ontology file `config.eval.recognition_ontology`, by default the HPO builder's), micro and
macro precision / recall / F1 (macro: the mean over documents; a ratio 0 / 0 counts 0).

Systems:
  - extractor: the dataset's dictionary extractor as its builder configures it (HPO:
    `line_jax.data.hpo.build.make_document_extractor`; others: the notes import's), its
    affirmed mentions;
  - extractor + LINE: those plus the recovered concepts whose confidence (the scorer of
    `line_jax.search.scorer`, fitted by `line_jax.training.scorer_fit` on the model,
    never on these documents) reaches the operating point; the affirmed mentions are the
    list the clauses are matched against;
  - extractor + LINE by cosine: the previous recovery (`LineModel.missing_concepts(...,
    operating_point=None)`: the best term of each unexplained clause, its cosine) at the
    threshold the same rule picks;
  - LINE alone: either confidence's candidates of every clause against an empty list, at
    that confidence's point.

Data: `config.eval.recognition_docs` (JSONL: `doc_id`, `text`, a list of ids in
`config.eval.realtext_ids_field`; other fields such as `spans` ignored), read at evaluation
only. Its documents are split by doc_id into a choosing and a reporting half (per
collection, the part of doc_id before its first "_", ordered by a SHA-256 of
`recognition_split_seed` and the doc_id, alternately), so the operating point is chosen on
one half and read on the other. Without documents the validation vignettes (whose missing
concepts are known) choose it. Either way the synthetic validation vignettes are scored too.

The operating point (`scorer.choose_point`, fixed before any reporting number was seen):
the threshold of `recognition_grid` with the highest combined micro F1 on the choosing data
among those keeping combined precision >= `recognition_min_precision` and F1 >= the
extractor's; none: nothing passes. Of the confidences in `recognition_confidences`
(scorer, cosine) the one of higher F1 at its point on the choosing data is shipped: written
with its threshold and the scorer to the work dir (`scorer.POINT_FILE`), where
`LineModel.missing_concepts` and `nearest_concepts` read it.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from line_jax.data import obo
from line_jax.data.dataset import iter_json_lines
from line_jax.data.hpo import build as hpo_build
from line_jax.data.hpo import ontology as hpo_ontology
from line_jax.data.notes import extractor as notes_extractor
from line_jax.data.notes import settings as notes_settings
from line_jax.eval import realtext
from line_jax.eval import settings as settings_lib
from line_jax.eval import recognition_report
from line_jax.eval import reuse as reuse_lib
from line_jax.search import scorer as scorer_lib
from line_jax.search import terms as terms_lib
from line_jax.training import checkpoint as ckpt_lib
from line_jax.training import scorer_fit
from line_jax.util import files as files_lib
from line_jax.util import segments as segments_lib

REPORT_FILE = recognition_report.REPORT_FILE
PLOT_FILE = recognition_report.PLOT_FILE
KEY = "recognition"      # its entry of metrics.json
CONFIDENCES = ("scorer", "cosine")     # what may rank recovered concepts
SYSTEMS = recognition_report.SYSTEMS


class RecognitionError(ValueError):
  """A bad line of the documents file or a bad setting; the message names the file, the
  line and the field (or the config field)."""


# --- ids: the alt-id map and the subtree filter --------------------------------------------


@dataclasses.dataclass(frozen=True)
class IdFilter:
  """Maps alt ids to primary ids and keeps the ids inside a subtree (None: all)."""
  alt: Dict[str, str]
  keep: Optional[frozenset]

  def __call__(self, ids) -> set:
    mapped = {self.alt.get(i, i) for i in ids}
    return mapped if self.keep is None else mapped & self.keep


def ontology_path(config) -> str:
  """The OBO file of the id filter: eval.recognition_ontology, else the HPO builder's,
  else "" (no alt ids, no subtree)."""
  given = str(config.eval.get("recognition_ontology", "") or "")
  if given:
    return given
  if str(config.data.get("builder", "")) == "hpo":
    hpo = hpo_build.with_defaults(config.data.get("hpo"))
    return hpo.obo_path or hpo_ontology.package_data_path("hp.obo")
  return ""


def id_filter(config) -> Tuple[IdFilter, List[str]]:
  """(the filter, notes on what it does) of `config.eval.recognition_*`."""
  path = ontology_path(config)
  root = str(config.eval.get("recognition_subtree", "") or "")
  if not path:
    notes = ["no ontology file (eval.recognition_ontology): ids are compared as given"]
    if root:
      notes.append(f"eval.recognition_subtree={root!r} needs an ontology: not applied")
    return IdFilter({}, None), notes
  terms = obo.read_obo(path)
  alt = obo.alt_id_map(terms)
  notes = [f"{os.path.basename(path)}: {len(alt)} alt ids mapped to their primary ids"]
  if not root:
    return IdFilter(alt, None), notes
  live = hpo_ontology.live_terms(terms)
  if root not in live:
    raise RecognitionError(f"{path}: eval.recognition_subtree={root!r} is not a live term "
                           "of this ontology")
  keep = frozenset(hpo_ontology.subtree(live, (root,), hpo_ontology.ancestor_sets(live)))
  notes.append(f"gold and predictions kept inside the subtree of {root} "
               f"({live[root].name}, {len(keep)} terms)")
  return IdFilter(alt, keep), notes


# --- documents --------------------------------------------------------------------------------


def load_documents(path: str, ids_field: str) -> Tuple[List[str], List[str], List[list]]:
  """(doc ids, texts, id lists) of a JSONL file; RecognitionError naming the file, line and
  field of a bad row (a doc_id must be a unique non-empty string)."""
  if not os.path.exists(path):
    raise RecognitionError(f"{path}: file not found (config.eval.recognition_docs)")
  doc_ids, texts, ids, seen = [], [], [], {}
  for line_no, row in iter_json_lines(path, RecognitionError):
    doc = row.get("doc_id")
    if not isinstance(doc, str) or not doc.strip():
      raise RecognitionError(f"{path}: line {line_no}, field 'doc_id': missing or not a "
                             "non-empty string")
    if doc in seen:
      raise RecognitionError(f"{path}: line {line_no}, field 'doc_id': {doc!r} is also on "
                             f"line {seen[doc]}")
    seen[doc] = line_no
    text, given = realtext.text_and_ids(row, path, line_no, ids_field, RecognitionError)
    doc_ids.append(doc)
    texts.append(text)
    ids.append(list(dict.fromkeys(given)))
  if not doc_ids:
    raise RecognitionError(f"{path}: no document")
  return doc_ids, texts, ids


def choosing_half(doc_ids: Sequence[str], seed: int) -> np.ndarray:
  """[n] bool, True for the choosing half: within each collection (doc_id before its first
  "_"), documents ordered by SHA-256 of "seed:doc_id" go alternately to the choosing and
  the reporting half, the first to the choosing one."""
  by_collection = collections.defaultdict(list)
  for i, doc in enumerate(doc_ids):
    by_collection[doc.split("_", 1)[0]].append(i)
  choose = np.zeros(len(doc_ids), bool)
  for members in by_collection.values():
    members.sort(key=lambda i: hashlib.sha256(f"{seed}:{doc_ids[i]}".encode()).hexdigest())
    choose[members[0::2]] = True
  return choose


# --- metrics ----------------------------------------------------------------------------------


def _ratio(a: int, b: int) -> float:
  return a / b if b else 0.0


def document_scores(predicted: Sequence[set], gold: Sequence[set]) -> Dict:
  """Micro and macro precision / recall / F1 of per-document id sets (module doc)."""
  tp = [len(p & g) for p, g in zip(predicted, gold)]
  n_pred, n_gold = [len(p) for p in predicted], [len(g) for g in gold]
  micro = scorer_lib.micro_prf(sum(tp), sum(n_pred), sum(n_gold))
  per_p = [_ratio(t, n) for t, n in zip(tp, n_pred)]
  per_r = [_ratio(t, n) for t, n in zip(tp, n_gold)]
  per_f = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(per_p, per_r)]
  mean = lambda x: float(np.mean(x)) if x else 0.0      # noqa: E731
  return {"micro": micro, "macro": {"precision": mean(per_p), "recall": mean(per_r),
                                    "f1": mean(per_f)}, "documents": len(gold)}


@dataclasses.dataclass
class Additions:
  """Candidate additions to each document's base prediction: doc [n], id [n], confidence
  [n] (the best of the id's candidates in the document), correct [n] (a gold id)."""
  doc: np.ndarray
  ids: np.ndarray
  confidence: np.ndarray
  correct: np.ndarray

  def predictions(self, base: Sequence[set], threshold: float,
                  docs: Optional[np.ndarray] = None) -> List[set]:
    """The base sets of `docs` (default: all) with the additions reaching `threshold`."""
    docs = np.arange(len(base)) if docs is None else np.asarray(docs)
    out = {int(d): set(base[d]) for d in docs}
    for d, i in zip(self.doc[self.confidence >= threshold], self.ids[self.confidence
                                                                     >= threshold]):
      if int(d) in out:
        out[int(d)].add(str(i))
    return [out[int(d)] for d in docs]

  def subset(self, docs: np.ndarray) -> "Additions":
    keep = np.isin(self.doc, docs)
    return Additions(self.doc[keep], self.ids[keep], self.confidence[keep],
                     self.correct[keep])


def additions(doc: np.ndarray, ids: np.ndarray, confidence: np.ndarray, base: Sequence[set],
              gold: Sequence[set], keep: IdFilter) -> Additions:
  """Per (document, id), the best confidence of the candidates whose id passes the filter
  and is not in the document's base prediction; correct when the id is gold."""
  best: Dict[Tuple[int, str], float] = {}
  for d, raw, c in zip(np.asarray(doc).tolist(), list(ids), np.asarray(confidence).tolist()):
    for i in keep([str(raw)]):
      if i not in base[d] and c > best.get((d, i), -np.inf):
        best[(d, i)] = c
  items = sorted(best.items())
  d = np.asarray([k[0] for k, _ in items], np.int64)
  i = np.asarray([k[1] for k, _ in items], dtype=object)
  c = np.asarray([v for _, v in items], np.float64)
  correct = np.asarray([x in gold[y] for y, x in zip(d.tolist(), i.tolist())], bool)
  return Additions(d, i, c, correct)


def curve(base: Sequence[set], gold: Sequence[set], adds: Additions, docs: np.ndarray,
          points: int = 60) -> Dict[str, list]:
  """Combined micro precision / recall of base + additions as the threshold falls, over
  `docs` (at most `points` thresholds: quantiles of the confidences)."""
  adds = adds.subset(docs)
  base_tp = sum(len(base[d] & gold[d]) for d in docs)
  base_n = sum(len(base[d]) for d in docs)
  n_gold = sum(len(gold[d]) for d in docs)
  out = {"threshold": [], "precision": [], "recall": [], "f1": []}
  if not len(adds.confidence):
    return out
  grid = np.unique(np.quantile(adds.confidence, np.linspace(0, 1, points)))[::-1]
  for t in grid:
    take = adds.confidence >= t
    m = scorer_lib.micro_prf(base_tp + int((take & adds.correct).sum()),
                             base_n + int(take.sum()), n_gold)
    for k in ("precision", "recall", "f1"):
      out[k].append(m[k])
    out["threshold"].append(float(t))
  return out


# --- a corpus through the systems ---------------------------------------------------------------


@dataclasses.dataclass
class Corpus:
  """Documents with gold id sets, the extractor's affirmed ids (the base prediction) and
  the base as dictionary terms (the list recovery matches clauses against)."""
  name: str
  texts: List[str]
  gold: List[set]
  base: List[set]
  listed: List[np.ndarray]
  doc_ids: Optional[List[str]] = None


@dataclasses.dataclass
class Context:
  """What scoring a corpus needs of the model."""
  model: object
  groups: terms_lib.Groups
  keys: np.ndarray
  info: scorer_lib.TermInfo
  scorer: scorer_lib.LogisticScorer
  settings: Dict
  pattern: str
  keep: IdFilter
  term_ids: np.ndarray          # [G] the id a term is predicted as


def _lists(listed: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
  offsets = np.zeros(len(listed) + 1, np.int64)
  np.cumsum([len(x) for x in listed], out=offsets[1:])
  flat = (np.concatenate(listed).astype(np.int64) if len(listed)
          else np.zeros(0, np.int64))
  return offsets, flat


def cosine_candidates(emb: np.ndarray, owner: np.ndarray, n: int, offsets: np.ndarray,
                      flat: np.ndarray, ctx: "Context") -> Tuple[np.ndarray, ...]:
  """(text, term, cosine) of the previous recovery: the best term of each clause that the
  list does not explain (`terms.segment_candidates`), every proposal of every text."""
  if not len(owner):
    z = np.zeros(0, np.int64)
    return z, z, np.zeros(0)
  cand, best = terms_lib.segment_candidates(
      emb, owner, n, offsets, ctx.groups.representative[flat], ctx.keys, ctx.groups,
      top_k=int(np.bincount(owner).max()), explained_k=int(ctx.settings["explained_k"]),
      skip_terms=np.flatnonzero(ctx.info.skip))
  found = cand >= 0
  docs = np.repeat(np.arange(n), cand.shape[1]).reshape(cand.shape)
  return docs[found], cand[found], best[found]


def score_corpus(corpus: Corpus, ctx: Context) -> Dict[str, Additions]:
  """The additions of each system (`CONFIDENCES` against the extractor's lists, and the
  same against empty lists: `<confidence>_alone`, LINE alone)."""
  clauses, owner = segments_lib.clause_table(corpus.texts, ctx.pattern)
  n = len(corpus.texts)
  emb = (np.asarray(ctx.model.embed_texts(clauses), np.float32) if clauses
         else np.zeros((0, ctx.keys.shape[1]), np.float32))
  offsets, flat = _lists(corpus.listed)
  empty = [set() for _ in range(n)]
  out = {}
  for suffix, (off, fl), base in (("", (offsets, flat), corpus.base),
                                  ("_alone", (np.zeros(n + 1, np.int64),
                                              np.zeros(0, np.int64)), empty)):
    cands = scorer_lib.clause_candidates(emb, owner, clauses, off, fl, ctx.keys, ctx.groups,
                                         ctx.info, **ctx.settings)
    conf = ctx.scorer.predict(cands.features) if len(cands) else np.zeros(0)
    out["scorer" + suffix] = additions(cands.text, ctx.term_ids[cands.term], conf, base,
                                       corpus.gold, ctx.keep)
    docs, term, cos = cosine_candidates(emb, owner, n, off, fl, ctx)
    out["cosine" + suffix] = additions(docs, ctx.term_ids[term], cos, base, corpus.gold,
                                       ctx.keep)
  return out


def evaluate_corpus(corpus: Corpus, adds: Dict[str, Additions], halves: Dict[str, np.ndarray],
                    points: Dict[str, float]) -> Dict:
  """Scores of every system on each half (`halves`: name -> document indices) at the
  given thresholds (`points`: system -> threshold), and the best threshold of each half
  for the scorer (an upper bound, chosen on the data it is read on)."""
  out = {}
  none = [set() for _ in corpus.base]
  for half, docs in halves.items():
    gold = [corpus.gold[d] for d in docs]
    row = {"extractor": document_scores([corpus.base[d] for d in docs], gold)}
    for system, a in adds.items():
      base = none if system.endswith("_alone") else corpus.base
      row[system] = dict(document_scores(a.predictions(base, points[system], docs), gold),
                         threshold=points[system])
    sub = adds["scorer"].subset(docs)
    best = scorer_lib.choose_point(
        sum(len(corpus.base[d] & corpus.gold[d]) for d in docs),
        sum(len(corpus.base[d]) for d in docs), sum(len(g) for g in gold), sub.confidence,
        sub.correct, np.unique(sub.confidence), 0.0)
    row["scorer_best_on_itself"] = {"threshold": best["threshold"], "f1": best["f1"],
                                    "precision": best["precision"], "recall": best["recall"]}
    row["curves"] = {system: curve(none if system.endswith("_alone") else corpus.base,
                                   corpus.gold, a, docs) for system, a in adds.items()}
    out[half] = row
  return out


def choose(corpus: Corpus, adds: Additions, docs: np.ndarray, grid: Sequence[float],
           min_precision: float) -> Dict:
  """`scorer.choose_point` on the documents `docs`."""
  sub = adds.subset(docs)
  return scorer_lib.choose_point(
      sum(len(corpus.base[d] & corpus.gold[d]) for d in docs),
      sum(len(corpus.base[d]) for d in docs), sum(len(corpus.gold[d]) for d in docs),
      sub.confidence, sub.correct, grid, min_precision)


# --- corpora ----------------------------------------------------------------------------------


def document_extractor(config, dataset):
  """The extractor of the dataset's builder (module doc)."""
  if str(config.data.get("builder", "")) == "hpo":
    return hpo_build.make_document_extractor(config.data.get("hpo"))
  return notes_extractor.make_extractor(str(dataset.root), notes_settings.notes_settings())


def _term_rows(ids: Sequence[str], index: Dict[str, int], groups: terms_lib.Groups
               ) -> np.ndarray:
  return np.unique(np.asarray([groups.group_of[index[i]] for i in ids if i in index],
                              np.int64))


def document_corpus(config, dataset, groups: terms_lib.Groups, keep: IdFilter) -> Corpus:
  """The documents of `config.eval.recognition_docs`, the extractor run over them."""
  path = str(config.eval.recognition_docs)
  doc_ids, texts, ids = load_documents(path, str(config.eval.realtext_ids_field))
  extractor = document_extractor(config, dataset)
  index = dataset.concept_index()
  representative = np.asarray(dataset.concept_ids, dtype=object)[groups.representative]
  base, listed = [], []
  for text in texts:
    found, negated = extractor.extract(text).concepts()
    affirmed = [i for i, n in zip(found, negated) if not n]
    rows = _term_rows(affirmed, index, groups)
    listed.append(rows)
    # Predicted as the dictionary's terms (a synonym match counts as its term).
    base.append(keep({str(representative[g]) for g in rows}
                     | {i for i in affirmed if i not in index}))
  return Corpus("documents", texts, [keep(g) for g in ids], base, listed, doc_ids)


def vignette_corpus(dataset, groups: terms_lib.Groups, keep: IdFilter, limit: int,
                    seed: int) -> Optional[Corpus]:
  """The synthetic validation vignettes: gold their true affirmed concepts, base and list
  their affirmed listed ones."""
  pairs = scorer_fit.draw_pairs(dataset, "valid", True, limit, seed, 4)
  if not len(pairs):
    return None
  negated = scorer_fit.true_negated(dataset)
  t_off, t_flat = scorer_fit.true_terms(dataset, groups, pairs, negated)
  l_off, l_flat = scorer_fit.list_terms(dataset, groups, pairs, affirmed_only=True)
  term_ids = np.asarray(dataset.concept_ids, dtype=object)[groups.representative]
  gold = [keep({str(term_ids[g]) for g in t_flat[t_off[i]:t_off[i + 1]]})
          for i in range(len(pairs))]
  listed = [np.unique(l_flat[l_off[i]:l_off[i + 1]]) for i in range(len(pairs))]
  base = [keep({str(term_ids[g]) for g in rows}) for rows in listed]
  return Corpus("valid vignettes", [str(dataset.texts[p]) for p in pairs], gold, base,
                listed)


# --- the protocol -----------------------------------------------------------------------------


def scorer_key(model) -> str:
  """What a fitted scorer depends on: the model (parameters, teachers, shaping config) and
  the scorer's and candidates' settings."""
  rc = model.config.recovery
  fitting = {k: v for k, v in rc.scorer.to_dict().items() if k not in ("use", "threshold")}
  blob = json.dumps({"model": model.fingerprint(), "scorer": fitting,
                     "explained_k": int(rc.segment_explained_k),
                     "skip": list(rc.get("segment_skip_groups", ())),
                     "pattern": scorer_fit.segment_pattern(model.config),
                     "features": list(scorer_lib.FEATURES)}, sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()


def fit_or_reuse(model, workdir: str, groups, keys) -> Tuple[scorer_lib.LogisticScorer, Dict,
                                                             scorer_lib.TermInfo, str]:
  """The model's scorer: the work dir's when fitted with the same key, else fitted now."""
  key = scorer_key(model)
  info = scorer_fit.term_info(model.dataset, groups, model.config)
  try:
    stored = scorer_lib.read_point(workdir)
  except scorer_lib.ScorerError as e:
    logging.warning("%s; fitting the scorer again", e)
    stored = None
  if stored is not None and stored.get("scorer_key") == key:
    logging.info("recognition: reusing the scorer of %s", scorer_lib.point_path(workdir))
    return stored["model"], stored.get("fit", {}), info, key
  started = time.time()
  embed_names = lambda rows: model.project_texts(            # noqa: E731
      np.asarray(model.teacher1.concepts[np.asarray(rows)], np.float32))
  scorer, counts, info = scorer_fit.fit_scorer(model.dataset, model.embed_texts, embed_names,
                                               keys, groups, model.config)
  counts = dict(counts, seconds=round(time.time() - started, 1))
  return scorer, counts, info, key


def evaluate_recognition(model, workdir: str) -> Dict:
  """The protocol (module doc); writes the operating point and the figure into `workdir`."""
  config, ev = model.config, model.config.eval
  started = time.time()
  groups = terms_lib.dataset_groups(model.dataset)
  keys = np.asarray(model.dictionary(), np.float32)
  keep, notes = id_filter(config)
  scorer, fit_counts, info, key = fit_or_reuse(model, workdir, groups, keys)
  ctx = Context(model, groups, keys, info, scorer, scorer_fit.candidate_settings(config),
                scorer_fit.segment_pattern(config), keep,
                np.asarray(model.dataset.concept_ids, dtype=object)[groups.representative])
  grid = [float(t) for t in ev.recognition_grid]
  min_precision = float(ev.recognition_min_precision)
  corpora = {}
  if str(ev.get("recognition_docs", "") or ""):
    docs = document_corpus(config, model.dataset, groups, keep)
    choose_mask = choosing_half(docs.doc_ids, int(ev.recognition_split_seed))
    corpora["documents"] = (docs, {"choosing": np.flatnonzero(choose_mask),
                                   "reporting": np.flatnonzero(~choose_mask),
                                   "all": np.arange(len(docs.texts))})
  else:
    notes.append("no documents (config.eval.recognition_docs is empty): the operating "
                 "point is chosen on the validation vignettes")
  vig = vignette_corpus(model.dataset, groups, keep, int(ev.recognition_max_vignettes),
                        int(ev.seed))
  if vig is not None:
    corpora["vignettes"] = (vig, {"valid": np.arange(len(vig.texts))})
  if not corpora:
    return {"skipped": "no documents and no synthetic validation vignettes", "notes": notes}
  scored = {name: score_corpus(corpus, ctx) for name, (corpus, _) in corpora.items()}
  chooser = "documents" if "documents" in corpora else "vignettes"
  corpus, halves = corpora[chooser]
  choose_docs = halves["choosing" if chooser == "documents" else "valid"]
  points = {system: choose(corpus, scored[chooser][system], choose_docs, grid, min_precision)
            for system in CONFIDENCES}
  allowed = [str(c) for c in ev.recognition_confidences]
  if not allowed or any(c not in CONFIDENCES for c in allowed):
    raise RecognitionError(f"config.eval.recognition_confidences={allowed}: expected a "
                           f"non-empty list of {CONFIDENCES}")
  # The shipped confidence: the higher F1 at its point on the choosing data (ties: the
  # first of the list).
  shipped = max(allowed, key=lambda c: (points[c]["f1"], -allowed.index(c)))
  thresholds = {s: points[s.replace("_alone", "")]["threshold"] for s in SYSTEMS}
  chosen_on = (f"documents, choosing half ({len(choose_docs)} of {len(corpus.texts)})"
               if chooser == "documents" else f"validation vignettes ({len(corpus.texts)})")
  result = {"notes": notes, "ids_field": str(ev.realtext_ids_field), "chosen_on": chosen_on,
            "confidence": shipped, "point": points[shipped], "points": points,
            "scorer": {"fit": fit_counts, "weights": dict(zip(
                scorer.features, np.round(scorer.weights, 4).tolist())),
                "bias": round(scorer.bias, 4)}, "corpora": {}}
  for name, (corpus, halves) in corpora.items():
    entry = evaluate_corpus(corpus, scored[name], halves, thresholds)
    entry["num_documents"] = len(corpus.texts)
    entry["gold_pairs"] = int(sum(len(g) for g in corpus.gold))
    if corpus.doc_ids is not None:
      entry["halves"] = {h: [corpus.doc_ids[d] for d in docs] for h, docs in halves.items()
                         if h != "all"}
    result["corpora"][name] = entry
  record = {"confidence": shipped, "scorer": scorer.to_dict(), "scorer_key": key,
            "fit": fit_counts, "threshold": points[shipped]["threshold"],
            "expected_precision": points[shipped]["added_precision"],
            "expected_combined_precision": points[shipped]["precision"],
            "chosen_on": chosen_on, "rule": points[shipped]["rule"],
            "alternatives": {c: {k: points[c][k] for k in ("threshold", "f1", "precision",
                                                           "added_precision")}
                             for c in CONFIDENCES},
            "params_sha256": ckpt_lib.state_checksum(model.params),
            "candidates": dict(ctx.settings, cue_words=list(ctx.settings["cue_words"]),
                               segment_pattern=ctx.pattern)}
  result["point_file"] = os.path.basename(scorer_lib.write_point(workdir, record))
  if settings_lib.plots_enabled(model.config):
    recognition_report.plot_curves(result, os.path.join(workdir, PLOT_FILE))
    result["plot"] = PLOT_FILE
  result["seconds"] = round(time.time() - started, 1)
  logging.info("recognition: %s >= %s chosen on %s (%.1f s)", shipped,
               points[shipped]["threshold"], chosen_on, result["seconds"])
  return result


def run_alone(model, workdir: str) -> str:
  """Runs the protocol: its entry of workdir/metrics.json is replaced (other entries kept)
  and its section written to workdir/recognition.md; returns that file's path."""
  os.makedirs(workdir, exist_ok=True)
  result = evaluate_recognition(model, workdir)
  return reuse_lib.replace_entry(
      workdir, KEY, files_lib.json_safe(result), REPORT_FILE,
      "\n".join(recognition_report.render_markdown(result)) + "\n")
