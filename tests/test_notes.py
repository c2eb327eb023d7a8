"""Tests of the notes import: segmentation, extraction (same results as ConceptExtractor),
splits by note, formats, and bad input."""

import os
import re

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
from line_jax.data.notes import build
from line_jax.data.notes import token_match
from line_jax.data.notes import tokens


class SegmentationTest(absltest.TestCase):

  def test_sections_and_preamble(self):
    pattern = notes.header_pattern(notes.notes_settings().section_headers)
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

  def test_sections_as_the_line_start_pattern_finds_them(self):
    pattern = notes.header_pattern(notes.notes_settings().section_headers)
    def reference(text):   # split_sections with the pattern as header_pattern writes it
      matches = list(pattern.finditer(text))
      if not matches:
        return [(notes.PREAMBLE, text)] if text.strip() else []
      out = [(notes.PREAMBLE, text[:matches[0].start()])]
      for k, m in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(text)
        out.append((re.sub(r"\s+", " ", m.group(1).lower()), text[m.end():end]))
      return [(s, b) for s, b in out if b.strip()]
    rng = np.random.default_rng(2)
    alphabet = ["Impression", "IMPRESSION:", "Findings", ":", " ", "\t", "\n", "\r\n", "x",
                "history of", "\n present  illness", "\nchief complaint :", "a."]
    for _ in range(2000):
      text = "".join(rng.choice(alphabet, int(rng.integers(0, 25))))
      self.assertEqual(notes.split_sections(text, pattern), reference(text), repr(text))
    # Another pattern is used as it is.
    other = re.compile(r"(?m)^(\w+):")
    self.assertEqual(notes.split_sections("a\nb: c", other), [("preamble", "a\n"), ("b", " c")])

  def test_chunks_respect_max_words(self):
    sentences = notes.split_sentences("a b c. d e. f g h i. j")
    self.assertEqual(sentences, ["a b c.", "d e.", "f g h i.", "j"])
    texts, cut = notes.chunk_sentences(sentences, 5, per_sentence=False)
    self.assertEqual(texts, ["a b c. d e.", "f g h i. j"])
    self.assertEqual(cut, 0)
    texts, cut = notes.chunk_sentences(sentences, 3, per_sentence=True)
    self.assertEqual(texts, ["a b c.", "d e.", "f g h", "j"])
    self.assertEqual(cut, 1)


  def test_sentences_as_one_look_behind_pattern_splits_them(self):
    def reference(text):
      parts = re.split(r"(?<=[.!?;])\s+|\n\s*\n", text)
      return [" ".join(p.split()) for p in parts if p.strip()]
    rng = np.random.default_rng(0)
    alphabet = list("ab.!?;:, \n\t") + ["\xa0", "\u2028", "\r\n", "\n\n", ". "]
    for _ in range(3000):
      text = "".join(rng.choice(alphabet, int(rng.integers(0, 30))))
      self.assertEqual(notes.split_sentences(text), reference(text), repr(text))

  def test_note_texts_are_chunked_sentences(self):
    config = notes.notes_settings()
    pattern = notes.header_pattern(config.section_headers)
    rng = np.random.default_rng(1)
    alphabet = ["fever", "a", "b.", "c;", " ", " ", "  ", "\n", "\n\n", "\nImpression: ",
                "\nFindings:", "?", "\t"]
    for _ in range(500):
      text = "".join(rng.choice(alphabet, int(rng.integers(0, 60))))
      config.max_words = int(rng.integers(1, 8))
      config.text_unit = str(rng.choice(["section", "sentence"]))
      expected, cut = [], 0
      for section, body in notes.split_sections(text, pattern):
        texts, c = notes.chunk_sentences(notes.split_sentences(body), config.max_words,
                                         config.text_unit == "sentence")
        expected += [(section, t) for t in texts]
        cut += c
      self.assertEqual(notes.note_texts(text, pattern, config), (expected, cut), repr(text))


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
    # Any iterable of texts, a generator too.
    self.assertEqual(fast.extract_many(t for t in texts), [base.extract(t) for t in texts])
    self.assertEqual(fast.concepts_many(t for t in texts), fast.concepts_many(texts))


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


