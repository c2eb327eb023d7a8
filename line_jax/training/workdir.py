"""Guards of a training work dir: one trainer at a time, and only the run it was made for.

Lock: `<workdir>/lock` is held with an exclusive `flock` for as long as a trainer runs (the
file holds the holder's pid and host). A second trainer exits at once with `WorkdirBusy`
naming that pid; the kernel drops the lock when the holder dies, so a killed run never
leaves a stale lock behind.

Fingerprint: `<workdir>/fingerprint.json` records what the checkpoints were trained on: the
SHA-256 of each dataset file and every config field that shapes the state or the run
(everything but `RUNTIME_FIELDS`, which may change between a run and its resumption). A
rerun whose data or config differs raises `WorkdirMismatch` naming each difference before
anything in the work dir is written; `config.json` is written only after the check.
`force_new=True` (`--force_new`) deletes the previous run's training files (checkpoints,
logs, summaries, report) and starts over; the teacher-embedding cache is kept (its folders
are keyed by the data they embed).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import threading
from typing import Any, Dict, List

import ml_collections

from line_jax.util import files
from line_jax.util import processes

LOCK_FILE = "lock"
FINGERPRINT_FILE = "fingerprint.json"
CONFIG_FILE = "config.json"
TRAIN_LOG = "train_log.jsonl"
DATASET_FILES = ("concepts.parquet", "relations.parquet", "pairs.parquet",
                 "heldout_relations.parquet")
# Config fields that may differ between a run and its resumption: where the data lives and
# how it is built (its content is fingerprinted instead), when to stop, log, checkpoint and
# evaluate, and how the same computation is carried out. Prefixes end with ".".
RUNTIME_FIELDS = (
    "data.dir", "data.builder", "data.synthetic.", "data.hpo.",
    "train.stop_after_steps", "train.evaluate", "train.log_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.prefetch", "train.on_nonfinite",
    "train.batch_builder", "train.text_table", "train.device_table_budget_gib",
    "train.max_nonfinite_skips",
    "model.cpu_kernel", "model.cpu_kernel_threads", "model.cpu_table_budget_gib",
    "model.table_dtype", "teacher1.batch_size", "teacher2.batch_size",
    "search.", "eval.")
# What `force_new` removes: the previous run's training outputs.
RUN_FILES = ("checkpoints", "damaged_checkpoints", "replaced_checkpoint", TRAIN_LOG,
             "recovery.json", "train_summary.json", FINGERPRINT_FILE, CONFIG_FILE, "report.md",
             "metrics.json")


class WorkdirBusy(RuntimeError):
  """Another process holds the work dir's lock."""


class WorkdirMismatch(ValueError):
  """The work dir holds a run of other data or another config."""


# --- lock --------------------------------------------------------------------------------
_HELD: Dict[str, List[Any]] = {}    # path -> [fd, depth]: re-entrant within one process
_HELD_LOCK = threading.Lock()


def acquire(workdir: str) -> None:
  """Takes the work dir's exclusive lock (re-entrant in this process); WorkdirBusy if taken."""
  workdir = os.path.abspath(workdir)
  with _HELD_LOCK:
    if workdir in _HELD:
      _HELD[workdir][1] += 1
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise
      raise WorkdirBusy(f"{workdir} is in use by another trainer ({holder(workdir)}); wait "
                        "for it to finish, stop it, or use another --workdir") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
    os.fsync(fd)
    _HELD[workdir] = [fd, 1]


def release(workdir: str) -> None:
  workdir = os.path.abspath(workdir)
  with _HELD_LOCK:
    entry = _HELD.get(workdir)
    if entry is None:
      return
    entry[1] -= 1
    if entry[1] == 0:
      del _HELD[workdir]
      os.ftruncate(entry[0], 0)
      fcntl.flock(entry[0], fcntl.LOCK_UN)
      os.close(entry[0])


def holder(workdir: str) -> str:
  """'pid N on HOST' of the lock's holder, as it recorded itself."""
  try:
    with open(os.path.join(os.path.abspath(workdir), LOCK_FILE)) as f:
      info = json.loads(f.read() or "{}")
    return f"pid {info['pid']} on {info['host']}"
  except (OSError, ValueError, KeyError):
    return "pid unknown"


class locked:
  """`with locked(workdir):` holds the work dir's lock for the block."""

  def __init__(self, workdir: str):
    self.workdir = workdir

  def __enter__(self):
    acquire(self.workdir)
    return self

  def __exit__(self, *exc):
    release(self.workdir)
    return False


# --- fingerprint -----------------------------------------------------------------------
def _is_runtime(key: str) -> bool:
  return any(key == f or (f.endswith((".", "_")) and key.startswith(f))
             for f in RUNTIME_FIELDS)


def flat_config(config: ml_collections.ConfigDict | dict) -> Dict[str, Any]:
  """{"a.b": value} of every leaf, lists as JSON-like lists."""
  tree = config.to_dict() if hasattr(config, "to_dict") else config
  out: Dict[str, Any] = {}

  def walk(prefix, node):
    if isinstance(node, dict):
      for k in sorted(node):
        walk(f"{prefix}{k}.", node[k])
    else:
      out[prefix[:-1]] = list(node) if isinstance(node, tuple) else node
  walk("", tree)
  return json.loads(json.dumps(out, default=str))


def shaping_config(config) -> Dict[str, Any]:
  """{"a.b": value} of the config's fields that shape a run (every field but the
  RUNTIME_FIELDS, which may change between a run and its resumption)."""
  return {k: v for k, v in flat_config(config).items() if not _is_runtime(k)}


