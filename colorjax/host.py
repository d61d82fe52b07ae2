"""The host a CPU run computes on: what its CPU is, and process-wide malloc settings.

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
import logging
import os
import platform

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
