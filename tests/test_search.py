"""Tests of line_jax.search.topk against a brute-force numpy reference."""

import os
import subprocess
import sys
import textwrap

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

import host_devices
from line_jax.search import topk as search
from line_jax.config import base_config


def random_rows(seed: int, rows: int, dim: int) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)


def reference_topk(queries: np.ndarray, keys: np.ndarray, k: int, normalize: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Brute force in float64: (scores [Q, k], indices [Q, k], all scores [Q, N])."""
  queries = queries.astype(np.float64)
  keys = keys.astype(np.float64)
  if normalize:
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    keys = keys / np.linalg.norm(keys, axis=1, keepdims=True)
  scores = queries @ keys.T
  indices = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(scores, indices, axis=1), indices, scores


class ReferenceAssertions:
  """Comparison of search results with the brute-force reference."""

  def assert_matches_reference(self, queries, keys, k, scores, indices, normalize=True):
    want_scores, want_indices, all_scores = reference_topk(queries, keys, k, normalize)
    self.assertEqual(scores.shape, (len(queries), k))
    self.assertEqual(indices.shape, (len(queries), k))
    self.assertEqual(scores.dtype, np.float32)
    self.assertIn(indices.dtype, (np.int32, np.int64))
    np.testing.assert_allclose(scores, want_scores, atol=1e-5, rtol=0)
    # Indices must be equal; where two reference scores are within float32 rounding the
    # order between them is not defined, so a differing index must at least score the same.
    differ = indices != want_indices
    if differ.any():
      rows = np.nonzero(differ)[0]
      got = all_scores[rows, indices[differ]]
      np.testing.assert_allclose(got, want_scores[differ], atol=1e-6, rtol=0)
    self.assertLess(differ.mean(), 1e-3)


class SearchTest(ReferenceAssertions, parameterized.TestCase):

  @parameterized.named_parameters(
      dict(testcase_name="defaults", num_queries=70, num_keys=500, kwargs={}),
      dict(testcase_name="q_not_multiple_of_chunk", num_queries=77, num_keys=500,
           kwargs=dict(query_chunk=16, key_chunk=128)),
      dict(testcase_name="n_not_multiple_of_chunk", num_queries=40, num_keys=1000,
           kwargs=dict(query_chunk=24, key_chunk=256)),
      dict(testcase_name="single_key_chunk_bigger_than_n", num_queries=9, num_keys=130,
           kwargs=dict(key_chunk=512)),
      dict(testcase_name="tiny_budget", num_queries=50, num_keys=700,
           kwargs=dict(memory_budget_mb=0.05)),
  )
  def test_matches_brute_force(self, num_queries, num_keys, kwargs):
    queries = random_rows(0, num_queries, 32)
    keys = random_rows(1, num_keys, 32)
    scores, indices = search.search_topk(queries, keys, 5, **kwargs)
    self.assert_matches_reference(queries, keys, 5, scores, indices)

  def test_raw_inner_product_without_normalize(self):
    queries = random_rows(2, 30, 16) * 3.0
    keys = random_rows(3, 300, 16) * np.linspace(0.1, 2.0, 300, dtype=np.float32)[:, None]
    scores, indices = search.search_topk(queries, keys, 4, normalize=False, key_chunk=128)
    want_scores, want_indices, _ = reference_topk(queries, keys, 4, normalize=False)
    np.testing.assert_array_equal(indices, want_indices)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-4)

  @parameterized.parameters(False, True)
  def test_padded_keys_never_returned(self, use_bf16):
    # Every real score is negative, so an unmasked zero padding row (score 0) would win.
    queries = np.abs(random_rows(18, 12, 16)) + 0.1
    keys = -np.abs(random_rows(19, 130, 16)) - 0.1              # padded to 256 keys
    scores, indices = search.search_topk(queries, keys, 7, key_chunk=128, use_bf16=use_bf16)
    self.assertTrue((indices < 130).all())
    self.assertTrue((scores < 0).all())
    self.assert_matches_reference(queries, keys, 7, scores, indices)

  def test_k_larger_than_key_chunk(self):
    queries = random_rows(4, 20, 24)
    keys = random_rows(5, 900, 24)
    scores, indices = search.search_topk(queries, keys, 300, key_chunk=128, query_chunk=8)
    self.assert_matches_reference(queries, keys, 300, scores, indices)

  def test_k_equal_to_dictionary_size_ranks_everything(self):
    queries = random_rows(6, 5, 8)
    keys = random_rows(7, 150, 8)
    _, indices = search.search_topk(queries, keys, 150, key_chunk=128)
    for row in indices:
      self.assertCountEqual(row.tolist(), range(150))

  def test_wide_chunk_uses_grouped_topk_and_stays_exact(self):
    # key_chunk 2048 >= 16 groups * 4 * k: the two-level top-k path.
    queries = random_rows(8, 33, 16)
    keys = random_rows(9, 5000, 16)
    scores, indices = search.search_topk(queries, keys, 8, key_chunk=2048)
    self.assert_matches_reference(queries, keys, 8, scores, indices)

  def test_jax_array_inputs_and_float16_keys(self):
    queries = random_rows(10, 20, 16)
    keys = random_rows(11, 400, 16).astype(np.float16)
    scores, indices = search.search_topk(jax.numpy.asarray(queries), keys, 3, key_chunk=128)
    self.assert_matches_reference(queries, keys.astype(np.float32), 3, scores, indices)
    scores_j, indices_j = search.search_topk(
        jax.numpy.asarray(queries), jax.numpy.asarray(keys), 3, key_chunk=128)
    np.testing.assert_array_equal(indices_j, indices)
    np.testing.assert_allclose(scores_j, scores, atol=1e-6)

  def test_bf16_matches_float32_on_separated_data(self):
    # Each query is a noisy copy of one key: its best key stands well clear of the rest.
    rng = np.random.default_rng(12)
    keys = rng.standard_normal((2000, 64)).astype(np.float32)
    targets = rng.integers(0, len(keys), 100)
    queries = keys[targets] + 0.05 * rng.standard_normal((100, 64)).astype(np.float32)
    exact = search.search_topk(queries, keys, 4, key_chunk=512)
    approx = search.search_topk(queries, keys, 4, key_chunk=512, use_bf16=True,
                                rescore_factor=8)
    np.testing.assert_array_equal(exact[1][:, 0], targets)
    np.testing.assert_array_equal(approx[1], exact[1])
    np.testing.assert_allclose(approx[0], exact[0], atol=1e-6)

  def test_bf16_scores_are_rescored_exactly(self):
    queries = random_rows(13, 40, 32)
    keys = random_rows(14, 600, 32)
    scores, indices = search.search_topk(queries, keys, 3, use_bf16=True, key_chunk=128)
    _, _, all_scores = reference_topk(queries, keys, 3)
    # Whatever was picked, its score is the float32 cosine, not a bf16 one.
    np.testing.assert_allclose(scores, np.take_along_axis(all_scores, indices, axis=1),
                               atol=1e-6)

  def test_dictionary_placed_once_serves_several_query_blocks(self):
    queries = random_rows(20, 90, 16)
    keys = random_rows(21, 700, 16)
    whole = search.search_topk(queries, keys, 5, key_chunk=128, query_chunk=24)
    dictionary = search.Dictionary(keys, 5, key_chunk=128, query_chunk=24)
    blocks = [dictionary.search(queries[s:s + 40]) for s in range(0, 90, 40)]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), whole[1])
    np.testing.assert_array_equal(np.concatenate([b[0] for b in blocks]), whole[0])
    self.assert_matches_reference(queries, keys, 5, whole[0], whole[1])

  def test_dictionary_reads_the_keys_one_chunk_at_a_time(self):
    # A memmap-like source: placement must never ask it for more than a key chunk.
    keys = random_rows(22, 1000, 8)
    asked = []

    class Rows:
      shape, ndim, dtype = keys.shape, 2, keys.dtype

      def __getitem__(self, rows):
        asked.append(len(range(*rows.indices(len(keys)))))
        return keys[rows]

    dictionary = search.Dictionary(Rows(), 3, key_chunk=128)
    self.assertEqual(sum(asked), 1000)
    self.assertLessEqual(max(asked), 128)
    # One float32 copy on the device: normalised, zero-padded to whole chunks.
    self.assertEqual(dictionary.keys.shape, (1024, 8))
    self.assertEqual(dictionary.keys.dtype, np.float32)
    placed = np.asarray(dictionary.keys)
    np.testing.assert_allclose(np.linalg.norm(placed[:1000], axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(placed[1000:], 0.0)
    scores, indices = dictionary.search(random_rows(23, 10, 8))
    self.assert_matches_reference(random_rows(23, 10, 8), keys, 3, scores, indices)

  def test_dictionary_rejects_queries_of_another_dimension(self):
    dictionary = search.Dictionary(random_rows(24, 50, 8), 2)
    with self.assertRaisesRegex(ValueError, "queries have dim 9, keys have dim 8"):
      dictionary.search(np.ones((3, 9), np.float32))

  def test_zero_queries(self):
    scores, indices = search.search_topk(np.zeros((0, 8), np.float32),
                                         random_rows(15, 20, 8), 2)
    self.assertEqual(scores.shape, (0, 2))
    self.assertEqual(indices.shape, (0, 2))

  @parameterized.named_parameters(
      dict(testcase_name="dimension_mismatch", q_shape=(4, 8), k_shape=(10, 9), k=2,
           kwargs={}, message="dimension mismatch"),
      dict(testcase_name="k_above_n", q_shape=(4, 8), k_shape=(10, 8), k=11, kwargs={},
           message="k=11 must be between 1 and the dictionary size N=10"),
      dict(testcase_name="k_zero", q_shape=(4, 8), k_shape=(10, 8), k=0, kwargs={},
           message="k=0"),
      dict(testcase_name="queries_1d", q_shape=(8,), k_shape=(10, 8), k=2, kwargs={},
           message="queries must be a 2-D"),
      dict(testcase_name="empty_dictionary", q_shape=(4, 8), k_shape=(0, 8), k=1,
           kwargs={}, message="dictionary (keys) is empty"),
      dict(testcase_name="budget_too_small", q_shape=(4, 8), k_shape=(10, 8), k=2,
           kwargs=dict(memory_budget_mb=0.001, key_chunk=4096),
           message="memory budget"),
      dict(testcase_name="bad_rescore_factor", q_shape=(4, 8), k_shape=(10, 8), k=2,
           kwargs=dict(rescore_factor=0), message="rescore_factor"),
  )
  def test_bad_inputs_raise_clear_errors(self, q_shape, k_shape, k, kwargs, message):
    with self.assertRaisesRegex(ValueError, message.replace("(", r"\(").replace(")", r"\)")):
      search.search_topk(np.ones(q_shape, np.float32), np.ones(k_shape, np.float32), k,
                         **kwargs)


class ChunkSizeTest(parameterized.TestCase):

  def test_derived_from_budget(self):
    query_chunk, key_chunk = search.derive_chunk_sizes(
        1_000_000, 4_000_000, 768, 8, memory_budget_mb=1024)
    self.assertEqual(key_chunk, 4_000_000 // 245 // 128 * 128 + 128)   # 245 even chunks
    self.assertLessEqual(key_chunk, search.DEFAULT_KEY_CHUNK)
    per_row = key_chunk * 4 + 768 * 4
    largest = min(1024 * 2**20 // per_row, search.DEFAULT_QUERY_CHUNK)
    self.assertLessEqual(query_chunk * per_row, 1024 * 2**20)
    self.assertLessEqual(query_chunk, search.DEFAULT_QUERY_CHUNK)
    # As few query chunks as the budget allows, evened out: padding under one row multiple.
    num_chunks = -(-1_000_000 // largest)
    self.assertEqual(-(-1_000_000 // query_chunk), num_chunks)
    self.assertLess(num_chunks * query_chunk - 1_000_000, 8 * num_chunks)
    self.assertEqual(query_chunk % 8, 0)

  def test_bf16_budget_counts_rescoring_rows(self):
    exact = search.derive_chunk_sizes(10**6, 10**6, 768, 8, memory_budget_mb=256)
    bf16 = search.derive_chunk_sizes(10**6, 10**6, 768, 8, memory_budget_mb=256,
                                     use_bf16=True, rescore_factor=4)
    self.assertLess(bf16[0], exact[0])
    self.assertLessEqual(bf16[0] * (bf16[1] * 4 + 768 * 4 + 32 * 768 * 4), 256 * 2**20)

  def test_small_inputs_give_small_chunks(self):
    self.assertEqual(search.derive_chunk_sizes(10, 300, 16, 2, memory_budget_mb=1024),
                     (16, 384))

  def test_small_budget_shrinks_key_chunk(self):
    query_chunk, key_chunk = search.derive_chunk_sizes(
        1000, 10**6, 64, 4, memory_budget_mb=0.25)
    self.assertLess(key_chunk, search.DEFAULT_KEY_CHUNK)
    self.assertGreaterEqual(query_chunk, 8)
    self.assertLessEqual(query_chunk * (key_chunk * 4 + 64 * 4), 0.25 * 2**20)

  def test_explicit_chunks_are_kept(self):
    self.assertEqual(search.derive_chunk_sizes(10**5, 10**5, 32, 4, memory_budget_mb=1024,
                                               query_chunk=100, key_chunk=1000),
                     (104, 1024))

  def test_config_kwargs(self):
    config = base_config()
    config.search.use_bf16 = True
    config.search.key_chunk = 256
    kwargs = search.search_config_kwargs(config.search)
    self.assertEqual(kwargs, dict(memory_budget_mb=1024.0, query_chunk=0, key_chunk=256,
                                  use_bf16=True, rescore_factor=4))
    queries, keys = random_rows(16, 10, 8), random_rows(17, 300, 8)
    scores, indices = search.search_topk(queries, keys, 2, **kwargs)
    self.assertEqual(indices.shape, (10, 2))
    del scores


_FOUR_DEVICE_SCRIPT = textwrap.dedent("""
    import os
    import jax
    import numpy as np
    from line_jax.search import topk as search
    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((37, 24)).astype(np.float32)
    keys = rng.standard_normal((1000, 24)).astype(np.float32)   # 4 * 256 = 1024 > 1000
    # Keys already on the devices, placed once and searched by two query blocks.
    jax_dictionary = search.Dictionary(jax.numpy.asarray(keys), 6, key_chunk=128)
    cases = dict(
        four=search.search_topk(queries, keys, 6, key_chunk=128, query_chunk=16),
        four_bf16=search.search_topk(queries, keys, 6, key_chunk=128, use_bf16=True,
                                     rescore_factor=8),
        four_k_above_local=search.search_topk(queries, keys, 300, key_chunk=128),
        four_bf16_k_above_local=search.search_topk(queries, keys, 300, key_chunk=128,
                                                   use_bf16=True),
        two=search.search_topk(queries, keys, 6, key_chunk=128, devices=jax.devices()[:2]),
        one=search.search_topk(queries, keys, 6, key_chunk=128, devices=jax.devices()[:1]),
        four_jax_keys_in_blocks=tuple(np.concatenate(parts) for parts in zip(
            *(jax_dictionary.search(block) for block in (queries[:20], queries[20:])))),
    )
    # All scores negative: a zero padding row (score 0) would win unless masked.
    negative = search.search_topk(np.abs(queries), -np.abs(keys), 6, key_chunk=128)
    np.savez(os.environ["SEARCH_TEST_OUT"], queries=queries, keys=keys,
             negative_scores=negative[0], negative_indices=negative[1],
             **{f"{name}_scores": value[0] for name, value in cases.items()},
             **{f"{name}_indices": value[1] for name, value in cases.items()})
""")


class MultiDeviceTest(ReferenceAssertions, parameterized.TestCase):
  """Sharded over 4 (forced host) devices in a subprocess, against the reference."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.output = os.path.join(absltest.get_default_test_tmpdir(), "four_devices.npz")
    env = host_devices.cpu_env(4, SEARCH_TEST_OUT=cls.output)
    completed = subprocess.run([sys.executable, "-c", _FOUR_DEVICE_SCRIPT], env=env,
                               capture_output=True, text=True, timeout=300, check=False)
    if completed.returncode:
      raise AssertionError(f"4-device subprocess failed:\n{completed.stderr[-3000:]}")
    cls.results = dict(np.load(cls.output))

  @parameterized.parameters(("four", 6), ("four_bf16", 6), ("four_k_above_local", 300),
                            ("four_bf16_k_above_local", 300),
                            ("two", 6), ("one", 6), ("four_jax_keys_in_blocks", 6))
  def test_sharded_matches_brute_force(self, name, k):
    self.assert_matches_reference(self.results["queries"], self.results["keys"], k,
                                  self.results[f"{name}_scores"],
                                  self.results[f"{name}_indices"])

  def test_sharded_padding_is_masked(self):
    queries, keys = np.abs(self.results["queries"]), -np.abs(self.results["keys"])
    self.assertTrue((self.results["negative_indices"] < len(keys)).all())
    self.assert_matches_reference(queries, keys, 6, self.results["negative_scores"],
                                  self.results["negative_indices"])

  def test_one_and_four_devices_agree(self):
    np.testing.assert_array_equal(self.results["four_indices"], self.results["one_indices"])
    np.testing.assert_allclose(self.results["four_scores"], self.results["one_scores"],
                               atol=1e-6)


if __name__ == "__main__":
  absltest.main()
