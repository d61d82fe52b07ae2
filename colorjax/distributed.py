"""Joins a multi-host run (TPU pod slice, GPU or CPU cluster) before JAX touches a device.

Every process calls `initialize()` first; after it, `jax.devices()` lists the devices of all
processes and the trainer's data-parallel mesh spans them. How the processes find each other:

- `COLORJAX_COORDINATOR=host:port`, `COLORJAX_NUM_PROCESSES=N`, `COLORJAX_PROCESS_ID=i`: any
  machines (CPU or GPU clusters, or N processes on one host); process 0 runs on `host`.
- `COLORJAX_DISTRIBUTED=1`: JAX detects the cluster itself (Cloud TPU VM pod slices, which
  `launch/tpu_vm.sh` starts with it set; also SLURM, Open MPI, GKE).
- SLURM with more than one task, Open MPI with more than one rank, GKE TPU workers: detected.

With none of these, this is a single host and nothing happens.
"""

from __future__ import annotations

import logging
import os

import jax

_MULTI_PROCESS_COUNTS = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def _cluster_detected() -> bool:
  """A multi-process job that `jax.distributed.initialize()` can configure by itself."""
  if os.environ.get("COLORJAX_DISTRIBUTED", "").lower() in ("1", "true", "yes"):
    return True
  if any(int(os.environ.get(v, "1")) > 1 for v in _MULTI_PROCESS_COUNTS):
    return True
  workers = os.environ.get("TPU_PROCESS_ADDRESSES") or os.environ.get("TPU_WORKER_HOSTNAMES") or ""
  return "," in workers


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
    num_processes, process_id = int(env["COLORJAX_NUM_PROCESSES"]), int(env["COLORJAX_PROCESS_ID"])
    if not 0 <= process_id < num_processes:
      raise ValueError(f"COLORJAX_PROCESS_ID={process_id} must be in [0, {num_processes})")
    if num_processes == 1:
      return False
    jax.distributed.initialize(coordinator_address=env["COLORJAX_COORDINATOR"],
                               num_processes=num_processes, process_id=process_id)
  elif _cluster_detected():
    jax.distributed.initialize()
  else:
    return False
  logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True
