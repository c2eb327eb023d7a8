"""Metric functions of line_jax.eval against scikit-learn and hand-computed cases."""

import numpy as np
from absl.testing import absltest
from absl.testing import parameterized
from sklearn import metrics as skm

from line_jax.eval import classifier
from line_jax.eval import metrics
from line_jax.eval import report


class RankTest(absltest.TestCase):

  def test_rank_counts_strictly_greater_negatives(self):
    positive = np.array([0.5, 0.9, 0.1, 0.5])
    negatives = np.array([[0.6, 0.4, 0.7],     # two above -> rank 3
                          [0.1, 0.2, 0.3],     # none above -> rank 1
                          [0.2, 0.3, 0.4],     # all above -> rank 4
                          [0.5, 0.5, 0.6]])    # ties do not count -> rank 2
    np.testing.assert_array_equal(metrics.ranks_against_negatives(positive, negatives),
                                  [3, 1, 4, 2])

  def test_rank_summary_by_hand(self):
    summary = metrics.rank_summary(np.array([1, 2, 4, 20]), top_k=10)
    self.assertAlmostEqual(summary["mean_rank"], 27 / 4)
    self.assertAlmostEqual(summary["mean_reciprocal_rank"], (1 + 0.5 + 0.25 + 0.05) / 4)
    self.assertAlmostEqual(summary["top10_accuracy"], 0.75)

  def test_negatives_are_distinct_and_exclude_own_text(self):
    rng = np.random.default_rng(0)
    own = np.array([0, 5, 9, 3])
    neg = metrics.draw_negative_indices(4, 10, 9, own, rng)
    for row, o in zip(neg, own):
      self.assertEqual(sorted(row.tolist()), [i for i in range(10) if i != o])
    small = metrics.draw_negative_indices(4, 50, 7, own, np.random.default_rng(1))
    for row, o in zip(small, own):
      self.assertLen(set(row.tolist()), 7)
      self.assertNotIn(o, row)
      self.assertTrue(((row >= 0) & (row < 50)).all())

  def test_negatives_are_reproducible(self):
    own = np.arange(20)
    a = metrics.draw_negative_indices(20, 200, 100, own, np.random.default_rng(3))
    b = metrics.draw_negative_indices(20, 200, 100, own, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)

  def test_too_many_negatives_raise(self):
    with self.assertRaises(ValueError):
      metrics.draw_negative_indices(1, 5, 5, np.array([0]), np.random.default_rng(0))


class AucTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("continuous", 0, False), ("ties", 1, True), ("other_seed", 2, False))
  def test_auc_matches_sklearn(self, seed, with_ties):
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.3
    scores = rng.normal(size=300) + labels
    if with_ties:
      scores = np.round(scores, 1)
    self.assertAlmostEqual(metrics.roc_auc(scores, labels),
                           skm.roc_auc_score(labels, scores), places=12)

  def test_auc_by_hand(self):
    # Positives 0.8, 0.4; negatives 0.4, 0.1: pairs (0.8>0.4, 0.8>0.1, 0.4=0.4, 0.4>0.1).
    self.assertAlmostEqual(metrics.roc_auc([0.8, 0.4, 0.4, 0.1], [1, 1, 0, 0]), 3.5 / 4)

  def test_auc_single_class_is_nan(self):
    self.assertTrue(np.isnan(metrics.roc_auc([0.1, 0.2], [1, 1])))

  def test_roc_points_match_sklearn(self):
    rng = np.random.default_rng(4)
    labels = rng.random(100) < 0.5
    scores = np.round(rng.normal(size=100) + labels, 1)
    fpr, tpr = metrics.roc_curve_points(scores, labels)
    sk_fpr, sk_tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    self.assertAlmostEqual(np.trapezoid(tpr, fpr), skm.roc_auc_score(labels, scores))

  def test_average_ranks(self):
    np.testing.assert_allclose(metrics.average_ranks(np.array([3.0, 1.0, 3.0, 2.0])),
                               [3.5, 1.0, 3.5, 2.0])


