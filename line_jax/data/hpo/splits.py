"""Splits drawn from stable hashes, disease families and label classes
(`line_jax.data.hpo`)."""

from __future__ import annotations

import collections
import hashlib
import re
from typing import Sequence




OTHER_LABEL = "other"


# --- splits and labels ---------------------------------------------------------------


def stable_unit(seed: int, key: str) -> float:
  """A number in [0, 1) fixed by (seed, key), the same on every machine and run."""
  digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(seed: int, key: str, fractions: Sequence[float]) -> str:
  u = stable_unit(seed, key) * sum(fractions)
  if u < fractions[0]:
    return "train"
  return "valid" if u < fractions[0] + fractions[1] else "test"


def disease_family(name: str) -> str:
  """A disease name without trailing subtype tokens: "Xyz syndrome type 2A" -> "xyz syndrome"."""
  words = re.findall(r"[a-z0-9]+", name.lower())
  while len(words) > 1 and (words[-1] in ("type", "form", "subtype") or
                            re.fullmatch(r"\d+[a-z]?|[a-z]\d*|[ivx]+", words[-1])):
    words.pop()
  return " ".join(words)


def collapse_labels(labels: Sequence[str], num_classes: int) -> list:
  """Keeps the `num_classes - 1` most frequent labels, the rest become "other"."""
  counts = collections.Counter(labels)
  kept = {label for label, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
          [:max(num_classes - 1, 1)]}
  return [label if label in kept else OTHER_LABEL for label in labels]
