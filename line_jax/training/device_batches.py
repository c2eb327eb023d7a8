"""Training batches built on the device, inside the jitted step, from device-resident tables.

The host builder (`line_jax.training.host_batches.BatchBuilder`) is the reference: this module computes
the very same arrays, bit for bit, for the same (pairs, step, shard) and capacities, with
`jnp` in static shapes. Its draws are the host's counter-based 32-bit words
(`line_jax.model.graph.hash_u32`, `draw_below`), computed with uint32 arithmetic that wraps
identically in numpy and XLA; sets of a dynamic size (a shard's distinct concepts) are sorted
arrays padded with `SENTINEL` up to the static capacity, with their true size beside them.

Why on the device: a batch is a few sorts, searches and gathers over a few thousand
integers, which an accelerator does in microseconds inside the step's own program, while
the host needed ~11 ms a batch on one thread (the step itself takes ~1 ms on a GPU); the
batch never crosses PCIe, and nothing waits on the host but the pair indices.

Capacities (receivers U, negated receivers V, edge slots E per shard) are exact: before a
stage, `plan_capacities` computes what every batch of the stage needs (the same code up to
neighbour sampling, no gathers) and takes the largest, so no batch can overflow and each
stage compiles once. The plan is a function of the data, the seed, the stage and the
recovered concepts, so a resumed run plans the same capacities and trains bit for bit as
the run it resumes.

Tables (`DeviceTables`, a dict pytree): the pair lists (CSR), rho and the recovered concept
of each pair, the neighbour CSR per relation type and the merged one (for "is an edge"),
the hard-negative table, each concept's term group and teacher 1's name rows, and teacher
1's text rows when they fit the memory budget (`text_on_device`); otherwise the host
gathers each batch's text rows (`host_text_rows`) and they enter the step as an input. A
model.text_vectors="segments" run adds each pair's clause ranges and teacher 1's clause
rows, which live with the text rows (on the devices, or streamed: `host_segment_rows`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Optional

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from line_jax.model import graph as graph_lib
from line_jax.cache import store as emb_lib
from line_jax.data import heldout_terms
from line_jax.util import processes as multihost
from line_jax.training import host_batches as pipeline
from line_jax.util.shapes import round_up

SENTINEL = np.iinfo(np.int32).max     # pads sorted sets: above every concept index
INT32_LIMIT = np.iinfo(np.int32).max


# --- 32-bit counter-based draws, as line_jax.model.graph computes them on the host ---------------

def _mix32(h):
  h = h ^ (h >> 16)
  h = h * jnp.uint32(graph_lib.HASH_MUL1)
  h = h ^ (h >> 15)
  h = h * jnp.uint32(graph_lib.HASH_MUL2)
  return h ^ (h >> 16)


def hash_u32(*keys) -> jnp.ndarray:
  """`line_jax.model.graph.hash_u32` in jnp (uint32 words, broadcast over the keys)."""
  h = jnp.uint32(graph_lib.HASH_START)
  for key in keys:
    h = _mix32(h ^ jnp.asarray(key).astype(jnp.uint32))
  return h


def mul_high(a, b) -> jnp.ndarray:
  """The high 32 bits of the 64-bit product of uint32 a and b, from 16-bit halves (JAX runs
  without 64-bit integers by default)."""
  a, b = jnp.asarray(a, jnp.uint32), jnp.asarray(b, jnp.uint32)
  mask = jnp.uint32(0xFFFF)
  a_lo, a_hi, b_lo, b_hi = a & mask, a >> 16, b & mask, b >> 16
  lo_lo, hi_lo, lo_hi, hi_hi = a_lo * b_lo, a_hi * b_lo, a_lo * b_hi, a_hi * b_hi
  cross = (lo_lo >> 16) + (hi_lo & mask) + (lo_hi & mask)
  return hi_hi + (hi_lo >> 16) + (lo_hi >> 16) + (cross >> 16)


def draw_below(word, n) -> jnp.ndarray:
  """`line_jax.model.graph.draw_below`: int32 in [0, n) from uint32 words (n < 2^31)."""
  return mul_high(word, jnp.asarray(n).astype(jnp.uint32)).astype(jnp.int32)


# --- sets of dynamic size in static shapes ------------------------------------------------

def sorted_unique(values, valid, size: int, counts: bool = False):
  """The distinct `values` where `valid`, sorted, in a [size] array padded with SENTINEL, and
  their number (which may exceed `size`: the rest is dropped; callers plan sizes so that it
  does not). With `counts`, also each value's multiplicity ([size] int32)."""
  v = jnp.where(valid, values, SENTINEL).reshape(-1).astype(jnp.int32)
  s = jnp.sort(v)
  real = s != SENTINEL
  first = real & jnp.concatenate([jnp.ones(1, bool), s[1:] != s[:-1]])
  rank = jnp.cumsum(first) - 1
  out = jnp.full(size, SENTINEL, jnp.int32).at[jnp.where(first, rank, size)].set(
      s, mode="drop")
  number = jnp.sum(first).astype(jnp.int32)
  if not counts:
    return out, number
  mult = jnp.zeros(size, jnp.int32).at[jnp.where(real, rank, size)].add(1, mode="drop")
  return out, number, mult


