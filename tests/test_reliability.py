"""Nothing lost, nothing silently wrong: NaN guards, atomic builds, the work-dir lock and
fingerprint, checkpoint checksums and fallback, and the input checks that went with them.
Each test reproduces one failure of a hostile probe of the trainer (kills as subprocesses)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pytest
import pyarrow.parquet as pq

from configs import test as test_config
from line_jax.api import line_model as api
from line_jax.training import checkpoint as ckpt_lib
from line_jax.cache import store as embeddings
from line_jax.training import guards
from line_jax.training import loop as loop_lib
from line_jax.training import trainer as trainer_lib
from line_jax.training import workdir as workdir_lib
from line_jax.cache import synthetic as synthetic_teacher
from line_jax.data import atomic, hpo, prepare_dataset
from line_jax.eval import runner
from line_jax.eval import spaces
from line_jax.model.kernels import library_cache
from line_jax.data.dataset import DataError, load_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_config(root, **train_overrides):
  c = test_config.get_config()
  c.data.dir = os.path.join(root, "data")
  c.train.update(train_overrides)
  return c


def run_python(script, timeout=300, env=None):
  return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout,
                        env={**os.environ, "PYTHONPATH": REPO, **(env or {})})


def log_steps(workdir):
  with open(os.path.join(workdir, "train_log.jsonl")) as f:
    return [json.loads(line)["step"] for line in f]


class TrainedRunTest(parameterized.TestCase):
  """One short run (9 steps, checkpoints at 4, 8, 9), copied where a test changes it."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.config = make_config(cls.root, stop_after_steps=9)
    cls.workdir = os.path.join(cls.root, "run")
    loop_lib.train(cls.config, cls.workdir)
    with open(os.path.join(cls.workdir, "config.json")) as f:
      cls.config_json = f.read()

  def copy_run(self):
    dest = os.path.join(self.create_tempdir().full_path, "run")
    shutil.copytree(self.workdir, dest)
    return dest

  # --- case 4: the fingerprint -------------------------------------------------------------
  @parameterized.named_parameters(
      ("dim", "model", "dim", 16, "config model.dim: 0 -> 16"),
      ("epochs", "train", "stage1_epochs", 8, "config train.stage1_epochs: 4 -> 8"),
      ("lr", "train", "learning_rate", 0.5, "config train.learning_rate: 0.01 -> 0.5"))
  def test_mismatching_rerun_refused_before_touching_anything(self, group, field, value,
                                                               named):
    config = make_config(self.root, stop_after_steps=12)
    config[group][field] = value
    before = {n: os.path.getmtime(os.path.join(self.workdir, n))
              for n in os.listdir(self.workdir)}
    with self.assertRaisesRegex(workdir_lib.WorkdirMismatch, named):
      loop_lib.train(config, self.workdir)
    with open(os.path.join(self.workdir, "config.json")) as f:
      self.assertEqual(f.read(), self.config_json)
    after = {n: os.path.getmtime(os.path.join(self.workdir, n))
             for n in os.listdir(self.workdir) if n != "lock"}
    self.assertEqual({k: v for k, v in before.items() if k != "lock"}, after)

  def test_runtime_fields_may_change_on_resume(self):
    fp = workdir_lib.fingerprint(self.config, self.config.data.dir)
    changed = make_config(self.root, stop_after_steps=99, log_every=1, evaluate=True)
    changed.model.cpu_kernel = "off"
    self.assertEqual(workdir_lib.differences(
        fp, workdir_lib.fingerprint(changed, changed.data.dir)), [])

  def test_a_run_from_before_the_schedule_field_is_a_constant_rate_run(self):
    # Its checkpoints hold a constant-rate optimiser state: resuming it with a schedule would
    # fail to restore, so the check names the field instead.
    old = workdir_lib.fingerprint(self.config, self.config.data.dir)
    del old["config"]["train.lr_schedule"]
    same = workdir_lib.fingerprint(self.config, self.config.data.dir)
    self.assertEqual(self.config.train.lr_schedule, "constant")
    self.assertEqual(workdir_lib.differences(old, same), [])
    cosine = make_config(self.root)
    cosine.train.lr_schedule = "cosine"
    self.assertEqual(workdir_lib.differences(
        old, workdir_lib.fingerprint(cosine, cosine.data.dir)),
        ["config train.lr_schedule: 'constant' -> 'cosine'"])

  def test_changed_dataset_refused(self):
    workdir = self.copy_run()
    data = os.path.join(self.create_tempdir().full_path, "data")
    shutil.copytree(self.config.data.dir, data)
    table = pq.read_table(os.path.join(data, "pairs.parquet"))
    pq.write_table(table.take(np.arange(table.num_rows)[::-1].copy()),
                   os.path.join(data, "pairs.parquet"))    # reordered pairs
    config = make_config(self.root, stop_after_steps=12)
    config.data.dir = data
    with self.assertRaisesRegex(workdir_lib.WorkdirMismatch,
                                "dataset file pairs.parquet changed"):
      loop_lib.train(config, workdir)
    with self.assertRaisesRegex(workdir_lib.WorkdirMismatch, "trained on other data"):
      api.LineModel.load(workdir, config)

  def test_force_new_starts_over(self):
    workdir = self.copy_run()
    config = make_config(self.root, stop_after_steps=2)
    config.model.dim = 16
    summary = loop_lib.train(config, workdir, force_new=True)
    self.assertEqual(summary["step"], 2)
    self.assertEqual(ckpt_lib.manager(workdir, 3).all_steps(), [2])
    self.assertEqual(json.load(open(os.path.join(workdir, "config.json")))["model"]["dim"],
                     16)
    self.assertFalse(os.path.exists(os.path.join(workdir, "train_log.jsonl")))  # old log gone

  def test_damaged_config_json_named(self):
    workdir = self.copy_run()
    path = os.path.join(workdir, "config.json")
    with open(path, "r+") as f:
      f.truncate(40)
    with self.assertRaisesRegex(ValueError, f"{path}: the run's config is damaged"):
      api.load_config(workdir)

  # --- case 5: damaged checkpoints -------------------------------------------------------
  def _array_files(self, step_dir):
    """The state's array data (orbax OCDBT data files), not its JSON metadata."""
    files = [os.path.join(d, n) for d, _, names in os.walk(step_dir) for n in names
             if d.endswith(os.path.join("ocdbt.process_0", "d"))
             and os.path.getsize(os.path.join(d, n)) > 1000]
    self.assertNotEmpty(files)
    return files

  def test_truncated_checkpoint_falls_back_and_resumes(self):
    """Resume skips the damaged newest checkpoint (warning naming it, moved aside), trains
    on from the older one, and logs each step once (records after it are dropped)."""
    workdir = self.copy_run()
    damaged = os.path.join(workdir, "checkpoints", "9")
    for path in self._array_files(damaged):
      with open(path, "r+b") as f:
        f.truncate(4)
    with self.assertLogs(level="WARNING") as logs:
      summary = loop_lib.train(make_config(self.root, stop_after_steps=10), workdir)
    self.assertIn(damaged, "\n".join(logs.output))
    self.assertEqual(summary["step"], 10)
    self.assertTrue(os.path.isdir(os.path.join(workdir, ckpt_lib.DAMAGED_DIR, "9")))
    self.assertEqual(log_steps(workdir), [5, 9, 10])

  def test_flipped_bytes_detected_not_loaded(self):
    workdir = self.copy_run()
    for path in self._array_files(os.path.join(workdir, "checkpoints", "9")):
      with open(path, "r+b") as f:
        data = bytearray(f.read())
        for i in range(len(data) // 2, len(data) // 2 + 64):
          data[i] ^= 0xFF
        f.seek(0)
        f.write(data)
    with self.assertLogs(level="WARNING") as logs:
      model = api.LineModel.load(workdir)
    self.assertIn("checkpoints/9", "\n".join(logs.output))
    self.assertEqual(model.progress["step"], 8)
    for leaf in jax.tree.leaves(model.params):
      self.assertTrue(np.isfinite(np.asarray(leaf)).all())

  def test_checksum_mismatch_detected(self):
    """Arrays that read fine but differ from the saved ones (as flipped bytes in an
    uncompressed chunk would give) fail the checksum."""
    workdir = self.copy_run()
    mgr = ckpt_lib.manager(workdir, 3)
    trainer = trainer_lib.Trainer(self.config, workdir)
    abstract = {**trainer.init_state(), "added": trainer.lists.added}
    state, progress = ckpt_lib.restore_latest(mgr, abstract)
    self.assertEqual(progress["step"], 9)
    self.assertNotIn(ckpt_lib.CHECKSUM_KEY, progress)
    path = os.path.join(workdir, "checkpoints", "9", "progress", "metadata")
    record = json.load(open(path))
    record[ckpt_lib.CHECKSUM_KEY] = "0" * 64
    json.dump(record, open(path, "w"))
    mgr.reload()
    with self.assertLogs(level="WARNING") as logs:
      _, progress = ckpt_lib.restore_latest(mgr, abstract)
    self.assertIn("checksum mismatch", "\n".join(logs.output))
    self.assertEqual(progress["step"], 8)

  def test_no_intact_checkpoint_is_an_error(self):
    workdir = self.copy_run()
    for step in (4, 8, 9):
      for path in self._array_files(os.path.join(workdir, "checkpoints", str(step))):
        with open(path, "r+b") as f:
          f.truncate(4)
    mgr = ckpt_lib.manager(workdir, 3)
    trainer = trainer_lib.Trainer(self.config, workdir)
    with self.assertRaisesRegex(ckpt_lib.CheckpointError, "no intact checkpoint"):
      ckpt_lib.restore_latest(mgr, {**trainer.init_state(), "added": trainer.lists.added})

  def test_unfinished_checkpoint_not_read(self):
    """An orbax temporary folder (a save in progress) is not a checkpoint to load."""
    workdir = self.copy_run()
    tmp = os.path.join(workdir, "checkpoints", "12.orbax-checkpoint-tmp-1234")
    shutil.copytree(os.path.join(workdir, "checkpoints", "9"), tmp)
    for path in self._array_files(tmp):
      with open(path, "r+b") as f:
        f.truncate(4)
    self.assertEqual(ckpt_lib.manager(workdir, 3).latest_step(), 9)

  # --- case 6: the lock --------------------------------------------------------------------
  def test_second_trainer_refused_naming_holder(self):
    workdir = self.copy_run()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from line_jax.training import workdir; "
         f"workdir.acquire({workdir!r}); print('locked', flush=True); time.sleep(120)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": REPO})
    try:
      self.assertEqual(holder.stdout.readline().strip(), "locked")
      with self.assertRaisesRegex(workdir_lib.WorkdirBusy, f"pid {holder.pid} "):
        loop_lib.train(make_config(self.root, stop_after_steps=10), workdir)
    finally:
      holder.kill()
      holder.wait()
    workdir_lib.acquire(workdir)        # the dead holder's lock is gone with it
    workdir_lib.release(workdir)


