"""Scaling of training and residual search with data size: time and peak memory.

  python scripts/scaling.py [--pairs=100000,500000,2000000] [--concepts=100000,500000]
                            [--dim=768] [--steps=50] [--out=scaling.md]

Each point runs in its own process (so peak RSS is that point's alone): synthetic float16
memmapped embeddings of the given size (line_jax.benchmarks.train_step.bench_streaming) are written,
then `--steps` train steps run over them; the residual search of `--queries` residuals over
the dictionary is timed for each dictionary size. A log-log least-squares fit gives the
growth exponent of each column. Prints a markdown table (and writes it to --out).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

import numpy as np
from absl import app, flags

_PAIRS = flags.DEFINE_list("pairs", ["100000", "500000", "2000000"], "pairs on disk per point")
_CONCEPTS = flags.DEFINE_list("concepts", ["100000", "500000"], "dictionary sizes")
_DIM = flags.DEFINE_integer("dim", 768, "embedding dimension")
_STEPS = flags.DEFINE_integer("steps", 50, "train steps timed per point")
_QUERIES = flags.DEFINE_integer("queries", 20000, "residuals searched per dictionary size")
_OUT = flags.DEFINE_string("out", "", "also write the table to this file")

_POINT = """
import json, sys, time, resource
import numpy as np
from line_jax.benchmarks import train_step as bench_train
from line_jax.search import topk as search
kind, a, b, dim, steps, queries, folder = sys.argv[1:]
a, b, dim, steps, queries = int(a), int(b), int(dim), int(steps), int(queries)
if kind == "train":
  r = bench_train.bench_streaming(num_pairs=a, num_concepts=b, num_edges=10 * b, dim=dim,
                                  steps=steps, workdir=folder)
else:
  rng = np.random.default_rng(0)
  keys = rng.standard_normal((b, dim), np.float32)
  q = rng.standard_normal((queries, dim), np.float32)
  search.search_topk(q[:256], keys, 8)
  t = time.perf_counter()
  search.search_topk(q, keys, 8)
  r = {"search_s": time.perf_counter() - t,
       "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
print("RESULT " + json.dumps(r))
"""


def run_point(kind, a, b, dim, steps, queries):
  with tempfile.TemporaryDirectory() as folder:
    proc = subprocess.run([sys.executable, "-c", _POINT, kind, str(a), str(b), str(dim),
                           str(steps), str(queries), folder], capture_output=True, text=True)
  for line in proc.stdout.splitlines():
    if line.startswith("RESULT "):
      return json.loads(line[7:])
  raise RuntimeError(proc.stderr[-2000:])


def exponent(x, y):
  return float(np.polyfit(np.log(x), np.log(y), 1)[0]) if len(x) > 1 else float("nan")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  pairs = [int(x) for x in _PAIRS.value]
  concepts = [int(x) for x in _CONCEPTS.value]
  lines = [f"Training over memmapped float16 embeddings (d = {_DIM.value}, batch 128, "
           f"{_STEPS.value} steps, 10 edges per concept) and residual search "
           f"({_QUERIES.value} queries, k = 8):", "",
           "| pairs | concepts | train pairs/s | train peak RSS (GiB) | search s | "
           "search peak RSS (GiB) |", "|---|---|---|---|---|---|"]
  rows = []
  for c in concepts:
    s = run_point("search", 0, c, _DIM.value, 0, _QUERIES.value)
    for n in pairs:
      t = run_point("train", n, c, _DIM.value, _STEPS.value, 0)
      rows.append((n, c, t["pairs_per_s"], t["peak_rss_gib"], s["search_s"],
                   s["peak_rss_gib"]))
      lines.append(f"| {n:,} | {c:,} | {t['pairs_per_s']:.0f} | {t['peak_rss_gib']:.2f} | "
                   f"{s['search_s']:.1f} | {s['peak_rss_gib']:.2f} |")
      print(lines[-1], flush=True)
  rows = np.array(rows, float)
  fits = []
  for c in concepts:
    sel = rows[:, 1] == c
    fits.append(f"at {c:,} concepts, train peak RSS grows as pairs^"
                f"{exponent(rows[sel, 0], rows[sel, 3]):.2f}")
  first = rows[:, 0] == pairs[0]
  fits.append(f"search time grows as concepts^{exponent(rows[first, 1], rows[first, 4]):.2f}")
  fits.append(f"train peak RSS grows as concepts^"
              f"{exponent(rows[first, 1], rows[first, 3]):.2f} (at {pairs[0]:,} pairs)")
  lines += ["", "Fitted growth (log-log least squares): " + "; ".join(fits) + "."]
  text = "\n".join(lines)
  print(text)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  app.run(main)
