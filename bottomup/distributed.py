"""Multi-host start-up: `jax.distributed.initialize` when asked (DESIGN §5).

Every process of a multi-host job runs the same command; JAX's own
multi-controller runtime then gives each one its local devices, and the
global mesh spans them all. Asked by `--multiprocess` or by the environment:

  JAX_COORDINATOR_ADDRESS   host:port of process 0's coordinator
  BOTTOMUP_NUM_PROCESSES    number of processes
  BOTTOMUP_PROCESS_ID       this process, 0 ... N-1

(set by `launch/multiprocess_cpu.sh`). Without them, JAX detects the cluster
itself: SLURM (`srun`), Open MPI, Cloud TPU pod slices, GKE.
"""

from __future__ import annotations

import os

import jax

ENV_NUM_PROCESSES = "BOTTOMUP_NUM_PROCESSES"
ENV_PROCESS_ID = "BOTTOMUP_PROCESS_ID"
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"


def requested(flag: bool) -> bool:
  """Whether this run is one process of a multi-host job."""
  return flag or ENV_NUM_PROCESSES in os.environ


def _int_env(name: str) -> int | None:
  value = os.environ.get(name)
  if value is None:
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"${name} must be an integer, got {value!r}") from None


def initialize(flag: bool = False) -> None:
  """Joins the multi-host job when `requested`; a no-op otherwise.

  Must run before anything touches a JAX device.
  """
  if not requested(flag):
    return
  num = _int_env(ENV_NUM_PROCESSES)
  pid = _int_env(ENV_PROCESS_ID)
  if (num is None) != (pid is None):
    raise ValueError(f"set both ${ENV_NUM_PROCESSES} and ${ENV_PROCESS_ID}")
  if num is not None and not 0 <= pid < num:
    raise ValueError(f"${ENV_PROCESS_ID}={pid} is not in [0, {num})")
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms.split(",")[0] == "cpu":
    # Cross-process collectives on CPU go through gloo (TCP).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address=os.environ.get(ENV_COORDINATOR),
    num_processes=num,
    process_id=pid,
  )
