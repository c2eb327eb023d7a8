"""The HPO knowledge graph: is_a and co-annotation edges, held-out edges and
evaluation-only sibling pairs (`line_jax.data.hpo`)."""

from __future__ import annotations

import collections
from typing import Sequence

import numpy as np

from line_jax.data import obo
from line_jax.data.hpo.ontology import CO_ANNOTATED_RELATION, PARENT_RELATION, SIBLING_RELATION


def is_a_edges(terms: dict) -> list:
  return [(t, p, PARENT_RELATION) for t, term in terms.items() for p in term.parents]


def co_annotated_edges(diseases: Sequence[obo.Disease], phenotype_terms: set,
                       ancestors: dict, max_edges: int, min_count: int) -> list:
  """Phenotype pairs often annotated to the same diseases, best Ochiai scores first.

  Pairs where one term is an ancestor of the other are left out (the hierarchy has them).
  """
  index = {t: i for i, t in enumerate(sorted(phenotype_terms))}
  ids = np.array(sorted(phenotype_terms), dtype=object)
  n = len(index)
  codes, frequency = [], np.zeros(n, np.int64)
  for disease in diseases:
    idx = np.unique([index[t] for t in disease.present if t in index]).astype(np.int64)
    frequency[idx] += 1
    if len(idx) > 1:
      a, b = np.triu_indices(len(idx), 1)
      codes.append(idx[a] * n + idx[b])
  if not codes or max_edges <= 0:
    return []
  pair_codes, counts = np.unique(np.concatenate(codes), return_counts=True)
  keep = counts >= min_count
  pair_codes, counts = pair_codes[keep], counts[keep]
  a, b = pair_codes // n, pair_codes % n
  score = counts / np.sqrt(frequency[a] * frequency[b])
  order = np.lexsort((pair_codes, -counts, -score))
  edges = []
  for k in order:
    head, tail = ids[a[k]], ids[b[k]]
    if head in ancestors[tail] or tail in ancestors[head]:
      continue
    edges.append((head, tail, CO_ANNOTATED_RELATION))
    if len(edges) >= max_edges:
      break
  return edges


def _pair_key(a: str, b: str) -> tuple:
  return (a, b) if a <= b else (b, a)


def hold_out_edges(edges: Sequence[tuple], relations: Sequence[str], fraction: float,
                   rng: np.random.Generator) -> tuple:
  """Splits edges into (training, held out): `fraction` of each listed relation class.

  Any other training edge joining a held-out pair (either direction, any class) is removed
  too, so that the training graph never links a held-out pair.

  Returns:
    (training edges, held-out edges, number of extra edges removed).
  """
  by_class = collections.defaultdict(list)
  for i, (_, _, relation) in enumerate(edges):
    by_class[relation].append(i)
  held = set()
  for relation in relations:
    rows = by_class.get(relation, [])
    k = int(round(fraction * len(rows)))
    if k:
      held.update(np.asarray(rows)[rng.choice(len(rows), size=k, replace=False)].tolist())
  held_keys = {_pair_key(edges[i][0], edges[i][1]) for i in held}
  train, collateral = [], 0
  for i, (h, t, r) in enumerate(edges):
    if i in held:
      continue
    if _pair_key(h, t) in held_keys:
      collateral += 1
      continue
    train.append((h, t, r))
  return train, [edges[i] for i in sorted(held)], collateral


def sibling_pairs(terms: dict, count: int, linked: set, rng: np.random.Generator) -> list:
  """`count` pairs of distinct children of one parent, none already linked by an edge.

  A family is drawn with probability proportional to its number of ordered child pairs,
  then two of its children; at most count x 20 draws. The family is drawn by inverting the
  cumulative weights with one uniform number, which is what `rng.choice(p=weights)` does,
  without re-checking the weights at each of the draws (that made each draw cost the
  number of families). On a small ontology the draws end once every candidate pair is taken
  (the rest could add none)."""
  children = collections.defaultdict(list)
  for t, term in terms.items():
    for p in term.parents:
      children[p].append(t)
  families = sorted(p for p, c in children.items() if len(c) > 1)
  if not families or count <= 0:
    return []
  sizes = np.array([len(children[p]) for p in families], np.float64)
  cdf = np.cumsum(sizes * (sizes - 1))
  cdf /= cdf[-1]
  available = _candidate_count(children, families, linked, limit=count * 20)
  pairs, seen = [], set()
  for _ in range(count * 20):
    parent = families[int(cdf.searchsorted(rng.random(), side="right"))]
    a, b = rng.choice(len(children[parent]), size=2, replace=False)
    key = _pair_key(children[parent][a], children[parent][b])
    if key in seen or key in linked:
      continue
    seen.add(key)
    pairs.append((key[0], key[1], SIBLING_RELATION))
    if len(pairs) >= count or len(pairs) == available:
      break
  return pairs


def _candidate_count(children: dict, families: list, linked, limit: int):
  """The number of distinct sibling pairs not in `linked`; None when the families hold more
  than `limit` pairs (they are not listed then)."""
  if sum(len(children[p]) * (len(children[p]) - 1) // 2 for p in families) > limit:
    return None
  keys = {_pair_key(a, b) for p in families for i, a in enumerate(children[p])
          for b in children[p][i + 1:]}
  return sum(key not in linked for key in keys)
