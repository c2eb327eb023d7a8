"""Recognition on annotated documents: the metric, the id filter, the recovery scorer, the
operating-point rule, the API's stored point, stage-2 recovery by the scorer, and
`python -m line_jax.evaluate --only=recognition` on a tiny run."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np

from configs import test as test_config
from line_jax.api import proposals
from line_jax.api.line_model import LineModel
from line_jax.config import base_config, teacher_config
from line_jax.data import obo
from line_jax.eval import recognition
from line_jax.search import scorer as scorer_lib
from line_jax.search import terms
from line_jax.teachers import testing as teacher_testing
from line_jax.training import checkpoint as ckpt_lib
from line_jax.training import loop as loop_lib
from line_jax.training import recovery as recovery_lib
from line_jax.training.host_batches import PairLists

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_OBO = """format-version: 1.2

[Term]
id: HP:0000001
name: All

[Term]
id: HP:0000118
name: Phenotypic abnormality
is_a: HP:0000001 ! All

[Term]
id: HP:0000002
name: Abnormality of body height
alt_id: HP:0009999
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0004322
name: Short stature
alt_id: HP:0003498
alt_id: HP:0008845
is_a: HP:0000002 ! Abnormality of body height

[Term]
id: HP:0000005
name: Mode of inheritance
alt_id: HP:0001453
is_a: HP:0000001 ! All

