"""Residual recovery on a constructed case where the right answer is known exactly."""

import dataclasses
import os

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from line_jax.benchmarks import train_step as bench_train
from line_jax import config as config_lib
from line_jax.model import graph as graph_lib
from line_jax.model import network as model
from line_jax.training import host_batches as pipeline
from line_jax.model import projection
from line_jax.training import recovery
from line_jax.search import terms
from line_jax.data import dataset as ds_lib


class RecoveryTest(parameterized.TestCase):

  def constructed_case(self):
    """Four pairs over 40 orthonormal concepts whose right additions are known (below)."""
    rng = np.random.default_rng(0)
    n, d = 40, 64
    x = np.linalg.qr(rng.normal(size=(d, d)))[0][:n]            # orthonormal concept rows
    ids = [f"C{j}" for j in range(n)]
    # Concepts 0..29 have no edge (G = identity on them); 38-39 carry the one relation.
    pairs = dict(pair_id=["p0", "p1", "p2", "p3"], text=["a", "b", "c", "d"],
                 concept_ids=[["C0", "C1"], ["C2"], ["C3", "C4"], ["C5"]],
                 negated=[[False, False], [False], [False, False], [False]],
                 rho=[1.0] * 4, split=["train"] * 4)
    root = os.path.join(self.create_tempdir().full_path, "d")
    ds_lib.write_dataset(root, dict(concept_id=ids, name=ids),
                         dict(head_id=["C38"], tail_id=["C39"], relation=["r"]), pairs)
    ds = ds_lib.load_dataset(root)
    # p0 misses C10; p1 misses nothing; p2's residual points at C3 (present) then C20 (weaker);
    # p3's residual is at cosine 0.8 to C11 only (below the threshold).
    text = np.stack([
        (x[0] + x[1]) / 2 + x[10],
        x[2],
        (x[3] + x[4]) / 2 + 0.8 * x[3] + 0.7 * x[20],
        x[5] + 0.8 * x[11] + 0.6 * x[12],
    ]).astype(np.float32)
    params = model.init_params(jax.random.PRNGKey(0), d, d, d, 1, init="identity")
    table = graph_lib.NeighbourTable.from_dataset(ds)
    lists = pipeline.PairLists(ds, 8)
    cfg = config_lib.base_config()
    cfg.recovery.threshold = 0.5
    cfg.recovery.dictionary_chunk = 16
    return ds, params, table, lists, text, x, cfg

  def test_recovers_the_missing_concept_and_never_a_present_one(self):
    ds, params, table, lists, text, x, cfg = self.constructed_case()
    added, info = recovery.recover(params, lists, text, table, jnp.asarray(x, jnp.float32),
                                   jnp.asarray(x, jnp.float32), cfg, np.arange(4))
    self.assertEqual(added[0], 10)
    self.assertEqual(added[1], -1)
    self.assertEqual(added[2], 20)      # C3 is closer but already in the list
    self.assertEqual(added[3], 11)      # 0.8 / 1.0 >= 0.5
    self.assertEqual(info["gained"], 3)
    cfg.recovery.threshold = 0.9
    added, info = recovery.recover(params, lists, text, table, jnp.asarray(x, jnp.float32),
                                   jnp.asarray(x, jnp.float32), cfg, np.arange(4))
    np.testing.assert_array_equal(added, [10, -1, -1, -1])
    self.assertEqual(info["gained"], 1)
    self.assertFalse(info["by_term"])
    # The completion gain finds the same missing concept of p0, and skips p2's listed C3.
    cfg.recovery.estimator = "completion_gain"
    cfg.recovery.threshold = 0.05
    added, info = recovery.recover(params, lists, text, table, jnp.asarray(x, jnp.float32),
                                   jnp.asarray(x, jnp.float32), cfg, np.arange(4))
    self.assertTrue(info["by_term"])
    self.assertEqual(added[0], 10)
    self.assertEqual(added[2], 20)
    self.assertNotIn(added[1], (2,))
    # The margin over the runner-up: p3's 0.8 vs 0.6 is no clear winner.
    cfg.recovery.estimator = "residual"
    cfg.recovery.confidence = "margin"
    cfg.recovery.threshold = 0.3
    added, info = recovery.recover(params, lists, text, table, jnp.asarray(x, jnp.float32),
                                   jnp.asarray(x, jnp.float32), cfg, np.arange(4))
    self.assertEqual(added[0], 10)
    self.assertEqual(added[3], -1)


  def test_never_adds_a_held_out_term(self):
    """A concept held out of training (data.heldout_terms) is never added: p0's missing C10
    is not, the other pairs' additions stay."""
    ds, params, table, lists, text, x, cfg = self.constructed_case()
    marked = pipeline.PairLists(dataclasses.replace(ds, heldout_concepts=np.int32([10])), 8)
    added, info = recovery.recover(params, marked, text, table, jnp.asarray(x, jnp.float32),
                                   jnp.asarray(x, jnp.float32), cfg, np.arange(4))
    np.testing.assert_array_equal(added, [-1, -1, 20, 11])
    self.assertEqual(info["gained"], 2)
  def test_segment_recovery_adds_what_an_unexplained_clause_names(self):
    rng = np.random.default_rng(1)
    n, d = 40, 64
    x = np.linalg.qr(rng.normal(size=(d, d)))[0][:n]
    ids = [f"C{j}" for j in range(n)]
    groups = ["finding"] * 30 + ["Clinical modifier"] * 10
    pairs = dict(pair_id=["p0", "p1", "p2", "p3"],
                 text=["C0, C10", "C2, mild", "C3 and near21", "C5"],
                 concept_ids=[["C0"], ["C2"], ["C3"], ["C5"]],
                 negated=[[False], [False], [False], [False]],
                 rho=[1.0] * 4, split=["train"] * 4)
    root = os.path.join(self.create_tempdir().full_path, "d")
    ds_lib.write_dataset(root, dict(concept_id=ids, name=ids, group=groups),
                         dict(head_id=["C38"], tail_id=["C39"], relation=["r"]), pairs)
    ds = ds_lib.load_dataset(root)
    clause = {"C0": x[0], "C10": x[10], "C2": x[2], "mild": x[30], "C3": x[3],
              "near21": 0.8 * x[21] + 0.6 * x[3], "C5": x[5]}
    strings = []

    def embed(batch):
      strings.extend(batch)
      return np.stack([clause[b] for b in batch]).astype(np.float32)
    params = model.init_params(jax.random.PRNGKey(0), d, d, d, 1, init="identity")
    table = graph_lib.NeighbourTable.from_dataset(ds)
    lists = pipeline.PairLists(ds, 8)
    cfg = config_lib.base_config()
    cfg.recovery.update(dict(estimator="segment", threshold=0.5, dictionary_chunk=16,
                             segment_skip_groups=("Clinical modifier",), segment_explained_k=3))
    xt = jnp.asarray(x, jnp.float32)
    text = np.zeros((4, d), np.float32)     # the whole texts' rows are not read
    added, info = recovery.recover(params, lists, text, table, xt, xt, cfg, np.arange(4),
                                   embed_strings=embed)
    # p0: "C10" names an unlisted concept; p1: "mild" is a modifier; p2: the clause's
    # runner-up C3 is listed, so the list explains it; p3 has no clause.
    np.testing.assert_array_equal(added, [10, -1, -1, -1])
    self.assertEqual(sorted(strings), sorted(["C0", "C10", "C2", "mild", "C3", "near21"]))
    cfg.recovery.segment_explained_k = 1   # only the best term explains: near21 -> C21
    added, _ = recovery.recover(params, lists, text, table, xt, xt, cfg, np.arange(4),
                                embed_strings=embed)
    np.testing.assert_array_equal(added, [10, -1, 21, -1])
    cfg.recovery.threshold = 0.9           # C21 at cosine 0.8 is below it
    added, _ = recovery.recover(params, lists, text, table, xt, xt, cfg, np.arange(4),
                                embed_strings=embed)
    np.testing.assert_array_equal(added, [10, -1, -1, -1])
    cfg.recovery.segment_skip_groups = ()          # a modifier may be added when not skipped
    cfg.recovery.threshold = 0.5
    added, _ = recovery.recover(params, lists, text, table, xt, xt, cfg, np.arange(4),
                                embed_strings=embed)
    np.testing.assert_array_equal(added, [10, 30, 21, -1])
    with self.assertRaisesRegex(ValueError, "needs a teacher 1 that embeds new strings"):
      recovery.recover(params, lists, text, table, xt, xt, cfg, np.arange(4))

  def test_addition_precision_against_true_lists(self):
    ids = ["C0", "C1", "C2", "C3"]
    pairs = dict(pair_id=["p0", "p1", "p2"], text=["a", "b", "c"],
                 concept_ids=[["C0"], ["C1"], ["C2"]], negated=[[False]] * 3,
                 rho=[1.0] * 3, split=["valid"] * 3,
                 true_concept_ids=[["C0", "C3"], ["C1", "C2"], ["C2"]],
                 synthetic=[True, True, False])
    root = os.path.join(self.create_tempdir().full_path, "d")
    ds_lib.write_dataset(root, dict(concept_id=ids, name=ids),
                         dict(head_id=["C0"], tail_id=["C1"], relation=["r"]), pairs)
    ds = ds_lib.load_dataset(root)
    check = recovery.validation_pairs(ds)
    np.testing.assert_array_equal(check, [0, 1])
    out = recovery.addition_precision(ds, check, np.array([3, 0]), terms.dataset_groups(ds))
    self.assertEqual((out["added"], out["correct"], out["missing"]), (2, 1, 2))
    self.assertAlmostEqual(out["precision"], 0.5)

  def test_project_concepts_is_chunk_invariant(self):
    rng = np.random.default_rng(1)
    n, d = 23, 8
    table = graph_lib.NeighbourTable.build(rng.integers(0, n, 40), rng.integers(0, n, 40),
                                           rng.integers(0, 2, 40), n, 2)
    emb = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    params = model.init_params(jax.random.PRNGKey(0), d, d, d, 2, init="lecun")
    outs = [projection.project_concepts(
        params, table, emb, emb, np.arange(n), np.zeros(n, bool),
        projection.ProjectionSettings(fanout=3, chunk=chunk, slope=0.2, normalize=False))
            for chunk in (5, 23, 64)]
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outs[0], outs[2], rtol=1e-5, atol=1e-6)


  def _random_case(self, seed=3, num_pairs=60, num_concepts=50, d=16):
    """Random lists with negated mentions (max 8 per pair, some truncated), some pairs with
    a recovered concept already, a random graph and random teacher rows."""
    ds = bench_train.synthetic_dataset(num_pairs, num_concepts, 200, 3, 6, seed=seed)
    lists = pipeline.PairLists(ds, 8)
    rng = np.random.default_rng(seed)
    lists.added[rng.choice(num_pairs, num_pairs // 4, replace=False)] = rng.integers(
        0, num_concepts, num_pairs // 4)
    table = graph_lib.NeighbourTable.from_dataset(ds)
    emb = rng.standard_normal((num_concepts, d)).astype(np.float32)
    text = rng.standard_normal((num_pairs, d)).astype(np.float32)
    return ds, lists, table, emb, text

  def test_padded_lists_match_the_per_pair_lists(self):
    ds, lists, _, _, _ = self._random_case()
    self.assertGreater(lists.truncated, 0)
    rows = np.array([5, 0, 59, 17, 17])
    idx, neg, real = lists.padded(rows)
    self.assertEqual(idx.shape, (5, lists.max_concepts))
    for r, i in enumerate(rows):
      want_idx, want_neg = lists.concepts(int(i))
      np.testing.assert_array_equal(idx[r][real[r]], want_idx)
      np.testing.assert_array_equal(neg[r][real[r]], want_neg)
      self.assertFalse(neg[r][~real[r]].any())
    self.assertTrue(ds.negated_flat.any())

  def test_pair_residuals_match_the_mean_of_each_list(self):
    ds, lists, _, emb, text = self._random_case()
    rng = np.random.default_rng(4)
    neg_concepts = np.unique(ds.concept_flat[ds.negated_flat])
    neg_rows = rng.standard_normal((len(neg_concepts), emb.shape[1])).astype(np.float32)
    rows = np.arange(0, 60, 2)
    got = recovery.pair_residuals(lists.padded(rows), text[rows], emb, neg_concepts,
                                  neg_rows)
    negated = dict(zip(neg_concepts.tolist(), neg_rows))
    for r, i in enumerate(rows):
      idx, neg = lists.concepts(int(i))
      members = [negated[int(j)] if n else emb[int(j)] for j, n in zip(idx, neg)]
      np.testing.assert_allclose(got[r], text[i] - np.mean(members, axis=0), rtol=1e-5,
                                 atol=1e-6)

  def test_choose_additions_takes_the_best_new_candidate_above_threshold(self):
    _, lists, _, _, _ = self._random_case()
    rng = np.random.default_rng(5)
    rows = np.arange(60)
    candidates = rng.integers(0, 50, (60, 6)).astype(np.int32)
    for r in range(0, 60, 3):     # the best candidates already in the list: must be skipped
      candidates[r, :2] = lists.concepts(r)[0][0]
    scores = -np.sort(-rng.uniform(0.0, 1.0, (60, 6)), axis=1).astype(np.float32)
    got = recovery.choose_additions(scores, candidates, lists.padded(rows), 0.4)
    for r in rows:
      present = set(lists.concepts(int(r))[0].tolist())
      want = next((int(j) for sc, j in zip(scores[r], candidates[r])
                   if sc >= 0.4 and int(j) not in present), -1)
      self.assertEqual(got[r], want, msg=f"row {r}")
    self.assertGreater((got >= 0).sum(), 0)
    self.assertGreater((got < 0).sum(), 0)

  @parameterized.parameters(1, 7, 64)
  def test_recovery_in_pair_blocks_gives_the_one_block_answer(self, block):
    ds, lists, table, emb, text = self._random_case()
    params = model.init_params(jax.random.PRNGKey(0), 16, 16, 16, 3, init="lecun")
    cfg = config_lib.base_config()
    cfg.recovery.threshold = 0.3
    cfg.recovery.dictionary_chunk = 16
    pairs = np.arange(1, 60, 2)
    table_j = jnp.asarray(emb)
    cfg.recovery.pair_block = 100000
    want, want_info = recovery.recover(params, lists, text, table, table_j, table_j, cfg, pairs)
    self.assertGreater(want_info["gained"], 0)
    self.assertTrue((want[::2] == -1).all())          # only the pairs asked for
    cfg.recovery.pair_block = block
    got, info = recovery.recover(params, lists, text, table, table_j, table_j, cfg, pairs)
    np.testing.assert_array_equal(got, want)
    self.assertEqual(info["gained"], want_info["gained"])
    self.assertAlmostEqual(info["mean_best_cosine"], want_info["mean_best_cosine"], places=6)

  def test_bad_pair_block_is_refused(self):
    ds, lists, table, emb, text = self._random_case()
    params = model.init_params(jax.random.PRNGKey(0), 16, 16, 16, 3, init="lecun")
    cfg = config_lib.base_config()
    cfg.recovery.pair_block = 0
    with self.assertRaisesRegex(ValueError, "recovery.pair_block=0"):
      recovery.recover(params, lists, text, table, jnp.asarray(emb), jnp.asarray(emb), cfg,
                       np.arange(4))

if __name__ == "__main__":
  absltest.main()