def fingerprint(config, data_root: str) -> dict:
  data = {}
  for name in DATASET_FILES:
    path = os.path.join(data_root, name)
    data[name] = files.file_sha256(path) if os.path.exists(path) else None
  return {"data": data, "config": shaping_config(config)}


# Fields added to the config after runs were recorded without them, whose value such a
# run had and which a later setting cannot take over: the optimiser's state tree differs
# between a constant rate and a schedule, so a run of one never restores as the other.
# The same for a run's kind of text vectors: a run recorded before model.text_vectors
# existed trained one vector per text.
IMPLIED_BEFORE = {"train.lr_schedule": "constant", "model.text_vectors": "sentence"}


def differences(old: dict, new: dict) -> List[str]:
  """Human-readable differences between two fingerprints."""
  out = []
  if old.get("config"):
    old = dict(old, config={**IMPLIED_BEFORE, **old["config"]})
  for name in sorted(set(old.get("data", {})) | set(new.get("data", {}))):
    a, b = old.get("data", {}).get(name), new.get("data", {}).get(name)
    if a != b:
      out.append(f"dataset file {name} " + ("added" if a is None else "removed" if b is None
                                              else "changed"))
  oc, nc = old.get("config", {}), new.get("config", {})
  # Only fields both know (and IMPLIED_BEFORE): a field added to (or dropped from) the
  # config since the run was recorded does not by itself make it another run.
  for key in sorted(set(oc) & set(nc)):
    if not _is_runtime(key) and oc[key] != nc[key]:
      out.append(f"config {key}: {oc[key]!r} -> {nc[key]!r}")
  return out


def read_json(path: str, what: str) -> Any:
  """json.load with an error naming the file (and what it is) when it is unreadable."""
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: the {what} is damaged ({e}); it cannot be read") from None


def has_run(workdir: str) -> bool:
  ckpt = os.path.join(workdir, "checkpoints")
  return os.path.isdir(ckpt) and any(n.isdigit() for n in os.listdir(ckpt))


def start_over(workdir: str) -> List[str]:
  """Deletes the previous run's training outputs (RUN_FILES); returns what was removed."""
  removed = []
  for name in RUN_FILES:
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)
    else:
      continue
    removed.append(name)
  if removed:
    logging.warning("--force_new: removed the previous run's %s from %s", ", ".join(removed),
                    workdir)
  return removed


def check_and_record(workdir: str, config, data_root: str, force_new: bool = False) -> dict:
  """Refuses a work dir trained on other data or config; then writes fingerprint.json and
  config.json. Call with the lock held, before anything else is written there."""
  workdir = os.path.abspath(workdir)
  new = fingerprint(config, os.path.abspath(data_root))
  fp_path = os.path.join(workdir, FINGERPRINT_FILE)
  if force_new:
    start_over(workdir)
  elif os.path.exists(fp_path):
    diffs = differences(read_json(fp_path, "work-dir fingerprint"), new)
    if diffs:
      raise WorkdirMismatch(
          f"{workdir} holds a run of other data or settings; nothing was changed there. "
          f"Differences: {'; '.join(diffs)}. Rerun with the run's settings (see its "
          f"{CONFIG_FILE}), use another --workdir, or pass --force_new to start over")
  elif has_run(workdir):
    # A run from before fingerprints: its config.json is the only record to compare with.
    cfg_path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(cfg_path):
      old = {"config": {k: v for k, v in flat_config(read_json(cfg_path, "run's config"))
                        .items() if not _is_runtime(k)}}
      diffs = differences(old, {"config": new["config"]})
      if diffs:
        raise WorkdirMismatch(
            f"{workdir} holds a run with other settings; nothing was changed there. "
            f"Differences: {'; '.join(diffs)}. Use another --workdir or --force_new")
    logging.warning("%s: a run without a fingerprint; its data could not be checked", workdir)
  files.write_json(fp_path, new)
  files.write_text(os.path.join(workdir, CONFIG_FILE), config.to_json_best_effort(indent=1))
  return new


def check_data(workdir: str, data_root: str) -> None:
  """For readers (`LineModel.load`): WorkdirMismatch when the dataset differs from the one
  the run was trained on (its fingerprint.json; a work dir without one is not checked)."""
  fp_path = os.path.join(os.path.abspath(workdir), FINGERPRINT_FILE)
  if not os.path.exists(fp_path):
    return
  old = read_json(fp_path, "work-dir fingerprint")
  new = {"data": fingerprint({}, os.path.abspath(data_root))["data"]}
  diffs = differences({"data": old.get("data", {})}, new)
  if diffs:
    raise WorkdirMismatch(f"{os.path.abspath(workdir)} was trained on other data than "
                          f"{os.path.abspath(data_root)}: {'; '.join(diffs)}")


def trim_train_log(workdir: str, step: int) -> int:
  """Drops train_log.jsonl records past `step` (logged after the checkpoint a run resumes
  from, so they would be logged again); returns how many were dropped."""
  path = os.path.join(workdir, TRAIN_LOG)
  if not os.path.exists(path):
    return 0
  kept, dropped = [], 0
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        dropped += 1          # a line cut short by a kill
        continue
      if record.get("step", 0) > step:
        dropped += 1
      else:
        kept.append(line if line.endswith("\n") else line + "\n")
  if dropped:
    files.write_text(path, "".join(kept))
    logging.info("%s: dropped %d records logged after step %d (resuming there)", path,
                 dropped, step)
  return dropped


@contextlib.contextmanager
def locked_by_main(workdir: str):
  """The work dir's lock (`locked`), held by process 0 for the block;
  every process enters the block once process 0 holds it, or raises its `WorkdirBusy`."""
  with contextlib.ExitStack() as stack:
    with processes.main_first(f"locking the work dir {workdir}"):
      if processes.is_main():
        stack.enter_context(locked(workdir))
    yield
