"""The paper's command on the user's own data, end to end, as a new user runs it.

Tiny random BERT folders shaped like BGE and CODER (written here), a tiny made-up UMLS
release (RRF files written here) and a few notes; then the three commands of README's
"Training on your own data": line_jax.data.umls, line_jax.data.notes and
line_jax.train --config=configs/bge_coder.py with the folders passed as overrides, through
evaluation. Sizes and epochs are the smallest that run every stage.
"""

import json
import os
import subprocess
import sys

from absl.testing import absltest
import pytest

from line_jax.data import testing as data_testing
from line_jax.teachers import testing as teacher_testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, cwd):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
  done = subprocess.run([sys.executable, "-m"] + args, cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=900)
  if done.returncode:
    raise AssertionError(f"{' '.join(args[:1])} failed ({done.returncode}):\n"
                         f"{done.stdout[-2000:]}\n{done.stderr[-6000:]}")
  return done.stdout


class BringYourOwnDataTest(absltest.TestCase):

  # Three subprocesses that each start JAX, two teachers and a training run: about 40 s of
  # CPU, beyond CI's per-test budget. Run with `-m slow`.
  @pytest.mark.slow
  def test_umls_notes_train_evaluate_with_bge_coder(self):
    tmp = self.create_tempdir().full_path
    bge = teacher_testing.write_tiny_bert(os.path.join(tmp, "bge"), hidden_size=32, seed=1)
    coder = teacher_testing.write_tiny_bert(os.path.join(tmp, "coder"), hidden_size=24,
                                            num_heads=4, intermediate_size=48, seed=2)
    meta = data_testing.write_tiny_umls(os.path.join(tmp, "META"))
    notes = data_testing.write_notes_jsonl(os.path.join(tmp, "notes.jsonl"),
                                           data_testing.tiny_notes(40))
    data = os.path.join(tmp, "dataset")
    workdir = os.path.join(tmp, "run")

    run(["line_jax.data.umls", f"--meta={meta}", f"--out={data}",
         "--umls.heldout_fraction=0.25"], ROOT)
    run(["line_jax.data.notes", f"--dataset={data}", f"--notes={notes}"], ROOT)
    out = run(["line_jax.train", "--config=configs/bge_coder.py", f"--workdir={workdir}",
               f"--config.data.dir={data}",
               f"--config.teacher1.model={bge}", "--config.teacher1.dim=32",
               "--config.teacher1.max_length=64",
               f"--config.teacher2.model={coder}", "--config.teacher2.dim=24",
               "--config.model.dim=32", "--config.train.batch_size=16",
               "--config.train.stage1_epochs=1", "--config.train.stage2_epochs=1",
               "--config.graph.fanout=2", "--config.loss.relational_edges=8",
               "--config.eval.cv_folds=2", "--config.eval.num_negatives=5",
               "--config.eval.ner.epochs=2", "--config.eval.ner.seeds=(0,1)"], ROOT)

    self.assertIn("report:", out)
    with open(os.path.join(workdir, "metrics.json")) as f:
      metrics = json.load(f)
    self.assertContainsSubset({"teacher1", "teacher2", "line"},
                              set(metrics["alignment"]["results"]))
    self.assertTrue(os.path.exists(os.path.join(workdir, "report.md")))
    with open(os.path.join(data, "stats.json")) as f:
      self.assertGreater(json.load(f)["cuis"], 10)

    # Table 3 protocol on BIO tags derived from the notes' texts by the extractor.
    bio = os.path.join(tmp, "bio")
    run(["line_jax.eval.ner", f"--bio_dataset={data}", f"--bio_out={bio}"], ROOT)
    out = run(["line_jax.evaluate", f"--workdir={workdir}", f"--ner={bio}"], ROOT)
    self.assertIn("ner/report.md", out)
    with open(os.path.join(workdir, "ner", "metrics.json")) as f:
      ner_metrics = json.load(f)
    self.assertEqual(set(ner_metrics["results"]), {"teacher1", "teacher2", "line"})
    self.assertLen(ner_metrics["results"]["line"]["runs"], 2)


if __name__ == "__main__":
  absltest.main()
