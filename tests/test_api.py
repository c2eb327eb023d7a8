"""LineModel on a tiny trained synthetic run: proxies, retrieval, edge cases, new strings."""

import os
import subprocess
import sys
import tempfile

from absl.testing import absltest, parameterized
import jax
import numpy as np

from configs import test as test_config
from line_jax.util import segments
from line_jax.search import terms
from line_jax.training import loop as loop_lib
from line_jax.eval import spaces
from line_jax.api.line_model import LineModel, TeacherUnavailableError
from line_jax.data.dataset import DataError
from line_jax.teachers import testing as teacher_testing


def train_tiny_run(root: str, seed: int = 0, workdir_name: str = "run",
                   text_vectors: str = "sentence"):
  """Trains the synthetic test config briefly (2 + 1 epochs); returns (config, workdir).
  `text_vectors` "segments": many vectors per text, with the per-concept term on."""
  config = test_config.get_config()
  config.data.dir = os.path.join(root, "data")
  config.train.seed = seed
  config.model.text_vectors = text_vectors
  if text_vectors == "segments":
    config.loss.concept_weight = 0.3
  config.train.stage1_epochs = 2
  config.train.stage2_epochs = 1
  workdir = os.path.join(root, workdir_name)
  loop_lib.train(config, workdir)
  return config, workdir


_SHARED_RUN = {}


def shared_tiny_run():
  """One tiny run for every test class of this file: (config, workdir)."""
  if not _SHARED_RUN:
    _SHARED_RUN["run"] = train_tiny_run(tempfile.mkdtemp())
  return _SHARED_RUN["run"]


def pair_lists(dataset, pair_idx):
  """(concept-id lists, negated lists) of dataset pairs."""
  ids, negs = [], []
  for i in pair_idx:
    rows, neg = dataset.pair_concepts(int(i))
    ids.append([str(dataset.concept_ids[j]) for j in rows])
    negs.append(neg.tolist())
  return ids, negs


class LoadConfigTest(absltest.TestCase):

  def test_fields_added_after_a_run_get_their_defaults(self):
    import json
    from line_jax.api import line_model as api
    from line_jax import config as config_lib
    saved = json.loads(test_config.get_config().to_json())
    del saved["graph"]["edge_block"]           # a run saved before the field existed
    saved["train"]["batch_size"] = 24
    workdir = self.create_tempdir().full_path
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(saved, f)
    config = api.load_config(workdir)
    self.assertEqual(config.graph.edge_block, config_lib.base_config().graph.edge_block)
    self.assertEqual(config.train.batch_size, 24)
    self.assertEqual(config.data.builder, "synthetic")
    self.assertEqual(config.teacher1.dim, 32)
    with self.assertRaisesRegex(FileNotFoundError, "config.json: not found"):
      api.load_config(os.path.join(workdir, "missing"))


class ScheduleRestoreTest(absltest.TestCase):

  def test_loads_under_a_config_of_the_other_schedule(self):
    """The optimiser's state tree follows the run's own train.lr_schedule (a constant rate
    and a schedule differ), whatever the config given to load says."""
    config, workdir = shared_tiny_run()
    self.assertEqual(config.train.lr_schedule, "constant")
    other = config.copy_and_resolve_references()
    other.train.lr_schedule = "cosine"
    loaded = LineModel.load(workdir, other)
    plain = LineModel.load(workdir)
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(plain.params)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


class LineModelTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.config, cls.workdir = shared_tiny_run()
    cls.model = LineModel.load(cls.workdir)
    cls.test_idx = cls.model.dataset.split_indices("test")[:40]

  def test_lazy_export_keeps_import_light(self):
    code = ("import sys, line_jax; assert 'jax' not in sys.modules; "
            "assert line_jax.LineModel.__name__ == 'LineModel'; assert 'jax' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))))

  def test_proxies_equal_evaluation_line_space(self):
    ds = self.model.dataset
    ids, negs = pair_lists(ds, self.test_idx)
    self.assertTrue(any(any(n) for n in negs))   # the negated path is exercised
    proxies = self.model.embed_concepts(ids, negated=negs)
    reference = spaces.line_space("line", self.model, 64).proxies(ds, self.test_idx)
    np.testing.assert_allclose(proxies, reference, atol=1e-5)

  def test_negation_changes_the_proxy(self):
    cid = str(self.model.dataset.concept_ids[self.model.dataset.concept_flat[0]])
    plain, negated = self.model.embed_concepts([[cid], [cid]], negated=[[False], [True]])
    self.assertGreater(np.linalg.norm(plain - negated), 1e-3)
    np.testing.assert_allclose(plain, self.model.dictionary()[
        self.model.concept_rows([cid])[0]], atol=1e-6)

  def test_cross_form_retrieval_beats_chance(self):
    ds = self.model.dataset
    ids, negs = pair_lists(ds, self.test_idx)
    proxies = self.model.embed_concepts(ids, negated=negs)
    texts = self.model.dataset_texts(self.test_idx)
    from line_jax.api.line_model import cosine_top_k
    _, top = cosine_top_k(proxies, texts, 5)
    hit_rate = np.mean([i in row for i, row in enumerate(top)])
    self.assertGreater(hit_rate, 3 * 5 / len(self.test_idx))

  def test_top_concepts_are_sorted_dictionary_entries(self):
    hits = self.model.top_concepts(self.model.dataset_texts(self.test_idx[:3]), k=4)
    self.assertLen(hits, 3)
    for row in hits:
      self.assertLen(row, 4)
      scores = [s for _, _, s in row]
      self.assertEqual(scores, sorted(scores, reverse=True))
      for cid, name, _ in row:
        j = self.model.concept_rows([cid])[0]
        self.assertEqual(self.model.dataset.names[j], name)

  @parameterized.named_parameters(
      ("unknown_id", [["C000001", "NOT-A-CONCEPT"]], None, DataError, "NOT-A-CONCEPT"),
      ("empty_list", [["C000001"], []], None, DataError, "list 1 is empty"),
      ("negated_length", [["C000001", "C000002"]], [[True]], DataError, "1 entries for 2"),
      ("string_not_list", ["C000001"], None, TypeError, "list of ids"),
  )
  def test_concept_errors(self, lists, negated, error, message):
    with self.assertRaisesRegex(error, message):
      self.model.embed_concepts(lists, negated=negated)

  def test_empty_inputs_give_empty_arrays(self):
    self.assertEqual(self.model.embed_concepts([]).shape, (0, self.model.dim))

  def test_synthetic_teacher_cannot_embed_strings(self):
    with self.assertRaisesRegex(TeacherUnavailableError, "cannot embed new strings"):
      self.model.embed_texts(["chest pain"])
    with self.assertRaisesRegex(TeacherUnavailableError, "synthetic"):
      self.model.nearest_concepts("chest pain", k=3)

  def test_k_out_of_range(self):
    with self.assertRaisesRegex(ValueError, "k=0"):
      self.model.top_concepts(self.model.dataset_texts([0]), k=0)


class HfTextTeacherTest(absltest.TestCase):
  """New strings through a tiny random BERT as teacher 1 (same width as the synthetic one,
  swapped in after loading: F's weights apply, which is all these behaviours need)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    _, workdir = shared_tiny_run()
    cls.model = LineModel.load(workdir)
    bert_dir = teacher_testing.write_tiny_bert(os.path.join(cls.root, "bert"), hidden_size=32)
    cls.model.config.teacher1.update(kind="hf", model=bert_dir, preset="", pooling="mean",
                                     max_length=12, dim=32, batch_size=8)

  def test_overlong_texts_are_truncated(self):
    short = "the patient has severe chest pain and fever"
    longer = short + " with chronic cough of the left lung and mild ataxia"
    self.assertEqual(self.model.overlong_texts([short, longer]).tolist(), [1])
    limit = self.model.text_encoder().tokenize([longer])[0]
    truncated = self.model.text_encoder().tokenizer.decode(limit[1:-1])
    vectors = self.model.embed_texts([longer, truncated, short])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-5)
    self.assertGreater(np.abs(vectors[0] - vectors[2]).max(), 1e-4)
    with self.assertRaisesRegex(ValueError, "text 1 .*max_length=12"):
      self.model.embed_texts([short, longer], overlong="error")

  def test_embed_texts_is_f_of_the_encoder(self):
    texts = ["fever", "no cough", ""]
    expected = self.model.project_texts(self.model.text_encoder().encode(texts))
    np.testing.assert_allclose(self.model.embed_texts(texts), expected, atol=1e-6)
    self.assertEqual(self.model.embed_texts([]).shape, (0, self.model.dim))
    fever, cough = self.model.embed_texts(["fever", "cough"])   # one token each
    self.assertGreater(np.abs(fever - cough).max(), 1e-3)
    with self.assertRaisesRegex(TypeError, "single string"):
      self.model.embed_texts("fever")

  def test_nearest_concepts(self):
    hits = self.model.nearest_concepts("severe chest pain", k=3)
    self.assertLen(hits, 3)
    self.assertTrue(all(h[0] in set(self.model.dataset.concept_ids) for h in hits))

  def test_missing_concepts_are_what_unexplained_clauses_name(self):
    model = self.model
    text = "severe chest pain, fever and no cough"
    clauses = segments.split_segments(text)[1:]
    groups = terms.dataset_groups(model.dataset)
    ids = [str(c) for c in model.dataset.concept_ids]
    rep = lambda cid: ids[groups.representative[groups.group_of[ids.index(cid)]]]  # noqa
    nearest = [model.nearest_concepts(c, k=1)[0] for c in clauses]
    got = model.missing_concepts(text, [], k=10)
    # An empty list explains nothing: every clause proposes its nearest term, best first.
    want = {}
    for clause, (cid, _, score) in zip(clauses, nearest):
      if rep(cid) not in want or score > want[rep(cid)][0]:
        want[rep(cid)] = (score, clause)
    self.assertEqual([g[0] for g in got], sorted(want, key=lambda c: -want[c][0]))
    for cid, _, score, clause in got:
      self.assertAlmostEqual(score, want[cid][0], places=5)
      self.assertEqual(clause, want[cid][1])
    self.assertLen(model.missing_concepts(text, [], k=1), 1)
    # Listing each clause's nearest concept explains every clause.
    self.assertEqual(model.missing_concepts(text, [n[0] for n in nearest]), [])
    with self.assertRaisesRegex(DataError, "'nope' \\(position 0\\)"):
      model.missing_concepts(text, ["nope"])
    self.assertEqual(model.missing_concepts("fever", []), [])      # no clause

  def test_nearest_concepts_by_segment_is_the_best_segment(self):
    text = "severe chest pain, fever and no cough"
    pieces = segments.split_segments(text)
    self.assertLen(pieces, 4)
    q = self.model.embed_texts(pieces)
    keys = self.model.dictionary()
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (
        keys / np.linalg.norm(keys, axis=1, keepdims=True)).T
    best = cos.max(0)
    want = np.argsort(-best, kind="stable")[:5]
    hits = self.model.nearest_concepts(text, k=5, segments=True)
    self.assertEqual([h[0] for h in hits], [str(self.model.dataset.concept_ids[j])
                                            for j in want])
    np.testing.assert_allclose([h[2] for h in hits], best[want], atol=1e-5)
    # Without a pattern it is the whole text alone.
    self.model.config.eval.segment_pattern = ""
    try:
      self.assertEqual([h[0] for h in self.model.nearest_concepts(text, 5, segments=True)],
                       [h[0] for h in self.model.nearest_concepts(text, 5)])
    finally:
      self.model.config.eval.segment_pattern = segments.DEFAULT_PATTERN


class SegmentsRunTest(absltest.TestCase):
  """A run trained with many vectors per text (model.text_vectors="segments")."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    _, workdir = train_tiny_run(cls.root, text_vectors="segments")
    cls.model = LineModel.load(workdir)
    cls.sentence_model = LineModel.load(shared_tiny_run()[1])

  def test_says_which_kind_of_run_it_is(self):
    self.assertEqual(self.model.text_vectors, "segments")
    self.assertEqual(self.sentence_model.text_vectors, "sentence")

  def test_dataset_segments_are_f_of_the_text_and_its_cached_clauses(self):
    model = self.model
    pairs = np.array([5, 0, 7])
    vectors, owner = model.dataset_segments(pairs)
    texts = [str(model.dataset.texts[i]) for i in pairs]
    pieces, want_owner = segments.segment_table(texts, model.segment_pattern)
    np.testing.assert_array_equal(owner, want_owner)
    whole = np.searchsorted(owner, np.arange(3))
    np.testing.assert_allclose(vectors[whole], model.dataset_texts(pairs), atol=1e-6)
    self.assertGreater(len(vectors), 3)        # "patient with a, b and c": clauses too

  def test_nearest_concepts_scores_by_segment_by_default(self):
    bert_dir = teacher_testing.write_tiny_bert(os.path.join(self.root, "bert"),
                                               hidden_size=32)
    text = "severe chest pain, fever and no cough"
    for model, default in ((self.model, True), (self.sentence_model, False)):
      model.config.teacher1.update(kind="hf", model=bert_dir, preset="", pooling="mean",
                                   max_length=12, dim=32, batch_size=8)
      self.assertEqual(model.nearest_concepts(text, k=5),
                       model.nearest_concepts(text, k=5, segments=default))
      vecs = model.embed_segments([text, "fever"])
      self.assertEqual([len(v) for v in vecs], [4, 1])
      np.testing.assert_allclose(vecs[0][0], model.embed_texts([text])[0], atol=1e-6)
    self.assertNotEqual(self.model.nearest_concepts(text, k=5),
                        self.model.nearest_concepts(text, k=5, segments=False))


if __name__ == "__main__":
  absltest.main()
