r"""Evaluation on a set of real annotated sentences kept outside the dataset.

`config.eval.realtext` (empty by default) names a JSONL file, one sentence a line, with a
`text` field and a list of concept ids (field `config.eval.realtext_ids_field`); optional
`doc_id` (the part before its first "_" breaks the tables down by collection). The set is
read at evaluation time only, never trained on. Its sentences are embedded by each teacher
(both must be Hugging Face teachers, kind "hf") and scored for:
  - list alignment (Table 1's protocol): each sentence's annotated concepts, as a list, rank
    its own sentence among `config.eval.num_negatives` other sentences of the set;
  - text -> concept retrieval: each annotated concept ranked among the whole dictionary;
  - the same retrieval by segment (`line_jax.util.segments`, config.eval.segment_pattern; "" =
    off): each concept scored by its best cosine over the sentence and its clauses; and
    list alignment by segment, a list scoring a sentence by the mean over its concepts of
    that best cosine (late interaction), against the same negatives.
Each is given for the whole set, by collection and by the number of concepts a sentence
lists (1, 2, 3-4, 5+: `line_jax.eval.by_segment`).
Ids not in the dictionary are counted and listed in the report; a sentence left with none is
counted and left out of both protocols.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from absl import logging

from line_jax.util import segments
from line_jax import teachers
from line_jax.search import terms
from line_jax.data.dataset import iter_json_lines
from line_jax.eval import by_segment
from line_jax.eval import metrics
from line_jax.teachers import finetune

_RNG_REALTEXT = 101     # default_rng([eval.seed, this]) draws the negatives


class RealTextError(ValueError):
  """A bad line of the real-text file; the message names the file, the line and the field."""


def load_realtext(path: str, ids_field: str, concept_index: Dict[str, int]) -> Dict:
  """Reads the JSONL file; returns texts, lists of dictionary rows and what was not known.

  Returns:
    dict with `texts` [S] (sentences with at least one known id), `offsets` [S+1], `flat`
    (dictionary rows), `collections` [S] (doc_id prefix or ""), `num_lines`,
    `num_ids`, `unknown_ids` {id: occurrences}, `sentences_without_known_ids`.
  """
  if not os.path.exists(path):
    raise RealTextError(f"{path}: file not found (config.eval.realtext)")
  texts, lists, groups = [], [], []
  unknown = collections.Counter()
  num_lines = num_ids = without = 0
  for line_no, row in iter_json_lines(path, RealTextError):
    num_lines += 1
    text, ids = text_and_ids(row, path, line_no, ids_field, RealTextError)
    num_ids += len(ids)
    known = []
    for i in dict.fromkeys(ids):
      if i in concept_index:
        known.append(concept_index[i])
      else:
        unknown[i] += 1
    if not known:
      without += 1
      continue
    texts.append(text)
    lists.append(known)
    doc = row.get("doc_id")
    groups.append(str(doc).split("_", 1)[0] if isinstance(doc, str) and doc else "")
  offsets = np.zeros(len(lists) + 1, np.int64)
  np.cumsum([len(x) for x in lists], out=offsets[1:])
  if unknown:
    logging.info("%s: %d of %d ids not in the dictionary (%d distinct); %d sentences have "
                 "none known", path, sum(unknown.values()), num_ids, len(unknown), without)
  return {"texts": texts, "offsets": offsets,
          "flat": np.asarray([c for x in lists for c in x], np.int64),
          "collections": np.asarray(groups, dtype=object), "num_lines": num_lines,
          "num_ids": num_ids, "unknown_ids": dict(unknown.most_common()),
          "sentences_without_known_ids": without}


def text_and_ids(row: dict, path: str, line_no: int, ids_field: str, error: type):
  """(text, ids) of one JSON line of annotated text, or `error` naming the file, line and
  field: a non-empty string `text` and a list of id strings under `ids_field`."""
  text = row.get("text")
  if not isinstance(text, str) or not text.strip():
    raise error(f"{path}: line {line_no}, field 'text': missing or empty")
  ids = row.get(ids_field)
  if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
    raise error(f"{path}: line {line_no}, field '{ids_field}': expected a list of id "
                f"strings, got {type(ids).__name__} (config.eval.realtext_ids_field)")
  return text, ids


def late_alignment_ranks(segment_rows: np.ndarray, segment_owner: np.ndarray,
                         keys: np.ndarray, offsets: np.ndarray, flat: np.ndarray,
                         negatives: np.ndarray) -> np.ndarray:
  """Table 1 by clause (late interaction): each sentence's list ranks its own sentence
  among the `negatives` [n, K], a list scoring a sentence by the mean over its concepts of
  each concept's best cosine over the sentence's segments (`segment_owner` [P]
  non-decreasing, the whole sentence among them)."""
  seg = terms.l2_normalize(np.asarray(segment_rows, np.float32))
  listed = terms.l2_normalize(np.asarray(keys, np.float32)[flat])
  starts = np.flatnonzero(np.r_[True, np.diff(segment_owner) != 0])
  best = np.maximum.reduceat(seg @ listed.T, starts, axis=0)      # [n texts, M listed]
  sizes = np.diff(offsets)                     # every list holds a concept
  by_list = np.add.reduceat(best, offsets[:-1], axis=1) / sizes    # [n texts, n lists]
  n = len(sizes)
  own = by_list[np.arange(n), np.arange(n)]
  return metrics.ranks_against_negatives(own, by_list[negatives, np.arange(n)[:, None]])


def string_embedders(model) -> List[tuple]:
  """(key, label, embed strings -> [N, d], dictionary [C, d]) of each space; skipped ones
  as (key, reason)."""
  encoders, out = {}, []

  def encoder(which):
    cfg = finetune.new_strings_config(model.config[which], getattr(model, which).meta)
    if cfg.kind != "hf":
      return None
    key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    if key not in encoders:
      encoders[key] = teachers.load_encoder(cfg)
    return encoders[key]

  encoded = {}

  def encode(enc, texts):     # one encoding per encoder and texts (the default's teachers
    texts = list(texts)       # share one)
    key = (id(enc), len(texts), hash(tuple(texts)))
    if key not in encoded:
      encoded[key] = np.asarray(enc.encode(texts), np.float32)
    return encoded[key]

  for which, teacher in (("teacher1", model.teacher1), ("teacher2", model.teacher2)):
    enc = encoder(which)
    if enc is None:
      out.append((which, f"{which} is a {model.config[which].kind!r} teacher: it cannot "
                         "embed new sentences"))
      continue
    out.append((which, lambda texts, enc=enc: encode(enc, texts),
                lambda teacher=teacher: np.asarray(teacher.concepts, np.float32)))
  enc1 = encoder("teacher1")
  if enc1 is not None:
    out.append(("line", lambda texts: np.asarray(model.project_texts(encode(enc1, texts)),
                                                 np.float32),
                lambda: np.asarray(model.dictionary(), np.float32)))
  return out


def evaluate_realtext(model, settings, groups: terms.Groups,
                      embedders: Optional[Sequence[tuple]] = None) -> Dict:
  """Table 1 and text -> concept retrieval on the real-text file, per space (module doc)."""
  data = load_realtext(settings.realtext, settings.realtext_ids_field,
                       model.dataset.concept_index())
  out = {"path": os.path.basename(settings.realtext), "ids_field": settings.realtext_ids_field,
         "num_sentences": data["num_lines"], "num_evaluated": len(data["texts"]),
         "num_ids": data["num_ids"], "num_unknown_ids": int(sum(data["unknown_ids"].values())),
         "unknown_ids": data["unknown_ids"],
         "sentences_without_known_ids": data["sentences_without_known_ids"],
         "alignment": {}, "text_to_concept": {}, "skipped": {}}
  if len(data["texts"]) < 2:
    out["skipped"]["all"] = f"{len(data['texts'])} sentences with a known id"
    return out
  names = sorted(set(data["collections"].tolist()) - {""})
  masks = {"all": np.ones(len(data["texts"]), bool)}
  masks.update({n: data["collections"] == n for n in names} if len(names) > 1 else {})
  owner, target = terms.listed_targets(data["offsets"], data["flat"],
                                           np.zeros(len(data["flat"]), bool), groups)
  masks.update(by_segment.size_masks(by_segment.target_counts(owner, len(data["texts"]))))
  # One draw of negatives and one clause split for every space: each space's sentence is
  # ranked among the same other sentences.
  n = len(data["texts"])
  negatives = metrics.draw_negative_indices(
      n, n, min(settings.num_negatives, n - 1), np.arange(n),
      np.random.default_rng([settings.seed, _RNG_REALTEXT]))
  if settings.segment_pattern:
    pieces, piece_owner = segments.segment_table(data["texts"], settings.segment_pattern)
  for item in (embedders if embedders is not None else string_embedders(model)):
    if len(item) == 2:
      out["skipped"][item[0]] = item[1]
      continue
    key, embed, dictionary = item
    texts = embed(data["texts"])
    keys = dictionary()
    proxies = metrics.segment_mean(keys[data["flat"]], data["offsets"])
    ranks = metrics.alignment_ranks(proxies, texts, np.arange(n), negatives)
    out["alignment"][key] = {n: dict(metrics.rank_summary(ranks[m], 10), count=int(m.sum()))
                             for n, m in masks.items()}
    r = terms.retrieval_ranks(texts, keys, owner, target, groups, settings.chunk)
    out["text_to_concept"][key] = {n: terms.retrieval_summary(r[m[owner]], settings.ks)
                                   for n, m in masks.items()}
    if settings.segment_pattern:
      piece_rows = embed(pieces)
      r = terms.retrieval_ranks(piece_rows, keys, owner, target, groups,
                                settings.chunk, text_owner=piece_owner)
      late = late_alignment_ranks(piece_rows, piece_owner, keys, data["offsets"],
                                  data["flat"], negatives)
      out.setdefault("alignment_segments", {})[key] = {
          n: dict(metrics.rank_summary(late[m], 10), count=int(m.sum()))
          for n, m in masks.items()}
      out.setdefault("text_to_concept_segments", {})[key] = {
          n: terms.retrieval_summary(r[m[owner]], settings.ks) for n, m in masks.items()}
      out["num_segments"] = len(pieces)
    logging.info("real text %s: Table 1 MRR %.4f, text->concept %s%s", key,
                 out["alignment"][key]["all"]["mean_reciprocal_rank"],
                 out["text_to_concept"][key]["all"],
                 f", by segment {out['text_to_concept_segments'][key]['all']}"
                 if settings.segment_pattern else "")
  return out


def render_markdown(result: Dict, ks: Sequence[int]) -> List[str]:
  lines = ["", f"### Real text: {result['path']}", "",
           f"{result['num_sentences']} sentences, {result['num_evaluated']} with an id in the "
           f"dictionary; {result['num_unknown_ids']} of {result['num_ids']} ids "
           f"(field `{result['ids_field']}`) are not in the dictionary"
           + (": " + ", ".join(f"{k} ({v})" for k, v in list(result["unknown_ids"].items())
                               [:20]) + ("…" if len(result["unknown_ids"]) > 20 else "")
              if result["unknown_ids"] else "") + "."]
  for key, reason in result["skipped"].items():
    lines.append(f"- {key} skipped: {reason}")
  if result["alignment"]:
    lines += ["", "| model | subset | Table 1 MRR | top-10 acc. | "
              + " | ".join(f"R@{k}" for k in ks) + " | retrieval MRR | sentences |",
              "|---|---|---|---|" + "---|" * len(ks) + "---|---|"]
    for key, by_subset in result["alignment"].items():
      for subset, a in by_subset.items():
        r = result["text_to_concept"][key][subset]
        lines.append(f"| {key} | {subset} | {a['mean_reciprocal_rank']:.3f} | "
                     f"{a['top10_accuracy']:.3f} | "
                     + " | ".join(f"{r[f'recall@{k}']:.3f}" for k in ks)
                     + f" | {r['mrr']:.3f} | {a['count']} |")
  if result.get("text_to_concept_segments"):
    late = result.get("alignment_segments", {})
    lines += ["", f"By segment: text -> concept retrieval scores each dictionary concept by "
              f"its best cosine over a sentence and its clauses ({result['num_segments']} "
              "segments, config.eval.segment_pattern), and Table 1 scores a sentence for a "
              "list by the mean over the list's concepts of that best cosine (late "
              "interaction); the table above scores one cosine per sentence.", "",
              "| model | subset | " + " | ".join(f"R@{k}" for k in ks) + " | retrieval MRR |"
              + (" Table 1 MRR |" if late else ""),
              "|---|---|" + "---|" * len(ks) + "---|" + ("---|" if late else "")]
    for key, by_subset in result["text_to_concept_segments"].items():
      for subset, r in by_subset.items():
        lines.append(f"| {key} | {subset} | "
                     + " | ".join(f"{r[f'recall@{k}']:.3f}" for k in ks)
                     + f" | {r['mrr']:.3f} |"
                     + (f" {late[key][subset]['mean_reciprocal_rank']:.3f} |"
                        if key in late else ""))
  return lines
