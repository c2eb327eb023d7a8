"""Throughput benchmarks: residual search, training step, embedding export.

  python -m line_jax.bench --what=search --queries=20000 --dict_size=200000 --dim=384 \
      --k=8 --repeats=3 --compare

The search section (`line_jax.benchmarks.search`) times `search_topk` end to end from host
arrays as the median of `--repeats` runs after a warm-up run that compiles, and with
`--compare` faiss-cpu `IndexFlatIP` on the same data, then prints the ratio line_jax time /
faiss time, and the paper-scale search projected onto a GPU from its FLOP count.

The train and stream sections call `line_jax.benchmarks.train_step`, the paper section
`line_jax.benchmarks.paper`; the export section (`line_jax.benchmarks.export`) times the
bundled MiniLM teacher. This module holds the flags and prints the results.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from absl import app
from absl import flags
import jax

from line_jax.benchmarks import export as bench_export_lib
from line_jax.benchmarks import paper as bench_paper_lib
from line_jax.benchmarks import search as bench_search_lib
from line_jax.benchmarks import train_step as bench_train_lib

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

def bench_search(*, num_queries: int, dict_size: int, dim: int, k: int, repeats: int,
                 compare: bool, use_bf16: bool, memory_budget_mb: float, query_chunk: int,
                 key_chunk: int, seed: int) -> dict[str, Any]:
  """Times line_jax search (and faiss with `compare`); prints and returns the numbers."""
  lib = bench_search_lib
  setup = lib.make_setup(num_queries=num_queries, dict_size=dict_size, dim=dim, k=k,
                         use_bf16=use_bf16, memory_budget_mb=memory_budget_mb,
                         query_chunk=query_chunk, key_chunk=key_chunk, seed=seed)
  print(f"search: Q={num_queries} N={dict_size} d={dim} k={k} bf16={use_bf16} "
        f"query_chunk={setup.query_chunk} key_chunk={setup.options['key_chunk']} "
        f"devices={len(setup.devices)} ({setup.devices[0].platform}) repeats={repeats}",
        flush=True)
  print(f"search: warm-up (compile) {lib.warm_up(setup):.2f} s", flush=True)
  have_faiss = False
  if compare:
    missing = lib.faiss_missing()
    have_faiss = missing is None
    if missing is not None:
      print(f"search: faiss comparison not available ({missing}); "
            "install it with `pip install faiss-cpu` (extra `bench`)")
  if have_faiss:
    lib.warm_up_faiss(setup)
  report = lib.time_search(setup, repeats, have_faiss)
  _print_search(report, lib.search_flops(num_queries, dict_size, dim), num_queries)
  for line in lib.paper_scale_gpu_lines(_GPU_TFLOPS_F32.value, _GPU_TFLOPS_BF16.value):
    print("search: " + line)
  return report


def _print_search(report: dict[str, Any], flops: float, num_queries: int) -> None:
  seconds, times = report["line_jax_seconds"], report["line_jax_times"]
  print(f"search: line_jax {seconds:.3f} s, {num_queries / seconds:,.0f} "
        f"queries/s, {flops / seconds / 1e9:.1f} GFLOP/s (median of "
        f"{len(times)}: {', '.join(f'{t:.2f}' for t in times)} s)", flush=True)
  if "faiss_seconds" not in report:
    return
  faiss_seconds, faiss_times = report["faiss_seconds"], report["faiss_times"]
  print(f"search: faiss IndexFlatIP {faiss_seconds:.3f} s, "
        f"{num_queries / faiss_seconds:,.0f} queries/s, "
        f"{flops / faiss_seconds / 1e9:.1f} GFLOP/s (median of {len(faiss_times)}: "
        f"{', '.join(f'{t:.2f}' for t in faiss_times)} s)", flush=True)
  print(f"search: ratio line_jax_time/faiss_time = {seconds / faiss_seconds:.3f} "
        f"(median of paired ratios {report['median_paired_ratio']:.3f}; indices equal to "
        f"faiss: {report['index_agreement']:.2%})", flush=True)


def run_section(name: str, run: Callable[[], dict[str, Any]]) -> None:
  """Runs one section; a section whose code is not there yet is reported, not fatal."""
  try:
    result = run()
  except ImportError as error:
    print(f"{name} bench: not available ({error})", flush=True)
    return
  print(f"{name} bench: {result}", flush=True)


def bench_train() -> dict[str, Any]:
  """For each --batch_sizes: the builders alone, the step alone and the whole loop, in
  pairs/s, and loop / step."""
  results = {}
  for size in (int(b) for b in _BATCH_SIZES.value):
    r = bench_train_lib.bench_train_step(
        batch_size=size, dim=_DIM.value, concepts_per_pair=_CONCEPTS_PER_PAIR.value,
        fanout=_FANOUT.value, num_relations=_NUM_RELATIONS.value, steps=_STEPS.value,
        repeats=_REPEATS.value)
    print(f"train: B={size} d={_DIM.value} devices={r['devices']} "
          f"({jax.devices()[0].device_kind}): builder alone "
          f"{r['pairs_per_s_device_builder']:,.0f} "
          f"pairs/s on the device, {r['pairs_per_s_host_builder']:,.0f} on the host; step "
          f"alone {r['pairs_per_s_step']:,.0f} pairs/s ({r['step_ms_median']:.2f} ms); loop "
          f"{r['pairs_per_s_loop']:,.0f} pairs/s = {r['loop_over_step']:.2f} x the step "
          f"(CPU time per step: step {r['step_cpu_ms']:.1f} ms, loop {r['loop_cpu_ms']:.1f} ms) "
          f"(host-built loop {r['pairs_per_s_loop_host_builder']:,.0f})", flush=True)
    if jax.default_backend() == "cpu":
      print("train: " + bench_train_lib.train_gpu_projection(
          r, _GPU_TFLOPS_F32.value, _GPU_BANDWIDTH.value, _GPU_LAUNCH_US.value), flush=True)
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
  return bench_export_lib.bench_export(_EXPORT_ROWS.value, _REPEATS.value, _SEED.value)


def bench_stream() -> dict[str, Any]:
  return bench_train_lib.bench_streaming(
      num_pairs=_STREAM_PAIRS.value, num_concepts=_STREAM_CONCEPTS.value,
      num_edges=_STREAM_EDGES.value, dim=_DIM.value, steps=_STREAM_STEPS.value,
      batch_size=_BATCH_SIZE.value, workdir=_STREAM_DIR.value,
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
