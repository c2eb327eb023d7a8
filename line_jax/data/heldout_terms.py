"""Terms kept out of training, to measure how G places concepts the model never saw.

With `config.data.heldout_terms` = f > 0, a fraction f of the dictionary's terms (a term and
its synonym entries, concepts.parquet `term_id`; without it each entry is its own term) is
chosen by a stable hash of (`config.data.heldout_terms_seed`, term id): the same terms
whatever the dictionary's row order, and a term stays chosen when f grows. Every entry of
a chosen term is then kept out of training (`training_view`):

- pairs: a train-split pair that lists one of them (either polarity) is not trained on (it
  keeps its row, with the split "heldout_terms", so that cached rows still line up). Whole
  pairs rather than single mentions, so that no text the model trains on is paired with a
  held-out term; valid and test pairs are unchanged and evaluated as usual;
- graph: every edge with a held-out entry at either end is left out of G's neighbourhoods
  and of the relational term;
- negatives: they are never drawn as random, corrupted or hard negatives (the batch
  builders read `Dataset.heldout_concepts`);
- recovery between the stages never adds them, and the fine-tuned concept teacher is not
  trained on their synonym edges or definitions.

At evaluation the whole graph is back (a new concept joins the graph with its edges), and
`line_jax.eval.placement` ranks the held-out terms' names among the dictionary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging

import numpy as np

from line_jax.data.dataset import Dataset
from line_jax.search import terms as terms_lib

HELDOUT_SPLIT = "heldout_terms"   # the split a train pair listing a held-out term gets


def check_fraction(fraction) -> float:
  fraction = float(fraction)
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"config.data.heldout_terms={fraction}: expected a fraction of the "
                     "terms in [0, 1)")
  return fraction


def term_ids(dataset: Dataset) -> np.ndarray:
  """[C] the term id of every entry: concepts.parquet `term_id` where the column is there
  and complete (the grouping `line_jax.search.terms.dataset_groups` reads), else the
  entry's own concept id."""
  column = terms_lib.term_id_column(dataset)
  return np.asarray(dataset.concept_ids if column is None else column, dtype=object)


def _unit_hash(seed: int, term: str) -> float:
  digest = hashlib.sha256(f"{int(seed)}:{term}".encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def select(dataset: Dataset, fraction: float, seed: int = 0) -> np.ndarray:
  """Sorted int32 rows of every entry of the chosen terms (module doc); empty at 0."""
  fraction = check_fraction(fraction)
  if fraction == 0.0:
    return np.zeros(0, np.int32)
  terms = term_ids(dataset)
  unique, inverse = np.unique(terms.astype(str), return_inverse=True)
  chosen = np.array([_unit_hash(seed, t) < fraction for t in unique], bool)
  return np.flatnonzero(chosen[inverse]).astype(np.int32)


def with_heldout(dataset: Dataset, config) -> Dataset:
  """The dataset marked with the terms config.data.heldout_terms keeps out of training
  (`Dataset.heldout_concepts`; unchanged at 0)."""
  data = config.data
  fraction = check_fraction(data.get("heldout_terms", 0.0))
  if fraction == 0.0:
    return dataset
  rows = select(dataset, fraction, int(data.get("heldout_terms_seed", 0)))
  logging.info("held-out terms: %d dictionary entries (%.1f%% of the terms, "
               "data.heldout_terms=%g) are kept out of training", len(rows), 100 * fraction,
               fraction)
  return dataclasses.replace(dataset, heldout_concepts=rows)


def held_mask(dataset: Dataset) -> np.ndarray:
  """[C] bool: the entries kept out of training (all False when none are)."""
  mask = np.zeros(dataset.num_concepts, bool)
  if dataset.heldout_concepts is not None:
    mask[np.asarray(dataset.heldout_concepts, np.int64)] = True
  return mask


def listing_pairs(dataset: Dataset) -> np.ndarray:
  """[P] bool: the pairs whose list names a held-out entry (either polarity)."""
  held = held_mask(dataset)
  owner = np.repeat(np.arange(dataset.num_pairs), np.diff(dataset.concept_offsets))
  out = np.zeros(dataset.num_pairs, bool)
  out[owner[held[dataset.concept_flat]]] = True
  return out


def training_view(dataset: Dataset) -> Dataset:
  """What training reads of a dataset with held-out terms: their edges removed and the
  train pairs that list them moved to the split HELDOUT_SPLIT (module doc); the dataset
  itself when it holds none out."""
  if dataset.heldout_concepts is None or not len(dataset.heldout_concepts):
    return dataset
  held = held_mask(dataset)
  keep = ~(held[dataset.edge_head] | held[dataset.edge_tail])
  moved = listing_pairs(dataset) & (dataset.split == "train")
  split = np.where(moved, HELDOUT_SPLIT, dataset.split).astype(object)
  logging.info("held-out terms: %d of %d edges and %d of %d train pairs left out of "
               "training", int((~keep).sum()), len(keep), int(moved.sum()),
               int((dataset.split == "train").sum()))
  return dataclasses.replace(dataset, edge_head=dataset.edge_head[keep],
                             edge_tail=dataset.edge_tail[keep],
                             edge_type=dataset.edge_type[keep], split=split)
