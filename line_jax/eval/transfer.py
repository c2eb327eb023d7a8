r"""Transfer of a CNN over lists of concept embeddings between two sites.

A downstream protocol for concept embeddings: each case (a pair of the dataset) is the
*list* of its concepts; a small CNN classifies the pair's `label` from that list, and is
moved from one site (source of the data) to another under three strategies.

The classifier (`ListCNN`): a 1-D convolution with `filters` (100) filters of width 1 over
the padded list of concept embeddings, ReLU, max pooling over the list (padding masked
out), and a fully connected layer to the classes. A negated occurrence is its own entry
(the negated form's embedding; with one-hot inputs its own id). With one-hot inputs the
width-1 convolution is a row lookup of its kernel (`kernel[id] + bias`), which is the same
function without building the one-hot vectors.

The protocol (`run_transfer`), for each direction A -> B of the two sites and each
embedding:
  * train on site A (a `validation_fraction` of A held out for early stopping on the
    validation loss, with `patience` epochs);
  * draw a labelled `target_fraction` of site B (stratified by label; a `validation_fraction`
    of it held out for early stopping), the rest of B is the test part;
  * direct: the A model on B's test part; linear: the A model with only the fully connected
    layer tuned on B's labelled part; full: every layer tuned; target only: the same CNN
    trained from scratch on B's labelled part alone (the reference that tells whether A
    helped at all);
  * `num_seeds` seeds, each with its own initialisation, validation parts and target
    sample; macro F1 and accuracy as mean and standard deviation over seeds.
All seeds train at once: the parameters carry a leading seed axis and the jitted step is
`vmap`ped over it. Training batches are packed (`pack_batches`): a batch's list entries sit
back to back in a buffer of fixed capacity, so the convolution runs on real entries only,
not on the padding of short lists (the same function, `packed_logits`; scoring uses the
padded `ListCNN`). Shapes are static (rows of weight 0 pad a batch, the capacity is fixed
per training set) and the learning rate is an argument, so that few compilations serve
every epoch, seed, direction and learning rate.

Sites: the pairs' `site` column, else `source` (config `site_column`); `site_pattern`, a
regular expression with one group, maps the column's values to sites (e.g. the database
prefix of a disease id); `sites` names the two compared (default: the two largest).

Too few examples: a compared site with fewer than `min_site_pairs` labelled pairs skips the
protocol; a label class with fewer than `min_class_pairs` pairs at either site is left out
(with a note), and fewer than two classes left skip it (one class leaves nothing to learn,
every F1 1.0; classes of one site only can be learnt at neither). A skip returns
{"skipped": why}, which the report prints. An embedder's rows of another shape, or with a
NaN or inf, raise ValueError naming the embedding and the first bad concept.

When the label is one of the concepts' `group`s (the top-level branch of each concept, as
in the HPO data, where the label is the most frequent branch among the findings), the
protocol also runs with the branch-root concepts (those named as their group, and every
entry of the same term) removed from the lists, so that a list cannot name its label.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import resource
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pyarrow.parquet as pq
from absl import logging
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from line_jax.util import files
from line_jax.eval import metrics

# Embedding keys in report order; "onehot" needs no embedder.
EMBEDDINGS = ("onehot", "teacher1", "teacher2", "line")
STRATEGIES = ("direct", "linear", "full", "target_only")
STRATEGY_LABELS = {"direct": "direct", "linear": "linear-only tuning",
                   "full": "full tuning", "target_only": "target only (no transfer)"}
ONEHOT_LABEL = "one-hot concept ids"
PLOT_FILE = "transfer_f1.png"
VOCAB_ROUND = 256    # one-hot vocabularies are padded to a multiple of this (one compile)
REPORT_FILE = "transfer.md"
_RNG_SOURCE, _RNG_TARGET, _RNG_SHUFFLE = range(3)

Embedder = Callable[[np.ndarray, np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------
# Settings.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TransferConfig:
  """config.eval.transfer.* (see line_jax/config.py)."""
  enabled: bool = True
  filters: int = 100
  batch_size: int = 128
  learning_rate: float = 1e-2
  tune_learning_rate: float = 1e-3
  max_epochs: int = 20
  tune_max_epochs: int = 20
  patience: int = 2
  validation_fraction: float = 0.1
  target_fraction: float = 0.1
  num_seeds: int = 5
  seed: int = 0
  site_column: str = "auto"         # "auto": `site`, else `source`
  site_pattern: str = ""            # regex with one group applied to the column's values
  sites: Tuple[str, ...] = ()       # the two compared sites; () = the two largest
  embeddings: Tuple[str, ...] = EMBEDDINGS
  without_branch_roots: str = "auto"  # "auto": when the label is a concept group; "on"/"off"
  min_site_pairs: int = 20          # a compared site with fewer labelled pairs: skipped
  min_class_pairs: int = 10         # a class with fewer pairs at either site: left out
  eval_chunk: int = 512             # rows per forward call at evaluation

  def __post_init__(self):
    unknown = [e for e in self.embeddings if e not in EMBEDDINGS]
    if unknown:
      raise ValueError(f"config.eval.transfer.embeddings: unknown {unknown}; choose among "
                       f"{list(EMBEDDINGS)}")
    if self.without_branch_roots not in ("auto", "on", "off"):
      raise ValueError("config.eval.transfer.without_branch_roots must be auto, on or off, "
                       f"got {self.without_branch_roots!r}")
    if not 0 < self.target_fraction < 1:
      raise ValueError("config.eval.transfer.target_fraction must be in (0, 1), got "
                       f"{self.target_fraction}")
    if not 0 < self.validation_fraction < 1:
      raise ValueError("config.eval.transfer.validation_fraction must be in (0, 1), got "
                       f"{self.validation_fraction}")
    if self.num_seeds < 1 or self.filters < 1 or self.batch_size < 1:
      raise ValueError("config.eval.transfer: num_seeds, filters and batch_size must be >= 1")
    if self.min_site_pairs < 1 or self.min_class_pairs < 1:
      raise ValueError("config.eval.transfer: min_site_pairs and min_class_pairs must be >= 1, "
                       f"got {self.min_site_pairs} and {self.min_class_pairs}")
    if len(self.sites) not in (0, 2):
      raise ValueError(f"config.eval.transfer.sites names two sites or none, got "
                       f"{list(self.sites)}")


def read_config(config) -> TransferConfig:
  """`TransferConfig` from config.eval.transfer; missing fields take the defaults."""
  d = TransferConfig()
  ev = config.get("eval", None)
  sub = ev.get("transfer", None) if ev is not None else None
  if sub is None:
    return d
  values = {}
  for field in dataclasses.fields(TransferConfig):
    if field.name in sub:
      value = sub[field.name]
      default = getattr(d, field.name)
      values[field.name] = tuple(str(v) for v in value) if isinstance(default, tuple) \
          else type(default)(value)
  return TransferConfig(**values)


# --------------------------------------------------------------------------------------
# Sites, labels and branch roots.
# --------------------------------------------------------------------------------------


def pair_column(root: str, name: str) -> Optional[np.ndarray]:
  """Column `name` of `root`/pairs.parquet as an object array, or None when absent."""
  path = os.path.join(root, "pairs.parquet")
  if not os.path.exists(path):
    return None
  if name not in pq.read_schema(path).names:
    return None
  return np.asarray(pq.read_table(path, columns=[name]).column(name).to_pylist(), object)


def resolve_sites(root: str, num_pairs: int,
                  cfg: TransferConfig) -> Tuple[Optional[np.ndarray], str]:
  """(site of each pair, "" where none; the column used) or (None, why not)."""
  candidates = ("site", "source") if cfg.site_column == "auto" else (cfg.site_column,)
  for column in candidates:
    values = pair_column(root, column)
    if values is None:
      continue
    if len(values) != num_pairs:
      raise ValueError(f"{os.path.join(root, 'pairs.parquet')}: field '{column}' has "
                       f"{len(values)} rows, the dataset {num_pairs}")
    sites = np.array(["" if v is None else str(v) for v in values], object)
    if cfg.site_pattern:
      pattern = re.compile(cfg.site_pattern)
      if pattern.groups != 1:
        raise ValueError("config.eval.transfer.site_pattern needs exactly one group, got "
                         f"{cfg.site_pattern!r}")
      matches = [pattern.search(s) for s in sites]
      sites = np.array([m.group(1) if m else "" for m in matches], object)
    return sites, column
  return None, (f"the pairs have no {' or '.join(repr(c) for c in candidates)} column "
                f"(config.eval.transfer.site_column={cfg.site_column!r})")


def label_is_group(labels: np.ndarray, groups: Optional[np.ndarray]) -> bool:
  """True when every label but a catch-all "other" is one of the concepts' groups."""
  if groups is None:
    return False
  values = {str(v) for v in labels} - {"other", ""}
  return bool(values) and values <= {str(g) for g in groups}


