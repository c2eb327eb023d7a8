"""Tests of the token-level NER protocol (Table 3) and BERT token states.

The end-to-end case runs on BIO tags derived from SYNTHETIC HPO vignettes (a slice of the
release): the HPO builder stores no mention spans, so the spans come from re-running the
dictionary extractor on the vignette texts.
"""

import json
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import ml_collections
import numpy as np
import pytest

from line_jax import config as config_lib
from line_jax.config import teacher_config
from line_jax.data import hpo
from line_jax.data import obo
from line_jax.data.dataset import DataError
from line_jax.eval.ner import bio as ner_bio
from line_jax.eval.ner import protocol as ner_protocol
from line_jax.eval.ner import tagger
from line_jax.teachers import bert
from line_jax.teachers.testing import write_tiny_bert

import test_hpo  # the HPO slice helpers (tests/ is on the path under pytest)


class TokenStatesTest(absltest.TestCase):

  def test_first_token_is_the_cls_embedding_and_padding_is_inert(self):
    folder = write_tiny_bert(tempfile.mkdtemp(), seed=3)
    config, params = bert.load_bert(folder)
    ids = np.array([[2, 7, 8, 9, 3, 0, 0], [2, 10, 3, 0, 0, 0, 0]], np.int32)
    mask = (ids != 0).astype(np.int32)
    states = np.asarray(bert.token_states(params, ids, mask, config, normalize=True))
    pooled = np.asarray(bert.bert_embed(params, ids, mask, config, "cls", True))
    np.testing.assert_allclose(states[:, 0], pooled, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(states[0, :5], axis=-1), 1.0, atol=1e-5)
    self.assertEqual(np.abs(states[0, 5:]).max(), 0.0)
    # The same sentence without the padding columns gives the same states.
    short = np.asarray(bert.token_states(params, ids[:1, :5], mask[:1, :5], config, True))
    np.testing.assert_allclose(short[0], states[0, :5], atol=1e-5)
    raw = np.asarray(bert.token_states(params, ids, mask, config, normalize=False))
    hidden = np.asarray(bert.bert_hidden_states(params, ids, mask, config))
    np.testing.assert_allclose(raw[0, :5], hidden[0, :5], atol=1e-5)


def _write(path, text):
  with open(path, "w") as f:
    f.write(text)
  return path


class BioTest(parameterized.TestCase):

  def test_reads_sentences(self):
    path = _write(os.path.join(tempfile.mkdtemp(), "a.bio"),
                  "-DOCSTART- O\n\nJohn B-PER\nSmith I-PER\nruns O\n\nParis B-LOC\n")
    sentences = ner_bio.read_bio(path)
    self.assertEqual([s.words for s in sentences], [["John", "Smith", "runs"], ["Paris"]])
    self.assertEqual(sentences[0].lines, [3, 4, 5])

  @parameterized.parameters(
      ("a O\nb I-PER\n", r"line 2: field 'tag': I-PER follows O"),
      ("a B-LOC\nb I-PER\n", r"line 2: field 'tag': I-PER follows B-LOC"),
      ("a I-PER\n", r"line 1: field 'tag': I-PER follows the sentence start"),
      ("a\n", r"line 1: field 'tag': expected 'TOKEN ... TAG'"),
      ("a X-PER\n", r"line 1: field 'tag': 'X-PER' is not O"),
  )
  def test_bad_tags(self, text, message):
    path = _write(os.path.join(tempfile.mkdtemp(), "bad.bio"), text)
    with self.assertRaisesRegex(DataError, "bad.bio: " + message):
      ner_bio.read_bio(path)

  def test_label_unseen_in_training(self):
    folder = tempfile.mkdtemp()
    _write(os.path.join(folder, "train.bio"), "a B-PER\nb O\n")
    _write(os.path.join(folder, "dev.bio"), "a B-PER\nb I-PER\n")   # I-PER: type seen
    _write(os.path.join(folder, "test.bio"), "a O\n\nb B-LOC\n")
    with self.assertRaisesRegex(DataError, r"test.bio: line 3: field 'tag': label 'B-LOC' "
                                r"does not occur in the training split"):
      ner_bio.load_bio(folder, config_lib.base_config().eval.ner)

  def test_missing_split_file(self):
    folder = tempfile.mkdtemp()
    _write(os.path.join(folder, "train.bio"), "a B-PER\n")
    with self.assertRaisesRegex(DataError, r"no valid file"):
      ner_bio.load_bio(folder, config_lib.base_config().eval.ner)


