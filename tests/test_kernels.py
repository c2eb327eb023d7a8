"""The fused CPU attention kernel (line_jax.kernels) against the numpy reference and the XLA
path: values, gradients, threads, layouts, the train loss, fallbacks and bad input."""

import os
import shutil
import subprocess
import sys

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import numpy as np

from line_jax import graph as graph_lib
from line_jax import kernels
from line_jax import model
from test_model import random_setup, reference_g


def needs_kernel(test):
  if not kernels.available():
    test.skipTest(f"kernel unavailable: {kernels.unavailable_reason()}")


class KernelTest(parameterized.TestCase):

  def test_builds_where_a_compiler_is(self):
    if not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")):
      self.skipTest("no C++ compiler on this machine")
    self.assertTrue(kernels.available(), kernels.unavailable_reason())

  @parameterized.product(seed=(0, 1, 2), block=(1, 4), threads=(1, 2, 3))
  def test_matches_reference(self, seed, block, threads):
    needs_kernel(self)
    params, concepts, negated, table, recv, recv_neg, ids, mask = random_setup(seed, n_recv=11)
    g = graph_lib.build_graph(recv, recv_neg, ids, mask, 0, block)
    out = model.graph_attention(params, g, jnp.asarray(concepts), jnp.asarray(negated),
                                len(recv), table.num_types, 0.2, cpu_kernel=True,
                                kernel_threads=threads)
    ref = reference_g(params, concepts, negated, table, recv, recv_neg, ids, mask, 0.2)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-5)

  @parameterized.product(threads=(1, 2), padding=(0, 24), dtype=("float32", "float16"))
  def test_values_and_gradients_match_the_xla_path(self, threads, padding, dtype):
    needs_kernel(self)
    params, concepts, negated, table, recv, recv_neg, ids, mask = random_setup(
        5, num_concepts=60, d_c=16, d=8, num_types=4, fanout=4, n_recv=40)
    mask[::7] = False                 # receivers without any neighbour: a self loop only
    need = graph_lib.num_edges(mask, 4)
    g = graph_lib.build_graph(recv, recv_neg, ids, mask, need + padding, 4)
    # float16 rows: the kernel widens them exactly, as the XLA path's astype does.
    c, n = jnp.asarray(concepts, dtype), jnp.asarray(negated, dtype)

    def run(kernel):
      def f(p):
        out = model.graph_attention(p, g, c, n, len(recv), table.num_types, 0.2,
                                    cpu_kernel=kernel, kernel_threads=threads)
        return jnp.sum(jnp.sin(out) * jnp.arange(out.shape[1])), out
      return jax.jit(jax.value_and_grad(f, has_aux=True))(params)

    (loss_x, out_x), grads_x = run(False)
    (loss_k, out_k), grads_k = run(True)
    np.testing.assert_allclose(out_k, out_x, rtol=1e-5, atol=1e-6)
    for path, gx in jax.tree_util.tree_leaves_with_path(grads_x):
      gk = grads_k
      for key in path:
        gk = gk[key.key]
      np.testing.assert_allclose(gk, gx, rtol=1e-4, atol=1e-5,
                                 err_msg=jax.tree_util.keystr(path))
    self.assertGreater(float(jnp.abs(grads_k["attention"]["src"]).max()), 0.0)

  def test_train_loss_and_gradients_match_the_xla_path(self):
    needs_kernel(self)
    from configs import test as test_config
    from line_jax import train
    config = test_config.get_config()
    trainer = train.Trainer(config, self.create_tempdir().full_path)
    self.assertEqual(trainer.cpu_kernel, jax.default_backend() == "cpu")
    state = trainer.init_state()
    batch = train.shard_batch(trainer.builder.build(np.arange(config.train.batch_size), 0),
                              trainer.mesh)
    num_types = len(trainer.dataset.relation_types)
    results = []
    for kernel in (False, True):
      loss_fn = train.make_loss_fn(config, num_types, trainer.mesh, cpu_kernel=kernel)
      results.append(jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
          state["params"], batch, trainer.concept_table, trainer.negated_table))
    (loss_x, parts_x), grads_x = results[0]
    (loss_k, parts_k), grads_k = results[1]
    np.testing.assert_allclose(loss_k, loss_x, rtol=1e-5)
    np.testing.assert_allclose(parts_k, parts_x, rtol=1e-5, atol=1e-7)
    for gx, gk in zip(jax.tree.leaves(grads_x), jax.tree.leaves(grads_k)):
      np.testing.assert_allclose(gk, gx, rtol=1e-4, atol=1e-6)

  def test_use_kernel_settings(self):
    table32 = jnp.zeros((4, 3), jnp.float32)
    table16 = jnp.zeros((4, 3), jnp.float16)
    self.assertFalse(kernels.use_kernel("off", table32))
    table_bf16 = jnp.zeros((4, 3), jnp.bfloat16)
    self.assertFalse(kernels.use_kernel("off", table16))
    self.assertFalse(kernels.use_kernel("auto", table_bf16))
    with self.assertRaisesRegex(ValueError, "model.cpu_kernel='fast'"):
      kernels.use_kernel("fast", table32)
    with self.assertRaisesRegex(RuntimeError, "bfloat16"):
      kernels.use_kernel("on", table_bf16)
    if kernels.available() and jax.default_backend() == "cpu":
      self.assertTrue(kernels.use_kernel("auto", table32))
      self.assertTrue(kernels.use_kernel("auto", table16))
      self.assertTrue(kernels.use_kernel("on", np.float16))

  def test_bad_rows_are_refused(self):
    needs_kernel(self)
    params, concepts, negated, table, recv, recv_neg, ids, mask = random_setup(3)
    g = graph_lib.build_graph(recv, recv_neg, ids, mask, 0, 4)
    rows = np.array(g.nodes["row"])
    rows[len(recv) + int(np.flatnonzero(g.edges["mask"])[0])] = len(concepts) + 5
    bad = g._replace(nodes={**g.nodes, "row": rows})
    with self.assertRaisesRegex(Exception, "edge row or type out of range"):
      jax.block_until_ready(model.graph_attention(
          params, bad, jnp.asarray(concepts), jnp.asarray(negated), len(recv),
          table.num_types, cpu_kernel=True))

  def test_falls_back_without_a_compiler(self):
    script = (
        "import jax.numpy as jnp\n"
        "from line_jax import kernels\n"
        "print(kernels.use_kernel('auto', jnp.zeros((2, 2), jnp.float32)))\n"
        "print(kernels.unavailable_reason())\n"
        "try:\n"
        "  kernels.use_kernel('on', jnp.zeros((2, 2), jnp.float32))\n"
        "except RuntimeError as e:\n"
        "  print('refused:', e)\n")
    env = {**os.environ, "CXX": "/nonexistent/c++", "JAX_PLATFORMS": "cpu",
           "LINE_JAX_CACHE": self.create_tempdir().full_path}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=300)
    self.assertEqual(out.returncode, 0, out.stderr[-2000:])
    lines = out.stdout.splitlines()
    self.assertEqual(lines[0], "False")
    self.assertIn("/nonexistent/c++", lines[1])
    self.assertTrue(lines[2].startswith("refused: model.cpu_kernel='on'"), lines[2])


if __name__ == "__main__":
  absltest.main()
