"""Losses against plain numpy references on random inputs, plus finite-difference gradients."""

import types

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
from jax import test_util as jtu
import numpy as np

from line_jax.model import losses


# The loss functions as the trainer runs them, jitted: each test shape compiles one program
# instead of one per operation (op by op, every jnp call compiles on its own).
jitted = types.SimpleNamespace(**{
    name: jax.jit(getattr(losses, name), static_argnames=static)
    for name, static in (("alignment_terms", ("per_anchor",)), ("relational_terms", ()),
                         ("negation_terms", ()),
                         ("concept_contrastive_terms", ("pooling",)),
                         ("text_contrastive_terms", ()), ("uniformity_terms", ()))})


def np_alignment(c, t, rho, mask, margin):
  total, count = 0.0, 0
  for i in range(len(c)):
    if not mask[i]:
      continue
    pos = np.sum((t[i] - c[i]) ** 2)
    for j in range(len(t)):
      if j == i or not mask[j]:
        continue
      neg = np.sum((t[j] - c[i]) ** 2)
      total += rho[i] * max(0.0, margin + pos - neg)
      count += 1
  return total, count


def np_cos(a, b):
  return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def np_concept_contrastive(t, g, g_mask, occ_slot, occ_mask, tau, group=None):
  """Loop reference: -log softmax of the own concept among itself + off-list concepts
  (with `group`: + concepts of no listed concept's group)."""
  group = np.arange(len(g)) if group is None else group
  total, count = 0.0, 0
  for i in range(len(t)):
    listed_groups = {int(group[occ_slot[i, m]]) for m in range(occ_slot.shape[1])
                     if occ_mask[i, m]}
    listed = {k for k in range(len(g)) if int(group[k]) in listed_groups}
    for m in range(occ_slot.shape[1]):
      if not occ_mask[i, m]:
        continue
      p = int(occ_slot[i, m])
      den = np.exp(np_cos(t[i], g[p]) / tau)
      for k in range(len(g)):
        if g_mask[k] and k not in listed:
          den += np.exp(np_cos(t[i], g[k]) / tau)
      total += -np.log(np.exp(np_cos(t[i], g[p]) / tau) / den)
      count += 1
  return total, count


def np_segment_contrastive(t, seg_mask, g, g_mask, occ_slot, occ_mask, tau, pooling,
                           seg_tau=0.05):
  """Loop reference of the many-vectors term: a text's score of a concept is its real
  segments' best cosine ("max") or their softmax(cos / seg_tau)-weighted mean ("softmax");
  then -log softmax of the own concept among itself + off-list concepts."""
  def score(i, k):
    cos = np.array([np_cos(t[i, j], g[k]) for j in range(t.shape[1]) if seg_mask[i, j]])
    if pooling == "max":
      return cos.max()
    w = np.exp(cos / seg_tau - (cos / seg_tau).max())
    return float(np.sum(w / w.sum() * cos))
  total, count = 0.0, 0
  for i in range(len(t)):
    listed = {int(occ_slot[i, m]) for m in range(occ_slot.shape[1]) if occ_mask[i, m]}
    for m in range(occ_slot.shape[1]):
      if not occ_mask[i, m]:
        continue
      p = int(occ_slot[i, m])
      den = np.exp(score(i, p) / tau) + sum(np.exp(score(i, k) / tau) for k in range(len(g))
                                            if g_mask[k] and k not in listed)
      total += -np.log(np.exp(score(i, p) / tau) / den)
      count += 1
  return total, count


def np_text_contrastive(t, t_mask, g, occ_slot, occ_mask, tau, group=None):
  """Loop reference: -log softmax of the own text among itself + the real texts that do not
  list the concept (with `group`: no concept of its group)."""
  group = np.arange(len(g)) if group is None else group
  listed = [{int(group[occ_slot[j, m]]) for m in range(occ_slot.shape[1]) if occ_mask[j, m]}
            for j in range(len(t))]
  total, count = 0.0, 0
  for i in range(len(t)):
    for m in range(occ_slot.shape[1]):
      if not occ_mask[i, m]:
        continue
      p = int(occ_slot[i, m])
      own = np.exp(np_cos(t[i], g[p]) / tau)
      den = own + sum(np.exp(np_cos(t[j], g[p]) / tau) for j in range(len(t))
                      if t_mask[j] and int(group[p]) not in listed[j])
      total += -np.log(own / den)
      count += 1
  return total, count


