"""line_jax: LINE teacher-teacher alignment in JAX.

`line_jax.LineModel` (see `line_jax.api.line_model`) is imported on first use, so that `import line_jax`
stays light (no JAX, no dataset code). Importing it does set glibc's malloc to one arena,
so that the trainer can later keep freed memory for reuse (`line_jax.util.host_memory`: XLA:CPU
steps would otherwise page-fault their buffers in anew on every call);
LINE_JAX_SYSTEM_MALLOC=1 turns that off.
"""

import importlib
from typing import Any

from line_jax.util import host_memory as _host_memory

__version__ = "0.1.0"

_host_memory.use_one_arena()

_LAZY = {"LineModel": "line_jax.api.line_model"}


def __getattr__(name: str) -> Any:
  if name in _LAZY:
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'line_jax' has no attribute {name!r}")


def __dir__() -> list:
  return sorted(list(globals()) + list(_LAZY))
