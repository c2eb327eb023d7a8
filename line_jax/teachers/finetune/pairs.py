"""The fine-tune's positive string pairs and its held-out synonym queries.

Positives: a term's name <-> each of its synonym / layperson entries (the tails of the
`finetune.relations` edges of relations.parquet), and a term's name <-> its definition text
for definition pairs of the *train* split only (pairs.parquet columns source ==
"definition", source_id = the term). `validation_size` of those edges, string and edge, are
held out to choose the merge weight; every edge of heldout_relations.parquet, every string
of such an edge and every pair text of the valid/test splits stays out of training as well,
and so do the edges and definitions of terms held out of training (data.heldout_terms).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os

import numpy as np

from line_jax.data import heldout_terms
from line_jax.data.dataset import Dataset, DataError, read_optional_columns
from line_jax.teachers.finetune.settings import FinetuneSettings
from line_jax.util.digest import hash_strings


@dataclasses.dataclass
class FinetuneData:
  """Positive string pairs for training and the held-out synonym queries.

  anchor / positive: [N] str (term name, other string); group [N] the term's concept row;
  kind [N] "entry" or "definition". Validation and test queries: strings with the concept row
  of their term; candidates: the concept rows of every term (retrieval targets).
  """
  anchor: np.ndarray
  positive: np.ndarray
  group: np.ndarray
  kind: np.ndarray
  val_query: np.ndarray
  val_term: np.ndarray
  test_query: np.ndarray
  test_term: np.ndarray
  candidates: np.ndarray
  counts: dict
  val_concept: np.ndarray = None    # concept rows of the validation / test query strings
  test_concept: np.ndarray = None

  def digest(self) -> str:
    h = hashlib.sha256()
    for block in (self.anchor, self.positive, self.kind, self.val_query, self.test_query):
      hash_strings(h, block)
    for arr in (self.group, self.val_term, self.test_term, self.candidates):
      h.update(np.asarray(arr, np.int64).tobytes())
    return h.hexdigest()[:16]


@dataclasses.dataclass
class HeldOut:
  """The edges of the trained relations and what is held out of them: `head`, `tail` [E]
  every such edge of relations.parquet, `val_mask` [E] those held out for validation;
  validation / test queries (strings), their terms and their own concept rows."""
  head: np.ndarray
  tail: np.ndarray
  val_mask: np.ndarray
  val_query: np.ndarray
  val_term: np.ndarray
  val_concept: np.ndarray
  test_query: np.ndarray
  test_term: np.ndarray
  test_concept: np.ndarray


def norm_text(s: str) -> str:
  """Lower case, white space folded: two strings equal here are one string to the fine-tune."""
  return " ".join(str(s).lower().split())


def _edge_types(dataset: Dataset) -> np.ndarray:
  types = list(dataset.relation_types)
  return np.asarray(types, dtype=object)[dataset.edge_type] if len(types) else \
      np.zeros(0, object)


def candidate_terms(dataset: Dataset, s: FinetuneSettings) -> np.ndarray:
  """Terms: the concepts that are not an entry (the tail of a synonym-like edge, trained or
  held out)."""
  entry_types = list(set(s.entry_relations) | set(s.relations))
  is_entry = np.zeros(dataset.num_concepts, bool)
  is_entry[dataset.edge_tail[np.isin(_edge_types(dataset), entry_types)]] = True
  is_entry[dataset.heldout_tail[np.isin(dataset.heldout_relation, entry_types)]] = True
  return np.flatnonzero(~is_entry)


def hold_out(dataset: Dataset, s: FinetuneSettings) -> HeldOut:
  """Test queries: the held-out edges of the trained relations; validation: a fixed random
  subset of the training edges, string and edge."""
  use = np.isin(_edge_types(dataset), list(s.relations))
  head, tail = dataset.edge_head[use].astype(np.int64), dataset.edge_tail[use].astype(np.int64)
  held = np.isin(dataset.heldout_relation, list(s.relations))
  rng = np.random.default_rng([s.seed, 15])
  n_val = min(s.validation_size, len(head) // 2)
  val_pick = np.sort(rng.choice(len(head), size=n_val, replace=False)) if n_val else \
      np.zeros(0, np.int64)
  val_mask = np.zeros(len(head), bool)
  val_mask[val_pick] = True
  return HeldOut(head=head, tail=tail, val_mask=val_mask,
                 val_query=dataset.names[tail[val_mask]], val_term=head[val_mask],
                 val_concept=tail[val_mask],
                 test_query=dataset.names[dataset.heldout_tail[held]],
                 test_term=dataset.heldout_head[held].astype(np.int64),
                 test_concept=dataset.heldout_tail[held].astype(np.int64))


def forbidden_strings(dataset: Dataset, held: HeldOut) -> set:
  """The normalised strings training must not see: the queries and the valid/test texts."""
  forbidden = {norm_text(q) for q in held.val_query} | {norm_text(q) for q in held.test_query}
  forbidden |= {norm_text(t) for t in dataset.texts[dataset.split != "train"]}
  return forbidden


def entry_pairs(dataset: Dataset, held: HeldOut, forbidden: set, dropped: dict) -> list:
  """(name, entry string, term row, "entry") of the trained edges, counting in `dropped`
  those left out: a held-out edge (either direction), a forbidden string, the name itself."""
  held_edges = set(zip(dataset.heldout_head.tolist(), dataset.heldout_tail.tolist()))
  held_edges |= {(b, a) for a, b in held_edges}
  pairs = []
  train = ~held.val_mask
  held_term = heldout_terms.held_mask(dataset)    # terms kept out (data.heldout_terms)
  for h, t in zip(held.head[train].tolist(), held.tail[train].tolist()):
    text = dataset.names[t]
    if (h, t) in held_edges:
      dropped["heldout_edge"] += 1
      continue
    if held_term[h] or held_term[t]:
      dropped["heldout_term"] += 1
      continue
    if norm_text(text) in forbidden:
      dropped["validation_or_heldout_string"] += 1
      continue
    if norm_text(text) == norm_text(dataset.names[h]):
      dropped["same_as_name"] += 1
      continue
    pairs.append((dataset.names[h], text, h, "entry"))
  return pairs


def _definition_rows(dataset: Dataset):
  """(pair row, term concept row, unknown terms) of the definition pairs, from
  pairs.parquet's source / source_id columns (absent columns: none)."""
  path = os.path.join(dataset.root, "pairs.parquet")
  table = read_optional_columns(path, ["pair_id", "source", "source_id"])
  if "source" not in table or "source_id" not in table:
    return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
  if list(table["pair_id"]) != list(dataset.pair_ids):
    raise DataError(f"{path}: rows are not in the order the dataset loaded them")
  index = dataset.concept_index()
  rows, terms, unknown = [], [], 0
  for i, (source, sid) in enumerate(zip(table["source"], table["source_id"])):
    if source != "definition":
      continue
    if sid not in index:
      unknown += 1
      continue
    rows.append(i)
    terms.append(index[sid])
  return np.asarray(rows, np.int64), np.asarray(terms, np.int64), unknown


