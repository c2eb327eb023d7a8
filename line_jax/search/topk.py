"""Exact maximum-inner-product (cosine) search of query rows against a dictionary.

Residual recovery (training stage 2) needs, for every training pair, the
dictionary concepts whose projected embedding has the highest cosine with the pair's
residual. At paper scale that is 7.2M queries against 4M concepts at d = 768, so the score
matrix never exists whole:

- the dictionary is sharded over the given devices (a one-axis `Mesh`; each device holds
  a contiguous slice of the keys, padded with zero rows to a whole number of key chunks);
- on each device a `lax.scan` walks the local keys one key chunk at a time, computes the
  `[query_chunk, key_chunk]` score block with one matmul, takes its top k and merges it
  into a running top k;
- the per-device top k lists are merged with one more top k;
- the host loops over query chunks with one jitted function (static shapes: the last
  query chunk is padded, padded keys are masked with -inf, so one compilation serves every
  chunk).

The score block of one device, `query_chunk * key_chunk` scores, is what the memory budget
bounds (plus the query chunk itself and, with bf16, the gathered candidate rows). The keys
themselves are held once on the devices, as float32 (normalised when asked): `Dictionary`
writes them into a donated per-device buffer one key chunk at a time, so placing them costs
no second full copy, and a dictionary placed once serves any number of query blocks
(residual recovery searches the training pairs block by block).

The exact path scores in float32 at `Precision.HIGHEST` (no TF32 on GPUs). The bf16 path
scores with bfloat16 operands (accumulated in float32: on CPUs a bf16-output dot is several
times slower, and the accumulation is more accurate), keeps `k * rescore_factor` candidates
per device, re-scores those in float32 and returns the best k of them: the same answer as
the exact path unless a true top-k key falls outside the bf16 candidates.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Sequence

from absl import logging
import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

from line_jax.util.shapes import round_up

_KEY_AXIS = "keys"
# Key chunk used when neither a chunk size nor a smaller dictionary asks for less.
DEFAULT_KEY_CHUNK = 16384
# Query rows per step when the budget allows more. The score block is written and read back
# once per step, and a smaller one stays closer to the cores: on the 2-core CPU, 32k x 200k
# x 384 ran at 154-157 GFLOP/s in chunks of 4,000 rows against 140-142 in the 1 GiB
# budget's 16,000 (`python -m line_jax.bench --what=search --queries=32000 --repeats=2
# --query_chunk=0|16000`, alternating runs); a 4096-row block still fills a GPU.
DEFAULT_QUERY_CHUNK = 4096
# Query chunks are multiples of this many rows.
_QUERY_ROW_MULTIPLE = 8
# Key chunks are multiples of this many rows (keeps the grouped top-k reshape exact).
_KEY_ROW_MULTIPLE = 128
# Groups per key chunk in the two-level top-k of one score block.
_TOPK_GROUPS = 16
_NORM_EPS = 1e-12


def search_config_kwargs(search_config: Any) -> dict[str, Any]:
  """Keyword arguments of `search_topk` from the `config.search` ConfigDict.

  Args:
    search_config: `config.search` (fields memory_budget_mb, query_chunk, key_chunk,
      use_bf16, rescore_factor).

  Returns:
    A dict to pass as `search_topk(queries, keys, k, **kwargs)`.
  """
  return dict(
      memory_budget_mb=float(search_config.memory_budget_mb),
      query_chunk=int(search_config.query_chunk),
      key_chunk=int(search_config.key_chunk),
      use_bf16=bool(search_config.use_bf16),
      rescore_factor=int(search_config.rescore_factor),
  )


def _balanced_chunk(rows: int, largest_chunk: int, multiple: int) -> int:
  """Chunk size that covers `rows` in as few chunks as `largest_chunk` allows, padding least.

  E.g. 200,000 keys with chunks of at most 16,384: 13 chunks of 15,488 (0.7% padding)
  rather than 13 chunks of 16,384 (6.5%).
  """
  num_chunks = -(-rows // largest_chunk)
  return min(round_up(-(-rows // num_chunks), multiple), largest_chunk)


def derive_chunk_sizes(
    num_queries: int,
    keys_per_device: int,
    dim: int,
    k: int,
    *,
    memory_budget_mb: float,
    query_chunk: int = 0,
    key_chunk: int = 0,
    use_bf16: bool = False,
    rescore_factor: int = 4,
) -> tuple[int, int]:
  """Query and key chunk sizes whose per-device working set fits the memory budget.

  The per-device working set of one step is the score block (`query_chunk * key_chunk`
  float32 scores), the float32 query chunk and, with bf16, the float32
  candidate rows gathered for re-scoring (`query_chunk * k * rescore_factor * dim`).
  Sizes given explicitly are kept (rounded up to the row multiples); the others are derived:
  at most `DEFAULT_KEY_CHUNK` keys and the most query rows the budget allows (at most
  `DEFAULT_QUERY_CHUNK`), then evened
  out so that the fewest chunks cover the device's keys and the queries with the least
  padding (padded rows cost a full matmul).

  Args:
    num_queries: Q.
    keys_per_device: dictionary rows one device holds (before padding).
    dim: d.
    k: results per query.
    memory_budget_mb: bound on the working set of one device, in MiB.
    query_chunk: query rows per step; 0 derives it.
    key_chunk: key rows per step; 0 derives it.
    use_bf16: bf16 operands and float32 re-scoring of the candidates.
    rescore_factor: candidates re-scored per result with bf16.

  Returns:
    (query_chunk, key_chunk), multiples of 8 and 128.

  Raises:
    ValueError: if the budget cannot hold even the smallest chunks.
  """
  budget_bytes = memory_budget_mb * 2**20
  score_bytes = 4
  rescore_row_bytes = k * rescore_factor * dim * 4 if use_bf16 else 0
  min_rows = _QUERY_ROW_MULTIPLE
  if key_chunk > 0:
    key_chunk = round_up(key_chunk, _KEY_ROW_MULTIPLE)
  else:
    key_chunk = DEFAULT_KEY_CHUNK
    if query_chunk <= 0:
      # Shrink the key chunk before the query chunk falls under its minimum.
      affordable = (budget_bytes / min_rows - dim * 4 - rescore_row_bytes) / score_bytes
      affordable = int(affordable) // _KEY_ROW_MULTIPLE * _KEY_ROW_MULTIPLE
      key_chunk = max(min(key_chunk, affordable), _KEY_ROW_MULTIPLE)
    key_chunk = _balanced_chunk(max(keys_per_device, 1), key_chunk, _KEY_ROW_MULTIPLE)
  per_query_row = key_chunk * score_bytes + dim * 4 + rescore_row_bytes
  if query_chunk > 0:
    query_chunk = round_up(query_chunk, _QUERY_ROW_MULTIPLE)
  else:
    query_chunk = min(int(budget_bytes // per_query_row), DEFAULT_QUERY_CHUNK)
    query_chunk = query_chunk // _QUERY_ROW_MULTIPLE * _QUERY_ROW_MULTIPLE
    if query_chunk >= min_rows:
      query_chunk = _balanced_chunk(max(num_queries, 1), query_chunk, _QUERY_ROW_MULTIPLE)
  needed_mb = query_chunk * per_query_row / 2**20
  if query_chunk < min_rows or needed_mb > memory_budget_mb:
    raise ValueError(
        f"search memory budget {memory_budget_mb} MiB is too small for query_chunk="
        f"{max(query_chunk, min_rows)} x key_chunk={key_chunk} (needs about "
        f"{max(query_chunk, min_rows) * per_query_row / 2**20:.1f} MiB per device); raise "
        "memory_budget_mb or lower query_chunk/key_chunk")
  return query_chunk, key_chunk


def _block_topk(scores: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """Exact top k of every row of a score block, best first.

  A full-width `lax.top_k` costs about as much per score as a quarter of the matmul on a
  CPU. When the block is wide, the columns are split into `_TOPK_GROUPS` contiguous slabs
  and the elementwise maximum over the slabs is taken (a vectorised pass): every true top-k
  score lies in one of the k columns with the largest maxima (a column outside them has k
  larger scores elsewhere), so a top k over the column maxima, a gather of those k columns
  and a top k over the `_TOPK_GROUPS * k` gathered scores is exact.

  Args:
    scores: [rows, width].
    k: results per row, k <= width.

  Returns:
    (values [rows, k], column indices [rows, k] int32).
  """
  rows, width = scores.shape
  groups = _TOPK_GROUPS
  if width % groups or width // groups < 4 * k:
    return lax.top_k(scores, k)
  slab_width = width // groups
  slabs = scores.reshape(rows, groups, slab_width)
  _, top_columns = lax.top_k(slabs.max(axis=1), k)                       # [rows, k]
  gathered = jnp.take_along_axis(
      slabs, jnp.broadcast_to(top_columns[:, None, :], (rows, groups, k)), axis=2)
  values, flat = lax.top_k(gathered.reshape(rows, groups * k), k)
  columns = jnp.take_along_axis(top_columns, flat % k, axis=1)
  return values, (flat // k) * slab_width + columns


def _merge_topk(values_a: jax.Array, index_a: jax.Array, values_b: jax.Array,
                index_b: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """Best k of two candidate lists per row (values, global indices)."""
  values = jnp.concatenate([values_a, values_b], axis=1)
  index = jnp.concatenate([index_a, index_b], axis=1)
  values, position = lax.top_k(values, k)
  return values, jnp.take_along_axis(index, position, axis=1)


def _normalize_rows(rows: jax.Array) -> jax.Array:
  norms = jnp.sqrt(jnp.sum(rows * rows, axis=-1, keepdims=True))
  return rows / jnp.maximum(norms, _NORM_EPS)


def _local_search(queries: jax.Array, local_keys: jax.Array, *, k: int, num_keys: int,
                  key_chunk: int, use_bf16: bool, rescore_factor: int
                  ) -> tuple[jax.Array, jax.Array]:
  """Top k of replicated queries against this device's slice of the keys.

  Args:
    queries: [query_chunk, d] float32, already normalised if asked.
    local_keys: [keys_per_device, d] float32, keys_per_device a multiple of key_chunk.
    k: results per query.
    num_keys: true dictionary size N; rows at or after it are padding.
    key_chunk: key rows per scan step.
    use_bf16: score in bf16 and re-score k * rescore_factor candidates in float32.
    rescore_factor: see use_bf16.

  Returns:
    (scores [query_chunk, k] float32, global key indices [query_chunk, k] int32).
  """
  keys_per_device, dim = local_keys.shape
  num_chunks = keys_per_device // key_chunk
  first_key = lax.axis_index(_KEY_AXIS) * keys_per_device
  num_rows = queries.shape[0]
  # Candidates kept per device: k, or with bf16 up to k * rescore_factor (fewer where the
  # device holds fewer keys, never fewer than k: missing ones stay at -inf).
  keep = max(k, min(k * rescore_factor, keys_per_device)) if use_bf16 else k
  chunk_keep = min(keep, key_chunk)
  operand_dtype = jnp.bfloat16 if use_bf16 else jnp.float32
  precision = lax.Precision.DEFAULT if use_bf16 else lax.Precision.HIGHEST
  scoring_queries = queries.astype(operand_dtype)

  def scan_step(carry, chunk):
    best_values, best_index = carry
    chunk_keys, chunk_number = chunk
    scores = lax.dot_general(
        scoring_queries, chunk_keys.astype(operand_dtype), (((1,), (1,)), ((), ())),
        precision=precision, preferred_element_type=jnp.float32)
    local_index = chunk_number * key_chunk + jnp.arange(key_chunk, dtype=jnp.int32)
    is_key = first_key + local_index < num_keys
    scores = jnp.where(is_key[None, :], scores, -jnp.inf)
    values, columns = _block_topk(scores, chunk_keep)
    return _merge_topk(best_values, best_index, values,
                       chunk_number * key_chunk + columns, keep), None

  initial = (jnp.full((num_rows, keep), -jnp.inf, jnp.float32),
             jnp.zeros((num_rows, keep), jnp.int32))
  chunks = (local_keys.reshape(num_chunks, key_chunk, dim),
            jnp.arange(num_chunks, dtype=jnp.int32))
  (values, local_index), _ = lax.scan(scan_step, initial, chunks)
  if use_bf16:
    candidates = jnp.take(local_keys, local_index, axis=0)          # [rows, keep, d]
    exact = jnp.einsum("qd,qcd->qc", queries, candidates,
                       precision=lax.Precision.HIGHEST)
    exact = jnp.where(first_key + local_index < num_keys, exact, -jnp.inf)
    exact = jnp.where(jnp.isneginf(values), -jnp.inf, exact)
    values, position = lax.top_k(exact, k)
    local_index = jnp.take_along_axis(local_index, position, axis=1)
  return values.astype(jnp.float32), first_key + local_index


@functools.lru_cache(maxsize=32)
def _compiled_search(mesh: Mesh, *, k: int, num_keys: int, key_chunk: int,
                     normalize: bool, use_bf16: bool, rescore_factor: int):
  """One jitted step: a query chunk against the sharded dictionary, merged over devices."""
  local = functools.partial(_local_search, k=k, num_keys=num_keys, key_chunk=key_chunk,
                            use_bf16=use_bf16, rescore_factor=rescore_factor)
  per_device = jax.shard_map(
      local, mesh=mesh,
      in_specs=(PartitionSpec(), PartitionSpec(_KEY_AXIS, None)),
      out_specs=(PartitionSpec(None, _KEY_AXIS), PartitionSpec(None, _KEY_AXIS)),
      check_vma=False)

  def search_chunk(queries: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    queries = queries.astype(jnp.float32)
    if normalize:
      queries = _normalize_rows(queries)
    values, index = per_device(queries, keys)       # [rows, num_devices * k]
    values, position = lax.top_k(values, k)
    return values, jnp.take_along_axis(index, position, axis=1)

  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.jit(search_chunk, out_shardings=(replicated, replicated))


@functools.partial(jax.jit, static_argnames=("normalize",), donate_argnums=0)
def _write_piece(buffer: jax.Array, piece: jax.Array, start: jax.Array, *, normalize: bool
                 ) -> jax.Array:
  """`buffer` with rows start.. replaced by the (normalised) piece, in place (donated)."""
  piece = piece.astype(jnp.float32)
  if normalize:
    piece = _normalize_rows(piece)
  return lax.dynamic_update_slice(buffer, piece, (start, jnp.zeros_like(start)))


def _check_2d(name: str, array: Any) -> None:
  if getattr(array, "ndim", None) != 2:
    raise ValueError(f"search_topk: {name} must be a 2-D [rows, dim] array, got shape "
                     f"{getattr(array, 'shape', type(array))}")


def _check_queries(queries: Any, dim: int) -> None:
  """Queries must be [Q, dim], dim the keys' dimension."""
  _check_2d("queries", queries)
  if queries.shape[1] != dim:
    raise ValueError(f"search_topk: dimension mismatch: queries have dim {queries.shape[1]},"
                     f" keys have dim {dim}")