class NonFiniteTest(parameterized.TestCase):

  def test_diverged_run_stops_naming_step_and_term(self):
    root = self.create_tempdir().full_path
    workdir = os.path.join(root, "w")
    config = make_config(root, learning_rate=1e30, stop_after_steps=9)
    with self.assertRaisesRegex(guards.NonFiniteError,
                                r"step (\d+) \(stage 1\): the (align|relational|negation|"
                                r"loss|gradient) (loss|gradient) is not finite"):
      loop_lib.train(config, workdir)
    self.assertEqual(ckpt_lib.manager(workdir, 3).all_steps(), [])   # nothing damaged saved

  def test_skip_mode_in_the_real_step(self):
    """on_nonfinite="skip" through the jitted step: skips are counted, and past the limit
    the run stops naming the step."""
    root = self.create_tempdir().full_path
    config = make_config(root, learning_rate=1e30, stop_after_steps=9, on_nonfinite="skip",
                         max_nonfinite_skips=3)
    with self.assertLogs(level="WARNING") as logs:
      with self.assertRaisesRegex(guards.NonFiniteError, r"step \d+ .*4 batches skipped, "
                                  "more than train.max_nonfinite_skips=3"):
        loop_lib.train(config, os.path.join(root, "w"))
    self.assertLen([l for l in logs.output if "batch skipped" in l], 4)

  def test_skip_keeps_state_and_counts(self):
    state = {"params": {"w": jnp.ones(3)}, "opt_state": (jnp.zeros(3),),
             "step": jnp.asarray(4)}
    new = {"params": {"w": jnp.full(3, jnp.nan)}, "opt_state": (jnp.ones(3),),
           "step": jnp.asarray(5)}
    kept, ok = guards.guard_step(state, new, jnp.asarray(jnp.nan), {"w": jnp.ones(3)}, True)
    self.assertFalse(bool(ok))
    np.testing.assert_array_equal(kept["params"]["w"], np.ones(3))
    np.testing.assert_array_equal(kept["opt_state"][0], np.zeros(3))
    self.assertEqual(int(kept["step"]), 5)
    fine, ok = guards.guard_step(state, {**new, "params": {"w": jnp.full(3, 2.0)}},
                                 jnp.asarray(1.0), {"w": jnp.ones(3)}, True)
    self.assertTrue(bool(ok))
    np.testing.assert_array_equal(fine["params"]["w"], np.full(3, 2.0))
    _, ok = guards.guard_step(state, new, jnp.asarray(1.0), {"w": jnp.array([1, np.inf])},
                              False)
    self.assertFalse(bool(ok))

    guard = guards.NonFiniteGuard("skip", max_skips=1)
    finite = {"loss": 1.0, "align": 1.0, "relational": 0.0, "negation": 0.0, "finite": True}
    guard.observe(1, 1, finite)
    guard.observe(2, 1, {**finite, "relational": np.nan, "loss": np.nan, "finite": False})
    with self.assertLogs(level="WARNING") as logs:
      guard.flush()
    self.assertIn("step 2 (stage 1): the relational loss", logs.output[0])
    self.assertEqual(guard.skipped, [2])
    guard.observe(3, 2, {**finite, "finite": False})
    with self.assertRaisesRegex(guards.NonFiniteError, "step 3 .*gradient.*more than"):
      with self.assertLogs(level="WARNING"):
        guard.flush()

  def test_bad_mode(self):
    with self.assertRaisesRegex(ValueError, "train.on_nonfinite='maybe'"):
      loop_lib.train(make_config(self.create_tempdir().full_path, on_nonfinite="maybe"), "/x")

  def test_evaluation_refuses_nonfinite_model(self):
    class Model:
      workdir = "runs/diverged"
      params = {"text_proj": {"w": np.array([[1.0, np.inf]])}}

    out = self.create_tempdir().full_path
    with self.assertRaisesRegex(guards.NonFiniteError, r"runs/diverged: parameter "
                                r"\['text_proj'\]\['w'\] holds NaN or inf"):
      runner.run_evaluation(Model(), out)
    self.assertEqual(os.listdir(out), [])             # nothing written
    space = guards.finite_space(spaces.Space(
        "line", "LINE", embed_texts=lambda idx: np.ones((len(idx), 2)),
        embed_concepts=lambda idx, neg: np.where(np.asarray(idx)[:, None] == 1, np.nan, 1.0)))
    np.testing.assert_array_equal(space.embed_texts(np.arange(3)), np.ones((3, 2)))
    with self.assertRaisesRegex(guards.NonFiniteError, r"LINE: concept embeddings: 1 of 3 "
                                r"rows hold NaN or inf \(first: row 1\); refusing to rank"):
      space.embed_concepts(np.arange(3), np.zeros(3, bool))

  @parameterized.product(dtype=[np.float16, np.float32], bad=[np.nan, np.inf, -np.inf])
  def test_nonfinite_rows_on_bits(self, dtype, bad):
    x = np.random.default_rng(0).standard_normal((6, 5)).astype(dtype)
    x[0, 0] = np.finfo(dtype).max                     # large but finite
    x[4, 2] = bad
    np.testing.assert_array_equal(embeddings._nonfinite_rows(x),
                                  ~np.isfinite(x).all(axis=1))
    self.assertEqual(np.flatnonzero(embeddings._nonfinite_rows(x)).tolist(), [4])

  def test_teacher_cache_checked_on_every_open(self):
    root = self.create_tempdir().full_path
    config = make_config(root)
    dataset = prepare_dataset(config)
    path = os.path.join(root, "cache")
    synthetic_teacher.write_synthetic_teacher(dataset, path, config.teacher2)
    embeddings.load_teacher_embeddings(path, dataset)       # clean
    concepts = np.load(os.path.join(path, "concepts.npy"), mmap_mode="r+")
    concepts[7, 3] = np.nan
    concepts.flush()
    del concepts
    with self.assertRaisesRegex(DataError, r"concepts.npy: row 7, field 'embedding'"):
      embeddings.load_teacher_embeddings(path, dataset)


