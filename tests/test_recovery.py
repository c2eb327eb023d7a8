"""Residual recovery on a constructed case where the right answer is known exactly."""

import os

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from line_jax import config as config_lib
from line_jax import graph as graph_lib
from line_jax import model, pipeline, recovery
from line_jax.data import dataset as ds_lib


class RecoveryTest(absltest.TestCase):

  def test_recovers_the_missing_concept_and_never_a_present_one(self):
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

  def test_project_concepts_is_chunk_invariant(self):
    rng = np.random.default_rng(1)
    n, d = 23, 8
    table = graph_lib.NeighbourTable.build(rng.integers(0, n, 40), rng.integers(0, n, 40),
                                           rng.integers(0, 2, 40), n, 2)
    emb = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    params = model.init_params(jax.random.PRNGKey(0), d, d, d, 2, init="lecun")
    outs = [recovery.project_concepts(params, table, emb, emb, np.arange(n), np.zeros(n, bool),
                                      3, chunk, 0.2, False) for chunk in (5, 23, 64)]
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outs[0], outs[2], rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
  absltest.main()
