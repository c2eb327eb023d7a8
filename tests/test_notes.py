"""Tests of the notes import: segmentation, extraction (same results as ConceptExtractor),
splits by note, formats, and bad input."""

import os

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from line_jax.data import extract
from line_jax.data import notes
from line_jax.data import testing
from line_jax.data import umls
from line_jax.data.dataset import DataError, load_dataset


class SegmentationTest(absltest.TestCase):

  def test_sections_and_preamble(self):
    pattern = notes.header_pattern(notes.default_config().section_headers)
    text = ("Name: ___\nChief Complaint: cough\nHISTORY OF  PRESENT ILLNESS:\nfever. no pain."
            "\nImpression: normal\nnot a header: x\n")
    sections = notes.split_sections(text, pattern)
    self.assertEqual([s for s, _ in sections],
                     ["preamble", "chief complaint", "history of present illness",
                      "impression"])
    self.assertIn("not a header: x", sections[-1][1])
    self.assertEqual(notes.split_sections("just text.", pattern), [("preamble", "just text.")])
    self.assertEqual([s for s, _ in notes.split_sections(text, pattern, keep_preamble=False)],
                     ["chief complaint", "history of present illness", "impression"])

  def test_chunks_respect_max_words(self):
    sentences = notes.split_sentences("a b c. d e. f g h i. j")
    self.assertEqual(sentences, ["a b c.", "d e.", "f g h i.", "j"])
    texts, cut = notes.chunk_sentences(sentences, 5, per_sentence=False)
    self.assertEqual(texts, ["a b c. d e.", "f g h i. j"])
    self.assertEqual(cut, 0)
    texts, cut = notes.chunk_sentences(sentences, 3, per_sentence=True)
    self.assertEqual(texts, ["a b c.", "d e.", "f g h", "j"])
    self.assertEqual(cut, 1)


class StreamingExtractorTest(absltest.TestCase):

  def test_same_as_concept_extractor(self):
    rng = np.random.default_rng(0)
    words = ("the patient has no chest pain fever cough seizures ataxia kidney disease "
             "studies flies bus glass xies denies but was ruled out ; . is absent without "
             "Heart-Failure 2 mg ies dies Cries ties bias axis virus cells 2s ABCs Xs "
             "studies's is us ss ess").split()
    surfaces = [(" ".join(rng.choice(words, int(rng.integers(1, 4)))), f"C{i}")
                for i in range(300)]
    base = extract.ConceptExtractor(surfaces, window=4)
    fast = notes.StreamingExtractor(surfaces, window=4)
    for _ in range(1500):
      text = " ".join(rng.choice(words, int(rng.integers(0, 40))))
      if rng.random() < 0.2:
        text = ". " + text
      self.assertEqual(fast.extract(text), base.extract(text), text)
    # A note's texts in one call: each as when extracted alone.
    for _ in range(200):
      texts = [" ".join(rng.choice(words, int(rng.integers(0, 30))))
               for _ in range(int(rng.integers(1, 6)))]
      self.assertEqual(fast.extract_many(texts), [base.extract(t) for t in texts], texts)


  def test_overlaps_resolved_longest_first_then_leftmost(self):
    surfaces = [("alpha beta", "AB"), ("beta gamma", "BG"), ("gamma delta", "GD"),
                ("beta gamma delta", "BGD"), ("delta", "D"), ("alpha", "A")]
    fast = notes.StreamingExtractor(surfaces)
    # The 3-word phrase wins; "alpha" is left of it, the 2-word ones overlap it.
    self.assertEqual(fast.extract("alpha beta gamma delta").concepts()[0], ["A", "BGD"])
    # Equal lengths chained: the leftmost, then the next that does not overlap it.
    fast = notes.StreamingExtractor(surfaces[:3])
    self.assertEqual([(m.concept_id, m.start, m.end) for m in
                      fast.extract("alpha beta gamma delta").mentions],
                     [("AB", 0, 2), ("GD", 2, 4)])


class NotesImportTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    meta = testing.write_tiny_umls(self.create_tempdir("META").full_path)
    self.dataset = self.create_tempdir("ds").full_path
    umls.build_umls_dataset(meta, self.dataset, dict(heldout_fraction=0.0), progress=False)

  def write(self, kind, rows, text_column="text", id_column="note_id"):
    path = os.path.join(self.create_tempdir().full_path, f"notes.{kind}")
    if kind == "jsonl":
      testing.write_notes_jsonl(path, rows, text_column, id_column)
    else:
      table = pa.table({id_column: [r[0] for r in rows], text_column: [r[1] for r in rows]})
      if kind == "parquet":
        pq.write_table(table, path)
      else:
        import pyarrow.csv as pv
        pv.write_csv(table, path)
    return path

  @parameterized.parameters("jsonl", "parquet", "csv")
  def test_pairs_written_and_loadable(self, kind):
    rows = testing.tiny_notes(30)
    stats = notes.build_pairs(self.dataset, self.write(kind, rows),
                              dict(batch_size=7), progress=False)
    pairs = pq.read_table(os.path.join(self.dataset, "pairs.parquet")).to_pydict()
    self.assertEqual(stats["notes"], 30)
    self.assertGreater(stats["pairs"], 30)
    # One split per note.
    split_of = {}
    for note_id, split in zip(pairs["note_id"], pairs["split"]):
      self.assertEqual(split_of.setdefault(note_id, split), split)
    # rho = words covered / words, recomputed independently for one text.
    i = pairs["text"].index("The patient has fever and cough.")
    self.assertAlmostEqual(pairs["rho"][i], 2 / 6, places=6)
    self.assertEqual(pairs["concept_ids"][i], ["C9000006", "C9000007"])
    # Negation and synonym -> concept mapping.
    j = pairs["text"].index("No fever, but convulsion was noted.")
    self.assertEqual(list(zip(pairs["concept_ids"][j], pairs["negated"][j])),
                     [("C9000006", True), ("C9000009", False)])
    self.assertIn("chief complaint", pairs["label"])
    self.assertIn("definition", pairs["label"])   # from MRDEF
    # "Discharge Condition: stable." has no concept: dropped and counted.
    self.assertGreater(stats["texts_dropped_no_concept"], 0)
    ds = load_dataset(self.dataset, relations=list(umls.FAMILIES) + [])
    self.assertEqual(ds.num_pairs, stats["pairs"])

  def test_empty_notes_counted(self):
    rows = testing.tiny_notes(3) + [("blank", "   "), ("none", "")]
    stats = notes.build_pairs(self.dataset, self.write("jsonl", rows), progress=False)
    self.assertEqual(stats["notes_skipped_empty"], 2)
    self.assertEqual(stats["notes"], 5)

  def test_repeated_note_id(self):
    rows = testing.tiny_notes(3) + [("note001", "Fever.")]
    with self.assertRaisesRegex(DataError, r"notes.jsonl: row 4, field 'note_id': note id "
                                r"'note001' repeated \(first at row 2\)"):
      notes.build_pairs(self.dataset, self.write("jsonl", rows), progress=False)
    self.assertFalse(os.path.exists(os.path.join(self.dataset, "pairs.parquet")))

  @parameterized.parameters("jsonl", "parquet", "csv")
  def test_missing_text_column(self, kind):
    path = self.write(kind, testing.tiny_notes(2), text_column="body")
    with self.assertRaisesRegex(DataError, r"field 'text'"):
      notes.build_pairs(self.dataset, path, progress=False)
    stats = notes.build_pairs(self.dataset, path, dict(text_column="body"), progress=False)
    self.assertEqual(stats["notes"], 2)

  def test_sentence_unit(self):
    stats = notes.build_pairs(self.dataset, self.write("jsonl", testing.tiny_notes(4)),
                              dict(text_unit="sentence", include_definitions=False),
                              progress=False)
    pairs = pq.read_table(os.path.join(self.dataset, "pairs.parquet")).to_pydict()
    self.assertTrue(all(t.count(".") <= 1 for t in pairs["text"]), pairs["text"])
    self.assertEqual(stats["pairs"], len(pairs["text"]))


if __name__ == "__main__":
  absltest.main()
