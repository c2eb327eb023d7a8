"""Host-side batches in static shapes: pairs, their concepts' sampled graph, loss index sets.

A global batch of B pairs is split into S shards (one per device); each shard is a complete,
independent unit of work with its own receivers and graph, so the device step needs no
communication except the all-gather of projected texts for in-batch negatives. Arrays carry a
leading shard axis [S, ...].

Per shard (b = B / S pairs):
  text [b, d_t], rho [b], pair_mask [b]
  occ_slot [b, M], occ_mask [b, M]   receiver slot of each concept occurrence of each pair
  receivers: U positive slots then V negated slots (negated slot v is receiver U + v)
  neg_pos_slot [V], neg_weight [V]   the positive receiver paired with negated receiver U + v,
                                     and how many negated mentions it has in the shard
  rel_head / rel_tail / rel_corrupt [Rs], rel_mask [Rs]   relational-loss triplets
  graph: jraph.GraphsTuple over the U + V receivers (line_jax.graph layout)
Capacities U and V are the largest any b pairs of the dataset can need (sum of the b longest
lists), so no batch ever overflows and one compiled step serves them all.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from typing import Iterator, Optional

import numpy as np

from line_jax import graph as graph_lib
from line_jax.data.dataset import Dataset


def _round_up(x: int, multiple: int = 8) -> int:
  return max(multiple, -(-int(x) // multiple) * multiple)


@dataclasses.dataclass(frozen=True)
class BatchShapes:
  batch_size: int        # global B
  num_shards: int        # S
  max_concepts: int      # M (includes the slot for a recovered concept)
  positive_slots: int    # U per shard
  negated_slots: int     # V per shard
  relational_edges: int  # Rs per shard
  num_types: int         # K
  fanout: int            # F

  @property
  def pairs_per_shard(self) -> int:
    return self.batch_size // self.num_shards

  @property
  def receivers(self) -> int:
    return self.positive_slots + self.negated_slots


class PairLists:
  """The concept occurrences of every pair, truncated to M - 1, plus one recovered concept."""

  def __init__(self, dataset: Dataset, max_concepts_per_pair: int):
    lengths = np.diff(dataset.concept_offsets)
    cap = int(min(max_concepts_per_pair, lengths.max() if len(lengths) else 1))
    self.truncated = int((lengths > cap).sum())
    if self.truncated:
      logging.warning("%d pairs have more than %d concepts; their lists are truncated to %d "
                      "(raise data.max_concepts_per_pair to keep them whole)",
                      self.truncated, cap, cap)
    self.dataset = dataset
    self.cap = cap
    self.lengths = np.minimum(lengths, cap)
    neg_counts = np.add.reduceat(dataset.negated_flat.astype(np.int64),
                                 dataset.concept_offsets[:-1]) if len(lengths) else lengths
    neg_counts = np.where(lengths > 0, neg_counts, 0)
    self.negated_counts = np.minimum(neg_counts, self.lengths)
    self.added = np.full(dataset.num_pairs, -1, np.int32)   # stage 2: recovered concept

  @property
  def max_concepts(self) -> int:
    return self.cap + 1

  def concepts(self, i: int):
    s = self.dataset.concept_offsets[i]
    idx = self.dataset.concept_flat[s:s + self.lengths[i]]
    neg = self.dataset.negated_flat[s:s + self.lengths[i]]
    if self.added[i] >= 0:
      idx = np.append(idx, self.added[i])
      neg = np.append(neg, False)
    return idx, neg


def batch_shapes(lists: PairLists, batch_size: int, num_shards: int, num_types: int,
                 fanout: int, relational_edges: int, max_nodes: int = 0) -> BatchShapes:
  if batch_size % num_shards:
    raise ValueError(f"train.batch_size={batch_size} must be a multiple of the number of "
                     f"devices ({num_shards})")
  b = batch_size // num_shards
  rs = -(-relational_edges // num_shards)
  longest = np.sort(lists.lengths + 1)[::-1][:b].sum()
  most_negated = np.sort(lists.negated_counts)[::-1][:b].sum()
  u = _round_up(longest + 3 * rs)
  v = _round_up(max(1, most_negated))
  if max_nodes and u + v > max_nodes:
    raise ValueError(f"a batch shard may need {u + v} receivers; graph.max_nodes={max_nodes}"
                     " is smaller (lower the batch size or raise graph.max_nodes)")
  return BatchShapes(batch_size, num_shards, lists.max_concepts, u, v, rs, num_types, fanout)


class BatchBuilder:
  """Builds the arrays of one global batch from pair indices (deterministic in `step`)."""

  def __init__(self, lists: PairLists, table: graph_lib.NeighbourTable, text: np.ndarray,
               shapes: BatchShapes, seed: int):
    self.lists, self.table, self.text, self.shapes, self.seed = lists, table, text, shapes, seed
    self.num_concepts = lists.dataset.num_concepts

  def _relational(self, positives: np.ndarray, step: int):
    """Known edges (head from the batch, tail a neighbour) and a corrupted tail for each."""
    n = self.shapes.relational_edges * self.shapes.num_shards
    cand = positives[self.table.has_neighbours(positives)] if len(positives) else positives
    if n == 0 or len(cand) == 0:
      return np.zeros((0, 3), np.int64)
    slot = np.arange(n)
    head = cand[np.minimum((graph_lib.hash_uniform(self.seed, step, slot, 1) * len(cand))
                           .astype(np.int64), len(cand) - 1)]
    tail = self.table.any_neighbour(head, graph_lib.hash_uniform(self.seed, step, slot, 2))
    corrupt = np.minimum((graph_lib.hash_uniform(self.seed, step, slot, 3)
                          * self.num_concepts).astype(np.int64), self.num_concepts - 1)
    ok = (corrupt != head) & (corrupt != tail) & ~self.table.contains(head, corrupt)
    return np.stack([head, tail, corrupt], 1)[ok]

  def build(self, pair_idx: np.ndarray, step: int) -> dict:
    sh = self.shapes
    b, m, u, v, rs = (sh.pairs_per_shard, sh.max_concepts, sh.positive_slots,
                      sh.negated_slots, sh.relational_edges)
    s_count = sh.num_shards
    pair_idx = np.asarray(pair_idx, np.int64)
    padded = np.full(sh.batch_size, -1, np.int64)
    padded[:len(pair_idx)] = pair_idx
    occurrences = [self.lists.concepts(i) if i >= 0 else
                   (np.zeros(0, np.int32), np.zeros(0, bool)) for i in padded]
    all_pos = np.unique(np.concatenate([o[0] for o in occurrences] + [np.zeros(0, np.int32)]))
    triplets = self._relational(all_pos.astype(np.int64), step)

    d_t = self.text.shape[1]
    out = {
        "text": np.zeros((s_count, b, d_t), self.text.dtype),
        "rho": np.zeros((s_count, b), np.float32),
        "pair_mask": np.zeros((s_count, b), bool),
        "occ_slot": np.zeros((s_count, b, m), np.int32),
        "occ_mask": np.zeros((s_count, b, m), bool),
        "neg_pos_slot": np.zeros((s_count, v), np.int32),
        "neg_weight": np.zeros((s_count, v), np.float32),
        "rel_head": np.zeros((s_count, rs), np.int32),
        "rel_tail": np.zeros((s_count, rs), np.int32),
        "rel_corrupt": np.zeros((s_count, rs), np.int32),
        "rel_mask": np.zeros((s_count, rs), bool),
    }
    rows, negs, nbr_ids, nbr_masks = [], [], [], []
    valid = padded >= 0
    if valid.any():
      out_text = np.asarray(self.text[np.sort(padded[valid])])
      order = np.argsort(np.argsort(padded[valid]))
      gathered = out_text[order]
    for s in range(s_count):
      sl = slice(s * b, (s + 1) * b)
      shard_pairs = padded[sl]
      shard_trip = triplets[s::s_count][:rs]
      pos_parts = [occurrences[s * b + i][0] for i in range(b)]
      pos = np.unique(np.concatenate(pos_parts + [shard_trip.reshape(-1).astype(np.int32),
                                                  np.zeros(0, np.int32)]))
      neg_parts = [occurrences[s * b + i][0][occurrences[s * b + i][1]] for i in range(b)]
      negc, neg_count = np.unique(np.concatenate(neg_parts + [np.zeros(0, np.int32)]),
                                  return_counts=True)
      assert len(pos) <= u and len(negc) <= v, (len(pos), u, len(negc), v)
      for i in range(b):
        if shard_pairs[i] < 0:
          continue
        idx, neg = occurrences[s * b + i]
        slots = np.where(neg, u + np.searchsorted(negc, idx), np.searchsorted(pos, idx))
        out["occ_slot"][s, i, :len(idx)] = slots
        out["occ_mask"][s, i, :len(idx)] = True
        out["rho"][s, i] = self.lists.dataset.rho[shard_pairs[i]]
        out["pair_mask"][s, i] = True
      first = s * b
      n_valid = int(valid[sl].sum())
      if n_valid:
        start = int(valid[:first].sum())
        out["text"][s, np.flatnonzero(valid[sl])] = gathered[start:start + n_valid]
      out["neg_pos_slot"][s, :len(negc)] = np.searchsorted(pos, negc)
      out["neg_weight"][s, :len(negc)] = neg_count
      if len(shard_trip):
        n_t = len(shard_trip)
        out["rel_head"][s, :n_t] = np.searchsorted(pos, shard_trip[:, 0])
        out["rel_tail"][s, :n_t] = np.searchsorted(pos, shard_trip[:, 1])
        out["rel_corrupt"][s, :n_t] = np.searchsorted(pos, shard_trip[:, 2])
        out["rel_mask"][s, :n_t] = True
      recv = np.zeros(u + v, np.int32)
      recv[:len(pos)] = pos
      recv[u:u + len(negc)] = negc
      recv_neg = np.zeros(u + v, bool)
      recv_neg[u:] = True
      ids, mask = graph_lib.sample_neighbours(self.table, recv.astype(np.int64), sh.fanout,
                                              self.seed, step)
      real = np.zeros(u + v, bool)
      real[:len(pos)] = True
      real[u:u + len(negc)] = True
      mask &= real[:, None, None]
      rows.append(recv)
      negs.append(recv_neg)
      nbr_ids.append(ids)
      nbr_masks.append(mask)
    graphs = [graph_lib.build_graph(r, n, i, k) for r, n, i, k in
              zip(rows, negs, nbr_ids, nbr_masks)]
    out["graph"] = _stack_graphs(graphs)
    return out


def _stack_graphs(graphs):
  import jax
  return jax.tree.map(lambda *xs: np.stack(xs), *graphs)


def epoch_order(train_idx: np.ndarray, seed: int, stage: int, epoch: int) -> np.ndarray:
  """The epoch's pair order: a permutation fixed by (seed, stage, epoch)."""
  return np.random.default_rng([seed, stage, epoch]).permutation(train_idx)