def branch_root_concepts(dataset) -> np.ndarray:
  """[C] bool: concepts named as their own group, and every entry of the same term.

  The term of an entry is the `term_id` column of concepts.parquet when there is one (so
  that the synonym entries of a root go too), else the concept itself.
  """
  if dataset.groups is None:
    return np.zeros(dataset.num_concepts, bool)
  names = np.array([str(n).strip().lower() for n in dataset.names])
  groups = np.array([str(g).strip().lower() for g in dataset.groups])
  roots = names == groups
  path = os.path.join(dataset.root, "concepts.parquet")
  if os.path.exists(path):
    if "term_id" in pq.read_schema(path).names:
      terms = np.asarray(pq.read_table(path, columns=["term_id"]).column("term_id")
                         .to_pylist(), object)
      if len(terms) == len(roots):
        roots = np.isin(terms.astype(str), terms[roots].astype(str))
  return roots


# --------------------------------------------------------------------------------------
# Padded lists.
# --------------------------------------------------------------------------------------


def list_segments(dataset, pair_idx: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(offsets [N+1], concept indices, negated flags) of the lists of `pair_idx`, in order."""
  pair_idx = np.asarray(pair_idx, np.int64)
  starts = dataset.concept_offsets[pair_idx]
  lengths = dataset.concept_offsets[pair_idx + 1] - starts
  offsets = np.zeros(len(pair_idx) + 1, np.int64)
  np.cumsum(lengths, out=offsets[1:])
  flat_pos = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
  return offsets, dataset.concept_flat[flat_pos], dataset.negated_flat[flat_pos]


@dataclasses.dataclass(frozen=True)
class Lists:
  """The evaluated pairs' concept lists as ids into a table of distinct entries.

  Attributes:
    ids: [N, L] int32 entry ids (0 where padded).
    mask: [N, L] bool, True on real entries.
    entry_concept: [U] concept index of each distinct entry.
    entry_negated: [U] its negation flag.
  """
  ids: np.ndarray
  mask: np.ndarray
  entry_concept: np.ndarray
  entry_negated: np.ndarray


def pack_lists(offsets: np.ndarray, flat: np.ndarray, negated: np.ndarray,
               drop: Optional[np.ndarray] = None) -> Tuple[Lists, int]:
  """Pads the segments `flat[offsets[i]:offsets[i+1]]` into a `Lists`.

  Args:
    offsets: [N+1] segment bounds.
    flat, negated: the concept indices and their negation flags.
    drop: optional [C] bool; concepts marked there are removed from the lists.

  Returns:
    (the lists, number of entries removed by `drop`).
  """
  flat = np.asarray(flat, np.int64)
  negated = np.asarray(negated, bool)
  owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
  keep = np.ones(len(flat), bool) if drop is None else ~np.asarray(drop, bool)[flat]
  removed = int((~keep).sum())
  flat, negated, owner = flat[keep], negated[keep], owner[keep]
  keys = flat * 2 + negated
  unique, entry = np.unique(keys, return_inverse=True)
  lengths = np.bincount(owner, minlength=len(offsets) - 1)
  width = max(1, int(lengths.max()) if len(lengths) else 1)
  starts = np.r_[0, np.cumsum(lengths)[:-1]]
  position = np.arange(len(flat)) - starts[owner]
  ids = np.zeros((len(lengths), width), np.int32)
  mask = np.zeros((len(lengths), width), bool)
  ids[owner, position] = entry
  mask[owner, position] = True
  return Lists(ids, mask, (unique // 2).astype(np.int64), (unique % 2).astype(bool)), removed


# --------------------------------------------------------------------------------------
# The model.
# --------------------------------------------------------------------------------------


class EntryConv(nn.Module):
  """Width-1 convolution over the entries of a list.

  `vocab_size` > 0: one-hot inputs over that many entries (the kernel row of each id);
  else the rows `table[ids]` of a fixed embedding table.
  """
  features: int
  vocab_size: int = 0

  @nn.compact
  def __call__(self, ids, table):
    width = self.vocab_size or table.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (width, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    if self.vocab_size:
      return kernel[ids] + bias
    return table[ids] @ kernel + bias


class ListCNN(nn.Module):
  """Conv (width 1) -> ReLU -> masked max over the list -> fully connected."""
  num_classes: int
  filters: int = 100
  vocab_size: int = 0

  @nn.compact
  def __call__(self, ids, mask, table):
    h = nn.relu(EntryConv(self.filters, self.vocab_size, name="conv")(ids, table))
    pooled = jnp.max(jnp.where(mask[..., None], h, -jnp.inf), axis=-2)
    pooled = jnp.where(jnp.any(mask, axis=-1, keepdims=True), pooled, 0.0)  # empty lists
    return nn.Dense(self.num_classes, name="dense")(pooled)


def _optimizer(train_conv: bool) -> optax.GradientTransformation:
  """Adam's direction (the step multiplies it by -learning rate, a traced argument, so that
  one compilation serves every learning rate); linear-only: the conv gets none."""
  adam = optax.scale_by_adam()
  if train_conv:
    return adam
  return optax.multi_transform(
      {"train": adam, "frozen": optax.set_to_zero()},
      lambda params: {k: jax.tree.map(lambda _: "frozen" if k == "conv" else "train", v)
                      for k, v in params.items()})


@functools.lru_cache(maxsize=16)
def _logits_fn(num_classes: int, filters: int, vocab_size: int):
  """Jitted logits of every seed's model [S, ...] on its rows idx [S, M]."""
  model = ListCNN(num_classes, filters, vocab_size)

  def logits(params, idx, data_ids, data_mask, table):
    return jax.vmap(lambda p, i: model.apply({"params": p}, data_ids[i], data_mask[i],
                                             table))(params, idx)
  return jax.jit(logits)


