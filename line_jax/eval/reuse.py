"""Whether a work dir's evaluation is still current, so that a rerun can keep it.

`python -m line_jax.train` on a finished work dir restores the last checkpoint and, before
this, evaluated it again from scratch: minutes of work that give the same numbers (the
protocols are seeded). The evaluation key is a SHA-256 over everything a result depends on:

- LINE's parameters (their bytes);
- both teachers' caches (folder and meta.json, which carry the cache key of model, dataset
  and settings);
- the bytes of every file of the dataset folder, and of the real-text file if one is set;
- the whole config, but for `eval.reuse` itself;
- the training log (plotted in the report);
- the source of the `line_jax` package (a changed protocol is a changed result).

metrics.json records the key; a later evaluation with `config.eval.reuse` true and the same
key, whose metrics.json and report.md are both present, returns the recorded metrics.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

import jax
import numpy as np

from line_jax.training import workdir as workdir_lib
from line_jax.util import files as files_lib

KEY_FIELD = "evaluation_key"
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _source_digest() -> str:
  h = hashlib.sha256()
  for root, dirs, names in os.walk(_PACKAGE):
    dirs.sort()
    for name in sorted(names):
      if name.endswith((".py", ".cc")):
        path = os.path.join(root, name)
        h.update(os.path.relpath(path, _PACKAGE).encode())
        with open(path, "rb") as f:
          h.update(hashlib.sha256(f.read()).digest())
  return h.hexdigest()


def _teacher_identity(teacher) -> dict:
  return {"path": os.path.abspath(teacher.path),
          "meta": json.loads(json.dumps(teacher.meta, sort_keys=True, default=str))}


def _folder_digests(folder: str) -> dict:
  if not os.path.isdir(folder):
    return {}
  return {name: files_lib.file_sha256(os.path.join(folder, name))
          for name in sorted(os.listdir(folder)) if os.path.isfile(os.path.join(folder, name))}


def evaluation_key(model, workdir: str) -> Optional[str]:
  """The SHA-256 (hex) of everything `run_evaluation(model, workdir)` depends on; None for
  a model without a `params` pytree (nothing to identify it by: never reused)."""
  if getattr(model, "params", None) is None:
    return None
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(model.params):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{a.dtype}{a.shape}".encode())
    h.update(a.tobytes())
  config = {k: v for k, v in workdir_lib.flat_config(model.config).items()
            if k != "eval.reuse"}
  files = {"train_log": os.path.join(workdir, "train_log.jsonl")}
  realtext = str(model.config.eval.get("realtext", "") or "")
  if realtext:
    files["realtext"] = realtext
  digests = {name: files_lib.file_sha256(path) if os.path.exists(path) else None
             for name, path in files.items()}
  identity = {
      "config": config,
      "data": _folder_digests(getattr(model.dataset, "root", "") or ""),
      "teacher1": _teacher_identity(model.teacher1),
      "teacher2": _teacher_identity(model.teacher2),
      "files": digests,
      "source": _source_digest(),
  }
  h.update(json.dumps(identity, sort_keys=True, default=str).encode())
  return h.hexdigest()


def previous_result(workdir: str, key: Optional[str]) -> Optional[dict]:
  """The metrics of `workdir`'s evaluation if it was made under `key` and its report is
  there; else None."""
  if key is None:
    return None
  metrics_path = os.path.join(workdir, "metrics.json")
  if not (os.path.exists(metrics_path) and os.path.exists(os.path.join(workdir, "report.md"))):
    return None
  try:
    with open(metrics_path) as f:
      result = json.load(f)
  except (OSError, ValueError):
    return None
  if not isinstance(result, dict) or result.get(KEY_FIELD) != key:
    return None
  return result


def replace_entry(workdir: str, key: str, result: dict, report_file: str, section: str) -> str:
  """One protocol run alone: its `key` entry of workdir/metrics.json is replaced (the other
  entries kept) and `section` written to workdir/`report_file`; returns that file's path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "metrics.json")
  merged = {}
  if os.path.exists(path):
    with open(path) as f:
      merged = json.load(f)
  merged[key] = result
  # The file no longer holds one evaluation of one setting: a rerun must not keep it whole.
  merged.pop(KEY_FIELD, None)
  files_lib.write_json(path, merged, ensure_ascii=False)
  report = os.path.join(workdir, report_file)
  files_lib.write_text(report, section)
  return os.path.abspath(report)
