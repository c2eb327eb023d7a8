"""The transfer protocol (`run_transfer`) and one direction of it (`transfer_direction`);
the package docstring describes both."""

from __future__ import annotations

import dataclasses
import os
import resource
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from line_jax.eval.transfer.cnn import init_cnn_params
from line_jax.eval.transfer.fitting import Problem, fit, scores
from line_jax.eval.transfer.packing import (Lists, list_segments, pack_lists,
                                            packing_capacity)
from line_jax.eval.transfer.report import plot_transfer
from line_jax.eval.transfer.settings import ONEHOT_LABEL, STRATEGIES, TransferConfig
from line_jax.eval.transfer.sites import (branch_root_concepts, label_is_group,
                                          resolve_sites, too_few_examples)

VOCAB_ROUND = 256    # one-hot vocabularies are padded to a multiple of this (one compile)
_RNG_SOURCE, _RNG_TARGET, _RNG_SHUFFLE = range(3)

Embedder = Callable[[np.ndarray, np.ndarray], np.ndarray]


def summarize(per_seed: Sequence[Dict[str, float]]) -> Dict[str, object]:
  """Mean and standard deviation over seeds of macro F1, precision, recall, accuracy."""
  out: Dict[str, object] = {}
  for name in ("f1", "accuracy", "precision", "recall"):
    values = np.array([s[name] for s in per_seed], np.float64)
    out[name] = float(values.mean())
    out[f"{name}_std"] = float(values.std())
  out["per_seed"] = [{k: float(v) for k, v in s.items()} for s in per_seed]
  return out


def stratified_part(rows: np.ndarray, labels: np.ndarray, fraction: float,
                    rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
  """(part, rest): `floor(fraction * n_c)` rows of each class c drawn into the part.

  At least one row goes to each side when `rows` has two or more.
  """
  part = []
  for c in np.unique(labels[rows]):
    members = rng.permutation(rows[labels[rows] == c])
    part.extend(members[:int(np.floor(fraction * len(members)))].tolist())
  part = np.sort(np.asarray(part, np.int64))
  if len(part) == 0 and len(rows) >= 2:
    part = np.sort(rng.choice(rows, size=1, replace=False))
  rest = np.setdiff1d(rows, part)
  if len(rest) == 0 and len(part) >= 2:
    rest, part = part[-1:], part[:-1]
  return part, rest


def transfer_direction(problem: Problem, source: np.ndarray, target: np.ndarray,
                       rng_for: Callable[[int, int], np.random.Generator]) -> Dict:
  """Every strategy for one direction source -> target; see the module docstring.

  Args:
    problem: the lists, labels and table of one embedding.
    source, target: row indices (into the problem's arrays) of the two sites.
    rng_for: (purpose code, seed) -> a generator, so that each embedding sees the same
      validation parts and target samples.
  """
  cfg = problem.cfg
  seeds = range(cfg.num_seeds)
  labels = np.asarray(problem.labels)
  source_val, source_fit = zip(*[stratified_part(source, labels, cfg.validation_fraction,
                                                 rng_for(_RNG_SOURCE, s)) for s in seeds])
  labelled, test = zip(*[stratified_part(target, labels, cfg.target_fraction,
                                         rng_for(_RNG_TARGET, s)) for s in seeds])
  tune_val, tune_fit = zip(*[stratified_part(part, labels, cfg.validation_fraction,
                                             rng_for(_RNG_TARGET + 10, s))
                             for s, part in zip(seeds, labelled)])
  keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(cfg.seed), s))(
      jnp.arange(cfg.num_seeds))
  shuffle = rng_for(_RNG_SHUFFLE, 0)
  start = init_cnn_params(problem.num_classes, cfg.filters, problem.vocab_size,
                      problem.table, keys)
  trained, epochs, best_epoch = fit(problem, start, source_fit, source_val,
                                    cfg.learning_rate, True, cfg.max_epochs, shuffle)
  out = {"sizes": {"source_fit": len(source_fit[0]), "source_validation": len(source_val[0]),
                   "target_labelled": len(labelled[0]), "target_tune_fit": len(tune_fit[0]),
                   "target_tune_validation": len(tune_val[0]), "target_test": len(test[0])},
         "source_training": {"epochs": int(epochs), "best_epochs": best_epoch.tolist()},
         "source_validation": summarize(scores(problem, trained, source_val)),
         "results": {}}
  out["results"]["direct"] = summarize(scores(problem, trained, test))
  # Tuning starts from the source model; target only trains from scratch, on the source's
  # schedule.
  for name, init, train_conv, lr, max_epochs in (
      ("linear", trained, False, cfg.tune_learning_rate, cfg.tune_max_epochs),
      ("full", trained, True, cfg.tune_learning_rate, cfg.tune_max_epochs),
      ("target_only", start, True, cfg.learning_rate, cfg.max_epochs)):
    tuned, epochs, best_epoch = fit(problem, init, tune_fit, tune_val, lr, train_conv,
                                    max_epochs, shuffle)
    out["results"][name] = summarize(scores(problem, tuned, test))
    out["results"][name]["epochs"] = int(epochs)
    out["results"][name]["best_epochs"] = best_epoch.tolist()
  # Share of the target test part's entries never seen in the source's training part.
  ids, mask = np.asarray(problem.ids), np.asarray(problem.mask)
  seen = np.zeros(max(int(ids.max()) + 1, 1), bool)
  seen[ids[source_fit[0]][mask[source_fit[0]]]] = True
  test_entries = ids[test[0]][mask[test[0]]]
  out["target_entries_unseen_at_source"] = float(np.mean(~seen[test_entries])) \
      if len(test_entries) else 0.0
  return out


