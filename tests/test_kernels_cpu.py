"""Every registered CPU implementation of matmul, linear, patch_embed, layernorm, gelu, softmax,
softmax_cross_entropy and adamw_update equals the NumPy reference run in float64.

The implementations are read from the registry at collection time, so a version added later is
tested without touching this file (the reference itself is the oracle, not a subject). Inputs
are drawn by hypothesis: odd sizes, sizes that are not a multiple of any tile, single rows,
logits up to 1e4 (a naive exp overflows at 89 in float32), label smoothing in [0, 0.5]. Inputs
are cast to the dtype first; the float64 reference gets those values cast up exactly.

Each case runs through kernels/bench.py's harness, the one `python -m kernels.bench` uses:
bench.run_pair runs the implementation and the reference and pairs up every output and gradient;
bench.compare_all judges the pairs with the tolerance below, passed explicitly (and checked equal
to the bench's own) so that the harness cannot loosen this file's claims. Per element, with want
the float64 reference and scale = max|want| of that array (over its finite entries):
    |got - want| <= ATOL[dtype] * scale + RTOL[dtype] * |want| + FLOOR[dtype]
    float32: RTOL 1e-3, ATOL 1e-4,  FLOOR 1e-5   (float32 kernels accumulate in float32 or better)
    float64: RTOL 1e-8, ATOL 1e-10, FLOOR 1e-13  (catches a float64 kernel computing in float32)
FLOOR covers outputs that are tiny differences of O(1) terms, where float32 rounding of the terms
is all that is left: gelu(-6.3) = -3.7e-10 but 0.5 * (1 + erf) is 0 in float32; a 2-wide
LayerNorm's dx is ~1e-4 from terms of ~1. Every output must also have the dtype of the inputs
and the reference's shape, and be nan only where the reference is.

The float32 exp and erf that the kernels share (kernels/cpu/fastmath.py) are checked directly
too, to the accuracy their docstring states, compiled as the kernels that use them compile them.
"""
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import erf

import kernels
from kernels import bench

pytest.importorskip("numba", reason="the CPU kernels are Numba")
from numba import njit  # noqa: E402

from kernels.cpu import dense, fastmath  # noqa: E402

RTOL = {"float32": 1e-3, "float64": 1e-8}
ATOL = {"float32": 1e-4, "float64": 1e-10}
FLOOR = {"float32": 1e-5, "float64": 1e-13}
DTYPES = ("float32", "float64")
OPS = ("matmul", "linear", "patch_embed", "layernorm", "gelu", "softmax", "softmax_cross_entropy", "adamw_update")
SETTINGS = settings(max_examples=20, deadline=None)

dim = st.integers(1, 37)  # 1 row/column, odd sizes, sizes off any 2x2 block or SIMD width
seeds = st.integers(0, 2**32 - 1)


def impls(op):
    """Every registered CPU implementation but the reference, which is the oracle (in float32 its
    plain formulas lose more than these tolerances on degenerate rows, e.g. a 2-wide LayerNorm)."""
    return [pytest.param(i.name, id=i.name) for i in kernels.available(op, device="cpu") if i.name != "reference"]


def assert_close(pairs, dtype, what):
    """Every (name, got, want) within this file's tolerance, judged by the bench's compare."""
    result = bench.compare_all(pairs, dtype, (RTOL[dtype], ATOL[dtype], FLOOR[dtype]))
    assert result.ok, f"{what} {dtype}:\n" + "\n".join(result.lines)


def run_pair(op, name, dtype, args, params=None, seed=0):
    """Forward and backward of impl `name` on args cast to dtype against the reference in float64
    (bench.run_pair); returns the (name, got, want) pairs, out first."""
    pairs = bench.run_pair(op, name, bench.Inputs(args, params or {}).astype(dtype), seed=seed)
    assert_close(pairs, dtype, f"{op}/{name}")
    return pairs