[Term]
id: HP:0000003
name: Obsolete thing
alt_id: HP:0007777
is_obsolete: true
"""


def write(path, text):
  with open(path, "w") as f:
    f.write(text)
  return path


class DocumentScoresTest(absltest.TestCase):

  def test_micro_and_macro_against_a_hand_computed_reference(self):
    pred = [{"a", "b", "c"}, {"d"}, set()]
    gold = [{"a", "b"}, {"d", "e"}, {"f"}]
    got = recognition.document_scores(pred, gold)
    # micro: 3 right of 4 predicted, 5 gold.
    self.assertAlmostEqual(got["micro"]["precision"], 0.75)
    self.assertAlmostEqual(got["micro"]["recall"], 0.6)
    self.assertAlmostEqual(got["micro"]["f1"], 2 * 0.75 * 0.6 / 1.35)
    self.assertEqual((got["micro"]["true_positives"], got["micro"]["predicted"],
                      got["micro"]["gold"]), (3, 4, 5))
    # macro: per document P (2/3, 1, 0: 0/0 counts 0), R (1, 1/2, 0), F1 (0.8, 2/3, 0).
    self.assertAlmostEqual(got["macro"]["precision"], (2 / 3 + 1) / 3)
    self.assertAlmostEqual(got["macro"]["recall"], 0.5)
    self.assertAlmostEqual(got["macro"]["f1"], (0.8 + 2 / 3) / 3)


class IdFilterTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.obo = write(os.path.join(self.create_tempdir().full_path, "tiny.obo"), TINY_OBO)

  def test_obo_keeps_alt_ids_and_maps_them_to_live_terms(self):
    terms_ = obo.read_obo(self.obo)
    self.assertEqual(terms_["HP:0004322"].alt_ids, ("HP:0003498", "HP:0008845"))
    self.assertEqual(obo.alt_id_map(terms_),
                     {"HP:0009999": "HP:0000002", "HP:0003498": "HP:0004322",
                      "HP:0008845": "HP:0004322", "HP:0001453": "HP:0000005"})

  def test_alt_ids_mapped_then_subtree_kept(self):
    config = base_config()
    config.eval.recognition_ontology = self.obo
    config.eval.recognition_subtree = "HP:0000118"
    keep, notes = recognition.id_filter(config)
    self.assertEqual(keep(["HP:0003498", "HP:0009999", "HP:0001453", "HP:0000005",
                           "HP:0007777", "HP:0000118"]),
                     {"HP:0004322", "HP:0000002", "HP:0000118"})
    self.assertIn("subtree of HP:0000118", notes[-1])
    config.eval.recognition_subtree = ""
    keep, _ = recognition.id_filter(config)
    self.assertEqual(keep(["HP:0001453", "X:1"]), {"HP:0000005", "X:1"})
    config.eval.recognition_subtree = "HP:0000003"
    with self.assertRaisesRegex(recognition.RecognitionError,
                                "tiny.obo: eval.recognition_subtree='HP:0000003'"):
      recognition.id_filter(config)

  def test_additions_go_through_the_filter(self):
    config = base_config()
    config.eval.recognition_ontology = self.obo
    keep, _ = recognition.id_filter(config)
    adds = recognition.additions(
        np.array([0, 0, 0, 1, 1]),
        np.array(["HP:0003498", "HP:0008845", "HP:0000005", "HP:0004322", "HP:0000002"],
                 object),
        np.array([0.4, 0.9, 0.99, 0.5, 0.6]), [set(), {"HP:0000002"}],
        [{"HP:0004322"}, {"HP:0000118"}], keep)
    # Two alt ids of one term keep the better confidence; outside the subtree and already
    # predicted are no additions.
    self.assertEqual(list(zip(adds.doc.tolist(), adds.ids.tolist(), adds.confidence.tolist(),
                              adds.correct.tolist())),
                     [(0, "HP:0004322", 0.9, True), (1, "HP:0004322", 0.5, False)])


class DocumentsFileTest(absltest.TestCase):

  def test_bad_lines_name_the_file_line_and_field(self):
    folder = self.create_tempdir().full_path
    good = {"doc_id": "A_1", "text": "short stature", "ids": ["HP:0004322"]}
    for rows, message in (
        ([good, dict(good, doc_id="")], "line 2, field 'doc_id'"),
        ([good, good], "line 2, field 'doc_id': 'A_1' is also on line 1"),
        ([dict(good, text=" ")], "line 1, field 'text'"),
        ([dict(good, ids="HP:1")], "line 1, field 'ids': expected a list")):
      path = write(os.path.join(folder, "docs.jsonl"),
                   "".join(json.dumps(r) + "\n" for r in rows))
      with self.assertRaisesRegex(recognition.RecognitionError, "docs.jsonl: " + message):
        recognition.load_documents(path, "ids")
    with self.assertRaisesRegex(recognition.RecognitionError, "file not found"):
      recognition.load_documents(os.path.join(folder, "nope.jsonl"), "ids")

  def test_halves_are_seeded_and_balanced_per_collection(self):
    ids = [f"A_{i}" for i in range(7)] + [f"B_{i}" for i in range(4)]
    half = recognition.choosing_half(ids, 0)
    self.assertEqual(half[:7].sum(), 4)      # alternately, the first to the choosing half
    self.assertEqual(half[7:].sum(), 2)
    np.testing.assert_array_equal(half, recognition.choosing_half(list(ids), 0))
    self.assertFalse(all(np.array_equal(half, recognition.choosing_half(ids, s))
                         for s in range(1, 6)))


class ScorerTest(absltest.TestCase):

  def test_fit_predict_and_round_trip(self):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, len(scorer_lib.FEATURES)))
    y = x[:, 0] + 0.3 * rng.standard_normal(400) > 0
    model = scorer_lib.LogisticScorer.fit(x, y, l2=1.0)
    p = model.predict(x)
    self.assertGreater(p[y].mean(), 0.8)
    self.assertLess(p[~y].mean(), 0.2)
    self.assertEqual(int(np.argmax(np.abs(model.weights))), 0)
    again = scorer_lib.LogisticScorer.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_allclose(again.predict(x), p)
    with self.assertRaisesRegex(ValueError, "right and wrong examples"):
      scorer_lib.LogisticScorer.fit(x, np.ones(400, bool))
    bad = dict(model.to_dict(), features=["cosine"])
    with self.assertRaisesRegex(scorer_lib.ScorerError, "where: its features"):
      scorer_lib.LogisticScorer.from_dict(bad, "where")

  def test_candidates_and_their_features(self):
    # Terms: 0 "short stature" (+ synonym entry "small stature"), 1 "scoliosis",
    # 2 "abnormal height" (parent of 0), 3 "mild" (skipped).
    names = ["short stature", "small stature", "scoliosis", "abnormal height", "mild"]
    groups = terms.Groups.from_ids([f"e{i}" for i in range(5)], ["t0", "t0", "t1", "t2", "t3"])
    keys = np.eye(5, dtype=np.float32)
    keys[1] = keys[0] * 0.8 + keys[1] * 0.6          # the synonym sits near its name
    info = scorer_lib.TermInfo.build(names, groups, np.array([0]), np.array([3]),
                                     prior=np.array([5, 0, 2, 0]),
                                     skip_terms=np.array([3]))
    self.assertEqual(info.ancestors[0], frozenset({2}))
    self.assertEqual((info.depth.tolist(), info.descendants.tolist()), ([1, 0, 0, 0],
                                                                         [0, 0, 1, 0]))
    clauses = ["short statures", "scoliosi", "mild"]
    emb = np.array([[1, 0, 0, 0.3, 0.2], [0, 0, 1, 0.1, 0], [0, 0, 0, 0.2, 1]], np.float32)
    # Text 0 holds the three clauses and lists term 2 (abnormal height).
    cands = scorer_lib.clause_candidates(emb, np.zeros(3, np.int64), clauses,
                                         np.array([0, 1]), np.array([2]), keys, groups, info,
                                         top_k=2, explained_k=1)
    col = {f: i for i, f in enumerate(scorer_lib.FEATURES)}
    got = {(int(c), int(t)): f for c, t, f in zip(cands.clause, cands.term, cands.features)}
    self.assertNotIn(3, cands.term.tolist())           # skipped term
    self.assertNotIn(2, cands.term.tolist())           # listed term
    f = got[(0, 0)]
    self.assertEqual((f[col["inverse_rank"]], f[col["name_recall"]],
                      f[col["clause_precision"]], f[col["descendant_of_listed"]]),
                     (1.0, 1.0, 1.0, 1.0))
    self.assertAlmostEqual(f[col["prior"]], np.log1p(5))
    self.assertEqual(got[(1, 1)][col["name_recall"]], 1.0)     # "scoliosi": the stem
    self.assertGreater(got[(1, 1)][col["trigram"]], 0.5)
    self.assertEqual(got[(2, 0)][col["explained"]], 0.0)      # "mild": best term skipped
    # Support: term 0 is among the 2 best unlisted terms of all three clauses.
    self.assertAlmostEqual(f[col["support"]], np.log(3))
    # An entry left out of its own scoring: "small stature" finds term 0 through its name.
    alone = scorer_lib.clause_candidates(keys[1:2], np.zeros(1, np.int64), ["small stature"],
                                         np.zeros(2, np.int64), np.zeros(0, np.int64), keys,
                                         groups, info, top_k=1,
                                         exclude_entry=np.array([1]), entry_names=names)
    self.assertEqual(alone.term.tolist(), [0])
    self.assertAlmostEqual(alone.cosine[0], 0.8, places=5)
    self.assertAlmostEqual(alone.features[0, col["name_recall"]], 0.5)   # "stature" only


class ChoosePointTest(absltest.TestCase):

  def test_the_rule(self):
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([True, True, False, True, False])
    grid = [0.55, 0.65, 0.75, 0.85, 0.95]
    # Base: 8 right of 10, 16 gold (P 0.8, F1 0.615). At 0.75: 10 of 12 (F1 20/28); at
    # 0.65 and 0.55 precision falls under 0.8.
    p = scorer_lib.choose_point(8, 10, 16, conf, correct, grid, 0.8)
    self.assertEqual((p["threshold"], p["added"], p["added_correct"]), (0.75, 2, 2))
    self.assertAlmostEqual(p["f1"], 20 / 28)
    self.assertAlmostEqual(p["precision"], 10 / 12)
    self.assertAlmostEqual(p["base"]["f1"], 16 / 26)
    # Lower the bar: 0.55 gives 22/30 > 20/28.
    self.assertEqual(scorer_lib.choose_point(8, 10, 16, conf, correct, grid, 0.7)
                     ["threshold"], 0.55)
    # None qualifies: nothing passes.
    p = scorer_lib.choose_point(8, 10, 16, conf, correct, grid, 0.9)
    self.assertEqual((p["threshold"], p["added"], p["added_precision"]), (np.inf, 0, None))
    # An addition that lowers F1 never qualifies; ties go to the higher threshold.
    p = scorer_lib.choose_point(8, 10, 16, np.array([0.5]), np.array([False]),
                                [0.4, 0.96, 0.98], 0.0)
    self.assertEqual(p["threshold"], 0.98)


def tiny_hf_config(root: str):
  """The synthetic test config with a tiny random BERT as teacher 1 (it embeds strings)."""
  config = test_config.get_config()
  config.data.dir = os.path.join(root, "data")
  bert = teacher_testing.write_tiny_bert(os.path.join(root, "bert"), hidden_size=32)
  config.teacher1 = teacher_config(kind="hf", name="tiny_bert", model=bert, preset="",
                                   pooling="mean", normalize=True, max_length=16, dim=32,
                                   batch_size=64)
  config.train.stage1_epochs = 1
  config.train.stage2_epochs = 1
  config.recovery.scorer.max_names = 200
  return config


_RUN = {}


def tiny_run():
  """(config, workdir) of one tiny trained run with an HF teacher 1, shared by the tests."""
  if not _RUN:
    root = tempfile.mkdtemp()
    config = tiny_hf_config(root)
    workdir = os.path.join(root, "run")
    loop_lib.train(config, workdir)
    _RUN["run"] = (config, workdir, root)
  return _RUN["run"]


def write_documents(model, path: str, num: int = 8, seed: int = 0) -> str:
  """Documents made of the dataset's concept names, ids field `ids`."""
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(num):
    picks = rng.choice(model.dataset.num_concepts, 3, replace=False)
    names = [str(model.dataset.names[j]) for j in picks]
    rows.append({"doc_id": f"{'AB'[i % 2]}_{i}", "text": f"patient with {names[0]}, "
                 f"{names[1]}; {names[2]}.",
                 "ids": [str(model.dataset.concept_ids[j]) for j in picks],
                 "spans": [[0, 1, "ignored"]]})
  return write(path, "".join(json.dumps(r) + "\n" for r in rows))


class RecognitionRunTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.config, cls.workdir, cls.root = tiny_run()

  def test_only_recognition_on_a_tiny_run(self):
    workdir = os.path.join(self.root, "cli")
    if not os.path.exists(workdir):
      subprocess.run(["cp", "-r", self.workdir, workdir], check=True)
    model = LineModel.load(workdir)
    docs = write_documents(model, os.path.join(self.root, "docs.jsonl"))
    config_file = write(os.path.join(self.root, "cli_config.py"), f"""
from line_jax.api.line_model import load_config
def get_config():
  c = load_config({workdir!r})
  c.eval.recognition_docs = {docs!r}
  c.eval.realtext_ids_field = "ids"
  return c
""")
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-m", "line_jax.evaluate", f"--workdir={workdir}",
                          f"--config={config_file}", "--only=recognition"], cwd=ROOT,
                         env=env, capture_output=True, text=True)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    self.assertIn("recognition.md", out.stdout)
    with open(os.path.join(workdir, "metrics.json")) as f:
      metrics = json.load(f)
    result = metrics["recognition"]
    docs_entry = result["corpora"]["documents"]
    self.assertEqual(docs_entry["num_documents"], 8)
    self.assertEqual(len(docs_entry["halves"]["choosing"]), 4)
    for half in ("choosing", "reporting", "all"):
      for system in ("extractor", "scorer", "cosine", "scorer_alone", "cosine_alone"):
        self.assertBetween(docs_entry[half][system]["micro"]["f1"], 0.0, 1.0)
    self.assertTrue(result["chosen_on"].startswith("documents, choosing half (4 of 8)"))
    point = scorer_lib.read_point(workdir)
    self.assertEqual(point["confidence"], result["confidence"])
    self.assertEqual(point["params_sha256"], ckpt_lib.state_checksum(model.params))
    for name in ("recognition.md", "recognition_pr.png"):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    # The API reads the stored point by default.
    got = model.missing_concepts("patient with " + str(model.dataset.names[3]) + ", "
                                 + str(model.dataset.names[5]), [], k=3)
    self.assertTrue(all(isinstance(g, proposals.Recovered) for g in got))

  def test_a_run_without_documents_chooses_on_the_validation_vignettes(self):
    workdir = os.path.join(self.root, "nodocs")
    if not os.path.exists(workdir):
      subprocess.run(["cp", "-r", self.workdir, workdir], check=True)
    model = LineModel.load(workdir)
    self.assertEqual(model.config.eval.recognition_docs, "")
    report = recognition.run_alone(model, workdir)
    with open(report) as f:
      self.assertIn("## Recognition on annotated documents", f.read())
    with open(os.path.join(workdir, "metrics.json")) as f:
      result = json.load(f)["recognition"]
    self.assertIn("validation vignettes", result["chosen_on"])
    self.assertNotIn("documents", result["corpora"])
    self.assertTrue(any("recognition_docs is empty" in n for n in result["notes"]))
    self.assertIsNotNone(scorer_lib.read_point(workdir))


