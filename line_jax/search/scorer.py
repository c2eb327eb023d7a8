r"""A confidence for recovered concepts: which clause -> term candidates are right.

The "segment" recovery (`line_jax.search.terms.segment_candidates`) proposes, for each clause
of a text that its list does not explain, the clause's best term with its cosine. On real
documents the cosine alone cannot tell a right proposal from noise: a header ("Cardiac"), a
clause that states a normal finding ("gross motor skills are appropriate for age") or one
that names nothing in the dictionary proposes its nearest term at much the same cosine as a
clause that names a missed finding. This module generates candidates (`clause_candidates`:
the `top_k` best unlisted terms of every clause, explained or not), describes each by a few
numbers (`FEATURES`), and scores them with a small logistic model (`LogisticScorer`) trained
elsewhere (`line_jax.training.scorer_fit`) on text whose right terms are known.

Features of a candidate (clause c, term g, the text's listed terms L):
  cosine            cos(F(c), G(g)), g's best entry
  margin            cosine minus the best other term's cosine for c (negative below rank 1)
  inverse_rank      1 / g's rank among c's unlisted terms
  explained         one of c's `explained_k` best terms is in L (the old estimator's skip)
  top_listed        c's best term is in L (g is an alternative to what the list names)
  clause_words      log(1 + words of c)
  name_recall       best over g's entries of the share of the entry's content words in c
  clause_precision  share of c's content words in that entry
  trigram           best character-trigram Jaccard of c with one of g's entries (typos)
  cue               c holds a word of `cue_words` (negation, normality: "no", "normal", ...)
  depth             log(1 + g's depth in the hierarchy)
  descendants       log(1 + g's descendants)
  prior             log(1 + lists of the training split that hold g)
  ancestor_of_listed, descendant_of_listed   g is an ancestor / a descendant of a term of L
  support           log(the clauses of the text that propose g)

Words are lower-cased letters and digits, plurals folded, `STOP_WORDS` dropped; two words
match when equal or, from 5 letters on, when their first 5 letters agree ("dilatation",
"dilated"). A term proposed by several clauses of a text keeps its most confident proposal
(`best_per_text`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from line_jax.search import terms as terms_lib
from line_jax.util import files as files_lib
from line_jax.util import segments as segments_lib

FEATURES = ("cosine", "margin", "inverse_rank", "explained", "top_listed", "clause_words", "name_recall",
            "clause_precision", "trigram", "cue", "depth", "descendants", "prior",
            "ancestor_of_listed", "descendant_of_listed", "support")
STOP_WORDS = frozenset((
    "a", "an", "the", "of", "and", "or", "in", "on", "at", "to", "for", "by", "with", "from",
    "as", "is", "was", "are", "were", "be", "been", "has", "had", "have", "his", "her",
    "their", "its", "this", "that", "these", "those", "he", "she", "they", "it", "which"))
DEFAULT_CUE_WORDS = ("no", "not", "without", "normal", "normally", "absent", "absence",
                     "negative", "denies", "denied", "never", "unremarkable", "appropriate",
                     "resolved", "within")
_WORD_RE = re.compile(r"[a-z0-9]+")
_STEM = 5


class ScorerError(ValueError):
  """A stored scorer or operating point that cannot be read; the message names the file."""


def words(text: str) -> List[str]:
  """Lower-cased words of `text`, plurals folded (as the dictionary extractor folds them)."""
  out = []
  for w in _WORD_RE.findall(text.lower()):
    if len(w) > 4 and w.endswith("ies"):
      w = w[:-3] + "y"
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
      w = w[:-1]
    out.append(w)
  return out


@functools.lru_cache(maxsize=1 << 16)
def content_keys(text: str) -> frozenset:
  """The matching keys of `text`'s content words (a word's first 5 letters, or itself)."""
  return frozenset(w[:_STEM] for w in words(text) if w not in STOP_WORDS)


@functools.lru_cache(maxsize=1 << 16)
def trigrams(text: str) -> frozenset:
  """Character trigrams of the text's words joined by single spaces, padded."""
  s = " " + " ".join(words(text)) + " "
  return frozenset(s[i:i + 3] for i in range(len(s) - 2))