def compact(values, keep, size: int, fill=SENTINEL):
  """The `values` where `keep`, in order, in a [size] array (padded with `fill`), and their
  number."""
  rank = jnp.cumsum(keep) - 1
  out = jnp.full(size, fill, values.dtype).at[jnp.where(keep, rank, size)].set(
      values, mode="drop")
  return out, jnp.sum(keep).astype(jnp.int32)


# --- tables ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BuilderSpec:
  """The static side of the device builder: what the batches carry and their sizes."""
  seed: int
  num_concepts: int
  num_types: int
  fanout: int
  max_concepts: int          # M (the extracted concepts, truncated, + 1 recovered)
  random_concepts: int
  hard_negatives: int
  hard_pool: int
  with_names: bool
  with_groups: bool
  contains_steps: int        # binary-search steps over the longest merged neighbour list
  text_dtype: str
  segment_slots: int = 0     # clauses carried per pair (data.max_segments_per_pair - 1);
                             # 0: a "sentence" run, no segments


def merged_neighbours(table: graph_lib.NeighbourTable):
  """Every concept's neighbours of any type, sorted and without repeats, as CSR
  (offsets [C + 1], neighbours): what "is (head, tail) an edge" searches."""
  c, k = table.num_concepts, table.num_types
  counts = np.diff(table.offsets)
  owner = np.repeat(np.tile(np.arange(c, dtype=np.int64), k), counts)
  key = owner * c + table.neighbours.astype(np.int64)
  key = np.unique(key)
  owner, tail = key // c, (key % c).astype(np.int32)
  offsets = np.zeros(c + 1, np.int64)
  np.cumsum(np.bincount(owner, minlength=c), out=offsets[1:])
  return offsets, tail


def _int32(name: str, values: np.ndarray) -> np.ndarray:
  values = np.asarray(values)
  if len(values) and (values.max() > INT32_LIMIT or values.min() < -INT32_LIMIT):
    raise ValueError(f"{name} holds values beyond 32-bit integers ({values.max()}); "
                     "the device batch builder indexes with int32: use "
                     "train.batch_builder='host'")
  return values.astype(np.int32)


