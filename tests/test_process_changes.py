"""minivit as a guest in the user's process (kernels/cpu/process.py): it never writes os.environ,
the user's own settings win (Numba's threading layer and thread count, OpenBLAS's thread count,
glibc's malloc thresholds), and the switch of NumPy's BLAS thread count is safe when other Python
threads use NumPy or minivit at the same time. Where the process state matters, a fresh
subprocess runs the case."""
import os
import platform
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("numba", reason="the process changes are the Numba CPU backend's")
import numba  # noqa: E402

import minivit  # noqa: E402
from kernels.cpu import process, threads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
needs_openblas = pytest.mark.skipif(threads._blas_thread_switch() is None, reason="NumPy's BLAS is not OpenBLAS")

# What a user may have set that these tests set themselves, or that would hide what they look for.
_USERS = ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY", "NUMBA_NUM_THREADS", "OMP_WAIT_POLICY",
          "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "KMP_DUPLICATE_LIB_OK", "MINIVIT_KERNELS",
          "MINIVIT_KEEP_FREED_MEMORY", "GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
          "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

# One training step of a tiny ViT: forward, backward, AdamW (its patch embedding's product is
# large enough for minivit to switch the BLAS count), then a product large enough to be split.
_STEP = """
import numpy as np, minivit
model = minivit.create_model("vit_testing")
opt = minivit.optim.AdamW(model.parameters(), lr=1e-3)
x = np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype(np.float32)
minivit.functional.cross_entropy(model(x), np.arange(32) % 10).backward()
opt.step(); opt.zero_grad()
from kernels.cpu import threads
threads.matmul(np.ones((600, 256), np.float32), np.ones((256, 256), np.float32))
"""

# How many pieces minivit cuts a 79 MFLOP product into, and NumPy's BLAS count after it.
_CHUNKS = """
import numpy as np
from kernels.cpu import threads
real, pieces = np.matmul, []
np.matmul = lambda a, b, out=None: (pieces.append(1), real(a, b, out=out))[1]
threads.matmul(np.ones((600, 256), np.float32), np.ones((256, 256), np.float32))
np.matmul = real
print(len(pieces), threads._blas_thread_switch()[0]())
"""


def _python(code, **env):
    """Run code in a fresh interpreter with the user's settings above removed, then `env` set;
    return the words it printed."""
    environ = {k: v for k, v in os.environ.items() if k not in _USERS} | env
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=environ, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


# ------------------------------------------------------------------------ the environment
def test_import_and_a_training_step_leave_os_environ_unchanged_and_threadpoolctl_unimported():
    code = ("import os, sys\nbefore = dict(os.environ)\nimport numpy, minivit\n"
            "print('kernels.cpu' in sys.modules)\n" + _STEP +
            "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
            "print('threadpoolctl' in sys.modules, *changed)")
    loaded_at_import, threadpoolctl, *changed = _python(code)
    assert loaded_at_import == "False", "`import minivit` alone already loaded the CPU kernels"
    assert changed == [], f"os.environ changed: {changed}"
    assert threadpoolctl == "False", "threadpoolctl was imported (its import writes KMP_DUPLICATE_LIB_OK)"


