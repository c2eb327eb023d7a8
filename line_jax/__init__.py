"""line_jax: LINE teacher-teacher alignment in JAX.

`line_jax.LineModel` (see `line_jax.api`) is imported on first use, so that `import line_jax`
stays light (no JAX, no dataset code).
"""

from typing import Any

__version__ = "0.1.0"

_LAZY = {"LineModel": "line_jax.api"}


def __getattr__(name: str) -> Any:
  if name in _LAZY:
    import importlib
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'line_jax' has no attribute {name!r}")


def __dir__() -> list:
  return sorted(list(globals()) + list(_LAZY))
