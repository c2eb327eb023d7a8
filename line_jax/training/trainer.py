"""Trains LINE: stage 1, residual recovery, stage 2; resumable from orbax checkpoints.

`train(config, workdir)` is what `python -m line_jax.train` runs before it evaluates.
One code path for one and many devices: the batch is split into one shard per device
(`line_jax.training.host_batches`), the loss runs under `jax.shard_map` over a 1-D mesh ("data"),
parameters are replicated and gradients are all-reduced by the transpose of that replication.
Many processes (`jax.distributed`): pass --distributed (or call jax.distributed.initialize()
first); see launch/. Every process builds the same batch plan and runs the same steps;
process 0 alone writes the work dir (`line_jax.util.processes`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from line_jax.training import checkpoint as ckpt_lib
from line_jax.training import device_batches
from line_jax.cache import export as exporter
from line_jax.util import files
from line_jax.model import graph as graph_lib
from line_jax.training import guards
from line_jax.util import host_memory
from line_jax.model import kernels
from line_jax.model import losses as losses_lib
from line_jax.model import network as model_lib
from line_jax.util import processes as multihost
from line_jax.training import host_batches as pipeline
from line_jax.training import recovery as recovery_lib
from line_jax.training import state as state_lib
from line_jax.model import tables
from line_jax import teachers as teachers_lib
from line_jax.search import terms as terms_lib
from line_jax.teachers import finetune
from line_jax.training import workdir as workdir_lib
from line_jax.data import prepare_dataset

AXIS = "data"
BATCH_BUILDERS = ("device", "host")   # config train.batch_builder
COMPILATIONS = {"train_step": 0}   # incremented at trace time: one per compilation


def make_mesh(devices=None) -> jax.sharding.Mesh:
  devices = list(devices if devices is not None else jax.devices())
  return jax.sharding.Mesh(np.asarray(devices), (AXIS,))


def shard_batch(batch: dict, mesh: jax.sharding.Mesh) -> dict:
  """Host arrays with a leading shard axis -> global arrays split over the mesh's devices."""
  sharding = NamedSharding(mesh, P(AXIS))
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  local = mesh.local_devices
  per = len(local)
  first = jax.process_index() * per
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x[first:first + per],
                                                       x.shape), batch)


