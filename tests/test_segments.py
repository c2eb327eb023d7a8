"""line_jax.util.segments and segment-wise retrieval ranks against written-out references."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from line_jax.util import segments
from line_jax.search import terms


class SplitTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("clauses", "Short stature, kyphosis, and scoliosis.",
       ["Short stature, kyphosis, and scoliosis.", "Short stature", "kyphosis",
        "scoliosis."]),
      ("sentences_and_brackets", "Seizures (focal).Hypotonia; or ataxia\nnone",
       ["Seizures (focal).Hypotonia; or ataxia\nnone", "Seizures", "focal", "Hypotonia",
        "ataxia", "none"]),
      ("words_inside_other_words_stay", "Sandhoff disease", ["Sandhoff disease"]),
      ("repeats_and_empty_pieces_dropped", "fever, fever, ; ,", ["fever, fever, ; ,",
                                                                 "fever"]))
  def test_split(self, text, want):
    self.assertEqual(segments.split_segments(text), want)

  def test_empty_pattern_is_the_whole_text(self):
    self.assertEqual(segments.split_segments("  a, b ", ""), ["a, b"])

  def test_table_owner(self):
    pieces, owner = segments.segment_table(["a, b", "c", "d and e"])
    self.assertEqual(pieces, ["a, b", "a", "b", "c", "d and e", "d", "e"])
    np.testing.assert_array_equal(owner, [0, 0, 0, 1, 2, 2, 2])

  def test_clause_table_leaves_the_whole_texts_out(self):
    pieces, owner = segments.clause_table(["a, b", "c", "d and e"])
    self.assertEqual(pieces, ["a", "b", "d", "e"])
    np.testing.assert_array_equal(owner, [0, 0, 2, 2])
    for texts in ([], ["x"]):                  # no text, or no clause
      pieces, owner = segments.clause_table(texts)
      self.assertEqual((pieces, owner.shape), ([], (0,)))

  def test_not_a_string(self):
    with self.assertRaisesRegex(TypeError, "takes a string, not a list"):
      segments.split_segments(["a"])


class SegmentRanksTest(absltest.TestCase):

  def test_best_segment_against_a_numpy_reference(self):
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((30, 5)).astype(np.float32)
    groups = terms.Groups.from_ids([f"e{i}" for i in range(30)],
                                   [f"t{i // 3}" for i in range(30)])   # 10 terms of 3
    pieces = rng.standard_normal((9, 5)).astype(np.float32)
    text_owner = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3])
    owner = np.array([0, 0, 1, 2, 3, 3])
    target = np.array([1, 7, 2, 9, 0, 4])
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    cos = unit(pieces) @ unit(keys).T                              # [9, 30]
    want = []
    for o, t in zip(owner, target):
      best_entry = cos[text_owner == o].max(0)                     # best segment per entry
      best_term = np.array([best_entry[3 * g:3 * g + 3].max() for g in range(10)])
      want.append(1 + int((best_term > best_term[t]).sum()))
    for chunk in (1, 2, 256):
      got = terms.retrieval_ranks(pieces, keys, owner, target, groups, chunk,
                                  text_owner=text_owner)
      np.testing.assert_array_equal(got, want)
    # One segment per text is the plain protocol.
    np.testing.assert_array_equal(
        terms.retrieval_ranks(pieces[:4], keys, [0, 3], [1, 2], groups, 2,
                              text_owner=np.arange(4)),
        terms.retrieval_ranks(pieces[:4], keys, [0, 3], [1, 2], groups, 2))

  def test_bad_owner_is_refused(self):
    x = np.ones((3, 2), np.float32)
    for owner in ([0, 2, 2], [1, 1, 2], [0, 1], [1, 0, 0]):
      with self.assertRaisesRegex(ValueError, "text_owner"):
        terms.retrieval_ranks(x, x, [0], [0], None, 4, text_owner=np.array(owner))


if __name__ == "__main__":
  absltest.main()
