"""The HPO dataset's texts: definitions cut to their leading sentences and SYNTHETIC
patient vignettes generated from disease annotations (`line_jax.data.hpo`)."""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Sequence

import ml_collections
import numpy as np

from line_jax.data import extract
from line_jax.data import obo
from line_jax.data.hpo.splits import stable_unit


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