@dataclasses.dataclass(frozen=True)
class LossSettings:
  """What the train loss reads from the config (config.loss.*, config.model.*).

  Attributes:
    normalize: L2-normalise F(t) and G(c) before the scores.
    slope: the graph attention's leaky-ReLU slope.
    margin, relational_margin, negation_delta: the three losses' margins.
    per_pair: alignment hinge terms summed per pair, then averaged over pairs.
    align_scale: what that per-pair sum is multiplied by: (loss.align_batch_reference - 1)
      / (B - 1), so that the term weighs as it does at the reference batch size whatever
      train.batch_size is (1 at the reference, and where the reference is 0).
    weights: (alignment, relational, negation, per-concept, uniformity, name) weights of
      the total.
    concept_temperature: the per-concept InfoNCE temperature.
    uniformity_t: the uniformity term's t.
    cpu_kernel: G's edge attention on the fused CPU kernel.
    kernel_threads: that kernel's threads per device.
  """
  normalize: bool
  slope: float
  margin: float
  relational_margin: float
  negation_delta: float
  per_pair: bool
  align_scale: float
  weights: tuple
  concept_temperature: float
  uniformity_t: float
  cpu_kernel: bool
  kernel_threads: int

  @classmethod
  def from_config(cls, config, mesh, cpu_kernel: bool = False) -> "LossSettings":
    lc = config.loss
    # The kernel's threads: each local device of the mesh runs its own call, so they share
    # the cores (4 host-CPU devices on 2 cores would otherwise start 8 threads per step).
    threads = (int(config.model.cpu_kernel_threads)
               or max(1, kernels.usable_cores() // len(mesh.local_devices)))
    return cls(normalize=bool(lc.normalize), slope=float(config.model.leaky_relu_slope),
               margin=lc.margin, relational_margin=lc.relational_margin,
               negation_delta=lc.negation_delta, per_pair=lc.align_reduction == "per_pair",
               align_scale=align_scale(config),
               weights=(lc.align_weight, lc.relational_weight, lc.negation_weight,
                        lc.concept_weight, lc.uniformity_weight,
                        float(lc.get("name_weight", 0.0)),
                        float(lc.get("text_weight", 0.0))),
               concept_temperature=float(lc.concept_temperature),
               uniformity_t=float(lc.uniformity_t),
               cpu_kernel=cpu_kernel, kernel_threads=threads)

  @property
  def needs_receivers(self) -> bool:
    """The per-concept, uniformity, name or text term is on: they read G of the batch's
    concepts."""
    return bool(self.weights[3] or self.weights[4] or self.weights[5] or self.weights[6])


def align_scale(config) -> float:
  """(loss.align_batch_reference - 1) / (train.batch_size - 1) for the per-pair alignment
  sum, else 1: a pair's hinge terms are summed over every other text of the batch, so the
  term (and its gradient) grows with the batch; scaled, it weighs against the other terms
  as it does at the reference batch size, whatever the batch."""
  reference = int(config.loss.get("align_batch_reference", 0))
  if reference < 0 or reference == 1:
    raise ValueError(f"loss.align_batch_reference={reference} must be 0 (off) or >= 2")
  batch = int(config.train.batch_size)
  if not reference or config.loss.align_reduction != "per_pair" or batch < 2:
    return 1.0
  return (reference - 1) / (batch - 1)


def project_batch(params, batch: dict, concept_table, negated_table, num_types: int,
                  settings: LossSettings):
  """One device's batch through LINE: (F(t) [b, d], the pairs' mean G [b, d], G of the
  positive slots the relational and negation losses use, G of the negated slots, and
  W_c of every positive receiver [U, d] (unnormalised, no negation projector) where
  `settings.needs_receivers`, else None)."""
  normalize = settings.normalize
  num_receivers = batch["receiver_real"].shape[0]
  num_negated = batch["neg_weight"].shape[0]
  u = num_receivers - num_negated
  pooled = model_lib.aggregate_neighbourhoods(params, batch["graph"], concept_table,
                                              negated_table, num_receivers, num_types,
                                              settings.slope, settings.cpu_kernel,
                                              settings.kernel_threads)
  receiver_negated = batch["graph"].nodes["negated"][:num_receivers]
  wc, pn = params["concept_proj"]["w"], params["negation_proj"]
  finish = model_lib.l2_normalize if normalize else (lambda x: x)
  # Slots the relational and negation losses need: rel_* and neg_pos_slot are positive
  # receivers (slots < U), the negated receivers are the V slots from U on.
  positive_slots = jnp.concatenate([batch["rel_head"], batch["rel_tail"],
                                    batch["rel_corrupt"], batch["neg_pos_slot"]])
  neg_slots = u + jnp.arange(num_negated, dtype=jnp.int32)

  t = model_lib.project_text(params, batch["text"])
  w = batch["occ_mask"].astype(jnp.float32)                     # [b, M]
  count = jnp.maximum(w.sum(1), 1.0)[:, None]
  if normalize:
    occ_slot = batch["occ_slot"].reshape(-1)
    occ = finish(model_lib.project_pooled(params, pooled[occ_slot],
                                          receiver_negated[occ_slot]))
    c_mean = jnp.einsum("bm,bmd->bd", w, occ.reshape(*w.shape, -1)) / count
    t = model_lib.l2_normalize(t)
    means = jnp.zeros((0, pooled.shape[1]), pooled.dtype)
  else:
    # G is linear after pooling: the mean of projections is the projection of the mean,
    # per polarity, so W_c runs once per pair instead of once per concept mention.
    occ_pooled = pooled[batch["occ_slot"]]                      # [b, M, d_c]
    neg_w = w * (batch["occ_slot"] >= u)
    means = jnp.concatenate([jnp.einsum("bm,bmc->bc", w - neg_w, occ_pooled),
                             jnp.einsum("bm,bmc->bc", neg_w, occ_pooled)]) / jnp.tile(count,
                                                                                   (2, 1))
  # Every W_c of the step in one matmul, and every negation projector in one more: the
  # pair means (positive, negated), the positive slots, the negated slots.
  nm = means.shape[0] // 2
  projected = jnp.concatenate([means, pooled[positive_slots], pooled[neg_slots]]) @ wc
  n_pos = positive_slots.shape[0]
  neg_in = jnp.concatenate([projected[nm:2 * nm], projected[2 * nm + n_pos:]])
  neg_out = neg_in @ pn["w"]
  g_pos = finish(projected[2 * nm:2 * nm + n_pos])
  g_neg = finish(neg_out[nm:] + pn["b"])
  if not normalize:
    c_mean = (projected[:nm] + neg_out[:nm]
              + (neg_w.sum(1, keepdims=True) / count) * pn["b"])
  g_receivers = pooled[:u] @ wc if settings.needs_receivers else None
  return t, c_mean, g_pos, g_neg, g_receivers


def check_loss_settings(lc) -> None:
  """Clear errors for the optional terms' settings, before any long work starts."""
  for field in ("concept_weight", "uniformity_weight", "name_weight", "text_weight"):
    if float(lc.get(field, 0.0)) < 0:
      raise ValueError(f"loss.{field}={lc.get(field)} must be >= 0 (0 turns the term off)")
  if ((lc.concept_weight or lc.get("name_weight", 0.0) or lc.get("text_weight", 0.0))
      and not lc.concept_temperature > 0):
    raise ValueError(f"loss.concept_temperature={lc.concept_temperature} must be > 0")
  reference = lc.get("align_batch_reference", 0)
  if isinstance(reference, bool) or not isinstance(reference, int) or reference < 0 \
      or reference == 1:
    raise ValueError(f"loss.align_batch_reference={reference!r} must be 0 (off) or an "
                     "integer >= 2")
  for field in ("random_concepts", "hard_negatives", "hard_pool"):
    value = lc.get(field, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise ValueError(f"loss.{field}={value!r} must be an integer >= 0")
  if lc.get("hard_negatives", 0) and lc.get("hard_pool", 0) < 1:
    raise ValueError(f"loss.hard_negatives={lc.hard_negatives} draws from each concept's "
                     f"loss.hard_pool nearest concepts: hard_pool={lc.hard_pool} must be >= 1")


def shard_loss(params, batch: dict, concept_table, negated_table, num_types: int,
               settings: LossSettings):
  """The loss of one device's shard of the batch (no leading shard axis), combined over the
  mesh's devices: (weighted total, the terms' means [7]). Runs inside `jax.shard_map`."""
  b = batch["pair_mask"].shape[0]
  rs = batch["rel_head"].shape[0]
  t, c_mean, g_pos, g_neg, g_recv = project_batch(params, batch, concept_table,
                                                  negated_table, num_types, settings)
  texts = jax.lax.all_gather(t, AXIS, tiled=True)
  text_mask = jax.lax.all_gather(batch["pair_mask"], AXIS, tiled=True)
  first = jax.lax.axis_index(AXIS) * b
  a = losses_lib.alignment_terms(c_mean, batch["pair_mask"], batch["rho"], texts,
                                 text_mask, first, settings.margin,
                                 per_anchor=settings.per_pair)
  a = (a[0] * settings.align_scale, a[1])
  r = losses_lib.relational_terms(g_pos[:rs], g_pos[rs:2 * rs], g_pos[2 * rs:3 * rs],
                                  batch["rel_mask"], settings.relational_margin)
  n = losses_lib.negation_terms(g_pos[3 * rs:], g_neg, batch["neg_weight"],
                                settings.negation_delta)
  # Per-concept and uniformity terms (line_jax.model.losses; off at weight 0) over G of the
  # shard's distinct positive concepts.
  cu = uni = nt = tt = (jnp.zeros(()), jnp.zeros(()))
  if g_recv is not None:
    u = g_recv.shape[0]
    recv_real = batch["receiver_real"][:u]
    group = batch.get("receiver_group")    # config loss.same_term_negatives=False
    if settings.weights[3]:
      cu = losses_lib.concept_contrastive_terms(
          t, g_recv, recv_real, batch["occ_slot"],
          batch["occ_mask"] & (batch["occ_slot"] < u), settings.concept_temperature, group)
    if settings.weights[6]:
      # Text term: each listed concept vs the shard's texts that do not list it.
      tt = losses_lib.text_contrastive_terms(
          t, batch["pair_mask"], g_recv, batch["occ_slot"],
          batch["occ_mask"] & (batch["occ_slot"] < u), settings.concept_temperature, group)
    if settings.weights[4]:
      uni = losses_lib.uniformity_terms(g_recv, recv_real, settings.uniformity_t)
    if settings.weights[5]:
      # Name term: F of teacher 1's name of each receiver vs G of the receivers.
      names = model_lib.project_text(params, batch["name_text"])
      nt = losses_lib.concept_contrastive_terms(
          names, g_recv, recv_real, jnp.arange(u, dtype=jnp.int32)[:, None],
          recv_real[:, None], settings.concept_temperature, group)
  sums = jax.lax.psum(jnp.stack([a[0], r[0], n[0], cu[0], uni[0], nt[0], tt[0]]), AXIS)
  counts = jax.lax.psum(jnp.stack([a[1], r[1], n[1], cu[1], uni[1], nt[1], tt[1]]), AXIS)
  parts = sums / jnp.maximum(counts, 1.0)
  return jnp.sum(jnp.asarray(settings.weights) * parts), parts


def make_loss_fn(config, num_types: int, mesh, cpu_kernel: bool = False):
  """loss(params, batch, concept_table, negated_table) -> (scalar, parts) over the mesh, for
  a batch built on the host (`pipeline.BatchBuilder`: a leading shard axis).

  Sizes come from the batch's array shapes, so a grown capacity just retraces. cpu_kernel:
  G's edge attention on the fused CPU kernel (`Trainer` decides it: `kernels.use_kernel`)."""
  settings = LossSettings.from_config(config, mesh, cpu_kernel)

  def local(params, batch, concept_table, negated_table):
    batch = jax.tree.map(lambda x: x[0], batch)      # this device's shard
    return shard_loss(params, batch, concept_table, negated_table, num_types, settings)

  return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(AXIS), P(), P()),
                       out_specs=(P(), P()))


def make_device_loss_fn(config, num_types: int, mesh, shapes: pipeline.BatchShapes,
                        spec: device_batches.BuilderSpec, cpu_kernel: bool = False,
                        streamed_text: bool = False):
  """loss(params, tables, pair_idx, step, concept_table, negated_table[, text_rows]) over
  the mesh, each device building its own shard of the batch of the global pairs `pair_idx`
  [B] at `step` from the device tables (`line_jax.training.device_batches`) inside the same program.
  With `streamed_text`, the text rows come from the host as text_rows [S, b, d_t]."""
  settings = LossSettings.from_config(config, mesh, cpu_kernel)

  def local(params, tables, pair_idx, step, concept_table, negated_table, *text_rows):
    shard = jax.lax.axis_index(AXIS)
    rows = text_rows[0][0] if text_rows else None
    batch = device_batches.build_shard(tables, pair_idx, step, shard, shapes, spec, rows)
    return shard_loss(params, batch, concept_table, negated_table, num_types, settings)

  specs = (P(), P(), P(), P(), P(), P()) + ((P(AXIS),) if streamed_text else ())
  return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=(P(), P()))