def _cpu_seconds() -> float:
  """User + system CPU time of this process (every thread)."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def check_table(table, key: str, label: str, entry_concept: np.ndarray,
                entry_negated: np.ndarray, concept_ids=None) -> np.ndarray:
  """An embedder's rows for the lists' distinct entries as float32 [U, d]; ValueError naming
  the embedding, and the first bad entry, for another shape or a NaN / inf."""
  table = np.asarray(table)
  expected = len(entry_concept)
  if table.ndim != 2 or table.shape[0] != expected or table.shape[1] < 1:
    raise ValueError(f"transfer: embedding {key!r} ({label}) gave rows of shape "
                     f"{table.shape} for the lists' {expected} distinct entries; expected "
                     f"[{expected}, d] with d >= 1")
  if not (np.issubdtype(table.dtype, np.integer) or np.issubdtype(table.dtype, np.floating)):
    raise ValueError(f"transfer: embedding {key!r} ({label}) gave rows of dtype "
                     f"{table.dtype}; expected real numbers")
  table = table.astype(np.float32)
  bad = ~np.isfinite(table).all(axis=1)
  if bad.any():
    first = int(np.flatnonzero(bad)[0])
    concept = int(entry_concept[first])
    name = concept_ids[concept] if concept_ids is not None else f"row {concept}"
    raise ValueError(f"transfer: embedding {key!r} ({label}) has non-finite values (NaN or "
                     f"inf, also after the float32 cast) in {int(bad.sum())} of {expected} "
                     f"rows, first concept {name!s}"
                     f"{' (negated)' if entry_negated[first] else ''}; a classifier on them "
                     "would score noise")
  return table


class _Skip(Exception):
  """The protocol cannot run on these pairs; the message says why (the result's "skipped")."""


@dataclasses.dataclass(frozen=True)
class _Pairs:
  """The pairs the protocol compares."""
  column: str                   # the pairs' column the sites come from
  chosen: List[str]             # the two compared sites
  raw: np.ndarray               # every pair's label ("" where none)
  rare_classes: Dict            # label classes left out, {class: {site: pairs}}
  pair_idx: np.ndarray          # the pairs used
  names: np.ndarray             # their label classes
  y: np.ndarray                 # their labels, indices into `names`
  rows: Dict[str, np.ndarray]   # site -> its rows of `pair_idx`


def _chosen_sites(counts: Dict[str, int], column: str, cfg: TransferConfig) -> List[str]:
  """The two compared sites: `cfg.sites`, else the two with the most labelled pairs."""
  if cfg.sites:
    missing = [s for s in cfg.sites if s not in counts]
    if missing:
      raise _Skip(f"site(s) {missing} not among the labelled pairs' sites "
                  f"{sorted(counts)} (column {column!r}).")
    chosen = list(cfg.sites)
  else:
    chosen = [s for s, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:2]]
  if len(chosen) < 2:
    raise _Skip(f"fewer than two sites among the labelled pairs ({sorted(counts)}, "
                f"column {column!r}).")
  return chosen


