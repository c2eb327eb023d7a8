"""The residual search benchmark (`python -m line_jax.bench --what=search`).

Times `line_jax.search.topk.search_topk` end to end from host arrays (placing and
normalising the dictionary included) after a warm-up run that compiles, and, on request,
faiss-cpu `IndexFlatIP` on the same normalised data in the same process (normalising copies,
`add` and `search` included). Repeats alternate between the two, so that load from other
processes hits both alike. `paper_scale_gpu_lines` projects the paper-scale search
(7.2M x 4M x 768) onto a GPU from its FLOP count.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Optional

import jax
import numpy as np

from line_jax.benchmarks.timing import median_seconds
from line_jax.search import topk as search

# Residual recovery at paper scale: 7.2M pairs against a 4M-concept dictionary.
PAPER_QUERIES = 7_200_000
PAPER_DICT_SIZE = 4_000_000
PAPER_DIM = 768


def search_flops(num_queries: int, dict_size: int, dim: int) -> float:
  """Multiply-adds of the full score matrix, counted as 2 FLOPs each."""
  return 2.0 * num_queries * dict_size * dim


def paper_scale_gpu_lines(tflops_f32: float, tflops_bf16: float) -> list[str]:
  """Projected GPU time of the paper-scale search, at the stated peak throughputs."""
  flops = search_flops(PAPER_QUERIES, PAPER_DICT_SIZE, PAPER_DIM)
  lines = []
  for label, tflops in (("float32 exact", tflops_f32), ("bf16 + rescoring", tflops_bf16)):
    seconds = flops / (tflops * 1e12)
    lines.append(
        f"projected GPU search at paper scale ({PAPER_QUERIES:,} x {PAPER_DICT_SIZE:,} x "
        f"{PAPER_DIM}, {flops:.3g} FLOP), {label} at {tflops:g} TFLOP/s (H100 peak; real "
        f"runs reach ~50-70% of it): {seconds:,.0f} s = {seconds / 3600:.1f} h per device, "
        "divided by the number of devices")
  return lines


def random_unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
  """Gaussian float32 rows (the search normalises them)."""
  return rng.standard_normal((rows, dim), dtype=np.float32)


def faiss_flat_ip_search(queries: np.ndarray, keys: np.ndarray, k: int
                         ) -> tuple[np.ndarray, np.ndarray]:
  """Cosine top k with faiss IndexFlatIP on normalised copies of the inputs."""
  import faiss  # pylint: disable=g-import-not-at-top
  queries = np.array(queries, np.float32)
  keys = np.array(keys, np.float32)
  faiss.normalize_L2(queries)
  faiss.normalize_L2(keys)
  index = faiss.IndexFlatIP(keys.shape[1])
  index.add(keys)
  return index.search(queries, k)


def faiss_missing() -> Optional[str]:
  """Why faiss cannot be imported here, or None when it can."""
  try:
    import faiss  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError as error:
    return str(error)
  return None


@dataclasses.dataclass
class SearchSetup:
  """Random queries and keys and the search's options, chunk sizes derived for the devices."""
  queries: np.ndarray
  keys: np.ndarray
  k: int
  options: dict
  devices: list

  @property
  def query_chunk(self) -> int:
    return self.options["query_chunk"]


def make_setup(*, num_queries: int, dict_size: int, dim: int, k: int, use_bf16: bool,
               memory_budget_mb: float, query_chunk: int, key_chunk: int,
               seed: int) -> SearchSetup:
  rng = np.random.default_rng(seed)
  queries = random_unit_rows(rng, num_queries, dim)
  keys = random_unit_rows(rng, dict_size, dim)
  devices = jax.devices()
  query_chunk, key_chunk = search.derive_chunk_sizes(
      num_queries, -(-dict_size // len(devices)), dim, k, memory_budget_mb=memory_budget_mb,
      query_chunk=query_chunk, key_chunk=key_chunk, use_bf16=use_bf16)
  options = dict(memory_budget_mb=memory_budget_mb, query_chunk=query_chunk,
                 key_chunk=key_chunk, use_bf16=use_bf16)
  return SearchSetup(queries, keys, k, options, devices)


def warm_up(setup: SearchSetup) -> float:
  """Compiles the search on one query chunk; returns the seconds it took."""
  started = time.perf_counter()
  search.search_topk(setup.queries[:setup.query_chunk], setup.keys, setup.k, **setup.options)
  return time.perf_counter() - started


def warm_up_faiss(setup: SearchSetup) -> None:
  """faiss on one query chunk, as `warm_up` for line_jax."""
  faiss_flat_ip_search(setup.queries[:setup.query_chunk], setup.keys, setup.k)


def time_search(setup: SearchSetup, repeats: int, with_faiss: bool) -> dict[str, Any]:
  """Times of the whole search, alternating with faiss; the report's numbers."""
  results = {}

  def run_line_jax():
    results["line_jax"] = search.search_topk(setup.queries, setup.keys, setup.k,
                                             **setup.options)

  def run_faiss():
    results["faiss"] = faiss_flat_ip_search(setup.queries, setup.keys, setup.k)

  line_jax_times, faiss_times = [], []
  for _ in range(max(1, repeats)):
    line_jax_times.append(median_seconds(run_line_jax, 1))
    if with_faiss:
      faiss_times.append(median_seconds(run_faiss, 1))
  num_queries = len(setup.queries)
  line_jax_seconds = statistics.median(line_jax_times)
  report = dict(line_jax_seconds=line_jax_seconds,
                line_jax_queries_per_s=num_queries / line_jax_seconds,
                line_jax_times=line_jax_times)
  if with_faiss:
    faiss_seconds = statistics.median(faiss_times)
    ratios = [mine / theirs for mine, theirs in zip(line_jax_times, faiss_times)]
    _, faiss_index = results["faiss"]
    report.update(faiss_seconds=faiss_seconds,
                  faiss_queries_per_s=num_queries / faiss_seconds,
                  faiss_times=faiss_times,
                  ratio_line_jax_to_faiss=line_jax_seconds / faiss_seconds,
                  median_paired_ratio=statistics.median(ratios),
                  index_agreement=float(np.mean(faiss_index == results["line_jax"][1])))
  return report
