"""Tests of the dictionary matcher, negation detection and rho (line_jax.data.extract)."""

from absl.testing import absltest
from absl.testing import parameterized

from line_jax.data import extract

DICTIONARY = (
    ("Fever", "FEVER"),
    ("Seizure", "SEIZURE"),
    ("Generalized seizure", "GEN_SEIZURE"),
    ("Headache", "HEADACHE"),
    ("Cough", "COUGH"),
    ("Absence of the thumb", "ABSENT_THUMB"),
    ("Abnormality of the kidney", "KIDNEY_ABN"),
    ("Kidney", "KIDNEY"),
    ("Cafe-au-lait spot", "CALS"),
)


def polarities(extractor, text):
  ids, negated = extractor.extract(text).concepts()
  return dict(zip(ids, negated))


class NegationTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.extractor = extract.ConceptExtractor(DICTIONARY)

  @parameterized.parameters(
      "no seizures", "No seizure.", "denies headache", "She denies fever and headache",
      "without fever", "negative for cough", "absence of fever", "not febrile or fever",
      "free of seizures", "ruled out seizure", "seizure was ruled out", "fever is absent",
      "Seizures were not observed.", "There is no evidence of fever.",
      "Cough was not present.")
  def test_negated(self, text):
    found = polarities(self.extractor, text)
    self.assertTrue(found, text)
    self.assertTrue(all(found.values()), (text, found))

  @parameterized.parameters(
      "fever", "The patient has seizures.", "Fever was present", "no increase in seizures",
      "Seizure cannot be ruled out.", "seizures were not ruled out")
  def test_positive(self, text):
    found = polarities(self.extractor, text)
    self.assertTrue(found, text)
    self.assertFalse(any(found.values()), (text, found))

  @parameterized.parameters(
      ("no fever but seizures", {"FEVER": True, "SEIZURE": False}),
      ("No fever, however cough.", {"FEVER": True, "COUGH": False}),
      ("Denies headache although fever is reported", {"HEADACHE": True, "FEVER": False}),
      ("No fever. Seizures.", {"FEVER": True, "SEIZURE": False}),
      ("No fever; cough", {"FEVER": True, "COUGH": False}),
      ("No fever, headache or cough.", {"FEVER": True, "HEADACHE": True, "COUGH": True}),
      ("Fever, but seizure was ruled out", {"FEVER": False, "SEIZURE": True}),
      ("no cough except fever", {"COUGH": True, "FEVER": False}),
      # Sentences joined by a semicolon without a space still end there.
      ("No fever.;Cough", {"FEVER": True, "COUGH": False}),
      ("No fever;cough", {"FEVER": True, "COUGH": False}),
      # A full stop before a letter does not end one (abbreviations).
      ("no fever.Cough", {"FEVER": True, "COUGH": True}),
  )
  def test_scope(self, text, expected):
    self.assertEqual(polarities(self.extractor, text), expected)

  def test_trigger_inside_a_concept_is_part_of_the_concept(self):
    self.assertEqual(polarities(self.extractor, "Absence of the thumb."),
                     {"ABSENT_THUMB": False})

  def test_window_limits_the_scope(self):
    windowed = extract.ConceptExtractor(DICTIONARY, window=2)
    self.assertEqual(polarities(windowed, "no known recent history of fever"),
                     {"FEVER": False})
    self.assertEqual(polarities(windowed, "no recent fever"), {"FEVER": True})
    self.assertEqual(polarities(self.extractor, "no known recent history of fever"),
                     {"FEVER": True})


class MatchingTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.extractor = extract.ConceptExtractor(DICTIONARY)

  def test_longest_match_wins(self):
    self.assertEqual(polarities(self.extractor, "a generalized seizure"),
                     {"GEN_SEIZURE": False})
    self.assertEqual(polarities(self.extractor, "abnormality of the kidney"),
                     {"KIDNEY_ABN": False})
    self.assertEqual(polarities(self.extractor, "the kidney"), {"KIDNEY": False})

  @parameterized.parameters("GENERALIZED SEIZURES!", "Generalized-seizure", "generalized, seizure",
                            "(generalized) seizure.")
  def test_case_and_punctuation_insensitive(self, text):
    self.assertEqual(polarities(self.extractor, text), {"GEN_SEIZURE": False})

  def test_hyphenated_surface(self):
    self.assertEqual(polarities(self.extractor, "two cafe au lait spots"), {"CALS": False})

  def test_whole_words_only(self):
    self.assertEqual(polarities(self.extractor, "feverish coughing"), {})

  def test_abbreviation_with_a_full_stop_is_matched(self):
    extractor = extract.ConceptExtractor([("E coli infection", "ECOLI")])
    self.assertEqual(polarities(extractor, "History of E.Coli infection."), {"ECOLI": False})

  def test_no_match_across_a_sentence_end(self):
    self.assertEqual(polarities(self.extractor, "Generalized. Seizure"), {"SEIZURE": False})

  def test_first_listed_concept_wins_a_shared_surface(self):
    extractor = extract.ConceptExtractor([("Fits", "A"), ("fits", "B")])
    self.assertEqual(polarities(extractor, "fits"), {"A": False})
    self.assertEqual(extractor.num_ambiguous_surfaces, 1)

  def test_short_and_stop_surfaces_are_not_matched(self):
    extractor = extract.ConceptExtractor([("MR", "A"), ("All", "B"), ("Fever", "C")],
                                         min_chars=3, stop_phrases=("All",))
    self.assertEqual(polarities(extractor, "MR in all with fever"), {"C": False})
    self.assertEqual((extractor.num_too_short, extractor.num_stopped), (1, 1))

  def test_plural_fold(self):
    self.assertEqual(extract.fold_plural("abnormalities"), "abnormality")
    self.assertEqual(extract.fold_plural("cysts"), "cyst")
    self.assertEqual(extract.fold_plural("stenosis"), "stenosis")
    self.assertEqual(extract.fold_plural("class"), "class")


class RhoTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.extractor = extract.ConceptExtractor(DICTIONARY)

  @parameterized.parameters(
      ("no fever but seizures", 2, 4),                    # fever, seizures / 4 words
      ("Generalized seizure.", 2, 2),
      ("The child had a generalized seizure and fever.", 3, 8),
      ("Abnormality of the kidney; no cough", 5, 6),
      ("nothing here", 0, 2),
      ("fever fever", 2, 2),                              # each occurrence covers its word
  )
  def test_rho(self, text, covered, words):
    extraction = self.extractor.extract(text)
    self.assertEqual((extraction.covered_words, extraction.num_words), (covered, words))
    self.assertAlmostEqual(extraction.rho, covered / words)

  def test_concepts_deduplicated_by_polarity_in_order(self):
    ids, negated = self.extractor.extract("Fever. No fever. Cough and fever.").concepts()
    self.assertEqual(ids, ["FEVER", "FEVER", "COUGH"])
    self.assertEqual(negated, [False, True, False])

  def test_empty_text(self):
    extraction = self.extractor.extract("")
    self.assertEqual((extraction.num_words, extraction.rho, extraction.mentions), (0, 0.0, ()))


class PrecisionRecallTest(absltest.TestCase):

  def test_wrong_polarity_is_a_false_positive_and_a_false_negative(self):
    result = extract.micro_precision_recall(
        [[("a", False), ("b", True)], [("c", False)]],
        [[("a", False), ("b", False)], [("c", False), ("d", True)]])
    self.assertEqual((result["true_positives"], result["false_positives"],
                      result["false_negatives"]), (2, 1, 2))
    self.assertAlmostEqual(result["precision"], 2 / 3)
    self.assertAlmostEqual(result["recall"], 2 / 4)


if __name__ == "__main__":
  absltest.main()
