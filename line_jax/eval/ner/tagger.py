"""The NER protocol's linear token classifier (softmax over the BIO tags, Adam), trained
once per seed on fixed features and scored by entity-level F1."""

from __future__ import annotations

import functools
from typing import Dict, List, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from line_jax.eval.ner.bio import SPLITS, Sentence, f1_scores, tag_set


def _loss(params, x, y, mask):
  logits = x @ params["w"] + params["b"]
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)


@functools.partial(jax.jit, static_argnames=("optimizer",))
def _step(params, opt_state, x, y, mask, optimizer):
  loss, grads = jax.value_and_grad(_loss)(params, x, y, mask)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


@jax.jit
def _predict(params, x):
  return jnp.argmax(x @ params["w"] + params["b"], axis=-1)


def train_linear(x: np.ndarray, y: np.ndarray, num_classes: int, seed: int, epochs: int,
                 learning_rate: float, batch_size: int) -> dict:
  """A softmax linear layer trained with Adam; every batch is padded to `batch_size` rows."""
  rng = np.random.default_rng(seed)
  key = jax.random.PRNGKey(seed)
  d = x.shape[1]
  params = {"w": jax.random.normal(key, (d, num_classes), jnp.float32) / np.sqrt(d),
            "b": jnp.zeros((num_classes,), jnp.float32)}
  optimizer = optax.adam(learning_rate)
  opt_state = optimizer.init(params)
  n = len(x)
  for _ in range(epochs):
    order = rng.permutation(n)
    for s in range(0, n, batch_size):
      idx = order[s:s + batch_size]
      xb = np.zeros((batch_size, d), np.float32)
      yb = np.zeros(batch_size, np.int32)
      mb = np.zeros(batch_size, np.float32)
      xb[:len(idx)], yb[:len(idx)], mb[:len(idx)] = x[idx], y[idx], 1.0
      params, opt_state, _ = _step(params, opt_state, xb, yb, mb, optimizer)
  return params


def predict(params: dict, x: np.ndarray, chunk: int = 65536) -> np.ndarray:
  return np.concatenate([np.asarray(_predict(params, x[s:s + chunk]))
                         for s in range(0, len(x), chunk)]) if len(x) else np.zeros(0, int)


def _by_sentence(flat: Sequence, sentences: Sequence[Sentence]) -> list:
  out, k = [], 0
  for s in sentences:
    out.append(list(flat[k:k + len(s.words)]))
    k += len(s.words)
  return out


def evaluate_features(features: Dict[str, np.ndarray], data: Dict[str, List[Sentence]],
                      settings) -> dict:
  """Trains one classifier per seed on features["train"]; F1 on valid and test."""
  labels = tag_set(data["train"])
  index = {t: i for i, t in enumerate(labels)}
  y = {split: np.asarray([index[t] for s in data[split] for t in s.tags], np.int32)
       for split in SPLITS}
  x = dict(features)
  if settings.standardize:
    mean, std = x["train"].mean(0), x["train"].std(0) + 1e-6
    x = {k: (v - mean) / std for k, v in x.items()}
  runs = []
  for seed in settings.seeds:
    params = train_linear(x["train"], y["train"], len(labels), int(seed), settings.epochs,
                          settings.learning_rate, settings.batch_size)
    run = {"seed": int(seed)}
    for split in ("valid", "test"):
      pred = [labels[i] for i in predict(params, x[split])]
      run[split] = f1_scores([s.tags for s in data[split]],
                             _by_sentence(pred, data[split]))
    runs.append(run)
  summary = {}
  for split in ("valid", "test"):
    for metric in ("micro_f1", "macro_f1"):
      values = [r[split][metric] for r in runs]
      summary[f"{split}_{metric}"] = float(np.mean(values))
      summary[f"{split}_{metric}_std"] = float(np.std(values))
  return dict(summary=summary, runs=runs, labels=labels)