class AtomicBuildTest(parameterized.TestCase):

  def test_users_files_not_overwritten(self):
    root = self.create_tempdir().full_path
    data = os.path.join(root, "mine")
    os.makedirs(data)
    for name in ("concepts.parquet", "relations.parquet"):
      pq.write_table(pa.table({"x": [1]}), os.path.join(data, name))
    before = {n: open(os.path.join(data, n), "rb").read() for n in os.listdir(data)}
    config = make_config(root)
    config.data.dir = data
    with self.assertRaisesRegex(DataError, "holds concepts.parquet, relations.parquet that "
                                "no builder made"):
      prepare_dataset(config)
    with self.assertRaisesRegex(DataError, "the hpo builder does not write over them"):
      hpo.build_hpo_dataset(data)
    self.assertEqual({n: open(os.path.join(data, n), "rb").read() for n in os.listdir(data)},
                     before)

  def test_builds_into_empty_or_own_folder(self):
    root = self.create_tempdir().full_path
    config = make_config(root)
    os.makedirs(config.data.dir)                 # an empty folder is fine
    ds = prepare_dataset(config)
    self.assertTrue(os.path.exists(os.path.join(config.data.dir, atomic.MARKER)))
    self.assertGreater(len(ds.heldout_head), 0)
    os.remove(os.path.join(config.data.dir, "pairs.parquet"))   # an older build, cut short
    self.assertEqual(prepare_dataset(config).num_pairs, ds.num_pairs)
    self.assertEqual(sorted(n for n in os.listdir(root) if n != "data"), [])  # no leftovers

  def test_failed_build_leaves_nothing(self):
    root = self.create_tempdir().full_path
    with self.assertRaises(RuntimeError):
      with atomic.build_into(os.path.join(root, "d"), "test") as out:
        pq.write_table(pa.table({"x": [1]}), os.path.join(out, "concepts.parquet"))
        raise RuntimeError("interrupted")
    self.assertEqual(os.listdir(root), [])

  @parameterized.named_parameters(("while_writing_pairs", "pairs.parquet", True),
                                  ("before_heldout", "heldout_relations.parquet", False))
  def test_killed_build_leaves_no_dataset_and_rebuilds(self, target, partial):
    """A kill (os._exit) while a file is written, or between two files, leaves no dataset
    (not a 4-byte pairs.parquet, not one without held-out edges); the rerun builds it."""
    root = self.create_tempdir().full_path
    proc = run_python(f"""
      import os
      import pyarrow.parquet as pq
      from configs import test as tc
      from line_jax.data import prepare_dataset
      real = pq.write_table
      def write_table(table, where, **kw):
        if os.path.basename(where) == {target!r}:
          if {partial!r}:
            open(where, "wb").write(b"PAR1")
          os._exit(9)
        real(table, where, **kw)
      pq.write_table = write_table
      c = tc.get_config()
      c.data.dir = {os.path.join(root, "data")!r}
      prepare_dataset(c)
    """)
    self.assertEqual(proc.returncode, 9, proc.stderr[-2000:])
    self.assertFalse(os.path.exists(os.path.join(root, "data")))
    config = make_config(root)
    ds = prepare_dataset(config)
    self.assertGreater(len(ds.heldout_head), 0)
    self.assertEqual(os.listdir(root), ["data"])       # the dead build's folder is gone


