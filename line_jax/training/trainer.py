"""Everything a run needs, built once from the config (`Trainer`): the data, the teachers'
caches, the graph, the batch builders and their planned capacities, the device tables and
the compiled steps."""


from __future__ import annotations

import logging
import os
import time

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from line_jax.training import device_batches
from line_jax.cache import export as exporter
from line_jax.cache import segments as segments_cache
from line_jax.model import graph as graph_lib
from line_jax.util import host_memory
from line_jax.model import kernels
from line_jax.util import processes as multihost
from line_jax.training import host_batches as pipeline
from line_jax.training import state as state_lib
from line_jax.model import tables
from line_jax import teachers as teachers_lib
from line_jax.search import terms as terms_lib
from line_jax.teachers import finetune
from line_jax.data import heldout_terms, prepare_dataset
from line_jax.training.objective import (LossSettings, check_loss_settings,
                                        check_model_settings, text_vectors)
from line_jax.training.step import make_mesh, shard_batch, make_train_step, make_device_train_step, replicate


BATCH_BUILDERS = ("device", "host")   # config train.batch_builder


class Trainer:
  """Everything a run needs, built once from the config: data, teachers, graph, step."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, devices=None,
               dataset=None, teachers=None):
    """`dataset` and `teachers` (a pair of TeacherEmbeddings) may be given in memory
    (benchmarks); otherwise they come from config.data and the teacher cache."""
    self._check_settings(config)
    self.config = config
    self.workdir = os.path.abspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self._load_data(dataset, teachers)
    ds = self.dataset
    self.mesh = make_mesh(devices)
    shapes = pipeline.batch_shapes(
        self.lists, config.train.batch_size, self.mesh.size, len(ds.relation_types),
        config.graph.fanout, config.loss.relational_edges, config.graph.edge_block)
    names, groups, extra, hard, num_hard = self._extra_receivers()
    self.builder = pipeline.BatchBuilder(self.lists, self.table, self.teacher1.text,
                                         shapes, config.train.seed, names=names,
                                         groups=groups, random_concepts=extra,
                                         hard=hard, hard_negatives=num_hard,
                                         segments=self.segments)
    self._place_builder_tables(shapes, names, groups, extra, hard, num_hard)
    self._place_teacher2_and_step()

  def _check_settings(self, config: ml_collections.ConfigDict) -> None:
    """Refuses settings that cannot train before any data is built or exported."""
    if (config.teacher1.get("text_rows", "all") or "all") != "all":
      raise ValueError("config.teacher1.text_rows must be 'all': LINE trains on teacher 1's "
                       "texts of the train split (only teacher 2 may embed the evaluated "
                       "pairs' texts alone)")
    check_loss_settings(config.loss)    # before the data build and the teacher exports
    check_model_settings(config)
    self.text_vectors = text_vectors(config)
    if self.text_vectors == "segments":
      pipeline.check_max_segments_per_pair(config.data.max_segments_per_pair)
    state_lib.learning_rate(config)     # (and the schedule's settings)

  def _load_data(self, dataset, teachers) -> None:
    """The dataset, the teachers' caches, the graph, the pairs' lists and (many vectors per
    text) their clause rows."""
    config = self.config
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
    # Terms held out of training (data.heldout_terms): their edges and the train pairs that
    # list them are left out from here on (the teachers' rows above cover every string).
    ds = self.dataset = heldout_terms.training_view(ds)
    if (str(config.recovery.get("estimator", "residual")) == "segment" and
        finetune.new_strings_config(config.teacher1, self.teacher1.meta).kind != "hf"):
      raise ValueError("recovery.estimator='segment' embeds the texts' clauses with teacher "
                       f"1, which is a {config.teacher1.kind!r} teacher: it needs kind 'hf' "
                       "or 'finetuned'")
    self.table = graph_lib.NeighbourTable.from_dataset(ds, config.graph.symmetric)
    self.lists = pipeline.PairLists(ds, config.data.max_concepts_per_pair)
    # Many vectors per text: teacher 1's rows of every text's clauses (exported once).
    self.segments = None
    if self.text_vectors == "segments":
      self.segments = pipeline.PairSegments(
          segments_cache.ensure_segments(config.teacher1, self.teacher1, ds,
                                         str(config.data.segment_pattern), "all"),
          int(config.data.max_segments_per_pair), ds.split_indices("train"))

  def _extra_receivers(self):
    """What the batches carry beyond the pairs, following the loss that reads them
    (`LossSettings`): (name rows, concept groups, random concepts per shard, hard-negative
    table, hard negatives per listed concept)."""
    config, ds = self.config, self.dataset
    settings = LossSettings.from_config(config, self.mesh)
    names = self.teacher1.concepts if settings.weights[5] else None
    if names is not None and (names.ndim != 2 or names.shape[0] != ds.num_concepts):
      raise ValueError(f"loss.name_weight={config.loss.name_weight} needs teacher 1's "
                       f"embedding of every concept's name: its cache has "
                       f"{tuple(names.shape)} rows for {ds.num_concepts} concepts")
    # Extra random receivers only serve the terms that compare G of the batch's concepts
    # with each other or with a text's (not the text term: no text lists them).
    extra = (int(config.loss.random_concepts)
             if settings.weights[3] or settings.weights[4] or settings.weights[5]
             or settings.weights[7] else 0)
    # Hard negatives serve the terms that rank concepts for a text (per-concept, name); the
    # text term ranks texts for a concept, so it only shares the same-term masking.
    contrastive = bool(settings.weights[3] or settings.weights[5] or settings.weights[7])
    hard, num_hard = None, int(config.loss.get("hard_negatives", 0)) if contrastive else 0
    same_term_masked = ((contrastive or settings.weights[6])
                        and not config.loss.same_term_negatives)
    term_of = (terms_lib.dataset_groups(ds).group_of if num_hard or same_term_masked
               else None)                        # read once for both uses
    groups = term_of if same_term_masked else None
    if num_hard:
      hard = self._hard_table(int(config.loss.hard_pool), term_of)
    return names, groups, extra, hard, num_hard

  def _place_builder_tables(self, shapes, names, groups, extra, hard, num_hard) -> None:
    """The batch builder's device tables, and the first stage's capacities planned."""
    config = self.config
    replicated = NamedSharding(self.mesh, P())
    # Where batches are built (config train.batch_builder): on the devices inside the step
    # (line_jax.training.device_batches), or on the host (the reference builder above). The device
    # tables exist either way: capacities are planned on the devices.
    self.builder_kind = str(config.train.get("batch_builder", "device"))
    if self.builder_kind not in BATCH_BUILDERS:
      raise ValueError(f"train.batch_builder={self.builder_kind!r}: expected one of "
                       f"{BATCH_BUILDERS}")
    on_device = self.builder_kind == "device"
    self.streamed_text = on_device and not device_batches.text_on_device(
        config, self.teacher1.text, None if self.segments is None else self.segments.rows)
    host_tables, self.builder_spec = device_batches.make_tables(
        self.lists, self.table,
        self.teacher1.text if on_device and not self.streamed_text else None,
        names if on_device else None, groups if on_device else None, hard, num_hard, extra,
        config.train.seed, config.graph.fanout, self.teacher1.text.dtype, self.segments,
        segment_rows=on_device and not self.streamed_text)
    self.device_tables = device_batches.place_tables(host_tables, replicated)
    del host_tables
    logging.info("batches built on the %s%s", "devices" if on_device else "host",
                 " (text rows streamed from the host)" if self.streamed_text else "")
    self.base_shapes = shapes
    self._planned = None             # (stage, first step) the capacities were planned for
    self._device_steps = {}          # shapes -> compiled step
    if len(self.dataset.split_indices("train")):
      self.plan_stage(1, 0)

  def _place_teacher2_and_step(self) -> None:
    """Teacher 2's device tables, the optimiser and its schedule, and the train step."""
    config, ds = self.config, self.dataset
    replicated = NamedSharding(self.mesh, P())
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
    held = heldout_terms.held_mask(self.dataset)    # never a held-out term (data.heldout_terms)
    hard[(hard >= 0) & held[np.maximum(hard, 0)]] = -1
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
    out = (padded, np.int32(step), rows.reshape(sh.num_shards, sh.pairs_per_shard, -1))
    if self.segments is None:
      return out
    seg = device_batches.host_segment_rows(self.segments, padded)
    return out + (seg.reshape(sh.num_shards, sh.pairs_per_shard, *seg.shape[1:]),)

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
      args += [shard_batch(x, self.mesh) for x in inputs[2:]]
    return step_fn(*args)

  def init_state(self) -> dict:
    state = state_lib.init_state(self.config, self.teacher1.dim, self.teacher2.dim,
                                 len(self.dataset.relation_types), self.config.train.seed)
    replicated = NamedSharding(self.mesh, P())
    return jax.tree.map(lambda x: multihost.put(x, replicated), state)
