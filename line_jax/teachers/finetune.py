"""A concept teacher fine-tuned on the dataset's own ontology, then weight-averaged.

Contrastive training between a concept's name and the other strings that name it (the
BioLORD recipe), as pure functions over the JAX BERT of `line_jax.teachers.bert`:

  positives   a term's name <-> each of its synonym / layperson entries (the tails of the
              `finetune.relations` edges of relations.parquet), and a term's name <-> its
              definition text for definition pairs of the *train* split only
              (pairs.parquet columns source == "definition", source_id = the term).
  loss        symmetric InfoNCE with in-batch negatives at `temperature`; two strings of the
              same term (or the same string twice) in one batch are not negatives.
  held out    `validation_size` synonym/layperson edges of relations.parquet, string and edge,
              never trained on: they choose the merge weight. Every edge of
              heldout_relations.parquet, every string of such an edge and every pair text of
              the valid/test splits stays out of training as well.
  merge       saved weights = alpha * fine_tuned + (1 - alpha) * base, alpha the best of
              `alphas` on the validation synonyms (or `alpha` when select_alpha is False).
  output      a Hugging Face folder (config.json, model.safetensors with BertModel tensor
              names, the base's tokenizer files) plus finetune.json (settings, counts, the
              validation curve) and alpha_curve.png, in
              WORKDIR/teachers/<name>-<key>, key = hash(base weights + training strings +
              settings): an unchanged dataset and config reuse it.

Training runs in length buckets: both strings of a pair are padded to the smallest of
`buckets` that holds the longer one, a batch holds pairs of one bucket only and embeds them
as one [2B, L] array, so the jitted step compiles once per bucket (three by default). The
layers run under lax.scan (one layer body to compile). The embedding tables are frozen unless
`train_embeddings` (their dense gradient is a large part of a CPU step, and they are shared
with every word the training never saw); `train_layers` > 0 trains only the top layers.
Checkpoints (orbax) every `checkpoint_every` steps; a killed run resumes at its last one and
ends with the same weights as an uninterrupted run (batches are a function of seed and step).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pyarrow.parquet as pq
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from line_jax.util import files as files_lib
from line_jax.data.dataset import Dataset, DataError
from line_jax.teachers import bert
from line_jax.teachers.encoder import (TOKENIZER_VOCAB_FILES, Encoder,
                                       check_tokenizer_files, load_tokenizer)
from line_jax.teachers.presets import resolve_settings
from line_jax.teachers.resolve import resolve_model_dir

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                   "special_tokens_map.json")
FOLDER_FILES = ("config.json", "model.safetensors", "finetune.json")
_FROZEN = ("word", "position", "token_type")   # embedding tables frozen unless trained


# --- settings -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
  """The validated `finetune` block of a teacher config (see line_jax.config)."""
  base: str
  steps: int
  batch_size: int
  learning_rate: float
  warmup_steps: int
  weight_decay: float
  temperature: float
  alpha: float
  select_alpha: bool
  alphas: tuple
  relations: tuple
  entry_relations: tuple
  use_definitions: bool
  max_definitions: int
  name_max_length: int
  definition_max_length: int
  buckets: tuple
  train_embeddings: bool
  train_layers: int
  eval_candidates: int
  validation_size: int
  seed: int
  checkpoint_every: int
  eval_batch_size: int

  def key_dict(self) -> dict:
    """The fields that change the weights (not checkpointing or evaluation batching)."""
    d = dataclasses.asdict(self)
    for field in ("checkpoint_every", "eval_batch_size"):
      d.pop(field)
    return d


def read_settings(teacher_cfg) -> FinetuneSettings:
  """Validates the teacher's `finetune` block; raises ValueError naming the field."""
  name = teacher_cfg.get("name", "teacher")
  block = teacher_cfg.get("finetune", None)
  if block is None:
    raise ValueError(f"teacher {name!r}: kind 'finetuned' needs a 'finetune' block "
                     "(line_jax.config.finetune_config())")

  def field(key):
    return f"teacher {name!r}: field 'finetune.{key}'"

  base = block.get("base", "") or teacher_cfg.get("model", "") or ""
  if not base:
    raise ValueError(f"{field('base')}: empty (the model to fine-tune, e.g. "
                     "'all-MiniLM-L6-v2' or a local folder)")
  for key in ("steps", "batch_size", "name_max_length", "definition_max_length",
              "checkpoint_every", "eval_batch_size"):
    if int(block[key]) <= 0:
      raise ValueError(f"{field(key)}: {block[key]} must be > 0")
  if int(block.batch_size) < 2:
    raise ValueError(f"{field('batch_size')}: {block.batch_size} must be at least 2 (the "
                     "other pairs of a batch are the negatives)")
  for key in ("learning_rate", "temperature"):
    if not float(block[key]) > 0:
      raise ValueError(f"{field(key)}: {block[key]} must be > 0")
  for key in ("warmup_steps", "validation_size", "max_definitions", "train_layers",
              "eval_candidates"):
    if int(block[key]) < 0:
      raise ValueError(f"{field(key)}: {block[key]} must be >= 0")
  if float(block.weight_decay) < 0:
    raise ValueError(f"{field('weight_decay')}: {block.weight_decay} must be >= 0")
  alphas = tuple(float(a) for a in block.alphas)
  for a in (float(block.alpha),) + alphas:
    if not 0.0 <= a <= 1.0:
      raise ValueError(f"{field('alpha' if a == float(block.alpha) else 'alphas')}: {a} is "
                       "outside [0, 1] (the merge weight of the fine-tuned model)")
  if block.select_alpha and not alphas:
    raise ValueError(f"{field('alphas')}: empty while select_alpha is True")
  if block.select_alpha and int(block.validation_size) == 0:
    raise ValueError(f"{field('validation_size')}: 0 while select_alpha is True (alpha is "
                     "chosen on the validation synonyms)")
  relations = tuple(str(r) for r in block.relations)
  if not relations and not block.use_definitions:
    raise ValueError(f"{field('relations')}: empty and use_definitions is False: no "
                     "positive pairs")
  buckets = tuple(sorted({int(b) for b in block.buckets}))
  if not buckets or buckets[0] < 2:
    raise ValueError(f"{field('buckets')}: {list(block.buckets)} must be lengths >= 2")
  return FinetuneSettings(
      base=str(base), steps=int(block.steps), batch_size=int(block.batch_size),
      learning_rate=float(block.learning_rate), warmup_steps=int(block.warmup_steps),
      weight_decay=float(block.weight_decay), temperature=float(block.temperature),
      alpha=float(block.alpha), select_alpha=bool(block.select_alpha), alphas=alphas,
      relations=relations, entry_relations=tuple(str(r) for r in block.entry_relations),
      use_definitions=bool(block.use_definitions), max_definitions=int(block.max_definitions),
      name_max_length=int(block.name_max_length),
      definition_max_length=int(block.definition_max_length), buckets=buckets,
      train_embeddings=bool(block.train_embeddings), train_layers=int(block.train_layers),
      eval_candidates=int(block.eval_candidates),
      validation_size=int(block.validation_size), seed=int(block.seed),
      checkpoint_every=int(block.checkpoint_every),
      eval_batch_size=int(block.eval_batch_size))


