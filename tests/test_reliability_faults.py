"""A full disk, and very large inputs: what a hostile probe of training, export and
evaluation found. A full disk is simulated in a child process by a file-size limit
(RLIMIT_FSIZE: a write past it fails with EFBIG through the very code a full disk's ENOSPC
takes; Python ignores SIGXFSZ), or by an injected OSError(ENOSPC) where a child would cost
too much."""

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from unittest import mock

from absl.testing import absltest, parameterized
import numpy as np

from line_jax.training import checkpoint as ckpt_lib
from line_jax.cache import store as embeddings
from line_jax.util import files
from line_jax.training import host_batches as pipeline
from line_jax.training import workdir as workdir_lib
from line_jax.data import prepare_dataset
from line_jax.data.dataset import load_dataset, write_dataset
from line_jax.eval import plots
from line_jax.eval import runner
from line_jax.eval import reuse
from configs import test as test_config
from tests import test_evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Shared by the child scripts: a context manager that limits the size of the files this
# process writes.
_LIMIT = """
import contextlib, resource

@contextlib.contextmanager
def file_size_limit(nbytes):
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
  try:
    yield
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
"""


def run_child(script: str, *args: str) -> dict:
  """Runs `script` (which prints one line "REPORT <json>") in a child Python; its report."""
  done = subprocess.run([sys.executable, "-c", _LIMIT + textwrap.dedent(script), *args],
                        cwd=REPO, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "PYTHONPATH": REPO})
  for line in done.stdout.splitlines():
    if line.startswith("REPORT "):
      return json.loads(line[len("REPORT "):])
  raise AssertionError(f"child failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                       f"{done.stderr[-6000:]}")


# --- training: a checkpoint save that fails --------------------------------------------

_TRAIN = """
import json, os, sys
import jax, numpy as np
from configs import test as test_config
from line_jax.training import checkpoint as ckpt_lib
from line_jax.training import loop as loop_lib
from line_jax.training import trainer as trainer_lib

root = sys.argv[1]
def config(stop):
  c = test_config.get_config()
  c.data.dir = os.path.join(root, "data")
  c.train.stop_after_steps = stop
  return c

def final(workdir):
  t = trainer_lib.Trainer(config(9), workdir)
  return ckpt_lib.restore_latest(ckpt_lib.manager(workdir, 3),
                                 {**t.init_state(), "added": t.lists.added})

def log(workdir):
  with open(os.path.join(workdir, "train_log.jsonl")) as f:
    return [json.loads(line) for line in f]

out = {}
whole = os.path.join(root, "whole")
loop_lib.train(config(9), whole)          # checkpoints at steps 4, 8 and 9

# The save at step 8 meets a "full disk" (files may not grow past 4 KiB); the limit holds
# during that save alone. Not 16 KiB: the arrays (about 44 KiB) go into data files whose
# split depends on timing, so on a loaded machine each could stay under 16 KiB; the save's
# own metadata files (5-7 KiB) pass 4 KiB whatever the timing.
real_save = ckpt_lib.save
def save(mgr, step, state, progress):
  with file_size_limit(4096) if step == 8 else contextlib.nullcontext():
    return real_save(mgr, step, state, progress)
ckpt_lib.save = save
workdir = os.path.join(root, "full")
try:
  loop_lib.train(config(9), workdir)
  out["error"] = None
except Exception as e:
  out["error"] = [type(e).__name__, str(e), e.errno if isinstance(e, OSError) else None]
ckpt_lib.save = real_save
out["checkpoints_after_failure"] = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
out["workdir_after_failure"] = sorted(os.listdir(workdir))
out["rerun_step"] = loop_lib.train(config(9), workdir)["step"]   # space freed: rerun
(a, pa_), (b, pb) = final(whole), final(workdir)
out["steps"] = [pa_["step"], pb["step"]]
out["identical"] = all(np.array_equal(np.asarray(x), np.asarray(y))
                       for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
out["log_steps"] = [[r["step"] for r in log(whole)], [r["step"] for r in log(workdir)]]
out["last_records_equal"] = (
    {k: v for k, v in log(whole)[-1].items() if k != "pairs_per_s"}
    == {k: v for k, v in log(workdir)[-1].items() if k != "pairs_per_s"})

# keep_checkpoints=1: a step saved again (as at an epoch end that is also a stage end) whose
# new save fails keeps the checkpoint it was to replace.
state = {"params": {"w": np.random.default_rng(0).standard_normal((128, 128), np.float32)},
         "added": np.arange(5, dtype=np.int32)}
mgr = ckpt_lib.manager(os.path.join(root, "keep1"), 1)
ckpt_lib.save(mgr, 3, state, {"step": 3, "stage": 1})
try:
  with file_size_limit(16384):
    ckpt_lib.save(mgr, 3, {**state, "params": {"w": state["params"]["w"] + 1}},
                  {"step": 3, "stage": 2})
  out["resave_error"] = None
except Exception as e:
  out["resave_error"] = [type(e).__name__, str(e)]
out["keep1_listing"] = sorted(os.listdir(os.path.join(root, "keep1")))
restored, progress = ckpt_lib.restore_latest(ckpt_lib.manager(os.path.join(root, "keep1"), 1),
                                             state, quarantine=True)
out["keep1_progress"] = progress
out["keep1_same"] = bool(restored is not None and
                         np.array_equal(restored["params"]["w"], state["params"]["w"]))
print("REPORT " + json.dumps(out))
"""


class CheckpointSaveFailsTest(absltest.TestCase):
  """One child process: an uninterrupted run of 9 steps; the same run whose checkpoint save
  at step 8 fails for lack of space, then rerun once space is back; a step saved again
  whose new save fails."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.report = run_child(_TRAIN, cls.root)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def test_the_run_stops_naming_the_checkpoint_the_os_error_and_where_it_resumes(self):
    kind, message, code = self.report["error"]
    self.assertEqual(kind, "CheckpointSaveError")
    self.assertEqual(code, errno.EFBIG)
    self.assertRegex(message, r"^/\S+/full/checkpoints/8: could not be written: File too "
                     r"large; .*the checkpoints there \(4\) are as they were: a rerun "
                     r"resumes from step 4 \(the file would exceed the largest file size")

  def test_older_checkpoints_are_kept_and_the_unfinished_one_removed(self):
    self.assertEqual(self.report["checkpoints_after_failure"], ["4"])
    self.assertNotIn(ckpt_lib.REPLACED_DIR, self.report["workdir_after_failure"])

  def test_the_rerun_resumes_to_the_uninterrupted_runs_parameters(self):
    self.assertEqual(self.report["rerun_step"], 9)
    self.assertEqual(self.report["steps"], [9, 9])
    self.assertTrue(self.report["identical"])
    whole, resumed = self.report["log_steps"]
    self.assertEqual(resumed, whole)               # each step logged once
    self.assertTrue(self.report["last_records_equal"])

  def test_a_step_saved_again_keeps_its_checkpoint_when_the_new_save_fails(self):
    kind, message = self.report["resave_error"]
    self.assertEqual(kind, "CheckpointSaveError")
    self.assertRegex(message, r"keep1/checkpoints/3: could not be written: File too large; "
                     r"the save of checkpoint 3 failed, the checkpoints there \(3\) are as "
                     r"they were")
    self.assertEqual(self.report["keep1_listing"], ["checkpoints"])
    self.assertEqual(self.report["keep1_progress"], {"step": 3, "stage": 1})
    self.assertTrue(self.report["keep1_same"])


class CheckpointKilledWhileReplacedTest(absltest.TestCase):

  def test_a_checkpoint_kept_aside_is_put_back_by_the_next_trainer(self):
    """A run killed while it saved a step again: the old checkpoint of that step, kept
    aside, is put back (and orbax's unfinished folder removed) when training resumes."""
    workdir = self.create_tempdir().full_path
    state = {"params": {"w": np.arange(12, dtype=np.float32).reshape(3, 4)},
             "added": np.zeros(2, np.int32)}
    mgr = ckpt_lib.manager(workdir, 1)
    ckpt_lib.save(mgr, 5, state, {"step": 5})
    aside = ckpt_lib._set_aside(mgr, 5)          # what save() does before it deletes...
    mgr.delete(5)                                # ...and the kill comes before the new one
    unfinished = os.path.join(workdir, "checkpoints", "5.orbax-checkpoint-tmp")
    os.makedirs(os.path.join(unfinished, "state"))
    self.assertEqual(ckpt_lib.manager(workdir, 1).all_steps(), [])
    with self.assertLogs(level="WARNING") as logs:
      restored, progress = ckpt_lib.restore_latest(ckpt_lib.manager(workdir, 1), state,
                                                   quarantine=True)
    self.assertIn("the one it was to replace is put back", "\n".join(logs.output))
    self.assertEqual(progress, {"step": 5})
    np.testing.assert_array_equal(restored["params"]["w"], state["params"]["w"])
    self.assertFalse(os.path.exists(aside))
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, "checkpoints"))), ["5"])
    # --force_new deletes it with the run: it must never come back into another run.
    self.assertIn(os.path.basename(os.path.dirname(aside)), workdir_lib.RUN_FILES)


