"""line_jax.evaluate end to end on a tiny synthetic dataset and a fake LineModel."""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from absl.testing import absltest
from absl.testing import parameterized

from line_jax.search import topk as search
from line_jax.config import base_config
from line_jax.data.dataset import Dataset
from line_jax.cache.store import TeacherEmbeddings
from line_jax.eval import linear
from line_jax.eval import metrics
from line_jax.eval import protocols
from line_jax.eval import runner
from line_jax.eval import report
from line_jax.eval import reuse
from line_jax.eval import settings as settings_lib
from line_jax.eval import spaces
from tolerances import assert_close_to_scale

NUM_CONCEPTS = 40
NUM_GROUPS = 4
LATENT = 8


def make_dataset(num_pairs: int = 120, seed: int = 0) -> Dataset:
  """SYNTHETIC: concepts with latents, a graph, held-out edges, pairs with true lists."""
  rng = np.random.default_rng(seed)
  c = NUM_CONCEPTS
  groups = np.array([f"g{j % NUM_GROUPS}" for j in range(c)], object)
  # Training graph: each concept to the next member of its group; held out: two classes.
  head = np.arange(c - NUM_GROUPS, dtype=np.int32)
  tail = head + NUM_GROUPS
  held_head = np.array([0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14], np.int32)
  held_tail = held_head + 2 * NUM_GROUPS
  held_rel = np.array(["parent"] * 8 + ["synonym"] * 4, object)
  offsets, flat, negated, true_offsets, true_flat = [0], [], [], [0], []
  for _ in range(num_pairs):
    true = rng.choice(c, size=int(rng.integers(3, 6)), replace=False)
    extracted = true[:-1] if rng.random() < 0.5 else true
    flat.extend(extracted.tolist())
    negated.extend((rng.random(len(extracted)) < 0.15).tolist())
    offsets.append(len(flat))
    true_flat.extend(true.tolist())
    true_offsets.append(len(true_flat))
  flat = np.array(flat, np.int32)
  labels = np.array([groups[flat[offsets[i]]] for i in range(num_pairs)], object)
  split = np.array(["train", "test"] * (num_pairs // 2), object)
  return Dataset(
      root="/tmp/fake_dataset", concept_ids=np.array([f"C{j}" for j in range(c)], object),
      names=np.array([f"concept {j}" for j in range(c)], object),
      negated_names=np.array([f"no concept {j}" for j in range(c)], object),
      groups=groups, relation_types=("next",), edge_head=head, edge_tail=tail,
      edge_type=np.zeros(len(head), np.int32), heldout_head=held_head,
      heldout_tail=held_tail, heldout_relation=held_rel,
      pair_ids=np.array([f"p{i}" for i in range(num_pairs)], object),
      texts=np.array([f"text {i}" for i in range(num_pairs)], object),
      concept_offsets=np.array(offsets, np.int64), concept_flat=flat,
      negated_flat=np.array(negated, bool), rho=np.ones(num_pairs, np.float32),
      split=split, labels=labels, true_offsets=np.array(true_offsets, np.int64),
      true_flat=np.array(true_flat, np.int32), synthetic=np.ones(num_pairs, bool))


def make_teacher(dataset: Dataset, dim: int, seed: int, noise: float) -> TeacherEmbeddings:
  """A synthetic teacher: a random view of shared latents (group-structured), plus noise."""
  latent_rng = np.random.default_rng(100)
  group_codes = np.arange(dataset.num_concepts) % NUM_GROUPS
  latents = (2.0 * latent_rng.normal(size=(NUM_GROUPS, LATENT))[group_codes]
             + latent_rng.normal(size=(dataset.num_concepts, LATENT)))
  rng = np.random.default_rng(seed)
  view = rng.normal(size=(LATENT, dim))
  concepts = latents @ view + noise * rng.normal(size=(dataset.num_concepts, dim))
  negated = -0.5 * concepts + noise * rng.normal(size=concepts.shape)
  text_latent = np.stack([
      latents[dataset.true_flat[dataset.true_offsets[i]:dataset.true_offsets[i + 1]]].mean(0)
      for i in range(dataset.num_pairs)])
  text = text_latent @ view + 3 * noise * rng.normal(size=(dataset.num_pairs, dim))
  return TeacherEmbeddings(text=text.astype(np.float32), concepts=concepts.astype(np.float32),
                           negated=negated.astype(np.float32), meta={}, path="")


class FakeLineModel:
  """The attributes of line_jax.api.line_model.LineModel: F and G are fixed linear maps."""

  def __init__(self, config, dataset, teacher1, teacher2, seed=0):
    self.config = config
    self.workdir = ""
    self.dataset = dataset
    self.teacher1 = teacher1
    self.teacher2 = teacher2
    rng = np.random.default_rng(seed)
    d = teacher1.dim
    self._f = np.eye(d, dtype=np.float32) + 0.05 * rng.normal(size=(d, d)).astype(np.float32)
    # G: teacher-2 concepts mapped onto teacher 1's concept rows (an "aligned" projection).
    self._g = np.linalg.lstsq(teacher2.concepts, teacher1.concepts, rcond=None)[0]
    self._g = self._g.astype(np.float32) @ self._f
    self.dictionary_calls = 0

  def project_texts(self, text_emb):
    return np.asarray(text_emb, np.float32) @ self._f

  def project_concepts(self, concept_idx, negated):
    rows = np.where(np.asarray(negated)[:, None], self.teacher2.negated[concept_idx],
                    self.teacher2.concepts[concept_idx])
    return rows @ self._g

  def dictionary(self):
    self.dictionary_calls += 1
    return self.teacher2.concepts @ self._g


def make_config(**eval_overrides):
  config = base_config()
  config.teacher1.name = "text_t"
  config.teacher2.name = "concept_t"
  config.eval.classifier_max_epochs = 150
  config.eval.classifier_learning_rate = 0.02
  config.eval.recovery_thresholds = [0.3, 0.5, 0.7, 0.9]
  for key, value in eval_overrides.items():
    config.eval[key] = value
  return config


def make_model(config=None, dataset=None):
  dataset = dataset or make_dataset()
  t1 = make_teacher(dataset, 12, seed=1, noise=0.3)
  t2 = make_teacher(dataset, 10, seed=2, noise=0.3)
  return FakeLineModel(config or make_config(), dataset, t1, t2)


TRAIN_LOG = [
    {"stage": 1, "epoch": 0, "step": 5, "loss": 2.0, "align": 1.2, "relational": 0.5,
     "negation": 0.3},
    {"stage": 1, "epoch": 1, "step": 10, "loss": 1.5, "align": 0.9, "relational": 0.4,
     "negation": 0.2},
    {"stage": 2, "epoch": 0, "step": 15, "loss": 1.2, "align": 0.7, "relational": 0.3,
     "negation": 0.2},
]


class RunEvaluationTest(absltest.TestCase):

  def make_workdir(self) -> str:
    # tempfile rather than create_tempdir: absl flags are not parsed under pytest.
    handle = tempfile.TemporaryDirectory()
    self.addCleanup(handle.cleanup)
    return handle.name

  def make_workdir_with_log(self) -> str:
    workdir = self.make_workdir()
    with open(os.path.join(workdir, "train_log.jsonl"), "w") as f:
      f.write("\n".join(json.dumps(r) for r in TRAIN_LOG) + "\n")
    return workdir

  def test_writes_report_metrics_and_plots_and_reruns_identically(self):
    workdir = self.make_workdir_with_log()
    model = make_model()
    result = runner.run_evaluation(model, workdir)

    for name in ("report.md", "metrics.json") + tuple(report.PLOT_FILES.values()):
      path = os.path.join(workdir, name)
      self.assertTrue(os.path.exists(path), name)
      self.assertGreater(os.path.getsize(path), 100, name)
    with open(os.path.join(workdir, "metrics.json")) as f:
      written = json.load(f)
    self.assertEqual(written, result)

    text = open(os.path.join(workdir, "report.md")).read()
    for heading in ("Table 1", "Table A2", "Table 2", "Table 4", "Table 5", "Table A3",
                    "Residual recovery", "Embedding-space diagnostics", "loss_curves.png"):
      self.assertIn(heading, text)
    self.assertIn("| Models / Metric | Mean Rank ↓ | Mean Reverse Rank ↑ | Top10@Acc ↑ |",
                  text)
    self.assertIn("| text_t+concept_t |", text)
    self.assertIn("concept_t→text_t", text)
    self.assertIn("| # relation pairs | 8 | 4 |", text)
    # 60 test pairs: fewer than 100 other texts, so all 59 are used and the report says so.
    align = result["alignment"]
    self.assertEqual(align["num_negatives"], 59)
    self.assertTrue(align["used_all_other_texts"])
    self.assertIn("every other text is a negative (the paper draws 100)", text)
    for key in ("teacher1", "teacher2", "line", "map_t2_to_t1", "map_t1_to_t2"):
      r = align["results"][key]
      self.assertBetween(r["mean_rank"], 1.0, 60.0)
      self.assertBetween(r["mean_reciprocal_rank"], 0.0, 1.0)
    self.assertEqual([c["relation"] for c in result["relations"]["classes"]],
                     ["parent", "synonym"])
    self.assertEqual(result["relations"]["leak_check"]["in_training_graph"], 0)
    cls = result["classification"]
    self.assertEqual(cls["num_classes"], NUM_GROUPS)
    gap = cls["results"]["line"]["gap"]["f1"]
    self.assertAlmostEqual(gap, cls["results"]["line"]["sentence"]["f1"]
                           - cls["results"]["line"]["concept"]["f1"])
    # A map's input side is a teacher's own rows: that probe is the teacher's, not refitted.
    for space, form, teacher in (("map_t2_to_t1", "sentence", "teacher1"),
                                 ("map_t1_to_t2", "concept", "teacher2")):
      copied = dict(cls["results"][space][form])
      self.assertEqual(copied.pop("identical_to"), f"{teacher} {form}")
      self.assertEqual(copied, cls["results"][teacher][form])
    self.assertNotIn("identical_to", cls["results"]["map_t2_to_t1"]["concept"])
    rec = result["recovery"]["results"]["line"]
    self.assertEqual(rec["threshold"], [0.3, 0.5, 0.7, 0.9])
    self.assertEqual(rec["recovered"], sorted(rec["recovered"], reverse=True))
    self.assertGreater(result["recovery"]["num_missing"], 0)
    self.assertEqual(result["training_log"]["records"], 3)

    # Again in another work dir, without figures (eval.plots=False): the same numbers, no
    # PNG, and a report that links none.
    rerun_dir = self.make_workdir_with_log()
    again = runner.run_evaluation(make_model(make_config(plots=False)), rerun_dir)
    joint = dict(result["joint"])
    self.assertEqual(joint.pop("plot"), "joint_space.png")
    self.assertEqual(again, {**result, "joint": joint})
    self.assertEqual(sorted(os.listdir(rerun_dir)),
                     ["metrics.json", "report.md", "train_log.jsonl"])
    again_text = open(os.path.join(rerun_dir, "report.md")).read()
    self.assertNotIn("![", again_text)
    self.assertEqual([line for line in text.splitlines() if line and line[:2] != "!["],
                     [line for line in again_text.splitlines() if line])

  def test_caps_and_negatives_from_config(self):
    workdir = self.make_workdir()
    config = make_config(num_negatives=10, max_pairs=20, cv_folds=2,
                         classifier_early_stopping="validation", classifier_patience=3)
    result = runner.run_evaluation(make_model(config), workdir)
    self.assertEqual(result["alignment"]["num_negatives"], 10)
    self.assertFalse(result["alignment"]["used_all_other_texts"])
    self.assertEqual(result["alignment"]["pool_size"], 20)
    self.assertEqual(result["num_pairs_evaluated"], 20)
    self.assertEqual(result["classification"]["folds"], 2)
    self.assertIsNone(result["training_log"])
    self.assertFalse(os.path.exists(os.path.join(workdir, "loss_curves.png")))
    self.assertIn("No `train_log.jsonl`", open(os.path.join(workdir, "report.md")).read())

  def test_leaked_heldout_edge_is_refused(self):
    dataset = make_dataset()
    leaky = dataclasses.replace(
        dataset, edge_head=np.r_[dataset.edge_head, dataset.heldout_tail[:1]],
        edge_tail=np.r_[dataset.edge_tail, dataset.heldout_head[:1]],
        edge_type=np.r_[dataset.edge_type, 0].astype(np.int32))
    with self.assertRaisesRegex(AssertionError, "held-out edges are in the training graph"):
      runner.run_evaluation(make_model(dataset=leaky), self.make_workdir())


class LossCurvesTest(absltest.TestCase):

  def test_draws_the_terms_that_are_on_and_a_changing_rate(self):
    from line_jax.eval import plots
    records = [dict(stage=1, loss=2.0, align=0.1, relational=0.2, negation=0.3, concept=1.5,
                    name=0.0, text=0.0, uniformity=0.0, learning_rate=1e-3),
               dict(stage=2, loss=1.0, align=0.1, relational=0.2, negation=0.3, concept=1.2,
                    name=0.0, text=0.0, uniformity=0.0, learning_rate=1e-3)]
    self.assertEqual(plots.curve_fields(records),
                     ["loss", "align", "relational", "negation", "concept"])
    records[1]["learning_rate"] = 5e-4
    self.assertEqual(plots.curve_fields(records)[-1], "learning_rate")
    path = plots.loss_curves(records, os.path.join(self.create_tempdir().full_path, "c.png"))
    self.assertGreater(os.path.getsize(path), 1000)


class ReuseTest(absltest.TestCase):
  """A rerun keeps an evaluation made of the same model, data, settings and code."""

  def test_current_evaluation_is_kept_and_a_changed_one_redone(self):
    handle = tempfile.TemporaryDirectory()
    self.addCleanup(handle.cleanup)
    workdir = handle.name
    model = make_model(make_config(classifier_max_epochs=20, cv_folds=2, plots=False))
    model.config.eval.transfer.enabled = False    # what is measured here is the bookkeeping
    model.params = {"f": model._f, "g": model._g}
    first = runner.run_evaluation(model, workdir)
    self.assertRegex(first[reuse.KEY_FIELD], "^[0-9a-f]{64}$")
    calls = model.dictionary_calls
    self.assertGreater(calls, 0)

    self.assertEqual(runner.run_evaluation(model, workdir), first)
    self.assertEqual(model.dictionary_calls, calls)        # nothing was computed again

    model.config.eval.reuse = False                         # asked for: evaluated again
    again = runner.run_evaluation(model, workdir)
    self.assertEqual(model.dictionary_calls, 2 * calls)
    self.assertEqual(again[reuse.KEY_FIELD], first[reuse.KEY_FIELD])   # reuse not in the key
    model.config.eval.reuse = True

    # What the key covers, without evaluating again.
    key = first[reuse.KEY_FIELD]
    model.params = {"f": model._f, "g": model._g + 1e-3}   # other parameters
    self.assertNotEqual(reuse.evaluation_key(model, workdir), key)
    model.params = {"f": model._f, "g": model._g}
    self.assertEqual(reuse.evaluation_key(model, workdir), key)
    model.config.eval.num_negatives = 7                     # another setting
    self.assertNotEqual(reuse.evaluation_key(model, workdir), key)
    model.config.eval.num_negatives = first["alignment"]["requested_negatives"]
    log = os.path.join(workdir, "train_log.jsonl")          # another training log
    with open(log, "w") as f:
      f.write(json.dumps(TRAIN_LOG[0]) + "\n")
    self.assertNotEqual(reuse.evaluation_key(model, workdir), key)
    os.remove(log)
    self.assertEqual(reuse.evaluation_key(model, workdir), key)
    self.assertIsNone(reuse.previous_result(workdir, "0" * 64))
    os.rename(os.path.join(workdir, "report.md"), os.path.join(workdir, "old.md"))
    self.assertIsNone(reuse.previous_result(workdir, key))   # an incomplete evaluation
    os.rename(os.path.join(workdir, "old.md"), os.path.join(workdir, "report.md"))
    self.assertIsNotNone(reuse.previous_result(workdir, key))

    runner.run_alone(model, workdir, "joint")            # one entry replaced: not kept
    with open(os.path.join(workdir, "metrics.json")) as f:
      self.assertNotIn(reuse.KEY_FIELD, json.load(f))
    self.assertIsNone(reuse.previous_result(workdir, key))

  def test_a_model_without_parameters_is_never_kept(self):
    handle = tempfile.TemporaryDirectory()
    self.addCleanup(handle.cleanup)
    model = make_model(make_config(classifier_max_epochs=20, cv_folds=2))
    self.assertIsNone(reuse.evaluation_key(model, handle.name))
    self.assertIsNone(reuse.previous_result(handle.name, None))


_CLI_SCRIPT = """
import sys
sys.path.insert(0, {tests_dir!r})
from absl import app
import test_evaluate
from line_jax import evaluate

class FakeLoader:
  @classmethod
  def load(cls, workdir, config=None):
    return test_evaluate.make_model(config)

evaluate.LineModel = FakeLoader
app.run(evaluate.main)
"""


class CliTest(absltest.TestCase):

  def test_main_reads_config_and_workdir_flags(self):
    handle = tempfile.TemporaryDirectory()
    self.addCleanup(handle.cleanup)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(tests_dir)
    config_path = os.path.join(handle.name, "eval_config.py")
    with open(config_path, "w") as f:
      f.write("from line_jax.config import base_config\n"
              "def get_config():\n"
              "  c = base_config()\n"
              "  c.eval.classifier_max_epochs = 50\n"
              "  return c\n")
    env = dict(os.environ, MPLBACKEND="Agg", JAX_PLATFORMS="cpu",
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", _CLI_SCRIPT.format(tests_dir=tests_dir),
         f"--config={config_path}", "--config.eval.num_negatives=7",
         f"--workdir={handle.name}"],
        capture_output=True, text=True, env=env, cwd=root, timeout=300)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("report:", proc.stdout)
    with open(os.path.join(handle.name, "metrics.json")) as f:
      written = json.load(f)
    self.assertEqual(written["alignment"]["num_negatives"], 7)
    self.assertEqual(written["classification"]["probe"]["max_epochs"], 50)

  def test_only_joint_with_config_overrides(self):
    handle = tempfile.TemporaryDirectory()
    self.addCleanup(handle.cleanup)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(tests_dir)
    config_path = os.path.join(handle.name, "eval_config.py")
    with open(config_path, "w") as f:
      f.write("from line_jax.config import base_config\n"
              "def get_config():\n"
              "  return base_config()\n")
    with open(os.path.join(handle.name, "metrics.json"), "w") as f:
      json.dump({"alignment": {"kept": 1}}, f)
    env = dict(os.environ, MPLBACKEND="Agg", JAX_PLATFORMS="cpu",
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", _CLI_SCRIPT.format(tests_dir=tests_dir),
         f"--config={config_path}", "--config.eval.split=train", "--only=joint",
         "--config.eval.recovery_hit_k=3", f"--workdir={handle.name}"],
        capture_output=True, text=True, env=env, cwd=root, timeout=300)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertEqual(proc.stdout.strip().splitlines()[-1],
                     os.path.join(os.path.abspath(handle.name), "joint.md"))
    with open(os.path.join(handle.name, "metrics.json")) as f:
      written = json.load(f)
    self.assertEqual(written["alignment"], {"kept": 1})       # other entries kept
    self.assertEqual(written["joint"]["split"], "train")
    self.assertEqual(written["joint"]["settings"]["recovery_top_k"], 3)
    self.assertIn("hit@3", written["joint"]["recovery"]["results"]["line"]["estimators"]
                  ["residual"])
    with open(os.path.join(handle.name, "joint.md")) as f:
      self.assertIn("Text -> concept retrieval", f.read())