def iterate_batches(builder: BatchBuilder, order: np.ndarray, first_batch: int,
                    step0: int, prefetch: int) -> Iterator[tuple[int, dict]]:
  """Yields (batch index, batch) from `first_batch` on; a background thread builds ahead."""
  bsz = builder.shapes.batch_size
  num_batches = -(-len(order) // bsz)

  def make(bi):
    return builder.build(order[bi * bsz:(bi + 1) * bsz], step0 + bi - first_batch)

  if prefetch <= 0:
    for bi in range(first_batch, num_batches):
      yield bi, make(bi)
    return
  q: "queue.Queue[Optional[tuple]]" = queue.Queue(maxsize=prefetch)
  stop = threading.Event()

  def worker():
    try:
      for bi in range(first_batch, num_batches):
        if stop.is_set():
          return
        q.put((bi, make(bi)))
    except BaseException as e:  # surfaced in the consumer
      q.put(("error", e))
      return
    q.put(None)

  thread = threading.Thread(target=worker, daemon=True)
  thread.start()
  try:
    while True:
      item = q.get()
      if item is None:
        return
      if item[0] == "error":
        raise item[1]
      yield item
  finally:
    stop.set()
    while thread.is_alive():
      try:
        q.get_nowait()
      except queue.Empty:
        thread.join(timeout=0.05)
