"""Bad input gets a clear error naming the file, the row and the field."""

import json
import os
import tempfile

from absl.testing import absltest, parameterized
import numpy as np

from line_jax.cache import store as emb_lib
from line_jax.data import dataset as ds_lib


def good_tables():
  concepts = dict(concept_id=["A", "B", "C", "D"], name=["alpha", "beta", "gamma", "delta"],
                  group=["g1", "g1", "g2", "g2"])
  relations = dict(head_id=["A", "B"], tail_id=["B", "C"], relation=["parent", "synonym"])
  pairs = dict(pair_id=["p0", "p1", "p2"], text=["alpha and beta", "no gamma", "delta"],
               concept_ids=[["A", "B"], ["C"], ["D"]], negated=[[False, False], [True], [False]],
               rho=[1.0, 0.5, 1.0], split=["train", "train", "test"])
  return concepts, relations, pairs


class DatasetTest(parameterized.TestCase):

  def write(self, concepts, relations, pairs, heldout=None):
    root = tempfile.mkdtemp(dir=self.create_tempdir().full_path)
    ds_lib.write_dataset(root, concepts, relations, pairs, heldout)
    return root

  def test_good_dataset_loads(self):
    ds = ds_lib.load_dataset(self.write(*good_tables()))
    self.assertEqual(ds.num_concepts, 4)
    self.assertEqual(ds.relation_types, ("parent", "synonym"))
    np.testing.assert_array_equal(ds.concept_flat, [0, 1, 2, 3])
    np.testing.assert_array_equal(ds.negated_flat, [False, False, True, False])
    np.testing.assert_array_equal(ds.concept_offsets, [0, 2, 3, 4])
    self.assertEqual(ds.negated_names[2], "gamma unobserved")
    np.testing.assert_array_equal(ds.split_indices("train"), [0, 1])

  @parameterized.named_parameters(
      ("unknown_concept", "pairs", "concept_ids", ["A", "Z"], 0, "unknown concept id 'Z'"),
      ("empty_list", "pairs", "concept_ids", [], 1, "empty concept list"),
      ("unequal_length", "pairs", "negated", [True, False], 1, "differs from concept_ids"),
      ("rho_zero", "pairs", "rho", 0.0, 2, "outside (0, 1]"),
      ("rho_big", "pairs", "rho", 1.5, 1, "outside (0, 1]"),
      ("rho_nan", "pairs", "rho", float("nan"), 0, "outside (0, 1]"),
      ("bad_split", "pairs", "split", "dev", 2, "is not one of"),
      ("empty_text", "pairs", "text", "  ", 1, "empty text"),
      ("unknown_head", "relations", "head_id", "Q", 1, "unknown concept id 'Q'"),
      ("empty_name", "concepts", "name", "", 3, "empty name"),
      ("duplicate_concept", "concepts", "concept_id", "A", 2, "duplicate id 'A'"),
  )
  def test_bad_input(self, table, field, value, row, message):
    tables = dict(zip(("concepts", "relations", "pairs"), good_tables()))
    column = list(tables[table][field])
    if field == "negated" and table == "pairs":
      column[row] = value
    else:
      column[row] = value
    tables[table][field] = column
    if field == "concept_ids" and value == []:
      tables["pairs"]["negated"] = [[False, False], [], [False]]
    root = self.write(tables["concepts"], tables["relations"], tables["pairs"])
    with self.assertRaises(ds_lib.DataError) as cm:
      ds_lib.load_dataset(root)
    msg = str(cm.exception)
    self.assertIn(f"{table}.parquet", msg)
    self.assertIn(f"row {row}", msg)
    self.assertIn(f"field '{field}'", msg)
    self.assertIn(message, msg)

  def test_relation_not_in_config(self):
    root = self.write(*good_tables())
    with self.assertRaisesRegex(ds_lib.DataError,
                                r"relations.parquet: row 1, field 'relation': relation "
                                r"'synonym' is not in the config"):
      ds_lib.load_dataset(root, relations=["parent"])
    ds = ds_lib.load_dataset(root, relations=["synonym", "parent", "narrow"])
    self.assertEqual(ds.relation_types, ("synonym", "parent", "narrow"))
    np.testing.assert_array_equal(ds.edge_type, [1, 0])

  def test_missing_column_and_file(self):
    c, r, p = good_tables()
    del p["rho"]
    with self.assertRaisesRegex(ds_lib.DataError, "pairs.parquet: field 'rho': missing column"):
      ds_lib.load_dataset(self.write(c, r, p))
    with self.assertRaisesRegex(ds_lib.DataError, "file not found"):
      ds_lib.load_dataset(self.create_tempdir().full_path)

  def test_heldout_edge_in_training_graph(self):
    c, r, p = good_tables()
    held = dict(head_id=["D", "C"], tail_id=["A", "B"], relation=["x", "y"])
    with self.assertRaisesRegex(ds_lib.DataError,
                                "heldout_relations.parquet: row 1, field 'head_id'"):
      ds_lib.load_dataset(self.write(c, r, p, held))

  def test_data_hash_tracks_content(self):
    c, r, p = good_tables()
    h1 = ds_lib.load_dataset(self.write(c, r, p)).data_hash()
    self.assertEqual(h1, ds_lib.load_dataset(self.write(c, r, p)).data_hash())
    p["text"] = ["alpha and beta!", "no gamma", "delta"]
    self.assertNotEqual(h1, ds_lib.load_dataset(self.write(c, r, p)).data_hash())


class EmbeddingValidationTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    root = self.create_tempdir().full_path
    ds_lib.write_dataset(os.path.join(root, "d"), *good_tables())
    self.ds = ds_lib.load_dataset(os.path.join(root, "d"))
    self.path = os.path.join(root, "emb")
    os.makedirs(self.path)
    rng = np.random.default_rng(0)
    self.arrays = dict(text=rng.normal(size=(3, 5)), concepts=rng.normal(size=(4, 5)),
                       negated=rng.normal(size=(4, 5)))
    with open(os.path.join(self.path, "meta.json"), "w") as f:
      json.dump({"dim": 5}, f)

  def save(self):
    for k, v in self.arrays.items():
      np.save(os.path.join(self.path, f"{k}.npy"), v.astype(np.float32))

  def test_good(self):
    self.save()
    t = emb_lib.load_teacher_embeddings(self.path, self.ds)
    self.assertEqual(t.dim, 5)
    self.assertIsInstance(t.text, np.memmap)

  def test_read_rows_equals_the_memmap(self):
    self.save()
    t = emb_lib.load_teacher_embeddings(self.path, self.ds)
    rows = emb_lib.read_rows(t.concepts, chunk_rows=3)
    self.assertNotIsInstance(rows, np.memmap)
    np.testing.assert_array_equal(rows, np.asarray(t.concepts))

  def test_gather_rows_equals_fancy_indexing(self):
    self.save()
    t = emb_lib.load_teacher_embeddings(self.path, self.ds)
    rows = np.array([3, 0, 3, 2])
    np.testing.assert_array_equal(emb_lib.gather_rows(t.concepts, rows),
                                  np.asarray(t.concepts)[rows])
    text_rows = np.array([2, 0])
    np.testing.assert_array_equal(emb_lib.gather_rows(np.asarray(t.text), text_rows),
                                  np.asarray(t.text)[text_rows])

  def test_nan_names_file_row_field(self):
    self.arrays["concepts"][2, 1] = np.nan
    self.save()
    with self.assertRaisesRegex(ds_lib.DataError,
                                r"concepts.npy: row 2, field 'embedding': non-finite"):
      emb_lib.load_teacher_embeddings(self.path, self.ds)

  def test_wrong_dimension(self):
    self.arrays["negated"] = np.zeros((4, 6))
    self.save()
    with self.assertRaisesRegex(ds_lib.DataError, r"negated.npy: field 'dim': dimension 6"):
      emb_lib.load_teacher_embeddings(self.path, self.ds)
    self.arrays["negated"] = np.zeros((4, 5))
    self.save()
    with self.assertRaisesRegex(ds_lib.DataError, r"text.npy: field 'dim': dimension 5, "
                                r"expected 7"):
      emb_lib.load_teacher_embeddings(self.path, self.ds, expected_dim=7)

  def test_wrong_rows(self):
    self.arrays["text"] = np.zeros((2, 5))
    self.save()
    with self.assertRaisesRegex(ds_lib.DataError, r"text.npy: field 'rows': 2 rows but the "
                                r"dataset has 3"):
      emb_lib.load_teacher_embeddings(self.path, self.ds)


if __name__ == "__main__":
  absltest.main()
