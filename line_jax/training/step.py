"""The jitted train step: the objective over the mesh (`jax.shard_map` over a 1-D "data"
axis: parameters replicated, gradients all-reduced by the transpose of that replication),
for batches built on the host (a leading shard axis) or on the devices inside the step;
Adam's update and the non-finite guard."""


from __future__ import annotations


import jax
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from line_jax.training import device_batches
from line_jax.training import guards
from line_jax.training import host_batches as pipeline
from line_jax.training.objective import AXIS, LossSettings, shard_loss


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
  """loss(params, tables, pair_idx, step, concept_table, negated_table[, text_rows[,
  segment_rows]]) over the mesh, each device building its own shard of the batch of the
  global pairs `pair_idx` [B] at `step` from the device tables
  (`line_jax.training.device_batches`) inside the same program. With `streamed_text`, the
  text rows come from the host as text_rows [S, b, d_t] (and, in a "segments" run, the
  clause rows as segment_rows [S, b, slots, d_t])."""
  settings = LossSettings.from_config(config, mesh, cpu_kernel)

  def local(params, tables, pair_idx, step, concept_table, negated_table, *streamed):
    shard = jax.lax.axis_index(AXIS)
    rows = streamed[0][0] if streamed else None
    seg_rows = streamed[1][0] if len(streamed) > 1 else None
    batch = device_batches.build_shard(tables, pair_idx, step, shard, shapes, spec, rows,
                                       seg_rows)
    return shard_loss(params, batch, concept_table, negated_table, num_types, settings)

  num_streamed = (1 + bool(spec.segment_slots)) if streamed_text else 0
  specs = (P(), P(), P(), P(), P(), P()) + (P(AXIS),) * num_streamed
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
               "text": parts[6], "sentence_concept": parts[7],
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