def packed_logits(params, flat_ids, local_idx, local_mask, table, vocab_size: int):
  """`ListCNN` on packed lists: the same function, computed without list padding.

  A batch's list entries sit back to back in `flat_ids` [C] (C a fixed capacity, the tail
  padding); `local_idx` [B, L] points each list slot at its entry there (`local_mask` marks
  the real slots). The width-1 convolution runs once per real entry instead of once per
  padded slot (the default's lists are 5.7 entries long on average and padded to 10), then
  each list gathers its entries' features for the masked max.
  """
  conv, dense = params["conv"], params["dense"]
  if vocab_size:   # a row lookup per slot costs no more than per entry, and needs no scatter
    h = nn.relu(conv["kernel"][flat_ids[local_idx]] + conv["bias"])     # [B, L, F]
  else:
    h = nn.relu(table[flat_ids] @ conv["kernel"] + conv["bias"])[local_idx]
  pooled = jnp.max(jnp.where(local_mask[..., None], h, -jnp.inf), axis=-2)
  pooled = jnp.where(jnp.any(local_mask, axis=-1, keepdims=True), pooled, 0.0)
  return pooled @ dense["kernel"] + dense["bias"]


@functools.lru_cache(maxsize=32)
def _functions(num_classes: int, filters: int, vocab_size: int, train_conv: bool):
  """(optimizer, jitted step over every seed), cached per setting.

  The step takes parameters with a leading seed axis [S, ...] and one packed batch per seed
  (`pack_batches`); a batch whose weights are all zero (padding) leaves that seed's
  parameters and optimizer untouched. Shapes depend only on the batch size, the packing
  capacity and the list width, so one compilation serves every epoch and training set.
  """
  del num_classes, filters   # part of the cache key: the parameters' shapes
  optimizer = _optimizer(train_conv)

  def loss_fn(params, flat_ids, local_idx, local_mask, y, w, table):
    logits = packed_logits(params, flat_ids, local_idx, local_mask, table, vocab_size)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1e-12)

  def step(params, opt_state, rows, w, flat_ids, local_idx, local_mask, data_y, table,
           learning_rate):
    """One Adam step of one seed on its packed batch (rows of weight 0 are padding)."""
    loss, grads = jax.value_and_grad(loss_fn)(params, flat_ids, local_idx, local_mask,
                                              data_y[rows], w, table)
    updates, new_state = optimizer.update(grads, opt_state, params)
    new_params = jax.tree.map(lambda p, u: p - learning_rate * u, params, updates)
    active = jnp.sum(w) > 0
    keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
    return (jax.tree.map(keep, new_params, params), jax.tree.map(keep, new_state, opt_state),
            loss)

  seeds_step = jax.vmap(step, in_axes=(0, 0, 0, 0, 0, 0, 0, None, None, None))
  return optimizer, jax.jit(seeds_step)


