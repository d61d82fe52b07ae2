"""The machine a run computes on: what its CPU is, the software and devices it runs with
(`environment`, which training and the benchmarks record), and process-wide malloc settings.

XLA:CPU allocates a step's temporary buffers (patch matrices, activations, gradients) afresh
on every call. glibc serves big allocations with `mmap` and gives them back to the kernel on
`free`, so every step page-faults its whole working set in again: a fresh 150 MB patch matrix
was written at ~1.3 GB/s, the same copy into reused memory at ~5 GB/s. Keeping freed memory in
the heap lets the next step reuse it (pix2pix 256 px step on the AMX VM: 4.99 -> 4.63 s;
docs/performance.md). PyTorch's CPU guides get the same from jemalloc or tcmalloc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.metadata
import logging
import os
import platform
import subprocess
from typing import Any

import jax


@functools.cache
def _cpuinfo() -> dict[str, str]:
  """The first processor's fields of Linux's /proc/cpuinfo (empty elsewhere)."""
  try:
    with open("/proc/cpuinfo") as f:
      lines = f.read().split("\n\n", 1)[0].splitlines()
  except OSError:
    return {}
  return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


def cpu_model() -> str:
  """The CPU's name: runs on different days can land on different CPUs."""
  return _cpuinfo().get("model name") or platform.processor()


def cpu_has_amx_bf16() -> bool:
  """Whether this CPU multiplies bfloat16 matrices in AMX tiles (Linux's `amx_bf16` flag)."""
  return "amx_bf16" in _cpuinfo().get("flags", "").split()


# The distributions whose versions change what a run computes; `_PLUGINS` only where installed.
_VERSIONS = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain")
_PLUGINS = ("jax-cuda12-plugin", "jax-cuda13-plugin", "libtpu")
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # colorjax's parent folder
GIT_TIMEOUT_S = 2.0


def _version(distribution: str) -> str | None:
  try:
    return importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    return None


def _git(*args: str) -> str | None:
  """`git args` in colorjax's checkout, or None where it fails or takes too long."""
  try:
    out = subprocess.run(["git", "-C", _CHECKOUT, *args], capture_output=True, text=True,
                         timeout=GIT_TIMEOUT_S, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout if out.returncode == 0 else None


def git_commit() -> dict[str, Any]:
  """{"colorjax_commit", "colorjax_dirty"} when colorjax runs from a git checkout (its parent
  folder holds `.git`), else {}. Dirty: a tracked file differs from the commit (untracked files,
  such as runs/, are not counted). An installed colorjax, no git, or a git that refuses the
  folder (another owner's) or takes over GIT_TIMEOUT_S each: {}, silently."""
  if not os.path.exists(os.path.join(_CHECKOUT, ".git")):
    return {}
  commit = _git("rev-parse", "HEAD")
  status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
  if status is None:
    return {}
  return {"colorjax_commit": commit.strip(), "colorjax_dirty": bool(status.strip())}


def environment(dtype: str | None = None) -> dict[str, Any]:
  """What a result was computed with, flat: colorjax's version (and commit, `git_commit`), the
  versions of Python and of `_VERSIONS` (`_PLUGINS` where installed), the backend, devices and
  processes, this host and its CPU, and the compute `dtype` when given (the one config.dtype
  resolved to, `models.compute_dtype`). Of the calling process: a pod's other hosts are not
  asked. Fast (one file read, two git calls at most), so a run gathers it when it starts."""
  device = jax.devices()[0]
  return {"colorjax": _version("colorjax") or "unknown", **git_commit(),
          "python": platform.python_version(),
          **{name.replace("-", "_"): _version(name) for name in _VERSIONS},
          **{name.replace("-", "_"): v for name in _PLUGINS if (v := _version(name))},
          "backend": jax.default_backend(), "device_kind": device.device_kind,
          "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
          "process_count": jax.process_count(), **({"dtype": dtype} if dtype else {}),
          "host": platform.node(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
          "cpu_amx_bf16": cpu_has_amx_bf16()}


# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
OPT_OUT = "COLORJAX_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
  """On the CPU backend with glibc, serves big allocations from the heap and keeps freed memory
  there for the next step; the process's resident memory stays at its peak. True if applied.

  Called by the trainer and the benchmarks before their first computation; `COLORJAX_KEEP_FREED_MEMORY=0`
  (or false, no, off) turns it off. The env variables `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...` do the same
  for any process.
  """
  if os.environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off") or jax.default_backend() != "cpu":
    return False
  try:
    mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
  except (OSError, AttributeError, TypeError):  # no glibc (musl, macOS): its malloc is left alone
    return False
  applied = all(mallopt(param, value) == 1 for param, value in (
      (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_ARENA_MAX, 1)))
  logging.info("malloc keeps freed memory for the next step: %s", "yes" if applied else "refused")
  return applied


def release_freed_memory() -> bool:
  """Gives the memory glibc's heaps hold free back to the system (`malloc_trim`): a long-lived
  process that works on a new thread each time (serve) otherwise stays at the peak of every
  thread's heap. True if glibc released some; False for none, or another malloc."""
  try:
    return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0) == 1
  except (OSError, AttributeError, TypeError):  # no glibc (musl, macOS)
    return False
