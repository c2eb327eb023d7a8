"""The embedded default (configs/hpo_minilm.py) for a GPU: batches of 512 pairs.

At 128 pairs a GPU step is bound by kernel launches (about 1 ms whatever the batch), so a
larger batch trains several times more pairs a second. The learning rate follows the batch
(train.lr_batch_rule "sqrt": 2e-3 at 512) and the alignment term weighs as at 128
(loss.align_batch_reference). Measured on the validation split and the real-text sentences
at equal epochs (docs/benchmarks.md, "Batch size"): 512 kept the default's quality within
run-to-run noise; 1024 lost about 0.01 of recall@10 (the HPO train split has 17.8k pairs,
only 17 steps an epoch at 1024).

  python -m line_jax.train --config=configs/hpo_minilm_gpu.py --workdir=runs/hpo_gpu
"""

import importlib.util
import os


def _default():
  """configs/hpo_minilm.py, read beside this file (wherever the command runs from)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hpo_minilm.py")
  spec = importlib.util.spec_from_file_location("hpo_minilm", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config():
  c = _default().get_config()
  c.train.batch_size = 512
  return c
