"""Every change minivit makes to the process it runs in: what, when, how to undo it, how to opt out.

minivit is a guest in the user's process. `import minivit` changes nothing; the changes below
happen when its CPU kernels load, at the first kernel call (the first forward pass, or the first
`kernels.get`, `kernels.available`, `minivit kernels`). The user's own settings always win: a
setting the user made before that moment is left as it is. This module is the one place that
makes the load-time changes (`apply`, called by kernels/cpu/__init__.py); `applied()` says what
they were in this process. The mechanisms, and the measurements that justify each one, are in
threads.py and memory.py.

1. Numba's threading layer: TBB.
   When: at load, where the `tbb` package is installed (x86-64), no parallel loop has run yet
   and the user chose no layer. Undo: no; Numba launches one layer per process, at its first
   parallel loop. Opt out: choose a layer before the first kernel call, NUMBA_THREADING_LAYER=omp
   (or workqueue, or NUMBA_THREADING_LAYER_PRIORITY) in the environment, or
   `numba.config.THREADING_LAYER = "omp"` in Python. Without tbb, Numba chooses by itself.
   Why: a 2 us launch and threads of its own, whoever loaded libgomp first (threads.py).

2. libtbb.so.12 loaded (RTLD_LOCAL, so its symbols do not enter the global namespace).
   When: at load, where the `tbb` package is installed, unless the user chose the omp or
   workqueue layer. Undo: no; a shared library stays loaded. A library loaded later that asks
   for libtbb.so.12 gets this copy. TBB starts its worker threads (Numba's count) at the first
   parallel loop. Opt out: as in 1, with omp or workqueue.

3. NumPy's OpenBLAS thread count: 1 while one of minivit's large products runs.
   When: during each product above OpenBLAS's threading threshold, in any Python thread; the count
   is saved by the first product to start and put back when the last one ends (under a lock),
   unless someone set another count meanwhile. Undo: automatic. Side effect: OpenBLAS has one
   count for the whole process (openblas_set_num_threads_local included, in NumPy's build), so a
   NumPy product of the user's that runs in another Python thread at that moment runs on one
   thread; its result is the same. Opt out: the NumPy reference kernels, which call np.matmul
   with BLAS's own threads (MINIVIT_KERNELS=reference). The user's count limits minivit:
   OPENBLAS_NUM_THREADS=1, OMP_NUM_THREADS=1 or a threadpoolctl limit of 1 keeps minivit's
   products on one thread. With another BLAS than OpenBLAS nothing is switched.
   The same for SciPy's OpenBLAS (a library of its own in SciPy's wheels), while the attention
   kernels cpu_v4 and cpu_v5 run: their Numba tasks call BLAS through np.dot, which Numba routes
   to SciPy's.

4. A thread pool, "minivit-blas": Numba's thread count minus one workers.
   When: at the first product large enough to split over threads. They block on a queue when
   idle (no spinning) and live until the process exits. Undo: no. Opt out: one thread for minivit
   (numba.set_num_threads(1), or NUMBA_NUM_THREADS=1), and no product is split.

5. glibc's malloc thresholds: arrays up to 32 MiB come from the heap, up to 1 GiB freed is kept.
   When: at load, on glibc only. It applies to every library in the process, which then keeps
   the memory of its largest step until it exits. Undo: partial;
   `kernels.cpu.memory.keep_freed_memory(False)` puts glibc's starting thresholds back, but glibc
   has no call that turns its dynamic threshold back on (memory.py). Opt out:
   MINIVIT_KEEP_FREED_MEMORY=0 before the first kernel call, or glibc's own settings
   (MALLOC_MMAP_THRESHOLD_ and the like, or GLIBC_TUNABLES=glibc.malloc.*), which minivit leaves
   as they are.

Scoped by the library (put back on exit):

6. The SIGINT handler, inside `Trainer.fit` (and so `minivit train`) on the main thread: a first
   Ctrl-C saves a checkpoint after the step (minivit/train/progress.py, interrupt_flag).

Only when asked for:

7. JAX's CPU device count: `minivit.train.jax_trainer.request_host_devices(n)` (`minivit train
   --backend jax --devices n`) with n > 1 sets JAX's `jax_num_cpu_devices` option (not
   XLA_FLAGS), before JAX starts its backend. Undo: no, once JAX has started.
8. Several JAX processes (`minivit train --backend jax` with --coordinator-address ..., or on a
   cluster JAX detects: a TPU pod slice, SLURM): jax.distributed.initialize joins them, and JAX
   then catches SIGTERM (its preemption service) so that every process saves after the same step
   (minivit/train/distributed.py). Opt out: --num-processes 1, or
   jax.config.update("jax_enable_preemption_service", False) before the run.

Never: minivit does not write os.environ (no OMP_*, OPENBLAS_*, KMP_*, NUMBA_* or XLA_*
variable), does not import threadpoolctl (its import writes KMP_DUPLICATE_LIB_OK), and overrides
neither numba.set_num_threads (read at each product) nor a threading layer the user chose.
"""
from __future__ import annotations

from . import memory, threads

_applied: dict[str, str] = {}


def apply():
    """Make the load-time changes (1, 2 and 5 above), once per process."""
    if not _applied:
        _applied["numba_threading_layer"] = threads.choose_threading_layer()
        _applied["malloc"] = memory.apply_default()


def applied() -> dict[str, str]:
    """What the load-time changes did in this process, in words: {change: what happened}."""
    return dict(_applied)
