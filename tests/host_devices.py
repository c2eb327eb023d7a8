"""The environment of a test's child process on N host CPU devices."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_env(devices: int, **extra) -> dict:
  """This process's environment for a child on `devices` host CPU devices (on a GPU machine
  too): the tests' XLA flags kept (tests/conftest.py), the repository importable."""
  flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "",
                 os.environ.get("XLA_FLAGS", ""))
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}".strip(),
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.update(extra)
  return env