class ClassificationScoresTest(parameterized.TestCase):

  @parameterized.named_parameters(("seed0", 0), ("seed1", 1), ("seed2", 2))
  def test_macro_scores_match_sklearn(self, seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, 60)
    y_pred = np.where(rng.random(60) < 0.6, y_true, rng.integers(0, 5, 60))
    ours = metrics.classification_scores(y_true, y_pred)
    p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average="macro",
                                                     zero_division=0)
    self.assertAlmostEqual(ours["precision"], p)
    self.assertAlmostEqual(ours["recall"], r)
    self.assertAlmostEqual(ours["f1"], f)
    self.assertAlmostEqual(ours["accuracy"], skm.accuracy_score(y_true, y_pred))

  def test_never_predicted_class_counts_zero_precision(self):
    out = metrics.classification_scores([0, 0, 1, 1], [0, 0, 0, 0])
    self.assertAlmostEqual(out["precision"], (0.5 + 0.0) / 2)
    self.assertAlmostEqual(out["recall"], (1.0 + 0.0) / 2)
    self.assertAlmostEqual(out["f1"], (2 * 0.5 / 1.5) / 2)
    self.assertAlmostEqual(out["accuracy"], 0.5)

  def test_stratified_folds_balance_each_class(self):
    labels = np.array([0] * 10 + [1] * 7 + [2] * 3)
    folds = metrics.stratified_folds(labels, 5, np.random.default_rng(0))
    self.assertTrue(set(folds.tolist()) <= set(range(5)))
    sizes = np.bincount(folds, minlength=5)
    self.assertLessEqual(sizes.max() - sizes.min(), 1)
    for c in range(3):
      per_fold = np.bincount(folds[labels == c], minlength=5)
      self.assertLessEqual(per_fold.max() - per_fold.min(), 1)
    again = metrics.stratified_folds(labels, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(folds, again)


class GeometryTest(absltest.TestCase):

  def test_alignment_by_hand(self):
    x = np.array([[1.0, 0.0], [0.0, 2.0]])
    y = np.array([[3.0, 0.0], [2.0, 0.0]])     # same direction; orthogonal
    self.assertAlmostEqual(metrics.alignment_loss(x, y), (0.0 + 2.0) / 2)
    self.assertAlmostEqual(metrics.alignment_loss(x, y, alpha=1.0), np.sqrt(2) / 2)

  def test_uniformity_by_hand(self):
    # Three unit vectors: e1, -e1, e2. Squared distances 4, 2, 2.
    x = np.array([[1.0, 0.0], [-2.0, 0.0], [0.0, 5.0]])
    expected = np.log((np.exp(-8.0) + 2 * np.exp(-4.0)) / 3)
    self.assertAlmostEqual(metrics.uniformity_loss(x, t=2.0), expected, places=6)

  def test_uniformity_prefers_spread_points(self):
    rng = np.random.default_rng(0)
    spread = rng.normal(size=(200, 8))
    clumped = np.ones((200, 8)) + 0.05 * rng.normal(size=(200, 8))
    self.assertLess(metrics.uniformity_loss(spread), metrics.uniformity_loss(clumped))

  def test_uniformity_subsample_is_seeded(self):
    x = np.random.default_rng(1).normal(size=(300, 4))
    a = metrics.uniformity_loss(x, max_points=50, rng=np.random.default_rng(7))
    b = metrics.uniformity_loss(x, max_points=50, rng=np.random.default_rng(7))
    self.assertEqual(a, b)

  def test_segment_mean(self):
    rows = np.arange(12, dtype=np.float32).reshape(6, 2)
    out = metrics.segment_mean(rows, np.array([0, 2, 2, 6]))
    np.testing.assert_allclose(out, [[1, 2], [0, 0], [7, 8]])

  def test_rowwise_cosine(self):
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    b = np.array([[2.0, 0.0], [-1.0, 1.0]])
    np.testing.assert_allclose(metrics.rowwise_cosine(a, b), [1.0, 0.0], atol=1e-7)


class RecoveryTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    # Pair 0 lists {1, 2}, truly {1, 2, 5}; pair 1 lists {3}, truly {3, 4, 6}.
    self.offsets = np.array([0, 2, 3])
    self.flat = np.array([1, 2, 3])
    self.true_offsets = np.array([0, 3, 6])
    self.true_flat = np.array([1, 2, 5, 3, 4, 6])

  def test_first_new_candidate_skips_listed(self):
    cand = np.array([[2, 5, 7], [3, 1, 4]])
    scores = np.array([[0.99, 0.8, 0.7], [0.95, 0.6, 0.5]])
    chosen, best = metrics.first_new_candidate(cand, scores, self.offsets, self.flat)
    np.testing.assert_array_equal(chosen, [5, 1])
    np.testing.assert_allclose(best, [0.8, 0.6])
    chosen, best = metrics.first_new_candidate(np.array([[1, 2], [3, 3]]),
                                               np.ones((2, 2)), self.offsets, self.flat)
    np.testing.assert_array_equal(chosen, [-1, -1])
    self.assertTrue(np.isneginf(best).all())

  def test_precision_recall_by_hand(self):
    chosen = np.array([5, 1])      # 5 is a missing true concept; 1 is not new... not true-missing
    correct, missing = metrics.recovery_correctness(chosen, self.offsets, self.flat,
                                                    self.true_offsets, self.true_flat)
    np.testing.assert_array_equal(correct, [True, False])
    np.testing.assert_array_equal(missing, [1, 2])
    curve = metrics.recovery_curve(np.array([0.8, 0.6]), correct, int(missing.sum()),
                                   [0.5, 0.7, 0.9])
    self.assertEqual(curve["recovered"], [2, 1, 0])
    self.assertEqual(curve["correct"], [1, 1, 0])
    np.testing.assert_allclose(curve["precision"][:2], [0.5, 1.0])
    self.assertTrue(np.isnan(curve["precision"][2]))
    np.testing.assert_allclose(curve["recall"], [1 / 3, 1 / 3, 0.0])


class ProbeTest(absltest.TestCase):

  def _blobs(self, n=90, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    centers = rng.normal(size=(3, 6)) * 4
    return (centers[y] + rng.normal(size=(n, 6))).astype(np.float32), y

  def test_separable_data_is_learned_and_scores_match_sklearn(self):
    x, y = self._blobs()
    folds = metrics.stratified_folds(y, 5, np.random.default_rng(0))
    cfg = classifier.ProbeConfig(learning_rate=0.05, max_epochs=300)
    out = classifier.cross_validate(x, y, folds, cfg, np.random.default_rng(0))
    self.assertGreater(out["accuracy"], 0.9)
    pred = out["predictions"]
    per_fold_f1 = [skm.f1_score(y[folds == f], pred[folds == f], average="macro")
                   for f in range(5)]
    self.assertAlmostEqual(out["f1"], float(np.mean(per_fold_f1)), places=6)
    self.assertAlmostEqual(out["accuracy"],
                           float(np.mean([skm.accuracy_score(y[folds == f],
                                                             pred[folds == f])
                                          for f in range(5)])), places=6)

  def test_loss_change_stops_early_and_is_deterministic(self):
    x, y = self._blobs(seed=1)
    folds = metrics.stratified_folds(y, 5, np.random.default_rng(0))
    cfg = classifier.ProbeConfig(learning_rate=0.05, max_epochs=5000, tol=1e-3)
    a = classifier.cross_validate(x, y, folds, cfg, np.random.default_rng(0))
    b = classifier.cross_validate(x, y, folds, cfg, np.random.default_rng(0))
    self.assertLess(max(a["epochs"]), 5000)
    np.testing.assert_array_equal(a["predictions"], b["predictions"])
    self.assertEqual(a["f1"], b["f1"])

  def test_validation_mode_restores_best_epoch(self):
    x, y = self._blobs(seed=2)
    folds = metrics.stratified_folds(y, 5, np.random.default_rng(0))
    cfg = classifier.ProbeConfig(learning_rate=0.05, max_epochs=400,
                                 early_stopping="validation", patience=5)
    out = classifier.cross_validate(x, y, folds, cfg, np.random.default_rng(0))
    for run, best in zip(out["epochs"], out["best_epochs"]):
      self.assertLessEqual(best, run)
    self.assertGreater(out["accuracy"], 0.8)

  def test_bad_mode_raises(self):
    with self.assertRaises(ValueError):
      classifier.ProbeConfig(early_stopping="never")


class ArrowTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("rank_better", 1.4, [5.5, 43.8], True, False, "↓"),
      ("rank_beats_one_only", 3.0, [5.5, 1.7], True, False, ""),
      ("auc_better", 0.97, [0.94, 0.96], False, False, "↑"),
      ("auc_tie_is_no_improvement", 0.96, [0.94, 0.96], False, False, ""),
      ("gap_magnitude", -0.01, [0.05, 0.07], True, True, "↓"),
      ("missing_teacher", 0.9, [None, 0.5], False, False, ""),
  )
  def test_arrow(self, value, teachers, lower, magnitude, expected):
    self.assertEqual(report.improvement_arrow(value, teachers, lower, magnitude), expected)

  def test_fmt(self):
    self.assertEqual(report.fmt(0.12345), "0.123")
    self.assertEqual(report.fmt(float("nan")), "–")
    self.assertEqual(report.fmt(None), "–")


if __name__ == "__main__":
  absltest.main()
