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
   libgomp, whoever loaded libgomp first. `choose_threading_layer` below loads the wheel's
   libtbb.so.12 and picks the layer before the first parallel launch, unless the user chose one
   (NUMBA_THREADING_LAYER, or numba.config set before minivit's first kernel): then theirs stands.
   Without tbb, Numba picks its layer itself and OpenMP's threads wait as libgomp's defaults say
   (OMP_WAIT_POLICY=PASSIVE in the shell makes them sleep; minivit never writes the environment).
2. BLAS runs single-threaded inside minivit's products (`matmul` below): OpenBLAS's pool is never
   woken, so it never spins. OpenBLAS has one thread count for the whole process, so it is set to
   1 while at least one of minivit's products is running (in any Python thread) and put back when
   the last one ends, under a lock (`single_threaded_blas`). NumPy products of the user's own keep
   their threads, except one that runs in another Python thread at the same moment: it runs on
   one thread (its result is the same). OpenBLAS 0.3.27 added openblas_set_num_threads_local, but
   in NumPy's pthreads build (0.3.31 checked) it sets the same process-wide count, so it cannot
   make the switch per thread (tests/test_process_changes.py checks that claim).
3. minivit splits each large product (from 16 MFLOP) over `num_threads()` threads itself, at most
   as many as the user's BLAS count (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS or a threadpoolctl
   limit of 1 keeps minivit's products on one thread too): rows of the output (or the batch of
   matrices) in equal chunks, one per thread, each a single-threaded BLAS call writing its own rows
   of the output. The main thread takes a chunk; the others run on a small thread pool whose
   workers block on a queue when idle (they never spin). Small products go straight to np.matmul,
   which OpenBLAS runs on the calling thread below its threshold.

NumPy's OpenBLAS is found without threadpoolctl (importing it writes KMP_DUPLICATE_LIB_OK into
os.environ): the copy a NumPy wheel bundles, else the one OpenBLAS the process has loaded. With
another BLAS (MKL, Accelerate, BLIS) minivit leaves its threads alone and does not split products.
Every change this makes to the process is listed in kernels/cpu/process.py.

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

from ..openblas_files import bundled_openblas

# OpenBLAS multi-threads a product only above m*n*k = 65536 * 4 (SMP_THRESHOLD_MIN *
# GEMM_MULTITHREAD_THRESHOLD in its interface/gemm.c): below, np.matmul stays on the calling thread
# and its pool is never woken, so no switch is needed.
_OPENBLAS_ONE_THREAD_BELOW = 65536 * 4
_SPLIT_FROM = 1 << 24  # flops: a product is split over threads from 16 MFLOP (some 150 us per thread)
_NUMBA_LAYERS_WITHOUT_TBB = ("omp", "workqueue")  # a user's choice of these needs no libtbb
_NUMBA_PRIORITY = ["tbb", "omp", "workqueue"]  # Numba's own order when no layer is named
_lock = threading.Lock()  # guards _pool, _switches and _blas
_pool = None
# (get, set) of an OpenBLAS's thread count, found on first use; False: not an OpenBLAS found here.
# "numpy": the BLAS of np.matmul; "scipy": SciPy's, which np.dot inside Numba code calls.
_switches = {}
_blas = {"numpy": {"running": 0, "users_count": 1},  # minivit products holding that BLAS at 1 thread,
         "scipy": {"running": 0, "users_count": 1}}  # and its count before the first of them


def choose_threading_layer() -> str:
    """Numba's parallel loops on Intel TBB when the `tbb` package is installed (a 2 us launch, its
    own threads: no libgomp) and the user chose no layer; a layer the user chose stands, and so does
    one already launched. Returns what it did, in words (kernels/cpu/process.py reports it)."""
    import numba

    try:
        return f"{numba.threading_layer()}: launched before minivit's kernels loaded, left as it was"
    except ValueError:  # nothing launched yet: the layer can still be chosen
        pass
    users = _users_threading_layer(numba)
    library = None if users in _NUMBA_LAYERS_WITHOUT_TBB else _tbb_library()
    if library is not None:
        # Numba's tbbpool extension asks for libtbb.so.12 by its soname, which the loader then finds
        # already loaded; RTLD_LOCAL keeps TBB's symbols out of the process's global namespace.
        ctypes.CDLL(library, mode=ctypes.RTLD_LOCAL)
    if users is not None:
        return f"{users}: the user's choice" + (f" (libtbb loaded from {library})" if library else "")
    if library is None:
        return "Numba's own choice: the tbb package is not installed"
    numba.config.THREADING_LAYER = "tbb"
    return f"tbb: chosen by minivit (libtbb loaded from {library})"


def _users_threading_layer(numba) -> str | None:
    """The layer the user asked Numba for (NUMBA_THREADING_LAYER or its _PRIORITY in the
    environment, or numba.config changed in Python), or None when they left it to Numba."""
    config = numba.config
    if "NUMBA_THREADING_LAYER" in os.environ or config.THREADING_LAYER != "default":
        return config.THREADING_LAYER
    if "NUMBA_THREADING_LAYER_PRIORITY" in os.environ or config.THREADING_LAYER_PRIORITY != _NUMBA_PRIORITY:
        return "default, priority " + ",".join(config.THREADING_LAYER_PRIORITY)
    return None


