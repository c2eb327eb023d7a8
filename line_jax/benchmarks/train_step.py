"""Train-step throughput and streaming memory on synthetic data of a chosen size.

`bench_train_step` times the batch builders alone (host and device), the compiled step
alone (batches built beforehand) and the whole loop (the fused build-and-step on the
devices; and, for comparison, host building in the prefetch thread + step), and counts
compilations.
`bench_streaming` writes a large synthetic dataset to disk (memmapped float16 embeddings)
and trains over it, reporting peak resident memory.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time

import jax
import numpy as np

from jax.sharding import PartitionSpec as P

from line_jax import config as config_lib
from line_jax.training import device_batches
from line_jax.cache import store as emb_lib
from line_jax.training import host_batches as pipeline
from line_jax.training import recovery as recovery_lib
from line_jax.training import objective as objective_lib
from line_jax.training import step as step_lib
from line_jax.training import trainer as trainer_lib
from line_jax.data.dataset import Dataset
from line_jax.benchmarks.timing import timed


def synthetic_dataset(num_pairs: int, num_concepts: int, num_edges: int, num_relations: int,
                      concepts_per_pair: float, seed: int = 0) -> Dataset:
  """An in-memory Dataset with random lists (Poisson lengths, >= 1) and a random graph."""
  rng = np.random.default_rng(seed)
  lengths = np.maximum(1, rng.poisson(concepts_per_pair, num_pairs))
  offsets = np.zeros(num_pairs + 1, np.int64)
  np.cumsum(lengths, out=offsets[1:])
  flat = rng.integers(0, num_concepts, offsets[-1]).astype(np.int32)
  negated = rng.random(offsets[-1]) < 0.1
  ids = np.asarray([f"C{j}" for j in range(num_concepts)], object)
  return Dataset(
      root="<synthetic benchmark>", concept_ids=ids, names=ids, negated_names=ids,
      groups=None, relation_types=tuple(f"r{k}" for k in range(num_relations)),
      edge_head=rng.integers(0, num_concepts, num_edges).astype(np.int32),
      edge_tail=rng.integers(0, num_concepts, num_edges).astype(np.int32),
      edge_type=rng.integers(0, num_relations, num_edges).astype(np.int32),
      heldout_head=np.zeros(0, np.int32), heldout_tail=np.zeros(0, np.int32),
      heldout_relation=np.zeros(0, object),
      pair_ids=np.asarray([f"P{i}" for i in range(num_pairs)], object),
      texts=np.asarray([""] * num_pairs, object), concept_offsets=offsets, concept_flat=flat,
      negated_flat=negated, rho=rng.uniform(0.2, 1.0, num_pairs).astype(np.float32),
      split=np.asarray(["train"] * num_pairs, object), labels=None)


def _teachers(dataset: Dataset, dim: int, text=None, concepts=None, negated=None, seed=0):
  rng = np.random.default_rng(seed)
  make = lambda n: rng.standard_normal((n, dim), np.float32).astype(np.float16)
  t1 = emb_lib.TeacherEmbeddings(text if text is not None else make(dataset.num_pairs),
                                 make(1), make(1), {}, "<memory>")
  c = concepts if concepts is not None else make(dataset.num_concepts)
  n = negated if negated is not None else make(dataset.num_concepts)
  t2 = emb_lib.TeacherEmbeddings(make(1), c, n, {}, "<memory>")
  return t1, t2


def _device_builder(trainer, shapes):
  """The device batch builder alone, jitted as the step runs it: each device builds its
  own shard."""
  spec = trainer.builder_spec
  return jax.jit(jax.shard_map(
      lambda tables, pairs, step: jax.tree.map(lambda x: x[None], device_batches.build_shard(
          tables, pairs, step, jax.lax.axis_index(objective_lib.AXIS), shapes, spec)),
      mesh=trainer.mesh, in_specs=(P(), P(), P()), out_specs=P(objective_lib.AXIS)))


def _time_builders(trainer, shapes, order: np.ndarray, bounds: list, repeats: int):
  """(host builder times, device builder times, the batches built on the devices)."""
  # The host builder alone (the reference; what training ran before batches were built on
  # the device).
  host_times = []
  for i, (lo, hi) in enumerate(bounds):
    t0 = time.perf_counter()
    trainer.builder.build(order[lo:hi], i)
    host_times.append(time.perf_counter() - t0)
  build = _device_builder(trainer, shapes)
  pair_rows = [order[lo:hi].astype(np.int32) for lo, hi in bounds]
  tables = trainer.device_tables
  jax.block_until_ready(build(tables, pair_rows[0], np.int32(0)))
  device_times = []
  for i, rows in enumerate(pair_rows[1:], 1):
    device_times += timed(lambda: jax.block_until_ready(build(tables, rows, np.int32(i))),
                          repeats)
  batches = [build(tables, rows, np.int32(i)) for i, rows in enumerate(pair_rows)]
  return host_times, device_times, batches


def _compile_step(trainer, state, batches: list):
  """The host-fed step's first call: (state, compile seconds, compilations)."""
  compiled_before = step_lib.COMPILATIONS["train_step"]
  t0 = time.perf_counter()
  state, m = trainer.train_step(state, batches[0], trainer.concept_table,
                                trainer.negated_table)
  jax.block_until_ready(m)
  return (state, time.perf_counter() - t0,
          step_lib.COMPILATIONS["train_step"] - compiled_before)


