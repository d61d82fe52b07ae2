"""`host.keep_freed_memory`: a freed big buffer stays resident for reuse (glibc only)."""

import os
import platform
import subprocess
import sys

import pytest

# Resident memory before, with and after a 256 MB buffer (numpy allocates through malloc).
_PROBE = """
import numpy as np
from colorjax import host
def rss():
  return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024
print(host.keep_freed_memory())
base = rss(); a = np.ones(2 ** 25); held = rss(); del a
print(base, held, rss())
"""


def _probe(keep: str) -> tuple[str, list[int]]:
  out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu", "COLORJAX_KEEP_FREED_MEMORY": keep}).stdout.split("\n")
  return out[0], [int(v) for v in out[1].split()]


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc's mallopt")
def test_freed_memory_is_kept_only_when_asked():
  applied, (base, held, after) = _probe("1")
  assert applied == "True" and held - base >= 250
  assert after - base >= 250  # still resident: the next step reuses it without page faults
  applied, (base, held, after) = _probe("0")
  assert applied == "False" and held - base >= 250
  assert after - base < 20  # glibc's default: given back to the kernel on free
  assert _probe("False")[0] == "False"  # as a user may spell it
