"""CoNLL/BIO files for the NER protocol: reading and checking them, the train/valid/test
splits, entity spans and entity-level F1, and BIO files written from a dataset's texts."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import re
from typing import Dict, List, Sequence

import numpy as np
import pyarrow.parquet as pq

from line_jax.data import extract
from line_jax.data import notes
from line_jax.data import textfile
from line_jax.data.dataset import DataError

SPLITS = ("train", "valid", "test")
_FILE_SPLITS = (("train", ("train",)), ("valid", ("dev", "valid", "val")),
                ("test", ("test",)))


@dataclasses.dataclass
class Sentence:
  words: List[str]
  tags: List[str]
  path: str
  lines: List[int]             # line number of each word


def _check_tag(path, number, tag, previous):
  if tag == "O":
    return
  m = re.fullmatch(r"([BI])-(.+)", tag)
  if not m:
    raise DataError(f"{path}: line {number}: field 'tag': {tag!r} is not O, B-TYPE or "
                    "I-TYPE")
  if m.group(1) == "I" and previous not in (f"B-{m.group(2)}", f"I-{m.group(2)}"):
    raise DataError(f"{path}: line {number}: field 'tag': {tag} follows "
                    f"{previous or 'the sentence start'}; an I- tag must continue an entity "
                    f"of type {m.group(2)} (use B-{m.group(2)} to start one)")


def read_bio(path: str) -> List[Sentence]:
  """Sentences of a CoNLL/BIO file, checked (see the module docstring)."""
  if not os.path.exists(path):
    raise DataError(f"{path}: file not found")
  sentences, words, tags, lines = [], [], [], []

  def close():
    if words:
      sentences.append(Sentence(list(words), list(tags), path, list(lines)))
      words.clear()
      tags.clear()
      lines.clear()

  with textfile.open_utf8(path, DataError) as f:   # bytes not UTF-8: line and offset named
    for number, raw in enumerate(f, 1):
      line = raw.strip()
      if not line:
        close()
        continue
      if line.startswith("-DOCSTART-"):
        close()
        continue
      cells = line.split()
      if len(cells) < 2:
        raise DataError(f"{path}: line {number}: field 'tag': expected 'TOKEN ... TAG', got "
                        f"{line!r}")
      _check_tag(path, number, cells[-1], tags[-1] if tags else None)
      words.append(cells[0])
      tags.append(cells[-1])
      lines.append(number)
  close()
  return sentences


def _stable_unit(seed: int, key: str) -> float:
  digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def load_bio(path: str, settings) -> Dict[str, List[Sentence]]:
  """train/valid/test sentences from a folder of split files or one file."""
  if os.path.isdir(path):
    names = sorted(os.listdir(path))
    out = {}
    for split, prefixes in _FILE_SPLITS:
      found = [n for n in names if n.lower().startswith(prefixes)
               and os.path.isfile(os.path.join(path, n))]
      if len(found) > 1:
        raise DataError(f"{path}: several {split} files {found}; keep one")
      if not found:
        raise DataError(f"{path}: no {split} file (expected names starting with "
                        f"{' / '.join(prefixes)}); found {names}")
      out[split] = read_bio(os.path.join(path, found[0]))
  else:
    sentences = read_bio(path)
    fractions = np.asarray(settings.split_fractions, np.float64)
    bounds = np.cumsum(fractions / fractions.sum())
    out = {s: [] for s in SPLITS}
    for k, sentence in enumerate(sentences):
      u = _stable_unit(settings.split_seed, f"{k}:{' '.join(sentence.words)}")
      out[SPLITS[int(np.searchsorted(bounds, u, side="right"))]].append(sentence)
  if settings.max_sentences:
    out = {s: v[:settings.max_sentences] for s, v in out.items()}
  for split in SPLITS:
    if not out[split]:
      raise DataError(f"{path}: the {split} split has no sentence")
  train_types = {t[2:] for s in out["train"] for t in s.tags if t != "O"}
  for split in ("valid", "test"):
    for sentence in out[split]:
      for tag, number in zip(sentence.tags, sentence.lines):
        if tag != "O" and tag[2:] not in train_types:
          raise DataError(f"{sentence.path}: line {number}: field 'tag': label {tag!r} does "
                          f"not occur in the training split, so no classifier can predict "
                          "it; merge the type or move sentences into training")
  return out


def tag_set(sentences: Sequence[Sentence]) -> List[str]:
  """The classifier's classes: O, and B-/I- of every entity type of `sentences`."""
  types = sorted({t[2:] for s in sentences for t in s.tags if t != "O"})
  return ["O"] + [f"{p}-{t}" for t in types for p in "BI"]


