"""Shared hypothesis strategies and gradient-check helpers for the minivit tests.

    numerical_grad(f, arrays)          float64 central differences of a scalar function
    check_backward(fn, arrays, seed)   autograd vs central differences for loss = sum(fn(...) * R)
    reference_kernels()                pin every op to its NumPy reference (exact, float64-capable)

Shapes stay small (sides <= 4) so that the O(size) central-difference loops are cheap.
"""
from __future__ import annotations

import contextlib

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kernels
from minivit.autograd import Tensor, no_grad

# Every property test: few examples, no deadline (the machine is shared and Numba may compile).
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])

seeds = st.integers(min_value=0, max_value=2**31 - 1)


def shapes(min_dims=0, max_dims=3, max_side=4):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=max_side)


def broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3):
    """Tuples of `num_shapes` shapes that broadcast together, e.g. ((3, 1, 4), (4,))."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=num_shapes, min_dims=0, max_dims=max_dims, min_side=1, max_side=max_side
    ).map(lambda r: r.input_shapes)


def normal(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def away_from_zero(rng, shape, low=0.5, high=2.0, dtype=np.float64):
    """Values with |x| in [low, high] and random sign (denominators)."""
    sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    return (sign * rng.uniform(low, high, shape)).astype(dtype)


def positive(rng, shape, low=0.5, high=2.0, dtype=np.float64):
    return rng.uniform(low, high, shape).astype(dtype)


def numerical_grad(f, arrays, eps=1e-6):
    """Central differences (f(a + eps e_i) - f(a - eps e_i)) / 2 eps for every entry of every
    array; `f(*arrays)` must return a Python float. Works in float64 on private copies."""
    arrays = [np.array(a, dtype=np.float64, order="C") for a in arrays]  # C order: reshape(-1) is a view
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        flat, gflat = a.reshape(-1), g.reshape(-1)  # views into a and g
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            plus = f(*arrays)
            flat[i] = old - eps
            minus = f(*arrays)
            flat[i] = old
            gflat[i] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def autograd_grads(fn, arrays, upstream):
    """Gradients of sum(fn(*tensors) * upstream) by backward(upstream) (no Mul/Sum involved)."""
    tensors = [Tensor(np.array(a, copy=True), requires_grad=True) for a in arrays]
    out = fn(*tensors)
    assert out.shape == np.shape(upstream), (out.shape, np.shape(upstream))
    out.backward(np.asarray(upstream, dtype=out.dtype))
    return out, [t.grad for t in tensors]


def check_backward(fn, arrays, seed, rtol=1e-5, atol=1e-7, eps=1e-6):
    """Assert that backward of `fn` (Tensors -> Tensor) matches float64 central differences,
    with a random upstream gradient R, i.e. for loss = sum(fn(*x) * R)."""
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    with no_grad():
        out_shape = fn(*[Tensor(a) for a in arrays]).shape
    upstream = rng.standard_normal(out_shape)
    out, analytic = autograd_grads(fn, arrays, upstream)

    def loss(*arrs):
        with no_grad():
            return float((fn(*[Tensor(a) for a in arrs]).data * upstream).sum())

    numeric = numerical_grad(loss, arrays, eps=eps)
    for i, (a, g, n) in enumerate(zip(arrays, analytic, numeric)):
        assert g is not None, f"input {i} got no gradient"
        assert g.shape == a.shape, f"input {i}: grad shape {g.shape} != input shape {a.shape}"
        assert g.dtype == np.float64, f"input {i}: grad dtype {g.dtype}"
        np.testing.assert_allclose(g, n, rtol=rtol, atol=atol, err_msg=f"gradient of input {i}")
    return out, analytic


@contextlib.contextmanager
def reference_kernels():
    """Run every fused op on its NumPy reference kernel inside the block (kernels' reading mode)."""
    with kernels.use("reference"):
        yield
