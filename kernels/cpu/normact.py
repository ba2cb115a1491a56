"""LayerNorm, GELU and softmax over the last axis on the CPU in Numba (ViT paper, Eq. 2-3;
Ba et al. 2016; Hendrycks & Gimpel 2016). The maths is in kernels/reference/normact.py.

Shape letters: M rows (every leading axis flattened, B*N for a ViT activation), D the last axis
(N, the keys, for softmax over attention logits).
Kernels run prange over rows (elements for gelu); a row (D=192 floats) stays in L1, so "one pass"
means each row is read from memory once per direction. Row statistics are summed in float64.

Versions:

    layernorm cpu_v1  forward fused per row (mean, two-pass variance in L1, normalise, scale and
                      shift), saving only mean and rstd per row (M floats, not M*D); the backward
                      recomputes xhat from x and does both row reductions and dx in one sweep;
                      dw and db go to per-chunk float64 partials (a fixed 32 chunks, so results do
                      not depend on the thread count), then are added.
    layernorm cpu_v2  as v1, but the forward also writes xhat (the reference's cache) and the
                      backward reads it instead of recomputing: one more M*D array written and
                      kept alive until the backward, for no measurable gain (below).
    gelu cpu_v1       y = x * Phi(x) with math.erf, caching x only. Without Intel's SVML each erf
                      and exp is a scalar libm call, which also blocks LLVM's vectoriser.
    gelu cpu_v2       the forward also stores Phi(x) (as the reference does), so the backward
                      needs one exp per element and no erf.
    gelu cpu_v3       float32 through the polynomials of fastmath.py, which LLVM vectorises (8
                      AVX2 lanes): erf as a clamped odd/even rational function, exp as Cephes'
                      expf with 2^n built from exponent bits. float64 keeps libm. Caches x only.
    softmax cpu_v1    max, exp-and-sum, scale, one row at a time with libm exp; backward dot(dy, y)
                      then dx, fused per row.
    softmax cpu_v2    as v1 with the vectorised float32 exp (fastmath.fast_exp).

Measured on the 2-core AMD EPYC (Zen 3) dev box, float32, CIFAR ViT shapes (M = B*N = 128*65 =
8320 rows; LayerNorm D=192, GELU on the MLP's D=768, softmax over the (128, 3, 65, 65) attention
logits), while other jobs kept its load average at 3-6; medians of 5, implementations in turns:

    python -m kernels.bench all

    op         impl       fwd ms   bwd ms   fwd GB/s  bwd GB/s  x ref fwd  x ref bwd
    layernorm  reference    6.54     9.21      2.0       2.1       1.00       1.00
               cpu_v1       1.24     2.23     10.3       8.6       5.29       4.13
               cpu_v2       1.85     2.05      6.9       9.3       3.53       4.49
    gelu       reference  123.4     45.2       0.4       1.7       1.00       1.00
               cpu_v3       6.40     4.30      8.0      17.8      19.3       10.5
               cpu_v2      49.8     34.1       1.0       2.2       2.48       1.32
               cpu_v1      47.4     80.0       1.1       1.0       2.61       0.56
    softmax    reference    9.76     4.09      1.3       4.8       1.00       1.00
               cpu_v2       2.23     0.98      5.8      19.8       4.38       4.17
               cpu_v1       8.93     1.12      1.5      17.3       1.09       3.64

LayerNorm v1 against v2, 41 interleaved rounds: forward 1.37 vs 1.73 ms, backward 2.76 vs 2.80.
Defaults (the table in kernels/registry.py): layernorm cpu_v1 (v2's speed, less memory), gelu
cpu_v3, softmax cpu_v2. Moving the exp and erf to fastmath.py changed neither gelu v3 nor softmax
v2 beyond the noise (fastmath.py has the before/after table, on the Intel box that replaced the
AMD one).
"""
import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ..registry import register
from .fastmath import erff, expf, fast_exp