def lexical_overlap(clause: str, entries: Sequence[str]) -> Tuple[float, float, float]:
  """(name_recall, clause_precision, trigram) of a clause against a term's entry names."""
  c_keys, c_tri = content_keys(clause), trigrams(clause)
  recall = precision = tri = 0.0
  for name in entries:
    n_keys = content_keys(name)
    if n_keys:
      common = len(n_keys & c_keys)
      r = common / len(n_keys)
      p = common / len(c_keys) if c_keys else 0.0
      if (r, p) > (recall, precision):
        recall, precision = r, p
    n_tri = trigrams(name)
    union = len(n_tri | c_tri)
    if union:
      tri = max(tri, len(n_tri & c_tri) / union)
  return recall, precision, tri


@dataclasses.dataclass(frozen=True)
class TermInfo:
  """What the features need of each term [G]: its entries' names, its place in the
  hierarchy, how often training lists hold it, and whether recovery may propose it.

  Attributes:
    entry_names: [G] tuple of the names of the term's entries.
    ancestors: [G] frozenset of ancestor terms.
    depth: [G] longest is-a path to a root.
    descendants: [G] number of descendant terms.
    prior: [G] training lists that hold the term.
    skip: [G] bool, terms never proposed (e.g. modifiers).
  """
  entry_names: tuple
  ancestors: tuple
  depth: np.ndarray
  descendants: np.ndarray
  prior: np.ndarray
  skip: np.ndarray

  @property
  def num_terms(self) -> int:
    return len(self.entry_names)

  @classmethod
  def build(cls, names: Sequence[str], groups: terms_lib.Groups,
            child: np.ndarray, parent: np.ndarray, prior: Optional[np.ndarray] = None,
            skip_terms: Optional[np.ndarray] = None) -> "TermInfo":
    """From dictionary entry names [C], their grouping into terms, and is-a edges between
    entries (`child` -> `parent`, entry rows; mapped to their terms)."""
    g = groups.num_groups
    entry_names = [[] for _ in range(g)]
    for row, name in enumerate(names):
      entry_names[int(groups.group_of[row])].append(str(name))
    parents = [set() for _ in range(g)]
    for c, p in zip(np.asarray(child, np.int64), np.asarray(parent, np.int64)):
      gc, gp = int(groups.group_of[c]), int(groups.group_of[p])
      if gc != gp:
        parents[gc].add(gp)
    ancestors: List[Optional[frozenset]] = [None] * g
    depth = np.zeros(g, np.int64)

    def resolve(t: int) -> None:          # iterative: deep hierarchies, no recursion limit
      stack = [t]
      while stack:
        top = stack[-1]
        todo = [p for p in parents[top] if ancestors[p] is None and p not in stack]
        if todo:
          stack.extend(todo)
          continue
        stack.pop()
        if ancestors[top] is None:
          out = set(parents[top])
          d = 0
          for p in parents[top]:
            out |= ancestors[p] or frozenset()
            d = max(d, int(depth[p]) + 1)
          ancestors[top] = frozenset(out - {top})
          depth[top] = d

    for t in range(g):
      if ancestors[t] is None:
        resolve(t)
    descendants = np.zeros(g, np.int64)
    for t in range(g):
      for a in ancestors[t]:
        descendants[a] += 1
    skip = np.zeros(g, bool)
    if skip_terms is not None:
      skip[np.asarray(skip_terms, np.int64)] = True
    prior = np.zeros(g, np.int64) if prior is None else np.asarray(prior, np.int64)
    return cls(tuple(tuple(e) for e in entry_names), tuple(ancestors), depth, descendants,
               prior, skip)


@dataclasses.dataclass
class Candidates:
  """Clause -> term candidates of a batch of texts, one row each.

  Attributes:
    text: [n] the text of each candidate.
    clause: [n] the clause (row of the clause arrays given).
    term: [n] the term (group index).
    cosine: [n] cos(F(clause), G(term)).
    features: [n, len(FEATURES)] float64.
  """
  text: np.ndarray
  clause: np.ndarray
  term: np.ndarray
  cosine: np.ndarray
  features: np.ndarray

  def __len__(self) -> int:
    return len(self.text)

  def subset(self, keep: np.ndarray) -> "Candidates":
    return Candidates(self.text[keep], self.clause[keep], self.term[keep], self.cosine[keep],
                      self.features[keep])

  @classmethod
  def empty(cls) -> "Candidates":
    z = np.zeros(0, np.int64)
    return cls(z, z, z, np.zeros(0), np.zeros((0, len(FEATURES))))


