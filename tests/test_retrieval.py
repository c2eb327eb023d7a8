"""line_jax.eval.retrieval and realtext on small cases with known answers."""

import json
import os
import tempfile

import numpy as np
from absl.testing import absltest
from absl.testing import parameterized
import ml_collections

from line_jax.search import terms
from line_jax.eval import runner
from line_jax.eval import by_segment
from line_jax.eval import realtext
from line_jax.eval import retrieval
from tests import test_evaluate


def unit(i, d=8):
  v = np.zeros(d, np.float32)
  v[i] = 1.0
  return v


class GroupsTest(absltest.TestCase):

  def test_from_ids_groups_synonyms_with_their_term(self):
    g = terms.Groups.from_ids(["B", "A", "A#syn1", "B#syn1", "C"],
                                  ["B", "A", "A", "B", "C"])
    self.assertEqual(g.num_groups, 3)
    self.assertEqual(g.group_of[1], g.group_of[2])
    self.assertEqual(g.group_of[0], g.group_of[3])
    # The representative is the entry whose id is the term's.
    self.assertEqual(sorted(g.representative.tolist()), [0, 1, 4])
    scores = np.array([[0.1, 0.2, 0.9, 0.3, 0.0]])
    collapsed = g.collapse(scores)
    self.assertAlmostEqual(collapsed[0, g.group_of[1]], 0.9)
    self.assertAlmostEqual(collapsed[0, g.group_of[0]], 0.3)
    self.assertAlmostEqual(collapsed[0, g.group_of[4]], 0.0)


class RetrievalTest(parameterized.TestCase):

  def test_planted_ranks(self):
    keys = np.eye(6, dtype=np.float32)
    # Text 0 points at key 2, then key 4; text 1 at key 5.
    texts = np.stack([3 * unit(2, 6) + 2 * unit(4, 6) + unit(0, 6), unit(5, 6)])
    owner = np.array([0, 0, 0, 1, 1])
    target = np.array([2, 4, 0, 5, 3])
    ranks = terms.retrieval_ranks(texts, keys, owner, target, chunk=1)
    # Key 3 ties with 4 others at 0 for text 1: strictly higher is only key 5.
    np.testing.assert_array_equal(ranks, [1, 2, 3, 1, 2])
    summary = terms.retrieval_summary(ranks, (1, 2))
    self.assertEqual(summary["count"], 5)
    self.assertAlmostEqual(summary["recall@1"], 2 / 5)
    self.assertAlmostEqual(summary["recall@2"], 4 / 5)
    self.assertAlmostEqual(summary["mrr"], np.mean([1, 1 / 2, 1 / 3, 1, 1 / 2]))

  def test_synonym_entry_is_a_hit_for_its_term(self):
    keys = np.stack([unit(0), unit(1), unit(2)])       # term A, A's synonym, term B
    groups = terms.Groups.from_ids(["A", "A#s", "B"], ["A", "A", "B"])
    texts = np.stack([unit(1) + 0.5 * unit(2)])         # closest to A's synonym
    ranks = terms.retrieval_ranks(texts, keys, [0], [groups.group_of[0]], groups)
    np.testing.assert_array_equal(ranks, [1])
    ungrouped = terms.retrieval_ranks(texts, keys, [0], [0])
    np.testing.assert_array_equal(ungrouped, [3])

  def test_chunking_does_not_change_ranks(self):
    rng = np.random.default_rng(0)
    texts, keys = rng.normal(size=(9, 5)), rng.normal(size=(20, 5))
    owner = rng.integers(0, 9, 30)
    target = rng.integers(0, 20, 30)
    full = (texts / np.linalg.norm(texts, axis=1, keepdims=True)) @ (
        keys / np.linalg.norm(keys, axis=1, keepdims=True)).T
    expected = 1 + (full[owner] > full[owner, target][:, None]).sum(1)
    for chunk in (1, 4, 100):
      np.testing.assert_array_equal(
          terms.retrieval_ranks(texts, keys, owner, target, chunk=chunk), expected)

  def test_listed_targets_skip_negated_and_duplicates(self):
    groups = terms.Groups.from_ids(["A", "A#s", "B", "C"], ["A", "A", "B", "C"])
    offsets = np.array([0, 3, 5])
    flat = np.array([0, 1, 2, 3, 3])
    negated = np.array([False, False, True, False, False])
    owner, target = terms.listed_targets(offsets, flat, negated, groups)
    self.assertEqual(list(zip(owner.tolist(), target.tolist())),
                     [(0, groups.group_of[0]), (1, groups.group_of[3])])


class RecoveryTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.keys = np.eye(8, dtype=np.float32)
    # Pair 0 lists concepts 0, 1 and misses 5; pair 1 lists 2 and misses 6.
    self.offsets = np.array([0, 2, 3])
    self.flat = np.array([0, 1, 2])
    self.proxies = np.stack([(unit(0) + unit(1)) / 2, unit(2)])
    # The missing concept is exactly the residual text - proxy.
    self.texts = self.proxies + np.stack([unit(5), unit(6)])
    self.true_offsets = np.array([0, 3, 5])
    self.true_flat = np.array([0, 1, 5, 2, 6])

  def test_nearest_skips_listed_terms(self):
    cand, best = terms.recovery_candidates(self.texts, self.proxies, self.offsets,
                                               self.flat, self.keys, "nearest", top_k=2)
    # Pair 0's text (0.5, 0.5, 1) over concepts 0, 1, 5: 0 and 1 are listed.
    np.testing.assert_array_equal(cand[:, 0], [5, 6])
    np.testing.assert_allclose(best[0, 0], 1 / np.sqrt(1.5), rtol=1e-6)

  @parameterized.parameters("residual", "completion_gain")
  def test_missing_concept_is_first(self, estimator):
    cand, best = terms.recovery_candidates(self.texts, self.proxies, self.offsets,
                                               self.flat, self.keys, estimator, top_k=3)
    np.testing.assert_array_equal(cand[:, 0], [5, 6])
    self.assertTrue(np.all(np.diff(best, axis=1) <= 0))
    for row, listed in ((0, {0, 1}), (1, {2})):
      self.assertFalse(set(cand[row].tolist()) & listed)
    if estimator == "residual":
      np.testing.assert_allclose(best[:, 0], 1.0, atol=1e-6)

  def test_segment_candidates_propose_unexplained_clauses(self):
    # Pair 0 (lists 0, 1) has clauses naming 0 (explained), 5 (missing) and 7 at 0.6
    # beside 1 at 0.8 (explained by listed 1); pair 1 (lists 2) has a clause naming 6 at
    # cosine 0.8 and one naming 4, a term to skip.
    # (Small parts along unlisted terms 3 and 7 keep the k best free of ties.)
    tail = 0.2 * unit(3) + 0.1 * unit(7)
    clauses = np.stack([unit(0), unit(5) + tail, 0.6 * unit(7) + 0.8 * unit(1),
                        0.8 * unit(6) + 0.6 * unit(3), unit(4) + tail])
    owner = np.array([0, 0, 0, 1, 1])
    for chunk in (1, 2, 256):
      cand, best = terms.segment_candidates(clauses, owner, 2, self.offsets, self.flat,
                                            self.keys, top_k=3, explained_k=2,
                                            skip_terms=np.array([4]), chunk=chunk)
      np.testing.assert_array_equal(cand, [[5, -1, -1], [6, -1, -1]])
      np.testing.assert_allclose(best[:, 0], [1 / np.sqrt(1.05), 0.8], atol=1e-6)
      self.assertTrue(np.isinf(best[:, 1:]).all())
    # Without skipping, 4 is proposed; pair 0's third clause stays explained by its best
    # term, listed 1, whatever explained_k.
    cand, _ = terms.segment_candidates(clauses, owner, 2, self.offsets, self.flat, self.keys,
                                       top_k=3, explained_k=1)
    np.testing.assert_array_equal(cand, [[5, -1, -1], [4, 6, -1]])
    # A clause whose best is unlisted but runner-up listed: explained only with k >= 2.
    odd = np.stack([0.8 * unit(7) + 0.6 * unit(1)])
    for k, want in ((1, 7), (2, -1)):
      cand, _ = terms.segment_candidates(odd, [0], 2, self.offsets, self.flat, self.keys,
                                         top_k=1, explained_k=k)
      self.assertEqual(cand[0, 0], want)

  def test_recovery_evaluation_of_the_segment_estimator(self):
    settings = retrieval.JointSettings(recovery_top_k=2, estimators=("segment", "residual"),
                                       min_added=1)
    tail = 0.2 * unit(4) + 0.1 * unit(7)                  # no ties among the best terms
    clauses = (np.stack([unit(5) + tail, unit(6) + tail, 0.5 * unit(3) + tail]),
               np.array([0, 1, 1]))
    out = retrieval.recovery_evaluation(self.texts, self.proxies, self.offsets, self.flat,
                                        self.true_offsets, self.true_flat, self.keys,
                                        terms.Groups.identity(8), settings, clauses=clauses)
    e = out["estimators"]["segment"]
    self.assertEqual((e["hit@1"], e["hit@2"]), (1.0, 1.0))
    op = e["score"]["operating_point"]
    self.assertEqual((op["added"], op["correct"], op["recall"]), (2, 2, 1.0))
    out = retrieval.recovery_evaluation(self.texts, self.proxies, self.offsets, self.flat,
                                        self.true_offsets, self.true_flat, self.keys,
                                        terms.Groups.identity(8), settings)
    self.assertNotIn("segment", out["estimators"])
    self.assertIn("segment", out["skipped"])
    self.assertIn("residual", out["estimators"])

  def test_operating_point_chosen_on_another_split(self):
    settings = retrieval.JointSettings(recovery_top_k=2, estimators=("residual",),
                                       min_added=1)
    args = (self.texts, self.proxies, self.offsets, self.flat, self.true_offsets,
            self.true_flat, self.keys, terms.Groups.identity(8), settings)
    here = retrieval.recovery_evaluation(*args)
    conf_here = [1.0, 1.0]                  # both residuals are their missing concepts
    chosen = {"estimators": {"residual": {"score": {"operating_point": dict(
        threshold=1.5, precision=0.9, recall=0.4, reached=True)}}}}
    out = retrieval.recovery_evaluation(*args, chosen=chosen)
    at = out["estimators"]["residual"]["score"]["at_chosen_point"]
    # Nothing reaches a threshold of 1.5 here; the chosen figures are carried along.
    self.assertEqual((at["added"], at["threshold"], at["chosen_precision"]), (0, 1.5, 0.9))
    chosen["estimators"]["residual"]["score"]["operating_point"]["threshold"] = 0.99
    at = retrieval.recovery_evaluation(*args, chosen=chosen)["estimators"]["residual"][
        "score"]["at_chosen_point"]
    self.assertEqual((at["added"], at["correct"], at["recall"]), (len(conf_here), 2, 1.0))
    self.assertNotIn("at_chosen_point", here["estimators"]["residual"]["score"])
    self.assertNotIn("at_chosen_point", out["estimators"]["residual"]["margin"])

  def test_completion_gain_matches_its_definition(self):
    rng = np.random.default_rng(1)
    keys = rng.normal(size=(12, 6)).astype(np.float32)
    texts = rng.normal(size=(3, 6)).astype(np.float32)
    lists = [[0, 3], [4], [5, 6, 7]]
    proxies = np.stack([keys[x].mean(0) for x in lists])
    sizes = np.array([len(x) for x in lists])
    got = terms.scores_for_recovery(texts, proxies, sizes, keys, "completion_gain")

    def cos(a, b):
      return a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    for i, x in enumerate(lists):
      for c in range(len(keys)):
        expected = (cos(texts[i], np.vstack([keys[x], keys[c]]).mean(0))
                    - cos(texts[i], keys[x].mean(0)))
        self.assertAlmostEqual(got[i, c], expected, places=5)

  def test_evaluation_counts_hits_and_precision(self):
    settings = retrieval.JointSettings(recovery_top_k=3, estimators=("residual",),
                                       threshold=0.99)
    out = retrieval.recovery_evaluation(self.texts, self.proxies, self.offsets, self.flat,
                                        self.true_offsets, self.true_flat, self.keys,
                                        terms.Groups.identity(8), settings)
    self.assertEqual(out["num_missing"], 2)
    e = out["estimators"]["residual"]
    self.assertEqual(e["hit@1"], 1.0)
    self.assertEqual(e["hit@3"], 1.0)
    configured = e["score"]["configured"]
    self.assertEqual((configured["added"], configured["correct"]), (2, 2))
    self.assertEqual(configured["recall"], 1.0)

  def test_operating_point(self):
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    correct = np.array([True, False, True, True, False, False])
    op = retrieval.operating_point(conf, correct, num_missing=6, min_precision=0.5)
    # Precision by prefix: 1, .5, .67, .75, .6, .5 -> the longest with >= .5 is all six,
    # whose recall (3/6) equals the prefix of 4; the highest recall's first point: 0.6.
    self.assertAlmostEqual(op["threshold"], 0.6)
    self.assertAlmostEqual(op["precision"], 0.75)
    self.assertAlmostEqual(op["recall"], 0.5)
    self.assertTrue(op["reached"])
    op = retrieval.operating_point(conf, correct, 6, min_precision=0.99)
    self.assertAlmostEqual(op["threshold"], 0.9)
    op = retrieval.operating_point(conf, ~correct, 6, min_precision=0.9)
    self.assertFalse(op["reached"])
    op = retrieval.operating_point(conf, correct, 6, min_precision=0.99, min_added=3)
    self.assertAlmostEqual(op["threshold"], 0.6)     # the best precision adding >= 3
    self.assertFalse(op["reached"])

  def test_margin_confidence(self):
    best = np.array([[0.9, 0.5, 0.1], [0.6, 0.55, 0.0], [0.3, -np.inf, -np.inf]])
    np.testing.assert_allclose(terms.confidence_of(best, "margin"), [0.4, 0.05, 0.3])
    np.testing.assert_allclose(terms.confidence_of(best, "score"), [0.9, 0.6, 0.3])


