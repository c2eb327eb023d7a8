"""Nothing lost, nothing silently wrong, in the teacher paths: a tokenizer that would turn
every word into [UNK] is refused, a cached fine-tuned folder needs its tokenizer files, data
the fine-tune cannot learn from is refused before training, and the NER protocol takes a
fine-tuned teacher (or refuses a teacher before any work)."""

import json
import os
import shutil
import tempfile
from unittest import mock

from absl.testing import absltest, parameterized
import ml_collections
import numpy as np

from line_jax.config import finetune_config, teacher_config
from line_jax.data.dataset import DataError, load_dataset, write_dataset
from line_jax.eval.ner import features as ner_features
from line_jax.eval.ner import protocol as ner_protocol
from line_jax.teachers import finetune, load_encoder, load_tokenizer
from line_jax.teachers.finetune import driver as ft_driver
from line_jax.teachers.finetune import pairs as ft_pairs
from line_jax.teachers import testing as teacher_testing

import test_finetune  # the tiny ontology and fine-tune config (tests/ is on the path)
import test_ner       # the fake model run_ner reads


def _tokenizer_files(folder):
  return [n for n in os.listdir(folder) if n.startswith(("tokenizer", "vocab", "special"))]


class TokenizerRefusalTest(parameterized.TestCase):

  def tiny(self, **kw):
    return teacher_testing.write_tiny_bert(
        os.path.join(self.create_tempdir().full_path, "tiny"), **kw)

  def test_folder_without_tokenizer_files_is_refused(self):
    folder = self.tiny()
    for name in ("tokenizer.json", "vocab.txt"):
      os.remove(os.path.join(folder, name))     # tokenizer_config.json stays
    for load in (lambda: load_tokenizer(folder),
                 lambda: load_encoder(teacher_config(model=folder, pooling="mean",
                                                     max_length=16))):
      with self.assertRaises(DataError) as raised:
        load()
      message = str(raised.exception)
      self.assertIn(folder, message)
      self.assertIn("missing: tokenizer.json and vocab.txt", message)
      self.assertIn("[UNK]", message)
      self.assertIn("huggingface-cli download", message)

  def test_vocab_txt_alone_is_enough(self):
    folder = self.tiny()
    os.remove(os.path.join(folder, "tokenizer.json"))
    tokenizer = load_tokenizer(folder)
    self.assertEqual(len(tokenizer), len(teacher_testing.tiny_vocab()))

  def test_tokenizer_of_special_tokens_only_is_refused(self):
    # What transformers 5 saves when handed a vocab file under a name it no longer reads.
    folder = self.tiny()
    teacher_testing.write_wordpiece_tokenizer(folder, teacher_testing.SPECIAL_TOKENS, 64)
    with self.assertRaisesRegex(DataError, f"{folder}: the tokenizer knows 5 tokens, only "
                                "its special tokens"):
      load_encoder(teacher_config(model=folder, pooling="mean", max_length=16))

  def test_tokenizer_that_knows_no_common_word_is_refused(self):
    folder = self.tiny()
    vocab = list(teacher_testing.SPECIAL_TOKENS) + ["qzx", "##qzx", "xqz"]
    teacher_testing.write_wordpiece_tokenizer(folder, vocab, 64)
    with self.assertRaisesRegex(DataError, f"{folder}: the tokenizer turns 'the patient.*"
                                r"\[UNK\].*no word is in its vocabulary of 8 tokens"):
      load_tokenizer(folder)

  def test_tokenizer_larger_than_the_embedding_table_is_refused(self):
    folder = self.tiny()
    vocab = teacher_testing.tiny_vocab() + [f"extra{i}" for i in range(10)]
    teacher_testing.write_wordpiece_tokenizer(folder, vocab, 64)
    with self.assertRaisesRegex(DataError, "config.json: field 'vocab_size': "
                                f"{len(vocab) - 10}, but the folder's tokenizer has "
                                f"{len(vocab)} tokens"):
      load_encoder(teacher_config(model=folder, pooling="mean", max_length=16))

  def test_tiny_bert_fixture_tokenizes_words_and_embeds_them_apart(self):
    folder = self.tiny()
    tokenizer = load_tokenizer(folder)
    unk = tokenizer.unk_token_id
    for word in teacher_testing.TINY_WORDS + ["definition", "john", "x7"]:
      ids = tokenizer(word, add_special_tokens=False)["input_ids"]
      self.assertNotIn(unk, ids, word)
    encoder = load_encoder(teacher_config(model=folder, pooling="mean", max_length=16),
                           buckets=(16,))
    fever, cough = encoder.encode(["fever", "cough"])   # one token each: same length
    self.assertGreater(np.abs(fever - cough).max(), 1e-3)


