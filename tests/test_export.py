"""Tests of line_jax.export: the teacher-embedding cache, resumption, keys, imports, CLI."""

import json
import os
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from line_jax.cache import export
from line_jax.cache import segments as segments_cache
from line_jax.cache import synthetic as synthetic_teacher
from line_jax.config import teacher_config
from line_jax.data.dataset import DataError, load_dataset, write_dataset
from line_jax.cache.store import cache_key, load_teacher_embeddings, teacher_dir
from line_jax.teachers import load_encoder
from line_jax.teachers.testing import write_tiny_bert
from line_jax.util import segments as segments_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["fever", "cough", "chest pain", "seizure", "ataxia", "short stature"]
TEXTS = ["the patient has fever and cough", "no chest pain", "mild seizure with ataxia",
         "short stature", "severe chronic cough, no fever"]
CONCEPT_LISTS = [["C0", "C1"], ["C2"], ["C3", "C4"], ["C5"], ["C1", "C0"]]
NEGATED = [[False, False], [True], [False, False], [False], [False, True]]


def write_tiny_dataset(root: str, texts=TEXTS, splits=None) -> str:
  write_dataset(
      root,
      concepts={"concept_id": [f"C{i}" for i in range(len(NAMES))], "name": NAMES},
      relations={"head_id": ["C0", "C3"], "tail_id": ["C1", "C4"],
                 "relation": ["related", "related"]},
      pairs={"pair_id": [f"P{i}" for i in range(len(texts))], "text": list(texts),
             "concept_ids": CONCEPT_LISTS, "negated": NEGATED,
             "rho": [0.5] * len(texts), "split": list(splits or ["train"] * len(texts))})
  return root


class CountingEncoder:
  """Wraps an Encoder; counts encode calls and rows, and can fail like a killed process."""

  def __init__(self, encoder, fail_after_calls=None):
    self.inner, self.fail_after_calls = encoder, fail_after_calls
    self.calls, self.rows = 0, 0
    self.dim, self.model_dir = encoder.dim, encoder.model_dir

  def encode(self, texts, batch_size=None, progress=None):
    if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
      raise KeyboardInterrupt("simulated kill")
    self.calls += 1
    self.rows += len(texts)
    return self.inner.encode(texts, batch_size, progress)


class ExportTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    cls.model_dir = write_tiny_bert(os.path.join(cls.tmp.name, "tiny"))
    cls.dataset = load_dataset(write_tiny_dataset(os.path.join(cls.tmp.name, "data")))
    cls.cfg = teacher_config(name="tiny", model=cls.model_dir, pooling="mean", max_length=16,
                             batch_size=4)
    cls.encoder = load_encoder(cls.cfg, buckets=(16,))   # shared: one compilation

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def workdir(self) -> str:
    return self.create_tempdir().full_path

  def ensure(self, workdir, cfg=None, dataset=None, **kw):
    encoder = kw.pop("encoder", CountingEncoder(self.encoder))
    path = export.ensure_teacher_embeddings(cfg or self.cfg, dataset or self.dataset, workdir,
                                            encoder=encoder, progress_bar=False, **kw)
    return path, encoder

  def test_export_writes_a_cache_that_load_teacher_embeddings_accepts(self):
    workdir = self.workdir()
    path = export.ensure_teacher_embeddings(self.cfg, self.dataset, workdir,
                                            progress_bar=False)   # loads the model itself
    key = cache_key(self.model_dir, "mean", 16, True, self.dataset.data_hash())
    self.assertEqual(path, teacher_dir(workdir, "tiny", key))
    loaded = load_teacher_embeddings(path, self.dataset, expected_dim=32)
    self.assertEqual(loaded.text.dtype, np.float16)
    np.testing.assert_allclose(loaded.text, self.encoder.encode(TEXTS), atol=2e-3)
    np.testing.assert_allclose(loaded.concepts, self.encoder.encode(NAMES), atol=2e-3)
    # "fever" and "cough" are one token each: they differ by their word alone.
    self.assertGreater(np.abs(np.asarray(loaded.concepts[0], np.float32)
                              - np.asarray(loaded.concepts[1], np.float32)).max(), 1e-2)
    used = [0, 2]   # C0 (pair 4) and C2 (pair 1) occur negated
    negated_names = [f"{NAMES[i]} unobserved" for i in used]
    np.testing.assert_allclose(loaded.negated[used], self.encoder.encode(negated_names),
                               atol=2e-3)
    unused = [1, 3, 4, 5]
    self.assertTrue((np.asarray(loaded.negated[unused]) == 0).all())
    meta = loaded.meta
    self.assertTrue(meta["complete"])
    self.assertEqual((meta["model"], meta["pooling"], meta["max_length"], meta["normalize"],
                      meta["dim"], meta["dtype"], meta["negated_rows"],
                      meta["negated_embedded"]),
                     (self.model_dir, "mean", 16, True, 32, "float16", "used", 2))
    self.assertEqual(meta["rows"], {"text": 5, "concepts": 6, "negated": 6})
    self.assertFalse(os.path.exists(os.path.join(path, "progress.json")))

  def test_unchanged_input_is_reused_and_a_changed_one_is_reembedded(self):
    workdir = self.workdir()
    first, encoder = self.ensure(workdir)
    self.assertGreater(encoder.calls, 0)
    again, encoder = self.ensure(workdir)
    self.assertEqual((again, encoder.calls), (first, 0))
    changed = list(TEXTS)
    changed[3] = "short stature and fever"
    dataset = load_dataset(write_tiny_dataset(os.path.join(workdir, "data2"), changed))
    other, encoder = self.ensure(workdir, dataset=dataset)
    self.assertNotEqual(other, first)
    self.assertEqual(encoder.rows, 5 + 6 + 2)
    longer, encoder = self.ensure(workdir, cfg=teacher_config(**dict(self.cfg, max_length=8)))
    self.assertNotEqual(longer, first)
    self.assertGreater(encoder.calls, 0)

  def test_killed_export_resumes_without_redoing_finished_shards(self):
    # shard_rows=2: text 5 rows -> 3 shards, concepts 6 -> 3, negated 2 used rows -> 1.
    workdir = self.workdir()
    killed = CountingEncoder(self.encoder, fail_after_calls=4)
    with self.assertRaises(KeyboardInterrupt):
      self.ensure(workdir, encoder=killed, shard_rows=2)
    path = teacher_dir(workdir, "tiny", cache_key(self.model_dir, "mean", 16, True,
                                                  self.dataset.data_hash()))
    with open(os.path.join(path, "progress.json")) as f:
      done = json.load(f)["done"]
    self.assertEqual(done, {"text": [0, 1, 2], "concepts": [0], "negated": []})
    with self.assertRaisesRegex(DataError, "meta.json: file not found"):
      load_teacher_embeddings(path, self.dataset)
    # A kill in the middle of writing shard 1 leaves garbage in rows it had not recorded.
    partial = np.load(os.path.join(path, "concepts.npy"), mmap_mode="r+")
    partial[2:4] = 7.0
    partial.flush()
    del partial

    resumed_path, resumed = self.ensure(workdir, shard_rows=2)
    self.assertEqual(resumed_path, path)
    self.assertEqual((resumed.calls, resumed.rows), (3, 4 + 2))
    fresh_path, _ = self.ensure(self.workdir(), shard_rows=2)
    resumed_arrays = load_teacher_embeddings(path, self.dataset)
    fresh_arrays = load_teacher_embeddings(fresh_path, self.dataset)
    for part in ("text", "concepts", "negated"):
      np.testing.assert_array_equal(getattr(resumed_arrays, part), getattr(fresh_arrays, part))

  def test_identical_teacher_under_another_name_is_linked_not_reembedded(self):
    workdir = self.workdir()
    first, _ = self.ensure(workdir)
    second, encoder = self.ensure(workdir, cfg=teacher_config(**dict(self.cfg, name="other")))
    self.assertNotEqual(first, second)
    self.assertEqual(encoder.calls, 0)
    with open(os.path.join(second, "meta.json")) as f:
      meta = json.load(f)
    self.assertEqual((meta["teacher"], meta["reused_from"]), ("other", first))
    a, b = (load_teacher_embeddings(p, self.dataset) for p in (first, second))
    np.testing.assert_array_equal(a.text, b.text)

  def test_negated_rows_all_and_float32_re_export_a_used_only_folder(self):
    workdir = self.workdir()
    used, _ = self.ensure(workdir)
    cfg = teacher_config(**dict(self.cfg, negated_rows="all", dtype="float32"))
    path, encoder = self.ensure(workdir, cfg=cfg)
    self.assertEqual(path, used)   # same key; the folder is brought up to the new request
    self.assertGreater(encoder.calls, 0)
    loaded = load_teacher_embeddings(path, self.dataset)
    self.assertEqual(loaded.negated.dtype, np.float32)
    self.assertEqual(loaded.meta["negated_rows"], "all")
    self.assertTrue((np.abs(np.asarray(loaded.negated)).sum(1) > 0).all())
    _, encoder = self.ensure(workdir, cfg=cfg)
    self.assertEqual(encoder.calls, 0)


  def test_text_rows_eval_embeds_only_evaluated_pairs_and_refuses_train_rows(self):
    splits = ["train", "valid", "test", "train", "valid"]
    dataset = load_dataset(write_tiny_dataset(os.path.join(self.create_tempdir().full_path,
                                                           "data"), splits=splits))
    workdir = self.workdir()
    cfg = teacher_config(**dict(self.cfg, text_rows="eval"))
    path, encoder = self.ensure(workdir, cfg=cfg, dataset=dataset)
    loaded = load_teacher_embeddings(path, dataset)
    self.assertEqual(loaded.meta["text_rows"], "eval")
    evaluated = np.array([1, 2, 4])
    np.testing.assert_allclose(loaded.text_rows(evaluated, np.float32),
                               self.encoder.encode([TEXTS[i] for i in evaluated]), atol=2e-3)
    self.assertEqual(np.abs(np.asarray(loaded.text[[0, 3]], np.float32)).sum(), 0.0)
    with self.assertRaisesRegex(ValueError, r"text_rows.*first: pair 3"):
      loaded.text_rows(np.array([1, 3]))
    # A teacher that needs every text re-exports the folder; one asking for the evaluated
    # texts alone reuses a folder that has all of them.
    path_all, encoder = self.ensure(workdir, cfg=self.cfg, dataset=dataset)
    self.assertEqual(path_all, path)
    self.assertGreater(encoder.rows, 0)
    full = load_teacher_embeddings(path_all, dataset)
    self.assertIsNone(full.text_embedded)
    np.testing.assert_allclose(full.text_rows(np.arange(5), np.float32),
                               self.encoder.encode(TEXTS), atol=2e-3)
    _, encoder = self.ensure(workdir, cfg=cfg, dataset=dataset)
    self.assertEqual(encoder.calls, 0)

  def test_clause_rows_are_embedded_once_per_distinct_clause_and_resume(self):
    splits = ["train", "valid", "test", "train", "valid"]
    texts = TEXTS[:4] + ["fever, cough; mild fever"]     # "cough" is pair 0's clause too
    dataset = load_dataset(write_tiny_dataset(os.path.join(self.create_tempdir().full_path,
                                                           "data"), texts, splits))
    workdir = self.workdir()
    teacher = load_teacher_embeddings(self.ensure(workdir, dataset=dataset)[0], dataset)
    pattern = segments_lib.DEFAULT_PATTERN
    ensure = lambda mode, encoder: segments_cache.ensure_segments(
        self.cfg, teacher, dataset, pattern, mode, encoder=encoder, progress_bar=False)
    with mock.patch.object(segments_cache, "SHARD_ROWS", 2):
      killed = CountingEncoder(self.encoder, fail_after_calls=1)
      with self.assertRaises(KeyboardInterrupt):
        ensure("eval", killed)
      path = segments_cache.segments_dir(teacher, pattern, dataset)
      self.assertFalse(os.path.exists(path))        # no folder that looks complete
      resumed = CountingEncoder(self.encoder)
      seg = ensure("eval", resumed)
    # Evaluated pairs only; the killed shard's rows not embedded again.
    clauses, owner = segments_lib.clause_table([t if s != "train" else "" for t, s in
                                                zip(texts, splits)], pattern)
    self.assertEqual(clauses, ["fever", "cough", "mild fever"])
    np.testing.assert_array_equal(seg.offsets, [0, 0, 0, 0, 0, 3])
    self.assertEqual((killed.rows, resumed.rows), (2, 1))
    np.testing.assert_allclose(seg.pair_rows([4], np.float32)[0],
                               self.encoder.encode(clauses), atol=2e-3)
    with self.assertRaisesRegex(ValueError, "first: pair 0"):
      seg.pair_rows([4, 0])
    # "all" re-exports every pair's clauses; an "eval" request then reuses that folder.
    every = CountingEncoder(self.encoder)
    seg_all = ensure("all", every)
    self.assertIsNone(seg_all.embedded)
    all_clauses, all_owner = segments_lib.clause_table(texts, pattern)
    self.assertEqual(every.rows, len(set(all_clauses)))     # "cough" embedded once
    self.assertLess(every.rows, len(all_clauses))
    rows, owner = seg_all.pair_rows([4, 0])
    np.testing.assert_array_equal(owner, [0, 0, 0, 1, 1])
    np.testing.assert_allclose(np.asarray(rows, np.float32), self.encoder.encode(
        ["fever", "cough", "mild fever", "the patient has fever", "cough"]), atol=2e-3)
    again = CountingEncoder(self.encoder)
    self.assertEqual(ensure("eval", again).meta["text_rows"], "all")
    self.assertEqual(again.calls, 0)
    precomputed = teacher_config(**dict(self.cfg, kind="precomputed"))
    with self.assertRaisesRegex(segments_cache.SegmentsUnavailableError, "precomputed"):
      segments_cache.ensure_segments(precomputed, teacher, dataset, pattern)

  def test_text_rows_must_be_all_or_eval(self):
    with self.assertRaisesRegex(ValueError, "text_rows"):
      self.ensure(self.workdir(), cfg=teacher_config(**dict(self.cfg, text_rows="train")))


class PrecomputedTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    cls.dataset = load_dataset(write_tiny_dataset(os.path.join(cls.tmp.name, "data")))
    rng = np.random.default_rng(0)
    cls.vectors = {"text": rng.standard_normal((5, 8)).astype(np.float32),
                   "concepts": rng.standard_normal((6, 8)).astype(np.float32),
                   "negated": rng.standard_normal((6, 8)).astype(np.float32)}

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def write_parquet(self, folder, part, ids, vectors):
    field = "pair_id" if part == "text" else "concept_id"
    pq.write_table(pa.table({field: list(ids), "embedding": [list(map(float, v))
                                                            for v in vectors]}),
                   os.path.join(folder, f"{part}.parquet"))

  def source(self, shuffle=True, parts=("text", "concepts", "negated")) -> str:
    folder = self.create_tempdir().full_path
    for part in parts:
      ids = self.dataset.pair_ids if part == "text" else self.dataset.concept_ids
      order = np.random.default_rng(1).permutation(len(ids)) if shuffle else np.arange(len(ids))
      self.write_parquet(folder, part, ids[order], self.vectors[part][order])
    return folder

  def ensure(self, folder, **kw):
    cfg = teacher_config(name="openai", kind="precomputed", precomputed=folder,
                         dtype="float32", **kw)
    return export.ensure_teacher_embeddings(cfg, self.dataset, self.create_tempdir().full_path)

  def test_parquet_rows_are_matched_by_id(self):
    loaded = load_teacher_embeddings(self.ensure(self.source()), self.dataset)
    for part in ("text", "concepts", "negated"):
      np.testing.assert_array_equal(getattr(loaded, part), self.vectors[part])
    self.assertEqual(loaded.meta["missing_parts"], [])

  def test_npy_with_and_without_id_files(self):
    folder = self.create_tempdir().full_path
    order = np.array([4, 2, 0, 1, 3])
    np.save(os.path.join(folder, "text.npy"), self.vectors["text"][order])
    with open(os.path.join(folder, "text_ids.txt"), "w") as f:
      f.write("\n".join(self.dataset.pair_ids[order]) + "\n")
    np.save(os.path.join(folder, "concepts.npy"), self.vectors["concepts"])   # dataset order
    loaded = load_teacher_embeddings(self.ensure(folder), self.dataset)
    np.testing.assert_array_equal(loaded.text, self.vectors["text"])
    np.testing.assert_array_equal(loaded.concepts, self.vectors["concepts"])
    self.assertTrue((np.asarray(loaded.negated) == 0).all())
    self.assertEqual(loaded.meta["missing_parts"], ["negated"])

  def test_changed_source_file_gets_a_new_folder(self):
    folder = self.source()
    cfg = teacher_config(name="openai", kind="precomputed", precomputed=folder)
    before = export.teacher_cache_dir(cfg, self.dataset, "w")
    self.vectors["text"][0, 0] += 1
    self.write_parquet(folder, "text", self.dataset.pair_ids, self.vectors["text"][:5])
    os.utime(os.path.join(folder, "text.parquet"), ns=(1, 1))
    self.assertNotEqual(export.teacher_cache_dir(cfg, self.dataset, "w"), before)

  def test_bad_inputs_name_file_row_and_field(self):
    folder = self.source(shuffle=False)
    ids = list(self.dataset.pair_ids)
    text = self.vectors["text"].copy()
    self.write_parquet(folder, "text", ids[:2] + ["P99"] + ids[3:], text)
    with self.assertRaisesRegex(DataError, r"text.parquet: row 2, field 'pair_id': unknown id "
                                r"'P99'"):
      self.ensure(folder)
    self.write_parquet(folder, "text", ids[:4] + ["P0"], text)
    with self.assertRaisesRegex(DataError, r"row 4, field 'pair_id': duplicate id 'P0' \(first "
                                r"at row 0\)"):
      self.ensure(folder)
    self.write_parquet(folder, "text", ids[:4], text[:4])
    with self.assertRaisesRegex(DataError, r"field 'pair_id': 1 dataset ids have no embedding, "
                                "e.g. 'P4'"):
      self.ensure(folder)
    text[3, 5] = np.nan
    self.write_parquet(folder, "text", ids, text)
    with self.assertRaisesRegex(DataError, r"text.parquet: row 3, field 'embedding': "
                                "non-finite"):
      self.ensure(folder)
    self.write_parquet(folder, "text", ids, self.vectors["text"])
    with self.assertRaisesRegex(DataError, r"text.parquet: row 0, field 'embedding': "
                                r"dimension 8, but teacher config field 'dim' gives 16"):
      self.ensure(folder, dim=16)
    self.write_parquet(folder, "concepts", self.dataset.concept_ids,
                       np.ones((6, 4), np.float32))
    with self.assertRaisesRegex(DataError, r"concepts.parquet: row 0, field 'embedding': "
                                r"dimension 4, but .*text.parquet gives 8"):
      self.ensure(folder)

  def test_negated_file_must_cover_concepts_seen_negated(self):
    folder = self.source()
    self.write_parquet(folder, "negated", ["C1", "C2"], self.vectors["negated"][[1, 2]])
    with self.assertRaisesRegex(DataError, r"negated.parquet: field 'concept_id': 1 dataset "
                                "ids have no embedding, e.g. 'C0'"):
      self.ensure(folder)
    self.write_parquet(folder, "negated", ["C0", "C2"], self.vectors["negated"][[0, 2]])
    loaded = load_teacher_embeddings(self.ensure(folder), self.dataset)
    np.testing.assert_array_equal(loaded.negated[[0, 2]], self.vectors["negated"][[0, 2]])
    with self.assertRaisesRegex(DataError, "e.g. 'C1'"):
      self.ensure(folder, negated_rows="all")