def _select_pairs(dataset, sites: np.ndarray, column: str, cfg: TransferConfig,
                  notes: List[str]) -> _Pairs:
  """The labelled pairs of the two compared sites, less the classes with too few pairs
  (each pair left out counted in `notes`); `_Skip` when too few remain."""
  raw = np.array(["" if v is None else str(v) for v in dataset.labels], object)
  counts = {s: int(n) for s, n in zip(*np.unique(sites[(sites != "") & (raw != "")],
                                                 return_counts=True))}
  chosen = _chosen_sites(counts, column, cfg)
  used = np.isin(sites, chosen) & (raw != "")
  too_few = too_few_examples(sites, raw, used, chosen, cfg)
  if isinstance(too_few, str):
    raise _Skip(too_few)
  left_out = int(dataset.num_pairs - used.sum())
  if left_out:
    others = {s: n for s, n in counts.items() if s not in chosen}
    notes.append(f"{left_out} pairs left out: {int((sites == '').sum())} without a site "
                 f"(empty {column!r}, or not matching site_pattern), "
                 f"{int(((raw == '') & (sites != '')).sum())} without a label, the rest at "
                 f"other sites {others}.")
  rare_classes = too_few
  if rare_classes:
    rare = used & np.isin(raw, list(rare_classes))
    used &= ~rare
    notes.append(f"{int(rare.sum())} pairs of label classes with fewer than "
                 f"{cfg.min_class_pairs} pairs at one of the sites left out "
                 f"(config.eval.transfer.min_class_pairs; pairs by site: {rare_classes}).")
  pair_idx = np.flatnonzero(used)
  names, y = np.unique(raw[pair_idx].astype(str), return_inverse=True)
  site_of = sites[pair_idx]
  rows = {s: np.flatnonzero(site_of == s) for s in chosen}
  return _Pairs(column, chosen, raw, rare_classes, pair_idx, names, y, rows)


def _result_header(pairs: _Pairs, grouped: bool, cfg: TransferConfig,
                   notes: List[str]) -> Dict:
  """The result before any embedding runs: sites, classes, settings."""
  chosen, names, y, rows = pairs.chosen, pairs.names, pairs.y, pairs.rows
  return {"site_column": pairs.column, "site_pattern": cfg.site_pattern, "sites": chosen,
          "site_counts": {s: int(len(rows[s])) for s in chosen},
          "num_pairs": int(len(pairs.pair_idx)), "classes": names.tolist(),
          "class_counts": {s: {str(n): int(c) for n, c in zip(
              names, np.bincount(y[rows[s]], minlength=len(names)))} for s in chosen},
          "label_is_concept_group": bool(grouped), "settings": dataclasses.asdict(cfg),
          "left_out_classes": pairs.rare_classes,
          "embeddings": {}, "notes": notes, "variants": {}}


@dataclasses.dataclass(frozen=True)
class _Shapes:
  """One shape for every variant and embedding, so that the second variant reuses every
  compiled function of the first; padded slots are masked and padded rows never read."""
  width: int        # list slots
  rows: int         # embedding table rows (and one-hot vocabulary)
  capacity: int     # entries per packed batch

  def padded(self, a: np.ndarray) -> np.ndarray:
    return np.pad(a, ((0, 0), (0, self.width - a.shape[1])))


def _shapes(packed: Mapping[str, Tuple[Lists, int]], cfg: TransferConfig) -> _Shapes:
  width = max(lists.ids.shape[1] for lists, _ in packed.values())
  rows_padded = max(int(np.ceil(max(1, len(lists.entry_concept)) / VOCAB_ROUND))
                    * VOCAB_ROUND for lists, _ in packed.values())
  capacity = max(packing_capacity(lists.mask.sum(axis=1), cfg.batch_size, width)
                 for lists, _ in packed.values())
  return _Shapes(width, rows_padded, capacity)


def _variant_info(lists: Lists, removed: int, drop: Optional[np.ndarray],
                  offsets: np.ndarray, flat: np.ndarray, num_pairs: int) -> Dict:
  """A variant's result before any embedding runs: what its lists hold."""
  info = {"entries_removed": removed, "distinct_entries": int(len(lists.entry_concept)),
          "max_list_length": int(lists.ids.shape[1]),
          "empty_lists": int((~lists.mask.any(axis=1)).sum()), "directions": {}}
  if drop is not None:
    info["branch_root_concepts"] = int(np.asarray(drop).sum())
    owner = np.repeat(np.arange(num_pairs), np.diff(offsets))
    info["pairs_with_a_root"] = int(len(np.unique(owner[np.asarray(drop)[flat]])))
  return info


def _embedding_table(key: str, lists: Lists, embedders: Mapping[str, Tuple[str, Embedder]],
                     dataset, table_rows: int) -> Tuple[str, np.ndarray, int]:
  """(label, table [table_rows, d] of the lists' distinct entries, one-hot vocabulary) of
  one embedding; one-hot ids have a [1, 1] table and a vocabulary instead."""
  if key == "onehot":
    return ONEHOT_LABEL, np.zeros((1, 1), np.float32), table_rows
  label, embed = embedders[key]
  table = check_table(embed(lists.entry_concept, lists.entry_negated), key, label,
                      lists.entry_concept, lists.entry_negated,
                      getattr(dataset, "concept_ids", None))
  return label, np.pad(table, ((0, table_rows - len(table)), (0, 0))), 0