def _time_rounds(trainer, state, batches: list, order: np.ndarray, batch_size: int,
                 repeats: int, prefetch: int):
  """The step alone (on batches already on the devices), the loop (what training runs:
  `Trainer.step_inputs` in the prefetch thread, then `Trainer.apply_step`) and the loop
  with host-built batches, alternating round by round, so that load from other processes
  falls on each alike. Returns (state, {name: [(wall s, CPU s) per step, one per round]},
  minor page faults per step)."""
  kind, n = trainer.builder_kind, len(batches) - 1

  def step_pass():
    nonlocal state
    for batch in batches[1:]:
      state, m = trainer.train_step(state, batch, trainer.concept_table,
                                    trainer.negated_table)
      jax.block_until_ready(m)

  def loop_pass(builder):
    nonlocal state
    trainer.builder_kind = builder
    make = lambda bi: trainer.step_inputs(order[bi * batch_size:(bi + 1) * batch_size], bi)
    for _, inputs in pipeline.prefetched(make, 1, n + 1, prefetch):
      state, m = trainer.apply_step(state, inputs)
    jax.block_until_ready(m)

  for builder in {kind, "host"}:      # compile the fused step (and the host-fed one)
    trainer.builder_kind = builder
    state, m = trainer.apply_step(state, trainer.step_inputs(order[:batch_size], 0))
    jax.block_until_ready(m)
  faults_before = _minor_faults()
  rounds = {"step": [], "loop": [], "loop_host": []}
  for _ in range(max(1, repeats)):
    for name, run in (("step", step_pass), ("loop", lambda: loop_pass(kind)),
                      ("loop_host", lambda: loop_pass("host"))):
      wall, cpu = time.perf_counter(), _cpu_seconds()
      run()
      rounds[name].append(((time.perf_counter() - wall) / n, (_cpu_seconds() - cpu) / n))
  trainer.builder_kind = kind
  return state, rounds, (_minor_faults() - faults_before) / (3 * n * max(1, repeats))


def _kernel_counts(trainer, cfg, state, batch, num_relations: int) -> tuple:
  """Kernels per step of the compiled step, and of the XLA path a GPU runs (the fused
  kernel is CPU-only), for projections."""
  lower_args = (state, batch, trainer.concept_table, trainer.negated_table)
  kernels = count_kernels(trainer.train_step.lower(*lower_args).compile().as_text())
  xla_step = step_lib.make_train_step(cfg, num_relations, trainer.mesh, trainer.optimizer,
                                       cpu_kernel=False)
  return kernels, count_kernels(xla_step.lower(*lower_args).compile().as_text())