def _step_with(loss_fn, optimizer, config):
  """A train step (state, *loss inputs) -> (state, metrics) of `loss_fn(params, *inputs)`."""

  def train_step(state, *inputs):
    COMPILATIONS["train_step"] += 1
    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], *inputs)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    new_state = {"params": optax.apply_updates(state["params"], updates),
                 "opt_state": opt_state, "step": state["step"] + 1}
    new_state, finite = guards.guard_step(state, new_state, loss, grads,   # NaN guard
                                          config.train.on_nonfinite == "skip")
    metrics = {"loss": loss, "align": parts[0], "relational": parts[1], "negation": parts[2],
               "concept": parts[3], "uniformity": parts[4], "name": parts[5],
               "text": parts[6],
               "finite": finite}
    return new_state, metrics

  return jax.jit(train_step, donate_argnums=0)


def make_train_step(config, num_types, mesh, optimizer, cpu_kernel: bool = False):
  """step(state, host batch, concept_table, negated_table) -> (state, metrics)."""
  return _step_with(make_loss_fn(config, num_types, mesh, cpu_kernel), optimizer, config)


def make_device_train_step(config, num_types, mesh, optimizer, shapes, spec,
                           cpu_kernel: bool = False, streamed_text: bool = False):
  """step(state, tables, pair_idx, step, concept_table, negated_table[, text_rows]) ->
  (state, metrics): the batch is built on the devices inside the step."""
  return _step_with(make_device_loss_fn(config, num_types, mesh, shapes, spec, cpu_kernel,
                                        streamed_text), optimizer, config)


