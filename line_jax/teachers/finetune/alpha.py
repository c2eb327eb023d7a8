"""The merge weight: saved weights = alpha * fine_tuned + (1 - alpha) * base, alpha the best
of `alphas` on the validation synonyms (or `alpha` when select_alpha is False). Each alpha
is scored by held-out synonym -> term retrieval; the curve is saved as alpha_curve.png."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Mapping, Optional

import numpy as np

from line_jax.teachers.encoder import Encoder
from line_jax.util import files as files_lib
from line_jax.teachers.finetune.pairs import FinetuneData
from line_jax.teachers.finetune.settings import FinetuneSettings
from line_jax.teachers.finetune.step import average


def retrieval_metrics(queries: np.ndarray, true_rows: np.ndarray, keys: np.ndarray) -> dict:
  """acc@1 and MRR of each query's true key among all keys (cosine; ties count against)."""
  if len(queries) == 0:
    return {"acc@1": float("nan"), "mrr": float("nan"), "n": 0}
  q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
  k = keys / np.maximum(np.linalg.norm(keys, axis=1, keepdims=True), 1e-12)
  ranks = np.zeros(len(q), np.int64)
  for start in range(0, len(q), 1024):
    scores = q[start:start + 1024] @ k.T
    true = scores[np.arange(len(scores)), true_rows[start:start + 1024]]
    ranks[start:start + 1024] = 1 + (scores >= true[:, None]).sum(1) - 1
  return {"acc@1": float(np.mean(ranks == 1)), "mrr": float(np.mean(1.0 / ranks)),
          "n": int(len(q))}


def eval_pool(data: FinetuneData, s: FinetuneSettings) -> np.ndarray:
  """The candidate terms of the alpha curve: every query's term plus a fixed random sample
  of the others, `eval_candidates` in all (0 or more than there are: every term)."""
  if not s.eval_candidates or s.eval_candidates >= len(data.candidates):
    return data.candidates
  needed = np.unique(np.concatenate([data.val_term, data.test_term]))
  others = np.setdiff1d(data.candidates, needed)
  extra = max(0, s.eval_candidates - len(needed))
  pick = np.random.default_rng([s.seed, 18]).choice(len(others), size=min(extra, len(others)),
                                                    replace=False)
  return np.sort(np.concatenate([needed, others[pick]]))


def evaluate_params(params, config, tokenizer, enc_settings, data: FinetuneData,
                    s: FinetuneSettings, names: np.ndarray,
                    pool: Optional[np.ndarray] = None,
                    encoder: Optional[Encoder] = None) -> dict:
  """Validation and test retrieval of the held-out synonyms among the term names of `pool`
  (default: every term). `encoder`: one made here before, given these weights instead of
  compiling its length buckets again (the alpha curve scores five weight sets)."""
  if pool is not None:
    data = dataclasses.replace(data, candidates=pool)
  if encoder is None:
    settings = dataclasses.replace(enc_settings, max_length=s.name_max_length)
    encoder = Encoder(params, config, tokenizer, settings, batch_size=s.eval_batch_size,
                      precision=None)
  else:
    encoder.set_params(params)
  strings = list(names[data.candidates]) + list(data.val_query) + list(data.test_query)
  vectors = encoder.encode(strings)
  n_c, n_v = len(data.candidates), len(data.val_query)
  keys = vectors[:n_c]
  position = np.full(len(names), -1, np.int64)
  position[data.candidates] = np.arange(n_c)
  out = {}
  for split, queries, terms in (("validation", vectors[n_c:n_c + n_v], data.val_term),
                                ("test", vectors[n_c + n_v:], data.test_term)):
    out[split] = retrieval_metrics(queries, position[terms], keys)
  return out


def curve_alphas(s: FinetuneSettings) -> list:
  """The alphas scored: the base (0), the fine-tuned model (1), `alpha`, and with
  select_alpha every one of `alphas`."""
  return sorted(set(s.alphas) | {0.0, 1.0, s.alpha}) if s.select_alpha else sorted(
      {0.0, 1.0, s.alpha})


def alpha_curve(base_params, tuned, config, tokenizer, enc, data: FinetuneData,
                s: FinetuneSettings, names: np.ndarray, pool: np.ndarray) -> dict:
  """{alpha: evaluate_params of the average at alpha}, one encoder for every alpha."""
  scorer = Encoder(base_params, config, tokenizer,
                   dataclasses.replace(enc, max_length=s.name_max_length),
                   batch_size=s.eval_batch_size, precision=None)
  curve = {}
  for a in curve_alphas(s):
    t0 = time.time()
    curve[a] = evaluate_params(average(base_params, tuned, a), config, tokenizer, enc, data, s,
                               names, pool, encoder=scorer)
    logging.info("alpha %.2f: validation %s, test %s (%.1fs)", a, curve[a]["validation"],
                 curve[a]["test"], time.time() - t0)
  return curve


def best_alpha(curve: Mapping, s: FinetuneSettings) -> float:
  """The alpha of `alphas` with the best validation acc@1 (then MRR, then the smaller), or
  `alpha` when select_alpha is False."""
  if not s.select_alpha:
    return s.alpha
  return max(s.alphas, key=lambda a: (curve[a]["validation"]["acc@1"],
                                      curve[a]["validation"]["mrr"], -a))


def plot_curve(info: Mapping, path: str) -> None:
  curve = info["curve"]
  alphas = [c["alpha"] for c in curve]
  fig = files_lib.new_figure(figsize=(5, 3.5))
  ax = fig.add_subplot()
  for split, style in (("validation", "-o"), ("test", "--s")):
    ax.plot(alphas, [c[split]["acc@1"] for c in curve], style, label=f"{split} acc@1")
    ax.plot(alphas, [c[split]["mrr"] for c in curve], style, alpha=0.5, label=f"{split} MRR")
  ax.axvline(info["alpha"], color="grey", lw=0.8)
  ax.set_xlabel("alpha (weight of the fine-tuned model)")
  ax.set_ylabel("held-out synonym -> term")
  ax.legend(fontsize=7)
  fig.tight_layout()
  files_lib.save_figure(fig, path, dpi=110)
