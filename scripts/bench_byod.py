r"""Benchmarks of the bring-your-own-data commands on synthetic inputs (written here, never
committed): `line_jax.data.umls` on a synthetic MRCONSO/MRREL, `line_jax.data.notes` on
synthetic 2,000-word notes.

  python scripts/bench_byod.py --what=umls --workdir=DIR [--conso_rows=5000000 --rel_rows=20000000]
  python scripts/bench_byod.py --what=notes --workdir=DIR [--num_notes=400 --words=2000]

umls: writes the RRF files (skipped when they exist), then runs the import in a child
process and prints its wall time and peak RSS (targets: < 10 min, < 4 GiB).
notes: writes a UMLS-like dictionary dataset and the notes, then runs the notes import in
this process with one thread and prints notes/s (target: >= 200 notes/s of 2,000 words).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
from absl import app
from absl import flags

from line_jax.data import notes
from line_jax.data.dataset import write_dataset

_WHAT = flags.DEFINE_enum("what", "umls", ["umls", "notes"], "which benchmark")
_WORKDIR = flags.DEFINE_string("workdir", None, "where the synthetic inputs and outputs go")
_CONSO_ROWS = flags.DEFINE_integer("conso_rows", 5_000_000, "MRCONSO rows")
_REL_ROWS = flags.DEFINE_integer("rel_rows", 20_000_000, "MRREL rows")
_ROWS_PER_CUI = flags.DEFINE_float("rows_per_cui", 3.0, "MRCONSO rows per CUI")
_NOTES = flags.DEFINE_integer("num_notes", 400, "notes")
_WORDS = flags.DEFINE_integer("words", 2000, "words per note")
_DICTIONARY = flags.DEFINE_integer("dictionary", 200_000, "dictionary strings (notes bench)")
_SEED = flags.DEFINE_integer("seed", 0, "seed")

_REL_CODES = np.array(["PAR", "CHD", "SY", "RL", "RB", "RN", "RO", "RQ", "SIB", "AQ", "QB"])
_REL_WEIGHTS = np.array([20, 20, 5, 5, 8, 8, 20, 2, 8, 2, 2], np.float64)


def _vocabulary(rng, size=20000):
  letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
  lengths = rng.integers(3, 11, size)
  return np.array(["".join(rng.choice(letters, n)) for n in lengths], dtype=object)


def _strings(rng, vocab, count):
  """`count` phrases of 1-4 Zipf-drawn words."""
  ranks = np.minimum(rng.zipf(1.3, size=(count, 4)) - 1, len(vocab) - 1)
  lengths = rng.integers(1, 5, count)
  words = vocab[ranks]
  return [" ".join(words[i, :lengths[i]]) for i in range(count)]


def _write_rrf(path, columns):
  table = pa.table(columns + [pa.array([""] * len(columns[0]), pa.string())],
                   names=[f"c{i}" for i in range(len(columns) + 1)])
  pv.write_csv(table, path, write_options=pv.WriteOptions(
      include_header=False, delimiter="|", quoting_style="none"))


def write_release(meta, conso_rows, rel_rows, rows_per_cui, seed):
  """A synthetic release: MRCONSO with ~rows_per_cui strings per CUI, MRREL with random
  pairs of CUIs and the usual REL codes (PAR/CHD, RB/RN, RO, SIB, ...)."""
  os.makedirs(meta, exist_ok=True)
  rng = np.random.default_rng(seed)
  vocab = _vocabulary(rng)
  num_cuis = int(conso_rows / rows_per_cui)
  cui_names = np.array([f"C{i:07d}" for i in range(num_cuis)], dtype=object)
  chunk = 1_000_000
  conso = os.path.join(meta, "MRCONSO.RRF")
  with open(conso, "wb") as f:
    for start in range(0, conso_rows, chunk):
      n = min(chunk, conso_rows - start)
      cui = cui_names[np.sort(rng.integers(0, num_cuis, n))]
      lat = np.where(rng.random(n) < 0.8, "ENG", "FRE")
      ts = np.where(rng.random(n) < 0.4, "P", "S")
      empty = pa.array([""] * n, pa.string())
      cols = [pa.array(cui.tolist(), pa.string()), pa.array(lat), pa.array(ts), empty,
              pa.array(np.where(rng.random(n) < 0.5, "PF", "VO")), empty,
              pa.array(np.where(rng.random(n) < 0.5, "Y", "N")), empty, empty, empty, empty,
              pa.array(rng.choice(["MSH", "SNOMEDCT_US", "ICD10CM", "MDR"], n)),
              pa.array(rng.choice(["PT", "SY"], n)), empty,
              pa.array(_strings(rng, vocab, n), pa.string()), empty,
              pa.array(np.where(rng.random(n) < 0.02, "O", "N")), empty]
      sink = pa.BufferOutputStream()
      table = pa.table(cols + [empty], names=[f"c{i}" for i in range(len(cols) + 1)])
      pv.write_csv(table, sink, write_options=pv.WriteOptions(
          include_header=False, delimiter="|", quoting_style="none"))
      f.write(sink.getvalue().to_pybytes())
  rel = os.path.join(meta, "MRREL.RRF")
  weights = _REL_WEIGHTS / _REL_WEIGHTS.sum()
  with open(rel, "wb") as f:
    for start in range(0, rel_rows, chunk):
      n = min(chunk, rel_rows - start)
      empty = pa.array([""] * n, pa.string())
      cols = [pa.array(cui_names[rng.integers(0, num_cuis, n)].tolist(), pa.string()), empty,
              pa.array(["CUI"] * n), pa.array(_REL_CODES[rng.choice(len(_REL_CODES), n,
                                                                      p=weights)]),
              pa.array(cui_names[rng.integers(0, num_cuis, n)].tolist(), pa.string()), empty,
              pa.array(["CUI"] * n), empty, empty, empty,
              pa.array(rng.choice(["MSH", "SNOMEDCT_US", "ICD10CM", "MDR"], n)), empty,
              empty, empty, pa.array(np.where(rng.random(n) < 0.01, "O", "N")), empty]
      sink = pa.BufferOutputStream()
      table = pa.table(cols + [empty], names=[f"c{i}" for i in range(len(cols) + 1)])
      pv.write_csv(table, sink, write_options=pv.WriteOptions(
          include_header=False, delimiter="|", quoting_style="none"))
      f.write(sink.getvalue().to_pybytes())
  return meta


def bench_umls(workdir):
  meta = os.path.join(workdir, "META")
  if not os.path.exists(os.path.join(meta, "MRREL.RRF")):
    started = time.time()
    write_release(meta, _CONSO_ROWS.value, _REL_ROWS.value, _ROWS_PER_CUI.value, _SEED.value)
    print(f"synthetic release written in {time.time() - started:.0f} s: "
          f"MRCONSO {os.path.getsize(os.path.join(meta, 'MRCONSO.RRF')) / 2**30:.2f} GiB, "
          f"MRREL {os.path.getsize(os.path.join(meta, 'MRREL.RRF')) / 2**30:.2f} GiB",
          flush=True)
  out = os.path.join(workdir, "dataset")
  started = time.time()
  subprocess.run([sys.executable, "-m", "line_jax.data.umls", f"--meta={meta}",
                  f"--out={out}"], check=True, stdout=subprocess.DEVNULL)
  seconds = time.time() - started
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  peak_kib = usage.ru_maxrss
  cpu_seconds = usage.ru_utime + usage.ru_stime
  with open(os.path.join(out, "stats.json")) as f:
    stats = json.load(f)
  print(json.dumps(dict(
      conso_rows=_CONSO_ROWS.value, rel_rows=_REL_ROWS.value, seconds=round(seconds, 1),
      cpu_seconds=round(cpu_seconds, 1),
      peak_rss_gib=round(peak_kib / 2**20, 2), cuis=stats["cuis"],
      concepts=stats["concepts"], relations=stats["relations"],
      load=os.getloadavg()), indent=1))
  print(f"umls: {seconds / 60:.1f} min wall, {cpu_seconds / 60:.1f} min CPU (target < 10), "
        f"peak RSS {peak_kib / 2**20:.2f} GiB (target < 4); load {os.getloadavg()}")


def bench_notes(workdir):
  rng = np.random.default_rng(_SEED.value)
  vocab = _vocabulary(rng)
  dataset = os.path.join(workdir, "notes_dataset")
  medical, filler = vocab[:10000], vocab[10000:]
  phrases = _strings(rng, medical, _DICTIONARY.value)
  names = sorted(set(phrases))
  ids = [f"C{i:07d}" for i in range(len(names))]
  write_dataset(dataset, dict(concept_id=ids, name=names), dict(
      head_id=ids[:1], tail_id=ids[1:2], relation=["other"]), dict(pair_id=["x"]))
  headers = ["Chief Complaint", "History of Present Illness", "Past Medical History",
             "Brief Hospital Course", "Discharge Diagnosis", "Impression"]
  path = os.path.join(workdir, "notes.jsonl")
  with open(path, "w") as f:
    for i in range(_NOTES.value):
      # About a third of the words belong to dictionary phrases (rho ~ 0.3), the rest are
      # filler words that match nothing.
      words = []
      while len(words) < _WORDS.value:
        if rng.random() < 0.15:
          words.extend(phrases[int(rng.integers(len(phrases)))].split())
        else:
          words.append(filler[min(int(rng.zipf(1.3)) - 1, len(filler) - 1)])
      words = words[:_WORDS.value]
      for k in range(12, len(words), 12):
        words[k] += "."
      for k, h in enumerate(headers):
        words[k * len(words) // len(headers)] = f"\n{h}: " + words[k * len(words)
                                                                   // len(headers)]
      f.write(json.dumps({"note_id": f"n{i}", "text": " ".join(words)}) + "\n")
  stats = notes.build_pairs(dataset, path, dict(include_definitions=False), progress=False)
  print(json.dumps({k: v for k, v in stats.items() if k != "config"}, indent=1))
  print(f"notes: {stats['notes_per_second']:.0f} notes/s wall, "
        f"{stats['notes_per_cpu_second']:.0f} notes per CPU second, of {_WORDS.value} words "
        f"(dictionary of {len(names)} strings built in {stats['dictionary_seconds']:.1f} s, "
        f"not counted; target >= 200 notes/s on one core: run under `taskset -c 0`); "
        f"load {os.getloadavg()}")


def main(argv):
  del argv
  os.makedirs(_WORKDIR.value, exist_ok=True)
  (bench_umls if _WHAT.value == "umls" else bench_notes)(_WORKDIR.value)


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main)
