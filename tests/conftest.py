"""pytest runs absltest cases without absl's main: mark flags parsed so that
`self.create_tempdir()` and flag defaults work; keep matplotlib off-screen; share compiled
XLA programs between tests.

Many tests compile the same programs (a train step of the tiny config, the teachers' length
buckets, the evaluation's kernels) in different test cases, xdist workers and `python -m`
subprocesses. JAX's persistent compilation cache, in a folder of the checkout that git
ignores, lets all of them compile each program once: a third less time on a cold cache,
more on a warm one. Set JAX_COMPILATION_CACHE_DIR yourself to move it, or to "" to turn it
off. The tests' programs are small and run a few times each, so compiling dominates: XLA_FLAGS
(when not set already) lowers the backend optimisation level (LLVM's passes cost more than
they save here) and compiles fusions with XLA's classic CPU emitters instead of the MLIR
fusion emitters (a tiny training run's programs compile in 2.8 s instead of 7.7 s). XLA's
own graph passes still run; results agree within every test's tolerance. The settings go
through the environment so that subprocesses inherit them.

On a GPU, float32 matrix products default to TF32 (about 3 significant digits); the tests
compare against float32/float64 references, so they run at full float32 precision
(JAX_DEFAULT_MATMUL_PRECISION; no effect on a CPU). Training keeps the default.
"""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache",
                 "jax-tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 "
                      "--xla_cpu_use_fusion_emitters=false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

from absl import flags  # noqa: E402

if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()