def text_on_device(config, text: np.ndarray, segments: Optional[np.ndarray] = None) -> bool:
  """Whether teacher 1's text table (and its clause rows, `segments`, in a "segments" run)
  lives on the devices (config train.text_table: "device", "host" or "auto": when its bytes
  fit train.device_table_budget_gib, or, at 0, half of a GPU/TPU's free memory and 2 GiB
  of a CPU's)."""
  setting = str(config.train.get("text_table", "auto"))
  if setting not in ("auto", "device", "host"):
    raise ValueError(f"train.text_table={setting!r}: expected 'auto', 'device' or 'host'")
  if setting != "auto":
    return setting == "device"
  nbytes = sum(int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize
               for t in (text, segments) if t is not None)
  budget = float(config.train.get("device_table_budget_gib", 0.0)) * 2**30
  if budget <= 0:
    budget = 2.0 * 2**30
    device = jax.local_devices()[0]
    if device.platform != "cpu":
      stats = device.memory_stats() or {}
      if "bytes_limit" in stats:
        budget = 0.5 * (stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  return nbytes <= budget


def make_tables(lists: pipeline.PairLists, table: graph_lib.NeighbourTable,
                text: Optional[np.ndarray], names: Optional[np.ndarray],
                groups: Optional[np.ndarray], hard: Optional[np.ndarray],
                hard_negatives: int, random_concepts: int, seed: int, fanout: int,
                text_dtype, segments: Optional[pipeline.PairSegments] = None,
                segment_rows: bool = True) -> tuple[dict, BuilderSpec]:
  """Host arrays of the device tables (numpy; `place_tables` puts them on the devices) and the
  builder's static spec. `text` None: the text rows are streamed from the host. `segments`:
  the pairs' clauses of a "segments" run, their rows on the devices unless `segment_rows`
  is False (streamed with the text rows)."""
  ds = lists.dataset
  c, k = table.num_concepts, table.num_types
  if k * c + 1 > INT32_LIMIT or len(table.neighbours) > INT32_LIMIT:
    raise ValueError(f"the graph ({k} types x {c} concepts, {len(table.neighbours)} "
                     "neighbour entries) is beyond 32-bit indices: use "
                     "train.batch_builder='host'")
    # (and the degree * fanout products of the systematic sampling below)
  degrees = np.diff(table.offsets)
  if len(degrees) and int(degrees.max()) * fanout * 2 >= 2**32:
    raise ValueError(f"a concept has {int(degrees.max())} neighbours of one type: with "
                     f"graph.fanout={fanout} the device sampler's 32-bit positions overflow; "
                     "use train.batch_builder='host'")
  any_offsets, any_neighbours = merged_neighbours(table)
  longest = int(np.diff(any_offsets).max(initial=0))
  tables = {
      "concept_offsets": _int32("pairs' concept offsets", ds.concept_offsets[:-1]),
      "lengths": lists.lengths.astype(np.int32),
      "concept_flat": _int32("pairs' concepts", ds.concept_flat)
      if len(ds.concept_flat) else np.zeros(1, np.int32),
      "negated_flat": np.asarray(ds.negated_flat, bool)
      if len(ds.negated_flat) else np.zeros(1, bool),
      "added": lists.added.astype(np.int32),
      "rho": np.asarray(ds.rho, np.float32),
      "nb_offsets": _int32("neighbour offsets", table.offsets),
      "neighbours": table.neighbours.astype(np.int32)
      if len(table.neighbours) else np.zeros(1, np.int32),
      "any_offsets": _int32("neighbour offsets", any_offsets),
      "any_neighbours": any_neighbours if len(any_neighbours) else np.zeros(1, np.int32),
      "trainable": ~heldout_terms.held_mask(ds),   # no held-out term is ever a negative
  }
  optional = dict(text=text, names=names,
                  groups=None if groups is None else np.asarray(groups, np.int32))
  tables.update({name: v for name, v in optional.items() if v is not None})
  if hard is not None and hard_negatives:
    tables["hard"] = np.asarray(hard, np.int32)
  if segments is not None:
    tables["segment_starts"] = _int32("pairs' clause offsets", segments.starts)
    tables["segment_lengths"] = segments.lengths.astype(np.int32)
    if segment_rows:
      tables["segments"] = (segments.rows if len(segments.rows) else
                            np.zeros((1, segments.rows.shape[1]), segments.rows.dtype))
  spec = BuilderSpec(
      seed=int(seed), num_concepts=c, num_types=k, fanout=int(fanout),
      max_concepts=lists.max_concepts, random_concepts=int(random_concepts),
      hard_negatives=int(hard_negatives) if "hard" in tables else 0,
      hard_pool=int(hard.shape[1]) if "hard" in tables else 0,
      with_names=names is not None, with_groups=groups is not None,
      contains_steps=max(1, math.ceil(math.log2(longest + 1))),
      text_dtype=str(np.dtype(text_dtype)),
      segment_slots=segments.slots if segments is not None else 0)
  return tables, spec


def place_tables(tables: dict, sharding) -> dict:
  """The tables on the devices (replicated by `sharding`); memmapped rows are read in
  blocks (`embeddings.read_rows`) and the host copy dropped after the transfer."""
  out = {}
  for name, value in tables.items():
    host = emb_lib.read_rows(value) if isinstance(value, np.memmap) else np.asarray(value)
    out[name] = multihost.put(host, sharding)
    jax.block_until_ready(out[name])
    del host
  return out


def host_text_rows(text: np.ndarray, pair_idx: np.ndarray) -> np.ndarray:
  """[len(pair_idx), d_t] text rows of a batch's pairs (-1: zeros), read from the host table
  in sorted order (memmaps read sequentially), for a step whose text table is streamed."""
  pair_idx = np.asarray(pair_idx, np.int64)
  out = np.zeros((len(pair_idx), text.shape[1]), text.dtype)
  valid = pair_idx >= 0
  if valid.any():
    rows = np.sort(pair_idx[valid])
    out[valid] = emb_lib.gather_rows(text, rows)[np.searchsorted(rows, pair_idx[valid])]
  return out


def host_segment_rows(segments: pipeline.PairSegments, pair_idx: np.ndarray) -> np.ndarray:
  """[len(pair_idx), S - 1, d_t] clause rows of a batch's pairs (zeros past each pair's
  clauses and for -1), for a step whose text table is streamed."""
  return segments.padded(pair_idx)[0]


# --- the builder ------------------------------------------------------------------------------

def padded_lists(tables: dict, pair_idx, max_concepts: int):
  """`PairLists.padded` on the device: (concept [n, M], negated [n, M], real [n, M]) of the
  pairs `pair_idx` [n] (-1: a padding pair, no concept)."""
  m = max_concepts
  valid = pair_idx >= 0
  p = jnp.maximum(pair_idx, 0)
  lengths = jnp.where(valid, tables["lengths"][p], 0)
  col = jnp.arange(m, dtype=jnp.int32)[None, :]
  real = col < lengths[:, None]
  flat = jnp.where(real, tables["concept_offsets"][p][:, None] + col, 0)
  idx = jnp.where(real, tables["concept_flat"][flat], 0)
  neg = real & tables["negated_flat"][flat]
  added = jnp.where(valid, tables["added"][p], -1)
  at_added = (col == lengths[:, None]) & (added[:, None] >= 0)
  idx = jnp.where(at_added, added[:, None], idx)
  return idx, neg, real | at_added


def _degrees(tables: dict, concepts, spec: BuilderSpec):
  """[n, K] neighbours of each concept per type, and the segments' starts."""
  seg = (jnp.arange(spec.num_types, dtype=jnp.int32)[None, :] * spec.num_concepts
         + concepts[:, None])
  start = tables["nb_offsets"][seg]
  return tables["nb_offsets"][seg + 1] - start, start


def any_neighbour(tables: dict, concepts, word, spec: BuilderSpec):
  """`NeighbourTable.any_neighbour` on the device (-1 where a concept has none)."""
  deg, start = _degrees(tables, concepts, spec)
  total = deg.sum(1)
  pick = jnp.minimum(draw_below(word, total), jnp.maximum(total - 1, 0))
  cum = jnp.cumsum(deg, 1)
  k = jnp.minimum((pick[:, None] >= cum).sum(1), spec.num_types - 1)
  take = lambda a: jnp.take_along_axis(a, k[:, None], axis=1)[:, 0]
  within = pick - (take(cum) - take(deg))
  last = tables["neighbours"].shape[0] - 1
  out = tables["neighbours"][jnp.minimum(take(start) + within, last)]
  return jnp.where(total > 0, out, -1)


def contains(tables: dict, heads, tails, spec: BuilderSpec):
  """Whether (head, tail) is an edge of any type: a fixed number of binary-search steps in
  the head's merged, sorted neighbour list."""
  lo = tables["any_offsets"][heads]
  hi = tables["any_offsets"][heads + 1]
  end = hi

  def step(_, bounds):
    lo, hi = bounds
    mid = (lo + hi) // 2
    go_right = (lo < hi) & (tables["any_neighbours"][jnp.minimum(mid, end - 1)] < tails)
    return jnp.where(go_right, mid + 1, lo), jnp.where(go_right | (lo >= hi), hi, mid)

  lo, _ = jax.lax.fori_loop(0, spec.contains_steps + 1, step, (lo, hi))
  last = tables["any_neighbours"].shape[0] - 1
  return (lo < end) & (tables["any_neighbours"][jnp.minimum(lo, last)] == tails)


def relational_triplets(tables: dict, idx, real, step, shard, shapes: pipeline.BatchShapes,
                        spec: BuilderSpec):
  """The shard's relational triplets (head, tail, corrupt, valid), each [Rs]: drawn from the
  global batch's concepts as the host does (`BatchBuilder._relational`), the valid ones
  dealt to the shards in turn."""
  n = shapes.relational_edges * shapes.num_shards
  rs = shapes.relational_edges
  if n == 0:
    z = jnp.zeros(rs, jnp.int32)
    return z, z, z, jnp.zeros(rs, bool)
  size = idx.size
  all_pos, n_all = sorted_unique(idx, real, size)
  in_set = jnp.arange(size) < n_all
  deg, _ = _degrees(tables, jnp.where(in_set, all_pos, 0), spec)
  cand, n_cand = compact(all_pos, in_set & (deg.sum(1) > 0), size)
  slot = jnp.arange(n, dtype=jnp.uint32)
  word = lambda stream: hash_u32(spec.seed, step, slot, stream)
  head = cand[jnp.minimum(draw_below(word(graph_lib.STREAM_HEAD), n_cand), size - 1)]
  head = jnp.where(n_cand > 0, head, 0)
  tail = any_neighbour(tables, head, word(graph_lib.STREAM_TAIL), spec)
  corrupt = draw_below(word(graph_lib.STREAM_CORRUPT), spec.num_concepts)
  ok = ((n_cand > 0) & (corrupt != head) & (corrupt != tail)
        & ~contains(tables, head, corrupt, spec) & tables["trainable"][corrupt])
  rank = jnp.cumsum(ok) - 1
  mine = ok & (rank % shapes.num_shards == shard) & (rank // shapes.num_shards < rs)
  dest = jnp.where(mine, rank // shapes.num_shards, rs)
  put = lambda v: jnp.zeros(rs, jnp.int32).at[dest].set(v, mode="drop")
  return put(head), put(tail), put(corrupt), jnp.zeros(rs, bool).at[dest].set(True,
                                                                               mode="drop")


def _receivers(tables: dict, idx, neg, real, trip, step, shard, shapes, spec: BuilderSpec):
  """The shard's positive and negated receivers as sorted padded sets, with their sizes and
  the negated ones' multiplicities."""
  head, tail, corrupt, trip_ok = trip
  parts = [(idx.reshape(-1), real.reshape(-1))]
  parts += [(x, trip_ok) for x in (head, tail, corrupt)]
  if spec.random_concepts:
    drawn = draw_below(hash_u32(spec.seed, step, shard,
                                jnp.arange(spec.random_concepts, dtype=jnp.uint32),
                                graph_lib.STREAM_RANDOM), spec.num_concepts)
    parts.append((drawn, tables["trainable"][drawn]))
  if spec.hard_negatives:
    listed = idx.reshape(-1)
    is_listed = (real & ~neg).reshape(-1)
    col = draw_below(hash_u32(spec.seed, step, shard, listed[:, None],
                              jnp.arange(spec.hard_negatives, dtype=jnp.uint32)[None, :],
                              graph_lib.STREAM_HARD), spec.hard_pool)
    picked = tables["hard"][listed[:, None], col]
    parts.append((picked.reshape(-1), (is_listed[:, None] & (picked >= 0)).reshape(-1)))
  values = jnp.concatenate([v.astype(jnp.int32) for v, _ in parts])
  valid = jnp.concatenate([m for _, m in parts])
  pos, n_pos = sorted_unique(values, valid, shapes.positive_slots)
  negc, n_neg, neg_count = sorted_unique(idx, real & neg, shapes.negated_slots, counts=True)
  return pos, n_pos, negc, n_neg, neg_count


def shard_needs(tables: dict, pair_idx, step, shard, shapes: pipeline.BatchShapes,
                spec: BuilderSpec):
  """[3] int32: the positive receivers, negated receivers and edge slots shard `shard` of
  the global batch `pair_idx` [B] needs at `step` (`BatchBuilder._plan`'s needs)."""
  idx, neg, real = padded_lists(tables, pair_idx, spec.max_concepts)
  trip = relational_triplets(tables, idx, real, step, shard, shapes, spec)
  b = shapes.pairs_per_shard
  mine = lambda a: jax.lax.dynamic_slice_in_dim(a, shard * b, b)
  big = dataclasses.replace(shapes, positive_slots=_set_bound(shapes, spec),
                            negated_slots=b * spec.max_concepts)
  pos, n_pos, negc, n_neg, _ = _receivers(tables, mine(idx), mine(neg), mine(real), trip,
                                          step, shard, big, spec)
  # A receiver's edge slots: min(degree, fanout) real neighbours per type (no sampling
  # needed to count them), rounded up to whole blocks.
  recv = jnp.concatenate([pos, negc])
  live = jnp.concatenate([jnp.arange(pos.shape[0]) < n_pos, jnp.arange(negc.shape[0]) < n_neg])
  deg, _ = _degrees(tables, jnp.where(live, recv, 0), spec)
  counts = jnp.where(live, jnp.minimum(deg, spec.fanout).sum(1), 0)
  edges = jnp.sum(-(-counts // shapes.edge_block) * shapes.edge_block)
  return jnp.stack([n_pos, n_neg, edges.astype(jnp.int32)])


def _set_bound(shapes: pipeline.BatchShapes, spec: BuilderSpec) -> int:
  """The most positive receivers a shard can have (every candidate distinct)."""
  b, m = shapes.pairs_per_shard, spec.max_concepts
  return b * m * (1 + spec.hard_negatives) + 3 * shapes.relational_edges + spec.random_concepts


def sampled_graph(tables: dict, recv, live, recv_neg, step, max_edges: int, block: int,
                  spec: BuilderSpec) -> jraph.GraphsTuple:
  """`graph.sample_neighbours` then `graph.build_graph` on the device, for the receivers
  `recv` [R] (rows not `live` have no edge), at a static edge capacity (edges beyond it are
  dropped: capacities are planned so that none is).

  Computed slot by slot rather than by scattering a [R, K, F] sample: edge slot e belongs to
  the receiver whose block allocation holds it (a search over the cumulative allocations);
  within it, to the type whose cumulative count of min(degree, fanout) passes its offset;
  its neighbour is that (receiver, type)'s systematic sample at the offset within the type.
  Only gathers, which XLA runs far faster than scatters on a CPU."""
  r, k_types, f_count = recv.shape[0], spec.num_types, spec.fanout
  concepts = jnp.where(live, recv, 0)
  deg, start = _degrees(tables, concepts, spec)                       # [R, K]
  deg = jnp.where(live[:, None], deg, 0)
  n = jnp.minimum(deg, f_count)                                       # edges per (r, k)
  cum_n = jnp.cumsum(n, axis=1)
  counts = cum_n[:, -1]
  alloc = -(-counts // block) * block
  ends = jnp.cumsum(alloc)
  need = ends[-1]
  # Each (r, k)'s systematic start: the draw the host makes per (seed, step, concept, type).
  word = hash_u32(spec.seed, step, concepts[:, None],
                  jnp.arange(k_types, dtype=jnp.uint32)[None, :], graph_lib.STREAM_NEIGHBOURS)
  first_draw = draw_below(word, deg * f_count)                         # [R, K]
  e = jnp.arange(max_edges, dtype=jnp.int32)
  in_use = e < need
  owner = jnp.minimum(jnp.searchsorted(ends, e, side="right"), r - 1).astype(jnp.int32)
  offset = e - (ends[owner] - alloc[owner])                            # within the receiver
  owner_cum = cum_n[owner]                                             # [E, K]
  k = jnp.minimum((owner_cum <= offset[:, None]).sum(1), k_types - 1).astype(jnp.int32)
  real = in_use & (offset < counts[owner])
  pick = lambda a: jnp.take_along_axis(a[owner], k[:, None], axis=1)[:, 0]
  deg_e, n_e = pick(deg), pick(n)
  f = offset - (pick(cum_n) - n_e)
  spread = ((pick(first_draw).astype(jnp.uint32) + (f * deg_e).astype(jnp.uint32))
            // f_count).astype(jnp.int32) % jnp.maximum(deg_e, 1)
  pos = jnp.where(deg_e <= f_count, f, spread)
  last = tables["neighbours"].shape[0] - 1
  neighbour = tables["neighbours"][jnp.clip(pick(start) + jnp.minimum(pos, deg_e - 1), 0, last)]
  receivers = jnp.where(in_use, owner, r - 1)
  return jraph.GraphsTuple(
      nodes={"row": jnp.concatenate([recv.astype(jnp.int32),
                                     jnp.where(real, neighbour, 0).astype(jnp.int32)]),
             "negated": jnp.concatenate([recv_neg, jnp.zeros(max_edges, bool)])},
      edges={"type": jnp.where(real, k, k_types - 1), "mask": real},
      senders=(r + e).astype(jnp.int32), receivers=receivers,
      n_node=jnp.asarray([r + max_edges], jnp.int32),
      n_edge=jnp.asarray([max_edges], jnp.int32),
      globals={"block_receivers": receivers[::block][None]})


def build_shard(tables: dict, pair_idx, step, shard, shapes: pipeline.BatchShapes,
                spec: BuilderSpec, text_rows=None, segment_rows=None) -> dict:
  """One shard of the batch of the global pairs `pair_idx` [B] (-1: padding) at `step`, as
  `BatchBuilder.build` makes it (without the leading shard axis). `text_rows` [b, d_t] and
  `segment_rows` [b, S - 1, d_t]: the shard's text and clause rows when the text table is
  streamed from the host."""
  sh = shapes
  b, u, v, rs = sh.pairs_per_shard, sh.positive_slots, sh.negated_slots, sh.relational_edges
  idx_all, neg_all, real_all = padded_lists(tables, pair_idx, spec.max_concepts)
  trip = relational_triplets(tables, idx_all, real_all, step, shard, sh, spec)
  mine = lambda a: jax.lax.dynamic_slice_in_dim(a, shard * b, b)
  pairs, idx, neg, real = mine(pair_idx), mine(idx_all), mine(neg_all), mine(real_all)
  pos, n_pos, negc, n_neg, neg_count = _receivers(tables, idx, neg, real, trip, step, shard,
                                                  sh, spec)
  pos_real = jnp.arange(u) < n_pos
  neg_real = jnp.arange(v) < n_neg
  pos0 = jnp.where(pos_real, pos, 0)
  negc0 = jnp.where(neg_real, negc, 0)
  recv = jnp.concatenate([pos0, negc0])
  receiver_real = jnp.concatenate([pos_real, neg_real])
  graph = sampled_graph(tables, recv, receiver_real, jnp.arange(u + v) >= u, step, sh.edges,
                        sh.edge_block, spec)
  slot_of = lambda sorted_set, x: jnp.searchsorted(sorted_set, x).astype(jnp.int32)
  occ_slot = jnp.where(neg, u + slot_of(negc, idx), slot_of(pos, idx))
  valid_pair = pairs >= 0
  p = jnp.maximum(pairs, 0)
  head, tail, corrupt, trip_ok = trip
  rel = lambda x: jnp.where(trip_ok, slot_of(pos, x), 0)
  if text_rows is None:
    text_rows = jnp.where(valid_pair[:, None], tables["text"][p], 0)
  out = {
      "text": text_rows.astype(spec.text_dtype),
      "rho": jnp.where(valid_pair, tables["rho"][p], 0.0),
      "pair_mask": valid_pair,
      "occ_slot": jnp.where(real, occ_slot, 0),
      "occ_mask": real,
      "receiver_real": receiver_real,
      "neg_pos_slot": jnp.where(neg_real, slot_of(pos, negc), 0),
      "neg_weight": jnp.where(neg_real, neg_count, 0).astype(jnp.float32),
      "rel_head": rel(head), "rel_tail": rel(tail), "rel_corrupt": rel(corrupt),
      "rel_mask": trip_ok,
      "graph": graph,
  }
  if spec.with_names:
    out["name_text"] = jnp.where(pos_real[:, None], tables["names"][pos0], 0)
  if spec.with_groups:
    out["receiver_group"] = jnp.where(pos_real, tables["groups"][pos0],
                                      -1 - jnp.arange(u, dtype=jnp.int32))
  if spec.segment_slots:
    col = jnp.arange(spec.segment_slots, dtype=jnp.int32)[None, :]
    seg_mask = col < jnp.where(valid_pair, tables["segment_lengths"][p], 0)[:, None]
    if segment_rows is None:
      flat = jnp.where(seg_mask, tables["segment_starts"][p][:, None] + col, 0)
      segment_rows = jnp.where(seg_mask[..., None], tables["segments"][flat], 0)
    out["segments"] = segment_rows.astype(spec.text_dtype)
    out["segment_mask"] = seg_mask
  return out


def build_batch(tables: dict, pair_idx, step, shapes: pipeline.BatchShapes,
                spec: BuilderSpec, text_rows=None, segment_rows=None) -> dict:
  """Every shard of the batch, stacked on a leading shard axis: what the host builder's
  `build` returns (for tests and the builder-alone benchmark; training builds each shard
  on its own device inside the step)."""
  b = shapes.pairs_per_shard
  part = lambda rows, s: None if rows is None else rows[s * b:(s + 1) * b]
  shards = [build_shard(tables, pair_idx, step, s, shapes, spec, part(text_rows, s),
                        part(segment_rows, s))
            for s in range(shapes.num_shards)]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *shards)


# --- capacities -------------------------------------------------------------------------------

def plan_capacities(tables: dict, orders: list, first_step: int,
                    shapes: pipeline.BatchShapes, spec: BuilderSpec,
                    steps_per_call: int = 16) -> pipeline.BatchShapes:
  """`shapes` with capacities that hold every batch of the given epoch orders (each a
  permutation of train pairs, batched by shapes.batch_size; epoch e's batch i is step
  first_step + e * batches_per_epoch + i): the largest needs, rounded up (U, V to 8, E to a
  multiple of 256 and of the edge block). Measured `steps_per_call` batches a call."""
  bsz = shapes.batch_size
  per_epoch = -(-len(orders[0]) // bsz) if orders else 0
  batches, steps = [], []
  for e, order in enumerate(orders):
    padded = np.full(per_epoch * bsz, -1, np.int32)
    padded[:len(order)] = order
    batches.append(padded.reshape(per_epoch, bsz))
    steps.append(first_step + e * per_epoch + np.arange(per_epoch))
  if not batches:
    return shapes
  batches = np.concatenate(batches)
  steps = np.concatenate(steps).astype(np.int32)
  chunk = max(1, steps_per_call)   # always (empty batches pad): one program per shapes
  pad = -len(steps) % chunk
  batches = np.concatenate([batches, np.full((pad, bsz), -1, np.int32)])
  steps = np.concatenate([steps, np.zeros(pad, np.int32)])
  needs_fn = _needs_fn(shapes, spec)
  most = np.zeros(3, np.int64)
  for s in range(0, len(steps), chunk):
    got = np.asarray(needs_fn(tables, batches[s:s + chunk], steps[s:s + chunk]))
    most = np.maximum(most, got.reshape(-1, 3).max(0))
  block = shapes.edge_block
  planned = dataclasses.replace(
      shapes, positive_slots=round_up(max(1, most[0])), negated_slots=round_up(max(1, most[1])),
      edges=round_up(max(1, most[2]), math.lcm(256, block)))
  logging.info("capacities planned over %d batches: most needed %s -> %s", len(steps) - pad,
               most.tolist(), (planned.positive_slots, planned.negated_slots, planned.edges))
  return planned


_NEEDS_CACHE: dict = {}


def _needs_fn(shapes: pipeline.BatchShapes, spec: BuilderSpec):
  """jit(needs of a chunk of batches [n, B] at steps [n]) -> [n, S, 3], cached per shapes."""
  key = (shapes.batch_size, shapes.num_shards, shapes.relational_edges, shapes.edge_block,
         spec)
  if key not in _NEEDS_CACHE:
    def needs(tables, batches, steps):
      per_shard = lambda batch, step: jnp.stack([
          shard_needs(tables, batch, step, s, shapes, spec)
          for s in range(shapes.num_shards)])
      return jax.vmap(per_shard)(batches, steps)
    _NEEDS_CACHE[key] = jax.jit(needs)
  return _NEEDS_CACHE[key]