def normal(seed, shape, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


def test_the_tolerance_here_is_the_one_kernels_bench_uses():
    assert bench.TOLERANCE == {d: (RTOL[d], ATOL[d], FLOOR[d]) for d in DTYPES}


# ---------------------------------------------------------------- dense
MATMUL_LAYOUTS = {  # (a shape, b shape) from M rows, Din reduction, Dout columns, L matrices
    "2d": lambda M, Din, Dout, L: ((M, Din), (Din, Dout)),
    "batched": lambda M, Din, Dout, L: ((L, M, Din), (L, Din, Dout)),
    "broadcast_a": lambda M, Din, Dout, L: ((M, Din), (L, 1, Din, Dout)),
    "broadcast_b": lambda M, Din, Dout, L: ((2, L, M, Din), (Din, Dout)),
    "vector_left": lambda M, Din, Dout, L: ((Din,), (L, Din, Dout)),
    "vector_right": lambda M, Din, Dout, L: ((L, M, Din), (Din,)),
    "dot": lambda M, Din, Dout, L: ((Din,), (Din,)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", impls("matmul"))
@SETTINGS
@given(layout=st.sampled_from(sorted(MATMUL_LAYOUTS)), M=dim, Din=dim, Dout=dim, L=st.integers(1, 3), seed=seeds)
def test_matmul_forward_and_backward_match_float64_reference(name, dtype, layout, M, Din, Dout, L, seed):
    sa, sb = MATMUL_LAYOUTS[layout](M, Din, Dout, L)
    run_pair("matmul", name, dtype, (normal(seed, sa), normal(seed + 1, sb)), seed=seed)


@contextmanager
def parallel_from(elements):
    """Move dense.py's size switch between NumPy and Numba for the bias add and bias gradient,
    so that small drawn shapes reach the Numba (prange) path too."""
    saved, dense._PARALLEL_FROM = dense._PARALLEL_FROM, elements
    try:
        yield
    finally:
        dense._PARALLEL_FROM = saved


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", impls("linear"))
@SETTINGS
@given(lead=st.lists(st.integers(1, 5), min_size=0, max_size=2), Din=dim, Dout=dim, bias=st.booleans(),
       numba_bias=st.booleans(), seed=seeds)
def test_linear_forward_and_backward_match_float64_reference(name, dtype, lead, Din, Dout, bias, numba_bias, seed):
    x = normal(seed, tuple(lead) + (Din,))  # (..., Din)
    w = normal(seed + 1, (Dout, Din), Din**-0.5)  # (Dout, Din)
    b = normal(seed + 2, (Dout,)) if bias else None
    with parallel_from(0 if numba_bias else dense._PARALLEL_FROM):
        run_pair("linear", name, dtype, (x, w, b), seed=seed)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(M=st.integers(1, 40), Din=dim, Dout=dim, bias=st.booleans(), chunks=st.integers(1, 5),
       transposed=st.booleans(), seed=seeds)
def test_linear_v2_blocks_of_rows_match_the_reference(dtype, M, Din, Dout, bias, chunks, transposed, seed):
    """cpu_v2 cuts its products into blocks of rows only from 16 MFLOP, which the drawn shapes above
    never reach: here the blocks (up to 5, more than the rows at times), and the transposed dw
    orientation, are forced on small shapes."""
    if transposed:  # a shape for which dw is computed as (x.T @ g).T
        Din = max(Din, Dout + 1)
        M = max(M, 4 * Din)
    x = normal(seed, (M, Din))
    w = normal(seed + 1, (Dout, Din), Din**-0.5)
    b = normal(seed + 2, (Dout,)) if bias else None
    saved = dense._v2_chunks, dense._DW_PARTS
    dense._v2_chunks, dense._DW_PARTS = (lambda M, Din, Dout: min(chunks, M)), (1 if transposed else saved[1])
    try:
        run_pair("linear", "cpu_v2", dtype, (x, w, b), seed=seed)
    finally:
        dense._v2_chunks, dense._DW_PARTS = saved


def test_linear_v2_gradients_are_bitwise_the_same_on_any_number_of_blocks(monkeypatch):
    """dw and db are summed over a fixed number of row blocks (_DW_PARTS), not one per thread, so a
    machine with more cores gives the same bits; dx's rows are each one product, in any block."""
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((300, 24), (40, 24), (40,)))
    g = rng.standard_normal((300, 40)).astype(np.float32)
    results = []
    for chunks in (1, 2, 3, 7):
        monkeypatch.setattr(dense, "_v2_chunks", lambda M, Din, Dout, c=chunks: c)
        y, cache = dense.linear_v2_forward(x, w, b)
        results.append((y, *dense.linear_v2_backward(g, cache)))
    for other in results[1:]:
        for got, want in zip(other, results[0]):
            np.testing.assert_array_equal(got, want)


def test_linear_v2_empty_batch_gives_empty_outputs_and_zero_gradients():
    x, w, b = np.ones((0, 4), np.float32), np.ones((5, 4), np.float32), np.ones(5, np.float32)
    y, cache = dense.linear_v2_forward(x, w, b)
    assert y.shape == (0, 5)
    dx, dw, db = dense.linear_v2_backward(np.ones((0, 5), np.float32), cache)
    assert dx.shape == (0, 4) and not dw.any() and not db.any() and dw.shape == (5, 4)


def test_linear_v2_mixed_dtypes_take_the_blas_path():
    x = np.ones((3, 4), np.float32)
    w = np.ones((5, 4), np.float64)
    y, cache = dense.linear_v2_forward(x, w, None)
    assert y.dtype == np.float64 and not isinstance(cache[0], str)  # cpu_blas's cache, not v2's
    dx, dw, db = dense.linear_v2_backward(np.ones((3, 5)), cache)
    np.testing.assert_allclose(dw, np.full((5, 4), 3.0))
    assert db is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", impls("patch_embed"))
@SETTINGS
@given(B=st.integers(1, 3), C=st.integers(1, 4), P=st.integers(1, 5), gh=st.integers(1, 4), gw=st.integers(1, 4),
       D=st.integers(1, 20), seed=seeds)
def test_patch_embed_forward_and_backward_match_float64_reference(name, dtype, B, C, P, gh, gw, D, seed):
    x = normal(seed, (B, C, gh * P, gw * P))  # (B, C, H, W)
    w = normal(seed + 1, (D, C, P, P), 1.0 / P)  # (D, C, P, P)
    run_pair("patch_embed", name, dtype, (x, w, normal(seed + 2, (D,))), seed=seed)


# ---------------------------------------------------------------- norm, activation, softmax
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", impls("layernorm"))
@SETTINGS
@given(lead=st.lists(st.integers(1, 6), min_size=1, max_size=3), D=st.integers(1, 70),
       scale=st.sampled_from([0.1, 1.0, 10.0]), shift=st.floats(-10, 10), seed=seeds)
def test_layernorm_forward_and_backward_match_float64_reference(name, dtype, lead, D, scale, shift, seed):
    x = normal(seed, tuple(lead) + (D,), scale) + shift  # (..., D)
    w, b = 1.0 + normal(seed + 1, (D,), 0.2), normal(seed + 2, (D,), 0.2)
    run_pair("layernorm", name, dtype, (x, w, b), {"eps": 1e-6}, seed=seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", impls("gelu"))
@SETTINGS
@given(shape=st.lists(st.integers(1, 40), min_size=1, max_size=3), scale=st.sampled_from([0.5, 3.0, 10.0]), seed=seeds)
def test_gelu_forward_and_backward_match_float64_reference(name, dtype, shape, scale, seed):
    run_pair("gelu", name, dtype, (normal(seed, tuple(shape), scale),), seed=seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", impls("softmax"))
@SETTINGS
@given(lead=st.lists(st.integers(1, 6), min_size=1, max_size=3), N=st.integers(1, 70),
       scale=st.sampled_from([1.0, 30.0, 1e4]), seed=seeds)
def test_softmax_forward_and_backward_match_float64_reference(name, dtype, lead, N, scale, seed):
    run_pair("softmax", name, dtype, (normal(seed, tuple(lead) + (N,), scale),), seed=seed)  # rows of N


# ---------------------------------------------------------------- loss
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", impls("softmax_cross_entropy"))
@SETTINGS
@given(B=st.integers(1, 40), K=st.integers(1, 30), smoothing=st.floats(0.0, 0.5),
       scale=st.sampled_from([1.0, 30.0, 1e4]), seed=seeds)
def test_softmax_cross_entropy_forward_and_backward_match_float64_reference(name, dtype, B, K, smoothing, scale, seed):
    logits = normal(seed, (B, K), scale)  # (B, K)
    labels = np.random.default_rng(seed + 1).integers(0, K, B)  # (B,)
    run_pair("softmax_cross_entropy", name, dtype, (logits, labels), {"label_smoothing": smoothing}, seed=seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["softmax", "softmax_cross_entropy"])
def test_logits_of_1e4_do_not_overflow(op, dtype):
    logits = np.array([[1e4, -1e4, 0.0, 9999.0], [-1e4, -1e4 + 1, -1e4 + 2, -1e4]])  # exp(1e4) = inf
    for impl in kernels.available(op, device="cpu"):
        args, params = ((logits,), {}) if op == "softmax" else ((logits, np.array([1, 2])), {"label_smoothing": 0.1})
        (_, out, _), *_ = run_pair(op, impl.name, dtype, args, params)
        assert np.isfinite(out).all(), f"{op}/{impl.name} overflowed: {out}"


# ---------------------------------------------------------------- optimizer
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", impls("adamw_update"))
@SETTINGS
@given(shape=st.lists(st.integers(1, 9), min_size=0, max_size=3), lr=st.sampled_from([1e-3, 0.1]),
       weight_decay=st.sampled_from([0.0, 0.05]), steps=st.integers(1, 4), seed=seeds)
def test_adamw_update_over_several_steps_matches_float64_reference(name, dtype, shape, lr, weight_decay, steps, seed):
    impl, ref = kernels.find("adamw_update", name), kernels.find("adamw_update", "reference")
    shape = tuple(shape)
    p = normal(seed, shape).astype(dtype)
    mine = [p, None, np.zeros(shape, dtype), np.zeros(shape, dtype)]
    want = [p.astype(np.float64), None, np.zeros(shape), np.zeros(shape)]  # the same values, in float64
    hyper = dict(lr=lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=weight_decay)
    for step in range(1, steps + 1):
        mine[1] = normal(seed + step, shape).astype(dtype)
        want[1] = mine[1].astype(np.float64)
        impl.forward(*mine, **hyper, step=step)
        ref.forward(*want, **hyper, step=step)  # two trajectories, each carried on in its own precision
        assert_close([(what, mine[k], want[k]) for what, k in (("p", 0), ("m", 2), ("v", 3))], dtype,
                     f"adamw_update/{name} after step {step}")


def test_every_op_of_these_modules_has_numba_versions():
    for op in OPS:
        names = {i.name for i in kernels.available(op, device="cpu")}
        assert "reference" in names and len(names) >= 2, f"{op}: only {sorted(names)}"


# ---------------------------------------------------------------- the shared float32 exp and erf
@njit(fastmath={"reassoc", "contract"})  # the flags of the normact and loss kernels that inline them
def _exp_erf_inlined(x, e, f):
    for i in range(x.size):
        e[i] = fastmath.fast_exp(x[i])
        f[i] = fastmath.fast_erf(x[i])


def test_float32_exp_and_erf_polynomials_are_as_accurate_as_their_docstring_says():
    """fastmath.py: exp within 8.3e-8 relative on [-87, 88] and 0 below, erf within 3.3e-7
    absolute, both inlined into a kernel compiled with {reassoc, contract} and (exp) through
    exp_shifted, the way attention calls it."""
    x = np.linspace(-87, 88, 1_000_001, dtype=np.float32)
    e, f = np.empty_like(x), np.empty_like(x)
    _exp_erf_inlined(x, e, f)
    want = np.exp(x.astype(np.float64))
    assert e.dtype == np.float32 and np.max(np.abs(e - want) / want) < 8.5e-8
    row = x.copy()
    fastmath.exp_shifted(row, np.float32(88.0), row.size)  # exp(x - 88): over [-175, 0]
    d = (x - np.float32(88.0)).astype(np.float64)  # the float32 difference the kernel takes
    kept = d >= -87
    assert np.max(np.abs(row[kept] - np.exp(d[kept])) / np.exp(d[kept])) < 8.5e-8
    assert np.all(row[~kept] == 0.0)
    u = np.linspace(-6, 6, 1_000_001, dtype=np.float32)
    _exp_erf_inlined(u, e, f)
    assert f.dtype == np.float32 and np.max(np.abs(f - erf(u.astype(np.float64)))) < 3.5e-7


def test_float32_exp_keeps_nan_and_sends_minus_inf_to_zero():
    x = np.array([np.nan, -np.inf, -1e4, 0.0], dtype=np.float32)
    e, f = np.empty_like(x), np.empty_like(x)
    _exp_erf_inlined(x, e, f)
    assert np.isnan(e[0]) and e[1] == 0.0 and e[2] == 0.0 and e[3] == 1.0
    row = x.copy()
    fastmath.exp_shifted(row, np.float32(0.0), row.size)
    np.testing.assert_array_equal(row, e)
