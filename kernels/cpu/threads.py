"""Who runs minivit's CPU work: the BLAS products and the Numba kernels, without fighting.

A training step alternates BLAS products (np.matmul) with Numba kernels (layernorm, gelu,
softmax, attention, AdamW), dozens of each. Both want every core, and each library brings its own
pool of threads:

- OpenBLAS's pool *spins* after each call, 2^28 cycles (about 0.1 s) by default, before it
  sleeps. On 2 cores that took a core from nearly every Numba kernel, since nearly every one of
  them runs right after a product. OpenBLAS reads the spin time (OPENBLAS_THREAD_TIMEOUT) once,
  when NumPy loads it, so the fix a previous version used, setting it in `import kernels`, only
  worked when minivit was imported before NumPy, and almost every script imports NumPy first.
- Numba's default threading layer is OpenMP, through the process's libgomp. Whoever loads
  libgomp first sets its wait policy: PyTorch's own libgomp spins between parallel regions, so
  with torch imported first every Numba launch was followed by spinning threads.

The design that does not depend on import order or environment variables:

1. Numba runs on Intel TBB (the `tbb` package, a dependency on x86-64): its own threads, no
   libgomp, whoever loaded libgomp first; `choose_threading_layer` below preloads the wheel's
   libtbb.so.12 and picks the layer before the first parallel launch (kernels/cpu/__init__.py).
   Without tbb: OpenMP with OMP_WAIT_POLICY=PASSIVE, which holds when minivit loads libgomp first.
2. BLAS runs single-threaded inside minivit's products (`matmul` below): OpenBLAS's pool is never
   woken, so it never spins. Its thread count is set to 1 for the duration of each product and
   restored after (openblas_set_num_threads through ctypes on NumPy's own OpenBLAS, found with
   threadpoolctl once), so NumPy code of the user's own keeps its threads.
3. minivit splits each large product (from 16 MFLOP) over `num_threads()` threads itself: rows of
   the output (or the batch of matrices) in equal chunks, one per thread, each a single-threaded
   BLAS call writing its own rows of the output. The main thread takes a chunk; the others run on
   a small thread pool whose workers block on a queue when idle (they never spin). Small products
   go straight to np.matmul, which OpenBLAS runs on the calling thread below its threshold.

The options measured (2-core Intel Xeon, AVX-512, KVM guest, under load from other jobs):

    one empty parallel launch (prange over 2)      TBB 2 us    OpenMP passive 10 us    workqueue 43 us
    vit_mini training step, batch 64, CPU time, `import numpy, torch` before minivit:
        before (OPENBLAS_THREAD_TIMEOUT set in `import kernels`, OpenMP)      2460 ms
        this design                                                            ~480 ms
        this design, minivit imported first                                    ~480 ms

workqueue (no dependency) was tried first and dropped: its launch costs 20x TBB's and a training
step makes hundreds. A threadpoolctl context around every product costs about 30 us (it walks
every loaded library), more than some products: hence the raw ctypes switch. Side-by-side numbers
against timm: benchmarks/timm_step.py --import-orders (benchmarks/results/).
"""
from __future__ import annotations

import ctypes
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# OpenBLAS multi-threads a product only above m*n*k = 65536 * 4 (SMP_THRESHOLD_MIN *
# GEMM_MULTITHREAD_THRESHOLD in its interface/gemm.c): below, np.matmul stays on the calling thread
# and its pool is never woken, so no switch is needed.
_OPENBLAS_ONE_THREAD_BELOW = 65536 * 4
_SPLIT_FROM = 1 << 24  # flops: a product is split over threads from 16 MFLOP (some 150 us per thread)
_lock = threading.Lock()
_pool = None
_switch = None  # (get, set) of NumPy's BLAS thread count, found on first use


def choose_threading_layer():
    """Numba's parallel loops on Intel TBB when the `tbb` package is installed (a 2 us launch, its
    own threads: no libgomp), else on OpenMP with sleeping threads (which holds only when no other
    library, such as PyTorch, loaded libgomp first). The chosen layer is numba.threading_layer()."""
    import numba

    library = _tbb_library()
    if library is not None:
        ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)  # Numba's tbbpool finds it by its soname
        numba.config.THREADING_LAYER = "tbb"
    else:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        numba.config.THREADING_LAYER = "omp"


