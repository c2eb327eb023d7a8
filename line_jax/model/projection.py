"""F and G over whole sets of rows, chunked: the projections inference is made of.

`LineModel` (line_jax.api.line_model), residual recovery (line_jax.training.recovery) and the evaluation all
project through these two functions, so a text or a concept gets one vector wherever it is
projected. G reads deterministic neighbours (the first `fanout` of each type).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import ml_collections
import numpy as np

from line_jax.cache import store as emb_lib
from line_jax.model import graph as graph_lib
from line_jax.model import network as model_lib


@dataclasses.dataclass(frozen=True)
class ProjectionSettings:
  """How G and F are applied outside training (read from the run's config).

  Attributes:
    fanout: neighbours per relation type (config.graph.fanout).
    chunk: rows per projection call (config.recovery.dictionary_chunk).
    slope: the attention's leaky-ReLU slope (config.model.leaky_relu_slope).
    normalize: L2-normalise the outputs (config.loss.normalize).
    edge_block: edge slots per block of the graph (config.graph.edge_block).
    cpu_kernel: G's edge attention on the fused CPU kernel (`kernels.use_kernel` decides).
    kernel_threads: that kernel's threads; 0 = derived (config.model.cpu_kernel_threads).
  """
  fanout: int
  chunk: int
  slope: float
  normalize: bool
  edge_block: int = 4
  cpu_kernel: bool = False
  kernel_threads: int = 0

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict,
                  cpu_kernel: bool = False) -> "ProjectionSettings":
    return cls(fanout=int(config.graph.fanout), chunk=int(config.recovery.dictionary_chunk),
               slope=float(config.model.leaky_relu_slope),
               normalize=bool(config.loss.normalize), edge_block=int(config.graph.edge_block),
               cpu_kernel=bool(cpu_kernel),
               kernel_threads=int(config.model.cpu_kernel_threads))


@functools.partial(jax.jit, static_argnames=("num_receivers", "num_types", "slope",
                                             "normalize", "cpu_kernel", "kernel_threads"))
def _project_chunk(params, graph, concept_table, negated_table, *, num_receivers, num_types,
                   slope, normalize, cpu_kernel=False, kernel_threads=0):
  out = model_lib.graph_attention(params, graph, concept_table, negated_table, num_receivers,
                                  num_types, slope, cpu_kernel, kernel_threads)
  return model_lib.l2_normalize(out) if normalize else out


@functools.partial(jax.jit, static_argnames=("normalize",))
def _project_text_chunk(params, text, *, normalize):
  out = model_lib.project_text(params, text)
  return model_lib.l2_normalize(out) if normalize else out


def project_texts(params, text: np.ndarray, chunk: int, normalize: bool,
                  rows: Optional[np.ndarray] = None) -> np.ndarray:
  """F over the rows `rows` (default: all) of a (memmapped) text-embedding array, chunked
  and padded to one shape; a memmap is read chunk by chunk, never whole."""
  n = text.shape[0] if rows is None else len(rows)
  out = []
  for s in range(0, n, chunk):
    block = (np.asarray(text[s:s + chunk]) if rows is None
             else emb_lib.gather_rows(text, rows[s:s + chunk]))
    pad = chunk - len(block)
    if pad:
      block = np.concatenate([block, np.zeros((pad, block.shape[1]), block.dtype)])
    out.append(np.asarray(_project_text_chunk(params, block, normalize=normalize))[:chunk - pad])
  return np.concatenate(out) if out else np.zeros((0, params["text_proj"]["w"].shape[1]),
                                                  np.float32)


def project_concepts(params, table: graph_lib.NeighbourTable, concept_table, negated_table,
                     concepts: np.ndarray, negated: np.ndarray,
                     settings: ProjectionSettings) -> np.ndarray:
  """G of the given (concept, negated) entries with deterministic neighbours, chunked."""
  concepts = np.asarray(concepts, np.int64)
  negated = np.asarray(negated, bool)
  n = len(concepts)
  chunk = max(1, min(settings.chunk, n))
  edge_block = settings.edge_block
  # Written in place: a list of chunks joined at the end held the dictionary twice.
  out = np.empty((n, params["concept_proj"]["w"].shape[1]), np.float32)
  for s in range(0, n, chunk):
    c = concepts[s:s + chunk]
    g = negated[s:s + chunk]
    real = len(c)
    if real < chunk:
      c = np.concatenate([c, np.zeros(chunk - real, np.int64)])
      g = np.concatenate([g, np.zeros(chunk - real, bool)])
    ids, mask = graph_lib.sample_neighbours(table, c, settings.fanout, deterministic=True)
    # Edge capacity bucketed to a power of two (times the block): few shapes, few
    # compilations.
    blocks = -(-graph_lib.num_edges(mask, edge_block) // edge_block)
    capacity = edge_block << max(0, int(blocks - 1).bit_length())
    graph = graph_lib.build_graph(c.astype(np.int32), g, ids, mask, capacity, edge_block)
    res = _project_chunk(params, graph, concept_table, negated_table, num_receivers=chunk,
                         num_types=table.num_types, slope=settings.slope,
                         normalize=settings.normalize, cpu_kernel=settings.cpu_kernel,
                         kernel_threads=settings.kernel_threads)
    out[s:s + real] = np.asarray(res)[:real]
  return out


def project_negated(project, concept_idx: np.ndarray, chunk: int = 0,
                    cache: Optional[dict] = None) -> np.ndarray:
  """G of the negated forms of `concept_idx` [M] -> [M, d], each distinct concept projected
  once through `project(concepts, negated)`, `chunk` concepts a call (0: one call);
  `cache` (concept -> row) keeps rows between calls."""
  concept_idx = np.asarray(concept_idx, np.int64)
  cache = {} if cache is None else cache
  todo = np.asarray([j for j in np.unique(concept_idx) if int(j) not in cache], np.int64)
  chunk = chunk or max(1, len(todo))
  for s in range(0, len(todo), chunk):
    part = todo[s:s + chunk]
    for j, row in zip(part, np.asarray(project(part, np.ones(len(part), bool)), np.float32)):
      cache[int(j)] = row
  return np.stack([cache[int(j)] for j in concept_idx])