def _one_direction(lists: Lists, table: np.ndarray, vocab: int, pairs: _Pairs,
                   shapes: _Shapes, cfg: TransferConfig, a: str, b: str, what: str) -> Dict:
  """`transfer_direction` a -> b of one embedding (`what` names the run in the log)."""
  t0 = time.time()
  problem = Problem(jnp.asarray(shapes.padded(lists.ids)), jnp.asarray(shapes.padded(lists.mask)),
                    jnp.asarray(pairs.y), jnp.asarray(table), vocab, len(pairs.names), cfg,
                    shapes.capacity)
  result = transfer_direction(
      problem, pairs.rows[a], pairs.rows[b],
      lambda code, s: np.random.default_rng([cfg.seed, code, s, pairs.chosen.index(a)]))
  result["seconds"] = round(time.time() - t0, 2)
  logging.info("transfer %s: direct F1 %.3f, linear %.3f, full %.3f, target only %.3f "
               "(%.1fs)", what, *[result["results"][s]["f1"] for s in STRATEGIES],
               time.time() - t0)
  return result


def _finish(out: Dict, started: float, cpu_started: float, plot_path: Optional[str]) -> Dict:
  """The protocol's time and load, and the plot."""
  out["seconds"] = round(time.time() - started, 2)
  out["cpu_seconds"] = round(_cpu_seconds() - cpu_started, 2)
  out["load_average"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") \
      else None
  if plot_path:
    plot_transfer(out, plot_path)
    out["plot"] = os.path.basename(plot_path)
  return out


def run_transfer(dataset, embedders: Mapping[str, Tuple[str, Embedder]],
                 cfg: TransferConfig, plot_path: Optional[str] = None) -> Dict:
  """The transfer protocol on `dataset`; see the package docstring.

  Args:
    dataset: a `line_jax.data.dataset.Dataset` (its `root` holds pairs.parquet, read for
      the site column).
    embedders: key ("teacher1", "teacher2", "line") -> (label, embed(concept indices,
      negated flags) -> rows). One-hot ids need none.
    cfg: the settings.
    plot_path: where to write the bar plot (None: no plot).

  Returns:
    The metrics dictionary (or {"skipped": why}: also when a site or the label classes have
    too few pairs, `min_site_pairs` / `min_class_pairs`).

  Raises:
    ValueError: an embedder gave rows of another shape, or NaN / inf values.
  """
  if not cfg.enabled:
    return {"skipped": "disabled (config.eval.transfer.enabled=False)."}
  if dataset.labels is None:
    return {"skipped": "the dataset has no `label` column."}
  sites, column = resolve_sites(dataset.root, dataset.num_pairs, cfg)
  if sites is None:
    return {"skipped": column + "."}
  started, cpu_started = time.time(), _cpu_seconds()
  notes: List[str] = []
  try:
    pairs = _select_pairs(dataset, sites, column, cfg, notes)
  except _Skip as e:
    return {"skipped": str(e)}
  offsets, flat, negated = list_segments(dataset, pairs.pair_idx)
  variants = {"all_concepts": None}
  grouped = label_is_group(pairs.raw[pairs.pair_idx], dataset.groups)
  if cfg.without_branch_roots == "on" or (cfg.without_branch_roots == "auto" and grouped):
    variants["without_branch_roots"] = branch_root_concepts(dataset)
  out = _result_header(pairs, grouped, cfg, notes)
  directions = [(pairs.chosen[0], pairs.chosen[1]), (pairs.chosen[1], pairs.chosen[0])]
  keys = [k for k in cfg.embeddings if k == "onehot" or k in embedders]
  absent = [k for k in cfg.embeddings if k not in keys]
  if absent:
    notes.append(f"embeddings {absent} not available here; left out.")
  bar = tqdm(total=len(variants) * len(keys) * len(directions), desc="transfer", unit="run")
  packed = {v: pack_lists(offsets, flat, negated, drop) for v, drop in variants.items()}
  shapes = _shapes(packed, cfg)
  for variant, drop in variants.items():
    lists, removed = packed[variant]
    info = _variant_info(lists, removed, drop, offsets, flat, len(pairs.pair_idx))
    tables: Dict[str, np.ndarray] = {}
    for key in keys:
      label, table, vocab = _embedding_table(key, lists, embedders, dataset, shapes.rows)
      out["embeddings"][key] = label
      same_as = next((k for k, t in tables.items()
                      if t.shape == table.shape and np.array_equal(t, table)), None)
      tables[key] = table
      for a, b in directions:
        direction = f"{a} → {b}"
        entry = info["directions"].setdefault(direction, {})
        if same_as is not None and same_as in entry:
          entry[key] = dict(entry[same_as], identical_to=same_as)
        else:
          entry[key] = _one_direction(lists, table, vocab, pairs, shapes, cfg, a, b,
                                      f"{variant} {direction} {key}")
        bar.update(1)
      if same_as is not None:
        notes.append(f"{key}: the embedding table is identical to {same_as}'s (the same "
                     "encoder), so its results are copied, not recomputed.")
    out["variants"][variant] = info
  bar.close()
  return _finish(out, started, cpu_started, plot_path)
