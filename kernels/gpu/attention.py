"""Attention forward and backward on the GPU: numbered versions, llm.c style.

Every version computes what kernels/reference/attention.py computes (Vaswani et al. 2017;
ViT paper, Appendix A), per batch b and head h with q, k, v (N, hd):
    S = scale * q @ k.T;  P = softmax(S);  O = P @ v
    dv = P.T @ dO;  dP = dO @ v.T;  dS = P * (dP - D), D_i = dO_i . O_i;  dq = scale dS k;  dk = scale dS.T q
The CUDA C is in attention.cu; its header explains the thread layouts.

Versions:

gpu_v1  the reference's algorithm in CuPy array calls: cuBLAS for the products (q k^T, P v and
        the four of the backward, strided-batched over the B*Hh heads), the softmax and its
        backward as array expressions (a launch each). Materialises the (B, Hh, N, N) scores
        and keeps P for the backward: memory O(N^2) per head. Runs with NumPy arrays too.
gpu_v2  one warp per row, fused: a query row's scores live in shared memory, never in global
        memory; the forward keeps the row log-sum-exp (B, Hh, N) instead of P. The backward
        recomputes P row by row, once for dq (a warp per query row) and once for dk, dv (a warp
        per key row): memory linear in N, but every score is a 32-lane loop over hd, each k and
        v row is read by every query row (through L1/L2), and nothing is reused in registers.
gpu_v3  flash-style tiles (Dao et al. 2022; FlashAttention-2's backward, Dao 2023): 64 x 64 tiles
        in shared memory, each of 256 threads holding a 4 x 4 block of scores and 4 rows of the
        output accumulators in registers, an online softmax (running max and sum per row,
        exp2 on log2-scaled scores); forward saves out and lse; backward one kernel per key
        tile (dk, dv) and one per query tile (dq), both recomputing P from q, k and lse, no
        atomics. Memory linear in N; plain FP32 FMA (no tensor cores), float32-exact. Head width
        up to 128 (rounded up to 16 inside, in float64 up to 64 for the backward's shared memory).

Cache conventions as on the CPU: v1 keeps (q, k, v, P, scale); v2 and v3 keep
(q, k, v, out, lse, scale), never an N x N array.

Measured: numbers owed (no GPU in the session that wrote this). `python -m kernels.bench
attention --device cuda` for the CIFAR shape (B=128, Hh=3, N=65, hd=64) and N=1024;
benchmarks/gpu_train_step.py attention compares v3 with torch's scaled_dot_product_attention
in float32 at N=1024, hd=64, time and memory (target: within 2x, memory linear in N).
Expectations to check: at N=65 v3 wastes half of its second 64-row tile (65 = 64 + 1), so v2
or v1 may win there; at N=1024 v3 should lead v2 by several times and v1 on memory.

Default (kernels/registry.py): gpu_v3.
"""
from __future__ import annotations

import numpy as np

from ..registry import register
from . import runtime
from .runtime import ctype, xp_of

WIDTHS = tuple(range(16, 129, 16))  # v3's template head widths (hd rounded up to one of these)
DECLARED = {"attention.cu": [f"{k}<{t}>" for k in ("attn_rowdot", "attn_fwd_v2", "attn_bwd_dq_v2", "attn_bwd_dkdv_v2")
                             for t in ("float", "double")]
            + [f"{k}<{t}, {w}>" for k in ("flash_fwd_v3", "flash_bwd_dkdv_v3", "flash_bwd_dq_v3")
               for t in ("float", "double") for w in WIDTHS]}
FB = 64  # rows of a v3 tile


def _check(q, k, v):
    if q.ndim != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"attention wants q, k, v of one shape (B, Hh, N, hd), got {q.shape}, {k.shape}, {v.shape}")
    return q.shape[0] * q.shape[1], q.shape[2], q.shape[3]  # heads, N, hd


def _fn(name, dtype, shared=0):
    return runtime.function("attention.cu", f"{name}<{ctype(dtype)}>", shared)


def rowdot(a, b):
    """(..., hd) x (..., hd) -> (...): the row dot products D_i = dO_i . O_i."""
    out = xp_of(a).empty(a.shape[:-1], a.dtype)
    rows = out.size
    if rows:
        grid = (runtime.blocks_for(rows, 8, cap=65535),)
        _fn("attn_rowdot", a.dtype)(grid, (256,), (a, b, out, np.int64(rows), np.int32(a.shape[-1])))
    return out


# ---------------------------------------------------------------- v1: cuBLAS + array softmax
def v1_forward(q, k, v, scale):
    xp = xp_of(q)
    _check(q, k, v)
    s = xp.matmul(q, k.swapaxes(-1, -2)) * scale  # (B, Hh, N, N)
    s -= s.max(axis=-1, keepdims=True)
    p = xp.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return xp.matmul(p, v), (q, k, v, p, scale)


def v1_backward(grad, cache):
    q, k, v, p, scale = cache
    xp = xp_of(q)
    dv = xp.matmul(p.swapaxes(-1, -2), grad)  # (B, Hh, N, hd)
    dp = xp.matmul(grad, v.swapaxes(-1, -2))  # (B, Hh, N, N)
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    ds *= scale
    return xp.matmul(ds, k), xp.matmul(ds.swapaxes(-1, -2), q), dv