# --- files, and the teacher export --------------------------------------------------------

_WRITES = """
import hashlib, json, os, sys
import numpy as np
from line_jax.cache import store as embeddings
from line_jax.cache import export as exporter
from line_jax.util import files
from line_jax.config import teacher_config
from line_jax.data.dataset import load_dataset

root = sys.argv[1]
out = {}
def error(fn):
  try:
    fn()
  except Exception as e:
    return [type(e).__name__, str(e), getattr(e, "errno", None)]

path = os.path.join(root, "value.json")
files.write_json(path, {"old": 1})
with file_size_limit(4096):
  out["json"] = error(lambda: files.write_json(path, {"new": "x" * 10000}))
out["json_kept"] = json.load(open(path))
log = os.path.join(root, "log.jsonl")
files.append_text(log, '{"step": 1}\\n')
with file_size_limit(4096):
  out["append"] = error(lambda: files.append_text(log, json.dumps({"x": "y" * 10000}) + "\\n"))
out["log_kept"] = open(log).read()
with file_size_limit(4096):
  out["npy"] = error(lambda: files.save_npy(os.path.join(root, "a.npy"), np.zeros(4096)))
  out["memmap"] = error(lambda: embeddings.new_memmap(os.path.join(root, "m.npy"),
                                                     np.dtype(np.float32), (1024, 8)))
out["listing"] = sorted(os.listdir(root))


class HashEncoder:
  # A teacher that embeds a string as a vector drawn from its hash.
  dim, model_dir = 8, ""
  def encode(self, texts, batch_size=None, progress=None):
    if progress:
      progress(len(texts))
    return np.stack([np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8],
                                                16)).standard_normal(8) for t in texts])

dataset = load_dataset(sys.argv[2])
workdir = os.path.join(root, "run")
def export(kind):
  cfg = (teacher_config(name="hf_t", model="hash", dtype="float32") if kind == "hf" else
         teacher_config(kind="synthetic", name="syn_t", dim=32, seed=1, dtype="float32"))
  return exporter.ensure_teacher_embeddings(cfg, dataset, workdir, encoder=HashEncoder(),
                                            shard_rows=16, progress_bar=False)
for kind in ("hf", "synthetic"):
  # concepts.npy (2000 rows) outgrows the limit; text.npy (40 rows) does not
  with file_size_limit(40000):
    out[kind] = error(lambda: export(kind))
  folders = sorted(os.listdir(os.path.join(workdir, "embeddings")))
  folder = [f for f in folders if f.startswith(kind[:3])][0]
  out[kind + "_folder"] = os.path.join(workdir, "embeddings", folder)
  out[kind + "_files"] = sorted(os.listdir(out[kind + "_folder"]))
  path = export(kind)                                  # space is back: the rerun
  loaded = embeddings.load_teacher_embeddings(path, dataset)
  out[kind + "_rerun"] = [path == out[kind + "_folder"], bool(loaded.meta["complete"]),
                          loaded.concepts.shape[0]]
  if kind == "hf":
    out["hf_rows_right"] = bool(np.allclose(loaded.concepts[[0, 1999]],
                                            HashEncoder().encode([dataset.names[0],
                                                                  dataset.names[1999]])))
print("REPORT " + json.dumps(out))
"""