def test_without_tbb_choosing_the_layer_writes_no_environment_and_leaves_numba_to_choose(monkeypatch):
    for name in ("OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "_tbb_library", lambda: None)  # as off x86-64, where tbb has no wheel
    monkeypatch.setattr(numba.config, "THREADING_LAYER", "default")

    def not_launched():
        raise ValueError("Threading layer is not initialized.")

    monkeypatch.setattr(numba, "threading_layer", not_launched)
    before = dict(os.environ)
    threads.choose_threading_layer()
    assert dict(os.environ) == before
    assert numba.config.THREADING_LAYER == "default"


# ------------------------------------------------------------------- the user's settings win
_LAYER = "\nfrom kernels.cpu import process\nprint(numba.threading_layer(), process.applied()['numba_threading_layer'])"


@pytest.mark.parametrize("how", ["environment", "numba.config"])
def test_a_threading_layer_the_user_chose_stands_after_minivits_first_kernel(how):
    if how == "environment":
        out = _python("import numba\n" + _STEP + _LAYER, NUMBA_THREADING_LAYER="workqueue")
    else:
        out = _python("import numba\nnumba.config.THREADING_LAYER = 'workqueue'\n" + _STEP + _LAYER)
    assert out[:3] == ["workqueue", "workqueue:", "the"], out  # "workqueue: the user's choice"


@pytest.mark.skipif(threads._tbb_library() is None, reason="the tbb package is not installed")
def test_minivit_chooses_tbb_when_the_user_chose_no_layer_and_says_so():
    out = _python("import numba\n" + _STEP + _LAYER)
    assert out[:5] == ["tbb", "tbb:", "chosen", "by", "minivit"], out


@needs_openblas
def test_numba_set_num_threads_by_the_user_limits_how_minivit_splits_a_product():
    # NUMBA_NUM_THREADS=2 makes two threads available; the user then asks for one.
    one, _ = _python("import numba\nnumba.set_num_threads(1)\n" + _CHUNKS, NUMBA_NUM_THREADS="2")
    assert one == "1"
    if (os.cpu_count() or 1) >= 2:  # and without asking, the product is split in two
        split, _ = _python(_CHUNKS, NUMBA_NUM_THREADS="2")
        assert split == "2"


@needs_openblas
@pytest.mark.parametrize("variable", ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"])
def test_a_blas_thread_count_the_user_set_limits_minivits_products_and_is_kept(variable):
    pieces, count = _python(_CHUNKS, NUMBA_NUM_THREADS="2", **{variable: "1"})
    assert (pieces, count) == ("1", "1")
    if (os.cpu_count() or 1) >= 2:  # OpenBLAS takes no more threads than cores
        pieces, count = _python(_CHUNKS, NUMBA_NUM_THREADS="2", **{variable: "2"})
        assert (pieces, count) == ("2", "2")


@glibc
@pytest.mark.parametrize("variable, value, named", [
    ("MALLOC_TRIM_THRESHOLD_", "262144", "MALLOC_TRIM_THRESHOLD_"),
    ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=262144", "glibc.malloc.mmap_threshold")])
def test_glibc_thresholds_the_user_set_are_left_alone(variable, value, named):
    code = ("import kernels\nkernels.available()\nfrom kernels.cpu import memory, process\n"
            "print(memory.keeping_freed_memory(), process.applied()['malloc'].replace(' ', '_'))")
    kept, said = _python(code, **{variable: value})
    assert kept == "False"
    assert named in said, said


@glibc
def test_with_no_setting_of_the_users_minivit_keeps_freed_memory_and_says_so():
    kept, said = _python("import kernels\nkernels.available()\nfrom kernels.cpu import memory, process\n"
                         "print(memory.keeping_freed_memory(), process.applied()['malloc'].replace(' ', '_'))")
    assert kept == "True" and "keeps_freed_memory" in said


# ------------------------------------------------------------- the BLAS switch and threads
@needs_openblas
def test_overlapping_products_of_two_threads_put_the_users_blas_count_back_only_after_the_last():
    """The order two Python threads can take: A enters, B enters, A leaves, B leaves."""
    get, set_ = threads._blas_thread_switch()
    before = get()
    set_(2)
    try:
        a, b = threads.single_threaded_blas(), threads.single_threaded_blas()
        a.__enter__()
        b.__enter__()
        assert get() == 1
        a.__exit__(None, None, None)
        assert get() == 1, "B's product still runs: BLAS must stay on one thread"
        b.__exit__(None, None, None)
        assert get() == 2
    finally:
        set_(before)


@needs_openblas
def test_a_blas_count_set_by_someone_else_while_a_product_runs_stands():
    get, set_ = threads._blas_thread_switch()
    before = get()
    set_(2)
    try:
        with threads.single_threaded_blas():
            set_(3)  # the user's own thread, or a threadpoolctl limit, at that moment
        assert get() == 3
    finally:
        set_(before)


@needs_openblas
def test_numpy_products_in_another_thread_during_training_steps_are_right_and_keep_the_users_count():
    """Two threads each run a training step while a third runs NumPy products (large enough for
    OpenBLAS to use its threads). OpenBLAS's count is process-wide (threads.py), so a product that
    overlaps one of minivit's may see 1; it never sees anything else, its results are right, and
    the user's count is back once the steps end."""
    get, set_ = threads._blas_thread_switch()
    before = get()
    set_(2)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((256, 256)), rng.standard_normal((256, 256))
    want = np.matmul(a, b)
    model = minivit.create_model("vit_testing")
    x = rng.standard_normal((32, 3, 32, 32)).astype(np.float32)
    minivit.functional.cross_entropy(model(x), np.arange(32) % 10)  # kernels loaded and compiled first
    steps_done, seen, wrong = threading.Event(), [], []

    def step():
        m = minivit.create_model("vit_testing")
        opt = minivit.optim.AdamW(m.parameters(), lr=1e-3)
        for _ in range(2):
            minivit.functional.cross_entropy(m(x), np.arange(32) % 10).backward()
            opt.step()
            opt.zero_grad()

    def users_products():
        for _ in range(300):  # bounded: about a millisecond each
            if steps_done.is_set():
                break
            seen.append(get())
            if not np.allclose(np.matmul(a, b), want, rtol=1e-12, atol=1e-12):
                wrong.append(len(seen))

    try:
        user = threading.Thread(target=users_products)
        trainers = [threading.Thread(target=step) for _ in range(2)]
        user.start()
        for t in trainers:
            t.start()
        for t in trainers:
            t.join()
        steps_done.set()
        user.join()
        after = get()
    finally:
        set_(before)
    assert seen and not wrong, f"{len(wrong)} of {len(seen)} products were wrong"
    assert set(seen) <= {1, 2}, f"counts seen: {sorted(set(seen))}"
    assert after == 2


@needs_openblas
def test_openblas_set_num_threads_local_in_numpys_openblas_sets_the_process_wide_count():
    """The claim threads.py rests on: there is no per-thread count to use. Should this fail, a
    newer OpenBLAS made it per thread, and single_threaded_blas can use it instead of the lock."""
    import ctypes

    libs = [ctypes.CDLL(p) for p in threads._numpy_openblas_paths()]
    local = [getattr(lib, "openblas_set_num_threads_local", None) for lib in libs]
    local = [f for f in local if f is not None]
    if not local:
        pytest.skip("NumPy's OpenBLAS has no openblas_set_num_threads_local (before 0.3.27)")
    set_local = local[0]
    set_local.argtypes, set_local.restype = [ctypes.c_int], ctypes.c_int
    get, set_ = threads._blas_thread_switch()
    before = get()
    set_(2)
    try:
        helper = threading.Thread(target=set_local, args=(1,))
        helper.start()
        helper.join()
        assert get() == 1, "openblas_set_num_threads_local changed only its own thread's count"
    finally:
        set_(before)


# ------------------------------------------------------------------------ where it is stated
def test_the_readme_and_minivits_docstring_point_to_the_list_of_process_changes():
    readme = (ROOT / "README.md").read_text()
    assert "kernels/cpu/process.py" in readme
    assert "nothing to set" not in readme.lower()
    assert "kernels/cpu/process.py" in minivit.__doc__
    listed = process.__doc__
    for what in ("NUMBA_THREADING_LAYER", "libtbb", "OpenBLAS", "minivit-blas", "MINIVIT_KEEP_FREED_MEMORY",
                 "keep_freed_memory(False)", "SIGINT", "jax_num_cpu_devices", "SIGTERM", "os.environ"):
        assert what in listed, f"kernels/cpu/process.py does not mention {what}"
