"""F and G against a plain numpy reference (loops over receivers, types and neighbours)."""

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
from jax import test_util as jtu
import numpy as np

from line_jax.model import graph as graph_lib
from line_jax.model import network as model
from tolerances import assert_close_to_scale

# G compiled once per shape (op by op, every primitive compiles on its own: seconds a test).
attention = jax.jit(model.graph_attention, static_argnums=(4, 5))


def leaky(x, slope):
  return np.where(x > 0, x, slope * x)


def reference_g(params, concepts, negated_table, table, receivers, recv_neg, ids, mask, slope):
  """Per receiver r and type k: softmax over {self} + masked neighbours, heads averaged."""
  w = np.asarray(params["concept_proj"]["w"], np.float64)
  src = np.asarray(params["attention"]["src"], np.float64)
  dst = np.asarray(params["attention"]["dst"], np.float64)
  out = []
  for r, c in enumerate(receivers):
    x_self = (negated_table if recv_neg[r] else concepts)[c] @ w
    heads = []
    for k in range(ids.shape[1]):
      members = [x_self] + [concepts[j] @ w for j, m in zip(ids[r, k], mask[r, k]) if m]
      members = np.stack(members)
      logits = leaky(dst[k] @ x_self + members @ src[k], slope)
      alpha = np.exp(logits - logits.max())
      alpha /= alpha.sum()
      heads.append(alpha @ members)
    g = np.mean(heads, axis=0)
    if recv_neg[r]:
      g = g @ np.asarray(params["negation_proj"]["w"]) + np.asarray(params["negation_proj"]["b"])
    out.append(g)
  return np.stack(out)


def random_setup(seed, num_concepts=30, d_c=6, d=5, num_types=3, fanout=3, n_recv=7):
  rng = np.random.default_rng(seed)
  heads = rng.integers(0, num_concepts, 80)
  tails = rng.integers(0, num_concepts, 80)
  types = rng.integers(0, num_types, 80)
  table = graph_lib.NeighbourTable.build(heads, tails, types, num_concepts, num_types)
  concepts = rng.normal(size=(num_concepts, d_c)).astype(np.float32)
  negated = rng.normal(size=(num_concepts, d_c)).astype(np.float32)
  params = model.init_params(jax.random.PRNGKey(seed), 4, d_c, d, num_types, init="lecun")
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(seed + 1),
                                                               p.shape), params)
  receivers = rng.integers(0, num_concepts, n_recv)
  recv_neg = rng.random(n_recv) < 0.4
  ids, mask = graph_lib.sample_neighbours(table, receivers, fanout, seed=seed, step=3)
  return params, concepts, negated, table, receivers, recv_neg, ids, mask


