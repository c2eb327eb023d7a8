"""The paper's second pairing: OpenAI text-embedding-3-small ("GPT-4", d_t = 1536) + CODER.

Text embeddings come from outside (the OpenAI API); import them as a precomputed teacher:
a folder with text.npy / concepts.npy / negated.npy (rows in dataset order) or Parquet files
with an id column and an embedding column (see `python -m line_jax.export --help`).

  python -m line_jax.train --config=configs/gpt4_coder.py --workdir=runs/gpt4_coder \
      --config.data.dir=/data/mimic_umls --config.teacher1.precomputed=/data/openai_emb \
      --config.teacher2.model=/models/coder_eng
"""

from configs import bge_coder
from line_jax.config import teacher_config


def get_config():
  c = bge_coder.get_config()
  c.teacher1 = teacher_config(kind="precomputed", name="openai_te3_small",
                              model="text-embedding-3-small", pooling="none", normalize=True,
                              precomputed="", dim=1536)   # required: --config.teacher1.precomputed
  c.model.dim = 1536
  return c
