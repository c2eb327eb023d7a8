"""Synthetic teachers: the embeddings of a synthetic dataset (`line_jax.data.synthetic`),
written into the work-dir cache (teacher kind "synthetic").

A synthetic teacher sees the concepts' latents through its own random rotation plus noise,
so the two teachers disagree the way two real encoders do, and alignment has something to
learn.
"""

from __future__ import annotations

import os

import numpy as np

from line_jax.cache import store as emb_lib
from line_jax.util import files
from line_jax.data.dataset import Dataset
from line_jax.data.synthetic import LATENT_DIM, latent


def write_synthetic_teacher(dataset: Dataset, path: str, tcfg) -> None:
  """Writes text/concepts/negated .npy for a synthetic teacher into `path`."""
  dim, noise = int(tcfg.dim or 32), 0.1
  rng = np.random.default_rng(tcfg.seed)
  rotation = rng.standard_normal((LATENT_DIM, dim)) / np.sqrt(LATENT_DIM)
  latents = np.stack([latent(c) for c in dataset.concept_ids])
  concepts = latents @ rotation + noise * rng.standard_normal((dataset.num_concepts, dim))
  negated = -0.5 * latents @ rotation + noise * rng.standard_normal(concepts.shape)
  text = np.zeros((dataset.num_pairs, dim))
  offsets = dataset.true_offsets if dataset.true_offsets is not None else \
      dataset.concept_offsets
  flat = dataset.true_flat if dataset.true_flat is not None else dataset.concept_flat
  for i in range(dataset.num_pairs):
    members = flat[offsets[i]:offsets[i + 1]]
    signs = np.ones(len(members))
    idx, neg = dataset.pair_concepts(i)
    for j, n in zip(idx, neg):
      signs[members == j] = -0.5 if n else 1.0
    text[i] = (signs[:, None] * latents[members]).mean(0) @ rotation
  text += noise * rng.standard_normal(text.shape)
  norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  os.makedirs(path, exist_ok=True)
  for part, arr in (("text", norm(text)), ("concepts", norm(concepts)),
                    ("negated", norm(negated))):
    files.save_npy(os.path.join(path, f"{part}.npy"), arr.astype(tcfg.dtype))
  emb_lib.write_meta(path, dict(model=f"synthetic-{tcfg.seed}", pooling="none", max_length=0,
                                normalize=True, data_hash=dataset.data_hash(), dim=dim,
                                dtype=tcfg.dtype, complete=True,
                                rows=dict(text=dataset.num_pairs,
                                          concepts=dataset.num_concepts,
                                          negated=dataset.num_concepts)))
