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

Launches (v2, v3): the kernels read blockIdx.y as the head, and grid y stops at 65,535, so the
heads go in chunks of at most 65,535, one launch each on views that start at the chunk's first
head (head_launches; B * Hh = 98,304 at inference with 8192 images x 12 heads is two). Entry:
q, k, v and the gradient must share one float dtype and shape; strided ones (unbind's views) are
copied to C order first, since a kernel walks a bare pointer. v3's shared memory per block
(v3_shared_bytes) must fit the card's opt-in limit: its 64-row tiles are fixed in attention.cu, so
the float64 backward needs 200,704 B at hd 64 (an H100's 227 KiB, not an A100's 163 KiB) and the
float32 backward at hd 80 or more exceeds an L4's or RTX 4090's 99 KiB; there v3 refuses and names
gpu_v2.

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


def _operands(op, q, k, v, grad=None):
    """The raw kernels' entry check: q, k, v (and grad) of one float dtype and one (B, Hh, N, hd)
    shape, returned C-contiguous (the kernels walk bare pointers as dense heads; a strided view,
    such as one of unbind's q, k, v, is copied here, explicitly, rather than read as its base)."""
    _check(q, k, v)
    runtime.check_operands(op, {"q": q, "k": k, "v": v, "grad": grad}, shapes={"grad": q.shape})
    return runtime.contiguous(q, k, v, grad)


def head_launches(BH, N, rows_per_block):
    """[(grid, h0, h1), ...]: the launches of a kernel whose blockIdx.y is the head (grid y is at
    most 65,535, and B * Hh can exceed it: 8192 images x 12 heads at inference), each over heads
    h0 .. h1 - 1 with grid (ceil(N / rows_per_block), h1 - h0). The heads cover range(BH) once."""
    return [(runtime.check_grid((-(-N // rows_per_block), h1 - h0)), h0, h1) for h0, h1 in runtime.chunks(BH)]


def _launch_heads(kernel, rows_per_block, threads, arrays, scalars, shared):
    """kernel over every head, one launch per head_launches chunk, each given the views of its
    heads: arrays are C-contiguous (B, Hh, ...), so heads h0 .. h1 - 1 are one dense block that
    starts at head h0, and the kernel's blockIdx.y counts heads from there."""
    B, Hh, N = arrays[0].shape[:3]
    heads = [a.reshape((B * Hh,) + a.shape[2:]) for a in arrays]
    for grid, h0, h1 in head_launches(B * Hh, N, rows_per_block):
        kernel(grid, (threads,), tuple(a[h0:h1] for a in heads) + scalars, shared_mem=shared)


def _fn(name, dtype, shared=0):
    return runtime.function("attention.cu", f"{name}<{ctype(dtype)}>", shared)


def rowdot(a, b):
    """(..., hd) x (..., hd) -> (...): the row dot products D_i = dO_i . O_i."""
    runtime.check_operands("attention rowdot", {"a": a, "b": b}, shapes={"b": a.shape})
    a, b = runtime.contiguous(a, b)
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
    q, k, v, _ = _operands("attention gpu_v2 forward", q, k, v)
    BH, N, hd = _check(q, k, v)
    out = xp.empty_like(q)
    lse = xp.empty(q.shape[:3], q.dtype)  # (B, Hh, N)
    if q.size:
        shared = _v2_shared(hd + N, q.dtype)
        _launch_heads(_fn("attn_fwd_v2", q.dtype, shared), 4, 128, (q, k, v, out, lse),
                      (np.int32(N), np.int32(hd), runtime.scalar(q.dtype, scale)), shared)
    return out, (q, k, v, out, lse, scale)


def v2_backward(grad, cache):
    q, k, v, out, lse, scale = cache
    xp = xp_of(q)
    q, k, v, grad = _operands("attention gpu_v2 backward", q, k, v, grad)
    BH, N, hd = _check(q, k, v)
    dq, dk, dv = xp.empty_like(q), xp.empty_like(k), xp.empty_like(v)
    if q.size:
        D = rowdot(grad, out)  # (B, Hh, N)
        common = (np.int32(N), np.int32(hd), runtime.scalar(q.dtype, scale))
        shared = _v2_shared(2 * hd + N, q.dtype)
        _launch_heads(_fn("attn_bwd_dq_v2", q.dtype, shared), 4, 128, (q, k, v, grad, lse, D, dq), common, shared)
        shared = _v2_shared(2 * hd + 2 * N, q.dtype)
        _launch_heads(_fn("attn_bwd_dkdv_v2", q.dtype, shared), 4, 128, (q, k, v, grad, lse, D, dk, dv), common,
                      shared)
    return dq, dk, dv


# ---------------------------------------------------------------- v3: flash tiles
def _width(hd):
    """hd rounded up to a multiple of 16: the template instance that runs."""
    w = 16 * -(-hd // 16)
    if w > WIDTHS[-1]:
        raise ValueError(f"attention gpu_v3 handles head widths up to {WIDTHS[-1]}, got hd={hd}; choose "
                         "gpu_v2 or gpu_v1 for this model (kernels.use(attention='gpu_v2'))")
    return w


V3_TILES = {"flash_fwd_v3": 3, "flash_bwd_dkdv_v3": 4, "flash_bwd_dq_v3": 4}  # (64, HD + 1) tiles of each


def v3_shared_bytes(name, dtype, hd):
    """Dynamic shared memory of a v3 kernel at head width hd, as attention.cu lays it out: its
    (64, HD + 1) tiles (q, k, v; the backward's also dO), plus the forward's P (64 x 65), the
    dk/dv kernel's P^T and dS^T (64 x 65 each) and lse and D of the query tile (64 each), the dq
    kernel's dS (64 x 65). float64 at hd 64: the dk/dv kernel needs 200,704 B."""
    W = _width(hd)
    extra = {"flash_fwd_v3": FB * (FB + 1), "flash_bwd_dkdv_v3": 2 * FB * (FB + 1) + 2 * FB,
             "flash_bwd_dq_v3": FB * (FB + 1)}[name]
    return (V3_TILES[name] * FB * (W + 1) + extra) * np.dtype(dtype).itemsize


def v3_fits(limit, dtype, hd, backward=True):
    """Whether v3's kernels (forward, and the backward's with backward=True) fit in `limit` bytes
    of shared memory per block (a card's opt-in maximum: 227 KiB on an H100, 163 KiB on an A100,
    99 KiB on an L4 or RTX 4090). The tiles are 64 rows, fixed in attention.cu."""
    names = ("flash_fwd_v3", "flash_bwd_dkdv_v3", "flash_bwd_dq_v3") if backward else ("flash_fwd_v3",)
    return all(v3_shared_bytes(n, dtype, hd) <= limit for n in names)


def _v3(name, dtype, hd):
    """The kernel for this width and its shared memory; a clear refusal, naming the versions that
    do run, where this card allows less shared memory per block than the kernel needs."""
    W = _width(hd)
    shared = v3_shared_bytes(name, dtype, hd)
    if shared > 48 * 1024:
        limit = runtime.max_shared_bytes()
        if shared > limit:
            raise ValueError(f"attention gpu_v3 ({name}) needs {shared} bytes of shared memory per block for "
                             f"{np.dtype(dtype)} at hd={hd}, this GPU allows {limit}: its 64-row tiles do not fit; "
                             "choose gpu_v2 or gpu_v1 here (kernels.use(attention='gpu_v2'))"
                             + (", or float32" if np.dtype(dtype) == np.float64 else ""))
    return runtime.function("attention.cu", f"{name}<{ctype(dtype)}, {W}>", shared), shared


def v3_forward(q, k, v, scale):
    xp = xp_of(q)
    q, k, v, _ = _operands("attention gpu_v3 forward", q, k, v)
    BH, N, hd = _check(q, k, v)
    out = xp.empty_like(q)
    lse = xp.empty(q.shape[:3], q.dtype)
    if q.size:
        kernel, shared = _v3("flash_fwd_v3", q.dtype, hd)
        _launch_heads(kernel, FB, 256, (q, k, v, out, lse),
                      (np.int32(N), np.int32(hd), runtime.scalar(q.dtype, scale)), shared)
    return out, (q, k, v, out, lse, scale)


def v3_backward(grad, cache):
    q, k, v, out, lse, scale = cache
    xp = xp_of(q)
    q, k, v, grad = _operands("attention gpu_v3 backward", q, k, v, grad)
    BH, N, hd = _check(q, k, v)
    dq, dk, dv = xp.empty_like(q), xp.empty_like(k), xp.empty_like(v)
    if q.size:
        D = rowdot(grad, out)
        common = (np.int32(N), np.int32(hd), runtime.scalar(q.dtype, scale))
        kernel, shared = _v3("flash_bwd_dkdv_v3", q.dtype, hd)
        _launch_heads(kernel, FB, 256, (q, k, v, grad, lse, D, dk, dv), common, shared)
        kernel, shared = _v3("flash_bwd_dq_v3", q.dtype, hd)
        _launch_heads(kernel, FB, 256, (q, k, v, grad, lse, D, dq), common, shared)
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
