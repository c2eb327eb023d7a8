"""A tiny synthetic run: the whole pipeline (build, teachers, stage 1, recovery, stage 2) in
seconds. SYNTHETIC DATA (line_jax.data.synthetic); used by the tests and CI."""

import os
import tempfile

from line_jax.config import base_config, teacher_config


def get_config():
  c = base_config()
  c.data.dir = os.path.join(tempfile.gettempdir(), "line_jax_test_data")
  c.data.builder = "synthetic"
  c.teacher1 = teacher_config(kind="synthetic", name="synth_text", dim=32, seed=1,
                              dtype="float32")
  c.teacher2 = teacher_config(kind="synthetic", name="synth_concept", dim=24, seed=2,
                              dtype="float32")
  c.graph.fanout = 4
  c.loss.relational_edges = 8
  c.train.batch_size = 32
  c.loss.align_batch_reference = 32   # the alignment term weighs as at its own batch,
  c.train.lr_reference_batch = 32      # and the learning rate is its own
  c.train.learning_rate = 1e-2   # the tiny synthetic run needs bigger steps than the paper's
  c.train.stage1_epochs = 4
  c.train.stage2_epochs = 1
  c.train.log_every = 5
  c.train.checkpoint_every = 4
  c.train.evaluate = False
  c.recovery.threshold = 0.5
  c.recovery.dictionary_chunk = 128
  return c