_FASTMATH = {"reassoc", "contract"}  # vectorised row sums; no nnan/ninf (inf must stay inf)
_CHUNKS = 32  # row chunks for the dw/db partial sums: fixed, so results are reproducible
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _c(a, dtype=None):
    """C-contiguous and writable, copying only if needed: a read-only or strided array would be
    another type to Numba, and another compilation of the kernel."""
    return np.require(a, dtype=dtype, requirements=("C", "W"))


def _rows(a):
    """(..., D) -> C-contiguous (M, D): one compiled signature per dtype."""
    return _c(a).reshape(-1, a.shape[-1])


# ---------------------------------------------------------------- GELU's Phi and phi, float32 vectorised
def gelu_cdf(x):
    """Phi(x) = 0.5 (1 + erf(x / sqrt 2)) in x's own precision (inside Numba)."""
    return 0.5 * (1.0 + math.erf(x * _SQRT_HALF))


def gelu_pdf(x):
    """phi(x) = exp(-x^2 / 2) / sqrt(2 pi) in x's own precision (inside Numba)."""
    return math.exp(-0.5 * x * x) * _INV_SQRT_2PI


@overload(gelu_cdf, inline="always", jit_options={"cache": True})
def _gelu_cdf_impl(x):
    if x == types.float32:
        return lambda x: np.float32(0.5) * (np.float32(1.0) + erff(x * np.float32(_SQRT_HALF)))
    return lambda x: 0.5 * (1.0 + math.erf(x * _SQRT_HALF))


@overload(gelu_pdf, inline="always", jit_options={"cache": True})
def _gelu_pdf_impl(x):
    if x == types.float32:
        return lambda x: expf(np.float32(-0.5) * x * x) * np.float32(_INV_SQRT_2PI)
    return lambda x: math.exp(-0.5 * x * x) * _INV_SQRT_2PI


