"""The fused CPU attention kernel (line_jax.model.kernels) against the numpy reference and the XLA
path: values, gradients, threads, layouts, the train loss, fallbacks and bad input."""

import os
import shutil
import subprocess
import sys

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import numpy as np

from line_jax.model import graph as graph_lib
from line_jax.model import kernels
from line_jax.model import network as model
from test_model import random_setup, reference_g
from tolerances import assert_close_to_scale


def dense_setup(seed, d_c=13, num_types=4, n_recv=600):
  """A graph big enough for the kernel to split over threads (it gives each at least 256
  edge slots), with d_c not a multiple of 8 (the float16 rows' scalar tail)."""
  rng = np.random.default_rng(seed)
  num_concepts, num_edges = 400, 3000
  table = graph_lib.NeighbourTable.build(
      rng.integers(0, num_concepts, num_edges), rng.integers(0, num_concepts, num_edges),
      rng.integers(0, num_types, num_edges), num_concepts, num_types)
  concepts = rng.normal(size=(num_concepts, d_c)).astype(np.float32)
  negated = rng.normal(size=(num_concepts, d_c)).astype(np.float32)
  params = model.init_params(jax.random.PRNGKey(seed), 4, d_c, 8, num_types, init="lecun")
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(seed + 1),
                                                               p.shape), params)
  receivers = rng.integers(0, num_concepts, n_recv)
  recv_neg = rng.random(n_recv) < 0.3
  ids, mask = graph_lib.sample_neighbours(table, receivers, 4, seed=seed, step=1)
  mask[::7] = False                 # receivers without any neighbour: a self loop only
  return params, concepts, negated, table, receivers, recv_neg, ids, mask


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

  @parameterized.product(threads=(1, 2, 5), padding=(0, 24), dtype=("float32", "float16"),
                         zero_attention=(False, True))
  def test_values_and_gradients_match_the_xla_path(self, threads, padding, dtype,
                                                   zero_attention):
    needs_kernel(self)
    params, concepts, negated, table, recv, recv_neg, ids, mask = dense_setup(5)
    if zero_attention:     # every pre-activation logit is exactly 0: LeakyReLU's kink
      params["attention"] = jax.tree.map(jnp.zeros_like, params["attention"])
    need = graph_lib.num_edges(mask, 4)
    self.assertGreater(need, 256 * threads)    # the kernel really splits into `threads`
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
    # G's values are float32 sums in another order: an absolute tolerance relative to the
    # largest value (an element that cancels to near zero keeps the error of its terms).
    assert_close_to_scale(out_k, out_x, rtol=1e-5, scale_tol=1e-6)
    # Sums over hundreds of receivers in another order: an absolute tolerance relative to
    # the largest gradient (with zero attention the a_dst gradient is 0 up to cancellation).
    scale = max(float(jnp.abs(leaf).max()) for leaf in jax.tree.leaves(grads_x))
    for path, gx in jax.tree_util.tree_leaves_with_path(grads_x):
      gk = grads_k
      for key in path:
        gk = gk[key.key]
      np.testing.assert_allclose(gk, gx, rtol=1e-4, atol=2e-6 * scale,
                                 err_msg=jax.tree_util.keystr(path))
    self.assertGreater(float(jnp.abs(grads_k["attention"]["src"]).max()), 0.0)

  def test_more_threads_change_nothing(self):
    needs_kernel(self)
    params, concepts, negated, table, recv, recv_neg, ids, mask = dense_setup(9)
    g = graph_lib.build_graph(recv, recv_neg, ids, mask, 0, 4)
    c, n = jnp.asarray(concepts), jnp.asarray(negated)

    def run(threads):
      f = lambda p: model.graph_attention(p, g, c, n, len(recv), table.num_types,
                                          cpu_kernel=True, kernel_threads=threads)
      return jax.jit(lambda p: (f(p), jax.grad(lambda q: jnp.sum(jnp.tanh(f(q))))(p)))(params)

    out1, grads1 = run(1)
    for threads in (2, 7):
      out, grads = run(threads)
      np.testing.assert_array_equal(out, out1)       # each receiver has one owner
      # u_src's gradient sums every edge: in blocks fixed by the slots, whichever thread
      # runs them, added in block order, so the float32 sum is the same bits.
      for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads1)):
        np.testing.assert_array_equal(a, b)

  def test_train_loss_and_gradients_match_the_xla_path(self):
    needs_kernel(self)
    from configs import test as test_config
    from line_jax.training import step as step_lib
    from line_jax.training import trainer as trainer_lib
    config = test_config.get_config()
    trainer = trainer_lib.Trainer(config, self.create_tempdir().full_path)
    self.assertEqual(trainer.cpu_kernel, jax.default_backend() == "cpu")
    state = trainer.init_state()
    batch = step_lib.shard_batch(trainer.builder.build(np.arange(config.train.batch_size), 0),
                              trainer.mesh)
    num_types = len(trainer.dataset.relation_types)
    results = []
    for kernel in (False, True):
      loss_fn = step_lib.make_loss_fn(config, num_types, trainer.mesh, cpu_kernel=kernel)
      results.append(jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
          state["params"], batch, trainer.concept_table, trainer.negated_table))
    (loss_x, parts_x), grads_x = results[0]
    (loss_k, parts_k), grads_k = results[1]
    np.testing.assert_allclose(loss_k, loss_x, rtol=1e-5)
    np.testing.assert_allclose(parts_k, parts_x, rtol=1e-5, atol=1e-7)
    # Gradients summed over the batch in another order: relative to the largest gradient.
    assert_close_to_scale(grads_k, grads_x, rtol=1e-4, scale_tol=2e-6)

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

  def test_mismatched_lengths_are_refused(self):
    needs_kernel(self)
    table = jnp.ones((10, 3), jnp.float32)
    rows = jnp.zeros(8, jnp.int32)
    logits = jnp.zeros((2, 2), jnp.float32)
    with self.assertRaisesRegex(Exception, "differ in length"):
      jax.block_until_ready(kernels.neighbour_attention(
          table, rows, jnp.zeros(5, jnp.int32), jnp.ones(8, bool), jnp.zeros(8, jnp.int32),
          logits, logits, jnp.zeros((2, 3), jnp.float32), 0.2))

  def test_falls_back_without_a_compiler(self):
    script = (
        "import jax.numpy as jnp\n"
        "from line_jax.model import kernels\n"
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
    kernel_dir = os.path.join(env["LINE_JAX_CACHE"], "kernels")
    self.assertEqual(os.listdir(kernel_dir) if os.path.isdir(kernel_dir) else [], [])


if __name__ == "__main__":
  absltest.main()