def replicate(x, mesh: jax.sharding.Mesh):
  """A host array every process holds alike -> a global array replicated over the mesh (a
  plain host array where there is one process: jit moves it)."""
  if jax.process_count() == 1:
    return x
  return jax.make_array_from_process_local_data(NamedSharding(mesh, P()), np.asarray(x))


class Trainer:
  """Everything a run needs, built once from the config: data, teachers, graph, step."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, devices=None,
               dataset=None, teachers=None):
    """`dataset` and `teachers` (a pair of TeacherEmbeddings) may be given in memory
    (benchmarks); otherwise they come from config.data and the teacher cache."""
    if (config.teacher1.get("text_rows", "all") or "all") != "all":
      raise ValueError("config.teacher1.text_rows must be 'all': LINE trains on teacher 1's "
                       "texts of the train split (only teacher 2 may embed the evaluated "
                       "pairs' texts alone)")
    check_loss_settings(config.loss)    # before the data build and the teacher exports
    state_lib.learning_rate(config)     # (and the schedule's settings)
    self.config = config
    self.workdir = os.path.abspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self.dataset = dataset if dataset is not None else prepare_dataset(config)
    ds = self.dataset
    logging.info("dataset %s: %d concepts, %d relation types %s, %d edges, %d pairs "
                 "(train %d, valid %d, test %d)", ds.root, ds.num_concepts,
                 len(ds.relation_types), list(ds.relation_types), len(ds.edge_head),
                 ds.num_pairs, len(ds.split_indices("train")), len(ds.split_indices("valid")),
                 len(ds.split_indices("test")))
    if teachers is None:
      teachers = (exporter.ensure_teacher(config.teacher1, ds, self.workdir),
                  exporter.ensure_teacher(config.teacher2, ds, self.workdir))
    self.teacher1, self.teacher2 = teachers
    if (str(config.recovery.get("estimator", "residual")) == "segment" and
        finetune.new_strings_config(config.teacher1, self.teacher1.meta).kind != "hf"):
      raise ValueError("recovery.estimator='segment' embeds the texts' clauses with teacher "
                       f"1, which is a {config.teacher1.kind!r} teacher: it needs kind 'hf' "
                       "or 'finetuned'")
    self.table = graph_lib.NeighbourTable.from_dataset(ds, config.graph.symmetric)
    self.lists = pipeline.PairLists(ds, config.data.max_concepts_per_pair)
    self.mesh = make_mesh(devices)
    shapes = pipeline.batch_shapes(
        self.lists, config.train.batch_size, self.mesh.size, len(ds.relation_types),
        config.graph.fanout, config.loss.relational_edges, config.graph.edge_block)
    # What the batches carry follows the loss that reads them (`LossSettings`).
    settings = LossSettings.from_config(config, self.mesh)
    names = self.teacher1.concepts if settings.weights[5] else None
    if names is not None and (names.ndim != 2 or names.shape[0] != ds.num_concepts):
      raise ValueError(f"loss.name_weight={config.loss.name_weight} needs teacher 1's "
                       f"embedding of every concept's name: its cache has "
                       f"{tuple(names.shape)} rows for {ds.num_concepts} concepts")
    # Extra random receivers only serve the terms that compare G of the batch's concepts
    # with each other or with a text's (not the text term: no text lists them).
    extra = (int(config.loss.random_concepts)
             if settings.weights[3] or settings.weights[4] or settings.weights[5] else 0)
    # Hard negatives serve the terms that rank concepts for a text (per-concept, name); the
    # text term ranks texts for a concept, so it only shares the same-term masking.
    contrastive = bool(settings.weights[3] or settings.weights[5])
    hard, num_hard = None, int(config.loss.get("hard_negatives", 0)) if contrastive else 0
    same_term_masked = ((contrastive or settings.weights[6])
                        and not config.loss.same_term_negatives)
    term_of = (terms_lib.dataset_groups(ds).group_of if num_hard or same_term_masked
               else None)                        # read once for both uses
    groups = term_of if same_term_masked else None
    if num_hard:
      hard = self._hard_table(int(config.loss.hard_pool), term_of)
    self.builder = pipeline.BatchBuilder(self.lists, self.table, self.teacher1.text,
                                         shapes, config.train.seed, names=names,
                                         groups=groups, random_concepts=extra,
                                         hard=hard, hard_negatives=num_hard)
    replicated = NamedSharding(self.mesh, P())
    # Where batches are built (config train.batch_builder): on the devices inside the step
    # (line_jax.training.device_batches), or on the host (the reference builder above). The device
    # tables exist either way: capacities are planned on the devices.
    self.builder_kind = str(config.train.get("batch_builder", "device"))
    if self.builder_kind not in BATCH_BUILDERS:
      raise ValueError(f"train.batch_builder={self.builder_kind!r}: expected one of "
                       f"{BATCH_BUILDERS}")
    on_device = self.builder_kind == "device"
    self.streamed_text = on_device and not device_batches.text_on_device(config,
                                                                         self.teacher1.text)
    host_tables, self.builder_spec = device_batches.make_tables(
        self.lists, self.table,
        self.teacher1.text if on_device and not self.streamed_text else None,
        names if on_device else None, groups if on_device else None, hard, num_hard, extra,
        config.train.seed, config.graph.fanout, self.teacher1.text.dtype)
    self.device_tables = device_batches.place_tables(host_tables, replicated)
    del host_tables
    logging.info("batches built on the %s%s", "devices" if on_device else "host",
                 " (text rows streamed from the host)" if self.streamed_text else "")
    self.base_shapes = shapes
    self._planned = None             # (stage, first step) the capacities were planned for
    self._device_steps = {}          # shapes -> compiled step
    if len(ds.split_indices("train")):
      self.plan_stage(1, 0)
    # Device-resident teacher-2 tables, read with file reads (not through the memmap) and
    # the host copy dropped at once, so peak memory holds one host table at a time.
    table_dtype = tables.resolve_table_dtype(config, self.teacher2)
    self.concept_table = tables.table_to_device(self.teacher2.concepts, replicated, table_dtype)
    self.negated_table = tables.table_to_device(self.teacher2.negated, replicated, table_dtype)
    # Set-up is done: from here on freed memory stays for the next step's buffers.
    host_memory.keep_freed_memory()
    self.dim = state_lib.model_dim(config, self.teacher1.dim)
    self.steps_per_epoch = -(-len(ds.split_indices("train")) // config.train.batch_size)
    # The rate of each step (train_log.jsonl's "learning_rate"), the optimiser's own schedule.
    self.learning_rate = state_lib.learning_rate(config, self.steps_per_epoch)
    self.optimizer = state_lib.make_optimizer(config, self.steps_per_epoch)
    self.cpu_kernel = kernels.use_kernel(str(config.model.cpu_kernel), self.concept_table)
    logging.info("G's edge attention: %s", "the fused CPU kernel (line_jax.model.kernels)"
                 if self.cpu_kernel else "XLA")
    self.train_step = make_train_step(config, len(ds.relation_types), self.mesh,
                                      self.optimizer, self.cpu_kernel)

  def string_embedder(self):
    """Teacher 1 on new strings (what recovery.estimator "segment" embeds the clauses
    with), or None where the estimator does not need it or teacher 1 cannot."""
    if str(self.config.recovery.get("estimator", "residual")) != "segment":
      return None
    cfg = finetune.new_strings_config(self.config.teacher1, self.teacher1.meta)
    if cfg.kind != "hf":
      return None
    encoder = teachers_lib.load_encoder(cfg)
    return lambda strings: encoder.encode(list(strings))

  def _hard_table(self, pool: int, term_of: np.ndarray) -> np.ndarray:
    """Each train-listed concept's `pool` nearest other-term concepts under teacher 2 (the
    space G starts from; `term_of`: every concept's term): the candidates of
    loss.hard_negatives."""
    started = time.perf_counter()
    listed = [idx[~neg] for idx, neg in map(self.lists.concepts,
                                            self.dataset.split_indices("train"))]
    rows = np.unique(np.concatenate(listed + [np.zeros(0, np.int32)]))
    hard = pipeline.hard_neighbour_table(self.teacher2.concepts, term_of, rows, pool)
    logging.info("hard negatives: the %d nearest other-term concepts of %d listed concepts "
                 "in %.1f s", pool, len(rows), time.perf_counter() - started)
    return hard

  def plan_stage(self, stage: int, first_step: int) -> pipeline.BatchShapes:
    """Capacities that hold every batch of `stage` (whose first step is `first_step`):
    planned exactly on the devices (`device_batches.plan_capacities`), for both builders.
    A function of the data, seed, stage and recovered concepts, so a resumed run plans the
    same shapes as the run it resumes."""
    if self._planned == (stage, first_step):
      return self.builder.shapes
    epochs = {1: self.config.train.stage1_epochs, 2: self.config.train.stage2_epochs}[stage]
    train_idx = self.dataset.split_indices("train")
    orders = [pipeline.epoch_order(train_idx, self.config.train.seed, stage, e)
              for e in range(epochs)]
    started = time.perf_counter()
    shapes = device_batches.plan_capacities(self.device_tables, orders, first_step,
                                            self.base_shapes, self.builder_spec)
    logging.info("stage %d batch shapes: %s (planned in %.1f s)", stage, shapes,
                 time.perf_counter() - started)
    self.builder.shapes = shapes
    self._planned = (stage, first_step)
    return shapes

  def set_added(self, added: np.ndarray) -> None:
    """The recovered concept of every pair (-1: none), on the host and the devices."""
    self.lists.added[:] = added
    self.device_tables["added"] = multihost.put(self.lists.added.astype(np.int32),
                                                NamedSharding(self.mesh, P()))
    self._planned = None

  def step_inputs(self, pair_idx: np.ndarray, step: int):
    """What the host prepares for one step (in the prefetch thread): the built batch (host
    builder), or the padded pair indices and the step (plus, when streamed, the text rows)."""
    sh = self.builder.shapes
    if self.builder_kind == "host":
      return (self.builder.build(pair_idx, step),)
    padded = np.full(sh.batch_size, -1, np.int32)
    padded[:len(pair_idx)] = pair_idx
    if not self.streamed_text:
      return padded, np.int32(step)
    rows = device_batches.host_text_rows(self.teacher1.text, padded)
    return padded, np.int32(step), rows.reshape(sh.num_shards, sh.pairs_per_shard, -1)

  def apply_step(self, state, inputs):
    """One train step on `step_inputs`' output: (state, metrics)."""
    if self.builder_kind == "host":
      return self.train_step(state, shard_batch(inputs[0], self.mesh), self.concept_table,
                             self.negated_table)
    shapes = self.builder.shapes
    step_fn = self._device_steps.get(shapes)
    if step_fn is None:
      step_fn = self._device_steps[shapes] = make_device_train_step(
          self.config, len(self.dataset.relation_types), self.mesh, self.optimizer, shapes,
          self.builder_spec, self.cpu_kernel, self.streamed_text)
    args = [state, self.device_tables, replicate(inputs[0], self.mesh),
            replicate(inputs[1], self.mesh), self.concept_table, self.negated_table]
    if self.streamed_text:
      args.append(shard_batch(inputs[2], self.mesh))
    return step_fn(*args)

  def init_state(self) -> dict:
    state = state_lib.init_state(self.config, self.teacher1.dim, self.teacher2.dim,
                                 len(self.dataset.relation_types), self.config.train.seed)
    replicated = NamedSharding(self.mesh, P())
    return jax.tree.map(lambda x: multihost.put(x, replicated), state)