@jax.jit
def _keep_improved(improved, new, old):
  """Per seed: `new` where improved [S], else `old`."""
  return jax.tree.map(
      lambda n, o: jnp.where(improved.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old)


class _Best:
  """Early stopping over seeds: each seed's parameters at its lowest validation loss, and
  whether every seed has gone `patience` epochs without improving."""

  def __init__(self, params, loss: np.ndarray, patience: int):
    self.params, self.loss, self.patience = params, loss, patience
    self.epoch = np.zeros(len(loss), np.int64)
    self.since = np.zeros(len(loss), np.int64)

  def update(self, epoch: int, params, loss: np.ndarray) -> bool:
    improved = loss < self.loss
    self.loss = np.where(improved, loss, self.loss)
    self.epoch = np.where(improved, epoch, self.epoch)
    self.since = np.where(improved, 0, self.since + 1)
    self.params = _keep_improved(jnp.asarray(improved), params, self.params)
    return bool((self.since >= self.patience).all())


def packing_capacity(lengths: np.ndarray, batch: int, width: int) -> int:
  """Entries per packed batch: the mean list length x batch, 10% over, rounded up to 32,
  at least one full list and at most `batch` full lists. A batch takes lists in order until
  the next would overflow it, so a run of long lists makes a batch a little smaller."""
  mean = float(np.mean(lengths)) if len(lengths) else float(width)
  capacity = int(np.ceil(1.1 * mean * batch / 32.0)) * 32
  return int(min(max(capacity, width, 1), max(batch * width, 1)))


def _split_batches(rows: np.ndarray, lengths: np.ndarray, batch: int,
                   capacity: int) -> List[np.ndarray]:
  """Consecutive runs of `rows` with at most `batch` rows and `capacity` entries each."""
  ends = np.cumsum(lengths[rows])
  out, start = [], 0
  while start < len(rows):
    before = ends[start - 1] if start else 0
    end = min(start + batch, int(np.searchsorted(ends, before + capacity, side="right")))
    end = max(end, start + 1)
    out.append(rows[start:end])
    start = end
  return out


def pack_batches(ids: np.ndarray, mask: np.ndarray, orders: Sequence[np.ndarray], batch: int,
                 capacity: int) -> Dict[str, np.ndarray]:
  """One epoch of packed batches for each seed, `orders[s]` being seed s's row order.

  Returns arrays with leading [S, steps] axes: rows and w [.., B], flat_ids [.., C],
  local_idx and local_mask [.., B, L]. Seeds with fewer batches get all-zero-weight ones.
  """
  lengths = mask.sum(axis=1)
  per_seed = [_split_batches(np.asarray(o, np.int64), lengths, batch, capacity)
              for o in orders]
  steps = max(1, max(len(b) for b in per_seed))
  seeds, width = len(orders), ids.shape[1]
  out = {"rows": np.zeros((seeds, steps, batch), np.int32),
         "w": np.zeros((seeds, steps, batch), np.float32),
         "flat_ids": np.zeros((seeds, steps, capacity), np.int32),
         "local_idx": np.zeros((seeds, steps, batch, width), np.int32),
         "local_mask": np.zeros((seeds, steps, batch, width), bool)}
  for s, batches in enumerate(per_seed):
    for t, rows in enumerate(batches):
      m = mask[rows]
      k = len(rows)
      n = int(m.sum())
      out["rows"][s, t, :k] = rows
      out["w"][s, t, :k] = 1.0
      out["flat_ids"][s, t, :n] = ids[rows][m]
      out["local_idx"][s, t, :k] = np.where(m, np.cumsum(m.ravel()).reshape(m.shape) - 1, 0)
      out["local_mask"][s, t, :k] = m
  return out


def init_params(num_classes: int, filters: int, vocab_size: int, table: np.ndarray,
                keys: jax.Array):
  """Parameters of one model per key in `keys` [S], stacked on a leading seed axis."""
  model = ListCNN(num_classes, filters, vocab_size)
  ids = jnp.zeros((1, 1), jnp.int32)
  mask = jnp.ones((1, 1), bool)
  return jax.vmap(lambda k: model.init(k, ids, mask, jnp.asarray(table))["params"])(keys)


# --------------------------------------------------------------------------------------
# Training with early stopping, all seeds at once.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Problem:
  """What every fit of one embedding shares: the padded lists, labels and the table."""
  ids: jax.Array        # [N, L]
  mask: jax.Array       # [N, L]
  labels: jax.Array     # [N]
  table: jax.Array      # [U, d], or [1, 1] for one-hot inputs
  vocab_size: int       # U for one-hot inputs, else 0
  num_classes: int
  cfg: TransferConfig
  capacity: int = 0     # entries per packed batch; 0: from this problem's lists

  def host_lists(self) -> Tuple[np.ndarray, np.ndarray]:
    """(ids, mask) as numpy arrays, for packing batches on the host."""
    if not hasattr(self, "_host"):
      object.__setattr__(self, "_host", (np.asarray(self.ids), np.asarray(self.mask)))
    return self._host


def _stack(index_sets: Sequence[np.ndarray], width: int) -> Tuple[np.ndarray, np.ndarray]:
  idx = np.zeros((len(index_sets), width), np.int32)
  w = np.zeros((len(index_sets), width), np.float32)
  for s, rows in enumerate(index_sets):
    idx[s, :len(rows)] = rows
    w[s, :len(rows)] = 1.0
  return idx, w


@functools.lru_cache(maxsize=16)
def _entry_functions(vocab_size: int):
  """Jitted (entry features [S, U, F] of every seed, logits [S, M, K] from them)."""

  def features(params, table):
    def one(p):
      conv = p["conv"]
      h = conv["kernel"] if vocab_size else table @ conv["kernel"]
      return nn.relu(h + conv["bias"])
    return jax.vmap(one)(params)

  def logits(params, features, idx, data_ids, data_mask):
    def one(p, h, i):
      mask = data_mask[i]
      pooled = jnp.max(jnp.where(mask[..., None], h[data_ids[i]], -jnp.inf), axis=-2)
      pooled = jnp.where(jnp.any(mask, axis=-1, keepdims=True), pooled, 0.0)
      return pooled @ p["dense"]["kernel"] + p["dense"]["bias"]
    return jax.vmap(one)(params, features, idx)

  return jax.jit(features), jax.jit(logits)


def logits_of(problem: Problem, params, index_sets: Sequence[np.ndarray]) -> List[np.ndarray]:
  """Logits of seed s's model on rows `index_sets[s]`, in static chunks.

  Large sets (more list slots than distinct entries, e.g. a target site's test part) first
  run the width-1 convolution once over the distinct entries and then pool each list from
  those features; small ones (the validation parts scored every epoch) run the padded
  `ListCNN` on their rows. Both compute the same function.
  """
  longest = max(len(r) for r in index_sets)
  # Small sets (validation parts, scored every epoch) get a small power-of-two chunk.
  chunk = min(problem.cfg.eval_chunk, max(32, 1 << int(np.ceil(np.log2(max(longest, 1))))))
  idx, _ = _stack(index_sets, max(1, int(np.ceil(longest / chunk))) * chunk)
  entries = problem.vocab_size or int(problem.table.shape[0])
  parts = []
  if longest * int(problem.ids.shape[1]) > entries:
    features_fn, pool_fn = _entry_functions(problem.vocab_size)
    features = features_fn(params, problem.table)
    for s in range(0, idx.shape[1], chunk):
      parts.append(np.asarray(pool_fn(params, features, jnp.asarray(idx[:, s:s + chunk]),
                                      problem.ids, problem.mask)))
  else:
    fn = _logits_fn(problem.num_classes, problem.cfg.filters, problem.vocab_size)
    for s in range(0, idx.shape[1], chunk):
      parts.append(np.asarray(fn(params, jnp.asarray(idx[:, s:s + chunk]), problem.ids,
                                 problem.mask, problem.table)))
  full = np.concatenate(parts, axis=1)
  return [full[s, :len(rows)] for s, rows in enumerate(index_sets)]


def _losses(problem: Problem, params, index_sets) -> np.ndarray:
  labels = np.asarray(problem.labels)
  out = []
  for logit, rows in zip(logits_of(problem, params, index_sets), index_sets):
    z = logit - logit.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    out.append(float(-log_p[np.arange(len(rows)), labels[rows]].mean()))
  return np.array(out)


def fit(problem: Problem, params, fit_sets: Sequence[np.ndarray],
        val_sets: Sequence[np.ndarray], learning_rate: float, train_conv: bool,
        max_epochs: int, rng: np.random.Generator):
  """Trains seed s on `fit_sets[s]`, keeping the parameters of its best validation loss.

  Stops when every seed has gone `patience` epochs without improving (or `max_epochs`).

  Returns:
    (best parameters [S, ...], epochs run, best epoch of each seed).
  """
  cfg = problem.cfg
  if not train_conv:
    return _fit_dense(problem, params, fit_sets, val_sets, learning_rate, max_epochs, rng)
  optimizer, step_fn = _functions(problem.num_classes, cfg.filters, problem.vocab_size,
                                  train_conv)
  ids, mask = problem.host_lists()
  # One capacity per problem (from all its lists), so that every fit of it, on either
  # site, shares one compiled step.
  capacity = problem.capacity or packing_capacity(mask.sum(axis=1), cfg.batch_size,
                                                  ids.shape[1])
  opt_state = jax.vmap(optimizer.init)(params)
  best = _Best(params, _losses(problem, params, val_sets), cfg.patience)
  epochs = 0
  lr = jnp.float32(learning_rate)
  for epochs in range(1, max_epochs + 1):
    packed = pack_batches(ids, mask, [rng.permutation(r) for r in fit_sets], cfg.batch_size,
                          capacity)
    for t in range(packed["rows"].shape[1]):
      params, opt_state, _ = step_fn(params, opt_state, *(packed[k][:, t] for k in (
          "rows", "w", "flat_ids", "local_idx", "local_mask")), problem.labels, problem.table,
                                     lr)
    if best.update(epochs, params, _losses(problem, params, val_sets)):
      break
  return best.params, epochs, best.epoch


@jax.jit
def _pooled(features, data_ids, data_mask):
  """[S, N, F] max-pooled list features of every row from entry features [S, U, F]."""
  def one(h):
    pooled = jnp.max(jnp.where(data_mask[..., None], h[data_ids], -jnp.inf), axis=-2)
    return jnp.where(jnp.any(data_mask, axis=-1, keepdims=True), pooled, 0.0)
  return jax.vmap(one)(features)


@functools.lru_cache(maxsize=4)
def _dense_functions():
  """(jitted Adam step of the fully connected layer on pooled features, per-seed mean
  validation cross-entropy), both over seeds [S, ...]."""
  optimizer = optax.scale_by_adam()

  def loss_fn(dense, x, y, w):
    ce = optax.softmax_cross_entropy_with_integer_labels(x @ dense["kernel"] + dense["bias"],
                                                         y)
    return jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1e-12)

  def step(dense, opt_state, pooled, rows, w, data_y, learning_rate):
    grads = jax.grad(loss_fn)(dense, pooled[rows], data_y[rows], w)
    updates, new_state = optimizer.update(grads, opt_state, dense)
    new = jax.tree.map(lambda p, u: p - learning_rate * u, dense, updates)
    active = jnp.sum(w) > 0
    keep = lambda n, o: jnp.where(active, n, o)  # noqa: E731
    return jax.tree.map(keep, new, dense), jax.tree.map(keep, new_state, opt_state)

  def losses(dense, pooled, rows, w, data_y):
    return jax.vmap(loss_fn)(dense, jax.vmap(lambda p, r: p[r])(pooled, rows), data_y[rows],
                             w)

  return (optimizer, jax.jit(jax.vmap(step, in_axes=(0, 0, 0, 0, 0, None, None))),
          jax.jit(losses))


