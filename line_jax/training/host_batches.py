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
  segments [b, S - 1, d_t], segment_mask [b, S - 1]   (model.text_vectors="segments") the
                                     teacher-1 rows of each pair's first S - 1 clauses
                                     (the whole text, `text`, is its segment 0)
  graph: jraph.GraphsTuple over the U + V receivers (line_jax.model.graph layout)
Capacities (U, V and the graph's edge count) are planned exactly for every batch of a
stage before it starts (`line_jax.training.device_batches.plan_capacities`), so one compiled step
serves the stage; a batch that still needed more would grow them here, with a warning, at the
cost of one more compilation.

This builder is the reference: the training step builds the same batches, bit for bit, on
the devices (`line_jax.training.device_batches`; config train.batch_builder).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
from typing import Any, Callable, Iterator, Optional

import jax
import numpy as np

from line_jax.cache import store as emb_lib
from line_jax.data import heldout_terms
from line_jax.model import graph as graph_lib
from line_jax.search import topk as search_lib
from line_jax.data.dataset import Dataset, check_max_concepts_per_pair
from line_jax.util.shapes import round_up


GROWTH = 1.25   # capacity factor when a batch overflows the planned capacities


@dataclasses.dataclass(frozen=True)
class BatchShapes:
  batch_size: int        # global B
  num_shards: int        # S
  max_concepts: int      # M (includes the slot for a recovered concept)
  positive_slots: int    # U per shard
  negated_slots: int     # V per shard
  edges: int             # neighbour-edge capacity of a shard's graph
  relational_edges: int  # Rs per shard
  num_types: int         # K
  fanout: int            # F
  edge_block: int = 1    # edge slots per block (line_jax.model.graph.build_graph)

  @property
  def pairs_per_shard(self) -> int:
    return self.batch_size // self.num_shards

  @property
  def receivers(self) -> int:
    return self.positive_slots + self.negated_slots


class PairLists:
  """The concept occurrences of every pair, truncated to M - 1, plus one recovered concept."""

  def __init__(self, dataset: Dataset, max_concepts_per_pair: int):
    check_max_concepts_per_pair(max_concepts_per_pair)
    lengths = np.diff(dataset.concept_offsets)
    cap = int(min(max_concepts_per_pair, lengths.max() if len(lengths) else 1))
    self.truncated = int((lengths > cap).sum())
    if self.truncated:
      logging.warning("%d pairs have more than %d concepts (the longest %d); their lists are "
                      "truncated to %d, leaving out %d concept mentions (raise "
                      "data.max_concepts_per_pair to keep them whole)", self.truncated, cap,
                      int(lengths.max()), cap, int(np.maximum(lengths - cap, 0).sum()))
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

  def padded(self, pair_idx: np.ndarray):
    """The lists of `pair_idx` as [P, M] arrays: (concept index, negated, real slot); a
    recovered concept follows the extracted ones, as in `concepts`."""
    pair_idx = np.asarray(pair_idx, np.int64)
    lengths = self.lengths[pair_idx]
    real = np.arange(self.max_concepts)[None, :] < lengths[:, None]
    flat = np.where(real, self.dataset.concept_offsets[pair_idx][:, None]
                    + np.arange(self.max_concepts)[None, :], 0)
    if len(self.dataset.concept_flat):
      idx = np.where(real, self.dataset.concept_flat[flat], 0).astype(np.int64)
      neg = real & self.dataset.negated_flat[flat]
    else:
      idx, neg = np.zeros(real.shape, np.int64), np.zeros(real.shape, bool)
    added = self.added[pair_idx]
    has = np.flatnonzero(added >= 0)
    idx[has, lengths[has]] = added[has]
    real[has, lengths[has]] = True
    return idx, neg, real

  def concepts(self, i: int):
    s = self.dataset.concept_offsets[i]
    idx = self.dataset.concept_flat[s:s + self.lengths[i]]
    neg = self.dataset.negated_flat[s:s + self.lengths[i]]
    if self.added[i] >= 0:
      idx = np.append(idx, self.added[i])
      neg = np.append(neg, False)
    return idx, neg


class PairSegments:
  """Each pair's clause rows (`line_jax.cache.segments.SegmentEmbeddings`) in a
  model.text_vectors="segments" run: at most `max_segments` - 1 per pair (the first ones;
  the whole text is segment 0), the others left out with a count in the log."""

  def __init__(self, segments, max_segments: int, pair_idx: Optional[np.ndarray] = None):
    check_max_segments_per_pair(max_segments)
    self.rows = segments.rows
    counts = segments.counts
    self.slots = int(max_segments) - 1
    self.starts = segments.offsets[:-1].astype(np.int64)
    self.lengths = np.minimum(counts, self.slots)
    seen = counts if pair_idx is None else counts[np.asarray(pair_idx, np.int64)]
    self.truncated = int((seen > self.slots).sum())
    if self.truncated:
      logging.warning("%d of %d pairs have more than %d clauses (the most %d); %d clauses are "
                      "left out of training (raise data.max_segments_per_pair=%d to keep "
                      "them)", self.truncated, len(seen), self.slots, int(seen.max()),
                      int(np.maximum(seen - self.slots, 0).sum()), max_segments)

  def padded(self, pair_idx: np.ndarray):
    """(rows [n, S - 1, d_t] as stored, mask [n, S - 1]) of `pair_idx` (-1: no clause)."""
    pair_idx = np.asarray(pair_idx, np.int64)
    valid = pair_idx >= 0
    lengths = np.where(valid, self.lengths[np.maximum(pair_idx, 0)], 0)
    mask = np.arange(self.slots)[None, :] < lengths[:, None]
    out = np.zeros((len(pair_idx), self.slots, self.rows.shape[1]), self.rows.dtype)
    if mask.any():
      flat = (self.starts[np.maximum(pair_idx, 0)][:, None] + np.arange(self.slots))[mask]
      out[mask] = emb_lib.gather_rows(self.rows, flat)
    return out, mask


def check_max_segments_per_pair(value) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
    raise ValueError(f"data.max_segments_per_pair={value!r} must be an integer >= 2 (the "
                     "whole text and at least one clause)")


def batch_shapes(lists: PairLists, batch_size: int, num_shards: int, num_types: int,
                 fanout: int, relational_edges: int, edge_block: int = 1) -> BatchShapes:
  """Starting capacities; `device_batches.plan_capacities` sets them for a stage."""
  if edge_block < 1:
    raise ValueError(f"graph.edge_block={edge_block} must be at least 1")
  if batch_size % num_shards:
    raise ValueError(f"train.batch_size={batch_size} must be a multiple of the number of "
                     f"devices ({num_shards})")
  b = batch_size // num_shards
  rs = -(-relational_edges // num_shards)
  u = round_up(b * 2 + 3 * rs)
  v = round_up(max(1, b // 4))
  return BatchShapes(batch_size, num_shards, lists.max_concepts, u, v,
                     round_up(u * fanout, edge_block), rs, num_types, fanout, edge_block)


def hard_neighbour_table(concepts: np.ndarray, groups: np.ndarray, rows: np.ndarray,
                         pool: int, memory_budget_mb: float = 1024) -> np.ndarray:
  """[num_concepts, pool] int32: for each of `rows`, the `pool` concepts of highest cosine
  under `concepts` (a teacher's dictionary rows) outside its own group (`groups`: the term
  of every concept, so a term's synonym entries are never each other's negatives); -1 in
  every other row, and where fewer than `pool` other-term concepts exist.

  Searched with `pool` + the largest group's size results per row, which always holds
  `pool` other-term concepts when the dictionary has them."""
  n = len(concepts)
  groups = np.asarray(groups)
  rows = np.unique(np.asarray(rows, np.int64))
  out = np.full((n, pool), -1, np.int32)
  if not len(rows) or pool < 1:
    return out
  largest = int(np.bincount(np.unique(groups, return_inverse=True)[1]).max())
  k = min(n, pool + largest)
  _, found = search_lib.cosine_top_k(np.asarray(concepts)[rows], concepts, k,
                                     memory_budget_mb=memory_budget_mb)
  other = groups[found] != groups[rows][:, None]
  # Stable order: the first `pool` other-term results per row, best first.
  rank = np.cumsum(other, axis=1) - 1
  keep = other & (rank < pool)
  r, c = np.nonzero(keep)
  out[rows[r], rank[r, c]] = found[r, c]
  return out


class BatchBuilder:
  """Builds the arrays of one global batch from pair indices (deterministic in `step`)."""

  def __init__(self, lists: PairLists, table: graph_lib.NeighbourTable, text: np.ndarray,
               shapes: BatchShapes, seed: int, names: Optional[np.ndarray] = None,
               groups: Optional[np.ndarray] = None, random_concepts: int = 0,
               hard: Optional[np.ndarray] = None, hard_negatives: int = 0,
               segments: Optional[PairSegments] = None):
    """`names`: teacher 1's embedding of every concept's name ([num_concepts, d_t]); when
    given, each batch carries `name_text` [S, U, d_t], the name row of every positive
    receiver (zeros in padding slots), for the name term of the loss. `groups`: the term
    of every concept ([num_concepts] ints, `terms.Groups.group_of`); when given, each batch
    carries `receiver_group` [S, U] (-1 - slot in padding slots, matching nothing).
    `random_concepts`: concepts drawn uniformly from the dictionary per shard and step,
    added as positive receivers that no pair lists (more negatives for the per-concept and
    name terms, and more of the dictionary reached by the name term). `hard`: each
    concept's nearest other-term concepts ([num_concepts, pool] ints, -1 where none:
    `hard_neighbour_table`); with `hard_negatives` = k > 0, k of them drawn per listed
    concept per step join the shard's receivers the same way (negatives a concept is
    easily confused with, which in-batch and uniform draws seldom are). `segments`: each
    pair's clause rows (`PairSegments`), carried as `segments` / `segment_mask`."""
    self.lists, self.table, self.text, self.shapes, self.seed = lists, table, text, shapes, seed
    self.segments = segments
    self.names = names
    self.groups = None if groups is None else np.asarray(groups, np.int32)
    self.random_concepts = int(random_concepts)
    self.hard = None if hard is None else np.asarray(hard, np.int32)
    self.hard_negatives = int(hard_negatives) if hard is not None else 0
    self.num_concepts = lists.dataset.num_concepts
    # Held-out terms (data.heldout_terms) are never drawn as random or corrupted concepts.
    self.trainable = ~heldout_terms.held_mask(lists.dataset)
    self.growths = 0   # batches that outgrew the capacities (each one more compilation)

  def _relational(self, positives: np.ndarray, step: int):
    """Known edges (head from the batch, tail a neighbour) and a corrupted tail for each."""
    n = self.shapes.relational_edges * self.shapes.num_shards
    cand = positives[self.table.has_neighbours(positives)] if len(positives) else positives
    if n == 0 or len(cand) == 0:
      return np.zeros((0, 3), np.int64)
    slot = np.arange(n)
    word = lambda stream: graph_lib.hash_u32(self.seed, step, slot, stream)
    head = cand[graph_lib.draw_below(word(graph_lib.STREAM_HEAD), len(cand))]
    tail = self.table.any_neighbour(head, word(graph_lib.STREAM_TAIL))
    corrupt = graph_lib.draw_below(word(graph_lib.STREAM_CORRUPT), self.num_concepts)
    ok = ((corrupt != head) & (corrupt != tail) & ~self.table.contains(head, corrupt)
          & self.trainable[corrupt])
    return np.stack([head, tail, corrupt], 1)[ok]

  def _plan(self, pair_idx: np.ndarray, step: int):
    """Per shard: receivers, sampled neighbours, triplets; and what capacity they need."""
    sh = self.shapes
    b, s_count = sh.pairs_per_shard, sh.num_shards
    padded = np.full(sh.batch_size, -1, np.int64)
    padded[:len(pair_idx)] = np.asarray(pair_idx, np.int64)
    occurrences = [self.lists.concepts(i) if i >= 0 else
                   (np.zeros(0, np.int32), np.zeros(0, bool)) for i in padded]
    all_pos = np.unique(np.concatenate([o[0] for o in occurrences] + [np.zeros(0, np.int32)]))
    triplets = self._relational(all_pos.astype(np.int64), step)
    shards = []
    need = np.zeros(3, np.int64)   # positive receivers, negated receivers, neighbour edges
    for s in range(s_count):
      occ = occurrences[s * b:(s + 1) * b]
      trip = triplets[s::s_count][:sh.relational_edges]
      drawn = graph_lib.draw_below(graph_lib.hash_u32(
          self.seed, step, s, np.arange(self.random_concepts), graph_lib.STREAM_RANDOM),
          self.num_concepts).astype(np.int32)
      drawn = drawn[self.trainable[drawn]]
      pos = np.unique(np.concatenate([o[0] for o in occ] + [trip.reshape(-1).astype(np.int32),
                                                           drawn, np.zeros(0, np.int32)]))
      if self.hard_negatives:
        listed = np.unique(np.concatenate([o[0][~o[1]] for o in occ] +
                                          [np.zeros(0, np.int32)]))
        pos = np.union1d(pos, self._hard_draws(listed, step, s))
      negc, neg_count = np.unique(np.concatenate([o[0][o[1]] for o in occ] +
                                                 [np.zeros(0, np.int32)]), return_counts=True)
      recv = np.concatenate([pos, negc]).astype(np.int64)
      ids, mask = graph_lib.sample_neighbours(self.table, recv, sh.fanout, self.seed, step)
      need = np.maximum(need, [len(pos), len(negc),
                               graph_lib.num_edges(mask, sh.edge_block)])
      shards.append(dict(pairs=padded[s * b:(s + 1) * b], occ=occ, trip=trip, pos=pos,
                         negc=negc, neg_count=neg_count, ids=ids, mask=mask))
    return padded, shards, need

  def _hard_draws(self, listed: np.ndarray, step: int, shard: int) -> np.ndarray:
    """`hard_negatives` entries of each listed concept's pool (with replacement, keyed by
    seed, step, shard, concept and draw: deterministic on resumption)."""
    k, pool = self.hard_negatives, self.hard.shape[1]
    if not len(listed) or not pool:
      return np.zeros(0, np.int32)
    col = graph_lib.draw_below(graph_lib.hash_u32(
        self.seed, step, shard, listed[:, None].astype(np.int64), np.arange(k)[None, :],
        graph_lib.STREAM_HARD), pool)
    picked = self.hard[listed[:, None], col]
    return picked[picked >= 0].astype(np.int32)

  def _set_capacity(self, need: np.ndarray, margin: float, keep: bool) -> None:
    """Capacities = margin x `need` (positive, negated receivers, neighbour edges); with
    `keep`, a capacity that already covers its need is left as it is."""
    sh = self.shapes
    fitted = (round_up(need[0] * margin), round_up(max(1, need[1]) * margin),
              round_up(need[2] * margin, math.lcm(256, sh.edge_block)))
    current = (sh.positive_slots, sh.negated_slots, sh.edges)
    u, v, e = (c if keep and c >= n else f for c, n, f in zip(current, need, fitted))
    self.shapes = dataclasses.replace(sh, positive_slots=u, negated_slots=v, edges=e)

  def build(self, pair_idx: np.ndarray, step: int) -> dict:
    padded, shards, need = self._plan(pair_idx, step)
    self._fit_capacity(need, step)
    out = self._empty_batch(padded)
    valid = padded >= 0
    gathered = self._gather_text(padded, valid)
    b = self.shapes.pairs_per_shard
    graphs = []
    for s, plan in enumerate(shards):
      self._fill_pairs(out, s, plan)
      n_before = int(valid[:s * b].sum())
      here = np.flatnonzero(valid[s * b:(s + 1) * b])
      out["text"][s, here] = gathered[n_before:n_before + len(here)]
      self._fill_receivers(out, s, plan)
      graphs.append(self._shard_graph(plan))
    out["graph"] = _stack_graphs(graphs)
    return out

  def _fit_capacity(self, need: np.ndarray, step: int) -> None:
    """Grows the capacities (with a warning) when the batch needs more than planned."""
    sh = self.shapes
    if (need[0] > sh.positive_slots or need[1] > sh.negated_slots
        or need[2] > sh.edges):
      self._set_capacity(need, GROWTH, keep=True)
      self.growths += 1
      logging.warning("step %d needs more graph capacity than the sampled estimate (%s); "
                      "grown to %s: the train step compiles once more", step, need.tolist(),
                      self.shapes)

  def _empty_batch(self, padded: np.ndarray) -> dict:
    """The batch's arrays at the current capacities, zero (or -1 - slot for groups), with
    the segment rows of `padded` already in place."""
    sh = self.shapes
    b, m, u, v, rs = (sh.pairs_per_shard, sh.max_concepts, sh.positive_slots,
                      sh.negated_slots, sh.relational_edges)
    s_count = sh.num_shards
    d_t = self.text.shape[1]
    out = {
        "text": np.zeros((s_count, b, d_t), self.text.dtype),
        "rho": np.zeros((s_count, b), np.float32),
        "pair_mask": np.zeros((s_count, b), bool),
        "occ_slot": np.zeros((s_count, b, m), np.int32),
        "occ_mask": np.zeros((s_count, b, m), bool),
        "receiver_real": np.zeros((s_count, u + v), bool),
        "neg_pos_slot": np.zeros((s_count, v), np.int32),
        "neg_weight": np.zeros((s_count, v), np.float32),
        "rel_head": np.zeros((s_count, rs), np.int32),
        "rel_tail": np.zeros((s_count, rs), np.int32),
        "rel_corrupt": np.zeros((s_count, rs), np.int32),
        "rel_mask": np.zeros((s_count, rs), bool),
    }
    if self.names is not None:
      out["name_text"] = np.zeros((s_count, u, self.names.shape[1]), self.names.dtype)
    if self.groups is not None:
      out["receiver_group"] = np.tile(-1 - np.arange(u, dtype=np.int32), (s_count, 1))
    if self.segments is not None:
      rows, mask = self.segments.padded(padded)
      out["segments"] = rows.reshape(s_count, b, *rows.shape[1:])
      out["segment_mask"] = mask.reshape(s_count, b, -1)
    return out

  def _gather_text(self, padded: np.ndarray, valid: np.ndarray) -> Optional[np.ndarray]:
    """The text rows of the real pairs of `padded`, in batch order (read in row order)."""
    if not valid.any():
      return None
    rows_sorted = np.sort(padded[valid])
    return emb_lib.gather_rows(self.text, rows_sorted)[np.searchsorted(rows_sorted,
                                                                       padded[valid])]

  def _fill_pairs(self, out: dict, s: int, plan: dict) -> None:
    """Shard `s`'s per-pair arrays: receiver slots of each occurrence, rho, pair mask."""
    u = self.shapes.positive_slots
    pos, negc = plan["pos"], plan["negc"]
    for i, pair in enumerate(plan["pairs"]):
      if pair < 0:
        continue
      idx, neg = plan["occ"][i]
      slots = np.where(neg, u + np.searchsorted(negc, idx), np.searchsorted(pos, idx))
      out["occ_slot"][s, i, :len(idx)] = slots
      out["occ_mask"][s, i, :len(idx)] = True
      out["rho"][s, i] = self.lists.dataset.rho[pair]
      out["pair_mask"][s, i] = True

  def _fill_receivers(self, out: dict, s: int, plan: dict) -> None:
    """Shard `s`'s per-receiver arrays: negated pairing and weight, relational triplets,
    real slots, name rows and groups."""
    u = self.shapes.positive_slots
    pos, negc = plan["pos"], plan["negc"]
    out["neg_pos_slot"][s, :len(negc)] = np.searchsorted(pos, negc)
    out["neg_weight"][s, :len(negc)] = plan["neg_count"]
    trip = plan["trip"]
    if len(trip):
      out["rel_head"][s, :len(trip)] = np.searchsorted(pos, trip[:, 0])
      out["rel_tail"][s, :len(trip)] = np.searchsorted(pos, trip[:, 1])
      out["rel_corrupt"][s, :len(trip)] = np.searchsorted(pos, trip[:, 2])
      out["rel_mask"][s, :len(trip)] = True
    out["receiver_real"][s, :len(pos)] = True
    if self.names is not None and len(pos):
      out["name_text"][s, :len(pos)] = emb_lib.gather_rows(self.names, pos)  # pos sorted
    if self.groups is not None:
      out["receiver_group"][s, :len(pos)] = self.groups[pos]
    out["receiver_real"][s, u:u + len(negc)] = True

  def _shard_graph(self, plan: dict):
    """The shard's graph over its U + V receiver slots: positives at 0..U-1, negated at
    U..U+V-1; padding slots are row 0 with no neighbours (a self loop only)."""
    sh = self.shapes
    u, v = sh.positive_slots, sh.negated_slots
    pos, negc = plan["pos"], plan["negc"]
    recv = np.zeros(u + v, np.int32)
    recv[:len(pos)] = pos
    recv[u:u + len(negc)] = negc
    recv_neg = np.zeros(u + v, bool)
    recv_neg[u:] = True
    ids = np.zeros((u + v, sh.num_types, sh.fanout), np.int32)
    mask = np.zeros((u + v, sh.num_types, sh.fanout), bool)
    ids[:len(pos)], mask[:len(pos)] = plan["ids"][:len(pos)], plan["mask"][:len(pos)]
    ids[u:u + len(negc)] = plan["ids"][len(pos):]
    mask[u:u + len(negc)] = plan["mask"][len(pos):]
    return graph_lib.build_graph(recv, recv_neg, ids, mask, sh.edges, sh.edge_block)

def _stack_graphs(graphs):
  return jax.tree.map(lambda *xs: np.stack(xs), *graphs)


def epoch_order(train_idx: np.ndarray, seed: int, stage: int, epoch: int) -> np.ndarray:
  """The epoch's pair order: a permutation fixed by (seed, stage, epoch)."""
  return np.random.default_rng([seed, stage, epoch]).permutation(train_idx)


def iterate_batches(builder: BatchBuilder, order: np.ndarray, first_batch: int,
                    step0: int, prefetch: int) -> Iterator[tuple[int, dict]]:
  """Yields (batch index, host batch) from `first_batch` on; a background thread builds ahead."""
  bsz = builder.shapes.batch_size
  num_batches = -(-len(order) // bsz)
  return prefetched(lambda bi: builder.build(order[bi * bsz:(bi + 1) * bsz],
                                             step0 + bi - first_batch),
                    first_batch, num_batches, prefetch)


def prefetched(make: Callable[[int], Any], first: int, stop: int,
               prefetch: int) -> Iterator[tuple[int, Any]]:
  """Yields (i, make(i)) for i in [first, stop); with prefetch > 0 a background thread makes
  up to `prefetch` items ahead (an exception in it is raised here)."""
  if prefetch <= 0:
    for i in range(first, stop):
      yield i, make(i)
    return
  q: "queue.Queue[Optional[tuple]]" = queue.Queue(maxsize=prefetch)
  stop_event = threading.Event()

  def worker():
    try:
      for i in range(first, stop):
        if stop_event.is_set():
          return
        q.put((i, make(i)))
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
    stop_event.set()
    while thread.is_alive():
      try:
        q.get_nowait()
      except queue.Empty:
        thread.join(timeout=0.05)
