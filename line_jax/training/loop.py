"""Trains LINE: stage 1, residual recovery, stage 2; resumable from orbax checkpoints.

`train(config, workdir)` is what `python -m line_jax.train` runs before it evaluates.
One code path for one and many devices: each device builds and trains on its shard of the
batch (`line_jax.training.step`). Many processes (`jax.distributed`): pass --distributed (or
call jax.distributed.initialize() first); see launch/. Every process builds the same batch
plan and runs the same steps; process 0 alone writes the work dir
(`line_jax.util.processes`)."""


from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from line_jax.training import checkpoint as ckpt_lib
from line_jax.util import files
from line_jax.training import guards
from line_jax.util import processes as multihost
from line_jax.training import host_batches as pipeline
from line_jax.training import recovery as recovery_lib
from line_jax.training import state as state_lib
from line_jax.training import workdir as workdir_lib
from line_jax.data import prepare_dataset
from line_jax.training.step import COMPILATIONS
from line_jax.training.trainer import Trainer


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