def bench_train_step(batch_size: int = 128, dim: int = 768, concepts_per_pair: float = 8,
                     fanout: int = 8, num_relations: int = 7, steps: int = 20,
                     num_concepts: int = 50000, num_edges: int = 400000, devices=None,
                     repeats: int = 3, config=None) -> dict:
  """Pairs/s of the batch builders alone, of the train step alone (on ready batches) and of
  the whole loop (what training runs: `Trainer.step_inputs` in the prefetch thread, then
  `Trainer.apply_step`), at the given sizes; medians over `steps` batches, each timed
  `repeats` times (shared machines are noisy), and the loop's ratio to the step.

  `config`: the run's config (default: the base config, the paper's objective); its batch
  size, fanout and builder (train.batch_builder) are set from the arguments."""
  cfg = config_lib.base_config() if config is None else config
  cfg.train.batch_size = batch_size
  cfg.graph.fanout = fanout
  num_pairs = batch_size * (steps + 2)
  ds = synthetic_dataset(num_pairs, num_concepts, num_edges, num_relations, concepts_per_pair)
  workdir = tempfile.mkdtemp(prefix="line_bench_")
  trainer = trainer_lib.Trainer(cfg, workdir, devices, dataset=ds, teachers=_teachers(ds, dim))
  state = trainer.init_state()
  order = np.arange(num_pairs)
  shapes = device_batches.plan_capacities(trainer.device_tables, [order], 0,
                                          trainer.base_shapes, trainer.builder_spec)
  trainer.builder.shapes = shapes
  bounds = [(i * batch_size, (i + 1) * batch_size) for i in range(steps + 2)]
  host_times, device_times, batches = _time_builders(trainer, shapes, order, bounds, repeats)
  state, compile_s, step_compilations = _compile_step(trainer, state, batches)
  kind = trainer.builder_kind
  state, rounds, faults_per_step = _time_rounds(trainer, state, batches, order, batch_size,
                                                repeats, cfg.train.prefetch)
  med = lambda name, i: float(np.median([r[i] for r in rounds[name]]))
  step_s, loop_s, loop_host_s = med("step", 0), med("loop", 0), med("loop_host", 0)
  ratios = [s_[0] / l_[0] for s_, l_ in zip(rounds["step"], rounds["loop"])]
  times = [r[0] for r in rounds["step"]]
  kernels, kernels_xla = _kernel_counts(trainer, cfg, state, batches[0], num_relations)
  host_s, device_build_s = float(np.median(host_times[1:])), float(np.median(device_times))
  return {
      "batch_size": batch_size, "dim": dim, "concepts_per_pair": concepts_per_pair,
      "fanout": fanout, "relation_types": num_relations, "devices": trainer.mesh.size,
      "batch_builder": kind, "text_streamed": trainer.streamed_text,
      "receivers_per_shard": shapes.receivers, "edges_per_shard": shapes.edges,
      "step_ms_median": 1e3 * step_s, "pairs_per_s_step": batch_size / step_s,
      "step_ms_quartiles": [round(1e3 * float(q), 2) for q in np.percentile(times, [25, 75])],
      "table_dtype": str(trainer.concept_table.dtype),
      "g_edge_attention": "cpu_kernel" if trainer.cpu_kernel else "xla",
      "page_faults_per_step": round(faults_per_step),   # see line_jax/util/host_memory.py
      "host_batch_ms": 1e3 * host_s, "pairs_per_s_host_builder": batch_size / host_s,
      "device_batch_ms": 1e3 * device_build_s,
      "pairs_per_s_device_builder": batch_size / device_build_s,
      "pairs_per_s_loop": batch_size / loop_s,
      "loop_over_step": float(np.median(ratios)),   # median of the rounds' ratios
      "step_cpu_ms": 1e3 * med("step", 1), "loop_cpu_ms": 1e3 * med("loop", 1),
      "pairs_per_s_loop_host_builder": batch_size / loop_host_s,
      "compile_s": compile_s,
      "compilations": step_compilations,
      "kernels_per_step": kernels,
      "kernels_per_step_xla_path": kernels_xla,
      **step_cost(shapes, dim, num_relations),
  }


