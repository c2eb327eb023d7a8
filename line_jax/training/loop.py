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
  r = _Run(trainer)
  while r.progress["stage"] < state_lib.STAGE_FINISHED:
    stage = r.progress["stage"]
    if stage == 2 and not r.progress["recovered"]:
      r.recover()
    if r.train_stage(stage):
      return r.summary
  return r.finish()


class _Run:
  """One call of `run`: the train state, its progress and the summary, updated step by step."""

  def __init__(self, trainer: Trainer):
    """Resumes from the work dir's latest checkpoint, or starts at step 0."""
    self.trainer = trainer
    self.config, self.workdir = trainer.config, trainer.workdir
    tc = self.tc = self.config.train
    self.guard = guards.NonFiniteGuard(tc.on_nonfinite, tc.max_nonfinite_skips)
    self.mgr = ckpt_lib.manager(self.workdir, tc.keep_checkpoints)
    self.state, self.progress = self._resume()
    self.train_idx = trainer.dataset.split_indices("train")
    if len(self.train_idx) == 0:
      raise ValueError(f"{trainer.dataset.root}/pairs.parquet: no pair has split 'train'")
    self.epochs = {1: tc.stage1_epochs, 2: tc.stage2_epochs}
    self.log_path = os.path.join(self.workdir, "train_log.jsonl")
    self.batches_per_epoch = trainer.steps_per_epoch
    self.summary = {"workdir": self.workdir, "compilations": {}, "capacity_growths": {},
                    "seconds": {}}

  def _resume(self):
    """(state, progress) from the latest checkpoint, which every process must agree on; a
    fresh state and progress when there is none."""
    trainer, tc = self.trainer, self.tc
    state = trainer.init_state()
    restored, progress = ckpt_lib.restore_latest(self.mgr,
                                                 {**state, "added": trainer.lists.added},
                                                 quarantine=multihost.is_main())
    # Many processes: each reads the checkpoints itself; all must resume from the same one.
    multihost.check_same("the checkpoint step to resume from",
                         -1 if restored is None else progress["step"])
    if restored is not None and multihost.is_main():
      workdir_lib.trim_train_log(self.workdir, progress["step"])   # no record logged twice
    if restored is not None:
      trainer.set_added(restored.pop("added"))
      state = jax.device_put(restored, NamedSharding(trainer.mesh, P()))
      logging.info("resumed from step %d (stage %d, epoch %d, batch %d)", progress["step"],
                   progress["stage"], progress["epoch"], progress["batch"])
    else:
      progress = state_lib.new_progress(tc.seed)
    return state, progress

  def save(self) -> None:
    """Checkpoints the state, the recovered concepts and the progress."""
    self.guard.flush()   # a non-finite step raises here, before its state is saved
    ckpt_lib.save(self.mgr, self.progress["step"],
                  {**self.state, "added": self.trainer.lists.added}, self.progress)

  def recover(self) -> None:
    """The residual recovery between the stages (`recovery.json`), then a checkpoint."""
    trainer = self.trainer
    t0 = time.time()
    added, info = recovery_lib.recover(
        self.state["params"], trainer.lists, trainer.teacher1.text, trainer.table,
        trainer.concept_table, trainer.negated_table, self.config, self.train_idx,
        embed_strings=trainer.string_embedder())
    # Many processes: each recovered the lists itself; process 0's are the ones trained
    # on everywhere (a float tie broken otherwise would give other batches elsewhere).
    added = multihost.broadcast_from_main(added)
    info["seconds"] = time.time() - t0
    trainer.set_added(added)
    self.progress["recovered"] = True
    _write_json(os.path.join(self.workdir, "recovery.json"), info)
    self.summary["recovery"] = info
    self.save()
    self.summary["seconds"]["recovery"] = time.time() - t0

  def train_stage(self, stage: int) -> bool:
    """The stage's remaining epochs; True when train.stop_after_steps stopped the run."""
    trainer, progress = self.trainer, self.progress
    stage_started = time.time()
    compiled_before = COMPILATIONS["train_step"]
    grown_before = trainer.builder.growths
    if self.epochs[stage]:
      # Every batch of the stage fits the planned capacities (stage 2: with its recovered
      # concepts), so the stage compiles once; a resumed run plans the same ones.
      trainer.plan_stage(stage, progress["step"] - progress["epoch"] * self.batches_per_epoch
                         - progress["batch"])
    while progress["epoch"] < self.epochs[stage]:
      if self._epoch(stage):
        return True
      progress["epoch"] += 1
      progress["batch"] = 0
      self.save()
    self.summary["compilations"][f"stage{stage}"] = COMPILATIONS["train_step"] - compiled_before
    self.summary["capacity_growths"][f"stage{stage}"] = trainer.builder.growths - grown_before
    progress["stage"] += 1
    progress["epoch"] = 0
    progress["batch"] = 0
    self.save()
    self.summary["seconds"][f"stage{stage}"] = time.time() - stage_started
    return False

  def _epoch(self, stage: int) -> bool:
    """The epoch's remaining batches, logging and checkpointing as set; True when
    train.stop_after_steps stopped the run (after a checkpoint)."""
    trainer, progress, tc = self.trainer, self.progress, self.tc
    order = pipeline.epoch_order(self.train_idx, tc.seed, stage, progress["epoch"])
    window, t_window = [], time.time()
    bsz = tc.batch_size
    make = lambda bi, step0=progress["step"], first=progress["batch"], order=order: (
        trainer.step_inputs(order[bi * bsz:(bi + 1) * bsz], step0 + bi - first))
    for bi, inputs in pipeline.prefetched(make, progress["batch"], self.batches_per_epoch,
                                          tc.prefetch):
      self.state, metrics = trainer.apply_step(self.state, inputs)
      progress["step"] += 1
      progress["batch"] = bi + 1
      self.guard.observe(progress["step"], stage, metrics)
      window.append(metrics)
      last_of_epoch = bi + 1 == self.batches_per_epoch
      if progress["step"] % tc.log_every == 0 or last_of_epoch:
        self._log_window(stage, bi, window, t_window)
        window, t_window = [], time.time()
      if tc.checkpoint_every and progress["step"] % tc.checkpoint_every == 0:
        self.save()
      if tc.stop_after_steps and progress["step"] >= tc.stop_after_steps:
        self.save()
        logging.info("stopping after step %d (train.stop_after_steps)", progress["step"])
        self.summary.update(stopped=True, step=progress["step"])
        return True
    return False

  def _log_window(self, stage: int, bi: int, window: list, t_window: float) -> None:
    """The mean metrics of the steps since the last record: a `train_log.jsonl` record
    (process 0) and a log line."""
    progress, tc = self.progress, self.tc
    self.guard.flush()
    vals = jax.device_get(window)
    mean = {k: float(np.mean([v[k] for v in vals])) for k in vals[0] if k != "finite"}
    rate = len(window) * tc.batch_size / max(time.time() - t_window, 1e-9)
    lr = self.trainer.learning_rate     # the rate of this window's last update
    record = {"stage": stage, "epoch": progress["epoch"], "step": progress["step"],
              **mean, "pairs_per_s": rate,
              "learning_rate": float(lr(progress["step"] - 1) if callable(lr) else lr)}
    if multihost.is_main():   # a failed write leaves no half record
      files.append_text(self.log_path, json.dumps(record) + "\n")
    # The paper's three terms always; the optional ones when they are on.
    terms = ", ".join(f"{k} {mean[k]:.4f}" for k in guards.TERMS
                      if k in ("align", "relational", "negation") or mean[k])
    logging.info("stage %d epoch %d batch %d/%d step %d | loss %.4f (%s) | %.0f pairs/s",
                 stage, progress["epoch"], bi + 1, self.batches_per_epoch, progress["step"],
                 mean["loss"], terms, rate)

  def finish(self) -> dict:
    """The finished run's summary, also written to `train_summary.json`."""
    summary, progress = self.summary, self.progress
    summary.update(stopped=False, step=progress["step"],
                   checkpoint=os.path.join(self.workdir, "checkpoints"))
    _write_json(os.path.join(self.workdir, "train_summary.json"), summary)
    logging.info("training done: %d steps; checkpoints in %s", progress["step"],
                 summary["checkpoint"])
    return summary