def _fit_dense(problem: Problem, params, fit_sets, val_sets, learning_rate: float,
               max_epochs: int, rng: np.random.Generator):
  """`fit` with the convolution frozen (linear-only tuning): each list's pooled features
  are fixed, so they are computed once and only the fully connected layer trains on them,
  with the same Adam, batches, validation loss and early stopping."""
  cfg = problem.cfg
  features_fn, _ = _entry_functions(problem.vocab_size)
  pooled = _pooled(features_fn(params, problem.table), problem.ids, problem.mask)
  optimizer, step_fn, losses_fn = _dense_functions()
  dense = params["dense"]
  opt_state = jax.vmap(optimizer.init)(dense)
  batch = cfg.batch_size
  steps = max(1, int(np.ceil(max(len(r) for r in fit_sets) / batch)))
  val_idx, val_w = _stack(val_sets, max(len(r) for r in val_sets))

  def val_loss(d):   # the mean cross-entropy `_losses` computes through the whole model
    return np.asarray(losses_fn(d, pooled, val_idx, val_w, problem.labels))

  best = _Best(dense, val_loss(dense), cfg.patience)
  epochs = 0
  lr = jnp.float32(learning_rate)
  for epochs in range(1, max_epochs + 1):
    idx, w = _stack([rng.permutation(r) for r in fit_sets], steps * batch)
    idx, w = idx.reshape(len(fit_sets), steps, batch), w.reshape(len(fit_sets), steps, batch)
    for t in range(steps):
      dense, opt_state = step_fn(dense, opt_state, pooled, idx[:, t], w[:, t],
                                 problem.labels, lr)
    if best.update(epochs, dense, val_loss(dense)):
      break
  return {"conv": params["conv"], "dense": best.params}, epochs, best.epoch