def _tbb_library():
    """The path of libtbb.so.12 that the `tbb` wheel installed, or None."""
    from importlib import metadata

    try:
        files = metadata.files("tbb") or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name.startswith("libtbb.so.12"):
            return os.path.normpath(f.locate())
    return None


def num_threads() -> int:
    """Threads minivit's CPU work may use now, read at each call: Numba's count for the calling
    thread (numba.set_num_threads, else NUMBA_NUM_THREADS, else the cores)."""
    import numba

    return numba.get_num_threads()


def _executor():
    """The pool that runs a split product's other chunks: one worker fewer than Numba's largest count."""
    global _pool
    with _lock:
        if _pool is None:
            import numba

            workers = max(numba.config.NUMBA_NUM_THREADS - 1, 1)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="minivit-blas")
        return _pool


def _blas_thread_switch(which="numpy"):
    """(get_num_threads, set_num_threads) of the OpenBLAS NumPy (which="numpy") or SciPy
    ("scipy") runs on, as plain ctypes calls (a fraction of a microsecond each), or None where that
    BLAS is not an OpenBLAS found here."""
    switch = _switches.get(which)
    if switch is not None:
        return switch or None
    with _lock:
        if _switches.get(which) is None:
            paths = _numpy_openblas_paths() if which == "numpy" else _scipy_openblas_paths()
            calls = [c for c in map(_thread_count_calls, paths) if c]
            _switches[which] = calls[0] if len(calls) == 1 else False  # two copies: which one runs is unknown
        return _switches[which] or None


def _scipy_openblas_paths() -> list[str]:
    """The OpenBLAS a SciPy wheel bundles, which Numba's np.dot calls through
    scipy.linalg.cython_blas; [] for a SciPy built on another BLAS or not installed."""
    return bundled_openblas("scipy")


def _numpy_openblas_paths() -> list[str]:
    """Where NumPy's OpenBLAS is: the copy its wheel bundles (numpy.libs/ beside the package on
    Linux and Windows, numpy/.dylibs on macOS), else the BLAS libraries the process has mapped (a
    NumPy built on the system's OpenBLAS), other wheels' private copies left out."""
    bundled = bundled_openblas("numpy")
    if bundled:
        return bundled
    try:
        with open("/proc/self/maps") as maps:  # Linux: address, perms, offset, device, inode, path
            fields = [line.split(maxsplit=5) for line in maps]
    except OSError:
        return []
    mapped = {os.path.realpath(f[5].strip()) for f in fields if len(f) == 6 and f[5].startswith("/")}
    return sorted(p for p in mapped if "blas" in os.path.basename(p).lower() and "scipy_openblas" not in p)


def _thread_count_calls(path):
    """(get, set) of OpenBLAS's thread count in the library at `path` (its names carry a prefix
    and a suffix in 64-bit-integer builds: scipy_openblas_get_num_threads64_), or None."""
    try:
        dll = ctypes.CDLL(path)
    except OSError:
        return None
    for prefix in ("", "scipy_"):
        for suffix in ("", "64_", "_64"):
            get = getattr(dll, f"{prefix}openblas_get_num_threads{suffix}", None)
            set_ = getattr(dll, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and set_ is not None:
                get.restype, set_.argtypes, set_.restype = ctypes.c_int, [ctypes.c_int], None
                return get, set_
    return None


class single_threaded_blas:
    """`with single_threaded_blas() as blas:` NumPy's OpenBLAS uses one thread while the block runs
    (`single_threaded_blas(which="scipy")`: SciPy's, for Numba kernels that call np.dot).
    OpenBLAS's count is process-wide, so the blocks of all Python threads share one switch: the
    first to enter saves the user's count and sets 1, the last to leave puts it back (unless
    someone set another count meanwhile: theirs stands). `blas.threads` is how many threads a
    product may be split over: Numba's count, at most the user's BLAS count. Where NumPy's BLAS is
    not OpenBLAS, nothing is switched and `blas.threads` is 1."""

    def __init__(self, which="numpy"):
        if which not in _blas:
            raise ValueError(f"which BLAS: expected one of {sorted(_blas)}, got {which!r}")
        self.which = which

    def __enter__(self):
        self.switch = _blas_thread_switch(self.which)
        if self.switch is None:
            self.threads = 1
            return self
        get, set_ = self.switch
        state = _blas[self.which]
        with _lock:
            if state["running"] == 0:
                state["users_count"] = get()
                if state["users_count"] != 1:
                    set_(1)
            state["running"] += 1
            users_count = state["users_count"]
        self.threads = min(num_threads(), users_count)
        return self

    def __exit__(self, *exc):
        if self.switch is not None:
            get, set_ = self.switch
            state = _blas[self.which]
            with _lock:
                state["running"] -= 1
                if state["running"] == 0 and state["users_count"] != 1 and get() == 1:
                    set_(state["users_count"])
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
    with single_threaded_blas() as blas:
        threads = min(blas.threads, max(1, 2 * math.prod(shape[:-2]) * mnk // _SPLIT_FROM))
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