def _write_json(path: str, obj: Any) -> None:
  if multihost.is_main():     # many processes: one writer
    files.write_json(path, obj)


def train(config: ml_collections.ConfigDict, workdir: str, devices=None,
          force_new: bool = False) -> dict:
  """Runs (or resumes) the two-stage training; returns a summary dict.

  The work dir is locked for the run and must hold a run of the same data and settings, or
  none (`line_jax.training.workdir`); force_new=True deletes a previous run there and starts over."""
  guards.check_mode(config.train.on_nonfinite)
  with workdir_lib.locked_by_main(workdir):    # held by process 0
    return _train(config, workdir, devices, force_new)


def _train(config, workdir, devices, force_new) -> dict:
  # Many processes: process 0 builds the dataset and checks the work dir (with force_new:
  # clears it) before the others read either. (The teachers' export has a lock of its own.)
  with multihost.main_first("preparing the dataset and the work dir"):
    dataset = prepare_dataset(config)
    if multihost.is_main():   # refuses a mismatching work dir before writing anything
      workdir_lib.check_and_record(workdir, config, dataset.root, force_new)
  return run(Trainer(config, workdir, devices, dataset=dataset))


def run(trainer: Trainer) -> dict:
  """The two stages and the recovery between them, on a built `Trainer`, resuming from its
  work dir's latest checkpoint; returns the summary (also `train_summary.json`), with the
  wall time of each phase this process ran ("seconds")."""
  config, workdir = trainer.config, trainer.workdir
  tc = config.train
  guard = guards.NonFiniteGuard(tc.on_nonfinite, tc.max_nonfinite_skips)
  mgr = ckpt_lib.manager(workdir, tc.keep_checkpoints)
  state = trainer.init_state()
  restored, progress = ckpt_lib.restore_latest(mgr, {**state, "added": trainer.lists.added},
                                               quarantine=multihost.is_main())
  # Many processes: each reads the checkpoints itself; all must resume from the same one.
  multihost.check_same("the checkpoint step to resume from",
                       -1 if restored is None else progress["step"])
  if restored is not None and multihost.is_main():
    workdir_lib.trim_train_log(workdir, progress["step"])   # no record logged twice
  if restored is not None:
    trainer.set_added(restored.pop("added"))
    state = jax.device_put(restored, NamedSharding(trainer.mesh, P()))
    logging.info("resumed from step %d (stage %d, epoch %d, batch %d)", progress["step"],
                 progress["stage"], progress["epoch"], progress["batch"])
  else:
    progress = state_lib.new_progress(tc.seed)

  def save():
    guard.flush()   # a non-finite step raises here, before its state is saved
    ckpt_lib.save(mgr, progress["step"], {**state, "added": trainer.lists.added}, progress)

  train_idx = trainer.dataset.split_indices("train")
  if len(train_idx) == 0:
    raise ValueError(f"{trainer.dataset.root}/pairs.parquet: no pair has split 'train'")
  epochs = {1: tc.stage1_epochs, 2: tc.stage2_epochs}
  log_path = os.path.join(workdir, "train_log.jsonl")
  batches_per_epoch = trainer.steps_per_epoch
  summary = {"workdir": workdir, "compilations": {}, "capacity_growths": {}, "seconds": {}}
  while progress["stage"] < state_lib.STAGE_FINISHED:
    stage = progress["stage"]
    if stage == 2 and not progress["recovered"]:
      t0 = time.time()
      added, info = recovery_lib.recover(
          state["params"], trainer.lists, trainer.teacher1.text, trainer.table,
          trainer.concept_table, trainer.negated_table, config, train_idx,
          embed_strings=trainer.string_embedder())
      # Many processes: each recovered the lists itself; process 0's are the ones trained
      # on everywhere (a float tie broken otherwise would give other batches elsewhere).
      added = multihost.broadcast_from_main(added)
      info["seconds"] = time.time() - t0
      trainer.set_added(added)
      progress["recovered"] = True
      _write_json(os.path.join(workdir, "recovery.json"), info)
      summary["recovery"] = info
      save()
      summary["seconds"]["recovery"] = time.time() - t0
    stage_started = time.time()
    compiled_before = COMPILATIONS["train_step"]
    grown_before = trainer.builder.growths
    if epochs[stage]:
      # Every batch of the stage fits the planned capacities (stage 2: with its recovered
      # concepts), so the stage compiles once; a resumed run plans the same ones.
      trainer.plan_stage(stage, progress["step"] - progress["epoch"] * batches_per_epoch
                         - progress["batch"])
    while progress["epoch"] < epochs[stage]:
      order = pipeline.epoch_order(train_idx, tc.seed, stage, progress["epoch"])
      window, t_window = [], time.time()
      bsz = tc.batch_size
      make = lambda bi, step0=progress["step"], first=progress["batch"], order=order: (
          trainer.step_inputs(order[bi * bsz:(bi + 1) * bsz], step0 + bi - first))
      for bi, inputs in pipeline.prefetched(make, progress["batch"], batches_per_epoch,
                                            tc.prefetch):
        state, metrics = trainer.apply_step(state, inputs)
        progress["step"] += 1
        progress["batch"] = bi + 1
        guard.observe(progress["step"], stage, metrics)
        window.append(metrics)
        last_of_epoch = bi + 1 == batches_per_epoch
        if progress["step"] % tc.log_every == 0 or last_of_epoch:
          guard.flush()
          vals = jax.device_get(window)
          mean = {k: float(np.mean([v[k] for v in vals])) for k in vals[0] if k != "finite"}
          rate = len(window) * tc.batch_size / max(time.time() - t_window, 1e-9)
          lr = trainer.learning_rate     # the rate of this window's last update
          record = {"stage": stage, "epoch": progress["epoch"], "step": progress["step"],
                    **mean, "pairs_per_s": rate,
                    "learning_rate": float(lr(progress["step"] - 1) if callable(lr) else lr)}
          if multihost.is_main():   # a failed write leaves no half record
            files.append_text(log_path, json.dumps(record) + "\n")
          # The paper's three terms always; the optional ones when they are on.
          terms = ", ".join(f"{k} {mean[k]:.4f}" for k in guards.TERMS
                            if k in ("align", "relational", "negation") or mean[k])
          logging.info("stage %d epoch %d batch %d/%d step %d | loss %.4f (%s) | %.0f pairs/s",
                       stage, progress["epoch"], bi + 1, batches_per_epoch, progress["step"],
                       mean["loss"], terms, rate)
          window, t_window = [], time.time()
        if tc.checkpoint_every and progress["step"] % tc.checkpoint_every == 0:
          save()
        if tc.stop_after_steps and progress["step"] >= tc.stop_after_steps:
          save()
          logging.info("stopping after step %d (train.stop_after_steps)", progress["step"])
          summary.update(stopped=True, step=progress["step"])
          return summary
      progress["epoch"] += 1
      progress["batch"] = 0
      save()
    summary["compilations"][f"stage{stage}"] = COMPILATIONS["train_step"] - compiled_before
    summary["capacity_growths"][f"stage{stage}"] = trainer.builder.growths - grown_before
    progress["stage"] += 1
    progress["epoch"] = 0
    progress["batch"] = 0
    save()
    summary["seconds"][f"stage{stage}"] = time.time() - stage_started
  summary.update(stopped=False, step=progress["step"],
                 checkpoint=os.path.join(workdir, "checkpoints"))
  _write_json(os.path.join(workdir, "train_summary.json"), summary)
  logging.info("training done: %d steps; checkpoints in %s", progress["step"],
               summary["checkpoint"])
  return summary
