"""Training in two processes (`jax.distributed` on this machine's CPU, collectives over
gloo): `python -m line_jax.train --distributed` trains the tiny config to the weights one
process with two devices trains to, and `launch/slurm_multihost.sh` starts it through jax's
SLURM detection."""

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time

from absl.testing import absltest
import jax
import numpy as np

from configs import test as test_config
from host_devices import REPO, cpu_env
from line_jax.api import line_model as api
from line_jax.training import state as state_lib
from line_jax.training import workdir as workdir_lib
from line_jax.data import prepare_dataset

TIMEOUT_S = 240
# Stage 1 of one epoch, recovery, stage 2: every phase that crosses processes, in seconds.
SHORT = ["--config.train.stage1_epochs=1", "--config.train.stage2_epochs=1"]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(args, env, log_path):
  with open(log_path, "w") as log:
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def finish(procs) -> list:
  """Waits for every process (killing those left at the deadline); their return codes."""
  deadline = time.time() + TIMEOUT_S
  codes = []
  for p in procs:
    try:
      codes.append(p.wait(timeout=max(1.0, deadline - time.time())))
    except subprocess.TimeoutExpired:
      p.kill()
      codes.append(p.wait())
  return codes


def read(path: str) -> str:
  with open(path) as f:
    return f.read()


def train_args(workdir, data_dir, *extra):
  return [sys.executable, "-m", "line_jax.train", "--config=configs/test.py",
          f"--workdir={workdir}", f"--config.data.dir={data_dir}", *SHORT, *extra]


def jax_leaves(tree) -> list:
  return [(jax.tree_util.keystr(k), np.asarray(v))
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]]


def final_state(workdir: str):
  config = api.load_config(workdir)
  dataset = prepare_dataset(config)
  abstract = state_lib.abstract_state(config, len(dataset.relation_types), 32, 24,
                                      dataset.num_pairs)
  return api.restore_state(workdir, config, abstract)