def _ranked_rows(clause_emb, clause_owner, list_offsets, list_terms, keys, groups, info,
                 top_k, explained_k, exclude_entry, chunk) -> List[tuple]:
  """(text, clause, term, cosine, margin, 1 / rank, explained, top listed) of every clause's
  `top_k` best unlisted, unskipped terms."""
  q = terms_lib.l2_normalize(np.asarray(clause_emb, np.float32))
  k_unit = terms_lib.l2_normalize(np.asarray(keys, np.float32))
  n_explained = max(1, min(explained_k, groups.num_groups))
  rows: List[tuple] = []
  for s in range(0, len(q), chunk):
    raw = q[s:s + chunk] @ k_unit.T                                     # [b, C]
    if exclude_entry is not None:
      ex = np.asarray(exclude_entry[s:s + chunk], np.int64)
      hit = np.flatnonzero(ex >= 0)
      raw[hit, ex[hit]] = -np.inf
    scores = groups.collapse(raw).astype(np.float64)                    # [b, G]
    for r in range(len(scores)):
      p = s + r
      text = int(clause_owner[p])
      mine = list_terms[list_offsets[text]:list_offsets[text + 1]]
      rows += _clause_rows(scores[r], mine, info, top_k, n_explained, text, p)
  return rows


def _clause_rows(row, mine, info, top_k, n_explained, text, p) -> List[tuple]:
  order = np.argpartition(-row, n_explained)[:n_explained + 1] if len(row) > (
      n_explained + 1) else np.arange(len(row))
  order = order[np.argsort(-row[order], kind="stable")]
  explained = bool(np.isin(order[:n_explained], mine).any())
  top_listed = bool(np.isin(order[:1], mine).any())
  masked = row.copy()
  masked[mine] = -np.inf
  masked[info.skip] = -np.inf
  k = min(top_k, int(np.isfinite(masked).sum()))
  if k < 1:
    return []
  top = np.argpartition(-masked, k - 1)[:k]
  top = top[np.argsort(-masked[top], kind="stable")]
  first, second = float(row[order[0]]), float(row[order[1]]) if len(order) > 1 else -1.0
  out = []
  for rank, term in enumerate(top, 1):
    cos = float(masked[term])
    margin = cos - (second if term == order[0] else first)
    out.append((text, p, int(term), cos, margin, 1.0 / rank, float(explained),
                float(top_listed)))
  return out


def _lexical_features(feats, col, clause, term, clause_texts, info, cue_words, exclude_entry,
                      entry_names) -> None:
  """The clause's length and cue word, and its overlap with the term's names."""
  cues = frozenset(words(" ".join(cue_words)))
  lexical: Dict[tuple, tuple] = {}
  clause_cache: Dict[int, tuple] = {}
  for i, (p, g) in enumerate(zip(clause.tolist(), term.tolist())):
    if p not in clause_cache:
      w = words(clause_texts[p])
      clause_cache[p] = (math.log1p(len(w)), float(bool(cues.intersection(w))))
    if (p, g) not in lexical:
      names = info.entry_names[g]
      if exclude_entry is not None and exclude_entry[p] >= 0:
        own = str(entry_names[int(exclude_entry[p])])
        names = [n for n in names if n != own]
      lexical[(p, g)] = lexical_overlap(clause_texts[p], names)
    feats[i, col["clause_words"]], feats[i, col["cue"]] = clause_cache[p]
    feats[i, col["name_recall"]], feats[i, col["clause_precision"]], \
        feats[i, col["trigram"]] = lexical[(p, g)]


