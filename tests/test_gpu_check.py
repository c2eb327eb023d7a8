"""scripts/gpu_check.sh in its quick mode, on a copy of the checkout with a folder of wheels:
the wheels are installed aside and importable, every step writes its log, a failing step
does not stop the others, and the summary names each step's status."""

import os
import shutil
import subprocess
import sys
import zipfile

from absl.testing import absltest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "gpu_check.sh")


def write_wheel(folder: str) -> str:
  """A wheel of one pure-Python module, `gpu_check_probe`."""
  info = "gpu_check_probe-0.1.dist-info"
  files = {"gpu_check_probe/__init__.py": "VALUE = 7\n",
           f"{info}/METADATA": "Metadata-Version: 2.1\nName: gpu-check-probe\nVersion: 0.1\n",
           f"{info}/WHEEL": ("Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                             "Tag: py3-none-any\n")}
  files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
  path = os.path.join(folder, "gpu_check_probe-0.1-py3-none-any.whl")
  with zipfile.ZipFile(path, "w") as whl:
    for name, text in files.items():
      whl.writestr(name, text)
  return path


class GpuCheckTest(absltest.TestCase):

  def test_script_parses(self):
    subprocess.run(["bash", "-n", SCRIPT], check=True)

  def test_quick_mode_installs_wheels_logs_every_step_and_survives_a_failure(self):
    root = self.create_tempdir().full_path
    repo = os.path.join(root, "checkout")      # the script's checkout: a copy of the script,
    os.makedirs(os.path.join(repo, "scripts"))  # the package and tests linked, and .whl/
    shutil.copy(SCRIPT, os.path.join(repo, "scripts"))
    for name in ("line_jax", "configs", "tests"):
      os.symlink(os.path.join(REPO, name), os.path.join(repo, name))
    os.makedirs(os.path.join(repo, ".whl"))
    write_wheel(os.path.join(repo, ".whl"))
    site, logdir = os.path.join(root, "site"), os.path.join(root, "logs")
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_QUICK="1", GPU_CHECK_SITE=site,
               GPU_CHECK_ONLY="tests,search_f32", GPU_CHECK_TIMEOUT="120",
               GPU_CHECK_TESTS="tests/no_such_test_file.py", JAX_PLATFORMS="cpu")
    proc = subprocess.run(["bash", os.path.join(repo, "scripts", "gpu_check.sh"), logdir],
                          env=env, capture_output=True, text=True, timeout=300)
    self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)   # the tests step failed
    self.assertEqual(sorted(os.listdir(logdir)),
                     ["01_wheels.log", "02_environment.log", "03_tests.log",
                      "04_search_f32.log", "summary.txt"])
    self.assertTrue(os.path.exists(os.path.join(site, "gpu_check_probe", "__init__.py")))
    with open(os.path.join(logdir, "02_environment.log")) as f:
      environment = f.read()
    self.assertIn(f"PYTHONPATH={repo}:{site}", environment)
    self.assertIn(f"line_jax from {repo}/line_jax/__init__.py", environment)
    with open(os.path.join(logdir, "summary.txt")) as f:
      summary = f.read()
    self.assertEqual(summary, proc.stdout)
    lines = summary.splitlines()
    self.assertRegex(lines[0], r"^wheels +ok ")
    self.assertRegex(lines[1], r"^environment +ok ")
    self.assertRegex(lines[2], r"^tests +FAILED \(exit 4\) ")
    self.assertRegex(lines[3], r"^search_f32 +ok ")
    self.assertRegex(lines[4], r"^    search: line_jax .* queries/s")
    self.assertEqual(lines[-1], f"3 of 4 steps ok; logs in {logdir}")


if __name__ == "__main__":
  absltest.main()