def encoder_settings(teacher_cfg, model: str):
  """The teacher's pooling / normalize / max_length (preset rules) for `model`."""
  cfg = dict(teacher_cfg.to_dict() if hasattr(teacher_cfg, "to_dict") else teacher_cfg)
  cfg["model"] = model
  return resolve_settings(cfg)


def check_base_folder(model_dir: str) -> bert.BertConfig:
  """A BERT config.json, safetensors weights and tokenizer files, or a DataError."""
  config = bert.read_bert_config(model_dir)   # names the field of a non-BERT config
  bert._safetensors_files(model_dir)          # names the missing weights file
  check_tokenizer_files(model_dir)            # the fine-tuned teacher copies the base's
  return config


# --- training data ------------------------------------------------------------------------

@dataclasses.dataclass
class FinetuneData:
  """Positive string pairs for training and the held-out synonym queries.

  anchor / positive: [N] str (term name, other string); group [N] the term's concept row;
  kind [N] "entry" or "definition". Validation and test queries: strings with the concept row
  of their term; candidates: the concept rows of every term (retrieval targets).
  """
  anchor: np.ndarray
  positive: np.ndarray
  group: np.ndarray
  kind: np.ndarray
  val_query: np.ndarray
  val_term: np.ndarray
  test_query: np.ndarray
  test_term: np.ndarray
  candidates: np.ndarray
  counts: dict
  val_concept: np.ndarray = None    # concept rows of the validation / test query strings
  test_concept: np.ndarray = None

  def digest(self) -> str:
    h = hashlib.sha256()
    for block in (self.anchor, self.positive, self.kind, self.val_query, self.test_query):
      h.update(str(len(block)).encode())
      for s in block:
        h.update(str(s).encode("utf-8") + b"\x00")
    for arr in (self.group, self.val_term, self.test_term, self.candidates):
      h.update(np.asarray(arr, np.int64).tobytes())
    return h.hexdigest()[:16]


def _norm(s: str) -> str:
  return " ".join(str(s).lower().split())


def _definition_rows(dataset: Dataset):
  """(pair row, term concept row) of the definition pairs, from pairs.parquet's source /
  source_id columns (absent columns: none)."""
  path = os.path.join(dataset.root, "pairs.parquet")
  if not os.path.exists(path):
    return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
  names = pq.read_schema(path).names
  if "source" not in names or "source_id" not in names:
    return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
  table = pq.read_table(path, columns=["pair_id", "source", "source_id"]).to_pydict()
  if list(table["pair_id"]) != list(dataset.pair_ids):
    raise DataError(f"{path}: rows are not in the order the dataset loaded them")
  index = dataset.concept_index()
  rows, terms, unknown = [], [], 0
  for i, (source, sid) in enumerate(zip(table["source"], table["source_id"])):
    if source != "definition":
      continue
    if sid not in index:
      unknown += 1
      continue
    rows.append(i)
    terms.append(index[sid])
  return np.asarray(rows, np.int64), np.asarray(terms, np.int64), unknown