def write_many_concepts_dataset(root: str, num_concepts: int = 2000, num_pairs: int = 40,
                                long_list: int = 0, relations=None) -> str:
  """A dataset of `num_concepts` concepts (a chain of edges, unless `relations` is given)
  and `num_pairs` short pairs (the first one lists `long_list` concepts when given)."""
  ids = [f"C{i:05d}" for i in range(num_concepts)]
  lists = [[ids[i], ids[i + 1]] for i in range(num_pairs)]
  if long_list:
    lists[0] = ids[:long_list]
  write_dataset(
      root,
      concepts={"concept_id": ids, "name": [f"concept {i}" for i in range(num_concepts)]},
      relations=relations or {"head_id": ids[:-1], "tail_id": ids[1:],
                              "relation": ["rel"] * (num_concepts - 1)},
      pairs={"pair_id": [f"P{i}" for i in range(num_pairs)],
             "text": [f"text {i}" for i in range(num_pairs)], "concept_ids": lists,
             "negated": [[False] * len(x) for x in lists], "rho": [1.0] * num_pairs,
             "split": ["train"] * num_pairs})
  return root


class WriteFailsTest(absltest.TestCase):
  """One child process: JSON, log, array and memory-mapped writes, and both teacher export
  paths (kind hf, resumable in shards; kind synthetic), past a file-size limit."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    data = write_many_concepts_dataset(os.path.join(cls.root, "data"))
    os.makedirs(os.path.join(cls.root, "out"))
    cls.out = os.path.join(cls.root, "out")
    cls.report = run_child(_WRITES, cls.out, data)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def assert_names(self, result, path):
    kind, message, code = result
    self.assertEqual(kind, "WriteError")
    self.assertEqual(code, errno.EFBIG)
    self.assertTrue(message.startswith(f"{path}: could not be written: File too large"),
                    message)

  def test_json_named_and_the_old_file_kept(self):
    self.assert_names(self.report["json"], os.path.join(self.out, "value.json"))
    self.assertEqual(self.report["json_kept"], {"old": 1})

  def test_log_record_named_and_cut_off_again(self):
    self.assert_names(self.report["append"], os.path.join(self.out, "log.jsonl"))
    self.assertEqual(self.report["log_kept"], '{"step": 1}\n')

  def test_arrays_named_and_nothing_left(self):
    self.assert_names(self.report["npy"], os.path.join(self.out, "a.npy"))
    self.assert_names(self.report["memmap"], os.path.join(self.out, "m.npy"))
    self.assertEqual(self.report["listing"], ["log.jsonl", "value.json"])   # no temporaries

  def test_export_names_its_folder_is_not_taken_as_complete_and_the_rerun_completes(self):
    for kind in ("hf", "synthetic"):
      folder = self.report[f"{kind}_folder"]
      result = self.report[kind]
      self.assert_names(result, os.path.join(folder, "concepts.npy"))
      self.assertIn(f"into {folder} stopped there: the folder has no meta.json", result[1])
      self.assertNotIn("meta.json", self.report[f"{kind}_files"])
      self.assertEqual(self.report[f"{kind}_rerun"], [True, True, 2000])
    self.assertEqual(self.report["hf_files"], [".lock", "progress.json", "text.npy"])
    self.assertTrue(self.report["hf_rows_right"])


class ReservedSpaceTest(absltest.TestCase):
  """A memory-mapped output on a full disk: its pages written through the mapping would kill
  the process with SIGBUS, so the space is reserved when the file is made."""

  def test_new_memmap_has_its_blocks(self):
    path = os.path.join(self.create_tempdir().full_path, "text.npy")
    arr = embeddings.new_memmap(path, np.dtype(np.float32), (4096, 64))
    self.assertEqual(arr.shape, (4096, 64))
    st = os.stat(path)
    self.assertGreaterEqual(st.st_blocks * 512, st.st_size)    # not a sparse file

  def test_no_space_to_reserve_is_an_error_naming_the_file(self):
    path = os.path.join(self.create_tempdir().full_path, "text.npy")
    with mock.patch.object(os, "posix_fallocate",
                           side_effect=OSError(errno.ENOSPC, "No space left on device")):
      with self.assertRaisesRegex(files.WriteError, f"^{path}: could not be written: No "
                                  "space left on device \\(the disk is full: free space"):
        embeddings.new_memmap(path, np.dtype(np.float32), (16, 4))
    self.assertFalse(os.path.exists(path))

  def test_a_file_system_without_reservation_is_not_an_error(self):
    path = os.path.join(self.create_tempdir().full_path, "text.npy")
    with mock.patch.object(os, "posix_fallocate",
                           side_effect=OSError(errno.EOPNOTSUPP, "Operation not supported")):
      self.assertEqual(embeddings.new_memmap(path, np.dtype(np.float32), (16, 4)).shape,
                       (16, 4))


# --- evaluation -----------------------------------------------------------------------------

class EvaluationWriteFailsTest(absltest.TestCase):

  def test_a_failed_evaluation_is_not_kept_by_the_next_one(self):
    """The disk fills while a new evaluation writes its plots: the previous report and
    metrics stay whole, and a rerun with eval.reuse evaluates again rather than keep the
    old report as the new evaluation's."""
    workdir = self.create_tempdir().full_path
    model = test_evaluate.make_model(test_evaluate.make_config(classifier_max_epochs=20,
                                                               cv_folds=2))
    model.config.eval.transfer.enabled = False
    model.params = {"f": model._f, "g": model._g}
    first = runner.run_evaluation(model, workdir)
    report = open(os.path.join(workdir, "report.md")).read()
    model.config.eval.num_negatives = 7                    # another evaluation
    key = reuse.evaluation_key(model, workdir)
    self.assertNotEqual(key, first[reuse.KEY_FIELD])
    with mock.patch.object(plots, "roc_curves",
                           side_effect=OSError(errno.ENOSPC, "No space left on device")):
      with self.assertRaises(OSError):
        runner.run_evaluation(model, workdir)
    self.assertFalse(reuse.previous_result(workdir, key) is not None,
                     "the failed evaluation is taken for a finished one")
    with open(os.path.join(workdir, "metrics.json")) as f:
      self.assertEqual(json.load(f), first)
    self.assertEqual(open(os.path.join(workdir, "report.md")).read(), report)
    self.assertEqual([n for n in os.listdir(workdir) if ".tmp" in n], [])