def np_uniformity(x, mask, t):
  z = x / np.linalg.norm(x, axis=1, keepdims=True)
  vals = [np.exp(-t * np.sum((z[i] - z[j]) ** 2)) for i in range(len(x)) for j in range(len(x))
          if i != j and mask[i] and mask[j]]
  return np.log(np.mean(vals))


class LossTest(parameterized.TestCase):

  @parameterized.parameters((8, 5, 0.1), (16, 12, 1.0), (3, 4, 0.5))
  def test_alignment_matches_numpy(self, n, d, margin):
    rng = np.random.default_rng(n)
    c, t = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    rho = rng.uniform(0.1, 1.0, n)
    mask = rng.random(n) > 0.2
    s, k = jitted.alignment_terms(jnp.asarray(c, jnp.float32), jnp.asarray(mask),
                                  jnp.asarray(rho, jnp.float32), jnp.asarray(t, jnp.float32),
                                  jnp.asarray(mask), 0, margin)
    ref_s, ref_k = np_alignment(c, t, rho, mask, margin)
    self.assertEqual(int(k), ref_k)
    np.testing.assert_allclose(float(s), ref_s, rtol=2e-5, atol=1e-5)

  def test_alignment_per_pair_reduction(self):
    rng = np.random.default_rng(5)
    c, t = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    mask = np.array([1, 1, 0, 1, 1, 1], bool)
    args = (jnp.asarray(c, jnp.float32), jnp.asarray(mask), jnp.ones(6),
            jnp.asarray(t, jnp.float32), jnp.asarray(mask), 0, 0.5)
    s_term, k_term = jitted.alignment_terms(*args)
    s_pair, k_pair = jitted.alignment_terms(*args, per_anchor=True)
    self.assertAlmostEqual(float(s_term), float(s_pair), places=5)
    self.assertEqual(int(k_term), 5 * 4)      # valid (i, i') with i != i'
    self.assertEqual(int(k_pair), 5)          # valid pairs

  def test_alignment_local_rows_of_a_global_batch(self):
    # The rows of shard 1 of 2 against the global texts give that shard's part of the sum.
    rng = np.random.default_rng(0)
    c, t = rng.normal(size=(8, 4)), rng.normal(size=(8, 4))
    rho, mask = np.ones(8), np.ones(8, bool)
    full = np_alignment(c, t, rho, mask, 0.3)
    parts = [jitted.alignment_terms(jnp.asarray(c[s:s + 4], jnp.float32), jnp.ones(4, bool),
                                    jnp.ones(4), jnp.asarray(t, jnp.float32), jnp.ones(8, bool),
                                    s, 0.3) for s in (0, 4)]
    np.testing.assert_allclose(sum(float(p[0]) for p in parts), full[0], rtol=1e-5)
    self.assertEqual(sum(int(p[1]) for p in parts), full[1])

  def test_relational_matches_numpy(self):
    rng = np.random.default_rng(1)
    h, t, c = (rng.normal(size=(10, 6)) for _ in range(3))
    mask = rng.random(10) > 0.3
    s, k = jitted.relational_terms(*(jnp.asarray(x, jnp.float32) for x in (h, t, c)),
                                   jnp.asarray(mask), 0.2)
    ref = np.maximum(0, 0.2 - np_cos(h, t) + np_cos(h, c))[mask]
    np.testing.assert_allclose(float(s), ref.sum(), rtol=1e-5)
    self.assertEqual(int(k), mask.sum())

  @parameterized.parameters(0.1, 0.3, 0.5)
  def test_negation_matches_numpy(self, delta):
    rng = np.random.default_rng(2)
    p, n = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    weight = np.array([1, 2, 0, 1, 1, 3, 0], np.float32)   # mentions per negated concept
    s, k = jitted.negation_terms(jnp.asarray(p, jnp.float32), jnp.asarray(n, jnp.float32),
                                 jnp.asarray(weight), delta)
    x = delta - np_cos(p, n)
    ref = -np.log(np.exp(x) / (1 + np.exp(x)))   # the paper's A.1 form
    np.testing.assert_allclose(float(s), (weight * ref).sum(), rtol=1e-5)
    self.assertEqual(float(k), 8.0)

  def test_finite_difference_gradients(self):
    rng = np.random.default_rng(3)
    c, t = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    h, tl, cr = (rng.normal(size=(5, 4)) for _ in range(3))
    m6, m5 = jnp.ones(6, bool), jnp.ones(5, bool)

    def total(c, t, h, tl, cr):
      a = jitted.alignment_terms(c, m6, jnp.linspace(0.2, 1.0, 6), t, m6, 0, 2.0)[0]
      r = jitted.relational_terms(h, tl, cr, m5, 0.5)[0]
      n = jitted.negation_terms(h, tl, jnp.arange(5.0), 0.3)[0]
      return a + r + n

    with jax.enable_x64(True):
      args = tuple(jnp.asarray(x, jnp.float64) for x in (c, t, h, tl, cr))
      jtu.check_grads(jax.jit(total), args, order=1, modes=["rev"], atol=1e-5, rtol=1e-5, eps=1e-6)


  @parameterized.parameters((0.05, 0), (0.5, 1), (1.0, 2))
  def test_concept_contrastive_matches_numpy(self, tau, seed):
    rng = np.random.default_rng(seed)
    b, m, u, d = 5, 4, 9, 6
    t, g = rng.normal(size=(b, d)), rng.normal(size=(u, d))
    g_mask = np.ones(u, bool)
    g_mask[-2:] = False                                   # padded concept rows
    occ_slot = rng.integers(0, u - 2, size=(b, m)).astype(np.int32)
    occ_mask = rng.random((b, m)) > 0.3
    occ_mask[0] = False                                    # a padded pair
    s, k = jitted.concept_contrastive_terms(
        jnp.asarray(t, jnp.float32), jnp.asarray(g, jnp.float32), jnp.asarray(g_mask),
        jnp.asarray(occ_slot), jnp.asarray(occ_mask), tau)
    ref_s, ref_k = np_concept_contrastive(t, g, g_mask, occ_slot, occ_mask, tau)
    self.assertEqual(int(k), ref_k)
    np.testing.assert_allclose(float(s), ref_s, rtol=2e-5, atol=1e-5)

  @parameterized.parameters(0, 1, 2)
  def test_concept_contrastive_same_group_is_no_negative(self, seed):
    """With groups, a row of the same group as a listed concept leaves the denominator;
    with one group per row the result is the ungrouped one."""
    rng = np.random.default_rng(seed)
    b, m, u, d, tau = 5, 3, 10, 6, 0.2
    t, g = rng.normal(size=(b, d)), rng.normal(size=(u, d))
    g_mask = np.ones(u, bool)
    g_mask[-1] = False
    occ_slot = rng.integers(0, u - 1, size=(b, m)).astype(np.int32)
    occ_mask = rng.random((b, m)) > 0.3
    group = np.array([0, 0, 1, 2, 2, 2, 3, 4, 5, -1], np.int32)
    args = (jnp.asarray(t, jnp.float32), jnp.asarray(g, jnp.float32), jnp.asarray(g_mask),
            jnp.asarray(occ_slot), jnp.asarray(occ_mask), tau)
    s, k = jitted.concept_contrastive_terms(*args, jnp.asarray(group))
    ref_s, ref_k = np_concept_contrastive(t, g, g_mask, occ_slot, occ_mask, tau, group)
    plain_s, _ = np_concept_contrastive(t, g, g_mask, occ_slot, occ_mask, tau)
    self.assertEqual(int(k), ref_k)
    np.testing.assert_allclose(float(s), ref_s, rtol=2e-5, atol=1e-5)
    self.assertLess(ref_s, plain_s)       # fewer negatives, a smaller loss
    s_id, _ = jitted.concept_contrastive_terms(*args, jnp.arange(u, dtype=jnp.int32))
    np.testing.assert_allclose(float(s_id), plain_s, rtol=2e-5, atol=1e-5)

  @parameterized.parameters(("max", 0.1, 0), ("softmax", 0.5, 1), ("max", 1.0, 2),
                            ("softmax", 0.07, 3))
  def test_segment_contrastive_matches_numpy(self, pooling, tau, seed):
    rng = np.random.default_rng(seed)
    b, s_count, m, u, d = 5, 4, 3, 9, 6
    t, g = rng.normal(size=(b, s_count, d)), rng.normal(size=(u, d))
    seg_mask = rng.random((b, s_count)) > 0.4
    seg_mask[:, 0] = True                                  # the whole text
    seg_mask[0] = False                                    # a padded pair
    g_mask = np.ones(u, bool)
    g_mask[-2:] = False
    occ_slot = rng.integers(0, u - 2, size=(b, m)).astype(np.int32)
    occ_mask = (rng.random((b, m)) > 0.3) & seg_mask[:, :1]
    s, k = jitted.concept_contrastive_terms(
        jnp.asarray(t, jnp.float32), jnp.asarray(g, jnp.float32), jnp.asarray(g_mask),
        jnp.asarray(occ_slot), jnp.asarray(occ_mask), tau, None, jnp.asarray(seg_mask),
        pooling, 0.05)
    ref_s, ref_k = np_segment_contrastive(t, seg_mask, g, g_mask, occ_slot, occ_mask, tau,
                                          pooling)
    self.assertEqual(int(k), ref_k)
    np.testing.assert_allclose(float(s), ref_s, rtol=2e-5, atol=1e-5)

  def test_one_segment_is_the_sentence_term(self):
    rng = np.random.default_rng(4)
    t, g = rng.normal(size=(4, 5)).astype(np.float32), rng.normal(size=(7, 5)).astype(
        np.float32)
    occ_slot, occ_mask = jnp.asarray([[0, 1], [2, 3], [4, 0], [5, 6]]), jnp.ones((4, 2), bool)
    plain = jitted.concept_contrastive_terms(t, g, jnp.ones(7, bool), occ_slot, occ_mask, 0.2)
    padded = np.concatenate([t[:, None], rng.normal(size=(4, 2, 5))], 1).astype(np.float32)
    one = np.zeros((4, 3), bool)
    one[:, 0] = True
    for pooling in ("max", "softmax"):
      got = jitted.concept_contrastive_terms(padded, g, jnp.ones(7, bool), occ_slot, occ_mask,
                                             0.2, None, jnp.asarray(one), pooling)
      np.testing.assert_allclose(float(got[0]), float(plain[0]), rtol=1e-6)

  def test_concept_contrastive_list_mates_do_not_compete(self):
    # Text 0 lists concepts 0 and 1 (both equal to it) and the only other concept is
    # orthogonal: the loss is log(1 + exp(-1/tau)) per listed concept, not log 2 more.
    t = np.array([[1.0, 0.0]])
    g = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    s, k = jitted.concept_contrastive_terms(
        jnp.asarray(t), jnp.asarray(g), jnp.ones(3, bool), jnp.asarray([[0, 1]]),
        jnp.ones((1, 2), bool), 0.5)
    self.assertEqual(int(k), 2)
    np.testing.assert_allclose(float(s), 2 * np.log1p(np.exp(-2.0)), rtol=1e-6)

  def test_concept_contrastive_without_negatives_is_zero_not_nan(self):
    val, grad = jax.value_and_grad(lambda t: jitted.concept_contrastive_terms(
        t, jnp.eye(2), jnp.ones(2, bool), jnp.asarray([[0, 1]]), jnp.ones((1, 2), bool),
        0.1)[0])(jnp.ones((1, 2)))
    self.assertAlmostEqual(float(val), 0.0, places=6)
    self.assertTrue(np.all(np.isfinite(np.asarray(grad))))

  @parameterized.parameters((0.1, 0, False), (0.5, 1, True), (1.0, 2, True))
  def test_text_contrastive_matches_numpy(self, tau, seed, grouped):
    rng = np.random.default_rng(seed)
    b, m, u, d = 6, 3, 8, 5
    t, g = rng.normal(size=(b, d)), rng.normal(size=(u, d))
    t_mask = np.ones(b, bool)
    t_mask[-1] = False                                     # a padded pair
    occ_slot = rng.integers(0, u, size=(b, m)).astype(np.int32)
    occ_mask = (rng.random((b, m)) > 0.3) & t_mask[:, None]
    group = np.array([0, 0, 1, 2, 3, 3, 4, 5], np.int32) if grouped else None
    s, k = jitted.text_contrastive_terms(
        jnp.asarray(t, jnp.float32), jnp.asarray(t_mask), jnp.asarray(g, jnp.float32),
        jnp.asarray(occ_slot), jnp.asarray(occ_mask), tau,
        None if group is None else jnp.asarray(group))
    ref_s, ref_k = np_text_contrastive(t, t_mask, g, occ_slot, occ_mask, tau, group)
    self.assertEqual(int(k), ref_k)
    np.testing.assert_allclose(float(s), ref_s, rtol=2e-5, atol=1e-5)

  def test_text_contrastive_penalises_a_hub(self):
    # Concept 0 is listed by text 0 only but is as close to text 1: the text term is
    # log(1 + exp(0)) = log 2 for it; moved away from text 1 it falls towards 0. The
    # text -> concept direction cannot see the difference (one listed concept each, no
    # off-list concept of text 0 changes).
    t = jnp.asarray([[1.0, 0.0], [1.0, 0.0]])
    occ_slot, occ_mask = jnp.asarray([[0], [1]]), jnp.asarray([[True], [False]])
    hub = jitted.text_contrastive_terms(t, jnp.ones(2, bool), jnp.asarray([[1.0, 0.0],
                                                                           [0.0, 1.0]]),
                                        occ_slot, occ_mask, 0.5)
    np.testing.assert_allclose(float(hub[0]), np.log(2.0), rtol=1e-6)
    apart = jitted.text_contrastive_terms(jnp.asarray([[1.0, 0.0], [-1.0, 0.0]]),
                                          jnp.ones(2, bool), jnp.asarray([[1.0, 0.0],
                                                                          [0.0, 1.0]]),
                                          occ_slot, occ_mask, 0.5)
    np.testing.assert_allclose(float(apart[0]), np.log1p(np.exp(-4.0)), rtol=1e-4)

  @parameterized.parameters(1.0, 2.0)
  def test_uniformity_matches_numpy(self, temp):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(7, 3))
    mask = np.array([1, 1, 1, 0, 1, 1, 0], bool)
    v, k = jitted.uniformity_terms(jnp.asarray(x, jnp.float32), jnp.asarray(mask), temp)
    np.testing.assert_allclose(float(v), np_uniformity(x, mask, temp), rtol=1e-5)
    self.assertEqual(float(k), 1.0)
    v, k = jitted.uniformity_terms(jnp.asarray(x, jnp.float32), jnp.asarray(mask & False),
                                   temp)
    self.assertEqual((float(v), float(k)), (0.0, 0.0))

  def test_finite_difference_gradients_of_concept_terms(self):
    rng = np.random.default_rng(6)
    t, g = rng.normal(size=(4, 5)), rng.normal(size=(7, 5))
    occ_slot = jnp.asarray([[0, 1, 0], [2, 0, 0], [3, 4, 5], [6, 0, 0]])
    occ_mask = jnp.asarray([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]], bool)
    g_mask = jnp.ones(7, bool)

    def total(t, g):
      c = jitted.concept_contrastive_terms(t, g, g_mask, occ_slot, occ_mask, 0.3)[0]
      x = jitted.text_contrastive_terms(t, jnp.ones(4, bool), g, occ_slot, occ_mask, 0.3)[0]
      return c + x + jitted.uniformity_terms(g, g_mask, 2.0)[0]

    with jax.enable_x64(True):
      args = tuple(jnp.asarray(x, jnp.float64) for x in (t, g))
      jtu.check_grads(jax.jit(total), args, order=1, modes=["rev"], atol=1e-5, rtol=1e-5, eps=1e-6)

if __name__ == "__main__":
  absltest.main()