class ModelTest(parameterized.TestCase):

  @parameterized.product(seed=(0, 1, 2), block=(1, 4))
  def test_graph_attention_matches_reference(self, seed, block):
    params, concepts, negated, table, recv, recv_neg, ids, mask = random_setup(seed)
    g = graph_lib.build_graph(recv, recv_neg, ids, mask, block=block)
    out = attention(params, g, jnp.asarray(concepts), jnp.asarray(negated), len(recv),
                    table.num_types, 0.2)
    ref = reference_g(params, concepts, negated, table, recv, recv_neg, ids, mask, 0.2)
    self.assertEqual(out.shape, (len(recv), 5))
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-5)

  def test_block_size_changes_neither_values_nor_gradients(self):
    params, concepts, negated, table, recv, recv_neg, ids, mask = random_setup(7, n_recv=9)
    c, n = jnp.asarray(concepts), jnp.asarray(negated)

    def run(block, capacity=0):     # jitted, as training runs G (op by op: minutes)
      g = graph_lib.build_graph(recv, recv_neg, ids, mask, capacity, block)
      f = lambda p: model.graph_attention(p, g, c, n, len(recv), table.num_types)
      out = jax.jit(f)(params)
      grads = jax.jit(jax.grad(lambda p: jnp.sum(jnp.tanh(f(p)))))(params)
      return out, grads

    out1, grads1 = run(1)
    for block, capacity in ((2, 0), (3, 0), (8, 0), (4, 96)):    # 96: padded capacity
      out, grads = run(block, capacity)
      # Float32 sums in another order (blocks of another size): tolerances relative to the
      # largest value and the largest gradient, not to each element (which may cancel).
      assert_close_to_scale(out, out1, rtol=1e-5, scale_tol=1e-6)
      assert_close_to_scale(grads, grads1, rtol=1e-4, scale_tol=1e-6)

  def test_padding_slots_contribute_exactly_nothing(self):
    """Padding edge slots point at a huge row (finite: tables are validated): any weight on
    it would swamp the result, in values or gradients."""
    params, concepts, negated, table, recv, recv_neg, ids, mask = random_setup(3)
    c = jnp.asarray(np.concatenate([concepts, np.full((1, concepts.shape[1]), 1e20,
                                                      np.float32)]))
    n = jnp.asarray(np.concatenate([negated, np.zeros((1, negated.shape[1]), np.float32)]))
    g = graph_lib.build_graph(recv, recv_neg, ids, mask, 64, block=4)
    rows = np.asarray(g.nodes["row"]).copy()
    rows[len(recv):][~g.edges["mask"]] = concepts.shape[0]        # the huge row
    self.assertGreater(int((~g.edges["mask"]).sum()), 0)
    g = g._replace(nodes={**g.nodes, "row": rows})
    f = lambda p: model.graph_attention(p, g, c, n, len(recv), table.num_types)
    out = jax.jit(f)(params)
    ref = reference_g(params, concepts, negated, table, recv, recv_neg, ids, mask, 0.2)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-5)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(jnp.tanh(f(p)))))(params)
    g_clean = graph_lib.build_graph(recv, recv_neg, ids, mask, 64, block=4)
    clean = jax.jit(jax.grad(lambda p: jnp.sum(jnp.tanh(model.graph_attention(
        p, g_clean, c, n, len(recv), table.num_types)))))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                         rtol=1e-5, atol=1e-6), grads, clean)

  def test_block_sums_vjp_matches_autodiff_of_the_einsum(self):
    rng = np.random.default_rng(0)
    alpha = jnp.asarray(rng.random((5, 3)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(5, 3, 4)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
    ours = jax.vjp(model._block_sums, alpha, x)
    ref = jax.vjp(lambda a, y: jnp.einsum("vs,vsd->vd", a, y), alpha, x)
    np.testing.assert_allclose(np.asarray(ours[0]), np.asarray(ref[0]), rtol=1e-6)
    for a, b in zip(ours[1](g), ref[1](g)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)

  def test_rejects_a_graph_without_the_compact_layout(self):
    params, concepts, negated, table, recv, recv_neg, ids, mask = random_setup(0)
    g = graph_lib.build_graph(recv, recv_neg, ids, mask, block=2)
    c, n = jnp.asarray(concepts), jnp.asarray(negated)
    with self.assertRaisesRegex(ValueError, "compact layout needs"):
      model.graph_attention(params, g, c, n, len(recv) + 1, table.num_types)
    bad = g._replace(globals={"block_receivers": g.globals["block_receivers"][:, :-1]})
    with self.assertRaisesRegex(ValueError, "do not split into"):
      model.graph_attention(params, bad, c, n, len(recv), table.num_types)

  def test_heads_follow_the_data(self):
    for num_types in (1, 4, 9):
      params, concepts, negated, table, recv, recv_neg, ids, mask = random_setup(
          0, num_types=num_types)
      self.assertEqual(params["attention"]["src"].shape, (num_types, 5))
      g = graph_lib.build_graph(recv, recv_neg, ids, mask)
      out = attention(params, g, jnp.asarray(concepts), jnp.asarray(negated), len(recv),
                      num_types)
      self.assertTrue(np.isfinite(np.asarray(out)).all())

  def test_masked_neighbours_do_not_matter(self):
    params, concepts, negated, table, recv, recv_neg, ids, mask = random_setup(4)
    g1 = graph_lib.build_graph(recv, recv_neg, ids, mask)
    ids2 = np.where(mask, ids, (ids + 7) % concepts.shape[0])     # garbage in padded slots
    g2 = graph_lib.build_graph(recv, recv_neg, ids2, mask)
    f = lambda g: attention(params, g, jnp.asarray(concepts), jnp.asarray(negated), len(recv),
                            table.num_types)
    np.testing.assert_allclose(np.asarray(f(g1)), np.asarray(f(g2)), rtol=1e-6)

  def test_concept_without_neighbours_is_its_projection(self):
    params, concepts, negated, table, *_ = random_setup(5)
    lonely = np.flatnonzero(~table.has_neighbours(np.arange(30)))
    if not len(lonely):
      lonely = np.array([0])
      ids = np.zeros((1, table.num_types, 3), np.int32)
      mask = np.zeros((1, table.num_types, 3), bool)
    else:
      ids, mask = graph_lib.sample_neighbours(table, lonely[:1], 3)
    g = graph_lib.build_graph(lonely[:1], np.zeros(1, bool), ids, mask)
    out = attention(params, g, jnp.asarray(concepts), jnp.asarray(negated), 1, table.num_types)
    np.testing.assert_allclose(np.asarray(out)[0],
                               concepts[lonely[0]] @ np.asarray(params["concept_proj"]["w"]),
                               rtol=1e-5, atol=1e-6)

  def test_project_text_and_identity_init(self):
    params = model.init_params(jax.random.PRNGKey(0), 8, 8, 8, 2, init="identity")
    x = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model.project_text(params, x)), x, rtol=1e-6)
    params = model.init_params(jax.random.PRNGKey(0), 8, 6, 4, 2, init="identity")
    self.assertEqual(model.project_text(params, x).shape, (3, 4))
    self.assertEqual(params["concept_proj"]["w"].shape, (6, 4))

  def test_residual_mlps_start_at_the_linear_model_and_add_their_output(self):
    linear = model.init_params(jax.random.PRNGKey(0), 8, 6, 8, 2, init="identity")
    params = model.init_params(jax.random.PRNGKey(0), 8, 6, 8, 2, init="identity",
                               text_hidden=16, concept_hidden=12)
    for key in linear:
      for a, b in zip(jax.tree.leaves(linear[key]), jax.tree.leaves(params[key])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    self.assertEqual(params["text_mlp"]["w1"].shape, (8, 16))
    self.assertEqual(params["concept_mlp"]["w2"].shape, (12, 8))
    rng = np.random.default_rng(0)
    x, pooled = rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=(3, 6)).astype(
        np.float32)
    np.testing.assert_allclose(np.asarray(model.project_text(params, x)), x, rtol=1e-6)
    trained = jax.tree.map(lambda p: p + 0.1, params)
    mlp = lambda p, v: np.asarray(jax.nn.gelu(v @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"])
    np.testing.assert_allclose(
        np.asarray(model.project_text(trained, x)),
        x @ np.asarray(trained["text_proj"]["w"]) + np.asarray(trained["text_proj"]["b"])
        + mlp(trained["text_mlp"], x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(model.project_pooled(trained, pooled, np.zeros(3, bool))),
        pooled @ np.asarray(trained["concept_proj"]["w"]) + mlp(trained["concept_mlp"], pooled),
        rtol=1e-5, atol=1e-5)

  def test_gradients_finite_difference(self):
    params, concepts, negated, table, recv, recv_neg, ids, mask = random_setup(6, n_recv=4)
    g = graph_lib.build_graph(recv, recv_neg, ids, mask, block=4)
    with jax.enable_x64(True):
      p64 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
      c64, n64 = jnp.asarray(concepts, jnp.float64), jnp.asarray(negated, jnp.float64)

      def f(p):
        out = model.graph_attention(p, g, c64, n64, len(recv), table.num_types)
        return jnp.sum(jnp.sin(out))

      jtu.check_grads(jax.jit(f), (p64,), order=1, modes=["rev"], atol=1e-5, rtol=1e-5, eps=1e-6)


if __name__ == "__main__":
  absltest.main()
