"""The knowledge graph on the host: per-relation neighbour tables and neighbour sampling.

Every concept that enters G brings a static neighbourhood: for each of the K relation types,
`fanout` neighbour slots (padded and masked), plus itself. A batch's graph is a
compact `jraph.GraphsTuple` (`build_graph`): the receivers and their real sampled
neighbours (self loops implicit), padded to a static edge capacity so that one compiled step
serves every batch.

Sampling is counter-based: (concept, type) at a given step draws from a hash of
(seed, step, concept, type) (`hash_u32`), so a concept gets the same neighbours whichever
batch shard or device it lands on, and whether the batch is built on the host or on the
device. Where a concept has more than F neighbours of a type, F of them are taken by
systematic sampling over the neighbour list (`systematic_positions`): each neighbour has
probability exactly F/deg and none is taken twice; with `deterministic=True` the start is
fixed (evenly spaced neighbours; used to project the whole dictionary for recovery and
evaluation). Every draw is integer arithmetic on 32-bit words, never a float product, so
that numpy and XLA give the same integers.
"""

from __future__ import annotations

import dataclasses

import jraph
import numpy as np

from line_jax.data.dataset import Dataset


@dataclasses.dataclass(frozen=True)
class NeighbourTable:
  """CSR adjacency over (relation type, concept): neighbours of concept c under type k are
  `neighbours[offsets[k*C + c]:offsets[k*C + c + 1]]`, sorted."""
  num_concepts: int
  num_types: int
  offsets: np.ndarray      # [K*C + 1] int64
  neighbours: np.ndarray   # [E'] int32

  @classmethod
  def build(cls, head: np.ndarray, tail: np.ndarray, etype: np.ndarray, num_concepts: int,
            num_types: int, symmetric: bool = True) -> "NeighbourTable":
    head, tail, etype = (np.asarray(a, np.int64) for a in (head, tail, etype))
    if symmetric:
      head, tail, etype = (np.concatenate([head, tail]), np.concatenate([tail, head]),
                           np.concatenate([etype, etype]))
    keep = head != tail                      # the self loop is always there; no duplicates
    head, tail, etype = head[keep], tail[keep], etype[keep]
    key = etype * num_concepts + head
    # Sort by (segment, neighbour) and drop repeated edges (e.g. both directions given).
    order = np.lexsort((tail, key))
    key, tail = key[order], tail[order]
    if len(key):
      first = np.ones(len(key), bool)
      first[1:] = (key[1:] != key[:-1]) | (tail[1:] != tail[:-1])
      key, tail = key[first], tail[first]
    counts = np.bincount(key, minlength=num_types * num_concepts)
    offsets = np.zeros(num_types * num_concepts + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return cls(num_concepts, num_types, offsets, tail.astype(np.int32))

  @classmethod
  def from_dataset(cls, dataset: Dataset, symmetric: bool = True) -> "NeighbourTable":
    return cls.build(dataset.edge_head, dataset.edge_tail, dataset.edge_type,
                     dataset.num_concepts, len(dataset.relation_types), symmetric)

  def degree(self, concepts: np.ndarray) -> np.ndarray:
    """[n, K] number of neighbours per type."""
    seg = np.arange(self.num_types)[None, :] * self.num_concepts + concepts[:, None]
    return (self.offsets[seg + 1] - self.offsets[seg]).astype(np.int64)

  def has_neighbours(self, concepts: np.ndarray) -> np.ndarray:
    return self.degree(concepts).sum(1) > 0

  def any_neighbour(self, concepts: np.ndarray, word: np.ndarray) -> np.ndarray:
    """One neighbour of each concept (any type), chosen by the random uint32 `word`
    (`draw_below`, uniform over the concept's neighbours of all types); -1 if none."""
    deg = self.degree(concepts)
    total = deg.sum(1)
    pick = np.minimum(draw_below(word, total), np.maximum(total - 1, 0))
    cum = np.cumsum(deg, 1)
    k = (pick[:, None] >= cum).sum(1)
    k = np.minimum(k, self.num_types - 1)
    within = pick - (cum[np.arange(len(k)), k] - deg[np.arange(len(k)), k])
    seg = k * self.num_concepts + concepts
    out = self.neighbours[np.minimum(self.offsets[seg] + within,
                                     max(len(self.neighbours) - 1, 0))] \
        if len(self.neighbours) else np.zeros(len(concepts), np.int32)
    return np.where(total > 0, out, -1).astype(np.int32)

  def contains(self, heads: np.ndarray, tails: np.ndarray) -> np.ndarray:
    """Whether (head, tail) is an edge of any type."""
    found = np.zeros(len(heads), bool)
    for k in range(self.num_types):
      seg = k * self.num_concepts + heads
      lo, hi = self.offsets[seg], self.offsets[seg + 1]
      for i in np.flatnonzero(hi > lo):
        j = np.searchsorted(self.neighbours[lo[i]:hi[i]], tails[i])
        found[i] |= j < hi[i] - lo[i] and self.neighbours[lo[i] + j] == tails[i]
    return found


HASH_START = 0x9E3779B9    # the hash state before the first key (2^32 / golden ratio)
HASH_MUL1 = 0x7FEB352D     # the two multipliers of the 32-bit finaliser (Wellons'
HASH_MUL2 = 0x846CA68B     # "lowbias32", a well-mixing bijection of 32-bit words)


def _mix32(h: np.ndarray) -> np.ndarray:
  h = h ^ (h >> np.uint32(16))
  h = h * np.uint32(HASH_MUL1)
  h = h ^ (h >> np.uint32(15))
  h = h * np.uint32(HASH_MUL2)
  return h ^ (h >> np.uint32(16))


def hash_u32(*keys) -> np.ndarray:
  """Counter-based random words: a uint32 hash of integer keys (each in [0, 2^32)),
  broadcast together. Each key is xor-ed into the state, which is then mixed.

  32-bit on purpose: JAX runs without 64-bit integers by default, and the device batch
  builder (`line_jax.training.device_batches`) computes the very same words with uint32 arithmetic,
  which wraps identically in numpy and XLA, so host and device batches agree bit for bit."""
  with np.errstate(over="ignore"):
    h = np.uint32(HASH_START)
    for key in keys:
      h = _mix32(h ^ np.asarray(key).astype(np.uint32))
  return np.asarray(h, np.uint32)


def draw_below(word: np.ndarray, n) -> np.ndarray:
  """Integers in [0, n) from random uint32 words: floor(word * n / 2^32) (exact integer
  arithmetic, so the host and the device agree; the bias is below n / 2^32). n < 2^32."""
  return ((np.asarray(word, np.uint64) * np.asarray(n, np.uint64)) >> np.uint64(32)).astype(
      np.int64)


def systematic_positions(word: np.ndarray, degree: np.ndarray, fanout: int) -> np.ndarray:
  """Positions of `fanout` systematic samples among `degree` items (degree > fanout): a
  start r uniform in [0, degree * fanout) and positions (r + f * degree) // fanout mod
  degree for f < fanout. They are degree / fanout >= 1 apart, so no item is taken twice,
  and every item is taken with probability exactly fanout / degree. word [...], degree
  [...] -> [..., fanout]."""
  degree = np.asarray(degree, np.int64)
  r = draw_below(word, degree * fanout)
  f = np.arange(fanout)
  return ((r[..., None] + f * degree[..., None]) // fanout) % np.maximum(degree[..., None], 1)


# Streams of counter-based draws (the last hash key), one per use.
STREAM_NEIGHBOURS, STREAM_HEAD, STREAM_TAIL, STREAM_CORRUPT, STREAM_RANDOM, STREAM_HARD = range(6)


def sample_neighbours(table: NeighbourTable, concepts: np.ndarray, fanout: int,
                      seed: int = 0, step: int = 0, deterministic: bool = False):
  """Neighbour slots of `concepts` [n]: returns (ids [n, K, F] int32, mask [n, K, F] bool)."""
  n, k_types = len(concepts), table.num_types
  concepts = np.asarray(concepts, np.int64)
  seg = np.arange(k_types)[None, :] * table.num_concepts + concepts[:, None]   # [n, K]
  start = table.offsets[seg]
  deg = table.offsets[seg + 1] - start
  f = np.arange(fanout)[None, None, :]
  if deterministic:
    # Evenly spaced from the middle of the first interval: r = degree * fanout / (2 fanout).
    r = deg // 2
    spread = ((r[:, :, None] + f * deg[:, :, None]) // fanout) % np.maximum(deg[:, :, None], 1)
  else:
    word = hash_u32(seed, step, concepts[:, None], np.arange(k_types)[None, :],
                    STREAM_NEIGHBOURS)
    spread = systematic_positions(word, deg, fanout)
  deg3 = deg[:, :, None]
  # deg <= F: take all, in order. deg > F: systematic sample from a random start.
  pos = np.where(deg3 <= fanout, f, spread)
  mask = f < deg3
  idx = np.where(mask, start[:, :, None] + np.minimum(pos, np.maximum(deg3 - 1, 0)), 0)
  ids = table.neighbours[idx] if len(table.neighbours) else np.zeros(idx.shape, np.int32)
  return np.where(mask, ids, 0).astype(np.int32), mask


def num_edges(neighbour_mask: np.ndarray, block: int = 1) -> int:
  """Edge slots of a compact graph: each receiver's real sampled neighbours, rounded up to a
  multiple of `block` (self loops are implicit)."""
  counts = neighbour_mask.sum(axis=tuple(range(1, neighbour_mask.ndim)))
  return int((-(-counts // block) * block).sum())


def build_graph(receiver_ids: np.ndarray, receiver_negated: np.ndarray,
                neighbour_ids: np.ndarray, neighbour_mask: np.ndarray,
                max_edges: int = 0, block: int = 1) -> jraph.GraphsTuple:
  """A compact, blocked GraphsTuple over R receivers, padded to `max_edges` edge slots.

  Nodes 0..R-1 are the receivers; node R + e is the sender of edge slot e (one node per
  slot, so edge features need no second gather). Edges are the real sampled neighbours only,
  sorted by segment receiver * K + type; every receiver's self loop is implicit (G adds it
  to each head's softmax), so the cost follows the graph's actual degrees, not
  R * K * fanout.

  Blocks: each receiver's edges start at a multiple of `block` and are padded (masked) to a
  whole number of blocks, so every block of `block` consecutive slots belongs to one
  receiver. G then sums and differentiates over the [slots / block, block, d] view with
  dense contractions instead of scattering [E, d] rows (`line_jax.model.network`); the receiver of
  each block is `globals["block_receivers"]` [1, slots / block]. Padding slots after the
  last block belong to the last receiver, masked. `max_edges` (0: exact size) must be a
  multiple of `block`.
  nodes: {"row": int32 row of the concept table, "negated": bool, take the row from the
  negated-embedding table (receivers only)}; edges: {"type": int32, "mask": bool}.
  """
  r, k, f = neighbour_ids.shape
  if block < 1 or max_edges % block:
    raise ValueError(f"edge capacity {max_edges} must be a multiple of the block {block}")
  counts = neighbour_mask.reshape(r, k * f).sum(1).astype(np.int64)
  blocks = -(-counts // block)
  need = int(blocks.sum()) * block
  cap = max_edges or max(need, block)
  if need > cap:
    raise ValueError(f"graph needs {need} edges, capacity is {cap}")
  flat = np.flatnonzero(neighbour_mask.reshape(-1))    # C order: sorted by (r, k) segment
  recv = flat // (k * f)
  first_slot = np.concatenate([[0], np.cumsum(blocks * block)[:-1]])
  first_edge = np.concatenate([[0], np.cumsum(counts)[:-1]])
  slot = first_slot[recv] + np.arange(len(flat)) - first_edge[recv]
  receivers = np.full(cap, r - 1, np.int32)
  receivers[:need] = np.repeat(np.arange(r, dtype=np.int32), blocks * block)
  etype = np.full(cap, k - 1, np.int32)               # padding last in its receiver's order
  etype[slot] = (flat // f) % k
  mask = np.zeros(cap, bool)
  mask[slot] = True
  senders_rows = np.zeros(cap, np.int32)
  senders_rows[slot] = neighbour_ids.reshape(-1)[flat]
  return jraph.GraphsTuple(
      nodes={"row": np.concatenate([receiver_ids.astype(np.int32), senders_rows]),
             "negated": np.concatenate([receiver_negated.astype(bool), np.zeros(cap, bool)])},
      edges={"type": etype, "mask": mask},
      senders=(r + np.arange(cap)).astype(np.int32), receivers=receivers,
      n_node=np.asarray([r + cap], np.int32), n_edge=np.asarray([cap], np.int32),
      globals={"block_receivers": receivers[::block][None]})
