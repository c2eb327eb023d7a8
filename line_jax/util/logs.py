"""Logging set-up for the command-line entry points: our progress at INFO, libraries quiet."""

import logging

from absl import logging as absl_logging

_QUIET = ("orbax", "etils", "jax/_src")


class _LibraryInfoFilter(logging.Filter):
  """Drops INFO (and lower) records emitted from noisy libraries (orbax logs every save)."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno > logging.INFO:
      return True
    path = record.pathname.replace("\\", "/")
    return not any(f"/{name}" in path for name in _QUIET)


def setup() -> None:
  absl_logging.set_verbosity(absl_logging.INFO)
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _LibraryInfoFilter) for f in handler.filters):
    handler.addFilter(_LibraryInfoFilter())