class StoredPointTest(absltest.TestCase):
  """LineModel.missing_concepts / nearest_concepts with and without a stored point."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    _, workdir, root = tiny_run()
    cls.workdir = os.path.join(root, "api")
    if not os.path.exists(cls.workdir):
      subprocess.run(["cp", "-r", workdir, cls.workdir], check=True)
    cls.model = LineModel.load(cls.workdir)
    cls.text = ("patient with " + str(cls.model.dataset.names[3]) + ", "
                + str(cls.model.dataset.names[7]) + " and " + str(cls.model.dataset.names[11]))

  def tearDown(self):
    if os.path.exists(scorer_lib.point_path(self.workdir)):
      os.remove(scorer_lib.point_path(self.workdir))
    super().tearDown()

  def store(self, threshold, confidence="scorer", params_sha=None):
    # A scorer monotone in the cosine alone.
    n = len(scorer_lib.FEATURES)
    weights = np.zeros(n)
    weights[scorer_lib.FEATURES.index("cosine")] = 4.0
    model = scorer_lib.LogisticScorer(scorer_lib.FEATURES, np.zeros(n), np.ones(n), weights,
                                      -1.0)
    scorer_lib.write_point(self.workdir, {
        "confidence": confidence, "scorer": model.to_dict(), "threshold": threshold,
        "params_sha256": params_sha or ckpt_lib.state_checksum(self.model.params),
        "candidates": {"top_k": 2, "explained_k": 3, "cue_words": ["no"]}})
    return model

  def test_without_a_point_the_plain_results(self):
    plain = self.model.missing_concepts(self.text, [], k=10)
    self.assertTrue(plain and all(type(g) is tuple and len(g) == 4 for g in plain))
    self.assertEqual(self.model.missing_concepts(self.text, [], k=10, operating_point=None),
                     plain)
    hits = self.model.nearest_concepts(self.text, k=4)
    self.assertTrue(all(type(h) is tuple and len(h) == 3 for h in hits))

  def test_the_stored_point_is_the_default(self):
    plain = self.model.missing_concepts(self.text, [], k=10, operating_point=None)
    scorer = self.store(threshold=0.0)
    got = self.model.missing_concepts(self.text, [], k=20)
    self.assertTrue(got and all(isinstance(g, proposals.Recovered) for g in got))
    conf = [g.confidence for g in got]
    self.assertEqual(conf, sorted(conf, reverse=True))
    # The confidence is the stored scorer's: sigmoid(4 cos - 1).
    for g in got:
      self.assertAlmostEqual(g.confidence, 1 / (1 + np.exp(-(4 * g.cosine - 1))), places=5)
    threshold = float(np.median(conf))
    self.store(threshold=threshold)
    again = self.model.missing_concepts(self.text, [], k=20)
    self.assertEqual([g.passes for g in again], [c >= threshold for c in conf])
    self.assertTrue(any(g.passes for g in again) and not all(g.passes for g in again))
    # The old behaviour by argument.
    self.assertEqual(self.model.missing_concepts(self.text, [], k=10, operating_point=None),
                     plain)
    hits = self.model.nearest_concepts(self.text, k=4, segments=True)
    self.assertTrue(all(isinstance(h, proposals.Nearest) for h in hits))
    self.assertEqual([h[:3] for h in hits],
                     self.model.nearest_concepts(self.text, k=4, segments=True,
                                                 operating_point=None))
    self.assertEqual([h.passes for h in hits], [h.confidence >= threshold for h in hits])
    del scorer
    with self.assertRaisesRegex(ValueError, "operating_point='yes'"):
      self.model.missing_concepts(self.text, [], operating_point="yes")

  def test_a_cosine_point_keeps_the_previous_candidates(self):
    plain = self.model.missing_concepts(self.text, [], k=10, operating_point=None)
    threshold = float(np.median([g[2] for g in plain]))
    self.store(threshold=threshold, confidence="cosine")
    got = self.model.missing_concepts(self.text, [], k=10)
    self.assertEqual([tuple(g[:4]) for g in got], plain)
    self.assertEqual([g.passes for g in got], [g[2] >= threshold for g in plain])

  def test_a_point_of_other_parameters_or_a_damaged_file(self):
    self.store(threshold=0.5, params_sha="0" * 64)
    with self.assertLogs(level="WARNING") as logs:
      got = self.model.missing_concepts(self.text, [], k=3)
    self.assertTrue(all(type(g) is tuple for g in got))
    self.assertIn("other parameters", "".join(logs.output))
    write(scorer_lib.point_path(self.workdir), "{not json")
    with self.assertRaisesRegex(scorer_lib.ScorerError, "recovery_point.json: cannot be read"):
      self.model.missing_concepts(self.text, [], k=3)


class RecoveryByScorerTest(absltest.TestCase):

  def test_stage_two_adds_the_most_confident_candidate(self):
    config, workdir, _ = tiny_run()
    model = LineModel.load(workdir)
    lists = PairLists(model.dataset, config.data.max_concepts_per_pair)
    encoder = model.text_encoder()
    embed = lambda strings: encoder.encode(list(strings))    # noqa: E731
    train = model.dataset.split_indices("train")[:60]
    cfg = model.config
    cfg.recovery.estimator = "segment"
    cfg.recovery.scorer.use = True
    counts = {}
    for threshold in (0.0, 1.01):
      cfg.recovery.scorer.threshold = threshold
      added, info = recovery_lib.recover(model.params, lists, model.teacher1.text, model.table,
                                         model.concept_table, model.negated_table, cfg, train,
                                         embed_strings=embed)
      self.assertEqual(info["scorer"]["threshold"], threshold)
      self.assertIn("vignettes", info["scorer"])
      counts[threshold] = int((added[train] >= 0).sum())
      for p in train[added[train] >= 0]:
        rows, _ = model.dataset.pair_concepts(int(p))
        self.assertNotIn(int(added[p]), rows.tolist())
    self.assertGreater(counts[0.0], 0)
    self.assertEqual(counts[1.01], 0)
    cfg.recovery.estimator = "residual"
    with self.assertRaisesRegex(ValueError, "recovery.scorer.use"):
      recovery_lib.recover(model.params, lists, model.teacher1.text, model.table,
                           model.concept_table, model.negated_table, cfg, train,
                           embed_strings=embed)


if __name__ == "__main__":
  absltest.main()
