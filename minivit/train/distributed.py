"""Several processes, one training run: JAX's distributed runtime for `minivit train --backend jax`.

A TPU pod slice larger than one host, or a GPU cluster, runs one process per host. JAX joins
them with `jax.distributed.initialize`: process 0 runs a coordinator that the others reach at
HOST:PORT, and from then on `jax.devices()` lists every process's devices, of which each process
drives its own (`jax.local_devices()`). The JaxTrainer (jax_trainer.py) uses what is here:

    initialize("10.0.0.1:1234", num_processes=2, process_id=0)  # before any JAX computation
    processes()                              # Processes(index=0, count=2)
    mesh = global_mesh()                     # 'data' over every process's devices, process by process
    rows = local_rows(mesh, B)               # this process's rows of every global batch of B images
    x, y = global_batch((x_rows, y_rows), mesh, B)   # its rows -> one array of B rows over all processes

Data: each process loads only its rows of every global batch (DataLoader(rows=...)). The order
of the images and their augmentation are functions of (seed, epoch, batch) alone, and the mesh
puts process p's devices at rows [p B/N, (p+1) B/N), so N processes see together exactly the
batches one process would, and the all-reduce of the gradients makes the step one process's step.

Agreement: every process calls the same collectives in the same order, so whatever decides
control flow must be equal everywhere. The step count is (the steps are collectives); a
checkpoint is written by process 0 between two barriers named for its step (`barrier`), so no
process goes on before the file is complete and a process at another step is an error; Ctrl-C
in any process (`any_process`) or a preemption notice (SIGTERM, which JAX's runtime catches
once initialized: `preempted`) stops all of them after the same step. A process's own clock is
not shared: time limits are refused across processes.

Failure: the coordinator checks that every process sends heartbeats. A process that dies
(killed, crashed, its host lost) stops sending; `heartbeat_timeout_s` later the runtime ends the
others ("Terminating process because the JAX distributed service detected fatal errors", exit
status 134: a C++ abort, no Python cleanup; checkpoints are written atomically, so none is lost).
A process that never reaches the coordinator fails `init_timeout_s` after it started; one that
exits on an error waits at most the shutdown timeout (= heartbeat_timeout_s) for the others,
which then stop too. No case waits forever.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec


@dataclass(frozen=True)
class Processes:
    """This process's place in the run: index in 0..count-1 (process 0 writes the outputs)."""

    index: int = 0
    count: int = 1

    @property
    def first(self) -> bool:
        return self.index == 0


def initialize(coordinator_address=None, num_processes=None, process_id=None, *, init_timeout_s=300,
               heartbeat_timeout_s=60):
    """Join the processes of a run; call it before JAX computes anything (importing it is fine),
    and anything that must come before JAX starts its backend (request_host_devices) after it.

    Either all three of coordinator_address ("HOST:PORT" of process 0), num_processes and
    process_id, or none: then JAX looks for them itself (TPU pod slices, SLURM, Open MPI), and
    where it finds no cluster this stays one process. num_processes=1 is one process, whatever
    the environment says. `processes()` then says which one this is."""
    given = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError("coordinator address, number of processes and process id go together (or none of them, "
                         f"where JAX finds them itself), got {coordinator_address=}, {num_processes=}, {process_id=}")
    for name, value in (("init_timeout_s", init_timeout_s), ("heartbeat_timeout_s", heartbeat_timeout_s)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} should be a whole number of seconds >= 1, got {value!r}")
    if all(given):
        _check_address(coordinator_address)
        if not (isinstance(num_processes, int) and isinstance(process_id, int) and 0 <= process_id < num_processes):
            raise ValueError(f"process id should be in 0..{num_processes - 1} for {num_processes} processes, "
                             f"got {process_id!r}")
        if num_processes == 1:
            return
    if jax.distributed.is_initialized():  # joined already (by the caller's own initialize)
        return
    timeouts = dict(initialization_timeout=init_timeout_s, heartbeat_timeout_seconds=heartbeat_timeout_s,
                    shutdown_timeout_seconds=heartbeat_timeout_s)
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id, **timeouts)
    except (ValueError, RuntimeError):  # looking for a cluster: none found (or JAX started already, so none
        if all(given):                  # can be joined); JAX raises both before connecting to anything
            raise


def _check_address(address):
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator address should be HOST:PORT (process 0's host, a free port), got {address!r}")


def processes() -> Processes:
    """This process's index and the number of processes ((0, 1) without jax.distributed)."""
    return Processes(jax.process_index(), jax.process_count())


# ---- the mesh and the batches ------------------------------------------------------------------

def global_mesh() -> Mesh:
    """A Mesh with one axis 'data' over every process's devices, process 0's first: each
    process's devices are then one contiguous block of the axis, so it holds a block of rows."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), ("data",))


def local_rows(mesh, batch_size) -> slice:
    """The rows of a global batch of `batch_size` that this process's devices hold."""
    spans = NamedSharding(mesh, PartitionSpec("data")).addressable_devices_indices_map((batch_size,)).values()
    starts, stops = sorted(s[0].start or 0 for s in spans), sorted(s[0].stop or batch_size for s in spans)
    if any(a != b for a, b in zip(starts[1:], stops[:-1])):
        raise ValueError(f"this process's devices hold rows that are not one block of the batch: {list(spans)}")
    return slice(starts[0], stops[-1])


def global_batch(tree, mesh, batch_size):
    """Each array of `tree` holds this process's rows (local_rows) of a global batch: returns the
    global arrays of batch_size rows, split over the mesh's 'data' axis. With one process this is
    jax_bridge.shard_batch."""
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    return jax.tree_util.tree_map(
        lambda a: jax.make_array_from_process_local_data(sharding, a, (batch_size,) + a.shape[1:]), tree)


def to_host(array) -> np.ndarray:
    """A global array's value as a NumPy array, in every process (gathered from all processes)."""
    if array.is_fully_addressable or array.is_fully_replicated:
        return np.asarray(array)
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


# ---- agreement -----------------------------------------------------------------------------------

def barrier(name):
    """Wait until every process gets here; an error if another one reached a barrier of another name."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def any_process(flag) -> bool:
    """True in every process if `flag` is true in any (one small all-gather)."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(np.asarray(multihost_utils.process_allgather(np.int32(bool(flag)))).any())


def preempted(step) -> bool:
    """True in every process at the same step once any got a preemption notice (SIGTERM),
    which JAX's runtime catches when several processes are joined; call it after every step."""
    return multihost_utils.reached_preemption_sync_point(step)


def check_same(values: dict, what: str):
    """ValueError in every process unless `values` ({name: JSON value}, the same names in every
    process) are equal in all: e.g. the training options and the step each process resumed from."""
    if jax.process_count() == 1:
        return
    names = sorted(values)
    digests = np.stack([np.frombuffer(hashlib.sha256(json.dumps(values[k], sort_keys=True, default=str).encode())
                                      .digest()[:8], np.int32) for k in names])  # (K, 2): a hash of each value
    every = np.asarray(multihost_utils.process_allgather(digests))  # (P, K, 2)
    differ = [k for i, k in enumerate(names) if (every[:, i] != every[0, i]).any()]
    if differ:
        mine = ", ".join(f"{k}={values[k]!r:.80}" for k in differ)
        raise ValueError(f"{what} differ between the processes: {', '.join(differ)} (process {jax.process_index()} "
                         f"has {mine}); start every process with the same options")
