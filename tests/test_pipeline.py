"""Host batches (the reference builder): planned capacities, shards left empty, the extra
receivers (names, groups, random and hard negatives)."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from line_jax.benchmarks import train_step as bench_train
from line_jax.training import device_batches
from line_jax.model import graph as graph_lib
from line_jax.training import host_batches as pipeline


def builder(num_pairs, batch_size, num_shards, relational_edges, edge_block=4):
  ds = bench_train.synthetic_dataset(num_pairs, 300, 1200, 3, 4, seed=1)
  lists = pipeline.PairLists(ds, 16)
  table = graph_lib.NeighbourTable.from_dataset(ds, True)
  text = np.zeros((num_pairs, 8), np.float32)
  shapes = pipeline.batch_shapes(lists, batch_size, num_shards, 3, 2, relational_edges,
                                 edge_block)
  return pipeline.BatchBuilder(lists, table, text, shapes, seed=0)


def device_tables(b):
  """(tables, spec) of the device builder for host builder `b`'s data and settings."""
  return device_batches.make_tables(
      b.lists, b.table, None, None, None, b.hard, b.hard_negatives, b.random_concepts, b.seed,
      b.shapes.fanout, b.text.dtype)


def plan(b, order, first_step=0):
  """Sets the builder's capacities to those planned for the batches of `order`."""
  tables, spec = device_tables(b)
  b.shapes = device_batches.plan_capacities(jax.tree.map(jnp.asarray, tables), [order],
                                            first_step, b.shapes, spec)
  return b.shapes


