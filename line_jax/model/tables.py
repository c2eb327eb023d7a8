"""Teacher 2's concept tables on the devices, as the trainer and the API both hold them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from line_jax.cache import store as emb_lib
from line_jax.model import kernels
from line_jax.util import processes as multihost


def resolve_table_dtype(config: ml_collections.ConfigDict, teacher2) -> str:
  """config.model.table_dtype, with "auto" resolved for this backend (see config.py)."""
  setting = str(config.model.table_dtype)
  if setting != "auto":
    return setting
  stored = np.dtype(teacher2.concepts.dtype)
  if (jax.default_backend() == "cpu" and str(config.model.cpu_kernel) != "off"
      and stored in kernels.TABLE_DTYPES and kernels.available()):
    return ""       # the fused kernel reads the stored rows (float16: half the bytes)
  rows = teacher2.concepts.shape[0] + teacher2.negated.shape[0]
  as_float32 = rows * teacher2.concepts.shape[1] * 4
  if (jax.default_backend() == "cpu"
      and as_float32 <= float(config.model.cpu_table_budget_gib) * 2**30):
    return "float32"
  return ""


def table_to_device(table: np.ndarray, sharding=None, dtype: str = "") -> jax.Array:
  """A host table on the devices (`sharding`; None: the default device), as `dtype` or as
  stored when empty; the host copy is freed once the transfer is done."""
  host = emb_lib.read_rows(table)
  if dtype:
    host = host.astype(jnp.dtype(dtype), copy=False)
  on_device = multihost.put(host, sharding)
  jax.block_until_ready(on_device)
  del host
  return on_device