def _tbb_library():
    """The path of libtbb.so.12 that the `tbb` wheel installed, or None."""
    from importlib import metadata

    try:
        files = metadata.files("tbb") or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name.startswith("libtbb.so.12"):
            return str(f.locate())
    return None


def num_threads() -> int:
    """Threads minivit's CPU work runs on: Numba's (NUMBA_NUM_THREADS, else the cores)."""
    import numba

    return numba.config.NUMBA_NUM_THREADS


def _executor():
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(num_threads() - 1, 1), thread_name_prefix="minivit-blas")
        return _pool


def _blas_thread_switch():
    """(get_num_threads, set_num_threads) of the OpenBLAS NumPy runs on, as plain ctypes calls (a
    fraction of a microsecond each): threadpoolctl finds the library, its symbols are read here.
    For another BLAS (MKL, Accelerate), threadpoolctl's own (slower) calls."""
    global _switch
    if _switch is None:
        from threadpoolctl import ThreadpoolController

        libs = ThreadpoolController().select(user_api="blas").lib_controllers
        openblas = [lib for lib in libs if lib.internal_api == "openblas" and "numpy" in lib.filepath]
        if openblas:
            dll = ctypes.CDLL(openblas[0].filepath)
            for prefix in ("", "scipy_"):
                for suffix in ("", "64_", "_64"):
                    if hasattr(dll, f"{prefix}openblas_get_num_threads{suffix}"):
                        get = getattr(dll, f"{prefix}openblas_get_num_threads{suffix}")
                        set_ = getattr(dll, f"{prefix}openblas_set_num_threads{suffix}")
                        set_.argtypes = [ctypes.c_int]
                        _switch = (get, set_)
                        return _switch
        _switch = (lambda: max(lib.get_num_threads() or 1 for lib in libs) if libs else 1,
                   lambda n: [lib.set_num_threads(n) for lib in libs])
    return _switch


class single_threaded_blas:
    """`with single_threaded_blas():` NumPy's BLAS uses the calling thread only; after the block
    its thread count is what it was."""

    def __enter__(self):
        get, set_ = _blas_thread_switch()
        self.saved = get()
        if self.saved != 1:
            set_(1)
        return self

    def __exit__(self, *exc):
        if self.saved != 1:
            _blas_thread_switch()[1](self.saved)
        return False


def matmul(a, b, out=None):
    """np.matmul(a, b) for a (..., M, K) and b (..., K, N) on minivit's threads, BLAS single-threaded:
    a large product's output rows (or, in a batch of at least as many matrices as threads, its
    matrices) are cut into one chunk per thread; a small one runs on the calling thread."""
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    if out is None:
        out = np.empty(shape, dtype=np.result_type(a, b))
    mnk = a.shape[-2] * a.shape[-1] * b.shape[-1]  # one matrix's product
    if mnk < _OPENBLAS_ONE_THREAD_BELOW and math.prod(shape[:-2]) * mnk < _SPLIT_FROM // 2:
        return np.matmul(a, b, out=out)  # OpenBLAS keeps it on this thread by itself
    threads = min(num_threads(), max(1, 2 * math.prod(shape[:-2]) * mnk // _SPLIT_FROM))
    with single_threaded_blas():
        if threads == 1:
            return np.matmul(a, b, out=out)
        if out.ndim == 3 and out.shape[0] >= threads and a.shape[:-2] == b.shape[:-2] == out.shape[:1]:
            cut = lambda lo, hi: np.matmul(a[lo:hi], b[lo:hi], out=out[lo:hi])  # whole matrices
            n = out.shape[0]
        else:
            cut = lambda lo, hi: np.matmul(a[..., lo:hi, :], b, out=out[..., lo:hi, :])  # output rows
            n = out.shape[-2]
        bounds = [n * i // threads for i in range(threads + 1)]
        jobs = [_executor().submit(cut, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
        cut(bounds[0], bounds[1])
        for job in jobs:
            job.result()
    return out
