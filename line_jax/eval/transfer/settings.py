"""The transfer protocol's settings (config.eval.transfer.*) and the names its parts share."""

from __future__ import annotations

import dataclasses
from typing import Tuple

# Embedding keys in report order; "onehot" needs no embedder.
EMBEDDINGS = ("onehot", "teacher1", "teacher2", "line")
STRATEGIES = ("direct", "linear", "full", "target_only")
STRATEGY_LABELS = {"direct": "direct", "linear": "linear-only tuning",
                   "full": "full tuning", "target_only": "target only (no transfer)"}
ONEHOT_LABEL = "one-hot concept ids"
PLOT_FILE = "transfer_f1.png"
REPORT_FILE = "transfer.md"


@dataclasses.dataclass(frozen=True)
class TransferConfig:
  """config.eval.transfer.* (see line_jax/config.py)."""
  enabled: bool = True
  filters: int = 100
  batch_size: int = 128
  learning_rate: float = 1e-2
  tune_learning_rate: float = 1e-3
  max_epochs: int = 20
  tune_max_epochs: int = 20
  patience: int = 2
  validation_fraction: float = 0.1
  target_fraction: float = 0.1
  num_seeds: int = 5
  seed: int = 0
  site_column: str = "auto"         # "auto": `site`, else `source`
  site_pattern: str = ""            # regex with one group applied to the column's values
  sites: Tuple[str, ...] = ()       # the two compared sites; () = the two largest
  embeddings: Tuple[str, ...] = EMBEDDINGS
  without_branch_roots: str = "auto"  # "auto": when the label is a concept group; "on"/"off"
  min_site_pairs: int = 20          # a compared site with fewer labelled pairs: skipped
  min_class_pairs: int = 10         # a class with fewer pairs at either site: left out
  eval_chunk: int = 512             # rows per forward call at evaluation

  def __post_init__(self):
    unknown = [e for e in self.embeddings if e not in EMBEDDINGS]
    if unknown:
      raise ValueError(f"config.eval.transfer.embeddings: unknown {unknown}; choose among "
                       f"{list(EMBEDDINGS)}")
    if self.without_branch_roots not in ("auto", "on", "off"):
      raise ValueError("config.eval.transfer.without_branch_roots must be auto, on or off, "
                       f"got {self.without_branch_roots!r}")
    if not 0 < self.target_fraction < 1:
      raise ValueError("config.eval.transfer.target_fraction must be in (0, 1), got "
                       f"{self.target_fraction}")
    if not 0 < self.validation_fraction < 1:
      raise ValueError("config.eval.transfer.validation_fraction must be in (0, 1), got "
                       f"{self.validation_fraction}")
    if self.num_seeds < 1 or self.filters < 1 or self.batch_size < 1:
      raise ValueError("config.eval.transfer: num_seeds, filters and batch_size must be >= 1")
    if self.min_site_pairs < 1 or self.min_class_pairs < 1:
      raise ValueError("config.eval.transfer: min_site_pairs and min_class_pairs must be >= 1, "
                       f"got {self.min_site_pairs} and {self.min_class_pairs}")
    if len(self.sites) not in (0, 2):
      raise ValueError(f"config.eval.transfer.sites names two sites or none, got "
                       f"{list(self.sites)}")


def read_config(config) -> TransferConfig:
  """`TransferConfig` from config.eval.transfer; missing fields take the defaults."""
  d = TransferConfig()
  ev = config.get("eval", None)
  sub = ev.get("transfer", None) if ev is not None else None
  if sub is None:
    return d
  values = {}
  for field in dataclasses.fields(TransferConfig):
    if field.name in sub:
      value = sub[field.name]
      default = getattr(d, field.name)
      values[field.name] = tuple(str(v) for v in value) if isinstance(default, tuple) \
          else type(default)(value)
  return TransferConfig(**values)