class F1Test(absltest.TestCase):

  def test_entities_and_scores_by_hand(self):
    self.assertEqual(ner_bio.entities(["B-A", "I-A", "O", "I-B", "B-A"]),
                     {("A", 0, 2), ("B", 3, 4), ("A", 4, 5)})
    true = [["B-A", "I-A", "O", "B-B"], ["B-B", "O"]]
    pred = [["B-A", "I-A", "O", "B-A"], ["B-B", "B-B"]]
    scores = ner_bio.f1_scores(true, pred)
    # tp: A(0,2), B(0,1); fp: A(3,4), B(1,2); fn: B(3,4).
    self.assertAlmostEqual(scores["micro_f1"], 2 * 2 / (2 * 2 + 2 + 1))
    self.assertAlmostEqual(scores["per_type"]["A"], 2 / 3)      # tp 1, fp 1
    self.assertAlmostEqual(scores["per_type"]["B"], 2 / 4)      # tp 1, fp 1, fn 1
    self.assertAlmostEqual(scores["macro_f1"], (2 / 3 + 1 / 2) / 2)

  def test_linear_classifier_learns_separable_classes(self):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 4
    y = rng.integers(0, 3, 600)
    x = (centres[y] + rng.normal(size=(600, 8))).astype(np.float32)
    params = tagger.train_linear(x, y, 3, seed=0, epochs=10, learning_rate=1e-2, batch_size=64)
    self.assertGreater((tagger.predict(params, x) == y).mean(), 0.95)


class _FakeModel:
  """What run_ner reads of a LineModel: the teachers' configs and F."""

  def __init__(self, t1, t2):
    c = ml_collections.ConfigDict()
    c.teacher1 = teacher_config(kind="hf", name="tiny_bge", model=t1, preset="bge",
                                max_length=64)
    c.teacher2 = teacher_config(kind="hf", name="tiny_coder", model=t2, preset="coder")
    c.eval = ml_collections.ConfigDict(dict(ner=config_lib.base_config().eval.ner))
    c.eval.ner.epochs = 3
    c.eval.ner.seeds = (0, 1)
    c.eval.ner.batch_size = 64
    c.eval.ner.learning_rate = 1e-2
    self.config = c
    self.w = np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32)

  def project_texts(self, x):
    return np.tanh(x @ self.w)


def _check_outputs(test, metrics, out, sentences):
  test.assertEqual(set(metrics["results"]), {"teacher1", "teacher2", "line"})
  for result in metrics["results"].values():
    test.assertLen(result["runs"], 2)
    for key, value in result["summary"].items():
      test.assertBetween(value, 0.0, 1.0, key)
  for name in ("metrics.json", "report.md", "f1.png"):
    test.assertTrue(os.path.exists(os.path.join(out, name)), name)
  with open(os.path.join(out, "metrics.json")) as f:
    counted = json.load(f)["counts"]
  test.assertEqual(sum(c["sentences"] for c in counted.values()), sentences)


