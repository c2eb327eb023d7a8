"""A tiny synthetic dataset, for tests and `configs/test.py` (its synthetic teachers:
`line_jax.cache.synthetic`).

SYNTHETIC DATA. Each concept has a hidden latent vector (a deterministic function of its id);
related concepts have nearby latents. A pair's text is "made" from its true concepts; one of
them is sometimes left out of the extracted list (as a typo would make an extractor miss it),
so residual recovery has something real to find, and `true_concept_ids` keeps the truth.
A synthetic teacher sees latents through its own random rotation plus noise, so the two
teachers disagree the way two real encoders do, and alignment has something to learn.
"""

from __future__ import annotations

import hashlib

import numpy as np

from line_jax.data import atomic
from line_jax.data.dataset import write_dataset

LATENT_DIM = 16


def latent(concept_id: str, dim: int = LATENT_DIM) -> np.ndarray:
  """The hidden latent vector of a concept: a deterministic function of its id."""
  seed = int.from_bytes(hashlib.sha256(concept_id.encode()).digest()[:8], "little")
  return np.random.default_rng(seed).standard_normal(dim)


def build_synthetic_dataset(root: str, cfg) -> None:
  """Writes a small dataset in the dataset format of docs/data.md (see the module docstring)."""
  rng = np.random.default_rng(cfg.seed)
  n_c, n_p, n_r = cfg.num_concepts, cfg.num_pairs, cfg.num_relation_types
  concept_ids = [f"C{j:06d}" for j in range(n_c)]
  names = [f"concept {j}" for j in range(n_c)]
  groups = [f"group{j % 4}" for j in range(n_c)]
  latents = np.stack([latent(c) for c in concept_ids])
  # Edges join each concept to its nearest latents; the relation type is drawn at random.
  sims = latents @ latents.T
  np.fill_diagonal(sims, -np.inf)
  heads, tails, rels = [], [], []
  for j in range(n_c):
    for t in np.argsort(-sims[j])[:cfg.edges_per_concept]:
      if j < t or j not in np.argsort(-sims[t])[:cfg.edges_per_concept]:
        heads.append(concept_ids[j])
        tails.append(concept_ids[int(t)])
        rels.append(f"rel{int(rng.integers(n_r))}")
  order = np.arange(len(heads))
  held = set(order[rng.random(len(heads)) < 0.05].tolist())
  keep = [i for i in order if i not in held]
  pairs = dict(pair_id=[], text=[], concept_ids=[], negated=[], rho=[], split=[], label=[],
               true_concept_ids=[], synthetic=[])
  for i in range(n_p):
    m = max(1, int(rng.poisson(cfg.mean_concepts)))
    chosen = rng.choice(n_c, size=min(m + 1, n_c), replace=False)
    true = [concept_ids[j] for j in chosen]
    missed = len(true) > 1 and rng.random() < 0.5
    extracted = true[:-1] if missed else true
    neg = (rng.random(len(extracted)) < cfg.negated_fraction).tolist()
    words = sum(len(names[concept_ids.index(c)].split()) for c in true) + 2
    covered = sum(len(names[concept_ids.index(c)].split()) for c in extracted)
    pairs["pair_id"].append(f"P{i:06d}")
    pairs["text"].append("patient with " + ", ".join(
        ("no " if n else "") + names[concept_ids.index(c)] for c, n in
        zip(extracted, neg + [False])) + (" and " + names[concept_ids.index(true[-1])] if
                                          missed else ""))
    pairs["concept_ids"].append(extracted)
    pairs["negated"].append(neg)
    pairs["rho"].append(float(min(1.0, covered / words)))
    r = rng.random()
    pairs["split"].append("train" if r < 0.7 else "valid" if r < 0.8 else "test")
    pairs["label"].append(groups[concept_ids.index(extracted[0])])
    pairs["true_concept_ids"].append(true)
    pairs["synthetic"].append(True)
  with atomic.build_into(root, "synthetic", cfg.to_dict()) as out:   # all files or none
    write_dataset(
      out,
      concepts=dict(concept_id=concept_ids, name=names, group=groups),
      relations=dict(head_id=[heads[i] for i in keep], tail_id=[tails[i] for i in keep],
                     relation=[rels[i] for i in keep]),
      pairs=pairs,
      heldout_relations=dict(head_id=[heads[i] for i in sorted(held)],
                             tail_id=[tails[i] for i in sorted(held)],
                             relation=[rels[i] for i in sorted(held)]))