def _messy_text(rng, words) -> str:
  """Words in random case with punctuation, sentence ends, odd spaces and non-ASCII."""
  seps = (" ", " ", " ", "  ", ", ", ". ", "! ", "? ", "; ", "\n", "\n\n", ".", "-", "/",
          " . ", ";\t", "'s ", " \u00e9 ", " \u0130 ", " \u212a", "\u00a0", ".\u00a0", ".\n",
          ".\x00", "\x00", "\x01", "!\u2028", "?\u3000", ".\u00e9", ".\ud800", "\udc80",
          ".\U0001f600", "\x1c", ".;", ";", ";\u00e9", "!;\u00a0")
  out = []
  for _ in range(int(rng.integers(0, 40))):
    word = str(rng.choice(words))
    case = rng.random()
    word = word.upper() if case < 0.1 else word.title() if case < 0.2 else word
    out.append(word + seps[int(rng.integers(len(seps)))])   # (numpy drops trailing NULs)
  return "".join(out)


class MessyTextTest(parameterized.TestCase):
  """The token-id extractor against the per-text base extractor on text with the edge
  cases the tokeniser must get right: case, punctuation, sentence ends of every kind,
  empty texts, non-ASCII letters that lower-case to ASCII ones, triggers next to a
  sentence end."""

  WORDS = ("no not pain chest fever cough seizures seizure studies study Cries ties bias "
           "axis ruled out was is absent but however without denies kidney disease "
           "failure heart k i 2 2s mg x abcdefghijkl abcdefghijklm abcdefghijkls "
           "abcdefghijkies abcdefghijklies cardiomyopathies electroencephalograms "
           "123456789012345 ABCs").split()

  @parameterized.product(window=(0, 2), fold_plurals=(True, False))
  def test_same_as_concept_extractor(self, window, fold_plurals):
    rng = np.random.default_rng(window * 2 + fold_plurals)
    surfaces = [(" ".join(rng.choice(self.WORDS, int(rng.integers(1, 5)))), f"C{i}")
                for i in range(200)]
    surfaces += [("ruled out pain", "RP"), ("no pain", "NP"), ("heart failure", "HF")]
    base = extract.ConceptExtractor(surfaces, window=window, fold_plurals=fold_plurals)
    fast = notes.StreamingExtractor(surfaces, window=window, fold_plurals=fold_plurals)
    negated = 0
    for _ in range(100):
      texts = [_messy_text(rng, self.WORDS) for _ in range(int(rng.integers(1, 8)))]
      texts += ["", " . ", "!?"][:int(rng.integers(0, 4))]
      expected = [base.extract(t) for t in texts]
      self.assertEqual(fast.extract_many(texts), expected, texts)
      self.assertEqual([(list(c.concept_ids), list(c.negated), c.num_words, c.rho)
                        for c in fast.concepts_many(texts)],
                       [(*e.concepts(), e.num_words, e.rho) for e in expected], texts)
      negated += sum(m.negated for e in expected for m in e.mentions)
    self.assertGreater(negated, 10)   # the negation rules were exercised

  def test_trigger_before_a_sentence_end_negates_nothing_after_it(self):
    fast = notes.StreamingExtractor([("fever", "F"), ("cough", "C")])
    self.assertEqual(fast.extract("Fever denies. Cough").concepts(), (["F", "C"],
                                                                      [False, False]))
    self.assertEqual(fast.extract("Denies fever; cough was ruled out").concepts(),
                     (["F", "C"], [True, True]))
    self.assertEqual(fast.extract_many(["no", "fever"])[1].concepts(), (["F"], [False]))

  def test_no_text_and_no_word(self):
    fast = notes.StreamingExtractor([("fever", "F")])
    self.assertEqual(fast.extract_many([]), [])
    self.assertEqual(fast.extract_many(["", "...", " "]), [extract.Extraction((), 0, 0)] * 3)


class TokenizerTest(absltest.TestCase):

  def test_words_of_twelve_characters_are_their_own_numbers(self):
    self.assertLess(37 ** tokens._EXACT_CHARS, 2 ** 64)
    self.assertGreaterEqual(37 ** (tokens._EXACT_CHARS + 1), 2 ** 64)

  def test_a_text_longer_than_the_first_powers(self):
    surfaces = [("fever", "F"), ("cardiomyopathies of the heart", "C"), ("no", "N")]
    base, fast = extract.ConceptExtractor(surfaces), notes.StreamingExtractor(surfaces)
    rng = np.random.default_rng(3)
    words = ["fever", "cardiomyopathy", "of", "the", "hearts.", "no", "x" * 40, "Fevers"]
    text = " ".join(rng.choice(words, 40000))   # over 2**16 bytes, then twice as many
    self.assertGreater(len(text), 1 << 17)
    self.assertEqual(fast.extract_many([text, text[:70000]]),
                     [base.extract(text), base.extract(text[:70000])])