def _scores(problem: Problem, params, index_sets) -> List[Dict[str, float]]:
  labels = np.asarray(problem.labels)
  return [metrics.classification_scores(labels[rows], logit.argmax(axis=1))
          for logit, rows in zip(logits_of(problem, params, index_sets), index_sets)]


def summarize(per_seed: Sequence[Dict[str, float]]) -> Dict[str, object]:
  """Mean and standard deviation over seeds of macro F1, precision, recall, accuracy."""
  out: Dict[str, object] = {}
  for name in ("f1", "accuracy", "precision", "recall"):
    values = np.array([s[name] for s in per_seed], np.float64)
    out[name] = float(values.mean())
    out[f"{name}_std"] = float(values.std())
  out["per_seed"] = [{k: float(v) for k, v in s.items()} for s in per_seed]
  return out


def stratified_part(rows: np.ndarray, labels: np.ndarray, fraction: float,
                    rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
  """(part, rest): `floor(fraction * n_c)` rows of each class c drawn into the part.

  At least one row goes to each side when `rows` has two or more.
  """
  part = []
  for c in np.unique(labels[rows]):
    members = rng.permutation(rows[labels[rows] == c])
    part.extend(members[:int(np.floor(fraction * len(members)))].tolist())
  part = np.sort(np.asarray(part, np.int64))
  if len(part) == 0 and len(rows) >= 2:
    part = np.sort(rng.choice(rows, size=1, replace=False))
  rest = np.setdiff1d(rows, part)
  if len(rest) == 0 and len(part) >= 2:
    rest, part = part[-1:], part[:-1]
  return part, rest


def transfer_direction(problem: Problem, source: np.ndarray, target: np.ndarray,
                       rng_for: Callable[[int, int], np.random.Generator]) -> Dict:
  """Every strategy for one direction source -> target; see the module docstring.

  Args:
    problem: the lists, labels and table of one embedding.
    source, target: row indices (into the problem's arrays) of the two sites.
    rng_for: (purpose code, seed) -> a generator, so that each embedding sees the same
      validation parts and target samples.
  """
  cfg = problem.cfg
  seeds = range(cfg.num_seeds)
  labels = np.asarray(problem.labels)
  source_val, source_fit = zip(*[stratified_part(source, labels, cfg.validation_fraction,
                                                 rng_for(_RNG_SOURCE, s)) for s in seeds])
  labelled, test = zip(*[stratified_part(target, labels, cfg.target_fraction,
                                         rng_for(_RNG_TARGET, s)) for s in seeds])
  tune_val, tune_fit = zip(*[stratified_part(part, labels, cfg.validation_fraction,
                                             rng_for(_RNG_TARGET + 10, s))
                             for s, part in zip(seeds, labelled)])
  keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(cfg.seed), s))(
      jnp.arange(cfg.num_seeds))
  shuffle = rng_for(_RNG_SHUFFLE, 0)
  start = init_params(problem.num_classes, cfg.filters, problem.vocab_size,
                      problem.table, keys)
  trained, epochs, best_epoch = fit(problem, start, source_fit, source_val,
                                    cfg.learning_rate, True, cfg.max_epochs, shuffle)
  out = {"sizes": {"source_fit": len(source_fit[0]), "source_validation": len(source_val[0]),
                   "target_labelled": len(labelled[0]), "target_tune_fit": len(tune_fit[0]),
                   "target_tune_validation": len(tune_val[0]), "target_test": len(test[0])},
         "source_training": {"epochs": int(epochs), "best_epochs": best_epoch.tolist()},
         "source_validation": summarize(_scores(problem, trained, source_val)),
         "results": {}}
  out["results"]["direct"] = summarize(_scores(problem, trained, test))
  # Tuning starts from the source model; target only trains from scratch, on the source's
  # schedule.
  for name, init, train_conv, lr, max_epochs in (
      ("linear", trained, False, cfg.tune_learning_rate, cfg.tune_max_epochs),
      ("full", trained, True, cfg.tune_learning_rate, cfg.tune_max_epochs),
      ("target_only", start, True, cfg.learning_rate, cfg.max_epochs)):
    tuned, epochs, best_epoch = fit(problem, init, tune_fit, tune_val, lr, train_conv,
                                    max_epochs, shuffle)
    out["results"][name] = summarize(_scores(problem, tuned, test))
    out["results"][name]["epochs"] = int(epochs)
    out["results"][name]["best_epochs"] = best_epoch.tolist()
  # Share of the target test part's entries never seen in the source's training part.
  ids, mask = np.asarray(problem.ids), np.asarray(problem.mask)
  seen = np.zeros(max(int(ids.max()) + 1, 1), bool)
  seen[ids[source_fit[0]][mask[source_fit[0]]]] = True
  test_entries = ids[test[0]][mask[test[0]]]
  out["target_entries_unseen_at_source"] = float(np.mean(~seen[test_entries])) \
      if len(test_entries) else 0.0
  return out


# --------------------------------------------------------------------------------------
# The protocol.
# --------------------------------------------------------------------------------------