def write_jsonl(rows):
  handle = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
  with handle:
    for r in rows:
      handle.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
  return handle.name


class FourConcepts:
  """The model the real-text evaluation reads when embedders are given: a dictionary of
  concepts C0..C3."""

  class dataset:   # pylint: disable=invalid-name
    @staticmethod
    def concept_index():
      return {f"C{i}": i for i in range(4)}


class RealTextTest(absltest.TestCase):

  def test_unknown_ids_are_counted_not_dropped_silently(self):
    path = write_jsonl([
        {"doc_id": "X_1", "text": "a", "ids": ["C1", "C9", "C1"]},
        {"doc_id": "Y_2", "text": "b", "ids": ["C9", "C8"]},
        {"doc_id": "Y_3", "text": "c", "ids": ["C2", "C0"]}])
    self.addCleanup(os.remove, path)
    data = realtext.load_realtext(path, "ids", {"C0": 0, "C1": 1, "C2": 2})
    self.assertEqual(data["texts"], ["a", "c"])
    np.testing.assert_array_equal(data["offsets"], [0, 1, 3])
    np.testing.assert_array_equal(data["flat"], [1, 2, 0])
    self.assertEqual(data["unknown_ids"], {"C9": 2, "C8": 1})
    self.assertEqual(data["sentences_without_known_ids"], 1)
    self.assertEqual(data["num_ids"], 7)
    self.assertEqual(data["collections"].tolist(), ["X", "Y"])

  def test_bad_lines_name_file_line_and_field(self):
    for rows, needle in (([{"text": "a", "ids": ["C0"]}, "{oops"], "line 2: not JSON"),
                         ([{"text": "", "ids": ["C0"]}], "line 1, field 'text'"),
                         ([{"text": "a", "hpo": ["C0"]}], "line 1, field 'ids'")):
      path = write_jsonl(rows)
      self.addCleanup(os.remove, path)
      with self.assertRaisesRegex(realtext.RealTextError, needle):
        realtext.load_realtext(path, "ids", {"C0": 0})

  def test_evaluate_with_planted_embeddings(self):
    keys = np.eye(4, dtype=np.float32)
    path = write_jsonl([{"text": f"s{i}", "ids": [f"C{i}"]} for i in range(4)])
    self.addCleanup(os.remove, path)

    settings = retrieval.JointSettings(realtext=path, realtext_ids_field="ids",
                                       num_negatives=3)
    perfect = ("perfect", lambda texts: keys[[int(t[1]) for t in texts]], lambda: keys)
    shifted = ("shifted", lambda texts: keys[[(int(t[1]) + 1) % 4 for t in texts]],
               lambda: keys)
    out = realtext.evaluate_realtext(FourConcepts, settings, terms.Groups.identity(4),
                                     [perfect, shifted, ("other", "no encoder")])
    self.assertEqual(out["alignment"]["perfect"]["all"]["mean_reciprocal_rank"], 1.0)
    self.assertEqual(out["text_to_concept"]["perfect"]["all"]["recall@1"], 1.0)
    self.assertEqual(out["text_to_concept"]["shifted"]["all"]["recall@10"], 1.0)
    self.assertEqual(out["text_to_concept"]["shifted"]["all"]["recall@1"], 0.0)
    self.assertEqual(out["skipped"], {"other": "no encoder"})
    self.assertIn("| perfect | all | 1.000 |",
                  "\n".join(realtext.render_markdown(out, (1, 10))))

  def test_segments_find_what_one_clause_names(self):
    keys = np.eye(4, dtype=np.float32)
    # "sA, sB": the whole sentence embeds as its first clause's concept A.
    path = write_jsonl([{"text": "s0, s2", "ids": ["C0", "C2"]},
                        {"text": "s1 and s3", "ids": ["C1", "C3"]}])
    self.addCleanup(os.remove, path)

    first = ("first", lambda texts: keys[[int(t[1]) for t in texts]], lambda: keys)
    for pattern, segment_r1 in ((retrieval.JointSettings().segment_pattern, 1.0),
                                ("", None)):
      settings = retrieval.JointSettings(realtext=path, realtext_ids_field="ids",
                                         num_negatives=1, segment_pattern=pattern)
      out = realtext.evaluate_realtext(FourConcepts, settings, terms.Groups.identity(4),
                                       [first])
      self.assertEqual(out["text_to_concept"]["first"]["all"]["recall@1"], 0.5)
      if segment_r1 is None:
        self.assertNotIn("text_to_concept_segments", out)
        continue
      self.assertEqual(out["text_to_concept_segments"]["first"]["all"]["recall@1"], 1.0)
      self.assertEqual(out["num_segments"], 6)
      # By the number of concepts a sentence lists: both sentences list two.
      by_size = out["text_to_concept_segments"]["first"]
      self.assertEqual((by_size["2 concepts"]["count"], by_size["1 concept"]["count"]), (4, 0))
      # Late interaction: each list's best clauses are its own concepts, so its own
      # sentence comes first (the whole sentences alone tie the negative: rank 1 as well).
      self.assertEqual(out["alignment_segments"]["first"]["all"]["mean_reciprocal_rank"], 1.0)
      self.assertIn("| first | all | 1.000 | 1.000 | 1.000 | 1.000 |",
                    "\n".join(realtext.render_markdown(out, (1, 10))))

  def test_late_alignment_against_a_loop(self):
    """Table 1 by clause: a list scores a sentence by the mean over its concepts of the
    best cosine over the sentence's segments."""
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((9, 4))
    owner = np.array([0, 0, 1, 2, 2, 2, 3, 4, 4])
    rows = rng.standard_normal((len(owner), 4))
    offsets = np.array([0, 2, 3, 6, 7, 9])
    flat = rng.integers(0, 9, 9)
    negatives = np.array([[1, 2], [0, 3], [4, 1], [2, 0], [3, 1]])
    got = realtext.late_alignment_ranks(rows, owner, keys, offsets, flat, negatives)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731

    def score(list_j, text_i):
      listed = flat[offsets[list_j]:offsets[list_j + 1]]
      cos = unit(rows[owner == text_i]) @ unit(keys[listed]).T
      return cos.max(axis=0).mean()

    for j in range(5):
      own = score(j, j)
      self.assertEqual(got[j], 1 + sum(score(j, i) > own for i in negatives[j]), f"list {j}")

  def test_a_bad_segment_pattern_is_named(self):
    config = ml_collections.ConfigDict({"eval": {"segment_pattern": "(oops"}})
    with self.assertRaisesRegex(ValueError, r"segment_pattern='\(oops' is not a regular"):
      retrieval.read_settings(config)