class FinetunedFolderTest(absltest.TestCase):
  """The cached fine-tuned folder: complete only with its tokenizer files."""

  def test_cached_folder_without_tokenizer_files_gets_the_bases_back(self):
    root = self.create_tempdir().full_path
    base = teacher_testing.write_tiny_bert(os.path.join(root, "tiny"), extra_tensors=False)
    dataset = load_dataset(test_finetune.write_ontology(os.path.join(root, "onto")))
    config = test_finetune.tiny_config(base, dataset.root)
    workdir = os.path.join(root, "work")
    folder = finetune.finetuned_dir(config.teacher2, dataset, workdir)
    # A finished folder (weights, finetune.json) whose tokenizer files were lost.
    shutil.copytree(base, folder)
    for name in _tokenizer_files(folder):
      os.remove(os.path.join(folder, name))
    with open(os.path.join(folder, "finetune.json"), "w") as f:
      json.dump({"alpha": 1.0}, f)
    self.assertFalse(finetune.is_complete(folder))
    weights = os.path.getmtime(os.path.join(folder, "model.safetensors"))
    with mock.patch.object(ft_driver, "train", side_effect=AssertionError("retrained")):
      self.assertEqual(finetune.ensure_finetuned(config.teacher2, dataset, workdir,
                                                 progress_bar=False), folder)
    self.assertTrue(finetune.is_complete(folder))
    self.assertEqual(sorted(_tokenizer_files(folder)), sorted(_tokenizer_files(base)))
    self.assertEqual(weights, os.path.getmtime(os.path.join(folder, "model.safetensors")))
    self.assertEqual(load_tokenizer(folder)("fever")["input_ids"],
                     load_tokenizer(base)("fever")["input_ids"])


def _dataset(root, synonyms, definitions=()):
  """Terms T0..T3; `synonyms` (term, synonym name) edges; `definitions` (term, split)."""
  ids, names = [f"T{t}" for t in range(4)], ["fever", "cough", "heart disease", "ataxia"]
  rel = {"head_id": ["T0", "T0", "T0"], "tail_id": ["T1", "T2", "T3"],
         "relation": ["parent_child"] * 3}
  for k, (term, name) in enumerate(synonyms):
    ids.append(f"S{k}")
    names.append(name)
    rel["head_id"].append(term)
    rel["tail_id"].append(f"S{k}")
    rel["relation"].append("synonym")
  pairs = {k: [] for k in ("pair_id", "text", "concept_ids", "negated", "rho", "split",
                           "source", "source_id")}
  for k, (term, split) in enumerate(list(definitions) + [("T0", "train")]):
    pairs["pair_id"].append(f"p{k}")
    pairs["text"].append(f"definition {k} of the {names[int(term[1:])]}")
    pairs["concept_ids"].append([term])
    pairs["negated"].append([False])
    pairs["rho"].append(1.0)
    pairs["split"].append(split)
    pairs["source"].append("definition" if k < len(definitions) else "vignette")
    pairs["source_id"].append(term)
  write_dataset(root, {"concept_id": ids, "name": names}, rel, pairs)
  return load_dataset(root)


