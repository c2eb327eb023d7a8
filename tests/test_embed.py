"""python -m line_jax.embed: streamed memmapped proxies and texts, resume, invalid rows."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest, parameterized
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from line_jax.api import embed_file
from line_jax.api.line_model import LineModel, TeacherUnavailableError
from line_jax.data.dataset import DataError
from line_jax.teachers import testing as teacher_testing
from test_api import pair_lists, shared_tiny_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_pairs(path, concept_ids, negated=None, texts=None):
  columns = {"concept_ids": pa.array(concept_ids, pa.list_(pa.string()))}
  if negated is not None:
    columns["negated"] = pa.array(negated, pa.list_(pa.bool_()))
  if texts is not None:
    columns["text"] = pa.array(texts, pa.string())
  pq.write_table(pa.table(columns), path, row_group_size=16)
  return path


class EmbedTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    _, cls.workdir = shared_tiny_run()
    cls.model = LineModel.load(cls.workdir)
    ds = cls.model.dataset
    cls.ids, cls.negs = pair_lists(ds, np.arange(45))
    cls.expected = cls.model.embed_concepts(cls.ids, negated=cls.negs)
    cls.root = tempfile.mkdtemp()
    cls.input = write_pairs(os.path.join(cls.root, "pairs.parquet"), cls.ids, cls.negs)

  def output_dir(self):
    return self.create_tempdir().full_path

  def test_concept_proxies_row_aligned_in_chunks(self):
    out = self.output_dir()
    meta = embed_file.embed_parquet(self.model, self.input, out, chunk_rows=7, progress_bar=False)
    self.assertTrue(meta["complete"])
    self.assertEqual(meta["files"], {"concepts": "concepts.npy"})
    self.assertEqual((meta["rows"], meta["dim"]), (45, self.model.dim))
    written = np.load(os.path.join(out, "concepts.npy"), mmap_mode="r")
    self.assertEqual(written.dtype, np.float32)
    np.testing.assert_allclose(written, self.expected, atol=1e-5)
    self.assertEqual(json.load(open(os.path.join(out, "meta.json")))["rows_done"], 45)

  def test_resumes_after_interruption(self):
    out = self.output_dir()
    meta = embed_file.embed_parquet(self.model, self.input, out, chunk_rows=8,
                               progress_bar=False, stop_after_rows=10)
    self.assertFalse(meta["complete"])
    self.assertEqual(meta["rows_done"], 16)
    # Rows of the first run are kept, not recomputed: mark them to check.
    partial = np.load(os.path.join(out, "concepts.npy"), mmap_mode="r+")
    partial[0] = 7.0
    partial.flush()
    meta = embed_file.embed_parquet(self.model, self.input, out, chunk_rows=8, progress_bar=False)
    self.assertTrue(meta["complete"])
    written = np.load(os.path.join(out, "concepts.npy"))
    np.testing.assert_array_equal(written[0], 7.0)
    np.testing.assert_allclose(written[1:], self.expected[1:], atol=1e-5)

  @parameterized.named_parameters(
      ("unknown_id", 3, ["C000001", "NO-SUCH"], None, r"row 3, field 'concept_ids'.*NO-SUCH"),
      ("empty_list", 5, [], None, r"row 5, field 'concept_ids'.*empty"),
      ("null_list", 6, None, None, r"row 6, field 'concept_ids'.*null"),
      ("negated_length", 2, ["C000001", "C000002"], [True], r"row 2, field 'negated'"),
  )
  def test_invalid_rows(self, row, ids, negated, message):
    lists, negs = list(self.ids[:10]), list(self.negs[:10])
    lists[row] = ids
    negs[row] = negated if negated is not None else (
        [False] * len(ids) if ids is not None else None)
    path = write_pairs(os.path.join(self.create_tempdir().full_path, "bad.parquet"),
                       lists, negs)
    out = self.output_dir()
    with self.assertRaisesRegex(DataError, message):
      embed_file.embed_parquet(self.model, path, out, chunk_rows=4, progress_bar=False)
    self.assertFalse(os.path.exists(os.path.join(out, "concepts.npy")))
    meta = embed_file.embed_parquet(self.model, path, out, chunk_rows=4, progress_bar=False,
                               invalid="nan")
    written = np.load(os.path.join(out, "concepts.npy"))
    self.assertEqual(meta["invalid_rows"], {"concepts": 1})
    self.assertEqual(meta["invalid_examples"], {"concepts": [row]})
    self.assertTrue(np.isnan(written[row]).all())
    others = [i for i in range(10) if i != row]
    np.testing.assert_allclose(written[others], self.expected[others], atol=1e-5)

  def test_missing_negated_column_means_nothing_negated(self):
    path = write_pairs(os.path.join(self.create_tempdir().full_path, "p.parquet"),
                       self.ids[:6])
    out = self.output_dir()
    embed_file.embed_parquet(self.model, path, out, progress_bar=False)
    np.testing.assert_allclose(np.load(os.path.join(out, "concepts.npy")),
                               self.model.embed_concepts(self.ids[:6]), atol=1e-5)

  def test_texts_need_an_hf_teacher(self):
    path = write_pairs(os.path.join(self.create_tempdir().full_path, "t.parquet"),
                       self.ids[:3], texts=["a", "b", "c"])
    out = self.output_dir()
    with self.assertRaisesRegex(TeacherUnavailableError, "synthetic"):
      embed_file.embed_parquet(self.model, path, out, progress_bar=False)
    self.assertEqual(os.listdir(out), [])
    meta = embed_file.embed_parquet(self.model, path, out, parts=["concepts"], progress_bar=False)
    self.assertEqual(list(meta["files"]), ["concepts"])

  def test_missing_column_is_named(self):
    with self.assertRaisesRegex(DataError, "no column 'text'"):
      embed_file.embed_parquet(self.model, self.input, self.output_dir(), parts=["text"])

  def test_texts_through_teacher1_then_f(self):
    model = LineModel.load(self.workdir)
    bert_dir = teacher_testing.write_tiny_bert(
        os.path.join(self.create_tempdir().full_path, "bert"), hidden_size=32)
    model.config.teacher1.update(kind="hf", model=bert_dir, preset="", pooling="mean",
                                 max_length=10, dim=32, batch_size=8)
    texts = ["fever", "the patient has severe chest pain and fever with cough", None, "ataxia"]
    path = write_pairs(os.path.join(self.create_tempdir().full_path, "t.parquet"),
                       self.ids[:4], texts=texts)
    out = self.output_dir()
    with self.assertRaisesRegex(DataError, "row 2, field 'text': null"):
      embed_file.embed_parquet(model, path, out, progress_bar=False)
    meta = embed_file.embed_parquet(model, path, out, chunk_rows=3, progress_bar=False,
                               invalid="nan")
    self.assertEqual(meta["truncated_texts"], 1)
    self.assertEqual(meta["invalid_rows"], {"text": 1, "concepts": 0})
    written = np.load(os.path.join(out, "text.npy"))
    np.testing.assert_allclose(written[[0, 1, 3]],
                               model.embed_texts([texts[0], texts[1], texts[3]]), atol=1e-5)
    self.assertTrue(np.isnan(written[2]).all())
    # "fever" and "ataxia" are one token each: they differ by their word alone.
    self.assertGreater(np.abs(written[0] - written[3]).max(), 1e-3)
    with self.assertRaisesRegex(DataError, "row 1, field 'text': longer than"):
      embed_file.embed_parquet(model, path, self.output_dir(), invalid="nan", overlong="error",
                          progress_bar=False)

  def test_command_line(self):
    out = os.path.join(self.create_tempdir().full_path, "emb")
    result = subprocess.run(
        [sys.executable, "-m", "line_jax.embed", f"--workdir={self.workdir}",
         f"--input={self.input}", f"--output={out}", "--chunk_rows=20"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    self.assertIn("rows", result.stderr)        # the tqdm progress bar
    np.testing.assert_allclose(np.load(os.path.join(out, "concepts.npy")), self.expected,
                               atol=1e-5)
    self.assertTrue(json.load(open(os.path.join(out, "meta.json")))["complete"])


if __name__ == "__main__":
  absltest.main()