class ClauseLevelTest(absltest.TestCase):

  def test_a_text_of_two_findings_finds_each_by_its_clause(self):
    keys = np.eye(4, dtype=np.float32)
    texts = np.stack([keys[0] + 0.8 * keys[1], keys[2]])        # "A and B", "C"
    clauses = (keys[[0, 1]], np.array([0, 0]))                  # text 0's two clauses
    owner, target = np.array([0, 0, 1]), np.array([0, 1, 2])
    masks = dict(all=np.ones(2, bool), **by_segment.size_masks(
        by_segment.target_counts(owner, 2)))
    whole = terms.retrieval_ranks(texts, keys, owner, target)
    self.assertEqual(whole.tolist(), [1, 2, 1])                 # B second, behind A
    got = by_segment.clause_level(texts, clauses, keys, owner, target, None, 1, masks, (1,))
    self.assertEqual(got["all"]["recall@1"], 1.0)
    self.assertEqual((got["2 concepts"]["count"], got["1 concept"]["count"],
                      got["5+ concepts"]["count"]), (2, 1, 0))
    vectors, text_owner = by_segment.with_segments(texts, *clauses)
    np.testing.assert_array_equal(text_owner, [0, 0, 0, 1])
    np.testing.assert_array_equal(vectors[[0, 3]], texts)

  def test_size_buckets(self):
    masks = by_segment.size_masks(np.array([0, 1, 2, 3, 4, 5, 9]))
    self.assertEqual({k: np.flatnonzero(v).tolist() for k, v in masks.items()},
                     {"1 concept": [1], "2 concepts": [2], "3-4 concepts": [3, 4],
                      "5+ concepts": [5, 6]})


