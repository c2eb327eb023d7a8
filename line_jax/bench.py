"""Throughput benchmarks: residual search, training step, embedding export.

  python -m line_jax.bench --what=search --queries=20000 --dict_size=200000 --dim=384 \
      --k=8 --repeats=3 --compare

The search section times `line_jax.search.topk.search_topk` end to end from host arrays
(placing and normalising the dictionary included) as the median of `--repeats` runs after a
warm-up run that compiles, and with `--compare` times faiss-cpu `IndexFlatIP` on the same
normalised data in the same process (normalising copies, `add` and `search` included), then
prints the ratio line_jax time / faiss time. It also projects the paper-scale search
(7.2M x 4M x 768) onto a GPU from its FLOP count.

The train and stream sections call `line_jax.benchmarks.train_step`; the export section times the
bundled MiniLM teacher (`line_jax.teachers`).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
import jax
import numpy as np

from line_jax.benchmarks import paper as bench_paper_lib
from line_jax.benchmarks import train_step as bench_train_lib
from line_jax.search import topk as search
from line_jax import teachers
from line_jax.config import teacher_config

_SECTIONS = ("search", "train", "export", "stream", "paper")   # "stream" writes GBs and
# "paper" runs the paper's whole schedule: only on request

_WHAT = flags.DEFINE_list("what", ["search", "train", "export"],
                          f"Sections to run, among {_SECTIONS}.")
_COMPARE = flags.DEFINE_bool("compare", False, "Also time faiss-cpu IndexFlatIP on the search.")
_QUERIES = flags.DEFINE_integer("queries", 20000, "Search: number of queries Q.")
_DICT_SIZE = flags.DEFINE_integer("dict_size", 200000, "Search: dictionary size N.")
_DIM = flags.DEFINE_integer("dim", 384, "Embedding dimension d (search and train).")
_K = flags.DEFINE_integer("k", 8, "Search: results per query.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats per measurement (median).")
_USE_BF16 = flags.DEFINE_bool("use_bf16", False, "Search: bf16 scores + float32 re-scoring.")
_MEMORY_BUDGET_MB = flags.DEFINE_float("memory_budget_mb", 1024, "Search: per-device budget.")
_QUERY_CHUNK = flags.DEFINE_integer("query_chunk", 0, "Search: query chunk, 0 = derived.")
_KEY_CHUNK = flags.DEFINE_integer("key_chunk", 0, "Search: key chunk, 0 = derived.")
_SEED = flags.DEFINE_integer("seed", 0, "Random data seed.")
_GPU_TFLOPS_F32 = flags.DEFINE_float(
    "gpu_tflops_f32", 67.0, "GPU float32 (non-tensor-core) peak, TFLOP/s; H100 SXM: 67.")
_GPU_TFLOPS_BF16 = flags.DEFINE_float(
    "gpu_tflops_bf16", 989.0, "GPU bf16 dense tensor-core peak, TFLOP/s; H100 SXM: 989.")
_GPU_BANDWIDTH = flags.DEFINE_float(
    "gpu_bandwidth_tb_s", 3.35, "GPU memory bandwidth, TB/s; H100 SXM: 3.35.")
_GPU_LAUNCH_US = flags.DEFINE_float(
    "gpu_kernel_launch_us", 4.0, "GPU time per kernel launch of a step, microseconds.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Stream and paper: pairs per step.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["128"], "Train: the batch sizes measured, "
                                 "each in turn (e.g. 128,1024).")
_SCALE = flags.DEFINE_float("scale", 0.001, "Paper: the paper's pairs, concepts and edges "
                            "times this (1 = 7.2M pairs, 4M concepts, 25M edges).")
_PAPER_DIR = flags.DEFINE_string("paper_dir", "", "Paper: work dir (default: a new "
                                 "temporary folder).")
_CONCEPTS_PER_PAIR = flags.DEFINE_integer("concepts_per_pair", 8,
                                          "Train: mean concepts per pair (Poisson).")
_FANOUT = flags.DEFINE_integer("fanout", 8, "Train: sampled neighbours per relation type.")
_NUM_RELATIONS = flags.DEFINE_integer("num_relations", 7, "Train: relation types.")
_STEPS = flags.DEFINE_integer("steps", 20, "Train: distinct batches, each timed --repeats "
                               "times (the median step is reported; shared machines are noisy).")
_EXPORT_ROWS = flags.DEFINE_integer("export_rows", 4096, "Export: rows embedded.")
_STREAM_PAIRS = flags.DEFINE_integer("stream_pairs", 2_000_000, "Stream: pairs on disk.")
_STREAM_CONCEPTS = flags.DEFINE_integer("stream_concepts", 500_000, "Stream: concepts.")
_STREAM_EDGES = flags.DEFINE_integer("stream_edges", 5_000_000, "Stream: graph edges.")
_STREAM_STEPS = flags.DEFINE_integer("stream_steps", 100, "Stream: train steps timed.")
_STREAM_RECOVERY_PAIRS = flags.DEFINE_integer(
    "stream_recovery_pairs", 0, "Stream: after the train steps, residual recovery over this "
    "many pairs (0: none); its time and the peak RSS with it are reported.")
_STREAM_RECOVERY_BLOCK = flags.DEFINE_integer(
    "stream_recovery_block", 0, "Stream: recovery.pair_block for that recovery (0: the "
    "config's default).")
_STREAM_DIR = flags.DEFINE_string("stream_dir", "", "Stream: folder for the memmaps "
                                  "(default: a new temporary folder).")

# Residual recovery at paper scale: 7.2M pairs against a 4M-concept dictionary.
PAPER_QUERIES = 7_200_000
PAPER_DICT_SIZE = 4_000_000
PAPER_DIM = 768


def median_seconds(run: Callable[[], Any], repeats: int) -> float:
  """Median wall time of `repeats` calls of `run` (call it once before, to compile)."""
  times = []
  for _ in range(max(1, repeats)):
    started = time.perf_counter()
    run()
    times.append(time.perf_counter() - started)
  return statistics.median(times)


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


def bench_search(*, num_queries: int, dict_size: int, dim: int, k: int, repeats: int,
                 compare: bool, use_bf16: bool, memory_budget_mb: float, query_chunk: int,
                 key_chunk: int, seed: int) -> dict[str, Any]:
  """Times line_jax search (and faiss with `compare`); prints and returns the numbers."""
  rng = np.random.default_rng(seed)
  queries = random_unit_rows(rng, num_queries, dim)
  keys = random_unit_rows(rng, dict_size, dim)
  devices = jax.devices()
  query_chunk, key_chunk = search.derive_chunk_sizes(
      num_queries, -(-dict_size // len(devices)), dim, k, memory_budget_mb=memory_budget_mb,
      query_chunk=query_chunk, key_chunk=key_chunk, use_bf16=use_bf16)
  options = dict(memory_budget_mb=memory_budget_mb, query_chunk=query_chunk,
                 key_chunk=key_chunk, use_bf16=use_bf16)
  print(f"search: Q={num_queries} N={dict_size} d={dim} k={k} bf16={use_bf16} "
        f"query_chunk={query_chunk} key_chunk={key_chunk} devices={len(devices)} "
        f"({devices[0].platform}) repeats={repeats}", flush=True)

  started = time.perf_counter()
  search.search_topk(queries[:query_chunk], keys, k, **options)
  print(f"search: warm-up (compile) {time.perf_counter() - started:.2f} s", flush=True)
  results = {}

  def run_line_jax():
    results["line_jax"] = search.search_topk(queries, keys, k, **options)

  def run_faiss():
    results["faiss"] = faiss_flat_ip_search(queries, keys, k)

  have_faiss = False
  if compare:
    try:
      import faiss  # pylint: disable=g-import-not-at-top,unused-import
      have_faiss = True
    except ImportError as error:
      print(f"search: faiss comparison not available ({error}); "
            "install it with `pip install faiss-cpu` (extra `bench`)")
  if have_faiss:
    faiss_flat_ip_search(queries[:query_chunk], keys, k)   # warm-up, as for line_jax
  # Repeats alternate between the two, so that load from other processes hits both alike.
  line_jax_times, faiss_times = [], []
  for _ in range(max(1, repeats)):
    line_jax_times.append(median_seconds(run_line_jax, 1))
    if have_faiss:
      faiss_times.append(median_seconds(run_faiss, 1))
  line_jax_seconds = statistics.median(line_jax_times)
  flops = search_flops(num_queries, dict_size, dim)
  report = dict(line_jax_seconds=line_jax_seconds,
                line_jax_queries_per_s=num_queries / line_jax_seconds,
                line_jax_times=line_jax_times)
  print(f"search: line_jax {line_jax_seconds:.3f} s, {num_queries / line_jax_seconds:,.0f} "
        f"queries/s, {flops / line_jax_seconds / 1e9:.1f} GFLOP/s (median of "
        f"{len(line_jax_times)}: {', '.join(f'{t:.2f}' for t in line_jax_times)} s)",
        flush=True)
  if have_faiss:
    faiss_seconds = statistics.median(faiss_times)
    ratios = [mine / theirs for mine, theirs in zip(line_jax_times, faiss_times)]
    _, faiss_index = results["faiss"]
    agreement = float(np.mean(faiss_index == results["line_jax"][1]))
    report.update(faiss_seconds=faiss_seconds,
                  faiss_queries_per_s=num_queries / faiss_seconds,
                  faiss_times=faiss_times,
                  ratio_line_jax_to_faiss=line_jax_seconds / faiss_seconds,
                  median_paired_ratio=statistics.median(ratios),
                  index_agreement=agreement)
    print(f"search: faiss IndexFlatIP {faiss_seconds:.3f} s, "
          f"{num_queries / faiss_seconds:,.0f} queries/s, "
          f"{flops / faiss_seconds / 1e9:.1f} GFLOP/s (median of {len(faiss_times)}: "
          f"{', '.join(f'{t:.2f}' for t in faiss_times)} s)", flush=True)
    print(f"search: ratio line_jax_time/faiss_time = {line_jax_seconds / faiss_seconds:.3f} "
          f"(median of paired ratios {statistics.median(ratios):.3f}; indices equal to "
          f"faiss: {agreement:.2%})", flush=True)
  for line in paper_scale_gpu_lines(_GPU_TFLOPS_F32.value, _GPU_TFLOPS_BF16.value):
    print("search: " + line)
  return report


def run_section(name: str, run: Callable[[], dict[str, Any]]) -> None:
  """Runs one section; a section whose code is not there yet is reported, not fatal."""
  try:
    result = run()
  except ImportError as error:
    print(f"{name} bench: not available ({error})", flush=True)
    return
  print(f"{name} bench: {result}", flush=True)


def train_gpu_projection(result: dict[str, Any], tflops_f32: float, bandwidth_tb_s: float,
                         launch_us: float) -> str:
  """Projected GPU pairs/s of the measured step from its FLOP and byte counts: float32
  FLOPs at the float32 peak, the edge slab at the memory bandwidth, plus one launch per
  kernel of the step compiled for CPU on the XLA path, which a GPU runs (the fused CPU
  kernel is CPU-only; XLA:GPU fuses at least as much as XLA:CPU)."""
  flop_s = result["gflop_per_step_est"] * 1e9 / (tflops_f32 * 1e12)
  byte_s = result["edge_slab_mb_moved_per_step_est"] * 2**20 / (bandwidth_tb_s * 1e12)
  launches = result.get("kernels_per_step_xla_path", result["kernels_per_step"])
  launch_s = launches * launch_us * 1e-6
  step_s = flop_s + byte_s + launch_s
  return (f"projected GPU step {1e3 * step_s:.2f} ms = FLOPs {1e3 * flop_s:.3f} + edge slab "
          f"{1e3 * byte_s:.3f} + {launches} launches {1e3 * launch_s:.3f} "
          f"ms -> {result['batch_size'] / step_s:,.0f} pairs/s at {tflops_f32:g} TFLOP/s, "
          f"{bandwidth_tb_s:g} TB/s, {launch_us:g} us per launch (not measured)")


def bench_train() -> dict[str, Any]:
  """For each --batch_sizes: the builders alone, the step alone and the whole loop, in
  pairs/s, and loop / step."""
  results = {}
  for size in (int(b) for b in _BATCH_SIZES.value):
    r = bench_train_lib.bench_train_step(batch_size=size, dim=_DIM.value,
                              concepts_per_pair=_CONCEPTS_PER_PAIR.value, fanout=_FANOUT.value,
                              num_relations=_NUM_RELATIONS.value, steps=_STEPS.value,
                              repeats=_REPEATS.value)
    print(f"train: B={size} d={_DIM.value} devices={r['devices']} "
          f"({jax.devices()[0].device_kind}): builder alone {r['pairs_per_s_device_builder']:,.0f} "
          f"pairs/s on the device, {r['pairs_per_s_host_builder']:,.0f} on the host; step "
          f"alone {r['pairs_per_s_step']:,.0f} pairs/s ({r['step_ms_median']:.2f} ms); loop "
          f"{r['pairs_per_s_loop']:,.0f} pairs/s = {r['loop_over_step']:.2f} x the step "
          f"(CPU time per step: step {r['step_cpu_ms']:.1f} ms, loop {r['loop_cpu_ms']:.1f} ms) "
          f"(host-built loop {r['pairs_per_s_loop_host_builder']:,.0f})", flush=True)
    if jax.default_backend() == "cpu":
      print("train: " + train_gpu_projection(r, _GPU_TFLOPS_F32.value, _GPU_BANDWIDTH.value,
                                             _GPU_LAUNCH_US.value), flush=True)
    results[size] = r
  return results


def bench_paper() -> dict[str, Any]:
  r = bench_paper_lib.bench_paper(scale=_SCALE.value, batch_size=_BATCH_SIZE.value,
                                  workdir=_PAPER_DIR.value)
  print(f"paper: scale {r['scale']:g} ({r['pairs']:,} pairs, {r['concepts']:,} concepts, "
        f"{r['edges']:,} edges, d={r['dim']}, B={r['batch_size']}, {r['devices']} "
        f"{r['backend']} device(s)): stage 1 {r['stage1_s']:.1f} s "
        f"({r['stage1_pairs_per_s']:,.0f} pairs/s), recovery {r['recovery_s']:.1f} s, "
        f"stage 2 {r['stage2_s']:.1f} s ({r['stage2_pairs_per_s']:,.0f} pairs/s), schedule "
        f"{r['schedule_s']:.1f} s; projected to the paper's size: stages "
        f"{r['projected_full_stages_s'] / 60:.1f} min + recovery "
        f"{r['projected_full_recovery_s'] / 60:.1f} min = "
        f"{r['projected_full_schedule_s'] / 60:.1f} min", flush=True)
  return r


def bench_export() -> dict[str, Any]:
  """Rows/s of the bundled MiniLM teacher on short concept-like names and ~20-word sentences
  (scripts/bench_export.py also times transformers-PyTorch when torch is installed)."""
  rng = np.random.default_rng(_SEED.value)
  words = ("abnormal", "cardiac", "renal", "seizure", "fever", "chronic", "left", "hypoplasia",
           "of", "the", "muscle", "defect", "skin", "eye", "retinal", "pain", "acute")
  names = [" ".join(rng.choice(words, rng.integers(1, 5))) for _ in range(_EXPORT_ROWS.value)]
  sentences = [" ".join(rng.choice(words, 20)) for _ in range(_EXPORT_ROWS.value // 4)]
  encoder = teachers.load_encoder(teacher_config(model="all-MiniLM-L6-v2", preset="minilm"))
  result = {}
  for label, texts in (("names", names), ("sentences", sentences)):
    encoder.encode(texts[:256])                     # compile the common buckets
    seconds = median_seconds(lambda texts=texts: encoder.encode(texts), _REPEATS.value)
    result[f"{label}_rows_per_s"] = len(texts) / seconds
  result["compilations"] = encoder.compile_count
  return result


def bench_stream() -> dict[str, Any]:
  return bench_train_lib.bench_streaming(num_pairs=_STREAM_PAIRS.value, num_concepts=_STREAM_CONCEPTS.value,
                         num_edges=_STREAM_EDGES.value, dim=_DIM.value,
                         steps=_STREAM_STEPS.value, batch_size=_BATCH_SIZE.value,
                         workdir=_STREAM_DIR.value,
                         recovery_pairs=_STREAM_RECOVERY_PAIRS.value,
                         recovery_pair_block=_STREAM_RECOVERY_BLOCK.value)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  unknown = sorted(set(_WHAT.value) - set(_SECTIONS))
  if unknown:
    raise app.UsageError(f"--what: unknown sections {unknown}; choose among {_SECTIONS}")
  for name in _SECTIONS:
    if name not in _WHAT.value:
      continue
    if name == "search":
      run_section(name, lambda: bench_search(
          num_queries=_QUERIES.value, dict_size=_DICT_SIZE.value, dim=_DIM.value, k=_K.value,
          repeats=_REPEATS.value, compare=_COMPARE.value, use_bf16=_USE_BF16.value,
          memory_budget_mb=_MEMORY_BUDGET_MB.value, query_chunk=_QUERY_CHUNK.value,
          key_chunk=_KEY_CHUNK.value, seed=_SEED.value))
    elif name == "train":
      run_section(name, bench_train)
    elif name == "stream":
      run_section(name, bench_stream)
    elif name == "paper":
      run_section(name, bench_paper)
    else:
      run_section(name, bench_export)


if __name__ == "__main__":
  app.run(main)
