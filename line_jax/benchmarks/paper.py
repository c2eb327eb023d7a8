"""The paper's whole schedule on synthetic data of the paper's shape, through the real loop.

    python -m line_jax.bench --what=paper --scale=0.01

What the paper trained (section 3.1 and appendix A.5): 7.2M text-concept pairs from MIMIC
notes (NILE lists), the UMLS 2022AB graph (4M CUIs, 25M relationships, the seven relation
families of `configs/bge_coder.py`), BGE text rows and CODER concept rows of 768 dimensions,
Adam at 1e-3, batch 128, 3 epochs, residual recovery over every pair against the whole
dictionary, 2 more epochs: "less than 10 hours" on one RTX 8000.

What is assumed where the paper is silent (`PAPER_SHAPE`): 8 concepts per pair on average
(Poisson, at least 1; the paper's Figure 1 note segment lists 7), 10% of mentions negated,
the dictionary = the 4M CUIs (one entry per CUI), 25M edges spread uniformly over the 7
relation types and the concepts. The teacher rows are random (float16, drawn from a pool of
rows so that making 7.2M x 768 of them takes seconds, not minutes); the timing of a step
does not depend on their values. Teacher export is not part of the schedule.

`scale` multiplies the pairs, the concepts and the edges alike. Stage times grow with the
pairs (linearly); the recovery search with pairs x concepts (quadratically in `scale`); the
projection to scale 1 follows that rule (`projection_to_full`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time

import jax
import numpy as np

from line_jax.benchmarks import train_step as bench_train
from line_jax import config as config_lib
from line_jax.cache import store as emb_lib
from line_jax.training import loop as loop_lib
from line_jax.training import trainer as trainer_lib


@dataclasses.dataclass(frozen=True)
class PaperShape:
  pairs: int = 7_200_000
  concepts: int = 4_000_000
  edges: int = 25_000_000
  relation_types: int = 7
  concepts_per_pair: float = 8.0
  dim: int = 768
  stage1_epochs: int = 3
  stage2_epochs: int = 2


PAPER_SHAPE = PaperShape()


def pooled_rows(rng: np.random.Generator, rows: int, dim: int, pool: int = 65536,
                block: int = 1 << 20) -> np.ndarray:
  """[rows, dim] float16 rows drawn (with replacement) from `pool` random rows."""
  source = rng.standard_normal((min(pool, max(rows, 1)), dim), np.float32).astype(np.float16)
  out = np.empty((rows, dim), np.float16)
  for s in range(0, rows, block):
    out[s:s + block] = source[rng.integers(0, len(source), min(block, rows - s))]
  return out


def paper_config(batch_size: int, shape: PaperShape = PAPER_SHAPE):
  """The paper's settings (configs/bge_coder.py: Adam 1e-3, 3 + 2 epochs, recovery at 0.9)
  at `batch_size`; bf16 scores for the recovery search on an accelerator (float32
  re-scoring of its top candidates)."""
  c = config_lib.base_config()
  c.train.batch_size = int(batch_size)
  c.train.stage1_epochs, c.train.stage2_epochs = shape.stage1_epochs, shape.stage2_epochs
  c.train.checkpoint_every = 0          # at the end of every epoch and stage only
  c.train.evaluate = False
  c.recovery.threshold = 0.9
  c.search.use_bf16 = jax.default_backend() != "cpu"
  return c


def bench_paper(scale: float = 0.001, batch_size: int = 128, workdir: str = "",
                shape: PaperShape = PAPER_SHAPE, seed: int = 0) -> dict:
  """Runs stage 1, recovery and stage 2 (`trainer.run`) on the paper's shape times `scale`;
  returns the wall time of each phase, pairs/s of the stages and the projection to
  scale 1."""
  if not 0 < scale <= 1:
    raise ValueError(f"scale={scale} must be in (0, 1]")
  pairs = max(batch_size, int(round(shape.pairs * scale)))
  concepts = max(64, int(round(shape.concepts * scale)))
  edges = max(64, int(round(shape.edges * scale)))
  t0 = time.perf_counter()
  ds = bench_train.synthetic_dataset(pairs, concepts, edges, shape.relation_types,
                                     shape.concepts_per_pair, seed=seed)
  rng = np.random.default_rng(seed)
  text = pooled_rows(rng, pairs, shape.dim)
  concept_rows = pooled_rows(rng, concepts, shape.dim)
  negated_rows = pooled_rows(rng, concepts, shape.dim)
  teachers = (emb_lib.TeacherEmbeddings(text, concept_rows[:1], concept_rows[:1], {},
                                        "<synthetic>"),
              emb_lib.TeacherEmbeddings(text[:1], concept_rows, negated_rows, {},
                                        "<synthetic>"))
  data_s = time.perf_counter() - t0
  config = paper_config(batch_size, shape)
  # About 20 logged windows per epoch: the steady rate is read from them.
  config.train.log_every = max(1, -(-pairs // batch_size) // 20)
  workdir = workdir or tempfile.mkdtemp(prefix="line_paper_")
  t0 = time.perf_counter()
  trainer = trainer_lib.Trainer(config, workdir, dataset=ds, teachers=teachers)
  setup_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  summary = loop_lib.run(trainer)
  total_s = time.perf_counter() - t0
  seconds = summary["seconds"]
  trained = {1: shape.stage1_epochs * pairs, 2: shape.stage2_epochs * pairs}
  result = {
      "scale": scale, "pairs": pairs, "concepts": concepts, "edges": edges,
      "dim": shape.dim, "batch_size": batch_size, "devices": trainer.mesh.size,
      "backend": jax.default_backend(), "batch_builder": trainer.builder_kind,
      "text_streamed": trainer.streamed_text,
      "data_s": data_s, "setup_s": setup_s,
      "stage1_s": seconds.get("stage1", 0.0), "recovery_s": seconds.get("recovery", 0.0),
      "stage2_s": seconds.get("stage2", 0.0), "schedule_s": total_s,
      "stage1_pairs_per_s": trained[1] / max(seconds.get("stage1", 0.0), 1e-9),
      "stage2_pairs_per_s": trained[2] / max(seconds.get("stage2", 0.0), 1e-9),
      "recovered_pairs": int((trainer.lists.added >= 0).sum()),
      "compilations": summary["compilations"],
  }
  recovery = summary.get("recovery", {})
  result.update(
      stage1_steady_pairs_per_s=steady_pairs_per_s(workdir, 1),
      stage2_steady_pairs_per_s=steady_pairs_per_s(workdir, 2),
      recovery_dictionary_s=recovery.get("dictionary_s", 0.0),
      recovery_search_s=recovery.get("search_s", 0.0))
  # The compilation: what the stages took beyond their pairs at the steady rates.
  result["compile_s"] = max(0.0, result["stage1_s"] + result["stage2_s"] - sum(
      trained[k] / result[f"stage{k}_steady_pairs_per_s"] for k in (1, 2)))
  result.update(projection_to_full(result, scale, shape))
  logging.info("paper schedule at scale %g: %s", scale, result)
  return result


def steady_pairs_per_s(workdir: str, stage: int) -> float:
  """The stage's training rate once compiled: the median of its logged windows' pairs/s,
  leaving out the first window (which holds the compilation)."""
  with open(os.path.join(workdir, "train_log.jsonl")) as f:
    rates = [r["pairs_per_s"] for r in map(json.loads, f) if r["stage"] == stage]
  rates = rates[1:] if len(rates) > 1 else rates
  return float(np.median(rates)) if rates else float("nan")


def projection_to_full(result: dict, scale: float, shape: PaperShape = PAPER_SHAPE) -> dict:
  """The schedule at the paper's size from a scaled run: each stage's pairs at its steady
  rate (`steady_pairs_per_s`) plus its compilation, G of the dictionary x 1/scale, and the
  search's FLOPs (2 x pairs x dictionary x d) at the rate this run's search reached (at a
  small scale a device's search runs below its peak: an upper bound there)."""
  stages = (shape.stage1_epochs * shape.pairs / result["stage1_steady_pairs_per_s"]
            + shape.stage2_epochs * shape.pairs / result["stage2_steady_pairs_per_s"]
            + result["compile_s"])
  flops = 2.0 * result["pairs"] * result["concepts"] * result["dim"]
  rate = flops / max(result["recovery_search_s"], 1e-9)
  search = 2.0 * shape.pairs * shape.concepts * shape.dim / rate
  recovery = result["recovery_dictionary_s"] / scale + search
  return {"projected_full_stages_s": stages, "projected_full_recovery_s": recovery,
          "projected_full_schedule_s": stages + recovery,
          "search_tflop_per_s": rate / 1e12}
