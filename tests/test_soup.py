"""python -m line_jax.soup: uniform parameter averaging, compatibility checks, evaluation."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import jax
import numpy as np

from line_jax.api import soup
from line_jax.api import line_model as api
from line_jax.training import checkpoint as ckpt_lib
from line_jax.training import state as state_lib
from line_jax.api.line_model import LineModel
from test_api import shared_tiny_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fast_eval(config):
  """Keeps the evaluation of a tiny run to a few seconds (no figures: numbers only)."""
  config.eval.classifier_max_epochs = 100
  config.eval.cv_folds = 2
  config.eval.plots = False
  return config


def make_perturbed_copy(workdir, out, seed):
  """A second ingredient without training: `workdir`'s checkpoint with its parameters moved
  by noise, its config's train.seed set to `seed`, sharing the data and teacher cache."""
  model = LineModel.load(workdir)
  config = model.config
  config.train.seed = seed
  os.makedirs(out)
  with open(os.path.join(out, "config.json"), "w") as f:
    f.write(config.to_json_best_effort())
  os.symlink(os.path.join(workdir, "embeddings"), os.path.join(out, "embeddings"))
  abstract = state_lib.abstract_state(config, len(model.dataset.relation_types),
                                      model.teacher1.dim, model.teacher2.dim,
                                      model.dataset.num_pairs)
  state, progress = api.restore_state(workdir, config, abstract)
  rng = np.random.default_rng(seed)
  state["params"] = jax.tree.map(
      lambda x: np.asarray(x) + 0.05 * rng.standard_normal(np.shape(x)).astype(np.float32),
      state["params"])
  ckpt_lib.save(ckpt_lib.manager(out, 3), int(progress["step"]), state, progress)
  return out


class AverageTest(absltest.TestCase):

  def test_mean_of_trees(self):
    a = {"w": np.ones((2, 3)), "b": {"c": np.zeros(2)}}
    b = {"w": 3 * np.ones((2, 3)), "b": {"c": np.full(2, 4.0)}}
    out = soup.average_params([a, b])
    np.testing.assert_allclose(out["w"], 2.0)
    np.testing.assert_allclose(out["b"]["c"], 2.0)

  def test_shape_mismatch_is_named(self):
    with self.assertRaisesRegex(soup.SoupError, r"1: parameter \['w'\] has shape \(3,\)"):
      soup.average_params([{"w": np.ones(2)}, {"w": np.ones(3)}])
    with self.assertRaisesRegex(soup.SoupError, "not in both"):
      soup.average_params([{"w": np.ones(2)}, {"v": np.ones(2)}])

  def test_comparison_rows(self):
    def metrics(rank, f1):
      return {"alignment": {"results": {"line": {"mean_rank": rank}}},
              "classification": {"results": {"line": {"concept": {"f1": f1}}}}}
    rows = soup.comparison_rows({"a": metrics(3.0, 0.5), "b": metrics(5.0, 0.7),
                                 "soup": metrics(2.0, 0.6)}, "soup")
    self.assertEqual([r["name"] for r in rows],
                     ["a", "b", "ingredients' mean", "best ingredient", "soup"])
    self.assertEqual(rows[3]["mean rank"], 3.0)     # lower is better
    self.assertEqual(rows[3]["F1 concepts"], 0.7)
    self.assertTrue(np.isnan(rows[0]["MRR"]))
    self.assertIn("| soup | 2.0000 |", soup.format_table(rows))


  def test_protocol_differences(self):
    base = {"split": "test", "seed": 0, "num_pairs_evaluated": 80,
            "alignment": {"num_negatives": 79}, "classification": {"folds": 2}}
    other = {**base, "classification": {"folds": 5}}
    self.assertEqual(soup.protocol_differences({"a": base, "soup": base}, "soup"), [])
    messages = soup.protocol_differences({"a": other, "soup": base}, "soup")
    self.assertLen(messages, 1)
    self.assertIn("a: classification.folds is 5 but 2", messages[0])


class SoupTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    config, cls.first = shared_tiny_run()
    with open(os.path.join(cls.first, "config.json"), "w") as f:
      f.write(fast_eval(config).to_json_best_effort())
    cls.second = make_perturbed_copy(cls.first, os.path.join(tempfile.mkdtemp(), "seed1"),
                                     seed=1)

  def test_soup_is_the_mean_and_is_evaluated(self):
    out = self.create_tempdir().full_path
    result = subprocess.run([sys.executable, "-m", "line_jax.soup",
                             f"--workdirs={self.first},{self.second}", f"--out={out}"],
                            cwd=REPO, capture_output=True, text=True, timeout=240)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("| soup |", result.stdout)
    self.assertIn("best ingredient", result.stdout)
    a, b, s = (LineModel.load(w) for w in (self.first, self.second, out))
    flat = [np.concatenate([np.ravel(x) for x in jax.tree.leaves(m.params)])
            for m in (a, b, s)]
    np.testing.assert_allclose(flat[2], (flat[0] + flat[1]) / 2, atol=1e-6)
    summary = json.load(open(os.path.join(out, "soup.json")))
    self.assertEqual(summary["seeds"], [0, 1])
    self.assertEqual(summary["warnings"], [])
    self.assertEqual([r["name"] for r in summary["rows"]][-1], "soup")
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    self.assertGreater(metrics["alignment"]["results"]["line"]["mean_reciprocal_rank"], 0)
    for workdir in (self.first, self.second):    # ingredients without metrics got evaluated
      self.assertTrue(os.path.exists(os.path.join(workdir, "metrics.json")))
    # The soup works with the rest of the API.
    self.assertEqual(s.embed_concepts([[str(s.dataset.concept_ids[0])]]).shape, (1, s.dim))

  def test_incompatible_runs_are_refused(self):
    with self.assertRaisesRegex(soup.SoupError, "at least two"):
      soup.make_soup([self.first], self.create_tempdir().full_path)
    with self.assertRaisesRegex(soup.SoupError, "is one of the ingredients"):
      soup.make_soup([self.first, self.second], self.first)
    a, b = LineModel.load(self.first), LineModel.load(self.second)
    soup.check_compatible([a, b], ["a", "b"])
    b.config.teacher2.seed = 99
    with self.assertRaisesRegex(soup.SoupError, "b: teacher2.seed is 99"):
      soup.check_compatible([a, b], ["a", "b"])


if __name__ == "__main__":
  absltest.main()