class RunNerTest(absltest.TestCase):
  """The protocol for three models on a small hand-written BIO folder."""

  def test_protocol(self):
    tmp = tempfile.mkdtemp()
    rows = ["the patient has chest pain", "no fever or cough", "short stature and ataxia",
            "seizure with fever", "kidney disease and heart disease"]
    kinds = {"chest": "B-F", "pain": "I-F", "fever": "B-F", "cough": "B-F", "short": "B-F",
             "stature": "I-F", "ataxia": "B-N", "seizure": "B-N", "kidney": "B-D",
             "heart": "B-D", "disease": "I-D"}
    bio = os.path.join(tmp, "bio")
    os.makedirs(bio)
    for name, repeat in (("train.bio", 4), ("dev.bio", 1), ("test.bio", 1)):
      _write(os.path.join(bio, name), "\n".join(
          "".join(f"{w} {kinds.get(w, 'O')}\n" for w in r.split()) for r in rows * repeat))
    t1 = write_tiny_bert(os.path.join(tmp, "t1"), hidden_size=32, seed=1)
    t2 = write_tiny_bert(os.path.join(tmp, "t2"), hidden_size=24, seed=2)
    out = os.path.join(tmp, "run", "ner")
    model = _FakeModel(t1, t2)
    model.config.eval.ner.epochs = 40
    metrics = ner_protocol.run_ner(model, bio, out)
    _check_outputs(self, metrics, out, 6 * len(rows))
    # The test sentences are training sentences and a word's tag is a function of the word:
    # a teacher whose tokenizer knows the words gets every entity (all-[UNK] tokens: < 0.6).
    for teacher in ("teacher1", "teacher2"):
      self.assertGreater(metrics["results"][teacher]["summary"]["test_micro_f1"], 0.95)

  def test_evaluate_features_scores_informative_features(self):
    # Features that name the word (one-hot): the tags are a function of the word, so the
    # classifier is exact; features of pure noise are not.
    words = "a b c d e f".split()
    tags = {"b": "B-X", "c": "I-X", "e": "B-Y"}
    make = lambda n: [ner_bio.Sentence(words, [tags.get(w, "O") for w in words], "x", [1] * 6)
                      for _ in range(n)]
    data = {"train": make(20), "valid": make(3), "test": make(3)}
    onehot = {k: np.tile(np.eye(6, dtype=np.float32), (len(v), 1)) for k, v in data.items()}
    settings = config_lib.base_config().eval.ner
    settings.epochs, settings.seeds, settings.learning_rate = 30, (0, 1), 0.05
    result = tagger.evaluate_features(onehot, data, settings)
    self.assertEqual(result["summary"]["test_micro_f1"], 1.0)
    self.assertEqual(result["summary"]["valid_macro_f1"], 1.0)
    self.assertEqual(result["labels"], ["O", "B-X", "I-X", "B-Y", "I-Y"])
    noise = {k: np.random.default_rng(1).normal(size=v.shape).astype(np.float32)
             for k, v in onehot.items()}
    self.assertLess(tagger.evaluate_features(noise, data, settings)["summary"]["test_micro_f1"],
                    1.0)


class SyntheticVignetteNerTest(absltest.TestCase):
  """BIO from SYNTHETIC HPO vignettes (spans from re-running the dictionary extractor: the
  builder stores none), the protocol for three models."""

  @pytest.mark.slow
  def test_protocol_on_vignettes(self):
    tmp = tempfile.mkdtemp()
    terms = hpo.live_terms(obo.read_obo(hpo.package_data_path("hp.obo")))
    test_hpo.write_hpoa_slice(hpo.package_data_path("phenotype.hpoa"),
                              os.path.join(tmp, "slice.hpoa"), set(terms), 60)
    config = test_hpo.slice_config(tmp)
    config.obo_path = ""          # the whole ontology: enough diseases get vignettes
    config.max_definitions = 5
    config.max_co_annotated_edges = 0
    config.num_sibling_pairs = 0
    data = os.path.join(tmp, "ds")
    hpo.build_hpo_dataset(data, config)
    bio = os.path.join(tmp, "bio")
    counts = ner_bio.write_bio_from_dataset(
        data, bio, dict(stop_phrases=hpo.hpo_settings().stop_phrases))
    self.assertGreaterEqual(min(counts["train"], counts["valid"], counts["test"]), 1)
    train = ner_bio.read_bio(os.path.join(bio, "train.bio"))
    self.assertTrue(any(t.startswith("B-") for s in train for t in s.tags))
    t1 = write_tiny_bert(os.path.join(tmp, "t1"), hidden_size=32, seed=1)
    t2 = write_tiny_bert(os.path.join(tmp, "t2"), hidden_size=24, seed=2)
    out = os.path.join(tmp, "run", "ner")
    metrics = ner_protocol.run_ner(_FakeModel(t1, t2), bio, out)
    _check_outputs(self, metrics, out, counts["train"] + counts["valid"] + counts["test"])


if __name__ == "__main__":
  absltest.main()