# --- very large inputs ------------------------------------------------------------------------

class LargeInputsTest(parameterized.TestCase):

  def test_a_very_long_list_is_cut_with_counts(self):
    dataset = load_dataset(write_many_concepts_dataset(self.create_tempdir().full_path,
                                                       num_concepts=5001, long_list=5000))
    with self.assertLogs(level="WARNING") as logs:
      lists = pipeline.PairLists(dataset, 32)
    self.assertIn("1 pairs have more than 32 concepts (the longest 5000); their lists are "
                  "truncated to 32, leaving out 4968 concept mentions", "\n".join(logs.output))
    self.assertEqual(lists.lengths[0], 32)
    self.assertEqual(len(lists.concepts(0)[0]), 32)

  @parameterized.parameters(0, -3, True)
  def test_max_concepts_per_pair_checked_before_any_work(self, value):
    config = test_config.get_config()
    config.data.dir = os.path.join(self.create_tempdir().full_path, "data")
    config.data.max_concepts_per_pair = value
    message = f"data.max_concepts_per_pair={value!r} must be an integer >= 1"
    with self.assertRaisesWithLiteralMatch(ValueError, message + " (longer concept lists "
                                           "are cut to it)"):
      prepare_dataset(config)
    self.assertFalse(os.path.exists(config.data.dir))     # nothing built
    dataset = load_dataset(write_many_concepts_dataset(self.create_tempdir().full_path, 10, 4))
    with self.assertRaisesRegex(ValueError, message):
      pipeline.PairLists(dataset, value)

  def test_repeated_edges_and_self_loops_are_counted(self):
    rng = np.random.default_rng(0)
    ids = np.asarray([f"C{i:05d}" for i in range(30)])
    head, tail = rng.integers(0, 30, 9000), rng.integers(0, 30, 9000)   # 10 x 30^2 rows
    root = write_many_concepts_dataset(
        self.create_tempdir().full_path, 30, 4,
        relations={"head_id": ids[head].tolist(), "tail_id": ids[tail].tolist(),
                   "relation": ["rel"] * 9000})
    distinct = len({(h, t) for h, t in zip(head.tolist(), tail.tolist()) if h != t})
    loops = int((head == tail).sum())
    with self.assertLogs(level="WARNING") as logs:
      dataset = load_dataset(root)
    self.assertIn(f"relations.parquet: {9000 - loops - distinct} of 9000 rows repeat an "
                  f"earlier row (same head_id, tail_id and relation) and {loops} are self "
                  "loops", "\n".join(logs.output))
    self.assertEqual(len(dataset.edge_head), 9000)       # the dataset keeps the file's rows


if __name__ == "__main__":
  absltest.main()
