"""The paper's first pairing: BGE (text) + CODER (concepts), with the paper's settings.

Teachers load from the Hugging Face hub cache or a local folder (no machine here reaches
the hub: download elsewhere and pass the folders):

  python -m line_jax.train --config=configs/bge_coder.py --workdir=runs/bge_coder \
      --config.data.dir=/data/mimic_umls \
      --config.teacher1.model=/models/bge-base-en-v1.5 \
      --config.teacher2.model=/models/coder_eng

The dataset folder is yours (docs/data.md: concepts / relations / pairs .parquet).

Batch size: the paper's 128 is kept here. On a GPU, use --config.train.batch_size=1024:
at 7.2M pairs that is still 7,000 steps an epoch, the learning rate follows the batch
(train.lr_batch_rule "sqrt": 2.8e-3) and the alignment term weighs as at 128
(loss.align_batch_reference); the step's throughput grows several-fold
(docs/benchmarks.md).
"""

from line_jax.config import base_config, teacher_config

# The paper's seven UMLS relation families (section 2.3), one attention head each. Map
# UMLS REL codes onto them when writing relations.parquet: PAR/CHD -> parent_child,
# SY -> synonym, RL -> related, RB -> broad, RN -> narrow, RO -> other, RQ -> quantifiable.
UMLS_RELATIONS = ["parent_child", "synonym", "related", "broad", "narrow", "other",
                  "quantifiable"]


def get_config():
  c = base_config()
  c.data.dir = ""                                   # required: --config.data.dir=...
  c.teacher1 = teacher_config(kind="hf", name="bge", model="BAAI/bge-base-en-v1.5",
                              preset="bge", pooling="cls", normalize=True, max_length=512,
                              dim=768)
  c.teacher2 = teacher_config(kind="hf", name="coder", model="GanjinZero/coder_eng",
                              preset="coder", pooling="cls", normalize=False, max_length=32,
                              batch_size=256, dim=768)
  # CODER embeds the evaluated pairs' texts only (its teacher rows of the tables); LINE
  # trains on BGE's texts, so the train split's notes are not run through CODER.
  c.teacher2.text_rows = "eval"
  c.graph.relations = tuple(UMLS_RELATIONS)
  c.model.dim = 768                                 # d = d_t (paper: W_c in R^{d_t x d_c})
  c.train.batch_size = 128
  c.train.learning_rate = 1e-3
  c.train.stage1_epochs = 3
  c.train.stage2_epochs = 2
  c.recovery.threshold = 0.9
  return c
