"""Which pairs the transfer protocol compares: the pairs' sites, whether the label is a
concept group, the branch-root concepts, and classes or sites with too few pairs."""

from __future__ import annotations

import os
import re
from typing import Optional, Sequence, Tuple

import numpy as np
import pyarrow.parquet as pq

from line_jax.data import dataset as dataset_lib
from line_jax.eval.transfer.settings import TransferConfig


def pair_column(root: str, name: str) -> Optional[np.ndarray]:
  """Column `name` of `root`/pairs.parquet as an object array, or None when absent."""
  return dataset_lib.read_optional_columns(os.path.join(root, "pairs.parquet"),
                                           [name]).get(name)


def resolve_sites(root: str, num_pairs: int,
                  cfg: TransferConfig) -> Tuple[Optional[np.ndarray], str]:
  """(site of each pair, "" where none; the column used) or (None, why not)."""
  candidates = ("site", "source") if cfg.site_column == "auto" else (cfg.site_column,)
  for column in candidates:
    values = pair_column(root, column)
    if values is None:
      continue
    if len(values) != num_pairs:
      raise ValueError(f"{os.path.join(root, 'pairs.parquet')}: field '{column}' has "
                       f"{len(values)} rows, the dataset {num_pairs}")
    sites = np.array(["" if v is None else str(v) for v in values], object)
    if cfg.site_pattern:
      pattern = re.compile(cfg.site_pattern)
      if pattern.groups != 1:
        raise ValueError("config.eval.transfer.site_pattern needs exactly one group, got "
                         f"{cfg.site_pattern!r}")
      matches = [pattern.search(s) for s in sites]
      sites = np.array([m.group(1) if m else "" for m in matches], object)
    return sites, column
  return None, (f"the pairs have no {' or '.join(repr(c) for c in candidates)} column "
                f"(config.eval.transfer.site_column={cfg.site_column!r})")


def label_is_group(labels: np.ndarray, groups: Optional[np.ndarray]) -> bool:
  """True when every label but a catch-all "other" is one of the concepts' groups."""
  if groups is None:
    return False
  values = {str(v) for v in labels} - {"other", ""}
  return bool(values) and values <= {str(g) for g in groups}


def branch_root_concepts(dataset) -> np.ndarray:
  """[C] bool: concepts named as their own group, and every entry of the same term.

  The term of an entry is the `term_id` column of concepts.parquet when there is one (so
  that the synonym entries of a root go too), else the concept itself.
  """
  if dataset.groups is None:
    return np.zeros(dataset.num_concepts, bool)
  names = np.array([str(n).strip().lower() for n in dataset.names])
  groups = np.array([str(g).strip().lower() for g in dataset.groups])
  roots = names == groups
  path = os.path.join(dataset.root, "concepts.parquet")
  if os.path.exists(path):
    if "term_id" in pq.read_schema(path).names:
      terms = np.asarray(pq.read_table(path, columns=["term_id"]).column("term_id")
                         .to_pylist(), object)
      if len(terms) == len(roots):
        roots = np.isin(terms.astype(str), terms[roots].astype(str))
  return roots


def too_few_examples(sites: np.ndarray, labels: np.ndarray, used: np.ndarray,
                      chosen: Sequence[str], cfg: TransferConfig):
  """Why the protocol cannot run on the `used` pairs of the `chosen` sites (a str), or the
  label classes to leave out, {class: {site: pairs}} (those with fewer than
  `min_class_pairs` at a site).

  A site needs `min_site_pairs` labelled pairs (before and after leaving classes out), and
  two classes must keep `min_class_pairs` at both sites: with one class there is nothing to
  learn (every F1 is 1), and a class at one site only can be neither learnt at the source
  nor tested at the target.
  """
  def site_counts(mask):
    return {s: int((mask & (sites == s)).sum()) for s in chosen}

  def small_sites(mask, after):
    small = {s: n for s, n in site_counts(mask).items() if n < cfg.min_site_pairs}
    if small:
      return (f"too few labelled pairs at site(s) {small}{after} (fewer than "
              f"config.eval.transfer.min_site_pairs={cfg.min_site_pairs}): too few to "
              "train at one site and test at the other.")
    return None

  why = small_sites(used, "")
  if why:
    return why
  by_class = {str(c): {s: int((used & (sites == s) & (labels == c)).sum()) for s in chosen}
              for c in np.unique(labels[used])}
  kept = [c for c, n in by_class.items() if min(n.values()) >= cfg.min_class_pairs]
  if len(kept) < 2:
    return (f"fewer than two label classes have at least config.eval.transfer."
            f"min_class_pairs={cfg.min_class_pairs} pairs at both sites (pairs by class and "
            f"site: {by_class}): " + ("one class leaves nothing to learn (every F1 would be "
                                      "1)." if len(kept) == 1 else
                                      "no class can be learnt at one site and tested at the "
                                      "other."))
  rare = {c: n for c, n in by_class.items() if c not in kept}
  why = small_sites(used & np.isin(labels, kept), " once the classes with too few pairs "
                    f"{sorted(rare)} are left out")
  return why or rare