class InputChecksTest(parameterized.TestCase):
  """Point 7: wrongly typed columns, an empty graph, the embed output, the kernel cache,
  the notebook's torch.load."""

  def _dataset(self):
    root = self.create_tempdir().full_path
    config = make_config(root)
    prepare_dataset(config)
    return config.data.dir

  @parameterized.named_parameters(
      ("negated_yes_no", "negated", lambda t: pa.array(
          [["yes" if v else "no" for v in row] for row in t.column("negated").to_pylist()]),
       r"row 0, field 'negated': expected a list of booleans, got list<\w+: string>"),
      ("concept_ids_plain_string", "concept_ids", lambda t: pa.array(
          [",".join(row) for row in t.column("concept_ids").to_pylist()]),
       r"row 0, field 'concept_ids': expected a list of strings, got string"),
      ("rho_string", "rho", lambda t: pa.array([str(v) for v in t.column("rho").to_pylist()]),
       r"row 0, field 'rho': expected numbers, got string"))
  def test_wrong_column_type_named(self, field, convert, message):
    data = self._dataset()
    path = os.path.join(data, "pairs.parquet")
    table = pq.read_table(path)
    table = table.set_column(table.column_names.index(field), field, convert(table))
    pq.write_table(table, path)
    with self.assertRaisesRegex(DataError, f"{path}: {message}"):
      load_dataset(data)

  def test_empty_graph_refused_at_load(self):
    data = self._dataset()
    path = os.path.join(data, "relations.parquet")
    pq.write_table(pq.read_table(path).slice(0, 0), path)
    with self.assertRaisesRegex(DataError, f"{path}: field 'head_id': no edges"):
      load_dataset(data)

  def test_embed_refuses_foreign_output(self):
    from line_jax.api import embed_file
    root = self.create_tempdir().full_path
    cache = os.path.join(root, "teacher-abc")
    os.makedirs(cache)
    for part in ("text", "concepts", "negated"):
      np.save(os.path.join(cache, f"{part}.npy"), np.ones((2, 3), np.float32))
    json.dump({"model": "m", "data_hash": "x", "complete": True},
              open(os.path.join(cache, "meta.json"), "w"))
    with self.assertRaisesRegex(FileExistsError, "negated.npy.*teacher-embedding cache"):
      embed_file.check_output_dir(cache)
    os.remove(os.path.join(cache, "negated.npy"))
    with self.assertRaisesRegex(FileExistsError, "meta.json of another kind"):
      embed_file.check_output_dir(cache)
    embed_file.check_output_dir(os.path.join(root, "new"))          # fine: missing
    own = os.path.join(root, "own")
    os.makedirs(own)
    json.dump({"plan": {}}, open(os.path.join(own, "meta.json"), "w"))
    embed_file.check_output_dir(own)                                 # fine: an earlier output

  def test_kernel_cache_trust(self):
    folder = os.path.join(self.create_tempdir().full_path, "kernels")
    os.makedirs(folder, mode=0o700)
    lib = os.path.join(folder, "k.so")
    with open(lib, "wb") as f:
      f.write(b"\x7fELF" + bytes(range(256)) * 40)
    self.assertRegex(library_cache.problem(lib), "no recorded checksum")   # put there
    library_cache.record(lib)
    self.assertIsNone(library_cache.problem(lib))
    with open(lib, "r+b") as f:
      f.truncate(100)
    self.assertRegex(library_cache.problem(lib), "does not match its recorded checksum")
    library_cache.record(lib)
    os.chmod(lib, 0o777)
    self.assertRegex(library_cache.problem(lib), "writable by other users")

  @pytest.mark.slow   # compiles the kernel (tens of seconds)
  def test_truncated_kernel_rebuilt(self):
    if not shutil.which("g++") and not shutil.which("c++"):
      self.skipTest("no C++ compiler")
    cache = self.create_tempdir().full_path
    proc = run_python("""
      from line_jax.model import kernels
      path = kernels._library_path()
      import os
      os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
      open(path, "wb").write(b"\\x7fELF\\x02\\x01")        # a truncated library
      print(kernels.available(), kernels.unavailable_reason())
    """, timeout=900, env={"LINE_JAX_CACHE": cache})
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertEqual(proc.stdout.split()[0], "True", proc.stdout + proc.stderr[-2000:])

  def test_trim_train_log(self):
    workdir = self.create_tempdir().full_path
    with open(os.path.join(workdir, "train_log.jsonl"), "w") as f:
      for step in (5, 10, 15):
        f.write(json.dumps({"step": step}) + "\n")
      f.write('{"step": 2')                           # cut short by a kill
    self.assertEqual(workdir_lib.trim_train_log(workdir, 10), 2)
    self.assertEqual(log_steps(workdir), [5, 10])

  def test_notebook_torch_load_weights_only(self):
    import nbformat
    notebook = nbformat.read(os.path.join(REPO, "launch", "colab_line_jax.ipynb"), 4)
    calls = [line for cell in notebook.cells for line in cell.source.splitlines()
             if "torch.load(" in line]
    self.assertNotEmpty(calls)
    for line in calls:
      self.assertIn("weights_only=True", line)


if __name__ == "__main__":
  absltest.main()