def entities(tags: Sequence[str]) -> set:
  """(type, start, end) spans of a tag sequence; a stray I- opens an entity (conlleval)."""
  spans, start, kind = set(), None, None
  for i, tag in enumerate(list(tags) + ["O"]):
    prefix, _, t = tag.partition("-")
    continues = prefix == "I" and kind == t
    if start is not None and not continues:
      spans.add((kind, start, i))
      start, kind = None, None
    if prefix == "B" or (prefix == "I" and not continues):
      start, kind = i, t
  return spans


def f1_scores(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict:
  """Entity-level micro F1 (all entities) and macro F1 (mean over the true types)."""
  tp, fp, fn = collections.Counter(), collections.Counter(), collections.Counter()
  for true, pred in zip(true_tags, pred_tags):
    t, p = entities(true), entities(pred)
    for e in t & p:
      tp[e[0]] += 1
    for e in p - t:
      fp[e[0]] += 1
    for e in t - p:
      fn[e[0]] += 1

  def f1(a, b, c):
    return 2 * a / (2 * a + b + c) if a + b + c else 0.0

  types = sorted(set(tp) | set(fn))
  micro = f1(sum(tp.values()), sum(fp.values()), sum(fn.values()))
  per_type = {k: f1(tp[k], fp[k], fn[k]) for k in types}
  macro = float(np.mean(list(per_type.values()))) if per_type else 0.0
  return dict(micro_f1=micro, macro_f1=macro, per_type=per_type,
              entities=int(sum(tp.values()) + sum(fn.values())))


def write_bio_from_dataset(dataset: str, out_dir: str, extractor_config=None,
                           synthetic_only: bool = True, keep_splits: bool = True) -> dict:
  """train/dev/test BIO files from the pairs of a dataset folder, spans by the extractor.

  Entity type = the concept's group (spaces and punctuation as '_'); a text's split is its
  pair's split (`keep_splits`), else every sentence goes to one file, sentences.bio, which
  `load_bio` splits by sentence. With `synthetic_only`, only pairs marked synthetic (when
  the column exists). Returns counts per split (or under "all").
  """
  pairs = pq.read_table(os.path.join(dataset, "pairs.parquet")).to_pydict()
  concepts = pq.read_table(os.path.join(dataset, "concepts.parquet")).to_pydict()
  term_ids = concepts.get("term_id", concepts["concept_id"])
  groups = concepts.get("group", ["concept"] * len(term_ids))
  group_of = {}
  for cid, tid, g in zip(concepts["concept_id"], term_ids, groups):
    kind = re.sub(r"\W+", "_", (g or "concept").strip()).strip("_") or "concept"
    group_of.setdefault(cid, kind)
    group_of.setdefault(tid, kind)
  extractor = notes.make_extractor(dataset, extractor_config)
  sentences = []    # (split, words, [(type, start, end)])
  synthetic = pairs.get("synthetic")
  for i, (text, split) in enumerate(zip(pairs["text"], pairs["split"])):
    if synthetic_only and synthetic is not None and not synthetic[i]:
      continue
    tokens = extract.tokenize(text, extractor.fold_plurals)
    if tokens:
      spans = [(group_of.get(m.concept_id, "concept"), m.start, m.end)
               for m in extractor.extract(text).mentions]
      sentences.append((split if keep_splits else "train",
                        [text[t.start:t.end] for t in tokens], spans))
  # A type the training split lacks could never be predicted: such mentions become
  # "other" when training has "other" mentions, else O (both counted).
  train_types = {k for split, _, spans in sentences if split == "train" for k, _, _ in spans}
  counts = collections.Counter()
  os.makedirs(out_dir, exist_ok=True)
  names = (("train", "train"), ("valid", "dev"), ("test", "test")) if keep_splits else (
      ("train", "sentences"),)
  files = {s: open(os.path.join(out_dir, f"{name}.bio"), "w", encoding="utf-8")
           for s, name in names}
  try:
    for split, words, spans in sentences:
      tags = ["O"] * len(words)
      for kind, start, end in spans:
        if kind not in train_types:
          counts[f"mentions_retyped_{'other' if 'other' in train_types else 'O'}"] += 1
          if "other" not in train_types:
            continue
          kind = "other"
        tags[start] = f"B-{kind}"
        for k in range(start + 1, end):
          tags[k] = f"I-{kind}"
      files[split].writelines(f"{w} {t}\n" for w, t in zip(words, tags))
      files[split].write("\n")
      counts[split] += 1
  finally:
    for f in files.values():
      f.close()
  return dict(counts)
