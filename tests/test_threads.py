"""kernels/cpu/threads.py: minivit's products run on its own threads with single-threaded BLAS,
give np.matmul's results, leave the user's BLAS thread count as it was, and Numba's parallel loops
run on TBB (where installed) whatever a script imported first. Speed is measured in
benchmarks/timm_step.py, not here."""
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("numba", reason="the CPU kernels are Numba")
from kernels.cpu import threads  # noqa: E402

SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def product_shapes(draw):
    """Shapes of a (..., M, K) @ b (..., K, N): 2-D, a batch, a broadcast batch, and sizes on
    both sides of the split threshold (a 256 x 256 x 256 product is split, 8 x 8 x 8 is not)."""
    M, K, N = (draw(st.sampled_from([1, 3, 8, 65, 256])) for _ in range(3))
    batch = draw(st.sampled_from([(), (1,), (2,), (5,)]))
    b_batch = draw(st.sampled_from([batch, (1,) * len(batch), ()]))
    return batch + (M, K), b_batch + (K, N)


@SETTINGS
@given(shapes=product_shapes(), dtype=st.sampled_from([np.float32, np.float64]), transposed=st.booleans())
def test_matmul_on_minivits_threads_equals_np_matmul(shapes, dtype, transposed):
    rng = np.random.default_rng(0)
    (sa, sb) = shapes
    a = rng.standard_normal(sa).astype(dtype)
    b = rng.standard_normal(sb).astype(dtype)
    if transposed:  # strided views, as the kernels pass them (x.T, grad.T)
        a = np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
    got = threads.matmul(a, b)
    want = np.matmul(a, b)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


def test_a_product_large_enough_to_split_is_cut_over_every_thread(monkeypatch):
    seen = []
    real = np.matmul

    def spy(a, b, out=None):
        seen.append(out.shape)
        return real(a, b, out=out)

    monkeypatch.setattr(threads.np, "matmul", spy)
    monkeypatch.setattr(threads, "num_threads", lambda: 3)
    get, set_ = threads._blas_thread_switch()
    before = get()
    set_(3)  # the user's BLAS count allows three threads too
    try:
        a, b = np.ones((600, 256), np.float32), np.ones((256, 256), np.float32)  # 79 MFLOP
        out = threads.matmul(a, b)
    finally:
        set_(before)
    assert sorted(s[0] for s in seen) == [200, 200, 200]  # three chunks of rows
    np.testing.assert_array_equal(out, 256.0)


def test_the_users_blas_thread_count_is_what_it_was_after_a_product():
    get, set_ = threads._blas_thread_switch()
    before = get()
    set_(2)
    try:
        with threads.single_threaded_blas():
            assert get() == 1
        threads.matmul(np.ones((512, 512), np.float32), np.ones((512, 512), np.float32))
        assert get() == 2
    finally:
        set_(before)


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)


@pytest.mark.parametrize("first", ["import numpy, torch", "import numpy", ""])
def test_numba_runs_on_tbb_and_blas_keeps_its_threads_whatever_was_imported_first(first):
    if "torch" in first:
        pytest.importorskip("torch", reason="the import-order case with PyTorch loaded first")
    code = (f"{first}\nimport numpy as np, minivit, numba\n"
            "from kernels.cpu import threads\n"
            "get, _ = threads._blas_thread_switch(); before = get()\n"
            "m = minivit.create_model('vit_testing')\n"
            "minivit.functional.cross_entropy(m(np.zeros((8, 3, 32, 32), np.float32)), np.zeros(8, int)).backward()\n"
            "print(numba.threading_layer(), before == get())")
    layer, same = _run(code).stdout.split()
    expected = "tbb" if threads._tbb_library() else "omp"
    assert layer == expected and same == "True"


@pytest.mark.parametrize("version", ["v4", "v5"])
def test_scipys_blas_runs_one_thread_inside_the_v4_v5_attention_kernels_and_gets_its_count_back(version, monkeypatch):
    """cpu_v4's and cpu_v5's Numba tasks call SciPy's OpenBLAS (np.dot in Numba code) from every thread at once:
    its count is 1 while the kernel runs and the user's count comes back after it."""
    switch = threads._blas_thread_switch("scipy")
    if switch is None:
        pytest.skip("SciPy's BLAS is not an OpenBLAS found here")
    assert switch != threads._blas_thread_switch("numpy")  # a library of its own, with its own count
    import kernels
    from kernels.cpu import attention

    get, set_ = switch
    before = get()
    counts = []
    real = getattr(attention, f"_{version}_forward")

    def spy(*args):
        counts.append(get())
        return real(*args)

    monkeypatch.setattr(attention, f"_{version}_forward", spy)
    set_(2)
    try:
        impl = next(i for i in kernels.available("attention", device="cpu") if i.name == f"cpu_{version}")
        q = np.ones((1, 2, 65, 64), np.float32)
        impl.forward(q, q, q, 0.125)
        assert counts == [1] and get() == 2
    finally:
        set_(before)


def test_single_threaded_blas_names_the_libraries_it_knows():
    with pytest.raises(ValueError, match=r"which BLAS: expected one of \['numpy', 'scipy'\], got 'mkl'"):
        threads.single_threaded_blas("mkl")