class TwoProcessTest(absltest.TestCase):

  def test_two_processes_train_as_one_process_with_two_devices(self):
    root = self.create_tempdir().full_path
    one, two = os.path.join(root, "one"), os.path.join(root, "two")
    port = free_port()
    # One process with two devices; alongside, two processes with one device each, on a
    # data folder of their own that process 0 builds while process 1 waits.
    procs = [start(train_args(one, os.path.join(root, "data1")), cpu_env(2),
                   os.path.join(root, "one.log"))]
    for i in range(2):
      procs.append(start(
          train_args(two, os.path.join(root, "data2"), "--config.train.evaluate=True",
                     "--config.eval.plots=False",
                     "--distributed", f"--coordinator_address=127.0.0.1:{port}",
                     "--num_processes=2", f"--process_id={i}"),
          cpu_env(1), os.path.join(root, f"two{i}.log")))
    codes = finish(procs)
    logs = [read(os.path.join(root, n)) for n in ("one.log", "two0.log", "two1.log")]
    for name, code, log in zip(("one process", "process 0", "process 1"), codes, logs):
      self.assertEqual(code, 0, f"{name} failed:\n{log[-4000:]}")
    self.assertIn("process 1 of 2; 1 local devices of 2", logs[2])

    # The same steps: every logged loss, the recovered lists and the final weights.
    records = [[json.loads(line) for line in read(os.path.join(w, "train_log.jsonl"))
                .splitlines()] for w in (one, two)]
    self.assertEqual([r["step"] for r in records[0]], [r["step"] for r in records[1]])
    for key in ("loss", "align", "relational", "negation"):
      np.testing.assert_allclose([r[key] for r in records[1]], [r[key] for r in records[0]],
                                 rtol=1e-6, err_msg=key)
    (state1, progress1), (state2, progress2) = final_state(one), final_state(two)
    self.assertEqual(progress1["step"], progress2["step"])
    self.assertEqual(progress2["stage"], state_lib.STAGE_FINISHED)
    np.testing.assert_array_equal(state2["added"], state1["added"])
    self.assertGreater((state2["added"] >= 0).sum(), 0)     # recovery added concepts
    flat1 = jax_leaves(state1["params"])
    flat2 = jax_leaves(state2["params"])
    self.assertEqual([k for k, _ in flat1], [k for k, _ in flat2])
    for (key, a), (_, b) in zip(flat1, flat2):
      np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7, err_msg=key)

    # Process 0 alone wrote the records and evaluated; process 1 waited for it.
    self.assertTrue(os.path.exists(os.path.join(two, "report.md")))
    self.assertIn("evaluation written to", logs[1])
    self.assertNotIn("evaluation written to", logs[2])
    self.assertIn("built the synthetic dataset", logs[1])
    self.assertNotIn("built the synthetic dataset", logs[2])

  def test_slurm_script_stops_every_process_on_a_refused_workdir(self):
    """launch/slurm_multihost.sh under a stand-in `srun` (two tasks on this machine, SLURM's
    variables set as it sets them): jax detects the coordinator and the ranks, each process
    is given every GPU of its node, and process 0's refusal of the work dir (another run's
    settings) stops process 1 too, with process 0's error."""
    root = self.create_tempdir().full_path
    workdir, data = os.path.join(root, "run"), os.path.join(root, "data")
    config = test_config.get_config()
    config.data.dir = data
    config.train.batch_size = 64      # the run already in the work dir: other settings
    os.makedirs(workdir)
    workdir_lib.check_and_record(workdir, config, prepare_dataset(config).root)
    fingerprint = read(os.path.join(workdir, workdir_lib.FINGERPRINT_FILE))

    bin_dir = os.path.join(root, "bin")
    os.makedirs(bin_dir)
    with open(os.path.join(bin_dir, "python"), "w") as f:   # this interpreter, as `python`
      f.write(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    srun = os.path.join(bin_dir, "srun")
    with open(srun, "w") as f:
      f.write(textwrap.dedent("""\
        #!/usr/bin/env bash
        # srun stand-in: one step of --ntasks tasks (default SLURM_NTASKS) on this machine.
        ntasks=$SLURM_NTASKS
        while [[ $1 == --* ]]; do [[ $1 == --ntasks=* ]] && ntasks=${1#--ntasks=}; shift; done
        echo "step of $ntasks: JAX_LOCAL_DEVICE_IDS=${JAX_LOCAL_DEVICE_IDS:-} $*" >> "$STEPS"
        pids=()
        for ((i = 0; i < ntasks; i++)); do
          SLURM_NTASKS=$ntasks SLURM_PROCID=$i SLURM_LOCALID=$i "$@" > "$TASKS.$i" 2>&1 &
          pids+=($!)
        done
        rc=0
        for p in "${pids[@]}"; do wait "$p" || rc=$?; done
        exit $rc
        """))
    for name in ("python", "srun"):
      path = os.path.join(bin_dir, name)
      os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    steps, tasks = os.path.join(root, "steps.txt"), os.path.join(root, "task")
    env = cpu_env(1, PATH=bin_dir + os.pathsep + os.environ["PATH"], STEPS=steps,
                  TASKS=tasks, SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="127.0.0.1",
                  SLURM_NTASKS="2", SLURM_PROCID="0", SLURM_LOCALID="0",
                  SLURM_GPUS_ON_NODE="2", SLURM_SUBMIT_DIR=REPO,
                  JAX_COORDINATOR_PORT=str(free_port()))
    proc = start(["bash", os.path.join(REPO, "launch", "slurm_multihost.sh"),
                  "configs/test.py", workdir, f"--config.data.dir={data}"], env,
                 os.path.join(root, "script.log"))
    code, = finish([proc])
    script_log = read(os.path.join(root, "script.log"))
    lines = read(steps).splitlines()
    self.assertLen(lines, 2, script_log + read(f"{tasks}.0")[-3000:])
    self.assertIn("step of 1:", lines[0])
    self.assertIn("line_jax.export", lines[0])
    self.assertIn("step of 2: JAX_LOCAL_DEVICE_IDS=0,1 python -m line_jax.train "
                  "--distributed", lines[1])
    self.assertNotEqual(code, 0)
    logs = [read(f"{tasks}.{i}") for i in range(2)]
    self.assertIn("process 1 of 2", logs[1], logs[1][-3000:])
    self.assertIn("WorkdirMismatch", logs[0], logs[0][-3000:])
    self.assertIn("process 0 failed while preparing the dataset and the work dir: "
                  "WorkdirMismatch", logs[1], logs[1][-3000:])
    # Nothing in the work dir was changed.
    self.assertEqual(read(os.path.join(workdir, workdir_lib.FINGERPRINT_FILE)), fingerprint)
    self.assertFalse(os.path.exists(os.path.join(workdir, "checkpoints")))


if __name__ == "__main__":
  absltest.main()