class EvaluateJointTest(absltest.TestCase):

  def test_run_evaluation_reports_single_concepts(self):
    model = test_evaluate.make_model()
    with tempfile.TemporaryDirectory() as workdir:
      result = runner.run_evaluation(model, workdir)
      text = open(os.path.join(workdir, "report.md")).read()
      self.assertTrue(os.path.exists(os.path.join(workdir, retrieval.PLOT_FILE)))
      # Alone (`python -m line_jax.evaluate --only=joint`): the same numbers, written over
      # the joint entry of metrics.json only, and the section in joint.md.
      os.remove(os.path.join(workdir, retrieval.PLOT_FILE))
      report = runner.run_alone(model, workdir, "joint")
      with open(os.path.join(workdir, "metrics.json")) as f:
        merged = json.load(f)
      self.assertEqual(merged["alignment"], result["alignment"])
      alone = merged["joint"]
      self.assertEqual(alone.pop("split"), result["split"])
      # Table 1 of the split comes with it: the full evaluation's numbers.
      self.assertEqual(alone.pop("alignment"), result["alignment"])
      self.assertEqual(alone, result["joint"])
      self.assertEqual(report, os.path.join(os.path.abspath(workdir), retrieval.REPORT_FILE))
      with open(report) as f:
        self.assertIn("(c) Recovery of a missing concept", f.read())
      self.assertTrue(os.path.exists(os.path.join(workdir, retrieval.PLOT_FILE)))
      with self.assertRaisesRegex(ValueError, "protocol 'ner'"):
        runner.run_alone(model, workdir, "ner")
    joint = result["joint"]
    self.assertEqual(set(joint["text_to_concept"]),
                     {"teacher1", "teacher2", "line", "map_t2_to_t1", "map_t1_to_t2"})
    for r in joint["text_to_concept"].values():
      self.assertEqual(r["real"]["count"], 0)      # every fake pair is synthetic
      self.assertEqual(r["vignette"]["count"], r["all"]["count"])
      self.assertBetween(r["all"]["mrr"], 1 / test_evaluate.NUM_CONCEPTS, 1.0)
    rec = joint["recovery"]["results"]["line"]
    self.assertGreater(rec["num_missing"], 0)
    # This dataset has no validation split: no operating point is chosen elsewhere.
    self.assertNotIn("chosen_on", joint["recovery"])
    self.assertNotIn("at_chosen_point", rec["estimators"]["residual"]["score"])
    self.assertIn("segment skipped", text)     # the fake teachers embed no new strings
    # ... nor clauses: each space says why it has no clause-level figures.
    self.assertEqual(set(joint["text_to_concept_segments_skipped"]),
                     {"teacher1", "teacher2", "line"})
    self.assertIn("no clause-level figures", text)
    self.assertEqual(joint["text_to_concept"]["line"]["all"]["count"],
                     sum(joint["text_to_concept"]["line"][size]["count"] for size in
                         ("1 concept", "2 concepts", "3-4 concepts", "5+ concepts")))
    self.assertIn("(a) Text -> concept retrieval", text)

  def test_operating_points_chosen_on_another_split_are_applied(self):
    model = test_evaluate.make_model()
    model.config.eval.recovery_choose_on = "train"      # its vignettes, not the test split's
    with tempfile.TemporaryDirectory() as workdir:
      runner.run_alone(model, workdir, "joint")
      with open(os.path.join(workdir, "metrics.json")) as f:
        joint = json.load(f)["joint"]
      text = open(os.path.join(workdir, retrieval.REPORT_FILE)).read()
    self.assertEqual(joint["split"], "test")
    self.assertEqual(joint["recovery"]["chosen_on"],
                     {"split": "train", "vignettes": len(model.dataset.split_indices("train"))})
    for key in ("teacher1", "line"):
      e = joint["recovery"]["results"][key]["estimators"]["residual"]["score"]
      at = e["at_chosen_point"]
      self.assertNotEqual(at["threshold"], e["operating_point"]["threshold"])
      self.assertBetween(at["added"], 0, joint["recovery"]["results"][key]["num_pairs"])
    self.assertIn("Chosen on train", text)
    model.config.eval.recovery_choose_on = "test"       # the evaluated split: never
    with tempfile.TemporaryDirectory() as workdir:
      runner.run_alone(model, workdir, "joint")
      with open(os.path.join(workdir, "metrics.json")) as f:
        self.assertNotIn("chosen_on", json.load(f)["joint"]["recovery"])
    self.assertIn("(c) Recovery of a missing concept", text)


if __name__ == "__main__":
  absltest.main()
