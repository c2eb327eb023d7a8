r"""The paper's token-level NER protocol (section 3.3.2, Table 3) on CoNLL/BIO files.

    python -m line_jax.evaluate --workdir=RUN --ner=FILE_OR_DIR

For teacher 1, teacher 2 and LINE (F applied to each of teacher 1's token states), every
word of every sentence gets the model's embedding of its first sub-word token (the last
layer's state, L2-normalised when the teacher normalises its pooled output); a linear
token classifier (softmax over the BIO tags) is trained on the training split with Adam
for `config.eval.ner.epochs` epochs, once per seed of `config.eval.ner.seeds`, and scored
on the validation and test splits: entity-level micro F1 (over all entities) and macro F1
(mean over entity types), as the paper reports them (mean over the seeds). The encoders
stay frozen (features are computed once); only the linear layer is trained. A teacher of
kind 'finetuned' gives the token states of its saved folder (`token_teacher_config`); a
teacher of another kind than 'hf' or 'finetuned' is refused before any work.

Input (CoNLL / BIO): one token per line, the token in the first column and the tag (O,
B-TYPE, I-TYPE) in the last, a blank line between sentences, `-DOCSTART-` lines ignored.
FILE_OR_DIR is a folder with train*, dev* or valid*, and test* files, or one file whose
sentences are split `config.eval.ner.split_fractions` by a hash of the sentence. An I- tag
that does not continue an entity of its type, a malformed line, and a tag of the
validation or test split that the training split lacks are errors naming file and line.

`write_bio_from_dataset` makes such files from a dataset's texts by running the dictionary
extractor (entity type = the concept's group); the default HPO dataset's vignettes give a
SYNTHETIC NER set this way (the builder does not store mention spans):

    python -m line_jax.eval.ner --bio_dataset=DATASET_DIR --bio_out=DIR

(that command is `line_jax/eval/ner/__main__.py`; the settings are config.eval.ner, whose
defaults are in line_jax/config.py).

Outputs in RUN/ner/: metrics.json, report.md and f1.png.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import os
import re
import time
from typing import Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pyarrow.parquet as pq
from absl import logging
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm import tqdm

from line_jax import config as config_lib
from line_jax.util import files as files_lib
from line_jax.data import extract
from line_jax.data import notes
from line_jax.data import textfile
from line_jax.data.dataset import DataError
from line_jax.teachers import bert
from line_jax.teachers import encoder as encoder_lib
from line_jax.teachers import finetune
from line_jax.teachers.presets import resolve_settings
from line_jax.teachers.resolve import resolve_model_dir

SPLITS = ("train", "valid", "test")
_FILE_SPLITS = (("train", ("train",)), ("valid", ("dev", "valid", "val")),
                ("test", ("test",)))


def settings_of(config) -> ml_collections.ConfigDict:
  """config.eval.ner over its defaults (line_jax.config; a run's config may predate it)."""
  full = config_lib.base_config().eval.ner
  given = config.get("eval", {}).get("ner", None) if config is not None else None
  if given:
    for key, value in given.items():
      full[key] = tuple(value) if isinstance(value, list) else value
  return full


# --- BIO files -------------------------------------------------------------------------


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


# --- token features --------------------------------------------------------------------


class TokenFeatures:
  """Per-word features of a Hugging Face BERT teacher: its first sub-word's last state."""

  def __init__(self, teacher_cfg, rows: int = 32):
    if teacher_cfg.get("kind", "hf") != "hf":
      raise ValueError(f"teacher {teacher_cfg.get('name')!r} is a {teacher_cfg.kind!r} "
                       "teacher; token-level embeddings need a Hugging Face BERT (kind 'hf'; "
                       "a fine-tuned teacher through `token_teacher_config`)")
    self.settings = resolve_settings(teacher_cfg)
    model_dir = resolve_model_dir(self.settings.model)
    self.config, params = bert.load_bert(model_dir)
    self.tokenizer = encoder_lib.load_tokenizer(model_dir)
    self.params = jax.device_put(params)
    self.rows = rows
    self.buckets = encoder_lib.bucket_lengths(self.settings.max_length)
    self._states = jax.jit(functools.partial(bert.token_states, config=self.config,
                                             normalize=self.settings.normalize))

  @property
  def dim(self) -> int:
    return self.config.hidden_size

  def _windows(self, words: Sequence[str]) -> list:
    """(word offset, token ids, token index of each word's first piece) within max_length."""
    out, start = [], 0
    while start < len(words):
      enc = self.tokenizer(list(words[start:]), is_split_into_words=True, truncation=True,
                           max_length=self.settings.max_length)
      word_ids = enc.word_ids()
      first = {}
      for position, w in enumerate(word_ids):
        if w is not None and w not in first:
          first[w] = position
      # Every word whose first piece fits is covered (only that piece's state is used).
      complete = max(first) if first else -1
      if complete < 0:
        raise ValueError(f"word {words[start]!r} does not fit in max_length "
                         f"{self.settings.max_length}")
      ids = enc["input_ids"]
      out.append((start, ids, [first[w] for w in range(complete + 1)]))
      start += complete + 1
    return out

  def __call__(self, sentences: Sequence[Sentence],
               progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """[total words, dim] float32, sentence after sentence."""
    items = []   # (row offset of the window's first word, ids, first-piece positions)
    offset = 0
    for sentence in sentences:
      for start, ids, firsts in self._windows(sentence.words):
        items.append((offset + start, ids, firsts))
      offset += len(sentence.words)
    out = np.zeros((offset, self.dim), np.float32)
    order = sorted(range(len(items)), key=lambda i: len(items[i][1]))
    pad = self.config.pad_token_id
    for s in range(0, len(order), self.rows):
      batch = [items[i] for i in order[s:s + self.rows]]
      longest = max(len(ids) for _, ids, _ in batch)
      length = next(b for b in self.buckets if b >= longest)
      input_ids = np.full((self.rows, length), pad, np.int32)
      mask = np.zeros((self.rows, length), np.int32)
      mask[len(batch):, 0] = 1
      for r, (_, ids, _) in enumerate(batch):
        input_ids[r, :len(ids)] = ids
        mask[r, :len(ids)] = 1
      states = np.asarray(self._states(self.params, input_ids, mask))
      for r, (first_row, _, firsts) in enumerate(batch):
        out[first_row:first_row + len(firsts)] = states[r, firsts]
      if progress is not None:
        progress(len(batch))
    return out


# --- the linear token classifier -----------------------------------------------------


def _loss(params, x, y, mask):
  logits = x @ params["w"] + params["b"]
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)


@functools.partial(jax.jit, static_argnames=("optimizer",))
def _step(params, opt_state, x, y, mask, optimizer):
  loss, grads = jax.value_and_grad(_loss)(params, x, y, mask)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


@jax.jit
def _predict(params, x):
  return jnp.argmax(x @ params["w"] + params["b"], axis=-1)


def train_linear(x: np.ndarray, y: np.ndarray, num_classes: int, seed: int, epochs: int,
                 learning_rate: float, batch_size: int) -> dict:
  """A softmax linear layer trained with Adam; every batch is padded to `batch_size` rows."""
  rng = np.random.default_rng(seed)
  key = jax.random.PRNGKey(seed)
  d = x.shape[1]
  params = {"w": jax.random.normal(key, (d, num_classes), jnp.float32) / np.sqrt(d),
            "b": jnp.zeros((num_classes,), jnp.float32)}
  optimizer = optax.adam(learning_rate)
  opt_state = optimizer.init(params)
  n = len(x)
  for _ in range(epochs):
    order = rng.permutation(n)
    for s in range(0, n, batch_size):
      idx = order[s:s + batch_size]
      xb = np.zeros((batch_size, d), np.float32)
      yb = np.zeros(batch_size, np.int32)
      mb = np.zeros(batch_size, np.float32)
      xb[:len(idx)], yb[:len(idx)], mb[:len(idx)] = x[idx], y[idx], 1.0
      params, opt_state, _ = _step(params, opt_state, xb, yb, mb, optimizer)
  return params


def predict(params: dict, x: np.ndarray, chunk: int = 65536) -> np.ndarray:
  return np.concatenate([np.asarray(_predict(params, x[s:s + chunk]))
                         for s in range(0, len(x), chunk)]) if len(x) else np.zeros(0, int)


def _by_sentence(flat: Sequence, sentences: Sequence[Sentence]) -> list:
  out, k = [], 0
  for s in sentences:
    out.append(list(flat[k:k + len(s.words)]))
    k += len(s.words)
  return out


def evaluate_features(features: Dict[str, np.ndarray], data: Dict[str, List[Sentence]],
                      settings) -> dict:
  """Trains one classifier per seed on features["train"]; F1 on valid and test."""
  labels = tag_set(data["train"])
  index = {t: i for i, t in enumerate(labels)}
  y = {split: np.asarray([index[t] for s in data[split] for t in s.tags], np.int32)
       for split in SPLITS}
  x = dict(features)
  if settings.standardize:
    mean, std = x["train"].mean(0), x["train"].std(0) + 1e-6
    x = {k: (v - mean) / std for k, v in x.items()}
  runs = []
  for seed in settings.seeds:
    params = train_linear(x["train"], y["train"], len(labels), int(seed), settings.epochs,
                          settings.learning_rate, settings.batch_size)
    run = {"seed": int(seed)}
    for split in ("valid", "test"):
      pred = [labels[i] for i in predict(params, x[split])]
      run[split] = f1_scores([s.tags for s in data[split]],
                             _by_sentence(pred, data[split]))
    runs.append(run)
  summary = {}
  for split in ("valid", "test"):
    for metric in ("micro_f1", "macro_f1"):
      values = [r[split][metric] for r in runs]
      summary[f"{split}_{metric}"] = float(np.mean(values))
      summary[f"{split}_{metric}_std"] = float(np.std(values))
  return dict(summary=summary, runs=runs, labels=labels)


def token_teacher_config(model, which: str):
  """The kind-"hf" config whose token states stand for `which` ("teacher1" / "teacher2") of
  `model`: a fine-tuned teacher is its saved Hugging Face folder (recorded in its embedding
  cache's meta). A ValueError naming the teacher for one that has no token states."""
  cfg = model.config[which]
  meta = getattr(getattr(model, which, None), "meta", None)
  resolved = finetune.new_strings_config(cfg, meta)
  kind = resolved.get("kind", "hf")
  if kind == "finetuned":
    folder = (meta or {}).get("finetuned_dir", "")
    where = (f"its folder {folder} is gone" if folder else
             "its embedding cache records no fine-tuned folder")
    raise ValueError(f"{which} {cfg.get('name')!r} is a fine-tuned teacher, but {where}; "
                     "rebuild it with `python -m line_jax.finetune --config=... "
                     "--workdir=RUN` (the run's config and workdir) and evaluate again")
  if kind != "hf":
    raise ValueError(f"{which} {cfg.get('name')!r} is a {kind!r} teacher; token-level "
                     "embeddings need a Hugging Face BERT (kind 'hf' or 'finetuned')")
  return resolved


def run_ner(model, path: str, out_dir: str) -> dict:
  """The protocol for teacher 1, teacher 2 and LINE of `model`; writes out_dir files.

  Args:
    model: a `line_jax.api.line_model.LineModel` (uses config.teacher1/2 and project_texts).
    path: a BIO file or folder.
    out_dir: where metrics.json, report.md and f1.png go.
  """
  started = time.time()
  # Every teacher is resolved before any work: a refused one fails here, not after features.
  teacher_cfgs = {which: token_teacher_config(model, which) for which in ("teacher1",
                                                                           "teacher2")}
  settings = settings_of(model.config)
  data = load_bio(path, settings)
  os.makedirs(out_dir, exist_ok=True)
  counts = {s: dict(sentences=len(v), words=sum(len(x.words) for x in v),
                    entities=sum(len(entities(x.tags)) for x in v)) for s, v in data.items()}
  logging.info("NER data %s: %s", path, counts)
  results = {}
  spaces = (("teacher1", "teacher1", None), ("teacher2", "teacher2", None),
            ("line", "teacher1", model.project_texts))
  features_of = {}
  for key, teacher, project in spaces:
    if teacher not in features_of:
      encoder = TokenFeatures(teacher_cfgs[teacher], settings.encode_batch_rows)
      features_of[teacher] = {}
      for split in SPLITS:
        bar = tqdm(desc=f"{teacher} tokens ({split})", unit=" windows", leave=False)
        features_of[teacher][split] = encoder(data[split], progress=bar.update)
        bar.close()
    feats = features_of[teacher]
    if project is not None:
      feats = {s: np.asarray(project(v), np.float32) for s, v in feats.items()}
    results[key] = evaluate_features(feats, data, settings)
    logging.info("NER %s: %s", key, results[key]["summary"])
  labels = {"teacher1": model.config.teacher1.get("name", "teacher 1"),
            "teacher2": model.config.teacher2.get("name", "teacher 2"), "line": "LINE"}
  metrics = dict(path=os.path.abspath(path), counts=counts, models=labels,
                 settings=settings.to_dict(), results=results,
                 seconds=round(time.time() - started, 1))
  # Whole files or none (a full disk), metrics.json last.
  plot_f1(metrics, os.path.join(out_dir, "f1.png"))
  files_lib.write_text(os.path.join(out_dir, "report.md"), render_report(metrics))
  files_lib.write_json(os.path.join(out_dir, "metrics.json"), metrics, default=list)
  return metrics


def main_for_evaluate(model, path: str, workdir: str) -> dict:
  """What `python -m line_jax.evaluate --ner=PATH` runs: the protocol, a printed summary."""
  metrics = run_ner(model, path, os.path.join(workdir, "ner"))
  print(json.dumps({k: v["summary"] for k, v in metrics["results"].items()}, indent=1))
  print(f"report: {os.path.join(os.path.abspath(workdir), 'ner', 'report.md')}")
  return metrics


def render_report(metrics: dict) -> str:
  s = metrics["settings"]
  lines = ["# Token-level NER (Table 3 protocol)", "",
           f"Data: `{metrics['path']}`; {metrics['counts']}.",
           f"Linear token classifier, Adam (lr {s['learning_rate']}), {s['epochs']} epochs, "
           f"mean ± std over seeds {list(s['seeds'])}; entity-level F1 (x100).", "",
           "| Model | Test micro F1 | Test macro F1 | Val. micro F1 | Val. macro F1 |",
           "|---|---|---|---|---|"]
  for key, r in metrics["results"].items():
    m = r["summary"]
    cells = [f"{100 * m[f'{sp}_{k}']:.1f} ± {100 * m[f'{sp}_{k}_std']:.1f}"
             for sp in ("test", "valid") for k in ("micro_f1", "macro_f1")]
    lines.append(f"| {metrics['models'][key]} | " + " | ".join(cells) + " |")
  lines += ["", "![F1](f1.png)", ""]
  return "\n".join(lines)


def plot_f1(metrics: dict, path: str) -> str:
  """Bars of mean F1 (error bars: std over seeds) per model, split and average."""
  keys = list(metrics["results"])
  fig = Figure(figsize=(6, 3.5))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  width = 0.2
  for j, (split, metric) in enumerate((("test", "micro_f1"), ("test", "macro_f1"),
                                       ("valid", "micro_f1"), ("valid", "macro_f1"))):
    values = [metrics["results"][k]["summary"][f"{split}_{metric}"] for k in keys]
    errors = [metrics["results"][k]["summary"][f"{split}_{metric}_std"] for k in keys]
    ax.bar(np.arange(len(keys)) + (j - 1.5) * width, values, width, yerr=errors,
           label=f"{split} {metric.replace('_', ' ')}")
  ax.set_xticks(np.arange(len(keys)))
  ax.set_xticklabels([metrics["models"][k] for k in keys])
  ax.set_ylabel("entity-level F1")
  ax.set_ylim(0, 1)
  ax.legend(fontsize=7)
  fig.tight_layout()
  return files_lib.save_figure(fig, path, dpi=110)


# --- BIO files from a dataset's texts --------------------------------------------------


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
