"""Tests of the UMLS (RRF) import on a tiny made-up release."""

import json
import os

from absl.testing import absltest
import pyarrow.parquet as pq

from line_jax.data import rrf
from line_jax.data import testing
from line_jax.data import umls
from line_jax.data.dataset import DataError


def _read(root, name):
  return pq.read_table(os.path.join(root, name)).to_pydict()


class UmlsImportTest(absltest.TestCase):

  def build(self, **overrides):
    meta = testing.write_tiny_umls(self.create_tempdir("META").full_path)
    out = self.create_tempdir("out").full_path
    config = dict(heldout_fraction=0.0, num_sibling_pairs=0)
    config.update(overrides)
    return meta, out, umls.build_umls_dataset(meta, out, config, progress=False)

  def test_concepts_names_synonyms_groups(self):
    _, out, stats = self.build()
    c = _read(out, "concepts.parquet")
    names = dict(zip(c["concept_id"], c["name"]))
    # The preferred string wins although a non-preferred atom comes first in the file.
    self.assertEqual(names["C9000006"], "Fever")
    self.assertEqual(names["C9000006#syn1"], "Pyrexia")
    self.assertEqual(names["C9000006#syn2"], "Febrile")
    self.assertEqual(dict(zip(c["concept_id"], c["negated_name"]))["C9000007"],
                     "Cough unobserved")
    groups = dict(zip(c["concept_id"], c["group"]))
    self.assertEqual(groups["C9000006"], "Sign or Symptom")
    self.assertEqual(groups["C9000014"], "Unknown")   # no MRSTY row
    self.assertNotIn("C9000099", names)               # French only: skipped and counted
    self.assertEqual(stats["cuis_without_language_string"], 1)
    self.assertEqual(stats["cuis"], len(testing.TINY_CONCEPTS))
    expected_synonyms = sum(len(o) for _, _, o, _ in testing.TINY_CONCEPTS)
    self.assertEqual(stats["synonym_entries"], expected_synonyms)
    with open(os.path.join(out, "stats.json")) as f:
      self.assertEqual(json.load(f)["mrconso"]["dropped_language"], 1)

  def test_relations_mapped_to_families(self):
    _, out, stats = self.build()
    r = _read(out, "relations.parquet")
    edges = set(zip(r["head_id"], r["tail_id"], r["relation"]))
    # PAR and CHD rows of one link give one child -> parent edge.
    self.assertIn(("C9000002", "C9000001", "parent_child"), edges)
    self.assertNotIn(("C9000001", "C9000002", "parent_child"), edges)
    self.assertIn(("C9000012", "C9000004", "parent_child"), edges)
    # RO both ways is one symmetric edge.
    self.assertEqual(sum(1 for h, t, rel in edges if rel == "other"
                         and {h, t} == {"C9000006", "C9000007"}), 1)
    # Symmetric families are stored once per unordered pair.
    undirected = {(frozenset((h, t)), rel) for h, t, rel in edges}
    self.assertIn((frozenset(("C9000011", "C9000010")), "quantifiable"), undirected)
    self.assertIn((frozenset(("C9000008", "C9000002")), "related"), undirected)
    self.assertIn(("C9000012", "C9000004", "broad"), edges)
    self.assertIn(("C9000004", "C9000012", "narrow"), edges)
    self.assertIn(("C9000006", "C9000006#syn1", "synonym"), edges)
    self.assertEqual(set(r["relation"]) - set(umls.FAMILIES), set())
    mrrel = stats["mrrel"]
    self.assertEqual(mrrel["dropped_rel_code"], 2)      # SIB, AQ
    self.assertEqual(mrrel["dropped_self_loop"], 1)     # SY to itself
    self.assertEqual(mrrel["dropped_unkept_cui"], 1)    # the French-only CUI
    self.assertEqual(mrrel["dropped_duplicate"], 3)
    self.assertEqual(mrrel["rows"], len(testing.TINY_RELATIONS))

  def test_heldout_edges_leave_training_graph(self):
    _, out, stats = self.build(heldout_fraction=0.5, num_sibling_pairs=5)
    r = _read(out, "relations.parquet")
    h = _read(out, "heldout_relations.parquet")
    train = {frozenset(p) for p in zip(r["head_id"], r["tail_id"])}
    held = [frozenset(p) for p in zip(h["head_id"], h["tail_id"])]
    self.assertNotEmpty(held)
    self.assertEqual([p for p in held if p in train], [])
    self.assertIn("sibling", stats["heldout_relations"])
    # Siblings share a parent: only C9000002..5 (children of C9000001) have siblings.
    siblings = [p for p, rel in zip(held, h["relation"]) if rel == "sibling"]
    self.assertNotEmpty(siblings)
    children = {"C9000002", "C9000003", "C9000004", "C9000005"}
    self.assertTrue(all(p <= children for p in siblings), siblings)

  def test_chunked_build_gives_the_same_dataset(self):
    _, out1, stats1 = self.build(heldout_fraction=0.3, num_sibling_pairs=4)
    _, out2, stats2 = self.build(heldout_fraction=0.3, num_sibling_pairs=4, concept_chunk=3)
    for name in ("concepts.parquet", "relations.parquet", "heldout_relations.parquet"):
      a, b = _read(out1, name), _read(out2, name)
      key = lambda t: sorted(zip(*t.values()))   # noqa: E731
      self.assertEqual(key(a), key(b), name)
    self.assertEqual(stats1["relations"], stats2["relations"])

  def test_filters_sab_and_max_concepts(self):
    _, out, stats = self.build(max_concepts=3, sabs=("TINY",))
    c = _read(out, "concepts.parquet")
    self.assertEqual(sorted(set(c["term_id"])), ["C9000001", "C9000002", "C9000003"])
    self.assertEqual(stats["cuis_dropped_max_concepts"], len(testing.TINY_CONCEPTS) - 3)

  def test_definitions_written(self):
    _, out, _ = self.build()
    d = _read(out, "definitions.parquet")
    self.assertEqual(d["concept_id"], ["C9000006", "C9000009"])

  def test_missing_mrconso(self):
    meta = testing.write_tiny_umls(self.create_tempdir().full_path)
    os.remove(os.path.join(meta, "MRCONSO.RRF"))
    with self.assertRaisesRegex(DataError, r"MRCONSO.RRF: file not found"):
      umls.build_umls_dataset(meta, self.create_tempdir().full_path, progress=False)

  def test_wrong_field_count_names_line(self):
    meta = testing.write_tiny_umls(self.create_tempdir().full_path)
    path = os.path.join(meta, "MRCONSO.RRF")
    with open(path) as f:
      lines = f.readlines()
    lines[4] = "C9000003|ENG|P|\n"
    with open(path, "w") as f:
      f.writelines(lines)
    with self.assertRaisesRegex(DataError, r"MRCONSO.RRF: line 5: 4 fields, expected 19"):
      umls.build_umls_dataset(meta, self.create_tempdir().full_path, progress=False)

  def test_unknown_rel_code_names_line_and_field(self):
    meta = testing.write_tiny_umls(self.create_tempdir().full_path)
    with open(os.path.join(meta, "MRREL.RRF"), "a") as f:
      f.write("C9000001||CUI|XYZ|C9000002||CUI||R1||TINY|TINY|||N||\n")
    with self.assertRaisesRegex(DataError, r"MRREL.RRF: line 21: field 'REL': unknown code "
                                r"'XYZ'"):
      umls.build_umls_dataset(meta, self.create_tempdir().full_path, progress=False)

  def test_no_trailing_pipe_accepted(self):
    meta = testing.write_tiny_umls(self.create_tempdir().full_path)
    for name in ("MRCONSO.RRF", "MRREL.RRF"):
      path = os.path.join(meta, name)
      with open(path) as f:
        lines = [line.rstrip("\n")[:-1] + "\n" for line in f]
      with open(path, "w") as f:
        f.writelines(lines)
    stats = umls.build_umls_dataset(meta, self.create_tempdir().full_path,
                                    dict(heldout_fraction=0.0), progress=False)
    self.assertEqual(stats["cuis"], len(testing.TINY_CONCEPTS))

  def test_row_reader_streams_blocks(self):
    meta = testing.write_tiny_umls(self.create_tempdir().full_path)
    reader = rrf.RowReader(os.path.join(meta, "MRREL.RRF"), ["CUI1", "REL"], block_size=256)
    batches = list(reader)
    self.assertGreater(len(batches), 1)
    self.assertEqual([line for line, _ in batches][0], 1)
    self.assertEqual(sum(b.num_rows for _, b in batches), len(testing.TINY_RELATIONS))
    lines = [line for line, _ in batches]
    sizes = [b.num_rows for _, b in batches]
    self.assertEqual(lines[1:], [l + s for l, s in zip(lines[:-1], sizes[:-1])])


if __name__ == "__main__":
  absltest.main()