def _ontology_features(feats, col, text, term, list_offsets, list_terms, info) -> None:
  """The term's depth, descendants and prior, its relation to the listed terms, and how many
  clauses of the text propose it."""
  feats[:, col["depth"]] = np.log1p(info.depth[term])
  feats[:, col["descendants"]] = np.log1p(info.descendants[term])
  feats[:, col["prior"]] = np.log1p(info.prior[term])
  listed_sets = {}
  for i, (t, g) in enumerate(zip(text.tolist(), term.tolist())):
    if t not in listed_sets:
      mine = list_terms[list_offsets[t]:list_offsets[t + 1]].tolist()
      listed_sets[t] = (set(mine), set().union(*(info.ancestors[m] for m in mine)) if mine
                        else set())
    mine, above = listed_sets[t]
    feats[i, col["ancestor_of_listed"]] = float(g in above)
    feats[i, col["descendant_of_listed"]] = float(bool(mine & info.ancestors[g]))
  key = text * (info.num_terms + 1) + term
  _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
  feats[:, col["support"]] = np.log(counts[inverse])


def clause_candidates(clause_emb: np.ndarray, clause_owner: np.ndarray,
                      clause_texts: Sequence[str], list_offsets: np.ndarray,
                      list_terms: np.ndarray, keys: np.ndarray, groups: terms_lib.Groups,
                      info: TermInfo, top_k: int = 3, explained_k: int = 3,
                      cue_words: Sequence[str] = DEFAULT_CUE_WORDS,
                      exclude_entry: Optional[np.ndarray] = None,
                      entry_names: Optional[Sequence[str]] = None,
                      chunk: int = 256) -> Candidates:
  """The `top_k` best unlisted, unskipped terms of every clause, with their features.

  Args:
    clause_emb: [P, d] F of each clause; clause_owner: [P] its text; clause_texts: [P].
    list_offsets: [N + 1]; list_terms: the texts' listed terms (group indices, either
      polarity): text i lists list_terms[list_offsets[i]:list_offsets[i + 1]].
    keys: [C, d] G of the dictionary's entries; groups: entries -> terms.
    info: the terms' `TermInfo`.
    top_k: candidates per clause.
    explained_k: a clause with a listed term among its this many best is "explained".
    cue_words: words that make feature `cue` 1.
    exclude_entry: optional [P] a dictionary entry per clause (-1: none) that neither
      scores nor counts in the lexical features: a dictionary string used as a clause
      must find its term through the term's other entries, as a paraphrase the dictionary
      lacks would (`line_jax.training.scorer_fit`); needs `entry_names` [C].
  """
  clause_owner = np.asarray(clause_owner, np.int64)
  list_offsets = np.asarray(list_offsets, np.int64)
  list_terms = np.asarray(list_terms, np.int64)
  if not len(clause_owner) or top_k < 1:
    return Candidates.empty()
  rows = _ranked_rows(clause_emb, clause_owner, list_offsets, list_terms, keys, groups, info,
                      top_k, explained_k, exclude_entry, chunk)
  if not rows:
    return Candidates.empty()
  text, clause, term = (np.asarray([r[i] for r in rows], np.int64) for i in range(3))
  cosine = np.asarray([r[3] for r in rows], np.float64)
  feats = np.zeros((len(rows), len(FEATURES)), np.float64)
  col = {f: i for i, f in enumerate(FEATURES)}
  feats[:, col["cosine"]] = cosine
  feats[:, col["margin"]] = [r[4] for r in rows]
  feats[:, col["inverse_rank"]] = [r[5] for r in rows]
  feats[:, col["explained"]] = [r[6] for r in rows]
  feats[:, col["top_listed"]] = [r[7] for r in rows]
  _lexical_features(feats, col, clause, term, clause_texts, info, cue_words, exclude_entry,
                    entry_names)
  _ontology_features(feats, col, text, term, list_offsets, list_terms, info)
  return Candidates(text, clause, term, cosine, feats)


def text_candidates(texts: Sequence[str], list_offsets: np.ndarray, list_terms: np.ndarray,
                    embed_strings, keys: np.ndarray, groups: terms_lib.Groups,
                    info: TermInfo, pattern: str, **settings
                    ) -> Tuple[Candidates, List[str]]:
  """`clause_candidates` of whole texts: their clauses (`line_jax.util.segments`,
  `pattern`) embedded by `embed_strings` (strings -> F [n, d]). Returns (candidates,
  the clauses their `clause` indexes)."""
  clauses, owner = segments_lib.clause_table(list(texts), pattern)
  if not clauses:
    return Candidates.empty(), []
  emb = np.asarray(embed_strings(clauses), np.float32)
  return clause_candidates(emb, owner, clauses, list_offsets, list_terms, keys, groups, info,
                           **settings), clauses


