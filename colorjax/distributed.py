"""Joins a multi-host run (TPU pod slice, GPU or CPU cluster) before JAX touches a device.

Every process calls `initialize()` first; after it, `jax.devices()` lists the devices of all
processes and the trainer's data-parallel mesh spans them. How the processes find each other:

- `COLORJAX_COORDINATOR=host:port`, `COLORJAX_NUM_PROCESSES=N`, `COLORJAX_PROCESS_ID=i`: any
  machines (CPU or GPU clusters, or N processes on one host); process 0 runs on `host`.
- `COLORJAX_DISTRIBUTED=1`: JAX detects the cluster itself (Cloud TPU VM pod slices, which
  `launch/tpu_vm.sh` starts with it set; also SLURM, Open MPI, GKE).
- SLURM with more than one task, Open MPI with more than one rank, GKE TPU workers: detected.

With none of these, this is a single host and nothing happens.

The rest keeps the processes of a run in step. A collective that some process never joins hangs
a pod without a word, so whatever one process decides (stop, an error, which checkpoint) is
agreed by all, and what each reads for itself (its photo lists, the workdir) is compared first.
On one process each of these returns at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

_MULTI_PROCESS_COUNTS = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def _int_env(name: str, default: str = "1") -> int:
  value = os.environ.get(name, default)
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{name}={value!r} is not a whole number") from None


def _cluster_detected() -> str:
  """The setting that makes this a multi-process job `jax.distributed.initialize()` can configure
  by itself ("" if none)."""
  if os.environ.get("COLORJAX_DISTRIBUTED", "").lower() in ("1", "true", "yes"):
    return f"COLORJAX_DISTRIBUTED={os.environ['COLORJAX_DISTRIBUTED']}"
  for name in _MULTI_PROCESS_COUNTS:
    if _int_env(name) > 1:
      return f"{name}={os.environ[name]}"
  for name in ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES"):
    if "," in os.environ.get(name, ""):
      return f"{name} (several hosts)"
  return ""


def initialize() -> bool:
  """Calls `jax.distributed.initialize()` when this process is one of several; True if it did.

  Must run before the first JAX computation. Safe to call more than once.
  """
  if jax.distributed.is_initialized():
    return True
  env = os.environ
  if "COLORJAX_COORDINATOR" in env:
    missing = [v for v in ("COLORJAX_NUM_PROCESSES", "COLORJAX_PROCESS_ID") if v not in env]
    if missing:
      raise ValueError(f"COLORJAX_COORDINATOR is set, so {' and '.join(missing)} must be too")
    num_processes, process_id = _int_env("COLORJAX_NUM_PROCESSES"), _int_env("COLORJAX_PROCESS_ID")
    if num_processes < 1:
      raise ValueError(f"COLORJAX_NUM_PROCESSES={num_processes} must be at least 1")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"COLORJAX_PROCESS_ID={process_id} must be in [0, {num_processes})")
    if num_processes == 1:
      return False
    jax.distributed.initialize(coordinator_address=env["COLORJAX_COORDINATOR"],
                               num_processes=num_processes, process_id=process_id)
  elif cluster := _cluster_detected():
    try:
      jax.distributed.initialize()
    except ValueError as e:  # e.g. "coordinator_address should be defined.": no cluster JAX knows
      raise ValueError(f"{cluster} says this is one of several processes, but JAX found no cluster to join "
                       f"({e}): unset it on one machine, or set COLORJAX_COORDINATOR, COLORJAX_NUM_PROCESSES "
                       "and COLORJAX_PROCESS_ID") from None
  else:
    return False
  logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def agree(*flags: bool) -> tuple[bool, ...]:
  """Each flag True on every process if it is True on any (processes must stop at the same step)."""
  if jax.process_count() == 1:
    return flags
  gathered = multihost_utils.process_allgather(np.array(flags))
  return tuple(bool(x) for x in np.any(gathered.reshape(-1, len(flags)), axis=0))


def agreed(work: Callable[[], Any]) -> Any:
  """`work()`, or its error raised on every process: a process that stops alone leaves the
  others waiting in the next collective (a silent hang on a pod)."""
  try:
    result, error = work(), None
  except (ValueError, FileNotFoundError) as e:
    result, error = None, e
  failed, = agree(error is not None)
  if error is not None:
    raise error
  if failed:
    raise ValueError("another process stopped with an error (its log says which)")
  return result


def check_same_files(what: str, files: Sequence[Any]) -> None:
  """Each process lists and reads its photos itself. Lists that differ (a read error on one host's
  mount) would give hosts overlapping shares or different numbers of eval batches, and a
  collective some process never joins hangs the whole pod without a word. Compared: the count,
  and the paths of a folder source (shard records and TFDS examples by their count)."""
  if jax.process_count() == 1:
    return
  names = "\n".join(map(str, files)) if isinstance(files, list) else ""
  digest = int.from_bytes(hashlib.sha256(names.encode()).digest()[:4], "little") & 0x7FFFFFFF
  seen = multihost_utils.process_allgather(np.array([len(files), digest], np.int32)).reshape(-1, 2)
  if (seen != seen[0]).any():
    counts = ", ".join(f"process {i}: {n}" for i, n in enumerate(seen[:, 0]))
    raise ValueError(f"the processes see different {what} ({counts}): every host must read the same "
                     "files (the same paths, mounted on every host)")


def check_shared_folder(workdir: str) -> None:
  """Every process saves checkpoints into the one workdir together. A workdir on each host's own
  disk would hang the first save (orbax waits for steps the others wrote elsewhere), so each
  process must find a file process 0 just wrote there."""
  if jax.process_count() == 1:
    return
  token = int(multihost_utils.broadcast_one_to_all(np.array(secrets.randbits(31), np.int32)))
  path = os.path.join(workdir, f".colorjax-shared-{token}")
  if jax.process_index() == 0:
    with open(path, "w") as f:
      f.write("written by process 0 to check that every process sees this workdir\n")
  multihost_utils.sync_global_devices("colorjax: workdir check written")
  missing = multihost_utils.process_allgather(np.array(not os.path.exists(path))).reshape(-1)
  multihost_utils.sync_global_devices("colorjax: workdir check read")
  if jax.process_index() == 0:
    os.remove(path)
  if missing.any():
    raise ValueError(f"workdir {workdir} is not shared by all {jax.process_count()} processes (process 0 "
                     f"wrote a file there that process {', '.join(map(str, np.flatnonzero(missing)))} cannot "
                     "see): give every host the same folder, e.g. a gs:// bucket mounted with gcsfuse "
                     "(launch/tpu_vm.sh does that)")


def from_process_0(value: int | None) -> int | None:
  """Process 0's `value` (a non-negative int32 or None) on every process."""
  if jax.process_count() == 1:
    return value
  value = int(multihost_utils.broadcast_one_to_all(np.array(-1 if value is None else value, np.int32)))
  return None if value < 0 else value
