"""Synthetic teachers: the embeddings of a synthetic dataset (`line_jax.data.synthetic`),
written into the work-dir cache (teacher kind "synthetic").

A synthetic teacher sees the concepts' latents through its own random rotation plus noise,
so the two teachers disagree the way two real encoders do, and alignment has something to
learn.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

from line_jax.cache import store as emb_lib
from line_jax.util import files
from line_jax.data.dataset import Dataset
from line_jax.data.synthetic import LATENT_DIM, latent


NOISE = 0.1
_SEGMENT_STREAM = 7    # default_rng([seed, this]) draws the noise of the segment rows


def _rotation(tcfg) -> np.ndarray:
  """The teacher's view of the latents: the first draw of default_rng(seed)."""
  dim = int(tcfg.dim or 32)
  rng = np.random.default_rng(tcfg.seed)
  return rng.standard_normal((LATENT_DIM, dim)) / np.sqrt(LATENT_DIM)


def segment_rows(dataset: Dataset, tcfg, strings: Sequence[str]) -> np.ndarray:
  """The synthetic teacher's embedding of new strings (the texts' clauses), made as its
  text rows are: the mean latent of the concepts whose names the string holds (-0.5 x
  for a name after "no "), through the teacher's rotation, plus noise; a string that names
  no concept is noise alone. [len(strings), dim], L2-normalised, as tcfg.dtype."""
  rotation = _rotation(tcfg)
  dim = rotation.shape[1]
  index = {str(n): j for j, n in enumerate(dataset.names)}
  names = sorted(index, key=len, reverse=True)
  finder = re.compile(r"(\bno\s+)?\b(" + "|".join(map(re.escape, names)) + r")\b") \
      if names else None
  latents = {}
  out = np.zeros((len(strings), dim))
  for i, text in enumerate(strings):
    found = list(finder.finditer(text)) if finder is not None else []
    if not found:
      continue
    vecs = []
    for m in found:
      cid = dataset.concept_ids[index[m.group(2)]]
      if cid not in latents:
        latents[cid] = latent(cid)
      vecs.append((-0.5 if m.group(1) else 1.0) * latents[cid])
    out[i] = np.mean(vecs, axis=0) @ rotation
  rng = np.random.default_rng([int(tcfg.seed), _SEGMENT_STREAM])
  out += NOISE * rng.standard_normal(out.shape)
  out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
  return out.astype(tcfg.dtype)


def write_synthetic_teacher(dataset: Dataset, path: str, tcfg) -> None:
  """Writes text/concepts/negated .npy for a synthetic teacher into `path`."""
  dim, noise = int(tcfg.dim or 32), NOISE
  rng = np.random.default_rng(tcfg.seed)
  rotation = rng.standard_normal((LATENT_DIM, dim)) / np.sqrt(LATENT_DIM)   # = _rotation
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