def _cpu_seconds() -> float:
  """User + system CPU time of this process (every thread)."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _too_few_examples(sites: np.ndarray, labels: np.ndarray, used: np.ndarray,
                      chosen: Sequence[str], cfg: TransferConfig):
  """Why the protocol cannot run on the `used` pairs of the `chosen` sites (a str), or the
  label classes to leave out, {class: {site: pairs}} (those with fewer than
  `min_class_pairs` at a site).

  A site needs `min_site_pairs` labelled pairs (before and after leaving classes out), and
  two classes must keep `min_class_pairs` at both sites: with one class there is nothing to
  learn (every F1 is 1), and a class at one site only can be neither learnt at the source
  nor tested at the target.
  """
  def site_counts(mask):
    return {s: int((mask & (sites == s)).sum()) for s in chosen}

  def small_sites(mask, after):
    small = {s: n for s, n in site_counts(mask).items() if n < cfg.min_site_pairs}
    if small:
      return (f"too few labelled pairs at site(s) {small}{after} (fewer than "
              f"config.eval.transfer.min_site_pairs={cfg.min_site_pairs}): too few to "
              "train at one site and test at the other.")
    return None

  why = small_sites(used, "")
  if why:
    return why
  by_class = {str(c): {s: int((used & (sites == s) & (labels == c)).sum()) for s in chosen}
              for c in np.unique(labels[used])}
  kept = [c for c, n in by_class.items() if min(n.values()) >= cfg.min_class_pairs]
  if len(kept) < 2:
    return (f"fewer than two label classes have at least config.eval.transfer."
            f"min_class_pairs={cfg.min_class_pairs} pairs at both sites (pairs by class and "
            f"site: {by_class}): " + ("one class leaves nothing to learn (every F1 would be "
                                      "1)." if len(kept) == 1 else
                                      "no class can be learnt at one site and tested at the "
                                      "other."))
  rare = {c: n for c, n in by_class.items() if c not in kept}
  why = small_sites(used & np.isin(labels, kept), " once the classes with too few pairs "
                    f"{sorted(rare)} are left out")
  return why or rare


def check_table(table, key: str, label: str, entry_concept: np.ndarray,
                entry_negated: np.ndarray, concept_ids=None) -> np.ndarray:
  """An embedder's rows for the lists' distinct entries as float32 [U, d]; ValueError naming
  the embedding, and the first bad entry, for another shape or a NaN / inf."""
  table = np.asarray(table)
  expected = len(entry_concept)
  if table.ndim != 2 or table.shape[0] != expected or table.shape[1] < 1:
    raise ValueError(f"transfer: embedding {key!r} ({label}) gave rows of shape "
                     f"{table.shape} for the lists' {expected} distinct entries; expected "
                     f"[{expected}, d] with d >= 1")
  if not (np.issubdtype(table.dtype, np.integer) or np.issubdtype(table.dtype, np.floating)):
    raise ValueError(f"transfer: embedding {key!r} ({label}) gave rows of dtype "
                     f"{table.dtype}; expected real numbers")
  table = table.astype(np.float32)
  bad = ~np.isfinite(table).all(axis=1)
  if bad.any():
    first = int(np.flatnonzero(bad)[0])
    concept = int(entry_concept[first])
    name = concept_ids[concept] if concept_ids is not None else f"row {concept}"
    raise ValueError(f"transfer: embedding {key!r} ({label}) has non-finite values (NaN or "
                     f"inf, also after the float32 cast) in {int(bad.sum())} of {expected} "
                     f"rows, first concept {name!s}"
                     f"{' (negated)' if entry_negated[first] else ''}; a classifier on them "
                     "would score noise")
  return table


def run_transfer(dataset, embedders: Mapping[str, Tuple[str, Embedder]],
                 cfg: TransferConfig, plot_path: Optional[str] = None) -> Dict:
  """The transfer protocol on `dataset`; see the module docstring.

  Args:
    dataset: a `line_jax.data.dataset.Dataset` (its `root` holds pairs.parquet, read for
      the site column).
    embedders: key ("teacher1", "teacher2", "line") -> (label, embed(concept indices,
      negated flags) -> rows). One-hot ids need none.
    cfg: the settings.
    plot_path: where to write the bar plot (None: no plot).

  Returns:
    The metrics dictionary (or {"skipped": why}: also when a site or the label classes have
    too few pairs, `min_site_pairs` / `min_class_pairs`).

  Raises:
    ValueError: an embedder gave rows of another shape, or NaN / inf values.
  """
  if not cfg.enabled:
    return {"skipped": "disabled (config.eval.transfer.enabled=False)."}
  if dataset.labels is None:
    return {"skipped": "the dataset has no `label` column."}
  sites, column = resolve_sites(dataset.root, dataset.num_pairs, cfg)
  if sites is None:
    return {"skipped": column + "."}
  started, cpu_started = time.time(), _cpu_seconds()
  notes: List[str] = []
  raw = np.array(["" if v is None else str(v) for v in dataset.labels], object)
  counts = {s: int(n) for s, n in zip(*np.unique(sites[(sites != "") & (raw != "")],
                                                 return_counts=True))}
  if cfg.sites:
    missing = [s for s in cfg.sites if s not in counts]
    if missing:
      return {"skipped": f"site(s) {missing} not among the labelled pairs' sites "
                         f"{sorted(counts)} (column {column!r})."}
    chosen = list(cfg.sites)
  else:
    chosen = [s for s, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:2]]
  if len(chosen) < 2:
    return {"skipped": f"fewer than two sites among the labelled pairs ({sorted(counts)}, "
                       f"column {column!r})."}
  used = np.isin(sites, chosen) & (raw != "")
  too_few = _too_few_examples(sites, raw, used, chosen, cfg)
  if isinstance(too_few, str):
    return {"skipped": too_few}
  left_out = int(dataset.num_pairs - used.sum())
  if left_out:
    others = {s: n for s, n in counts.items() if s not in chosen}
    notes.append(f"{left_out} pairs left out: {int((sites == '').sum())} without a site "
                 f"(empty {column!r}, or not matching site_pattern), "
                 f"{int(((raw == '') & (sites != '')).sum())} without a label, the rest at "
                 f"other sites {others}.")
  rare_classes = too_few
  if rare_classes:
    rare = used & np.isin(raw, list(rare_classes))
    used &= ~rare
    notes.append(f"{int(rare.sum())} pairs of label classes with fewer than "
                 f"{cfg.min_class_pairs} pairs at one of the sites left out "
                 f"(config.eval.transfer.min_class_pairs; pairs by site: {rare_classes}).")
  pair_idx = np.flatnonzero(used)
  names, y = np.unique(raw[pair_idx].astype(str), return_inverse=True)
  site_of = sites[pair_idx]
  rows = {s: np.flatnonzero(site_of == s) for s in chosen}

  offsets, flat, negated = list_segments(dataset, pair_idx)
  variants = {"all_concepts": None}
  grouped = label_is_group(raw[pair_idx], dataset.groups)
  if cfg.without_branch_roots == "on" or (cfg.without_branch_roots == "auto" and grouped):
    variants["without_branch_roots"] = branch_root_concepts(dataset)

  out = {"site_column": column, "site_pattern": cfg.site_pattern, "sites": chosen,
         "site_counts": {s: int(len(rows[s])) for s in chosen},
         "num_pairs": int(len(pair_idx)), "classes": names.tolist(),
         "class_counts": {s: {str(n): int(c) for n, c in zip(
             names, np.bincount(y[rows[s]], minlength=len(names)))} for s in chosen},
         "label_is_concept_group": bool(grouped), "settings": dataclasses.asdict(cfg),
         "left_out_classes": rare_classes,
         "embeddings": {}, "notes": notes, "variants": {}}
  directions = [(chosen[0], chosen[1]), (chosen[1], chosen[0])]
  keys = [k for k in cfg.embeddings if k == "onehot" or k in embedders]
  absent = [k for k in cfg.embeddings if k not in keys]
  if absent:
    notes.append(f"embeddings {absent} not available here; left out.")
  bar = tqdm(total=len(variants) * len(keys) * len(directions), desc="transfer", unit="run")

  # Every variant and embedding gets the same shapes (lists padded to one width, tables
  # to one row count, one packing capacity), so that the second variant reuses every
  # compiled function of the first; padded slots are masked and padded rows never read.
  packed = {v: pack_lists(offsets, flat, negated, drop) for v, drop in variants.items()}
  width = max(lists.ids.shape[1] for lists, _ in packed.values())
  rows_padded = max(int(np.ceil(max(1, len(lists.entry_concept)) / VOCAB_ROUND))
                    * VOCAB_ROUND for lists, _ in packed.values())
  capacity = max(packing_capacity(lists.mask.sum(axis=1), cfg.batch_size, width)
                 for lists, _ in packed.values())

  def padded(a: np.ndarray) -> np.ndarray:
    return np.pad(a, ((0, 0), (0, width - a.shape[1])))

  for variant, drop in variants.items():
    lists, removed = packed[variant]
    info = {"entries_removed": removed, "distinct_entries": int(len(lists.entry_concept)),
            "max_list_length": int(lists.ids.shape[1]),
            "empty_lists": int((~lists.mask.any(axis=1)).sum()), "directions": {}}
    if drop is not None:
      info["branch_root_concepts"] = int(np.asarray(drop).sum())
      owner = np.repeat(np.arange(len(pair_idx)), np.diff(offsets))
      info["pairs_with_a_root"] = int(len(np.unique(owner[np.asarray(drop)[flat]])))
    tables: Dict[str, np.ndarray] = {}
    for key in keys:
      if key == "onehot":
        label, table = ONEHOT_LABEL, np.zeros((1, 1), np.float32)
        vocab = rows_padded
      else:
        label, embed = embedders[key]
        table = check_table(embed(lists.entry_concept, lists.entry_negated), key, label,
                            lists.entry_concept, lists.entry_negated,
                            getattr(dataset, "concept_ids", None))
        table = np.pad(table, ((0, rows_padded - len(table)), (0, 0)))
        vocab = 0
      out["embeddings"][key] = label
      same_as = next((k for k, t in tables.items()
                      if t.shape == table.shape and np.array_equal(t, table)), None)
      tables[key] = table
      for a, b in directions:
        direction = f"{a} → {b}"
        entry = info["directions"].setdefault(direction, {})
        if same_as is not None and same_as in entry:
          entry[key] = dict(entry[same_as], identical_to=same_as)
        else:
          t0 = time.time()
          problem = Problem(jnp.asarray(padded(lists.ids)), jnp.asarray(padded(lists.mask)),
                            jnp.asarray(y), jnp.asarray(table), vocab, len(names), cfg,
                            capacity)
          entry[key] = transfer_direction(
              problem, rows[a], rows[b],
              lambda code, s, a=a: np.random.default_rng(
                  [cfg.seed, code, s, chosen.index(a)]))
          entry[key]["seconds"] = round(time.time() - t0, 2)
          logging.info("transfer %s %s %s: direct F1 %.3f, linear %.3f, full %.3f, target "
                       "only %.3f (%.1fs)", variant, direction, key,
                       *[entry[key]["results"][s]["f1"] for s in STRATEGIES],
                       time.time() - t0)
        bar.update(1)
      if same_as is not None:
        notes.append(f"{key}: the embedding table is identical to {same_as}'s (the same "
                     "encoder), so its results are copied, not recomputed.")
    out["variants"][variant] = info
  bar.close()
  out["seconds"] = round(time.time() - started, 2)
  out["cpu_seconds"] = round(_cpu_seconds() - cpu_started, 2)
  out["load_average"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") \
      else None
  if plot_path:
    plot_transfer(out, plot_path)
    out["plot"] = os.path.basename(plot_path)
  return out


# --------------------------------------------------------------------------------------
# Plot and report section.
# --------------------------------------------------------------------------------------


def plot_transfer(result: Mapping, path: str) -> str:
  """Macro F1 bars (mean ± std over seeds): one panel per variant and direction."""
  panels = [(v, d, res) for v, info in result["variants"].items()
            for d, res in info["directions"].items()]
  cols = 2
  rows = max(1, int(np.ceil(len(panels) / cols)))
  fig = Figure(figsize=(6.0 * cols, 3.6 * rows))
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
  FigureCanvasAgg(fig)
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