class TokenPhrasesTest(absltest.TestCase):

  @staticmethod
  def brute_force(phrases, ids, sentence):
    """Every (start, length, phrase index) by trying each phrase at each token."""
    out = set()
    for i in range(len(ids)):
      for k, p in enumerate(phrases):
        window = ids[i:i + len(p)]
        if (len(window) == len(p) and list(window) == list(p)
            and sentence[i] == sentence[i + len(p) - 1]):
          out.add((i, len(p), k))
    return out

  def check(self, phrases, ids, sentence, vocab_size):
    matcher = token_match.TokenPhrases(phrases, vocab_size)
    start, size, phrase = matcher.hits(np.asarray(ids, np.int64),
                                       np.asarray(sentence, np.int64))
    self.assertEqual(set(zip(start.tolist(), size.tolist(), phrase.tolist())),
                     self.brute_force(phrases, ids, sentence))

  def test_same_as_brute_force(self):
    rng = np.random.default_rng(0)
    for _ in range(50):
      phrases = {tuple(rng.integers(1, 6, int(rng.integers(1, 7))).tolist())
                 for _ in range(int(rng.integers(1, 40)))}
      ids = rng.integers(0, 6, int(rng.integers(0, 60)))
      sentence = np.cumsum(rng.random(len(ids)) < 0.1)
      self.check(sorted(phrases), ids, sentence, 6)

  def test_a_hash_collision_gives_no_hit(self):
    # With multiplier 1 a hash is the sum of the ids: (1, 2) and (2, 1) collide.
    with absltest.mock.patch.object(token_match, "_MULTIPLIERS", (1,)):
      self.check([(1, 2)], [2, 1, 1, 2], [0, 0, 0, 0], 3)

  def test_colliding_phrases_take_another_multiplier(self):
    with absltest.mock.patch.object(token_match, "_MULTIPLIERS", (1, 3)):
      self.check([(1, 2), (2, 1)], [2, 1, 1, 2, 1], [0, 0, 0, 0, 0], 3)
    with absltest.mock.patch.object(token_match, "_MULTIPLIERS", (1,)):
      with self.assertRaisesRegex(ValueError, "hash collisions"):
        token_match.TokenPhrases([(1, 2), (2, 1)], 3)

  def test_resolve_is_the_greedy_choice(self):
    rng = np.random.default_rng(1)
    for _ in range(300):
      n = int(rng.integers(1, 30))
      start = rng.integers(0, n, int(rng.integers(0, 20)))
      size = np.minimum(rng.integers(1, 5, len(start)), n - start)
      pairs = sorted(set(zip(start.tolist(), size.tolist())))
      start = np.array([p[0] for p in pairs], np.int64)
      size = np.array([p[1] for p in pairs], np.int64)
      taken, expected = set(), []
      for k in sorted(range(len(pairs)), key=lambda k: (-size[k], start[k])):
        span = set(range(start[k], start[k] + size[k]))
        if not taken & span:
          taken |= span
          expected.append(k)
      chosen = token_match.resolve(start, size, n)
      self.assertEqual(chosen.tolist(), sorted(expected, key=lambda k: start[k]))


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

  def test_max_words_below_one(self):
    for bad in (0, -1):
      with self.assertRaisesRegex(ValueError, r"'max_words': %d; a text needs at least one "
                                  "word" % bad):
        notes.build_pairs(self.dataset, self.write("jsonl", testing.tiny_notes(2)),
                          dict(max_words=bad), progress=False)
    self.assertFalse(os.path.exists(os.path.join(self.dataset, "pairs.parquet")))

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

  def test_too_short(self):
    for text in ("", " ", "\n\t", "a", " a ", "a b", "a\u00a0b", "\u2028"):
      for min_words in (-1, 0, 1, 2, 3):
        self.assertEqual(build._too_short(text, min_words),
                         len(text.split()) < min_words, (text, min_words))

  def test_sentence_unit(self):
    stats = notes.build_pairs(self.dataset, self.write("jsonl", testing.tiny_notes(4)),
                              dict(text_unit="sentence", include_definitions=False),
                              progress=False)
    pairs = pq.read_table(os.path.join(self.dataset, "pairs.parquet")).to_pydict()
    self.assertTrue(all(t.count(".") <= 1 for t in pairs["text"]), pairs["text"])
    self.assertEqual(stats["pairs"], len(pairs["text"]))


if __name__ == "__main__":
  absltest.main()
