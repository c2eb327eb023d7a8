"""Bad arguments and mixed models at the user-facing edges: the embed command's resume and
column types, LineModel's arguments, and the transfer protocol's degenerate inputs."""

import json
import os
import re
import tempfile

from absl.testing import absltest, parameterized
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from line_jax.api import embed_file
from line_jax.training import loop as loop_lib
from line_jax.api.line_model import LineModel
from line_jax.data.dataset import DataError, load_dataset, write_dataset
from line_jax.eval.transfer import protocol as transfer_protocol
from line_jax.eval.transfer import report as transfer_report
from line_jax.eval.transfer import settings as transfer_settings
from test_api import pair_lists, shared_tiny_run, train_tiny_run


def folder_bytes(folder):
  """{file name: bytes} of every file in `folder`."""
  out = {}
  for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name), "rb") as f:
      out[name] = f.read()
  return out


class EmbedOtherModelTest(absltest.TestCase):
  """A work dir retrained (--force_new) between two runs of the embed command: the output
  of the first model is refused, not resumed or returned as complete by the second."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    config, cls.workdir = train_tiny_run(cls.root)
    cls.model_a = LineModel.load(cls.workdir)
    config.train.seed = 1                      # the same work dir, trained again
    loop_lib.train(config, cls.workdir, force_new=True)
    cls.model_b = LineModel.load(cls.workdir)
    ids, negs = pair_lists(cls.model_a.dataset, np.arange(40))
    cls.expected_b = cls.model_b.embed_concepts(ids, negated=negs)
    cls.input = os.path.join(cls.root, "pairs.parquet")
    pq.write_table(pa.table({"concept_ids": pa.array(ids, pa.list_(pa.string())),
                             "negated": pa.array(negs, pa.list_(pa.bool_()))}), cls.input,
                   row_group_size=8)

  def run_embed(self, model, out, **kwargs):
    return embed_file.embed_parquet(model, self.input, out, chunk_rows=8, progress_bar=False,
                               **kwargs)

  def test_models_differ(self):
    self.assertNotEqual(self.model_a.fingerprint(), self.model_b.fingerprint())
    self.assertGreater(np.abs(self.model_a.embed_concepts([["C000001"]])
                              - self.model_b.embed_concepts([["C000001"]])).max(), 1e-3)

  def test_partial_output_of_another_model_is_refused_and_kept(self):
    out = self.create_tempdir().full_path
    meta = self.run_embed(self.model_a, out, stop_after_rows=10)    # "killed" after 16 rows
    self.assertEqual((meta["rows_done"], meta["complete"]), (16, False))
    before = folder_bytes(out)
    with self.assertRaisesRegex(FileExistsError, r"another model \(other parameters.*"
                                r"16 of 40 rows done.*--restart"):
      self.run_embed(self.model_b, out)
    self.assertEqual(folder_bytes(out), before)       # nothing overwritten
    # Asked for: discarded and redone, every row from the new model.
    meta = self.run_embed(self.model_b, out, restart=True)
    self.assertTrue(meta["complete"])
    np.testing.assert_allclose(np.load(os.path.join(out, "concepts.npy")), self.expected_b,
                               atol=1e-5)

  def test_complete_output_of_another_model_is_refused(self):
    out = self.create_tempdir().full_path
    self.assertTrue(self.run_embed(self.model_a, out)["complete"])
    before = folder_bytes(out)
    with self.assertRaisesRegex(FileExistsError, "another model.*complete"):
      self.run_embed(self.model_b, out)
    self.assertEqual(folder_bytes(out), before)

  def test_the_same_checkpoint_loaded_again_resumes(self):
    out = self.create_tempdir().full_path
    self.run_embed(self.model_b, out, stop_after_rows=10)
    meta = self.run_embed(LineModel.load(self.workdir), out)
    self.assertTrue(meta["complete"])
    self.assertEqual(meta["model"], self.model_b.fingerprint())
    np.testing.assert_allclose(np.load(os.path.join(out, "concepts.npy")), self.expected_b,
                               atol=1e-5)

  def test_output_without_a_model_record_is_refused(self):
    out = self.create_tempdir().full_path
    self.run_embed(self.model_b, out, stop_after_rows=10)
    path = os.path.join(out, "meta.json")
    with open(path) as f:
      meta = json.load(f)
    del meta["model"]                            # as written before models were recorded
    with open(path, "w") as f:
      json.dump(meta, f)
    with self.assertRaisesRegex(FileExistsError, "records no model"):
      self.run_embed(self.model_b, out)

  def test_differences_name_teachers_and_config(self):
    fp = self.model_b.fingerprint()
    other = dict(fp, teacher2="t2-0000", config_sha256="0" * 64)
    with self.assertRaisesRegex(embed_file.OtherModelError, "teacher2's embeddings 't2-0000' "
                                "there.*another run config"):
      embed_file.check_same_model("out", {"model": other, "rows": 3, "rows_done": 1}, fp)
    embed_file.check_same_model("out", {"model": fp}, fp)     # the same model: no error


class EmbedColumnTypesTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    _, workdir = shared_tiny_run()
    cls.model = LineModel.load(workdir)

  @parameterized.named_parameters(
      ("negated_strings", {"concept_ids": [["C000001", "C000002"]],
                           "negated": [["false", "true"]]}, "negated", "list<bool>"),
      ("negated_ints", {"concept_ids": [["C000001", "C000002"]], "negated": [[0, 2]]},
       "negated", "list<bool>"),
      ("negated_not_lists", {"concept_ids": [["C000001"]], "negated": [1]}, "negated",
       "list<bool>"),
      ("concept_ids_a_string_column", {"concept_ids": ["C000001"]}, "concept_ids",
       "list<string>"),
      ("concept_ids_ints", {"concept_ids": [[1, 2]]}, "concept_ids", "list<string>"),
      ("text_ints", {"text": [3]}, "text", "strings"),
  )
  def test_wrong_column_types_name_file_column_and_expected_type(self, columns, column,
                                                                 expected):
    path = os.path.join(self.create_tempdir().full_path, "in.parquet")
    pq.write_table(pa.table(columns), path)
    out = self.create_tempdir().full_path
    with self.assertRaisesRegex(DataError, f"{re.escape(path)}: field '{column}': the "
                                f"column is .*; expected {expected}"):
      embed_file.embed_parquet(self.model, path, out, progress_bar=False)
    self.assertEqual(os.listdir(out), [])

  def test_an_all_null_negated_column_means_nothing_negated(self):
    path = os.path.join(self.create_tempdir().full_path, "in.parquet")
    pq.write_table(pa.table({"concept_ids": pa.array([["C000001"]], pa.list_(pa.string())),
                             "negated": pa.array([None], pa.null())}), path)
    out = self.create_tempdir().full_path
    embed_file.embed_parquet(self.model, path, out, progress_bar=False)
    np.testing.assert_allclose(np.load(os.path.join(out, "concepts.npy")),
                               self.model.embed_concepts([["C000001"]]), atol=1e-6)


class LineModelArgumentsTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    _, workdir = shared_tiny_run()
    cls.model = LineModel.load(workdir)

  @parameterized.named_parameters(
      ("string_false", [["false"]], "list 0, position 0: 'false' is a str"),
      ("string_no", [["no"]], "list 0, position 0: 'no' is a str"),
      ("string_zero", [["0"]], "list 0, position 0: '0' is a str"),
      ("int_two", [[2]], "list 0, position 0: 2 is a int"),
      ("int_zero", [[0]], "list 0, position 0: 0 is a int"),
      ("numpy_ints", [np.array([1])], "list 0, position 0: np.int64\\(1\\) is a int64"),
      ("second_list", [[False], [True, "0"]], "list 1, position 1: '0' is a str"),
      ("flags_a_string", ["ab"], "list 0 is a str; pass a list of True / False"),
  )
  def test_negation_flags_must_be_booleans(self, negated, message):
    lists = [[f"C00000{j + 1}" for j in range(len(flags))] for flags in negated]
    with self.assertRaisesRegex(TypeError, "negated " + message):
      self.model.embed_concepts(lists, negated=negated)

  def test_python_and_numpy_booleans_agree(self):
    lists = [["C000001", "C000002"], ["C000003"]]
    want = self.model.embed_concepts(lists, negated=[[False, True], [True]])
    for negated in ([[np.bool_(False), np.True_], [np.True_]],
                    [np.array([False, True]), np.array([True])]):
      np.testing.assert_array_equal(self.model.embed_concepts(lists, negated=negated), want)

  def test_concept_ids_must_be_strings(self):
    with self.assertRaisesRegex(TypeError, "concept list 0, position 1: 7 is a int"):
      self.model.embed_concepts([["C000001", 7]])

  @parameterized.named_parameters(
      ("float", 2.5, TypeError, "k=2.5 is a float; k must be a positive int"),
      ("bool", True, TypeError, "k=True is a bool"),
      ("string", "3", TypeError, "k='3' is a str"),
      ("zero", 0, ValueError, "k=0 must be at least 1"),
      ("negative", -2, ValueError, "k=-2 must be at least 1"),
  )
  def test_k_is_checked_before_any_work(self, k, error, message):
    queries = self.model.dataset_texts([0])
    with self.assertRaisesRegex(error, "top_concepts: " + message):
      self.model.top_concepts(queries, k=k)
    # Checked before the text is embedded (this run's synthetic teacher 1 cannot embed it).
    with self.assertRaisesRegex(error, "nearest_concepts: " + message):
      self.model.nearest_concepts("chest pain", k=k)
    with self.assertRaisesRegex(error, "missing_concepts: " + message):
      self.model.missing_concepts("chest pain, fever", ["C000001"], k=k)

  def test_k_beyond_the_dictionary_and_numpy_ints(self):
    queries = self.model.dataset_texts([0])
    size = self.model.dataset.num_concepts
    with self.assertRaisesRegex(ValueError, f"at most {size}"):
      self.model.top_concepts(queries, k=size + 1)
    self.assertLen(self.model.top_concepts(queries, k=np.int64(3))[0], 3)

  def test_other_arguments(self):
    with self.assertRaisesRegex(TypeError, "segments='yes' is a str"):
      self.model.nearest_concepts("chest pain", segments="yes")
    with self.assertRaisesRegex(TypeError, "pair indices must be integers"):
      self.model.dataset_texts([0.5])
    with self.assertRaisesRegex(TypeError, "not a single string"):
      self.model.missing_concepts("chest pain", "C000001")


# --- transfer protocol ----------------------------------------------------------------

TINY = transfer_settings.TransferConfig(
    filters=8, batch_size=32, max_epochs=2, tune_max_epochs=1, patience=1, num_seeds=1,
    eval_chunk=64, embeddings=("onehot", "teacher1"), without_branch_roots="off")


def write_sites(root, labels_by_site):
  """SYNTHETIC: 6 concepts; pairs with the given labels at each site, each listing the
  concept of its label (0-2) plus a noise concept (3-5)."""
  rng = np.random.default_rng(0)
  concepts = dict(concept_id=[f"C{i}" for i in range(6)], name=[f"c{i}" for i in range(6)])
  relations = dict(head_id=["C1"], tail_id=["C0"], relation=["parent_child"])
  classes = sorted({c for labels in labels_by_site.values() for c in labels})
  lists, labels, sites = [], [], []
  for site, site_labels in labels_by_site.items():
    for label in site_labels:
      lists.append([f"C{classes.index(label) % 3}", f"C{3 + int(rng.integers(0, 3))}"])
      labels.append(label)
      sites.append(site)
  n = len(lists)
  write_dataset(root, concepts, relations, dict(
      pair_id=[f"p{i}" for i in range(n)], text=[f"case {i}" for i in range(n)],
      concept_ids=lists, negated=[[False, False]] * n, rho=[1.0] * n,
      split=["train", "test"] * (n // 2) + ["train"] * (n % 2), label=labels, site=sites))
  return load_dataset(root)


def vectors_embedder(values):
  return {"teacher1": ("vectors", lambda idx, neg: values[idx])}


GOOD_VECTORS = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)


class TransferTooLittleTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("a_site_with_one_pair", {"north": ["a", "b"] * 30, "south": ["a"]},
       r"too few labelled pairs at site\(s\) \{'south': 1\}"),
      ("one_class_at_both_sites", {"north": ["a"] * 40, "south": ["a"] * 40},
       "fewer than two label classes.*one class leaves nothing to learn"),
      ("disjoint_classes", {"north": ["a", "b"] * 20, "south": ["c", "d"] * 20},
       "fewer than two label classes.*no class can be learnt at one site and tested"),
  )
  def test_skipped_with_the_reason(self, labels_by_site, reason):
    dataset = write_sites(tempfile.mkdtemp(), labels_by_site)
    result = transfer_protocol.run_transfer(dataset, vectors_embedder(GOOD_VECTORS), TINY)
    self.assertRegex(result.get("skipped", ""), reason)
    self.assertIn("Skipped: " + result["skipped"], transfer_report.render_section(result))

  def test_a_rare_class_is_left_out_with_a_note(self):
    dataset = write_sites(tempfile.mkdtemp(), {"north": ["a", "b"] * 20 + ["c"] * 3,
                                               "south": ["a", "b"] * 20 + ["c"] * 12})
    result = transfer_protocol.run_transfer(dataset, vectors_embedder(GOOD_VECTORS), TINY)
    self.assertNotIn("skipped", result)
    self.assertEqual(result["classes"], ["a", "b"])
    self.assertEqual(result["left_out_classes"], {"c": {"north": 3, "south": 12}})
    self.assertEqual(result["site_counts"], {"north": 40, "south": 40})
    self.assertIn("15 pairs of label classes with fewer than 10 pairs",
                  transfer_report.render_section(result))

  @parameterized.named_parameters(
      # The lists name 5 distinct entries: C0 and C1 (the labels') and C3-C5 (noise).
      ("nan", lambda idx: np.where(idx[:, None] == 1, np.nan, GOOD_VECTORS[idx]),
       r"'teacher1' \(vectors\) has non-finite values .* in 1 of 5 rows, first concept C1"),
      ("inf_after_the_cast", lambda idx: np.where(idx[:, None] == 4, 1e39,
                                                GOOD_VECTORS[idx].astype(np.float64)),
       "non-finite values .*first concept C4"),
      ("a_row_short", lambda idx: GOOD_VECTORS[idx][:-1],
       r"rows of shape \(4, 4\) for the lists' 5 distinct entries; expected \[5, d\]"),
      ("one_dimensional", lambda idx: GOOD_VECTORS[idx][:, 0], r"rows of shape \(5,\)"),
  )
  def test_bad_embeddings_are_refused(self, rows, message):
    dataset = write_sites(tempfile.mkdtemp(), {"north": ["a", "b"] * 20,
                                               "south": ["a", "b"] * 20})
    embedder = {"teacher1": ("vectors", lambda idx, neg: rows(np.asarray(idx)))}
    with self.assertRaisesRegex(ValueError, message):
      transfer_protocol.run_transfer(dataset, embedder, TINY)

  def test_minimums_are_config_values(self):
    cfg = transfer_settings.TransferConfig(min_site_pairs=5, min_class_pairs=2)
    self.assertEqual((cfg.min_site_pairs, cfg.min_class_pairs), (5, 2))
    with self.assertRaisesRegex(ValueError, "min_site_pairs and min_class_pairs"):
      transfer_settings.TransferConfig(min_class_pairs=0)
    from line_jax.config import base_config
    read = transfer_settings.read_config(base_config())
    self.assertEqual((read.min_site_pairs, read.min_class_pairs), (20, 10))


if __name__ == "__main__":
  absltest.main()
