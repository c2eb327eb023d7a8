"""Batches built on the device equal the host reference builder's, bit for bit; the 32-bit
draws, sets and capacities they rest on."""

import dataclasses

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import numpy as np

from line_jax.benchmarks import train_step as bench_train
from line_jax.cache import segments as segments_cache
from line_jax.data import heldout_terms
from line_jax.training import device_batches as db
from line_jax.model import graph as graph_lib
from line_jax.training import host_batches as pipeline


def setting(num_shards=2, batch_size=32, relational_edges=8, fanout=2, names=True,
            groups=True, random_concepts=16, hard_negatives=2, added=True, num_pairs=400,
            num_concepts=300, edges=1200, seed=3, segments=True, max_segments=4,
            heldout=False):
  """A host builder and the device tables of the same data and settings (with `segments`,
  0 to 5 clause rows per pair, some beyond the max_segments - 1 carried; with `heldout`,
  every fourth concept held out of training, as data.heldout_terms does)."""
  ds = bench_train.synthetic_dataset(num_pairs, num_concepts, edges, 3, 4, seed=1)
  if heldout:
    ds = heldout_terms.training_view(dataclasses.replace(
        ds, heldout_concepts=np.arange(0, num_concepts, 4, dtype=np.int32)))
  lists = pipeline.PairLists(ds, 16)
  if added:   # recovered concepts, as stage 2 has them
    lists.added[::5] = np.arange(0, num_pairs, 5) % num_concepts
  table = graph_lib.NeighbourTable.from_dataset(ds, True)
  rng = np.random.default_rng(0)
  text = rng.standard_normal((num_pairs, 8)).astype(np.float16)
  name_rows = rng.standard_normal((num_concepts, 5)).astype(np.float32) if names else None
  group_of = rng.integers(0, 100, num_concepts) if groups else None
  hard = None
  if hard_negatives:
    rows = rng.standard_normal((num_concepts, 6)).astype(np.float32)
    hard = pipeline.hard_neighbour_table(rows, rng.integers(0, 100, num_concepts),
                                         np.arange(num_concepts), 5)
    hard[::3, 2:] = -1
  pair_segments = None
  if segments:
    pair_segments = pipeline.PairSegments(clause_rows(num_pairs, 8, rng), max_segments)
  shapes = pipeline.batch_shapes(lists, batch_size, num_shards, 3, fanout, relational_edges, 4)
  host = pipeline.BatchBuilder(lists, table, text, shapes, seed, names=name_rows,
                               groups=group_of, random_concepts=random_concepts, hard=hard,
                               hard_negatives=hard_negatives, segments=pair_segments)
  tables, spec = db.make_tables(lists, table, text, name_rows, group_of, hard,
                                hard_negatives, random_concepts, seed, fanout, text.dtype,
                                pair_segments)
  return host, jax.tree.map(jnp.asarray, tables), spec


def clause_rows(num_pairs, dim, rng):
  """In-memory clause rows: 0 to 5 clauses per pair, distinct random rows."""
  counts = rng.integers(0, 6, num_pairs)
  offsets = np.r_[0, np.cumsum(counts)]
  rows = rng.standard_normal((int(offsets[-1]), dim)).astype(np.float16)
  return segments_cache.SegmentEmbeddings(rows, offsets, None, {}, "<memory>")


def assert_same_batch(test, host_batch, device_batch, where=""):
  host_leaves = jax.tree.flatten_with_path(host_batch)[0]
  device_leaves = dict(jax.tree.flatten_with_path(device_batch)[0])
  test.assertEqual(len(host_leaves), len(device_leaves))
  for path, a in host_leaves:
    b = np.asarray(device_leaves[path])
    name = f"{where}{jax.tree_util.keystr(path)}"
    test.assertEqual((a.dtype, a.shape), (b.dtype, b.shape), name)
    np.testing.assert_array_equal(a, b, err_msg=name)


class DrawsTest(absltest.TestCase):

  def test_words_equal_the_host_hash(self):
    keys = np.random.default_rng(0).integers(0, 2**31, (3, 5000))
    host = graph_lib.hash_u32(7, 123456, keys[0], keys[1][:, None][:10], 4)
    device = jax.jit(lambda a, b: db.hash_u32(7, 123456, a, b, 4))(keys[0], keys[1][:, None][:10])
    np.testing.assert_array_equal(host, np.asarray(device))

  def test_high_product_is_exact(self):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32)
    b = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32)
    a[:4], b[:4] = [0, 2**32 - 1, 2**32 - 1, 1], [5, 2**32 - 1, 1, 2**32 - 1]
    want = [(int(x) * int(y)) >> 32 for x, y in zip(a, b)]
    np.testing.assert_array_equal(np.asarray(jax.jit(db.mul_high)(a, b)), want)
    n = np.int32(1_000_003)
    np.testing.assert_array_equal(np.asarray(db.draw_below(a, n)), graph_lib.draw_below(a, n))

  def test_sorted_unique_and_compact(self):
    values = jnp.asarray([5, 3, 5, 9, 1, 3, 7, 2], jnp.int32)
    valid = jnp.asarray([1, 1, 1, 0, 1, 1, 1, 1], bool)
    out, n, mult = db.sorted_unique(values, valid, 8, counts=True)
    self.assertEqual(int(n), 5)
    np.testing.assert_array_equal(out[:5], [1, 2, 3, 5, 7])
    self.assertTrue((np.asarray(out[5:]) == db.SENTINEL).all())
    np.testing.assert_array_equal(mult[:5], [1, 1, 2, 2, 1])
    small, n_small = db.sorted_unique(values, valid, 3)          # more than fit: counted
    self.assertEqual(int(n_small), 5)
    np.testing.assert_array_equal(small, [1, 2, 3])
    kept, n_kept = db.compact(values, values > 4, 8)
    self.assertEqual(int(n_kept), 4)
    np.testing.assert_array_equal(kept[:4], [5, 5, 9, 7])

  def test_edge_membership_matches_the_table(self):
    host, tables, spec = setting()
    rng = np.random.default_rng(2)
    heads = rng.integers(0, 300, 3000).astype(np.int32)
    tails = rng.integers(0, 300, 3000).astype(np.int32)
    known = host.table.any_neighbour(heads, graph_lib.hash_u32(1, np.arange(3000)))
    tails[::3] = np.where(known[::3] >= 0, known[::3], tails[::3])    # many true edges
    want = host.table.contains(heads, tails)
    self.assertGreater(want.sum(), 500)
    got = jax.jit(lambda h, t: db.contains(tables, h, t, spec))(heads, tails)
    np.testing.assert_array_equal(np.asarray(got), want)


class SameBatchesTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("two_shards_every_term", {}),
      ("one_shard", dict(num_shards=1)),
      ("four_shards_no_triplets", dict(num_shards=4, relational_edges=0)),
      ("plain", dict(names=False, groups=False, random_concepts=0, hard_negatives=0,
                     added=False, segments=False)),
      ("two_segments", dict(max_segments=2)),
      ("high_degree_fanout", dict(fanout=3, edges=6000, num_concepts=120)),
      ("heldout_terms", dict(heldout=True)),
  )
  def test_device_batches_equal_the_host_batches(self, overrides):
    host, tables, spec = setting(**overrides)
    order = pipeline.epoch_order(np.arange(host.lists.dataset.num_pairs - 7), 3, 2, 1)
    shapes = db.plan_capacities(tables, [order], 11, host.shapes, spec)
    host.shapes = shapes
    build = jax.jit(lambda t, p, step: db.build_batch(t, p, step, shapes, spec))
    bsz = shapes.batch_size
    for i in range(0, -(-len(order) // bsz), 3):       # every third batch, the last one too
      part = order[i * bsz:(i + 1) * bsz]
      padded = np.full(bsz, -1, np.int32)
      padded[:len(part)] = part
      assert_same_batch(self, host.build(part, 11 + i),
                        build(tables, padded, np.int32(11 + i)), f"batch {i}: ")
    self.assertEqual(host.growths, 0)                     # the plan held every batch

  def test_streamed_text_rows_give_the_same_batch(self):
    host, tables, spec = setting()
    shapes = db.plan_capacities(tables, [np.arange(64)], 0, host.shapes, spec)
    host.shapes = shapes
    pairs = np.concatenate([np.arange(40), np.full(24, -1)]).astype(np.int32)[:32]
    rows = db.host_text_rows(host.text, pairs)
    seg_rows = db.host_segment_rows(host.segments, pairs)
    without_text = {k: v for k, v in tables.items() if k not in ("text", "segments")}
    got = jax.jit(lambda t, p, r, sr: db.build_batch(t, p, np.int32(4), shapes, spec,
                                                     text_rows=r, segment_rows=sr))(
        without_text, pairs, rows, seg_rows)
    assert_same_batch(self, host.build(pairs[pairs >= 0], 4), got)

  def test_segments_are_each_pairs_first_clauses(self):
    host, _, _ = setting(max_segments=4)
    pairs = np.arange(32)
    batch = host.build(pairs, 0)
    rows = batch["segments"].reshape(-1, 3, 8)
    mask = batch["segment_mask"].reshape(-1, 3)
    segs = host.segments
    for i, p in enumerate(pairs):
      n = min(int(segs.lengths[p]), 3)
      np.testing.assert_array_equal(mask[i], np.arange(3) < n)
      np.testing.assert_array_equal(rows[i, :n], segs.rows[segs.starts[p]:segs.starts[p] + n])
      self.assertFalse(rows[i, n:].any())
    self.assertGreater(host.segments.truncated, 0)       # pairs of 4-5 clauses: 3 kept
    with self.assertRaisesRegex(ValueError, "max_segments_per_pair=1 must be"):
      pipeline.PairSegments(segs, 1)

  def test_a_padded_batch_and_empty_shards(self):
    host, tables, spec = setting(num_shards=4, batch_size=32)
    shapes = db.plan_capacities(tables, [np.arange(64)], 0, host.shapes, spec)
    host.shapes = shapes
    pairs = np.full(32, -1, np.int32)
    pairs[:9] = np.arange(9)                     # shards 2 and 3 have no pair
    got = jax.jit(lambda t, p: db.build_batch(t, p, np.int32(0), shapes, spec))(tables, pairs)
    assert_same_batch(self, host.build(np.arange(9), 0), got)
    self.assertFalse(np.asarray(got["pair_mask"][2:]).any())

  def test_oversized_graphs_are_refused(self):
    host, _, _ = setting()
    with self.assertRaisesRegex(ValueError, "32-bit positions overflow"):
      db.make_tables(host.lists, host.table, None, None, None, None, 0, 0, 0, 2**31,
                     np.float32)


if __name__ == "__main__":
  absltest.main()