def definition_pairs(dataset: Dataset, s: FinetuneSettings, forbidden: set,
                     dropped: dict):
  """((name, definition text, term row, "definition") of the train split's definition
  pairs, at most `max_definitions`; the definitions whose term is not a concept)."""
  def_rows, def_terms, unknown = _definition_rows(dataset)
  if not (s.use_definitions and len(def_rows)):
    return [], unknown
  train = (dataset.split[def_rows] == "train") & ~heldout_terms.held_mask(dataset)[def_terms]
  def_rows, def_terms = def_rows[train], def_terms[train]
  keep = np.array([norm_text(dataset.texts[r]) not in forbidden for r in def_rows], bool)
  dropped["definition_text_in_valid_or_test"] = int((~keep).sum())
  def_rows, def_terms = def_rows[keep], def_terms[keep]
  if s.max_definitions and len(def_rows) > s.max_definitions:
    pick = np.sort(np.random.default_rng([s.seed, 16]).choice(
        len(def_rows), size=s.max_definitions, replace=False))
    def_rows, def_terms = def_rows[pick], def_terms[pick]
  return [(dataset.names[term], dataset.texts[r], term, "definition")
          for r, term in zip(def_rows.tolist(), def_terms.tolist())], unknown


def check_pairs(dataset: Dataset, s: FinetuneSettings, pairs: list, held: HeldOut) -> None:
  """DataError for training pairs the fine-tune cannot learn from, or no validation set
  where alpha is chosen on one."""
  if not pairs:
    raise DataError(f"{dataset.root}: no training pairs for the fine-tuned teacher: no "
                    f"{'/'.join(s.relations) or 'synonym'} edges in relations.parquet left "
                    "after the validation set, and no definition pairs (pairs.parquet "
                    "source 'definition') in the train split")
  terms = np.unique(np.asarray([p[2] for p in pairs], np.int64))
  if len(terms) < 2:
    raise DataError(f"{dataset.root}: the fine-tuned teacher's {len(pairs)} training pairs "
                    f"all name one term ({dataset.names[terms[0]]!r}): the other terms of a "
                    "batch are the negatives, so the contrastive loss would be 0 and the "
                    "teacher the base model. Add synonym edges (relations.parquet) or "
                    "train-split definitions of other terms, or use teacher kind 'hf'")
  if s.select_alpha and not len(held.val_query):
    raise DataError(f"{os.path.join(dataset.root, 'relations.parquet')}: field 'relation': "
                    f"{len(held.head)} {'/'.join(s.relations)} edges, but "
                    "finetune.select_alpha chooses alpha on held-out ones and needs at least "
                    "2 (one held out, one trained); set finetune.select_alpha=False to merge "
                    f"at finetune.alpha ({s.alpha:g})")


def build_data(dataset: Dataset, s: FinetuneSettings) -> FinetuneData:
  """The training pairs and the held-out queries, with nothing of valid/test leaking in."""
  candidates = candidate_terms(dataset, s)
  held = hold_out(dataset, s)
  forbidden = forbidden_strings(dataset, held)
  dropped = {"validation_or_heldout_string": 0, "heldout_edge": 0, "same_as_name": 0,
             "heldout_term": 0}
  entries = entry_pairs(dataset, held, forbidden, dropped)
  definitions, unknown = definition_pairs(dataset, s, forbidden, dropped)
  pairs = entries + definitions
  check_pairs(dataset, s, pairs, held)
  counts = {"entry_pairs": len(entries), "definition_pairs": len(definitions),
            "validation_queries": int(len(held.val_query)),
            "test_queries": int(len(held.test_query)),
            "candidates": int(len(candidates)), "unknown_definition_terms": int(unknown),
            "dropped": dropped}
  for why, n in dropped.items():
    if n:
      logging.info("fine-tune data: %d pairs left out (%s)", n, why)
  anchor, positive, group, kind = ([p[i] for p in pairs] for i in range(4))
  return FinetuneData(np.asarray(anchor, object), np.asarray(positive, object),
                      np.asarray(group, np.int64), np.asarray(kind, object),
                      np.asarray(held.val_query, object), held.val_term,
                      np.asarray(held.test_query, object), held.test_term, candidates, counts,
                      held.val_concept, held.test_concept)