# ---------------------------------------------------------------- layernorm
@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _layernorm_fwd(x, w, b, eps, y, mean, rstd, xhat):
    """x, y (M, D); mean, rstd (M,) float64; xhat (M, D) is written only if it has M rows."""
    M, D = x.shape
    save_xhat = xhat.shape[0] == M
    for i in prange(M):
        s = 0.0
        for j in range(D):
            s += x[i, j]
        mu = s / D
        v = 0.0
        for j in range(D):  # two-pass variance: the row is in L1, and no cancellation
            d = x[i, j] - mu
            v += d * d
        r = 1.0 / math.sqrt(v / D + eps)
        mean[i], rstd[i] = mu, r
        if save_xhat:
            for j in range(D):
                h = (x[i, j] - mu) * r
                xhat[i, j] = h
                y[i, j] = h * w[j] + b[j]
        else:
            for j in range(D):
                y[i, j] = (x[i, j] - mu) * r * w[j] + b[j]


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _layernorm_bwd(g, x, xhat, w, mean, rstd, dx, dw_part, db_part):
    """dx = rstd * (gh - mean(gh) - xhat * mean(gh * xhat)), gh = g * w; xhat is read from
    `xhat` if it has M rows, else recomputed from x, mean, rstd. dw/db go to (chunks, D)."""
    M, D = g.shape
    nc = dw_part.shape[0]
    use_xhat = xhat.shape[0] == M
    for c in prange(nc):
        for i in range(c * M // nc, (c + 1) * M // nc):
            mu, r = mean[i], rstd[i]
            s_gh, s_ghx = 0.0, 0.0
            for j in range(D):
                h = xhat[i, j] if use_xhat else (x[i, j] - mu) * r
                gh = g[i, j] * w[j]
                s_gh += gh
                s_ghx += gh * h
                dw_part[c, j] += g[i, j] * h
                db_part[c, j] += g[i, j]
            s_gh /= D
            s_ghx /= D
            for j in range(D):
                h = xhat[i, j] if use_xhat else (x[i, j] - mu) * r
                dx[i, j] = r * (g[i, j] * w[j] - s_gh - h * s_ghx)


def _layernorm_forward(x, w, b, eps, save_xhat):
    x2 = _rows(x)  # (M, D)
    M, D = x2.shape
    y = np.empty_like(x2)
    mean, rstd = np.empty(M), np.empty(M)
    xhat = np.empty((M if save_xhat else 0, D), dtype=x2.dtype)
    w = _c(w, x2.dtype)
    _layernorm_fwd(x2, w, _c(b, x2.dtype), float(eps), y, mean, rstd, xhat)
    cache = (np.empty((0, D), x2.dtype) if save_xhat else x2, xhat, w, mean, rstd, x.shape)
    return y.reshape(x.shape), cache


def _layernorm_backward(grad, cache):
    x2, xhat, w, mean, rstd, shape = cache
    g2 = _rows(grad)  # (M, D)
    M, D = g2.shape
    dx = np.empty_like(g2)
    nc = max(1, min(_CHUNKS, M))
    dw_part, db_part = np.zeros((nc, D)), np.zeros((nc, D))
    _layernorm_bwd(g2, x2, xhat, w, mean, rstd, dx, dw_part, db_part)
    return dx.reshape(shape), dw_part.sum(axis=0).astype(g2.dtype), db_part.sum(axis=0).astype(g2.dtype)


def layernorm_v1_forward(x, w, b, eps=1e-6):
    return _layernorm_forward(x, w, b, eps, save_xhat=False)


def layernorm_v2_forward(x, w, b, eps=1e-6):
    return _layernorm_forward(x, w, b, eps, save_xhat=True)


layernorm_v1_backward = layernorm_v2_backward = _layernorm_backward


# ---------------------------------------------------------------- gelu
@njit(parallel=True, cache=True)
def _gelu_fwd(x, y, cdf):
    """y = x * Phi(x) elementwise on flat arrays; cdf gets Phi(x) if it has x's size."""
    save = cdf.size == x.size
    for i in prange(x.size):
        v = np.float64(x[i])
        phi = 0.5 * (1.0 + math.erf(v * _SQRT_HALF))
        y[i] = v * phi
        if save:
            cdf[i] = phi


@njit(parallel=True, cache=True)
def _gelu_bwd(g, x, cdf, dx):
    """dx = g * (Phi(x) + x * phi(x)); Phi read from cdf if it has x's size, else recomputed."""
    have = cdf.size == x.size
    for i in prange(x.size):
        v = np.float64(x[i])
        phi = np.float64(cdf[i]) if have else 0.5 * (1.0 + math.erf(v * _SQRT_HALF))
        dx[i] = g[i] * (phi + v * math.exp(-0.5 * v * v) * _INV_SQRT_2PI)


@njit(parallel=True, cache=True, fastmath={"contract"})
def _gelu_fwd_v3(x, y):
    """y = x * Phi(x) in x's precision: vectorised polynomial erf for float32."""
    for i in prange(x.size):
        y[i] = x[i] * gelu_cdf(x[i])


@njit(parallel=True, cache=True, fastmath={"contract"})
def _gelu_bwd_v3(g, x, dx):
    for i in prange(x.size):
        v = x[i]
        dx[i] = g[i] * (gelu_cdf(v) + v * gelu_pdf(v))


def _gelu_forward(x, save_cdf):
    x1 = _c(x).ravel()
    y = np.empty_like(x1)
    cdf = np.empty(x1.size if save_cdf else 0, dtype=x1.dtype)
    _gelu_fwd(x1, y, cdf)
    return y.reshape(x.shape), (x1, cdf, x.shape)


def gelu_backward(grad, cache):
    x1, cdf, shape = cache
    dx = np.empty_like(x1)
    _gelu_bwd(_c(grad, x1.dtype).ravel(), x1, cdf, dx)
    return (dx.reshape(shape),)


def gelu_v1_forward(x):
    return _gelu_forward(x, save_cdf=False)


def gelu_v2_forward(x):
    return _gelu_forward(x, save_cdf=True)


def gelu_v3_forward(x):
    x1 = _c(x).ravel()
    y = np.empty_like(x1)
    _gelu_fwd_v3(x1, y)
    return y.reshape(x.shape), (x1, x.shape)


def gelu_v3_backward(grad, cache):
    x1, shape = cache
    dx = np.empty_like(x1)
    _gelu_bwd_v3(_c(grad, x1.dtype).ravel(), x1, dx)
    return (dx.reshape(shape),)


# ---------------------------------------------------------------- softmax
@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _softmax_fwd(x, y):
    """Row softmax of x (M, N) into y, shifted by the row max so exp never overflows; N is the row
    length (the keys, for attention logits (B, Hh, N, N) seen as M = B*Hh*N rows)."""
    M, N = x.shape
    for i in prange(M):
        m = x[i, 0]
        for j in range(1, N):
            m = max(m, x[i, j])
        s = 0.0
        for j in range(N):
            e = math.exp(np.float64(x[i, j]) - m)
            y[i, j] = e
            s += e
        inv = 1.0 / s
        for j in range(N):
            y[i, j] *= inv


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _softmax_fwd_v2(x, y):
    """As _softmax_fwd, but exp in x's precision: the vectorised polynomial for float32."""
    M, N = x.shape
    for i in prange(M):
        m = x[i, 0]
        for j in range(1, N):
            m = max(m, x[i, j])
        s = 0.0
        for j in range(N):
            e = fast_exp(x[i, j] - m)
            y[i, j] = e
            s += e
        inv = 1.0 / s
        for j in range(N):
            y[i, j] *= inv


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _softmax_bwd(g, y, dx):
    """dx = y * (g - sum(g * y)) per row."""
    M, N = g.shape
    for i in prange(M):
        s = 0.0
        for j in range(N):
            s += g[i, j] * y[i, j]
        for j in range(N):
            dx[i, j] = y[i, j] * (g[i, j] - s)


def _softmax_forward(kernel, x):
    x2 = _rows(x)  # (M, N)
    y = np.empty_like(x2)
    kernel(x2, y)
    return y.reshape(x.shape), (y,)


def softmax_v1_forward(x):
    return _softmax_forward(_softmax_fwd, x)


def softmax_v2_forward(x):
    return _softmax_forward(_softmax_fwd_v2, x)


def softmax_backward(grad, cache):
    (y,) = cache
    dx = np.empty_like(y)
    _softmax_bwd(_rows(grad).astype(y.dtype, copy=False), y, dx)
    return (dx.reshape(grad.shape),)


# ---------------------------------------------------------------- registry
register("layernorm", "cpu_v1", layernorm_v1_forward, layernorm_v1_backward,
         description="Numba: fused row pass, saves mean/rstd; backward recomputes xhat")
register("layernorm", "cpu_v2", layernorm_v2_forward, layernorm_v2_backward,
         description="Numba: fused row pass, saves xhat (like the reference)")
register("gelu", "cpu_v1", gelu_v1_forward, gelu_backward,
         description="Numba: prange, math.erf; caches x only, backward recomputes Phi")
register("gelu", "cpu_v2", gelu_v2_forward, gelu_backward,
         description="Numba: prange, math.erf; caches Phi(x), backward needs only exp")
register("gelu", "cpu_v3", gelu_v3_forward, gelu_v3_backward,
         description="Numba: float32 via vectorisable polynomial erf/exp (AVX2); float64 libm")
register("softmax", "cpu_v1", softmax_v1_forward, softmax_backward,
         description="Numba: prange over rows, max-shifted libm exp, fused backward")
register("softmax", "cpu_v2", softmax_v2_forward, softmax_backward,
         description="Numba: as v1 with the vectorisable float32 exp polynomial")
