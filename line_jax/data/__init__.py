"""Datasets: loading and validation, builders for the synthetic and HPO datasets."""

import logging
import os

from line_jax.data import heldout_terms
from line_jax.data import hpo
from line_jax.data import synthetic
from line_jax.data.dataset import (DataError, Dataset, check_max_concepts_per_pair,
                                   load_dataset, write_dataset)


def prepare_dataset(config) -> Dataset:
  """Builds `config.data.dir` with `config.data.builder` when it is missing, then loads it."""
  check_max_concepts_per_pair(config.data.get("max_concepts_per_pair", 1))  # before any work
  heldout_terms.check_fraction(config.data.get("heldout_terms", 0.0))
  root = os.path.abspath(config.data.dir)
  if not os.path.exists(os.path.join(root, "pairs.parquet")):
    builder = config.data.builder
    if builder == "synthetic":
      synthetic.build_synthetic_dataset(root, config.data.synthetic)
    elif builder == "hpo":
      hpo.build_hpo_dataset(root, config.data.hpo)
    else:
      raise DataError(f"{root}: no dataset here (pairs.parquet missing) and "
                      f"config.data.builder is {builder!r}; point --config.data.dir at a "
                      "dataset folder (docs/data.md) or set data.builder")
    logging.info("built the %s dataset in %s", builder, root)
  relations = config.graph.relations
  dataset = load_dataset(root, relations=list(relations) if relations is not None else None,
                         negation_template=config.data.negation_template)
  return heldout_terms.with_heldout(dataset, config)