class PartsTest(parameterized.TestCase):

  def test_list_slices_match_pair_concepts(self):
    dataset = make_dataset()
    idx = np.array([5, 0, 17, 3])
    offsets, flat, neg = spaces.list_slices(dataset, idx)
    for i, p in enumerate(idx):
      c, n = dataset.pair_concepts(p)
      np.testing.assert_array_equal(flat[offsets[i]:offsets[i + 1]], c)
      np.testing.assert_array_equal(neg[offsets[i]:offsets[i + 1]], n)

  def test_true_slices_match_true_lists(self):
    dataset = make_dataset()
    idx = np.array([9, 2])
    offsets, flat = spaces.true_slices(dataset, idx)
    for i, p in enumerate(idx):
      np.testing.assert_array_equal(
          flat[offsets[i]:offsets[i + 1]],
          dataset.true_flat[dataset.true_offsets[p]:dataset.true_offsets[p + 1]])

  def test_recovery_matches_a_per_pair_loop(self):
    model = make_model()
    dataset = model.dataset
    settings = settings_lib.read_settings(model.config)
    pair_idx = dataset.split_indices("test")
    space = spaces.line_space("line", model, chunk=16)
    out = protocols.residual_recovery(dataset, pair_idx, [space],
                                     {"line": model.dictionary}, settings)
    keys = metrics.l2_normalize(model.dictionary())
    best, correct, missing = [], [], 0
    for p in pair_idx:
      c, n = dataset.pair_concepts(p)
      truth = dataset.true_flat[dataset.true_offsets[p]:dataset.true_offsets[p + 1]]
      residual = (model.project_texts(model.teacher1.text[p:p + 1])[0]
                  - model.project_concepts(c, n).mean(0))
      cos = keys @ (residual / np.linalg.norm(residual))
      top = next(j for j in np.argsort(-cos, kind="stable") if j not in set(c.tolist()))
      best.append(cos[top])
      correct.append(top in set(truth.tolist()) - set(c.tolist()))
      missing += len(set(truth.tolist()) - set(c.tolist()))
    best, correct = np.array(best), np.array(correct)
    curve = out["results"]["line"]
    self.assertEqual(out["num_missing"], missing)
    for i, tau in enumerate(curve["threshold"]):
      self.assertEqual(curve["recovered"][i], int((best >= tau).sum()), tau)
      self.assertEqual(curve["correct"][i], int(((best >= tau) & correct).sum()), tau)

  def test_teacher_proxy_uses_negated_rows(self):
    dataset = make_dataset()
    teacher = make_teacher(dataset, 6, seed=3, noise=0.1)
    space = spaces.teacher_space("t", "t", teacher)
    p = int(np.flatnonzero([dataset.pair_concepts(i)[1].any()
                            for i in range(dataset.num_pairs)])[0])
    c, n = dataset.pair_concepts(p)
    expected = np.where(n[:, None], teacher.negated[c], teacher.concepts[c]).mean(0)
    # A float32 mean in another order: relative to the largest element, not to each.
    assert_close_to_scale(space.proxies(dataset, np.array([p]))[0], expected, rtol=1e-5,
                          scale_tol=1e-6)

  def test_line_negated_rows_come_from_project_concepts(self):
    model = make_model()
    space = spaces.line_space("line", model, chunk=3)
    idx = np.array([4, 4, 7, 9, 2])
    neg = np.array([True, False, True, True, False])
    np.testing.assert_allclose(space.embed_concepts(idx, neg),
                               model.project_concepts(idx, neg), rtol=1e-5, atol=1e-6)

  def test_alignment_ranks_by_hand(self):
    # Proxy 0 is closest to text 0; proxy 1 is closer to text 2 than to its own text 1.
    proxies = np.array([[1.0, 0.0], [0.0, 1.0]])
    pool = np.array([[1.0, 0.1], [0.6, 0.4], [0.1, 1.0]])
    for block_bytes in (1, 1 << 20):   # one query per block; all at once
      ranks = metrics.alignment_ranks(proxies, pool, np.array([0, 1]),
                                      np.array([[1, 2], [0, 2]]), max_block_bytes=block_bytes)
      np.testing.assert_array_equal(ranks, [1, 2])

  def test_affine_map_is_recovered(self):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    w = rng.normal(size=(5, 3))
    b = rng.normal(size=3)
    w_fit, b_fit = linear.fit_affine_map(x, x @ w + b, ridge=0.0, chunk=64)
    np.testing.assert_allclose(w_fit, w, atol=1e-5)
    np.testing.assert_allclose(b_fit, b, atol=1e-5)

  @parameterized.named_parameters(("grouped", True), ("uniform", False))
  def test_matched_random_pairs(self, grouped):
    dataset = make_dataset()
    groups = dataset.groups if grouped else None
    n = dataset.num_concepts
    known = protocols.edge_keys(dataset.edge_head, dataset.edge_tail, n)
    head, tail = dataset.heldout_head.astype(np.int64), dataset.heldout_tail.astype(np.int64)
    rh, rt, colliding = protocols.draw_matched_random_pairs(
        head, tail, groups, known, n, np.random.default_rng(0))
    self.assertEqual(colliding, 0)
    self.assertFalse(np.isin(protocols.edge_keys(rh, rt, n), known).any())
    self.assertTrue((rh != rt).all())
    if grouped:
      np.testing.assert_array_equal(dataset.groups[rh], dataset.groups[head])
      np.testing.assert_array_equal(dataset.groups[rt], dataset.groups[tail])
    again = protocols.draw_matched_random_pairs(head, tail, groups, known, n,
                                               np.random.default_rng(0))
    np.testing.assert_array_equal(again[0], rh)
    np.testing.assert_array_equal(again[1], rt)

  def test_numpy_top_k_matches_full_sort(self):
    rng = np.random.default_rng(0)
    queries, keys = rng.normal(size=(7, 5)), rng.normal(size=(50, 5))
    scores, idx = search.cosine_top_k(queries, keys, 4)
    full = metrics.l2_normalize(queries) @ metrics.l2_normalize(keys).T
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1)[:, :4])
    # float32 cosines against float64 ones: an absolute tolerance on the cosine's scale (1).
    assert_close_to_scale(scores, -np.sort(-full, axis=1)[:, :4], rtol=1e-5, scale_tol=1e-6,
                          scale=1.0)

  def test_settings_defaults_and_overrides(self):
    settings = settings_lib.read_settings(base_config())
    self.assertEqual(settings.num_negatives, 100)
    self.assertEqual(settings.probe.max_epochs, 2000)
    self.assertEqual(settings.training_threshold, 0.9)
    settings = settings_lib.read_settings(make_config(classifier_tol=1e-3))
    self.assertEqual(settings.probe.tol, 1e-3)
    self.assertEqual(settings.recovery_thresholds, (0.3, 0.5, 0.7, 0.9))


if __name__ == "__main__":
  absltest.main()