class Dictionary:
  """Dictionary rows placed once on the devices, searched by any number of query blocks.

  The rows are sharded over `devices` (contiguous slices padded with zero rows to a whole
  number of key chunks), held as float32 and L2-normalised when `normalize`. Each device's
  slice is written one key chunk at a time into a donated buffer, so the devices hold one
  copy and the host needs no more than the caller's array and one chunk.

  Args:
    keys: [N, d] (numpy, memmap or jax; any float dtype).
    k: results per query, 1 <= k <= N.
    normalize: L2-normalise queries and keys, so scores are cosines; False: raw inner
      products.
    memory_budget_mb: bound on one device's working set (mainly the score block), MiB.
    query_chunk: query rows per step; 0 derives it from the budget.
    key_chunk: key rows per scan step; 0 derives it from the budget.
    use_bf16: bf16 scores, then float32 re-scoring of the best `k * rescore_factor`
      candidates of each device.
    rescore_factor: see use_bf16.
    devices: devices to shard the dictionary over; None: all of this process's devices
      (`jax.local_devices()`: a search is one process's).

  Raises:
    ValueError: on keys that are not 2-D or empty, k outside [1, N], or a memory budget
      too small for any chunk.
  """

  def __init__(self, keys: np.ndarray | jax.Array, k: int, *, normalize: bool = True,
               memory_budget_mb: float = 1024, query_chunk: int = 0, key_chunk: int = 0,
               use_bf16: bool = False, rescore_factor: int = 4,
               devices: Sequence[jax.Device] | None = None):
    _check_2d("keys", keys)
    num_keys, dim = keys.shape
    if num_keys == 0:
      raise ValueError("search_topk: the dictionary (keys) is empty")
    if not 1 <= k <= num_keys:
      raise ValueError(f"search_topk: k={k} must be between 1 and the dictionary size "
                       f"N={num_keys}")
    if num_keys >= 2**31:
      raise ValueError(f"search_topk: dictionary of {num_keys} rows exceeds int32 indices")
    if rescore_factor < 1:
      raise ValueError(f"search_topk: rescore_factor={rescore_factor} must be >= 1")
    if memory_budget_mb <= 0:
      raise ValueError(f"search_topk: memory_budget_mb={memory_budget_mb} must be positive")
    if query_chunk < 0 or key_chunk < 0:
      raise ValueError(f"search_topk: query_chunk={query_chunk} and key_chunk={key_chunk} "
                       "must be >= 0 (0 derives them from the memory budget)")
    devices = list(jax.local_devices() if devices is None else devices)
    self.k, self.num_keys, self.dim, self.normalize = k, num_keys, dim, normalize
    self._options = dict(memory_budget_mb=memory_budget_mb, use_bf16=use_bf16,
                         rescore_factor=rescore_factor)
    self._query_chunk = query_chunk
    # The key chunk does not depend on the number of queries: derive it once, here.
    _, self.key_chunk = derive_chunk_sizes(
        1, math.ceil(num_keys / len(devices)), dim, k, query_chunk=query_chunk,
        key_chunk=key_chunk, **self._options)
    self.keys_per_device = round_up(math.ceil(num_keys / len(devices)), self.key_chunk)
    self.mesh = Mesh(np.array(devices), (_KEY_AXIS,))
    self.keys = self._place(keys)
    self._search_chunk = _compiled_search(
        self.mesh, k=k, num_keys=num_keys, key_chunk=self.key_chunk, normalize=normalize,
        use_bf16=use_bf16, rescore_factor=rescore_factor)

  def _place(self, keys: np.ndarray | jax.Array) -> jax.Array:
    """Float32 (normalised) keys, zero-padded and sharded by rows, written chunk by chunk."""
    keys_per_device = self.keys_per_device
    shape = (keys_per_device * self.mesh.devices.size, self.dim)
    sharding = NamedSharding(self.mesh, PartitionSpec(_KEY_AXIS, None))
    chunk = self.key_chunk                      # divides keys_per_device
    local = []
    for device, index in sharding.addressable_devices_indices_map(shape).items():
      first = index[0].start or 0
      buffer = jnp.zeros((keys_per_device, self.dim), jnp.float32, device=device)
      for start in range(first, min(first + keys_per_device, self.num_keys), chunk):
        piece = keys[start:min(start + chunk, self.num_keys)]
        if not isinstance(piece, jax.Array):
          piece = np.asarray(piece, np.float32)
        if len(piece) < chunk:                  # the dictionary's last rows: zero padding
          piece = jnp.pad(jnp.asarray(piece, jnp.float32), ((0, chunk - len(piece)), (0, 0)))
        buffer = _write_piece(buffer, jax.device_put(piece, device),
                              np.int32(start - first), normalize=self.normalize)
      local.append(buffer)
    return jax.make_array_from_single_device_arrays(shape, sharding, local)

  def search(self, queries: np.ndarray | jax.Array, progress: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
    """(scores [Q, k] float32, indices [Q, k] int32) of the best keys per query row.

    Args:
      queries: [Q, d] (numpy, memmap or jax; any float dtype, computed in float32).
      progress: log progress over query chunks.

    Raises:
      ValueError: on queries that are not 2-D or whose dimension is not the keys'.
    """
    _check_queries(queries, self.dim)
    num_queries = queries.shape[0]
    if num_queries == 0:
      return np.zeros((0, self.k), np.float32), np.zeros((0, self.k), np.int32)
    query_chunk, _ = derive_chunk_sizes(
        num_queries, self.keys_per_device, self.dim, self.k,
        query_chunk=self._query_chunk, key_chunk=self.key_chunk, **self._options)
    query_sharding = NamedSharding(self.mesh, PartitionSpec())
    scores = np.empty((num_queries, self.k), np.float32)
    indices = np.empty((num_queries, self.k), np.int32)
    starts = range(0, num_queries, query_chunk)
    pending = None            # (start, stop, device results) of the chunk in flight
    started = time.perf_counter()
    for chunk_number, start in enumerate(starts):
      stop = min(start + query_chunk, num_queries)
      chunk = queries[start:stop]
      if isinstance(chunk, jax.Array):
        chunk = jnp.pad(chunk.astype(jnp.float32),
                        ((0, query_chunk - (stop - start)), (0, 0)))
      else:
        chunk = np.asarray(chunk, np.float32)
        if stop - start < query_chunk:
          chunk = np.pad(chunk, ((0, query_chunk - (stop - start)), (0, 0)))
      result = self._search_chunk(jax.device_put(chunk, query_sharding), self.keys)
      # Dispatch is asynchronous: fetch the previous chunk while this one runs.
      if pending is not None:
        _store(scores, indices, *pending)
      pending = (start, stop, result)
      if progress and (chunk_number + 1) % max(1, len(starts) // 10) == 0:
        logging.info("search_topk: %d/%d query chunks, %.1f s", chunk_number + 1,
                     len(starts), time.perf_counter() - started)
    _store(scores, indices, *pending)
    if progress:
      logging.info("search_topk: %d queries x %d keys in %.1f s", num_queries, self.num_keys,
                   time.perf_counter() - started)
    return scores, indices


def search_topk(
    queries: np.ndarray | jax.Array,
    keys: np.ndarray | jax.Array,
    k: int,
    *,
    normalize: bool = True,
    memory_budget_mb: float = 1024,
    query_chunk: int = 0,
    key_chunk: int = 0,
    use_bf16: bool = False,
    rescore_factor: int = 4,
    devices: Sequence[jax.Device] | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
  """The k dictionary rows with the highest cosine (or inner product) for every query.

  One call of `Dictionary(keys, k, ...).search(queries)`; to search one dictionary with
  several query blocks, make the `Dictionary` once.

  Args:
    queries: [Q, d] (numpy, memmap or jax; any float dtype, computed in float32).
    keys: [N, d] dictionary rows.
    k: results per query, 1 <= k <= N.
    normalize, memory_budget_mb, query_chunk, key_chunk, use_bf16, rescore_factor,
      devices: see `Dictionary`.
    progress: log progress over query chunks.

  Returns:
    (scores [Q, k] float32, indices [Q, k] int32), best first per row.

  Raises:
    ValueError: on inputs of the wrong rank, mismatched dimensions, k outside [1, N], or
      a memory budget too small for any chunk.
  """
  _check_2d("queries", queries)               # queries first, as the errors always came
  _check_2d("keys", keys)
  _check_queries(queries, keys.shape[1])      # before the keys are placed
  dictionary = Dictionary(keys, k, normalize=normalize, memory_budget_mb=memory_budget_mb,
                          query_chunk=query_chunk, key_chunk=key_chunk, use_bf16=use_bf16,
                          rescore_factor=rescore_factor, devices=devices)
  return dictionary.search(queries, progress=progress)


def _store(scores: np.ndarray, indices: np.ndarray, start: int, stop: int,
           result: tuple[jax.Array, jax.Array]) -> None:
  chunk_scores, chunk_indices = result
  scores[start:stop] = np.asarray(chunk_scores)[:stop - start]
  indices[start:stop] = np.asarray(chunk_indices)[:stop - start]


def cosine_top_k(queries: np.ndarray, keys: np.ndarray, k: int,
                 memory_budget_mb: float = 1024) -> tuple[np.ndarray, np.ndarray]:
  """(scores [Q, k] float32, indices [Q, k] int64) of the k keys of highest cosine per query.

  `search_topk` with normalize=True, for host arrays of any float dtype.
  """
  keys = np.asarray(keys, np.float32)
  if not 1 <= k <= len(keys):
    raise ValueError(f"k={k}: must be between 1 and the number of keys ({len(keys)})")
  scores, index = search_topk(np.asarray(queries, np.float32), keys, k, normalize=True,
                              memory_budget_mb=memory_budget_mb)
  return np.asarray(scores, np.float32), np.asarray(index, np.int64)