class SyntheticAndCommandLineTest(absltest.TestCase):

  def test_synthetic_kind_calls_the_writer_and_writes_meta(self):
    dataset = load_dataset(write_tiny_dataset(self.create_tempdir().full_path))
    calls = []

    def write_synthetic_teacher(ds, path, cfg):
      calls.append(path)
      os.makedirs(path, exist_ok=True)
      for part, rows in (("text", 5), ("concepts", 6), ("negated", 6)):
        np.save(os.path.join(path, f"{part}.npy"), np.ones((rows, 4), np.float32))

    cfg = teacher_config(name="syn", kind="synthetic", dim=4, seed=3)
    workdir = self.create_tempdir().full_path
    with mock.patch.object(synthetic_teacher, "write_synthetic_teacher",
                           write_synthetic_teacher):
      path = export.ensure_teacher_embeddings(cfg, dataset, workdir)
      self.assertEqual(export.ensure_teacher_embeddings(cfg, dataset, workdir), path)
    self.assertEqual(calls, [path])
    key = cache_key("synthetic-3-4", "none", 0, True, dataset.data_hash())
    self.assertEqual(path, teacher_dir(workdir, "syn", key))
    self.assertEqual(load_teacher_embeddings(path, dataset).meta["dim"], 4)

  def test_synthetic_clause_rows_follow_the_concepts_they_name(self):
    dataset = load_dataset(write_tiny_dataset(self.create_tempdir().full_path))
    cfg = teacher_config(kind="synthetic", name="s", dim=16, seed=3, dtype="float32")
    workdir = self.create_tempdir().full_path
    teacher = export.ensure_teacher(cfg, dataset, workdir)
    rows = synthetic_teacher.segment_rows(dataset, cfg, ["mild fever", "no fever", "nothing"])
    concept = np.asarray(teacher.concepts[0])              # C0: "fever"
    self.assertGreater(rows[0] @ concept, 0.8)
    self.assertLess(rows[1] @ concept, -0.6)
    self.assertLess(abs(rows[2] @ concept), 0.8)
    seg = segments_cache.ensure_segments(cfg, teacher, dataset, segments_lib.DEFAULT_PATTERN,
                                         "eval", progress_bar=False)
    self.assertEqual(seg.meta["text_rows"], "all")        # made for every pair at once
    self.assertEqual(len(seg.rows), seg.offsets[-1])

  def test_command_line_exports_both_teachers(self):
    root = self.create_tempdir()
    data = write_tiny_dataset(os.path.join(root.full_path, "data"))
    dataset = load_dataset(data)
    source = os.path.join(root.full_path, "vectors")
    os.makedirs(source)
    np.save(os.path.join(source, "text.npy"), np.ones((5, 3), np.float32))
    config_file = os.path.join(root.full_path, "config.py")
    with open(config_file, "w") as f:
      f.write(f"""
from line_jax.config import base_config, teacher_config

def get_config():
  c = base_config()
  c.data.dir = {data!r}
  for name in ("teacher1", "teacher2"):
    c[name] = teacher_config(name=name, kind="precomputed", precomputed={source!r})
  return c
""")
    workdir = os.path.join(root.full_path, "work")
    result = subprocess.run(
        [sys.executable, "-m", "line_jax.export", f"--config={config_file}",
         f"--workdir={workdir}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS="cpu"))
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    paths = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())
    self.assertEqual(sorted(paths), ["teacher1", "teacher2"])
    for path in paths.values():
      self.assertEqual(load_teacher_embeddings(path, dataset).dim, 3)
    with open(os.path.join(paths["teacher2"], "meta.json")) as f:
      self.assertEqual(json.load(f)["reused_from"], paths["teacher1"])


if __name__ == "__main__":
  absltest.main()