def train_gpu_projection(result: dict, tflops_f32: float, bandwidth_tb_s: float,
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


def count_kernels(hlo_text: str) -> int:
  """Instructions of a compiled module's entry computation that run as kernels (fusions,
  dots, scatters, collectives, copies; not parameters, constants, tuples or bitcasts)."""
  entry = hlo_text[hlo_text.index("ENTRY"):]
  free = ("parameter(", "constant(", "tuple(", "get-tuple-element(", "bitcast(")
  return sum(1 for line in entry.splitlines()
             if " = " in line and not any(op in line for op in free))


def step_cost(sh: pipeline.BatchShapes, dim: int, num_types: int) -> dict:
  """FLOPs and edge-slab bytes of one train step at these shapes (d_t = d_c = d).

  G over E edge slots: the logits ([E, d] x [d, K]) and the logit weights' gradient
  (the same size), the per-block weighted sum and its transpose (2 E d each). The loss's
  projections: W_c over 2b pair means + 3 Rs relational + 2 V negation rows, the negation
  projector over b + V rows, F over b texts; each is one forward and two backward matmuls
  (F: one, texts are frozen). The in-batch distances: [b, d] x [d, B], forward + backward.
  On the XLA path the [E, d] float32 slab of neighbour rows is written once (gather) and
  read four times; the fused CPU kernel (`line_jax.model.kernels`) writes no slab and reads each
  neighbour row twice (forward, backward).
  """
  b, e, v, rs = sh.pairs_per_shard, sh.edges, sh.negated_slots, sh.relational_edges
  g_flop = 2 * (2 * e * dim * num_types) + 2 * (2 * e * dim)
  proj_rows = 3 * (2 * b + 3 * rs + 2 * v + b + v) + 2 * b
  flop = g_flop + 2 * proj_rows * dim * dim + 3 * 2 * b * sh.batch_size * dim
  return {"gflop_per_step_est": flop / 1e9, "g_share_of_flop": g_flop / flop,
          "edge_slab_mb_moved_per_step_est": 5 * e * dim * 4 / 2**20,
          "cpu_kernel_edge_mb_read_per_step_est": 2 * e * dim * 4 / 2**20}


def _cpu_seconds() -> float:
  """This process's CPU time (user + system, every thread)."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _minor_faults() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def peak_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def bench_streaming(num_pairs: int = 2_000_000, num_concepts: int = 500_000,
                    num_edges: int = 5_000_000, dim: int = 768, steps: int = 200,
                    batch_size: int = 128, workdir: str = "", recovery_pairs: int = 0,
                    recovery_pair_block: int = 0) -> dict:
  """Trains `steps` steps over memmapped float16 embeddings of the given size; peak RSS.

  With `recovery_pairs`, residual recovery then runs over that many pairs (in blocks of
  `recovery_pair_block`, 0: the config's), and its time and the peak RSS with it are added.
  """
  workdir = workdir or tempfile.mkdtemp(prefix="line_stream_")
  os.makedirs(workdir, exist_ok=True)
  rng = np.random.default_rng(0)

  def memmap(name, rows):
    # Written in blocks with plain file writes (a writable mapping would keep the dirty
    # pages in this process's RSS and blur the training figure), then opened as a memmap.
    path = os.path.join(workdir, name)
    with open(path, "wb") as f:
      np.lib.format.write_array_header_1_0(
          f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
              "fortran_order": False, "shape": (rows, dim)})
      for s in range(0, rows, 65536):
        f.write(rng.standard_normal((min(65536, rows - s), dim), np.float32)
                .astype(np.float16).tobytes())
    return emb_lib.open_npy(path)

  t0 = time.perf_counter()
  text = memmap("text.npy", num_pairs)
  concepts = memmap("concepts.npy", num_concepts)
  negated = memmap("negated.npy", num_concepts)
  write_s = time.perf_counter() - t0
  ds = synthetic_dataset(num_pairs, num_concepts, num_edges, 7, 8)
  cfg = config_lib.base_config()
  cfg.train.batch_size = batch_size
  teachers = _teachers(ds, dim, text=text, concepts=concepts, negated=negated)
  trainer = trainer_lib.Trainer(cfg, workdir, dataset=ds, teachers=teachers)
  state = trainer.init_state()
  rss_setup = peak_rss_gib()
  order = pipeline.epoch_order(np.arange(num_pairs), 0, 1, 0)[:steps * batch_size]
  trainer.builder.shapes = device_batches.plan_capacities(
      trainer.device_tables, [order], 0, trainer.base_shapes, trainer.builder_spec)
  make = lambda bi: trainer.step_inputs(order[bi * batch_size:(bi + 1) * batch_size], bi)
  t0 = time.perf_counter()
  for _, inputs in pipeline.prefetched(make, 0, -(-len(order) // batch_size), 2):
    state, m = trainer.apply_step(state, inputs)
  jax.block_until_ready(m)
  train_s = time.perf_counter() - t0
  result = {"pairs": num_pairs, "concepts": num_concepts, "edges": num_edges, "dim": dim,
            "text_embeddings_gib": num_pairs * dim * 2 / 2**30, "steps": steps,
            "write_s": write_s, "train_s": train_s, "pairs_per_s": steps * batch_size / train_s,
            "text_streamed": trainer.streamed_text,
            "peak_rss_gib_after_setup": rss_setup, "peak_rss_gib": peak_rss_gib()}
  if recovery_pairs:
    if recovery_pair_block:
      cfg.recovery.pair_block = recovery_pair_block
    t0 = time.perf_counter()
    _, info = recovery_lib.recover(state["params"], trainer.lists, text, trainer.table,
                                   trainer.concept_table, trainer.negated_table, cfg,
                                   np.arange(min(recovery_pairs, num_pairs)))
    result.update(recovery_pairs=info["pairs"], recovery_pair_block=int(cfg.recovery.pair_block),
                  recovery_s=time.perf_counter() - t0,
                  peak_rss_gib_with_recovery=peak_rss_gib())
  return result
