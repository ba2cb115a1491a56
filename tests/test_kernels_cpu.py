"""Every registered CPU implementation of matmul, linear, patch_embed, layernorm, gelu, softmax,
softmax_cross_entropy and adamw_update equals the NumPy reference run in float64.

The implementations are read from the registry at collection time, so a version added later is
tested without touching this file (the reference itself is the oracle, not a subject). Inputs
are drawn by hypothesis: odd sizes, sizes that are not a multiple of any tile, single rows,
logits up to 1e4 (a naive exp overflows at 89 in float32), label smoothing in [0, 0.5]. The float64 reference gets the same inputs cast up exactly.

Tolerance, per element, with want the float64 reference and scale = max|want| of that array:
    |got - want| <= ATOL[dtype] * scale + RTOL[dtype] * |want| + FLOOR[dtype]
    float32: RTOL 1e-3, ATOL 1e-4,  FLOOR 1e-5   (float32 kernels accumulate in float32 or better)
    float64: RTOL 1e-8, ATOL 1e-10, FLOOR 1e-13  (catches a float64 kernel computing in float32)
FLOOR covers outputs that are tiny differences of O(1) terms, where float32 rounding of the terms
is all that is left: gelu(-6.3) = -3.7e-10 but 0.5 * (1 + erf) is 0 in float32; a 2-wide
LayerNorm's dx is ~1e-4 from terms of ~1. Every output must also have the dtype of the inputs.
"""
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels

pytest.importorskip("numba", reason="the CPU kernels are Numba")
from kernels.cpu import dense  # noqa: E402

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


def reference(op):
    return next(i for i in kernels.available(op, device="cpu") if i.name == "reference")


def assert_close(got, want, dtype, what):
    if want is None:
        assert got is None, f"{what}: expected None"
        return
    got = np.asarray(got)
    assert got.dtype == np.dtype(dtype), f"{what}: dtype {got.dtype}, inputs are {dtype}"
    assert got.shape == np.shape(want), f"{what}: shape {got.shape} != {np.shape(want)}"
    want = np.asarray(want, dtype=np.float64)
    scale = float(np.abs(want).max(initial=0.0)) or 1.0
    err = np.abs(got.astype(np.float64) - want)
    bad = err > ATOL[dtype] * scale + RTOL[dtype] * np.abs(want) + FLOOR[dtype]
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(f"{what}: {bad.sum()}/{bad.size} differ, first at {i}: got {got[i]!r}, "
                             f"want {want[i]!r}; max abs err {err.max():.3g} (scale {scale:.3g})")


def run_pair(op, name, dtype, args, params=None, seed=0):
    """forward and backward of impl `name` on args cast to dtype vs the reference in float64."""
    params = params or {}
    impl = next(i for i in kernels.available(op, device="cpu") if i.name == name)
    ref = reference(op)
    cast = lambda t: tuple(a.astype(t) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args)
    mine, up = cast(dtype), cast(np.float64)
    out, cache = impl.forward(*mine, **params)
    want, ref_cache = ref.forward(*up, **params)
    assert_close(out, want, dtype, f"{op}/{name} forward")
    grad = np.random.default_rng(seed).standard_normal(np.shape(want)).astype(dtype)
    grads = impl.backward(grad, cache)
    want_grads = ref.backward(grad.astype(np.float64), ref_cache)
    assert len(grads) == len(want_grads), f"{op}/{name}: {len(grads)} gradients, reference {len(want_grads)}"
    for k, (g, w) in enumerate(zip(grads, want_grads)):
        assert_close(g, w, dtype, f"{op}/{name} grad[{k}]")


def normal(seed, shape, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


# ---------------------------------------------------------------- dense
MATMUL_LAYOUTS = {  # (a shape, b shape) from (M, K, N, L)
    "2d": lambda M, K, N, L: ((M, K), (K, N)),
    "batched": lambda M, K, N, L: ((L, M, K), (L, K, N)),
    "broadcast_a": lambda M, K, N, L: ((M, K), (L, 1, K, N)),
    "broadcast_b": lambda M, K, N, L: ((2, L, M, K), (K, N)),
    "vector_left": lambda M, K, N, L: ((K,), (L, K, N)),
    "vector_right": lambda M, K, N, L: ((L, M, K), (K,)),
    "dot": lambda M, K, N, L: ((K,), (K,)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", impls("matmul"))
@SETTINGS
@given(layout=st.sampled_from(sorted(MATMUL_LAYOUTS)), M=dim, K=dim, N=dim, L=st.integers(1, 3), seed=seeds)
def test_matmul_forward_and_backward_match_float64_reference(name, dtype, layout, M, K, N, L, seed):
    sa, sb = MATMUL_LAYOUTS[layout](M, K, N, L)
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
@given(lead=st.lists(st.integers(1, 6), min_size=1, max_size=3), K=st.integers(1, 70),
       scale=st.sampled_from([1.0, 30.0, 1e4]), seed=seeds)
def test_softmax_forward_and_backward_match_float64_reference(name, dtype, lead, K, scale, seed):
    run_pair("softmax", name, dtype, (normal(seed, tuple(lead) + (K,), scale),), seed=seed)


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
        run_pair(op, impl.name, dtype, args, params)
        out, _ = impl.forward(*(a.astype(dtype) if a.dtype.kind == "f" else a for a in args), **params)
        assert np.isfinite(out).all(), f"{op}/{impl.name} overflowed: {out}"


# ---------------------------------------------------------------- optimizer
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", impls("adamw_update"))
@SETTINGS
@given(shape=st.lists(st.integers(1, 9), min_size=0, max_size=3), lr=st.sampled_from([1e-3, 0.1]),
       weight_decay=st.sampled_from([0.0, 0.05]), steps=st.integers(1, 4), seed=seeds)
def test_adamw_update_over_several_steps_matches_float64_reference(name, dtype, shape, lr, weight_decay, steps, seed):
    impl = next(i for i in kernels.available("adamw_update", device="cpu") if i.name == name)
    shape = tuple(shape)
    p = normal(seed, shape)
    mine = [p.astype(dtype), None, np.zeros(shape, dtype), np.zeros(shape, dtype)]
    ref = [p.copy(), None, np.zeros(shape), np.zeros(shape)]
    hyper = dict(lr=lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=weight_decay)
    for step in range(1, steps + 1):
        g = normal(seed + step, shape)
        mine[1], ref[1] = g.astype(dtype), g
        impl.forward(*mine, **hyper, step=step)
        reference("adamw_update").forward(*ref, **hyper, step=step)
        for what, k in (("p", 0), ("m", 2), ("v", 3)):
            assert_close(mine[k], ref[k], dtype, f"adamw_update/{name} {what} after step {step}")


def test_every_op_of_these_modules_has_numba_versions():
    for op in OPS:
        names = {i.name for i in kernels.available(op, device="cpu")}
        assert "reference" in names and len(names) >= 2, f"{op}: only {sorted(names)}"