class PipelineTest(absltest.TestCase):

  def test_a_shard_without_pairs_builds(self):
    # 21 pairs over 4 shards of 8: the last shard has none, and no triplets either.
    b = builder(21, 32, 4, relational_edges=0)
    plan(b, np.arange(21))
    out = b.build(np.arange(21), 0)
    self.assertEqual(int(out["pair_mask"][3].sum()), 0)
    self.assertEqual(int(out["pair_mask"].sum()), 21)
    self.assertEqual(int(out["graph"].edges["mask"][3].sum()), 0)
    self.assertEqual(graph_lib.num_edges(np.zeros((0, 3, 2), bool), 4), 0)

  def test_planned_capacities_are_the_largest_needs(self):
    b = builder(2048, 64, 2, relational_edges=8)
    order = np.random.default_rng(0).permutation(2048)
    shapes = plan(b, order, first_step=5)
    needs = np.array([b._plan(order[i:i + 64], 5 + i // 64)[2] for i in range(0, 2048, 64)])
    most = needs.max(0)
    self.assertEqual(shapes.positive_slots, -(-most[0] // 8) * 8)     # exact, rounded up
    self.assertEqual(shapes.negated_slots, -(-most[1] // 8) * 8)
    self.assertEqual(shapes.edges, -(-most[2] // 256) * 256)
    self.assertEqual(shapes.edges % 4, 0)
    for i in range(0, 2048, 64):
      b.build(order[i:i + 64], 5 + i // 64)
    self.assertEqual(b.growths, 0)
    # Plans of other lengths (32 batches above, 3 and 17 here: a stage's length) run the
    # same compiled program, which takes 16 batches a call.
    needs_fn = device_batches._needs_fn(shapes, device_tables(b)[1])
    compiled = needs_fn._cache_size()
    for length in (3 * 64, 17 * 64):
      plan(b, order[:length])
    self.assertEqual(needs_fn._cache_size(), compiled)

  def test_name_rows_and_groups_follow_the_receivers(self):
    b = builder(64, 32, 2, relational_edges=8)
    rng = np.random.default_rng(0)
    names = rng.standard_normal((300, 5)).astype(np.float32)
    groups = rng.integers(0, 100, 300)
    b = pipeline.BatchBuilder(b.lists, b.table, b.text, b.shapes, 0, names=names,
                              groups=groups)
    plan(b, np.arange(64))
    out = b.build(np.arange(32), 0)
    u = b.shapes.positive_slots
    for s in range(2):
      real = out["receiver_real"][s, :u]
      rows = out["graph"].nodes["row"][s, :u][real]
      np.testing.assert_array_equal(out["name_text"][s, :u][real], names[rows])
      np.testing.assert_array_equal(out["receiver_group"][s, :u][real], groups[rows])
      self.assertFalse(out["name_text"][s, :u][~real].any())
      pad = out["receiver_group"][s, :u][~real]
      self.assertTrue((pad < 0).all())                   # padding matches no group
      self.assertLen(np.unique(pad), len(pad))
    plain = builder(64, 32, 2, relational_edges=8).build(np.arange(32), 0)
    self.assertNotIn("name_text", plain)
    self.assertNotIn("receiver_group", plain)

  def test_random_concepts_join_the_receivers(self):
    base = builder(64, 32, 2, relational_edges=0)
    b = pipeline.BatchBuilder(base.lists, base.table, base.text, base.shapes, 0,
                              random_concepts=40)
    plan(b, np.arange(64))
    plan(base, np.arange(64))
    receivers = lambda bb, step: [set(bb._plan(np.arange(32), step)[1][s]["pos"].tolist())
                                  for s in range(2)]
    listed = receivers(base, 0)
    first, again, later = receivers(b, 0), receivers(b, 0), receivers(b, 1)
    for s in range(2):
      self.assertTrue(listed[s] < first[s])                 # listed ones kept, others added
      self.assertGreater(len(first[s] - listed[s]), 25)     # 40 draws, few collisions
      self.assertEqual(first[s], again[s])                  # a function of (seed, step)
      self.assertNotEqual(first[s], later[s])
    self.assertNotEqual(first[0] - listed[0], first[1] - listed[1])   # shards draw apart
    out = b.build(np.arange(32), 0)
    self.assertEqual(int(out["receiver_real"][0].sum()) - int(out["neg_weight"][0].astype(
        bool).sum()), len(first[0]))

  def test_hard_neighbour_table_matches_a_brute_force_search(self):
    rng = np.random.default_rng(3)
    concepts = rng.standard_normal((60, 6)).astype(np.float32)
    groups = rng.integers(0, 20, 60)
    rows = np.array([0, 5, 5, 17, 59])
    hard = pipeline.hard_neighbour_table(concepts, groups, rows, pool=4)
    self.assertEqual(hard.shape, (60, 4))
    unit = concepts / np.linalg.norm(concepts, axis=1, keepdims=True)
    for r in range(60):
      if r not in rows:
        self.assertTrue((hard[r] == -1).all())
        continue
      order = np.argsort(-(unit @ unit[r]), kind="stable")
      want = [c for c in order if groups[c] != groups[r]][:4]
      np.testing.assert_array_equal(hard[r], want)
    # A dictionary with fewer other-term concepts than the pool: the rest stays -1.
    small = pipeline.hard_neighbour_table(concepts[:3], np.array([0, 0, 1]), [0, 2], pool=4)
    np.testing.assert_array_equal(small[0], [2, -1, -1, -1])
    self.assertEqual(set(small[2][:2].tolist()), {0, 1})
    np.testing.assert_array_equal(small[2][:2], sorted(small[2][:2],
                                                       key=lambda c: -(unit[c] @ unit[2])))
    self.assertTrue((small[1] == -1).all())

  def test_hard_negatives_join_the_receivers(self):
    base = builder(64, 32, 2, relational_edges=0)
    n = base.num_concepts
    # Pools planted far from anything listed: concept c's pool is {c + 150} mod n, c + 151.
    hard = np.stack([(np.arange(n) + 150) % n, (np.arange(n) + 151) % n], 1)
    hard[::7, 1] = -1                                       # holes are skipped
    b = pipeline.BatchBuilder(base.lists, base.table, base.text, base.shapes, 0, hard=hard,
                              hard_negatives=3)
    plan(b, np.arange(64))
    plan(base, np.arange(64))
    plans, again = b._plan(np.arange(32), 0)[1], b._plan(np.arange(32), 0)[1]
    base_plans = base._plan(np.arange(32), 0)[1]
    for s in range(2):
      listed = np.unique(np.concatenate([idx[~neg] for idx, neg in plans[s]["occ"]]))
      added = set(plans[s]["pos"].tolist()) - set(base_plans[s]["pos"].tolist())
      pools = set(hard[listed].reshape(-1).tolist()) - {-1}
      self.assertTrue(added <= pools)                       # only from listed concepts' pools
      self.assertGreater(len(added), 0.5 * len(pools - set(base_plans[s]["pos"].tolist())))
      np.testing.assert_array_equal(plans[s]["pos"], again[s]["pos"])   # (seed, step, shard)
    off = pipeline.BatchBuilder(base.lists, base.table, base.text, base.shapes, 0, hard=hard,
                                hard_negatives=0)
    np.testing.assert_array_equal(off._plan(np.arange(32), 0)[1][0]["pos"], base_plans[0]["pos"])

  def test_edge_block_is_validated(self):
    with self.assertRaisesRegex(ValueError, "edge_block=0 must be at least 1"):
      builder(64, 64, 1, relational_edges=8, edge_block=0)


if __name__ == "__main__":
  absltest.main()