def best_per_text(cands: Candidates, confidence: np.ndarray) -> Tuple[np.ndarray, ...]:
  """(text, term, confidence, candidate row) of each distinct (text, term), its most
  confident candidate; sorted by text, then confidence (best first)."""
  if not len(cands):
    z = np.zeros(0, np.int64)
    return z, z, np.zeros(0), z
  confidence = np.asarray(confidence, np.float64)
  order = np.lexsort((-confidence, cands.term, cands.text))
  t, g = cands.text[order], cands.term[order]
  first = np.r_[True, (t[1:] != t[:-1]) | (g[1:] != g[:-1])]
  keep = order[first]
  resort = np.lexsort((-confidence[keep], cands.text[keep]))
  keep = keep[resort]
  return cands.text[keep], cands.term[keep], confidence[keep], keep


# --- the model -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LogisticScorer:
  """P(right | features) = sigmoid(w . (x - mean) / scale + b)."""
  features: Tuple[str, ...]
  mean: np.ndarray
  scale: np.ndarray
  weights: np.ndarray
  bias: float

  @classmethod
  def fit(cls, x: np.ndarray, y: np.ndarray, l2: float = 1.0, sample_weight=None,
          iterations: int = 50, features: Sequence[str] = FEATURES) -> "LogisticScorer":
    """Newton's method on the L2-penalised log loss (`l2` on the standardised weights,
    bias free). Deterministic; a constant feature gets weight 0."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 2 or len(x) != len(y) or x.shape[1] != len(features):
      raise ValueError(f"features {x.shape} and labels {y.shape} disagree with "
                       f"{len(features)} feature names")
    if not len(y) or y.min() == y.max():
      raise ValueError(f"a scorer needs right and wrong examples: {int(y.sum())} right of "
                       f"{len(y)}")
    w_s = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    mean = np.average(x, axis=0, weights=w_s)
    scale = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w_s))
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = np.concatenate([(x - mean) / scale, np.ones((len(x), 1))], axis=1)
    theta = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], float(l2))
    penalty[-1] = 0.0
    for _ in range(iterations):
      p = 1.0 / (1.0 + np.exp(-np.clip(z @ theta, -30, 30)))
      grad = z.T @ (w_s * (p - y)) + penalty * theta
      hess = (z * (w_s * p * (1 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
      step = np.linalg.solve(hess, grad)
      theta -= step
      if np.max(np.abs(step)) < 1e-8:
        break
    return cls(tuple(features), mean, scale, theta[:-1], float(theta[-1]))

  def predict(self, x: np.ndarray) -> np.ndarray:
    """[n] probabilities."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[1] != len(self.features):
      raise ValueError(f"features of shape {x.shape}: the scorer reads {len(self.features)}")
    logit = ((x - self.mean) / self.scale) @ self.weights + self.bias
    return 1.0 / (1.0 + np.exp(-np.clip(logit, -30, 30)))

  def to_dict(self) -> dict:
    return {"features": list(self.features), "mean": self.mean.tolist(),
            "scale": self.scale.tolist(), "weights": self.weights.tolist(),
            "bias": self.bias}

  @classmethod
  def from_dict(cls, d: dict, where: str = "scorer") -> "LogisticScorer":
    try:
      features = tuple(str(f) for f in d["features"])
      arrays = [np.asarray(d[k], np.float64) for k in ("mean", "scale", "weights")]
      bias = float(d["bias"])
    except (KeyError, TypeError, ValueError) as e:
      raise ScorerError(f"{where}: not a scorer ({type(e).__name__}: {e})") from None
    if features != FEATURES:
      raise ScorerError(f"{where}: its features {list(features)} are not this version's "
                        f"{list(FEATURES)}; evaluate again to refit it")
    if any(a.shape != (len(features),) for a in arrays) or not all(
        np.isfinite(a).all() for a in arrays) or not math.isfinite(bias):
      raise ScorerError(f"{where}: arrays of the wrong shape or not finite")
    return cls(features, *arrays, bias)


# --- the operating point -------------------------------------------------------------------


