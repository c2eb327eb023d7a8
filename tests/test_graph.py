"""Neighbour tables and sampling."""

from absl.testing import absltest, parameterized
import numpy as np

from line_jax.model import graph as graph_lib


class GraphTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    # concept 0 has 10 type-0 neighbours, 2 type-1; edge 3-4 given twice; a self edge;
    # concept 13 has no edge.
    heads = [0] * 10 + [0, 0, 3, 4, 5]
    tails = list(range(1, 11)) + [11, 12, 4, 3, 5]
    types = [0] * 10 + [1, 1, 1, 1, 0]
    self.table = graph_lib.NeighbourTable.build(np.array(heads), np.array(tails),
                                                np.array(types), 14, 2, symmetric=True)

  def test_degrees_symmetric_deduplicated_no_self(self):
    deg = self.table.degree(np.array([0, 1, 3, 4, 5, 13]))
    np.testing.assert_array_equal(deg, [[10, 2], [1, 0], [1, 1], [1, 1], [1, 0], [0, 0]])

  @parameterized.parameters(0, 1, 2, 3)
  def test_sampling_no_duplicates_masks_and_membership(self, step):
    ids, mask = graph_lib.sample_neighbours(self.table, np.array([0, 3, 13]), 4, seed=7,
                                            step=step)
    self.assertEqual(ids.shape, (3, 2, 4))
    np.testing.assert_array_equal(mask.sum(-1), [[4, 2], [1, 1], [0, 0]])
    chosen = ids[0, 0][mask[0, 0]]
    self.assertLen(set(chosen.tolist()), 4)
    self.assertTrue(set(chosen.tolist()) <= set(range(1, 11)))
    self.assertEqual(ids[1, 1, 0], 4)

  def test_sampling_is_counter_based(self):
    a = graph_lib.sample_neighbours(self.table, np.array([0, 3]), 4, seed=1, step=5)[0]
    b = graph_lib.sample_neighbours(self.table, np.array([3, 0, 0]), 4, seed=1, step=5)[0]
    np.testing.assert_array_equal(a[0], b[1])
    np.testing.assert_array_equal(a[0], b[2])
    c = graph_lib.sample_neighbours(self.table, np.array([0]), 4, seed=1, step=6)[0]
    self.assertFalse(np.array_equal(a[0], c[0]))   # a new step draws anew

  def test_sampling_is_uniform_over_neighbours(self):
    counts = np.zeros(14)
    for step in range(2000):
      ids, mask = graph_lib.sample_neighbours(self.table, np.array([0]), 4, seed=0, step=step)
      np.add.at(counts, ids[0, 0][mask[0, 0]], 1)
    freq = counts[1:11] / 2000
    np.testing.assert_allclose(freq, 0.4, atol=0.05)   # F / deg = 4 / 10

  def test_deterministic_mode(self):
    a = graph_lib.sample_neighbours(self.table, np.array([0]), 4, deterministic=True)
    b = graph_lib.sample_neighbours(self.table, np.array([0]), 4, seed=9, step=9,
                                    deterministic=True)
    np.testing.assert_array_equal(a[0], b[0])

  def test_build_graph_compact_layout(self):
    ids, mask = graph_lib.sample_neighbours(self.table, np.array([0, 3]), 3, seed=0)
    self.assertEqual(graph_lib.num_edges(mask), 3 + 2 + 1 + 1)
    g = graph_lib.build_graph(np.array([0, 3]), np.array([False, True]), ids, mask, 10)
    self.assertEqual(g.senders.shape, (10,))
    self.assertEqual(g.nodes["row"].shape, (12,))
    self.assertEqual(int(g.edges["mask"].sum()), 7)
    segments = g.receivers * 2 + g.edges["type"]
    self.assertTrue((np.diff(segments) >= 0).all())              # sorted for segment ops
    np.testing.assert_array_equal(g.receivers[:7], [0, 0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(g.edges["type"][:7], [0, 0, 0, 1, 1, 0, 1])
    np.testing.assert_array_equal(g.nodes["row"][g.senders[:3]], ids[0, 0])
    np.testing.assert_array_equal(g.nodes["row"][g.senders[5:7]], [0, 4])
    np.testing.assert_array_equal(g.nodes["negated"][:2], [False, True])
    self.assertFalse(g.nodes["negated"][2:].any())
    g2 = graph_lib.build_graph(np.array([0, 3]), np.array([False, True]), ids, mask)
    np.testing.assert_array_equal(g2.receivers, g.receivers[:7])
    with self.assertRaisesRegex(ValueError, "needs 7 edges, capacity is 5"):
      graph_lib.build_graph(np.array([0, 3]), np.array([False, True]), ids, mask, 5)

  @parameterized.parameters(2, 3, 4)
  def test_build_graph_blocks_belong_to_one_receiver(self, block):
    receivers = np.array([0, 3, 13, 1])
    ids, mask = graph_lib.sample_neighbours(self.table, receivers, 3, seed=0)
    counts = mask.reshape(4, -1).sum(1)
    need = int((-(-counts // block) * block).sum())
    self.assertEqual(graph_lib.num_edges(mask, block), need)
    cap = need + 2 * block
    g = graph_lib.build_graph(receivers, np.zeros(4, bool), ids, mask, cap, block)
    self.assertEqual(g.receivers.shape, (cap,))
    self.assertEqual(int(g.edges["mask"].sum()), int(mask.sum()))     # no edge lost or added
    blocks = g.receivers.reshape(-1, block)
    self.assertTrue((blocks == blocks[:, :1]).all())                 # one receiver per block
    np.testing.assert_array_equal(g.globals["block_receivers"][0], blocks[:, 0])
    segments = g.receivers * self.table.num_types + g.edges["type"]
    self.assertTrue((np.diff(segments) >= 0).all())                  # still sorted
    rows = g.nodes["row"][len(receivers):]
    for r in range(4):       # each receiver's real edges: its sampled neighbours, in order
      here = (g.receivers == r) & g.edges["mask"]
      np.testing.assert_array_equal(rows[here], ids[r][mask[r]])
      np.testing.assert_array_equal(g.edges["type"][here],
                                    np.nonzero(mask[r])[0])
    with self.assertRaisesRegex(ValueError, "multiple of the block"):
      graph_lib.build_graph(receivers, np.zeros(4, bool), ids, mask, cap + 1, block)
    with self.assertRaisesRegex(ValueError, f"needs {need} edges"):
      graph_lib.build_graph(receivers, np.zeros(4, bool), ids, mask, need - block, block)

  def test_contains_and_any_neighbour(self):
    np.testing.assert_array_equal(
        self.table.contains(np.array([0, 0, 3, 1]), np.array([5, 12, 4, 2])),
        [True, True, True, False])
    words = (np.array([0.99, 0.5, 0.0, 0.9]) * 2**32).astype(np.uint32)
    nb = self.table.any_neighbour(np.array([0, 13, 3, 3]), words)
    self.assertIn(nb[0], range(1, 13))
    self.assertEqual(nb[1], -1)
    self.assertEqual(nb[2], 0)     # type 0 first
    self.assertEqual(nb[3], 4)     # then type 1


  def test_draw_below_is_exact_integer_range_reduction(self):
    words = np.array([0, 1, 2**31, 2**32 - 1], np.uint32)
    for n in (1, 7, 10**6, 2**31 + 5):
      expect = [(int(w) * n) >> 32 for w in words]        # Python integers: exact
      np.testing.assert_array_equal(graph_lib.draw_below(words, n), expect)
      self.assertTrue((graph_lib.draw_below(words, n) < n).all())

  @parameterized.parameters((10, 4), (9, 4), (5, 4), (13, 3), (8, 8))
  def test_systematic_positions_each_item_exactly_fanout_over_degree(self, degree, fanout):
    # Every start r in [0, degree * fanout) once: each item must be taken by exactly
    # fanout starts (probability fanout / degree), never twice by one start.
    starts = np.arange(degree * fanout, dtype=np.uint64)
    words = (((starts << np.uint64(32)) + np.uint64(degree * fanout - 1))
             // np.uint64(degree * fanout)).astype(np.uint32)   # draw_below(words) = starts
    np.testing.assert_array_equal(graph_lib.draw_below(words, degree * fanout), starts)
    pos = graph_lib.systematic_positions(words, np.full(len(words), degree), fanout)
    self.assertEqual(pos.shape, (len(words), fanout))
    for row in pos:
      self.assertLen(set(row.tolist()), fanout)
    np.testing.assert_array_equal(np.bincount(pos.reshape(-1), minlength=degree),
                                  np.full(degree, fanout * fanout))

  def test_hash_words_depend_on_every_key_and_look_uniform(self):
    a = graph_lib.hash_u32(1, 2, np.arange(100000), 3)
    self.assertEqual(a.dtype, np.uint32)
    self.assertGreater(len(np.unique(a)), 99990)
    self.assertFalse(np.array_equal(a, graph_lib.hash_u32(1, 2, np.arange(100000), 4)))
    self.assertFalse(np.array_equal(a, graph_lib.hash_u32(2, 1, np.arange(100000), 3)))
    hist = np.bincount(a >> np.uint32(28), minlength=16) / len(a)
    np.testing.assert_allclose(hist, 1 / 16, atol=0.005)


if __name__ == "__main__":
  absltest.main()
