"""Data parallelism with JAX's own SPMD: a mesh over every device of every process.

The global batch is split over the `data` axis; parameters, BatchNorm statistics and
optimizer state are replicated. XLA inserts the all-reduces, so the gradients and the
BatchNorm batch statistics are those of the global batch, as on one device. Many runs
(seeds, a sweep) may also split their run axis over a `runs` axis: a 2-D mesh (runs x
data), each group of devices training its share of the runs, each run's batch split
over its group.
"""

import contextlib
import os
import re
import socket
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
RUNS_AXIS = "runs"


def make_mesh(devices=None, run_groups: int = 1) -> Mesh:
  """1-D over `data`; with `run_groups` > 1, 2-D: (runs, data) of run_groups x the rest."""
  devices = jax.devices() if devices is None else devices
  # Auto axes: XLA propagates the shardings we set on the batch (classic SPMD).
  if run_groups == 1:
    return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,))
  return jax.make_mesh((run_groups, len(devices) // run_groups), (RUNS_AXIS, DATA_AXIS),
                       devices=devices, axis_types=(jax.sharding.AxisType.Auto,) * 2)


def runs_axis(mesh: Mesh) -> str | None:
  return RUNS_AXIS if RUNS_AXIS in mesh.axis_names else None


def data_devices(mesh: Mesh) -> int:
  """How many devices split one run's batch."""
  return mesh.shape[DATA_AXIS]


def run_sharding(mesh: Mesh) -> NamedSharding:
  """Arrays with a leading run axis: split over the `runs` axis if the mesh has one."""
  return NamedSharding(mesh, P(RUNS_AXIS)) if runs_axis(mesh) else replicated(mesh)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def replicate(tree, mesh: Mesh):
  """Host values, identical in every process (same seed, same files), on every device of
  the mesh. `jax.device_put` cannot do this with more than one process: it only places
  data on devices this process can address."""
  return place(tree, replicated(mesh))


def place(tree, sharding: NamedSharding):
  """Host values, identical in every process, placed by `sharding` (each device its part)."""
  def put(x):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    # On the host, in JAX's dtype (int32 for Python ints without x64): `jnp.asarray` would
    # make a program per shape to copy the array to a device and back.
    x = np.asarray(x)
    x = x.astype(jax.dtypes.canonicalize_dtype(x.dtype), copy=False)
    # Every process holds the whole array: each takes the parts its devices hold.
    return jax.make_array_from_process_local_data(sharding, x, x.shape)
  return jax.tree.map(put, tree)


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the devices; one shard per device."""
  return NamedSharding(mesh, P(DATA_AXIS))


def shard_batch(batch, mesh: Mesh | None):
  """Inside jit: each device computes on its slice of the batch only (no mesh: as is)."""
  if mesh is None:
    return batch
  return jax.lax.with_sharding_constraint(batch, batch_sharded(mesh))


def check_batch_size(batch_size: int, mesh: Mesh) -> str | None:
  """A problem line when the devices cannot split the batch evenly, else None."""
  n = data_devices(mesh)
  if batch_size % n:
    return (f"--batch-size {batch_size} does not split over {n} devices; use a "
            f"multiple of {n}, e.g. {batch_size - batch_size % n or n}")
  return None


def check_run_groups(run_groups: int, num_runs: int, num_devices: int) -> str | None:
  """A problem line when the runs or the devices do not split into `run_groups`, else None."""
  if run_groups == 1:
    return None
  if num_runs % run_groups or num_devices % run_groups:
    return (f"--run-groups {run_groups}: must divide the {num_runs} runs (settings x seeds) and "
            f"the {num_devices} devices; use a common divisor, or 1")
  return None


def initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                           process_id: int | None, heartbeat_timeout_s: int | None = None,
                           quiet: bool = True) -> list[str]:
  """Joins a multi-host run (jax.distributed); with no arguments reads the usual
  environment (e.g. JAX_COORDINATOR_ADDRESS, or a TPU / SLURM cluster's own).

  `heartbeat_timeout_s`: a process whose heartbeats stop for this long is declared dead
  and the others are stopped (JAX's default: 100 s). Returns every process's host address
  by process index, gathered now while all are there: what names a lost one later.
  `quiet`: without gloo's line on standard output as the processes connect.
  """
  timeouts = {} if heartbeat_timeout_s is None else {"heartbeat_timeout_seconds": heartbeat_timeout_s}
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id, **timeouts)
  return process_addresses(quiet)


_ADDRESS_BYTES = 64


def process_addresses(quiet: bool = True) -> list[str]:
  """Each process's address as its peers reach it (its host name resolved, which is how
  gloo's CPU collectives find a peer), by process index. This is the run's first
  collective, where gloo connects and says so on standard output, unless `quiet`."""
  try:
    address = socket.gethostbyname(socket.gethostname())
  except OSError:
    address = socket.gethostname()
  local = np.frombuffer(address.encode()[:_ADDRESS_BYTES].ljust(_ADDRESS_BYTES, b"\0"), np.uint8)
  with _stdout_to_devnull() if quiet else contextlib.nullcontext():
    gathered = multihost_utils.process_allgather(local)  # (processes, _ADDRESS_BYTES)
  return [bytes(row).rstrip(b"\0").decode() for row in np.asarray(gathered)]


@contextlib.contextmanager
def _stdout_to_devnull():
  """Gloo's C++ prints "[Gloo] Rank R is connected to N peer ranks..." on the process's
  standard output as the processes connect; that output is the run's own, so within this
  context file descriptor 1 goes to /dev/null (Python's own output is flushed first)."""
  sys.stdout.flush()
  saved = os.dup(1)
  try:
    with open(os.devnull, "w") as null:
      os.dup2(null.fileno(), 1)
    yield
  finally:
    os.dup2(saved, 1)
    os.close(saved)


def lost_processes(error: BaseException, addresses: list[str]) -> list[int]:
  """The other processes that a failed collective's error names by address (gloo says
  "Read error [ADDRESS]:PORT"); empty when it names none."""
  named = set(re.findall(r"\[([^\]\s]+)\]:\d+", str(error)))
  return [i for i, address in enumerate(addresses)
          if address in named and i != jax.process_index()]