# ---------------------------------------------------------------- v2: a warp per row
def _v2_shared(per_warp, dtype):
    return 4 * per_warp * np.dtype(dtype).itemsize


def v2_forward(q, k, v, scale):
    xp = xp_of(q)
    BH, N, hd = _check(q, k, v)
    out = xp.empty_like(q)
    lse = xp.empty(q.shape[:3], q.dtype)  # (B, Hh, N)
    if q.size:
        shared = _v2_shared(hd + N, q.dtype)
        _fn("attn_fwd_v2", q.dtype, shared)((-(-N // 4), BH), (128,),
                                            (q, k, v, out, lse, np.int32(N), np.int32(hd),
                                             runtime.scalar(q.dtype, scale)), shared_mem=shared)
    return out, (q, k, v, out, lse, scale)


def v2_backward(grad, cache):
    q, k, v, out, lse, scale = cache
    xp = xp_of(q)
    BH, N, hd = _check(q, k, v)
    dq, dk, dv = xp.empty_like(q), xp.empty_like(k), xp.empty_like(v)
    if q.size:
        D = rowdot(grad, out)  # (B, Hh, N)
        common = (np.int32(N), np.int32(hd), runtime.scalar(q.dtype, scale))
        shared = _v2_shared(2 * hd + N, q.dtype)
        _fn("attn_bwd_dq_v2", q.dtype, shared)((-(-N // 4), BH), (128,), (q, k, v, grad, lse, D, dq) + common,
                                               shared_mem=shared)
        shared = _v2_shared(2 * hd + 2 * N, q.dtype)
        _fn("attn_bwd_dkdv_v2", q.dtype, shared)((-(-N // 4), BH), (128,), (q, k, v, grad, lse, D, dk, dv) + common,
                                                 shared_mem=shared)
    return dq, dk, dv


# ---------------------------------------------------------------- v3: flash tiles
def _width(hd):
    """hd rounded up to a multiple of 16: the template instance that runs."""
    w = 16 * -(-hd // 16)
    if w > WIDTHS[-1]:
        raise ValueError(f"attention gpu_v3 handles head widths up to {WIDTHS[-1]}, got hd={hd}; choose "
                         "gpu_v2 or gpu_v1 for this model (kernels.use(attention='gpu_v2'))")
    return w


def _v3(name, dtype, hd, tiles):
    """The kernel for this width, with `tiles` shared (64, HD + 1) tiles plus whatever its name adds."""
    W = _width(hd)
    item = np.dtype(dtype).itemsize
    extra = {"flash_fwd_v3": FB * (FB + 1), "flash_bwd_dkdv_v3": 2 * FB * (FB + 1) + 2 * FB,
             "flash_bwd_dq_v3": FB * (FB + 1)}[name]
    shared = (tiles * FB * (W + 1) + extra) * item
    return runtime.function("attention.cu", f"{name}<{ctype(dtype)}, {W}>", shared), shared


def v3_forward(q, k, v, scale):
    xp = xp_of(q)
    BH, N, hd = _check(q, k, v)
    out = xp.empty_like(q)
    lse = xp.empty(q.shape[:3], q.dtype)
    if q.size:
        kernel, shared = _v3("flash_fwd_v3", q.dtype, hd, 3)
        kernel((-(-N // FB), BH), (256,), (q, k, v, out, lse, np.int32(N), np.int32(hd),
                                           runtime.scalar(q.dtype, scale)), shared_mem=shared)
    return out, (q, k, v, out, lse, scale)


def v3_backward(grad, cache):
    q, k, v, out, lse, scale = cache
    xp = xp_of(q)
    BH, N, hd = _check(q, k, v)
    dq, dk, dv = xp.empty_like(q), xp.empty_like(k), xp.empty_like(v)
    if q.size:
        D = rowdot(grad, out)
        common = (np.int32(N), np.int32(hd), runtime.scalar(q.dtype, scale))
        grid = (-(-N // FB), BH)
        kernel, shared = _v3("flash_bwd_dkdv_v3", q.dtype, hd, 4)
        kernel(grid, (256,), (q, k, v, grad, lse, D, dk, dv) + common, shared_mem=shared)
        kernel, shared = _v3("flash_bwd_dq_v3", q.dtype, hd, 4)
        kernel(grid, (256,), (q, k, v, grad, lse, D, dq) + common, shared_mem=shared)
    return dq, dk, dv


def flops(B, Hh, N, hd):
    """(forward, backward) multiply-adds x 2 of the nominal algorithm (4 and 8 N^2 hd per head)."""
    return 4 * B * Hh * N * N * hd, 8 * B * Hh * N * N * hd


register("attention", "gpu_v1", v1_forward, v1_backward, device="gpu",
         description="cuBLAS products + CuPy array softmax (the reference's algorithm); keeps the N x N probabilities")
register("attention", "gpu_v2", v2_forward, v2_backward, device="gpu",
         description="CUDA C (attention.cu): a warp per row, scores in shared memory, lse saved")
register("attention", "gpu_v3", v3_forward, v3_backward, device="gpu",
         description="CUDA C (attention.cu): flash tiles 64x64, online softmax, recompute from lse in backward")
