"""Tests of the import of pairs made by another extractor."""

import json
import os

from absl.testing import absltest
from absl.testing import parameterized
import pyarrow as pa
import pyarrow.parquet as pq

from line_jax.data import testing
from line_jax.data import umls
from line_jax.data.notes import pairs_import
from line_jax.data.dataset import DataError, load_dataset

GOOD = [
    {"text": "No fever, cough since Monday.", "concept_ids": ["C9000006", "C9000007"],
     "negated": [True, False], "spans": [[3, 8], [10, 15]], "note_id": "n1"},
    {"text": "Ataxia.", "concept_ids": ["C9000010"], "rho": 0.5, "pair_id": "p2",
     "split": "test", "label": "impression"},
    {"text": "Seizure and seizure.", "concept_ids": ["C9000009", "C9000009"]},
]


class PairsImportTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    meta = testing.write_tiny_umls(self.create_tempdir("META").full_path)
    self.dataset = self.create_tempdir("ds").full_path
    umls.build_umls_dataset(meta, self.dataset, dict(heldout_fraction=0.0), progress=False)

  def write(self, rows, kind="jsonl"):
    path = os.path.join(self.create_tempdir().full_path, f"pairs.{kind}")
    if kind == "jsonl":
      with open(path, "w") as f:
        for r in rows:
          f.write(json.dumps(r) + "\n")
    else:
      keys = sorted({k for r in rows for k in r})   # from_pylist reads the first row's keys
      pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows]), path)
    return path

  @parameterized.parameters("jsonl", "parquet")
  def test_good_rows(self, kind):
    stats = pairs_import.import_pairs(self.dataset, self.write(GOOD, kind))
    self.assertEqual(stats["pairs"], 3)
    p = pq.read_table(os.path.join(self.dataset, "pairs.parquet")).to_pydict()
    # rho from spans: "fever" and "cough" of 5 words.
    self.assertAlmostEqual(p["rho"][0], 2 / 5, places=6)
    self.assertEqual(p["negated"][0], [True, False])
    self.assertEqual(p["pair_id"][1], "p2")
    self.assertEqual(p["split"][1], "test")
    self.assertAlmostEqual(p["rho"][1], 0.5)
    self.assertEqual(p["concept_ids"][2], ["C9000009"])   # repeats merged
    self.assertAlmostEqual(p["rho"][2], 1.0)               # default_rho
    ds = load_dataset(self.dataset)
    self.assertEqual(ds.num_pairs, 3)

  def test_rho_from_spans(self):
    self.assertAlmostEqual(pairs_import.rho_from_spans("a bb ccc", [(2, 4)]), 1 / 3)
    self.assertAlmostEqual(pairs_import.rho_from_spans("a bb ccc", [(0, 8)]), 1.0)

  @parameterized.named_parameters(
      ("unknown_id", dict(concept_ids=["C9000006", "C0000000"]), r"row 2, field 'concept_ids': unknown "
       r"concept id 'C0000000'"),
      ("negated_length", dict(negated=[True]), r"row 2, field 'negated': length 1 differs"),
      ("bad_span", dict(spans=[[0, 99], [0, 1]]), r"row 2, field 'spans'"),
      ("bad_rho", dict(spans=None, rho=1.5), r"row 2, field 'rho': value 1.5"),
      ("bad_split", dict(split="dev"), r"row 2, field 'split'"),
      ("no_text", dict(text=5), r"row 2, field 'text': expected a string"),
  )
  def test_bad_rows(self, change, message):
    bad = dict(GOOD[0])
    bad.update(change)
    bad = {k: v for k, v in bad.items() if v is not None}
    with self.assertRaisesRegex(DataError, message):
      pairs_import.import_pairs(self.dataset, self.write([GOOD[1], bad]))
    self.assertFalse(os.path.exists(os.path.join(self.dataset, "pairs.parquet")))

  def test_duplicate_pair_id(self):
    with self.assertRaisesRegex(DataError, r"row 2, field 'pair_id': duplicate pair_id 'p2'"):
      pairs_import.import_pairs(self.dataset, self.write([GOOD[1], GOOD[1]]))

  def test_skips_counted(self):
    rows = GOOD + [{"text": " ", "concept_ids": ["C9000006"]},
                   {"text": "Nothing here.", "concept_ids": []},
                   {"text": "Fever.", "concept_ids": ["C0000000"]}]
    stats = pairs_import.import_pairs(self.dataset, self.write(rows),
                                      dict(unknown_concepts="drop"))
    self.assertEqual(stats["pairs"], 3)
    self.assertEqual(stats["skipped_empty_text"], 1)
    self.assertEqual(stats["skipped_no_concept"], 2)
    self.assertEqual(stats["concept_ids_dropped_unknown"], 1)


if __name__ == "__main__":
  absltest.main()