def micro_prf(tp: int, predicted: int, gold: int) -> Dict[str, float]:
  """Micro precision, recall and F1 from counts (0 where undefined)."""
  p = tp / predicted if predicted else 0.0
  r = tp / gold if gold else 0.0
  return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
          "true_positives": int(tp), "predicted": int(predicted), "gold": int(gold)}


def choose_point(base_tp: int, base_predicted: int, gold: int, confidence: np.ndarray,
                 correct: np.ndarray, grid: Sequence[float], min_precision: float
                 ) -> Dict:
  """The operating point, by a rule fixed before any reporting data is seen.

  Given a base prediction (the extractor's: `base_tp` right of `base_predicted`, `gold`
  gold items) and candidate additions (their `confidence` and whether each is `correct`,
  i.e. gold and not already predicted), each threshold t of `grid` adds the candidates with
  confidence >= t. The rule: among the thresholds whose combined micro precision is at
  least `min_precision` and whose combined F1 is at least the base's, the one of highest
  combined F1 (ties: the highest threshold, the fewest additions). None qualifies: the
  point is +inf (nothing passes).

  Returns:
    {"threshold", "f1", "precision", "recall", "added", "added_correct",
     "added_precision" (None when nothing is added), "base": base micro P/R/F1,
     "rule", "min_precision"}.
  """
  confidence = np.asarray(confidence, np.float64)
  correct = np.asarray(correct, bool)
  base = micro_prf(base_tp, base_predicted, gold)
  best = None
  for t in sorted(float(x) for x in grid):
    take = confidence >= t
    n, k = int(take.sum()), int((take & correct).sum())
    m = micro_prf(base_tp + k, base_predicted + n, gold)
    if m["precision"] < min_precision or m["f1"] < base["f1"]:
      continue
    if best is None or m["f1"] >= best[1]["f1"]:     # later (higher) t wins ties
      best = (t, m, n, k)
  if best is None:
    t, m, n, k = math.inf, base, 0, 0
  else:
    t, m, n, k = best
  return {"threshold": t, "f1": m["f1"], "precision": m["precision"],
          "recall": m["recall"], "added": n, "added_correct": k,
          "added_precision": k / n if n else None, "base": base,
          "min_precision": float(min_precision),
          "rule": "highest combined F1 over the grid among thresholds with combined "
                  f"precision >= {min_precision} and F1 >= the base's; ties: the higher "
                  "threshold; none: +inf"}


# --- the work dir's operating point --------------------------------------------------------

POINT_FILE = "recovery_point.json"
POINT_VERSION = 1


def point_path(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), POINT_FILE)


def write_point(workdir: str, record: dict) -> str:
  """Writes the operating point (scorer, threshold, what it was chosen on) whole or not at
  all; returns the file's path."""
  path = point_path(workdir)
  threshold = record.get("threshold")
  if threshold is not None and not math.isfinite(threshold):
    threshold = None                          # nothing passes; strict JSON has no inf
  files_lib.write_json(path, dict(record, threshold=threshold, version=POINT_VERSION))
  return path


def read_point(workdir: str) -> Optional[dict]:
  """The work dir's operating point with its scorer as a `LogisticScorer` (key "model"),
  or None when there is none; ScorerError naming the file when it cannot be read."""
  path = point_path(workdir)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      record = json.load(f)
  except (OSError, ValueError) as e:
    raise ScorerError(f"{path}: cannot be read ({e}); evaluate again with --only="
                      "recognition to rewrite it") from None
  if not isinstance(record, dict) or record.get("version") != POINT_VERSION:
    raise ScorerError(f"{path}: not an operating point of this version "
                      f"({POINT_VERSION}); evaluate again with --only=recognition")
  for field in ("scorer", "threshold", "candidates"):
    if field not in record:
      raise ScorerError(f"{path}: field '{field}' is missing")
  threshold = record["threshold"]
  if threshold is not None and not isinstance(threshold, (int, float)):
    raise ScorerError(f"{path}: field 'threshold' is {threshold!r}, not a number")
  record = dict(record, model=LogisticScorer.from_dict(record["scorer"], f"{path}: field "
                                                       "'scorer'"))
  record["threshold"] = math.inf if threshold is None else float(threshold)
  return record
