"""A fused CPU kernel for G's neighbour attention (an XLA FFI custom call), built on demand.

Why: on XLA:CPU every large op of G runs on one thread over the whole [E, d] slab of
gathered neighbour rows, which is written once and read four times (logits, weighted sum,
and their two transposes). On a 2-core machine that traffic, not arithmetic, sets the step
time (`python -m line_jax.bench --what=train --dim=384`; the profile in docs/benchmarks.md).
The kernel in `gat_cpu.cc` walks each receiver's neighbour rows once per direction instead
(the second use finds them in cache) and splits the receivers over threads. Its results do
not depend on the number of threads: each receiver has one owner, and the one sum over every
edge (the gradient of the source attention vectors) adds fixed blocks of slots in a fixed
order.

`neighbour_attention` has the same contract and value as the XLA path of
`line_jax.model.network.aggregate_neighbourhoods` (tested against it, values and gradients). The
kernel is compiled with the system's C++ compiler the first time it is needed, into
`$LINE_JAX_CACHE` (default ~/.cache/line_jax)/kernels, keyed by the source, the jaxlib
version and the CPU; a cached library is loaded only if it passes `library_cache.problem`
(owned by this user, writable by no one else, matching the checksum recorded when it was
built), and is rebuilt otherwise. Where that fails (no compiler, say), `available()` is
False with the reason, and the model keeps the XLA path: config `model.cpu_kernel` = "auto"
(the default: the kernel on CPU when it builds and the table is float32 or float16), "on"
(fail if it cannot be used) or "off".
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from typing import Optional

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from line_jax.model.kernels import library_cache

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gat_cpu.cc")
_FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno",
          "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math"]
BUILD_TIMEOUT_S = 600
_LOCK = threading.Lock()
_STATE = {"loaded": False, "error": None}


def _cache_dir() -> str:
  root = os.environ.get("LINE_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache",
                                                         "line_jax"))
  return os.path.join(root, "kernels")


def _cpu_key() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      flags = next((line for line in f if line.startswith("flags")), "")
  except OSError:
    flags = ""
  return platform.machine() + flags


def _library_path() -> str:
  with open(_SOURCE, "rb") as f:
    source = f.read()
  key = hashlib.sha256(source + " ".join(_FLAGS).encode() + jaxlib.__version__.encode()
                       + _cpu_key().encode()).hexdigest()[:16]
  return os.path.join(_cache_dir(), f"gat_cpu_{key}.so")


def _build(path: str) -> None:
  compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
  if not compiler:
    raise RuntimeError("no C++ compiler (g++ / c++ / $CXX) found")
  os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
  os.close(fd)
  cmd = [compiler, *_FLAGS, f"-I{jax.ffi.include_dir()}", _SOURCE, "-o", tmp]
  try:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    if out.returncode:
      raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)   # atomic: a concurrent process sees the old or the whole new file
    library_cache.record(path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


def available() -> bool:
  """Whether the kernel is built, loaded and registered (builds it on first call)."""
  with _LOCK:
    if _STATE["loaded"] or _STATE["error"]:
      return _STATE["loaded"]
    try:
      path = _library_path()
      untrusted = library_cache.problem(path)   # never load a file we cannot vouch for
      if untrusted:
        logging.info("building the CPU attention kernel: %s (%s)", path, untrusted)
        _build(path)
        untrusted = library_cache.problem(path)
        if untrusted:
          raise RuntimeError(f"the kernel just built is not trusted: {untrusted}")
      lib = ctypes.cdll.LoadLibrary(path)
      jax.ffi.register_ffi_target("line_gat_forward", jax.ffi.pycapsule(lib.LineGatForward),
                                  platform="cpu")
      jax.ffi.register_ffi_target("line_gat_backward",
                                  jax.ffi.pycapsule(lib.LineGatBackward), platform="cpu")
      _STATE["loaded"] = True
    except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as e:
      _STATE["error"] = f"{type(e).__name__}: {e}"
      logging.warning("CPU attention kernel unavailable, using the XLA path: %s",
                      _STATE["error"])
  return _STATE["loaded"]


def unavailable_reason() -> Optional[str]:
  return _STATE["error"]


TABLE_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


def use_kernel(setting: str, table) -> bool:
  """Whether G runs on the kernel, for config `model.cpu_kernel` and a concept table (or its
  dtype): float32 or float16 rows (float16 ones are widened exactly, at half the bytes)."""
  if setting not in ("auto", "on", "off"):
    raise ValueError(f"model.cpu_kernel={setting!r}: expected 'auto', 'on' or 'off'")
  if setting == "off":
    return False
  reasons = []
  if jax.default_backend() != "cpu":
    reasons.append(f"the backend is {jax.default_backend()}")
  dtype = np.dtype(table) if isinstance(table, (np.dtype, type, str)) else table.dtype
  if dtype not in TABLE_DTYPES:
    reasons.append(f"the concept table is {dtype} (the kernel reads float32 or float16)")
  if not reasons and not available():
    reasons.append(unavailable_reason())
  if reasons and setting == "on":
    raise RuntimeError("model.cpu_kernel='on' but the CPU kernel cannot be used: "
                       + "; ".join(reasons))
  return not reasons


def _varying(x) -> frozenset:
  """The manual mesh axes x varies over (inside shard_map; empty outside)."""
  aval = jax.typeof(x)
  mat = getattr(aval, "mat", None)
  return frozenset(mat.varying if mat is not None else getattr(aval, "vma", ()))


def _vary(x, axes):
  """x marked as varying over the manual mesh axes `axes` (inside shard_map: a custom call's
  inputs must agree, and its outputs carry no such mark; a no-op at run time)."""
  missing = tuple(sorted(set(axes) - _varying(x)))
  return jax.lax.pcast(x, missing, to="varying") if missing else x


def _forward_call(table, rows, etype, emask, receivers, dst_logit, self_logit, u_src, slope,
                  threads):
  r, k = dst_logit.shape
  e, d = rows.shape[0], table.shape[1]
  f32 = jnp.float32
  outs = jax.ffi.ffi_call(
      "line_gat_forward",
      (jax.ShapeDtypeStruct((r, d), f32), jax.ShapeDtypeStruct((r, k), f32),
       jax.ShapeDtypeStruct((e,), f32), jax.ShapeDtypeStruct((e,), f32)))(
          table, rows, etype, emask, receivers, dst_logit, self_logit, u_src,
          negative_slope=np.float32(slope), threads=np.int64(threads))
  return tuple(_vary(o, _varying(rows)) for o in outs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(8, 9))
def _attention(table, rows, etype, emask, receivers, dst_logit, self_logit, u_src, slope,
               threads):
  return _forward_call(table, rows, etype, emask, receivers, dst_logit, self_logit, u_src,
                       slope, threads)[:2]


def _attention_fwd(table, rows, etype, emask, receivers, dst_logit, self_logit, u_src, slope,
                   threads):
  pooled, a_self, a_edge, pre = _forward_call(table, rows, etype, emask, receivers, dst_logit,
                                              self_logit, u_src, slope, threads)
  return (pooled, a_self), (table, rows, etype, emask, receivers, a_self, a_edge, pre)


def _attention_bwd(slope, threads, res, cotangents):
  table, rows, etype, emask, receivers, a_self, a_edge, pre = res
  u_shape = (a_self.shape[1], table.shape[1])
  g_pooled, g_a_self = cotangents
  r, k = a_self.shape
  f32 = jnp.float32
  g_dst, g_self, g_u = jax.ffi.ffi_call(
      "line_gat_backward",
      (jax.ShapeDtypeStruct((r, k), f32), jax.ShapeDtypeStruct((r, k), f32),
       jax.ShapeDtypeStruct(u_shape, f32)))(
          table, rows, etype, emask, receivers, a_self, a_edge, pre,
          *(_vary(g.astype(f32), _varying(rows)) for g in (g_pooled, g_a_self)),
          negative_slope=np.float32(slope), threads=np.int64(threads))
  axes = _varying(rows)
  return (None, None, None, None, None, _vary(g_dst, axes), _vary(g_self, axes),
          _vary(g_u, axes))


_attention.defvjp(_attention_fwd, _attention_bwd)


def neighbour_attention(table: jax.Array, rows: jax.Array, etype: jax.Array,
                        emask: jax.Array, receivers: jax.Array, dst_logit: jax.Array,
                        self_logit: jax.Array, u_src: jax.Array, negative_slope: float,
                        threads: int = 0):
  """(sum_e alpha_e x_e per receiver [R, d], alpha_self [R, K]) on the fused kernel.

  table [C, d] float32 or float16 (frozen: no gradient); rows, etype, emask, receivers [E] (the edge
  slots of `line_jax.model.graph.build_graph`: receivers sorted); dst_logit [R, K] (a^k_dst . W_c x_r),
  self_logit [R, K] (the self loop's LeakyReLU'd logit), u_src [K, d] (a^k_src mapped to the
  input space). Differentiable in dst_logit, self_logit and u_src. threads: 0 = the
  usable cores (`usable_cores`).
  """
  if not available():
    raise RuntimeError(f"the CPU attention kernel is unavailable: {unavailable_reason()}")
  args = (table, rows.astype(jnp.int32), etype.astype(jnp.int32), emask.astype(bool),
          receivers.astype(jnp.int32), dst_logit.astype(jnp.float32),
          self_logit.astype(jnp.float32), u_src.astype(jnp.float32))
  axes = set().union(*(_varying(a) for a in args))
  return _attention(*(_vary(a, axes) for a in args), float(negative_slope),
                    int(threads) if int(threads) > 0 else usable_cores())


def usable_cores() -> int:
  """The cores this process may run on (its affinity mask, which a container's CPU limit
  often sets, not the machine's count)."""
  try:
    return len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    return os.cpu_count() or 1
