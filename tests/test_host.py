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


def test_environment_names_the_versions_devices_and_commit_a_result_was_computed_with():
  import importlib.metadata
  import jax
  from colorjax import host
  env = host.environment("bfloat16")
  assert env["jax"] == jax.__version__ and env["jaxlib"] == importlib.metadata.version("jaxlib")
  for name in ("flax", "optax", "orbax-checkpoint", "grain", "colorjax"):
    assert env[name.replace("-", "_")] == importlib.metadata.version(name), name
  assert env["python"] == platform.python_version() and env["dtype"] == "bfloat16"
  assert (env["backend"], env["device_count"], env["process_count"]) == (
      jax.default_backend(), jax.device_count(), jax.process_count())
  assert env["host"] == platform.node() and env["cpu_model"] == host.cpu_model()
  assert "dtype" not in host.environment()
  checkout = os.path.dirname(os.path.dirname(os.path.abspath(host.__file__)))
  head = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True)
  if os.path.exists(os.path.join(checkout, ".git")) and head.returncode == 0:
    assert env["colorjax_commit"] == head.stdout.strip() and isinstance(env["colorjax_dirty"], bool)


def test_a_missing_slow_or_failing_git_leaves_the_commit_out(tmp_path, monkeypatch):
  from colorjax import host
  monkeypatch.setattr(host, "_CHECKOUT", str(tmp_path))  # an installed colorjax: no .git beside it
  assert host.git_commit() == {} and "colorjax_commit" not in host.environment()
  (tmp_path / ".git").mkdir()  # not a repository: git fails
  assert host.git_commit() == {}
  monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
  assert host.git_commit() == {}

  def hangs(*args, **kwargs):
    raise subprocess.TimeoutExpired(args[0], kwargs["timeout"])

  monkeypatch.setattr(subprocess, "run", hangs)
  assert host.git_commit() == {}


# Resident memory after threads freed what they allocated, then after release_freed_memory.
_THREADS_PROBE = """
import threading, numpy as np
from colorjax import host
def rss():
  return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024
pins = []
def work():  # as serve's request threads: each thread's glibc heap keeps what it freed
  for _ in range(2):
    arrays = [np.ones(2 ** 17) for _ in range(256)]  # 256 MB in 1 MB pieces
    pins.append(np.ones(16))  # allocated after them, so the heap's top stays in use
    del arrays
base = rss()
for _ in range(3):
  thread = threading.Thread(target=work)
  thread.start()
  thread.join()
kept = rss()
print(host.release_freed_memory(), base, kept, rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc's malloc_trim")
def test_memory_threads_freed_goes_back_to_the_system_when_released():
  out = subprocess.run([sys.executable, "-c", _THREADS_PROBE], capture_output=True, text=True, check=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}).stdout.split()
  released, (base, kept, after) = out[0], [int(v) for v in out[1:]]
  assert kept - base >= 100  # freed, yet resident
  assert released == "True" and after - base < 20