class FinetuneDataTest(parameterized.TestCase):
  """Datasets that give the fine-tune nothing to learn from are refused before training
  (through ensure_finetuned: the cache key already builds the data)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.base = teacher_testing.write_tiny_bert(os.path.join(cls.root, "tiny"),
                                               extra_tensors=False)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def ensure(self, dataset, **overrides):
    config = test_finetune.tiny_config(self.base, dataset.root, **overrides)
    with mock.patch.object(ft_driver, "train", side_effect=AssertionError("trained")):
      return finetune.ensure_finetuned(config.teacher2, dataset,
                                       os.path.join(self.root, "work"), progress_bar=False)

  def test_pairs_that_all_name_one_term_are_refused(self):
    # Three synonyms of one term: one held out, two trained, with no negatives in a batch
    # the loss is 0 and the "fine-tuned" teacher the (weight-decayed) base.
    dataset = _dataset(os.path.join(self.create_tempdir().full_path, "d"),
                       [("T1", "dry cough"), ("T1", "tussis"), ("T1", "coughing")])
    with self.assertRaisesRegex(DataError, f"{dataset.root}: the fine-tuned teacher's 2 "
                                r"training pairs all name one term \('cough'\).*loss "
                                "would be 0"):
      self.ensure(dataset)

  def test_select_alpha_without_synonyms_to_hold_out_is_refused(self):
    # Definitions of two terms train; no synonym edge is left to choose alpha on, where
    # alpha would silently fall to 0 (the base model) on a curve of NaNs.
    dataset = _dataset(os.path.join(self.create_tempdir().full_path, "d"), [],
                       [("T1", "train"), ("T2", "train"), ("T3", "train")])
    with self.assertRaisesRegex(DataError, r"relations.parquet: field 'relation': 0 "
                                r"synonym/layperson edges.*select_alpha=False"):
      self.ensure(dataset)
    s = finetune.read_settings(test_finetune.tiny_config(
        self.base, dataset.root, select_alpha=False).teacher2)
    data = ft_pairs.build_data(dataset, s)   # a fixed alpha needs no validation synonyms
    self.assertEqual(data.counts["definition_pairs"], 3)


def _bio(folder):
  rows = ["the patient has chest pain", "no fever or cough", "seizure with fever"]
  tags = {"chest": "B-F", "pain": "I-F", "fever": "B-F", "cough": "B-F", "seizure": "B-N"}
  os.makedirs(folder)
  for name, repeat in (("train.bio", 3), ("dev.bio", 1), ("test.bio", 1)):
    with open(os.path.join(folder, name), "w") as f:
      f.write("\n".join("".join(f"{w} {tags.get(w, 'O')}\n" for w in r.split())
                        for r in rows * repeat))
  return folder


class NerTeacherKindTest(parameterized.TestCase):

  def model(self, teacher2_kind, meta):
    tmp = self.create_tempdir().full_path
    t1 = teacher_testing.write_tiny_bert(os.path.join(tmp, "t1"), hidden_size=32, seed=1)
    model = test_ner._FakeModel(t1, t1)
    model.config.eval.ner.seeds = (0,)
    model.config.teacher2 = teacher_config(kind=teacher2_kind, name="onto", pooling="mean",
                                           max_length=32)
    if teacher2_kind == "finetuned":
      model.config.teacher2.finetune = finetune_config(base=t1)
    model.teacher2 = ml_collections.ConfigDict(dict(meta=meta))
    return model, tmp

  def test_finetuned_teacher_gives_token_states_of_its_folder(self):
    tmp = self.create_tempdir().full_path
    folder = teacher_testing.write_tiny_bert(os.path.join(tmp, "onto-0123"), hidden_size=24,
                                             seed=2)
    model, tmp = self.model("finetuned", {"finetuned_dir": folder, "kind": "finetuned"})
    resolved = ner_features.token_teacher_config(model, "teacher2")
    self.assertEqual((resolved.kind, resolved.model), ("hf", folder))
    out = os.path.join(tmp, "run", "ner")
    metrics = ner_protocol.run_ner(model, _bio(os.path.join(tmp, "bio")), out)
    self.assertEqual(set(metrics["results"]), {"teacher1", "teacher2", "line"})
    self.assertTrue(os.path.exists(os.path.join(out, "report.md")))

  @parameterized.named_parameters(
      ("finetuned_folder_gone", "finetuned", "/nonexistent/onto-0123",
       r"teacher2 'onto' is a fine-tuned teacher, but its folder /nonexistent/onto-0123 is "
       r"gone; rebuild it with `python -m line_jax.finetune"),
      ("finetuned_no_record", "finetuned", "",
       "its embedding cache records no fine-tuned folder"),
      ("synthetic", "synthetic", "", r"'synthetic' teacher; token-level embeddings need"))
  def test_refused_before_any_work(self, kind, folder, message):
    model, tmp = self.model(kind, {"finetuned_dir": folder} if folder else {})
    out = os.path.join(tmp, "run", "ner")
    with mock.patch.object(ner_features, "TokenFeatures", side_effect=AssertionError("features")):
      with self.assertRaisesRegex(ValueError, message):
        ner_protocol.run_ner(model, _bio(os.path.join(tmp, "bio")), out)
    self.assertFalse(os.path.exists(out))


if __name__ == "__main__":
  absltest.main()