def build_data(dataset: Dataset, s: FinetuneSettings) -> FinetuneData:
  """The training pairs and the held-out queries, with nothing of valid/test leaking in."""
  types = list(dataset.relation_types)
  type_of_edge = np.asarray(types, dtype=object)[dataset.edge_type] if len(types) else \
      np.zeros(0, object)
  entry_types = set(s.entry_relations) | set(s.relations)
  # Terms: concepts that are not an entry (tail of a synonym-like edge), trained or held out.
  is_entry = np.zeros(dataset.num_concepts, bool)
  is_entry[dataset.edge_tail[np.isin(type_of_edge, list(entry_types))]] = True
  held_entry = np.isin(dataset.heldout_relation, list(entry_types))
  is_entry[dataset.heldout_tail[held_entry]] = True
  candidates = np.flatnonzero(~is_entry)

  use = np.isin(type_of_edge, list(s.relations))
  head, tail = dataset.edge_head[use].astype(np.int64), dataset.edge_tail[use].astype(np.int64)
  # Test queries: the held-out edges of the same relations.
  held = np.isin(dataset.heldout_relation, list(s.relations))
  test_term = dataset.heldout_head[held].astype(np.int64)
  test_query = dataset.names[dataset.heldout_tail[held]]
  # Validation: a fixed random subset of the training edges, string and edge.
  rng = np.random.default_rng([s.seed, 15])
  n_val = min(s.validation_size, len(head) // 2)
  val_pick = np.sort(rng.choice(len(head), size=n_val, replace=False)) if n_val else \
      np.zeros(0, np.int64)
  val_mask = np.zeros(len(head), bool)
  val_mask[val_pick] = True
  val_term, val_query = head[val_mask], dataset.names[tail[val_mask]]

  forbidden = {_norm(q) for q in val_query} | {_norm(q) for q in test_query}
  forbidden |= {_norm(t) for t in dataset.texts[dataset.split != "train"]}
  held_edges = set(zip(dataset.heldout_head.tolist(), dataset.heldout_tail.tolist()))
  held_edges |= {(b, a) for a, b in held_edges}

  anchor, positive, group, kind = [], [], [], []
  dropped = {"validation_or_heldout_string": 0, "heldout_edge": 0, "same_as_name": 0}
  for h, t in zip(head[~val_mask].tolist(), tail[~val_mask].tolist()):
    text = dataset.names[t]
    if (h, t) in held_edges:
      dropped["heldout_edge"] += 1
      continue
    if _norm(text) in forbidden:
      dropped["validation_or_heldout_string"] += 1
      continue
    if _norm(text) == _norm(dataset.names[h]):
      dropped["same_as_name"] += 1
      continue
    anchor.append(dataset.names[h])
    positive.append(text)
    group.append(h)
    kind.append("entry")
  n_entry = len(anchor)

  def_rows, def_terms, unknown = _definition_rows(dataset)
  n_defs_train = 0
  if s.use_definitions and len(def_rows):
    train = dataset.split[def_rows] == "train"
    def_rows, def_terms = def_rows[train], def_terms[train]
    keep = np.array([_norm(dataset.texts[r]) not in forbidden for r in def_rows], bool)
    dropped["definition_text_in_valid_or_test"] = int((~keep).sum())
    def_rows, def_terms = def_rows[keep], def_terms[keep]
    if s.max_definitions and len(def_rows) > s.max_definitions:
      pick = np.sort(np.random.default_rng([s.seed, 16]).choice(
          len(def_rows), size=s.max_definitions, replace=False))
      def_rows, def_terms = def_rows[pick], def_terms[pick]
    for r, term in zip(def_rows.tolist(), def_terms.tolist()):
      anchor.append(dataset.names[term])
      positive.append(dataset.texts[r])
      group.append(term)
      kind.append("definition")
    n_defs_train = len(def_rows)
  if not anchor:
    raise DataError(f"{dataset.root}: no training pairs for the fine-tuned teacher: no "
                    f"{'/'.join(s.relations) or 'synonym'} edges in relations.parquet left "
                    "after the validation set, and no definition pairs (pairs.parquet "
                    "source 'definition') in the train split")
  terms = np.unique(np.asarray(group, np.int64))
  if len(terms) < 2:
    raise DataError(f"{dataset.root}: the fine-tuned teacher's {len(anchor)} training pairs "
                    f"all name one term ({dataset.names[terms[0]]!r}): the other terms of a "
                    "batch are the negatives, so the contrastive loss would be 0 and the "
                    "teacher the base model. Add synonym edges (relations.parquet) or "
                    "train-split definitions of other terms, or use teacher kind 'hf'")
  if s.select_alpha and not len(val_query):
    raise DataError(f"{os.path.join(dataset.root, 'relations.parquet')}: field 'relation': "
                    f"{len(head)} {'/'.join(s.relations)} edges, but finetune.select_alpha "
                    "chooses alpha on held-out ones and needs at least 2 (one held out, one "
                    "trained); set finetune.select_alpha=False to merge at finetune.alpha "
                    f"({s.alpha:g})")
  counts = {"entry_pairs": n_entry, "definition_pairs": n_defs_train,
            "validation_queries": int(len(val_query)), "test_queries": int(len(test_query)),
            "candidates": int(len(candidates)), "unknown_definition_terms": int(unknown),
            "dropped": dropped}
  for why, n in dropped.items():
    if n:
      logging.info("fine-tune data: %d pairs left out (%s)", n, why)
  return FinetuneData(np.asarray(anchor, object), np.asarray(positive, object),
                      np.asarray(group, np.int64), np.asarray(kind, object),
                      np.asarray(val_query, object), val_term, np.asarray(test_query, object),
                      test_term, candidates, counts, tail[val_mask],
                      dataset.heldout_tail[held].astype(np.int64))


# --- batches ------------------------------------------------------------------------------

def _bucket(lengths: np.ndarray, buckets: Sequence[int]) -> np.ndarray:
  b = np.asarray(buckets)
  return b[np.minimum(np.searchsorted(b, lengths, side="left"), len(b) - 1)]


class BatchPlan:
  """Token ids of every pair and a deterministic batch order: batch `step` is a function of
  (seed, step). Pairs are grouped by their (anchor, positive) padded-length bucket; a bucket's
  last batch is padded with masked rows."""

  def __init__(self, data: FinetuneData, tokenizer, s: FinetuneSettings, pad_id: int):
    self.s, self.pad_id = s, pad_id
    self.group = data.group
    name_buckets = [b for b in s.buckets if b < s.name_max_length] + [s.name_max_length]
    def_buckets = [b for b in s.buckets if b < s.definition_max_length] + [
        s.definition_max_length]

    def tokenize(texts, max_length):
      return tokenizer(list(texts), truncation=True, max_length=max_length, padding=False,
                       return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    is_def = data.kind == "definition"
    self.anchor_ids = tokenize(data.anchor, s.name_max_length)
    pos = [None] * len(data.positive)
    entry_idx, def_idx = np.flatnonzero(~is_def), np.flatnonzero(is_def)
    for idx, max_len in ((entry_idx, s.name_max_length), (def_idx, s.definition_max_length)):
      if len(idx):
        for i, ids in zip(idx, tokenize(data.positive[idx], max_len)):
          pos[i] = ids
    self.positive_ids = pos
    la = np.fromiter((len(x) for x in self.anchor_ids), np.int64, len(self.anchor_ids))
    lb = np.fromiter((len(x) for x in pos), np.int64, len(pos))
    # Both strings of a pair are padded to one bucket, the smallest that holds the longer:
    # a step embeds [2B, L] token ids, so each bucket is one compiled shape.
    self.length = _bucket(np.maximum(la, lb), sorted(set(name_buckets) | set(def_buckets)))
    # String identities: same anchor / positive string in a batch is not a negative.
    _, self.anchor_code = np.unique(np.asarray([_norm(a) for a in data.anchor]),
                                    return_inverse=True)
    _, self.positive_code = np.unique(np.asarray([_norm(p) for p in data.positive]),
                                      return_inverse=True)
    self.padded_tokens = int(2 * self.length.sum())
    self.real_tokens = int((la + lb).sum())
    self.shapes, self.shape_of_pair = np.unique(self.length, return_inverse=True)
    self.shape_of_pair = self.shape_of_pair.reshape(-1)
    self._epochs: dict = {}
    sizes = np.bincount(self.shape_of_pair, minlength=len(self.shapes))
    self.batches_per_epoch = int(sum(-(-n // s.batch_size) for n in sizes))

  def _epoch(self, epoch: int) -> list:
    if epoch not in self._epochs:
      rng = np.random.default_rng([self.s.seed, 17, epoch])
      batches = []
      for k in range(len(self.shapes)):
        members = rng.permutation(np.flatnonzero(self.shape_of_pair == k))
        for start in range(0, len(members), self.s.batch_size):
          batches.append((k, members[start:start + self.s.batch_size]))
      order = rng.permutation(len(batches))
      self._epochs = {epoch: [batches[i] for i in order]}   # keep one epoch in memory
    return self._epochs[epoch]

  def batch(self, step: int) -> dict:
    epoch, i = divmod(int(step), self.batches_per_epoch)
    k, members = self._epoch(epoch)[i]
    length = int(self.shapes[k])
    b = self.s.batch_size
    ids = np.full((2 * b, length), self.pad_id, np.int32)
    mask = np.zeros((2 * b, length), np.int32)
    mask[:, 0] = 1   # padding rows attend to one token: no empty softmax
    valid = np.zeros(b, bool)
    for r, p in enumerate(members):
      for row, tokens in ((r, self.anchor_ids[p]), (b + r, self.positive_ids[p])):
        tokens = tokens[:length]
        ids[row, :len(tokens)], mask[row, :len(tokens)] = tokens, 1
      valid[r] = True
    out = {"ids": ids, "mask": mask, "valid": valid}
    n = len(members)
    g = np.full(b, -1, np.int64)
    g[:n] = self.group[members]
    ca = np.full(b, -1, np.int64)
    ca[:n] = self.anchor_code[members]
    cb = np.full(b, -1, np.int64)
    cb[:n] = self.positive_code[members]
    same = ((g[:, None] == g[None, :]) | (ca[:, None] == ca[None, :])
            | (cb[:, None] == cb[None, :])) & (g[:, None] >= 0)
    out["negative_ok"] = ~same | np.eye(b, dtype=bool)   # the diagonal is the positive
    return out


# --- model, loss, step --------------------------------------------------------------------

def split_params(params: Mapping, train_embeddings: bool, train_layers: int = 0,
                 pooling: str = "mean"):
  """(trainable, frozen) of params with stacked layers (`stack_layers`): the embedding tables
  are frozen unless train_embeddings; only the top `train_layers` layers train (0 = all);
  the pooler trains only with pooler pooling."""
  trainable, frozen = dict(params), {}
  if not train_embeddings:
    emb = dict(params["embeddings"])
    frozen["embeddings"] = {k: emb.pop(k) for k in _FROZEN}
    trainable["embeddings"] = emb
  n = jax.tree.leaves(params["layers"])[0].shape[0]
  if 0 < train_layers < n:
    frozen["layers"] = jax.tree.map(lambda x: x[:n - train_layers], params["layers"])
    trainable["layers"] = jax.tree.map(lambda x: x[n - train_layers:], params["layers"])
  if "pooler" in params and pooling != "pooler":
    frozen["pooler"] = trainable.pop("pooler")
  return trainable, frozen


def merge_params(trainable: Mapping, frozen: Mapping) -> dict:
  """The inverse of split_params."""
  params = dict(trainable)
  params["embeddings"] = {**trainable["embeddings"], **frozen.get("embeddings", {})}
  if "layers" in frozen:
    params["layers"] = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), frozen["layers"],
                                    trainable["layers"])
  if "pooler" in frozen:
    params["pooler"] = frozen["pooler"]
  return params


def info_nce(za: jax.Array, zb: jax.Array, valid: jax.Array, negative_ok: jax.Array,
             temperature: float) -> jax.Array:
  """Symmetric InfoNCE: row i's positive is column i; other valid columns allowed by
  `negative_ok` are negatives. za, zb [B, D] (cosine scores on unit vectors); returns the
  mean over valid rows of the two directions' cross-entropies."""
  logits = jnp.matmul(za, zb.T) / temperature
  allowed = negative_ok & valid[None, :] & valid[:, None]
  allowed = allowed | jnp.eye(za.shape[0], dtype=bool)
  logits = jnp.where(allowed, logits, -1e9)
  diag = jnp.diagonal(logits)
  a_to_b = jax.nn.logsumexp(logits, axis=1) - diag
  b_to_a = jax.nn.logsumexp(logits, axis=0) - diag
  per_row = 0.5 * (a_to_b + b_to_a)
  weights = valid.astype(per_row.dtype)
  return jnp.sum(per_row * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def stack_layers(params: Mapping) -> dict:
  """params["layers"] (a tuple of per-layer dicts) -> one dict of [num_layers, ...] arrays,
  so that the layers run under lax.scan: one layer body to compile, not num_layers."""
  return dict(params, layers=jax.tree.map(lambda *x: np.stack([np.asarray(v) for v in x]),
                                          *params["layers"]))


def unstack_layers(params: Mapping) -> dict:
  stacked = params["layers"]
  n = jax.tree.leaves(stacked)[0].shape[0]
  return dict(params, layers=tuple(jax.tree.map(lambda x: np.asarray(x[i]), stacked)
                                   for i in range(n)))


def _run_layers(hidden, stacked, key_mask, config):
  def layer(h, layer_params):
    return bert.encoder_layer(layer_params, h, key_mask, config), None
  return jax.lax.scan(layer, hidden, stacked)[0]


def embed(trainable, frozen, ids, mask, config: bert.BertConfig, pooling: str) -> jax.Array:
  """Pooled, L2-normalised embeddings (the loss compares directions) of split, stacked
  params: frozen layers first (no gradient flows through them), then the trained ones."""
  emb = {**trainable["embeddings"], **frozen.get("embeddings", {})}
  hidden = bert.embed_tokens({"embeddings": emb}, ids, config)
  key_mask = mask.astype(bool)
  if "layers" in frozen:
    hidden = _run_layers(hidden, frozen["layers"], key_mask, config)
  hidden = _run_layers(hidden, trainable["layers"], key_mask, config)
  return bert.pool({**frozen, **trainable}, hidden, mask, pooling, normalize=True)


def make_optimizer(s: FinetuneSettings) -> optax.GradientTransformation:
  warmup = min(s.warmup_steps, max(s.steps - 1, 0))
  schedule = optax.warmup_cosine_decay_schedule(0.0, s.learning_rate, max(warmup, 1),
                                                max(s.steps, warmup + 1), 0.0)
  return optax.adamw(schedule, weight_decay=s.weight_decay)


def make_train_step(config: bert.BertConfig, pooling: str, temperature: float,
                    optimizer: optax.GradientTransformation):
  """jit(step)(trainable, opt_state, frozen, batch) -> (trainable, opt_state, loss)."""

  def loss_fn(trainable, frozen, batch):
    z = embed(trainable, frozen, batch["ids"], batch["mask"], config, pooling)
    half = batch["valid"].shape[0]
    return info_nce(z[:half], z[half:], batch["valid"], batch["negative_ok"], temperature)

  def step(trainable, opt_state, frozen, batch):
    loss, grads = jax.value_and_grad(loss_fn)(trainable, frozen, batch)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1))


def average(base: Mapping, tuned: Mapping, alpha: float):
  """alpha * tuned + (1 - alpha) * base, leaf by leaf (float32 numpy)."""
  return jax.tree.map(lambda b, t: (alpha * np.asarray(t, np.float32)
                                    + (1.0 - alpha) * np.asarray(b, np.float32)), base, tuned)


# --- retrieval of held-out synonyms -------------------------------------------------------

def retrieval_metrics(queries: np.ndarray, true_rows: np.ndarray, keys: np.ndarray) -> dict:
  """acc@1 and MRR of each query's true key among all keys (cosine; ties count against)."""
  if len(queries) == 0:
    return {"acc@1": float("nan"), "mrr": float("nan"), "n": 0}
  q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
  k = keys / np.maximum(np.linalg.norm(keys, axis=1, keepdims=True), 1e-12)
  ranks = np.zeros(len(q), np.int64)
  for start in range(0, len(q), 1024):
    scores = q[start:start + 1024] @ k.T
    true = scores[np.arange(len(scores)), true_rows[start:start + 1024]]
    ranks[start:start + 1024] = 1 + (scores >= true[:, None]).sum(1) - 1
  return {"acc@1": float(np.mean(ranks == 1)), "mrr": float(np.mean(1.0 / ranks)),
          "n": int(len(q))}


def eval_pool(data: FinetuneData, s: FinetuneSettings) -> np.ndarray:
  """The candidate terms of the alpha curve: every query's term plus a fixed random sample
  of the others, `eval_candidates` in all (0 or more than there are: every term)."""
  if not s.eval_candidates or s.eval_candidates >= len(data.candidates):
    return data.candidates
  needed = np.unique(np.concatenate([data.val_term, data.test_term]))
  others = np.setdiff1d(data.candidates, needed)
  extra = max(0, s.eval_candidates - len(needed))
  pick = np.random.default_rng([s.seed, 18]).choice(len(others), size=min(extra, len(others)),
                                                    replace=False)
  return np.sort(np.concatenate([needed, others[pick]]))


def evaluate_params(params, config, tokenizer, enc_settings, data: FinetuneData,
                    s: FinetuneSettings, names: np.ndarray,
                    pool: Optional[np.ndarray] = None,
                    encoder: Optional[Encoder] = None) -> dict:
  """Validation and test retrieval of the held-out synonyms among the term names of `pool`
  (default: every term). `encoder`: one made here before, given these weights instead of
  compiling its length buckets again (the alpha curve scores five weight sets)."""
  if pool is not None:
    data = dataclasses.replace(data, candidates=pool)
  if encoder is None:
    settings = dataclasses.replace(enc_settings, max_length=s.name_max_length)
    encoder = Encoder(params, config, tokenizer, settings, batch_size=s.eval_batch_size,
                      precision=None)
  else:
    encoder.set_params(params)
  strings = list(names[data.candidates]) + list(data.val_query) + list(data.test_query)
  vectors = encoder.encode(strings)
  n_c, n_v = len(data.candidates), len(data.val_query)
  keys = vectors[:n_c]
  position = np.full(len(names), -1, np.int64)
  position[data.candidates] = np.arange(n_c)
  out = {}
  for split, queries, terms in (("validation", vectors[n_c:n_c + n_v], data.val_term),
                                ("test", vectors[n_c + n_v:], data.test_term)):
    out[split] = retrieval_metrics(queries, position[terms], keys)
  return out


# --- Hugging Face output ------------------------------------------------------------------

def params_to_tensors(params: Mapping, config: bert.BertConfig) -> dict:
  """The inverse of bert.params_from_tensors: BertModel tensor names, [out, in] kernels."""
  h = config.hidden_size
  t = {}

  def dense(prefix, layer):
    t[f"{prefix}.weight"] = np.ascontiguousarray(np.asarray(layer["kernel"], np.float32).T)
    t[f"{prefix}.bias"] = np.asarray(layer["bias"], np.float32)

  def norm(prefix, layer):
    t[f"{prefix}.weight"] = np.asarray(layer["scale"], np.float32)
    t[f"{prefix}.bias"] = np.asarray(layer["bias"], np.float32)

  emb = params["embeddings"]
  t["embeddings.word_embeddings.weight"] = np.asarray(emb["word"], np.float32)
  t["embeddings.position_embeddings.weight"] = np.asarray(emb["position"], np.float32)
  t["embeddings.token_type_embeddings.weight"] = np.asarray(emb["token_type"], np.float32)
  norm("embeddings.LayerNorm", emb["norm"])
  for n, layer in enumerate(params["layers"]):
    p = f"encoder.layer.{n}"
    kernel, bias = np.asarray(layer["qkv"]["kernel"]), np.asarray(layer["qkv"]["bias"])
    for j, part in enumerate(("query", "key", "value")):
      dense(f"{p}.attention.self.{part}", {"kernel": kernel[:, j * h:(j + 1) * h],
                                           "bias": bias[j * h:(j + 1) * h]})
    dense(f"{p}.attention.output.dense", layer["attention_out"])
    norm(f"{p}.attention.output.LayerNorm", layer["attention_norm"])
    dense(f"{p}.intermediate.dense", layer["ffn_in"])
    dense(f"{p}.output.dense", layer["ffn_out"])
    norm(f"{p}.output.LayerNorm", layer["ffn_norm"])
  if "pooler" in params:
    dense("pooler.dense", params["pooler"])
  return t


def write_hf_folder(folder: str, params: Mapping, config: bert.BertConfig,
                    base_dir: str) -> None:
  """config.json (the base's, architectures BertModel), model.safetensors, tokenizer files."""
  from safetensors.numpy import save_file
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(base_dir, "config.json")) as f:
    hf_config = json.load(f)
  hf_config["architectures"] = ["BertModel"]
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(hf_config, f, indent=1)
  save_file(params_to_tensors(params, config), os.path.join(folder, "model.safetensors"),
            metadata={"format": "pt"})
  copy_tokenizer_files(base_dir, folder)


# --- cache key and the driver -------------------------------------------------------------

def _file_digest(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""):
      h.update(chunk)
  return h.hexdigest()


_KEY_CACHE: dict = {}


def finetune_key(teacher_cfg, dataset: Dataset) -> str:
  """hash(base weights and config + training/validation strings + settings)."""
  s = read_settings(teacher_cfg)
  base_dir = resolve_model_dir(s.base)
  enc = encoder_settings(teacher_cfg, base_dir)
  stamp = []
  for path in [os.path.join(base_dir, "config.json")] + bert._safetensors_files(base_dir):
    st = os.stat(path)
    stamp.append((path, st.st_size, st.st_mtime_ns))
  memo = (json.dumps(stamp), dataset.root, dataset.data_hash(), json.dumps(s.key_dict()))
  if memo not in _KEY_CACHE:
    base_hash = [_file_digest(p) for p, _, _ in stamp]
    data = build_data(dataset, s)
    blob = json.dumps([base_hash, data.digest(), s.key_dict(),
                       [enc.pooling, enc.normalize]])
    _KEY_CACHE[memo] = hashlib.sha256(blob.encode()).hexdigest()[:16]
  return _KEY_CACHE[memo]


def finetuned_dir(teacher_cfg, dataset: Dataset, workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "teachers",
                      f"{teacher_cfg.get('name', 'teacher')}-{finetune_key(teacher_cfg, dataset)}")


def is_complete(folder: str) -> bool:
  """The weights, finetune.json and the tokenizer's vocabulary (tokenizer.json or vocab.txt)
  are all there."""
  return (all(os.path.exists(os.path.join(folder, f)) for f in FOLDER_FILES)
          and has_tokenizer_files(folder))


def has_tokenizer_files(folder: str) -> bool:
  return any(os.path.isfile(os.path.join(folder, f)) for f in TOKENIZER_VOCAB_FILES)


def copy_tokenizer_files(base_dir: str, folder: str) -> None:
  """The base's tokenizer files into `folder` (fine-tuning never changes the tokenizer); each
  is copied aside and renamed into place, so a killed copy leaves no half file."""
  for name in TOKENIZER_FILES:
    src = os.path.join(base_dir, name)
    if os.path.exists(src):
      dst = os.path.join(folder, name)
      shutil.copyfile(src, dst + ".tmp")
      os.replace(dst + ".tmp", dst)


def hf_teacher_config(teacher_cfg, model_dir: str):
  """The kind-"hf" teacher config that embeds with the fine-tuned folder."""
  cfg = ml_collections.ConfigDict(teacher_cfg.to_dict())
  enc = encoder_settings(teacher_cfg, model_dir)
  cfg.kind, cfg.model, cfg.preset = "hf", model_dir, ""
  cfg.pooling, cfg.normalize, cfg.max_length = enc.pooling, enc.normalize, enc.max_length
  return cfg


def new_strings_config(teacher_cfg, meta: Optional[Mapping]):
  """The config that embeds new strings as this teacher's cache was made: a fine-tuned
  teacher's folder (recorded in its cache's `meta`) as a kind-"hf" teacher; other kinds, or
  a fine-tuned teacher whose folder is gone, unchanged."""
  folder = (meta or {}).get("finetuned_dir", "")
  if teacher_cfg.get("kind") == "finetuned" and folder and os.path.isdir(folder):
    return hf_teacher_config(teacher_cfg, folder)
  return teacher_cfg


def ensure_finetuned(teacher_cfg, dataset: Dataset, workdir: str, progress_bar: bool = True,
                     stop_after_steps: int = 0) -> str:
  """The fine-tuned, averaged teacher folder; trained first when missing (resuming a killed
  run). Every bad setting or input is reported before the long work starts.
  `stop_after_steps` > 0 (tests): checkpoint after that step and return "" unfinished."""
  s = read_settings(teacher_cfg)
  base_dir = resolve_model_dir(s.base)
  config = check_base_folder(base_dir)
  folder = finetuned_dir(teacher_cfg, dataset, workdir)
  if (not is_complete(folder) and all(os.path.exists(os.path.join(folder, f))
                                      for f in FOLDER_FILES)):
    # Trained weights whose tokenizer files were lost: the base's are the ones to restore.
    logging.warning("teacher %s: %s has no tokenizer files; copying the base model's from %s",
                    teacher_cfg.get("name"), folder, base_dir)
    copy_tokenizer_files(base_dir, folder)
  if is_complete(folder):
    logging.info("teacher %s: fine-tuned model cached in %s", teacher_cfg.get("name"), folder)
    return folder
  enc = encoder_settings(teacher_cfg, base_dir)
  if max(s.name_max_length, s.definition_max_length) > config.max_position_embeddings:
    raise ValueError(f"teacher {teacher_cfg.get('name')!r}: field 'finetune."
                     f"definition_max_length': longer than the {config.max_position_embeddings}"
                     f" positions of {base_dir}")
  data = build_data(dataset, s)
  logging.info("teacher %s: fine-tuning %s on %d name/entry and %d name/definition pairs "
               "(validation %d, test %d held-out synonyms, %d candidate terms)",
               teacher_cfg.get("name"), base_dir, data.counts["entry_pairs"],
               data.counts["definition_pairs"], data.counts["validation_queries"],
               data.counts["test_queries"], data.counts["candidates"])
  _, base_params = bert.load_bert(base_dir)
  tokenizer = load_tokenizer(base_dir)
  work = folder + ".work"
  started = time.time()
  tuned, train_info = train(base_params, config, tokenizer, data, s, enc.pooling, work,
                            progress_bar=progress_bar, stop_after_steps=stop_after_steps)
  if train_info["stopped"]:
    logging.info("fine-tune stopped after step %d (checkpoint in %s)", stop_after_steps, work)
    return ""
  train_seconds = time.time() - started
  curve = {}
  pool = eval_pool(data, s)
  alphas = sorted(set(s.alphas) | {0.0, 1.0, s.alpha}) if s.select_alpha else sorted(
      {0.0, 1.0, s.alpha})
  scorer = Encoder(base_params, config, tokenizer,
                   dataclasses.replace(enc, max_length=s.name_max_length),
                   batch_size=s.eval_batch_size, precision=None)
  for a in alphas:
    t0 = time.time()
    curve[a] = evaluate_params(average(base_params, tuned, a), config, tokenizer, enc, data, s,
                               dataset.names, pool, encoder=scorer)
    logging.info("alpha %.2f: validation %s, test %s (%.1fs)", a, curve[a]["validation"],
                 curve[a]["test"], time.time() - t0)
  if s.select_alpha:
    best = max(s.alphas, key=lambda a: (curve[a]["validation"]["acc@1"],
                                        curve[a]["validation"]["mrr"], -a))
  else:
    best = s.alpha
  os.makedirs(folder + ".tmp", exist_ok=True)
  tmp = folder + ".tmp"
  write_hf_folder(tmp, average(base_params, tuned, best), config, base_dir)
  info = {"base": s.base, "base_dir": base_dir, "settings": s.key_dict(),
          "counts": dict(data.counts, eval_candidates=int(len(pool))), "alpha": best,
          "queries": {"validation": [data.val_concept.tolist(), data.val_term.tolist()],
                      "test": [data.test_concept.tolist(), data.test_term.tolist()],
                      "candidates": data.candidates.tolist()},
          "curve": [{"alpha": a, **curve[a]} for a in alphas],
          "train": dict(train_info, seconds=train_seconds),
          "pooling": enc.pooling, "normalize": enc.normalize}
  plot_curve(info, os.path.join(tmp, "alpha_curve.png"))
  with open(os.path.join(tmp, "finetune.json"), "w") as f:
    json.dump(_json_safe(info), f, indent=1)
  if os.path.exists(folder):
    shutil.rmtree(folder)
  os.replace(tmp, folder)
  shutil.rmtree(work, ignore_errors=True)   # the checkpoints are no longer needed
  logging.info("teacher %s: fine-tuned (alpha %.2f) in %s", teacher_cfg.get("name"), best,
               folder)
  return folder


def _json_safe(v):
  if isinstance(v, dict):
    return {str(k): _json_safe(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_json_safe(x) for x in v]
  if isinstance(v, float) and not np.isfinite(v):
    return None
  return v


def train(base_params, config: bert.BertConfig, tokenizer, data: FinetuneData,
          s: FinetuneSettings, pooling: str, work: str, progress_bar: bool = True,
          stop_after_steps: int = 0):
  """Runs (or resumes) the fine-tune in `work`; returns (tuned params, info)."""
  plan = BatchPlan(data, tokenizer, s, config.pad_token_id)
  logging.info("fine-tune batches: lengths %s, %d batches per epoch, %.0f%% padding",
               [int(x) for x in plan.shapes],
               plan.batches_per_epoch, 100 * (1 - plan.real_tokens / max(plan.padded_tokens, 1)))
  trainable, frozen = split_params(stack_layers(base_params), s.train_embeddings,
                                   s.train_layers, pooling)
  optimizer = make_optimizer(s)
  trainable = jax.tree.map(jnp.asarray, trainable)
  frozen = jax.tree.map(jnp.asarray, frozen)
  opt_state = optimizer.init(trainable)
  step_fn = make_train_step(config, pooling, s.temperature, optimizer)
  mgr = ocp.CheckpointManager(
      os.path.join(os.path.abspath(work), "checkpoints"),
      options=ocp.CheckpointManagerOptions(
          preservation_policy=ocp.checkpoint_managers.LatestN(2),
          enable_async_checkpointing=False, create=True))
  start = 0
  latest = mgr.latest_step()
  if latest is not None:
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                          {"trainable": trainable, "opt_state": opt_state})
    restored = mgr.restore(latest, args=ocp.args.StandardRestore(target))
    trainable, opt_state, start = restored["trainable"], restored["opt_state"], int(latest)
    logging.info("fine-tune: resuming at step %d from %s", start, work)
  losses = []
  seen_pairs, done = 0, start
  t0 = time.time()
  with tqdm(total=s.steps * s.batch_size, initial=start * s.batch_size, unit="pairs",
            unit_scale=True, desc="fine-tune", disable=not progress_bar,
            dynamic_ncols=True) as bar:
    for step in range(start, s.steps):
      batch = plan.batch(step)
      trainable, opt_state, loss = step_fn(trainable, opt_state, frozen, batch)
      n = int(batch["valid"].sum())
      seen_pairs += n
      bar.update(s.batch_size)
      if (step + 1) % 10 == 0 or step + 1 == s.steps:
        value = float(loss)
        if not np.isfinite(value):
          raise FloatingPointError(f"fine-tune: loss {value} at step {step + 1}; lower "
                                   "finetune.learning_rate")
        losses.append((step + 1, value))
        bar.set_postfix(loss=f"{value:.3f}")
      done = step + 1
      if done % s.checkpoint_every == 0 or done == s.steps:
        if done in mgr.all_steps():
          mgr.delete(done)
        mgr.save(done, args=ocp.args.StandardSave({"trainable": trainable,
                                                   "opt_state": opt_state}), force=True)
        mgr.wait_until_finished()
      if stop_after_steps and done >= stop_after_steps:
        break
  seconds = time.time() - t0
  info = {"steps": s.steps, "stopped": bool(stop_after_steps) and done < s.steps, "resumed_at": start, "pairs_trained_this_run": seen_pairs,
          "pairs_per_second": seen_pairs / max(seconds, 1e-9), "loss": losses,
          "batch_lengths": [int(x) for x in plan.shapes],
          "padding_fraction": 1 - plan.real_tokens / max(plan.padded_tokens, 1)}
  logging.info("fine-tune: %d pairs in %.1fs (%.1f pairs/s)", seen_pairs, seconds,
               info["pairs_per_second"])
  tuned = unstack_layers(merge_params(jax.device_get(trainable), jax.device_get(frozen)))
  return tuned, info


# --- report -------------------------------------------------------------------------------

def plot_curve(info: Mapping, path: str) -> None:
  curve = info["curve"]
  alphas = [c["alpha"] for c in curve]
  fig = Figure(figsize=(5, 3.5))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  for split, style in (("validation", "-o"), ("test", "--s")):
    ax.plot(alphas, [c[split]["acc@1"] for c in curve], style, label=f"{split} acc@1")
    ax.plot(alphas, [c[split]["mrr"] for c in curve], style, alpha=0.5, label=f"{split} MRR")
  ax.axvline(info["alpha"], color="grey", lw=0.8)
  ax.set_xlabel("alpha (weight of the fine-tuned model)")
  ax.set_ylabel("held-out synonym -> term")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def read_info(folder: str) -> Optional[dict]:
  try:
    with open(os.path.join(folder, "finetune.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _all_terms_retrieval(concepts: np.ndarray, queries: Mapping) -> dict:
  """Held-out synonym -> term among every term name, from a teacher's exported rows."""
  cand = np.asarray(queries["candidates"], np.int64)
  position = np.full(len(concepts), -1, np.int64)
  position[cand] = np.arange(len(cand))
  keys = np.asarray(concepts[np.sort(cand)], np.float32)[np.argsort(np.argsort(cand))]
  out = {}
  for split in ("validation", "test"):
    rows, terms = (np.asarray(x, np.int64) for x in queries[split])
    out[split] = retrieval_metrics(np.asarray(concepts[np.sort(rows)], np.float32)[
        np.argsort(np.argsort(rows))], position[terms], keys)
  return out


def report_metrics(model) -> Optional[dict]:
  """The fine-tuned teachers of a LineModel-like object (None if none): {teacher key:
  finetune.json + "folder" + "all_terms"}, where all_terms scores the held-out synonyms among
  every term name with the exported embeddings: the saved (averaged) teacher's own, and the
  base's where the other teacher is the base model with the same pooling."""
  out = {}
  for key, other in (("teacher1", "teacher2"), ("teacher2", "teacher1")):
    teacher = getattr(model, key, None)
    meta = getattr(teacher, "meta", None) or {}
    folder = meta.get("finetuned_dir")
    info = read_info(folder) if folder else None
    if info is None or "queries" not in info:
      continue
    all_terms = {"averaged (saved)": _all_terms_retrieval(teacher.concepts, info["queries"])}
    base = getattr(model, other, None)
    base_meta = getattr(base, "meta", None) or {}
    if (base_meta.get("model_dir") == info["base_dir"]
        and base_meta.get("pooling") == info["pooling"]
        and bool(base_meta.get("normalize")) == bool(info["normalize"])):
      all_terms["base"] = _all_terms_retrieval(base.concepts, info["queries"])
    info = {k: v for k, v in info.items() if k != "queries"}
    out[key] = dict(info, folder=folder, all_terms=all_terms)
  return out or None


def report_section(metrics: Optional[Mapping], labels: Mapping[str, str]) -> str:
  """Markdown: held-out synonym -> term retrieval for base, fine-tuned and averaged."""
  if not metrics:
    return ""
  lines = ["", "## Concept teacher: held-out synonyms", ""]
  for key, info in metrics.items():
    curve = {c["alpha"]: c for c in info["curve"]}
    best = info["alpha"]
    c = info["counts"]
    lines += [f"Teacher **{labels.get(key, key)}**: {info['base']} fine-tuned "
              f"({info['settings']['steps']} steps of {info['settings']['batch_size']} pairs, "
              f"{c['entry_pairs']} name/synonym and {c['definition_pairs']} name/definition "
              f"training pairs), then averaged with alpha = {best:g}. Queries: synonym "
              f"strings never trained on (validation: {c['validation_queries']} synonyms "
              "held out of the training edges, which chose alpha; test: "
              f"{c['test_queries']} synonym edges of heldout_relations.parquet); the target "
              "is the query's term.", ""]
    all_terms = info.get("all_terms") or {}
    if all_terms:
      lines += [f"Among all {c['candidates']} term names (the exported embeddings):", "",
                "| model | validation acc@1 | validation MRR | test acc@1 | test MRR |",
                "|---|---|---|---|---|"]
      for label in ("base", "averaged (saved)"):
        if label in all_terms:
          v, t = all_terms[label]["validation"], all_terms[label]["test"]
          lines.append(f"| {label} | {_f(v['acc@1'])} | {_f(v['mrr'])} | {_f(t['acc@1'])} | "
                       f"{_f(t['mrr'])} |")
      lines.append("")
    lines += [f"Among {c.get('eval_candidates', c['candidates'])} term names (every "
              "query's term and a fixed random sample of the others; the curve that chose "
              "alpha):", "",
              "| model | alpha | validation acc@1 | validation MRR | test acc@1 | test MRR |",
              "|---|---|---|---|---|---|"]
    for label, a in (("base", 0.0), ("fine-tuned", 1.0), ("averaged (saved)", best)):
      if a not in curve:
        continue
      v, t = curve[a]["validation"], curve[a]["test"]
      lines.append(f"| {label} | {a:g} | {_f(v['acc@1'])} | {_f(v['mrr'])} | "
                   f"{_f(t['acc@1'])} | {_f(t['mrr'])} |")
    lines += ["", "Validation acc@1 over alpha: " + ", ".join(
        f"{a:g}: {_f(curve[a]['validation']['acc@1'])}" for a in sorted(curve))
        + f". Fine-tune speed: {info['train']['pairs_per_second']:.0f} pairs/s.",
        "", f"![alpha curve]({key}_alpha_curve.png)", ""]
  return "\n".join(lines)


def _f(x) -> str:
  return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.3f}"


def write_report_files(metrics: Optional[Mapping], workdir: str) -> None:
  """Copies each fine-tuned teacher's alpha curve plot next to the report."""
  for key, info in (metrics or {}).items():
    src = os.path.join(info["folder"], "alpha_curve.png")
    if os.path.exists(src):
      with files_lib.replacing(os.path.join(workdir, f"{key}_alpha_curve.png")) as tmp:
        shutil.copyfile(src, tmp)
