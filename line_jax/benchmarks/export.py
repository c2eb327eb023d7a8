"""The teacher export benchmark (`python -m line_jax.bench --what=export`): rows/s of the
bundled MiniLM teacher on short concept-like names and ~20-word sentences
(scripts/bench_export.py also times transformers-PyTorch when torch is installed)."""

from __future__ import annotations

from typing import Any

import numpy as np

from line_jax import teachers
from line_jax.benchmarks.timing import median_seconds
from line_jax.config import teacher_config

_WORDS = ("abnormal", "cardiac", "renal", "seizure", "fever", "chronic", "left", "hypoplasia",
          "of", "the", "muscle", "defect", "skin", "eye", "retinal", "pain", "acute")


def bench_export(rows: int, repeats: int, seed: int) -> dict[str, Any]:
  """{names_rows_per_s, sentences_rows_per_s, compilations} of `rows` random names and a
  quarter as many sentences, each the median of `repeats` timed runs after a warm-up."""
  rng = np.random.default_rng(seed)
  names = [" ".join(rng.choice(_WORDS, rng.integers(1, 5))) for _ in range(rows)]
  sentences = [" ".join(rng.choice(_WORDS, 20)) for _ in range(rows // 4)]
  encoder = teachers.load_encoder(teacher_config(model="all-MiniLM-L6-v2", preset="minilm"))
  result = {}
  for label, texts in (("names", names), ("sentences", sentences)):
    encoder.encode(texts[:256])                     # compile the common buckets
    seconds = median_seconds(lambda texts=texts: encoder.encode(texts), repeats)
    result[f"{label}_rows_per_s"] = len(texts) / seconds
  result["compilations"] = encoder.compile_count
  return result
