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
gpu_v3  flash-style tiles (Dao et al. 2022; FlashAttention-2's backward, Dao 2023): tiles of 64
        rows (or 32, or 16: below) in shared memory, 256 threads each holding an R x R block of
        scores (R = rows / 16: 4 x 4 at 64 rows) and R rows of the output accumulators in
        registers, an online softmax (running max and sum per row, exp2 on log2-scaled scores);
        forward saves out and lse; backward one kernel per key tile (dk, dv) and one per query
        tile (dq), both recomputing P from q, k and lse, no atomics. Memory linear in N; plain
        FP32 FMA (no tensor cores), float32-exact. Head width up to 128 (rounded up to 16 inside).

Tiles per card (v3_tile). A kernel's shared memory grows with its tile rows and the head width
(v3_shared_bytes: the float64 dk/dv kernel at hd 64 needs 200,704 B with 64-row tiles), and a card
allows a block only so much (cudaDevAttrMaxSharedMemoryPerBlockOptin: 227 KiB on an H100, 163 KiB
on an A100, 99 KiB on an L4 or RTX 4090, 64 KiB on a T4, 48 KiB on the oldest cards CuPy runs on).
Each kernel takes the largest of 64, 32 or 16 rows whose shared memory fits this card (chosen per
kernel: the forward saves lse per row, so the backward may tile differently). So float32 runs at
every width on every card, float64 on every card with 96 KiB or more; only float64's widest heads
on small cards (hd 128 backward on a T4, hd 96-128 on a 48 KiB card) find no tile that fits, and
there v3 refuses, naming gpu_v2. The tile rows are a template parameter of attention.cu; a process
compiles the instantiations its card chooses (compiled_names), out of those some card allowing 48
to 227 KiB can choose (DECLARED, which the compile tests build). A smaller tile reuses each k and v
tile for fewer query rows (16 rather than 64), so it moves more bytes per flop: what that costs on
an A100 or an L4 is owed to a GPU run (gpu_check.sh times v3 at the H100's tiles; tests/test_gpu.py
checks every tile there by lowering the limit it reads).

Layout. q, k, v are read where they lie: the kernels take the element strides of a (B, Hh, N, hd)
array whose last axis is dense (unbind's q, k, v views of one (B, N, 3, Hh, hd) projection; the
backward's dO, a transpose's view, has its own), so nothing is copied to feed them; only q, k, v
with different strides from one another, or a last axis that is not dense, are copied first
(_operands). The outputs (out, lse, dq, dk, dv) are dense.

Launches (v2, v3): the kernels read blockIdx.y as the head, and grid y stops at 65,535, so the
heads go in chunks of at most 65,535, one launch each, given the chunk's first head
(head_launches; B * Hh = 98,304 at inference with 8192 images x 12 heads is two). Entry: q, k, v
and the gradient must share one float dtype and shape.

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

import functools

import numpy as np

from ..registry import register
from . import runtime
from .runtime import ctype, xp_of

WIDTHS = tuple(range(16, 129, 16))  # v3's template head widths (hd rounded up to one of these)
TILES = (64, 32, 16)  # v3's tile rows, largest first: each kernel takes the largest that fits the card
V3_KERNELS = ("flash_fwd_v3", "flash_bwd_dkdv_v3", "flash_bwd_dq_v3")
MIN_SHARED = 48 * 1024  # shared memory per block that every card CuPy supports allows
MAX_SHARED = 227 * 1024  # the most any card allows a block (Hopper's and Blackwell's opt-in limit)
V2_DECLARED = [f"{k}<{t}>" for k in ("attn_rowdot", "attn_fwd_v2", "attn_bwd_dq_v2", "attn_bwd_dkdv_v2")
               for t in ("float", "double")]


def _check(q, k, v):
    if q.ndim != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"attention wants q, k, v of one shape (B, Hh, N, hd), got {q.shape}, {k.shape}, {v.shape}")
    return q.shape[0] * q.shape[1], q.shape[2], q.shape[3]  # heads, N, hd


def head_strides(a):
    """(sb, sh, sn): the element strides of a (B, Hh, N, hd) array that a kernel can read in place
    (last axis dense, strides whole, non-negative elements), else None."""
    item = a.itemsize
    if a.shape[-1] > 1 and a.strides[-1] != item:
        return None
    if any(s < 0 or s % item for s in a.strides[:3]):
        return None
    return tuple(s // item for s in a.strides[:3])


def _operands(op, q, k, v, grad=None):
    """The raw kernels' entry check: q, k, v (and grad) of one float dtype and one (B, Hh, N, hd)
    shape. They are passed as they are where the kernels can read them in place (q, k, v with one
    set of strides, dense along hd, as unbind's views are; grad with its own); otherwise copied,
    explicitly, to C order here."""
    _check(q, k, v)
    runtime.check_operands(op, {"q": q, "k": k, "v": v, "grad": grad}, shapes={"grad": q.shape})
    if head_strides(q) is None or not q.strides == k.strides == v.strides:
        q, k, v = runtime.contiguous(q, k, v)
    if grad is not None and head_strides(grad) is None:
        grad = runtime.contiguous(grad)
    return q, k, v, grad


def _layout(x, with_heads=True):
    """The kernel arguments that say where x's heads lie: (Hh, sb, sh, sn), or (sb, sh, sn) for dO."""
    strides = tuple(np.int64(s) for s in head_strides(x))
    return ((np.int32(x.shape[1]),) if with_heads else ()) + strides


def _scalars(q, scale, grad=None):
    """The v2 and v3 kernels' arguments after their arrays: N, hd, scale, where the heads of q, k,
    v lie, and (backward) where dO's do."""
    return ((np.int32(q.shape[2]), np.int32(q.shape[3]), runtime.scalar(q.dtype, scale), *_layout(q))
            + (() if grad is None else _layout(grad, False)))


def head_launches(BH, N, rows_per_block):
    """[(grid, h0, h1), ...]: the launches of a kernel whose blockIdx.y is the head (grid y is at
    most 65,535, and B * Hh can exceed it: 8192 images x 12 heads at inference), each over heads
    h0 .. h1 - 1 with grid (ceil(N / rows_per_block), h1 - h0). The heads cover range(BH) once."""
    return [(runtime.check_grid((-(-N // rows_per_block), h1 - h0)), h0, h1) for h0, h1 in runtime.chunks(BH)]


def _launch_heads(kernel, rows_per_block, threads, arrays, scalars, shared):
    """kernel over every head, one launch per head_launches chunk; the kernel gets the whole arrays
    and the chunk's first head h0 as its last argument, and reads blockIdx.y as head h0 + y."""
    B, Hh, N = arrays[0].shape[:3]
    for grid, h0, h1 in head_launches(B * Hh, N, rows_per_block):
        kernel(grid, (threads,), tuple(arrays) + scalars + (np.int64(h0),), shared_mem=shared)


@functools.lru_cache(maxsize=None)
def compiled_names(limit):
    """The instantiations of attention.cu one card compiles, given its shared memory per block:
    v2's, and each v3 kernel at the tile rows v3_tile chooses there."""
    chosen = [v3_instance(n, t, w, v3_tile(n, t, w, limit)) for n in V3_KERNELS for t in (np.float32, np.float64)
              for w in WIDTHS if v3_tile(n, t, w, limit)]
    return tuple(V2_DECLARED + chosen)


def _fn(name, dtype, shared=0):
    return runtime.function("attention.cu", f"{name}<{ctype(dtype)}>", shared,
                            names=compiled_names(runtime.max_shared_bytes()))


def rowdot(g, o):
    """(B, Hh, N, hd) x (B, Hh, N, hd) -> (B, Hh, N): the row dot products D_i = dO_i . O_i, with g
    (dO) read in place and o (out) dense."""
    runtime.check_operands("attention rowdot", {"g": g, "o": o}, shapes={"o": g.shape})
    if g.ndim != 4:
        raise ValueError(f"attention rowdot wants (B, Hh, N, hd) arrays, got shape {g.shape}")
    o = runtime.contiguous(o)
    g = g if head_strides(g) is not None else runtime.contiguous(g)
    out = xp_of(g).empty(g.shape[:3], g.dtype)
    rows = out.size
    if rows:
        grid = (runtime.blocks_for(rows, 8, cap=65535),)
        _fn("attn_rowdot", g.dtype)(grid, (256,), (g, o, out, np.int64(rows), np.int32(g.shape[2]),
                                                   np.int32(g.shape[3]), *_layout(g)))
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
    out = xp.empty(q.shape, q.dtype)  # dense, whatever q's strides (empty_like would copy them)
    lse = xp.empty(q.shape[:3], q.dtype)  # (B, Hh, N)
    if q.size:
        shared = _v2_shared(hd + N, q.dtype)
        _launch_heads(_fn("attn_fwd_v2", q.dtype, shared), 4, 128, (q, k, v, out, lse), _scalars(q, scale), shared)
    return out, (q, k, v, out, lse, scale)


def v2_backward(grad, cache):
    q, k, v, out, lse, scale = cache
    xp = xp_of(q)
    q, k, v, grad = _operands("attention gpu_v2 backward", q, k, v, grad)
    BH, N, hd = _check(q, k, v)
    dq, dk, dv = (xp.empty(q.shape, q.dtype) for _ in range(3))
    if q.size:
        D = rowdot(grad, out)  # (B, Hh, N)
        common = _scalars(q, scale, grad)
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


V3_TILE_ARRAYS = {"flash_fwd_v3": 3, "flash_bwd_dkdv_v3": 4, "flash_bwd_dq_v3": 4}  # (rows, HD + 1) tiles of each


def v3_shared_bytes(name, dtype, hd, rows=64):
    """Dynamic shared memory of a v3 kernel at head width hd with tiles of `rows` rows (F), as
    attention.cu lays it out: its (F, HD + 1) tiles (q, k, v; the backward's also dO), plus the
    forward's P (F x (F + 1)), the dk/dv kernel's P^T and dS^T (F x (F + 1) each) and lse and D of
    the query tile (F each), the dq kernel's dS (F x (F + 1)). float64 at hd 64 with 64 rows: the
    dk/dv kernel needs 200,704 B."""
    W, F = _width(hd), rows
    extra = {"flash_fwd_v3": F * (F + 1), "flash_bwd_dkdv_v3": 2 * F * (F + 1) + 2 * F,
             "flash_bwd_dq_v3": F * (F + 1)}[name]
    return (V3_TILE_ARRAYS[name] * F * (W + 1) + extra) * np.dtype(dtype).itemsize


def v3_tile(name, dtype, hd, limit):
    """The tile rows kernel `name` runs with at head width hd on a card that allows `limit` bytes
    of shared memory per block: the largest of TILES whose shared memory fits, or None."""
    return next((rows for rows in TILES if v3_shared_bytes(name, dtype, hd, rows) <= limit), None)


def v3_instance(name, dtype, hd, rows):
    """The template instantiation that runs: "flash_fwd_v3<float, 64, 32>" (type, width, tile rows)."""
    return f"{name}<{ctype(dtype)}, {_width(hd)}, {rows}>"


def _v3_declared():
    """Every v3 instantiation a card allowing MIN_SHARED to MAX_SHARED bytes per block can choose:
    per kernel, dtype and width the largest tile within MAX_SHARED, and a smaller one only where
    the larger one needs more than MIN_SHARED (else every such card takes the larger)."""
    for name in V3_KERNELS:
        for dtype in (np.float32, np.float64):
            for w in WIDTHS:
                for rows in TILES:
                    if v3_shared_bytes(name, dtype, w, rows) > MAX_SHARED:
                        continue
                    yield v3_instance(name, dtype, w, rows)
                    if v3_shared_bytes(name, dtype, w, rows) <= MIN_SHARED:
                        break


DECLARED = {"attention.cu": V2_DECLARED + list(_v3_declared())}


def _v3(name, dtype, hd):
    """The kernel for this width at the tile rows this card allows, its rows and its shared memory;
    a clear refusal, naming the versions that do run, where even the smallest tile does not fit."""
    limit = runtime.max_shared_bytes()
    rows = v3_tile(name, dtype, hd, limit)
    if rows is None:
        need = v3_shared_bytes(name, dtype, hd, TILES[-1])
        raise ValueError(f"attention gpu_v3 ({name}) needs {need} bytes of shared memory per block for "
                         f"{np.dtype(dtype)} at hd={hd} even with {TILES[-1]}-row tiles, this GPU allows {limit}; "
                         "choose gpu_v2 or gpu_v1 here (kernels.use(attention='gpu_v2'))"
                         + (", or float32" if np.dtype(dtype) == np.float64 else ""))
    shared = v3_shared_bytes(name, dtype, hd, rows)
    kernel = runtime.function("attention.cu", v3_instance(name, dtype, hd, rows), shared, names=compiled_names(limit))
    return kernel, rows, shared


def v3_forward(q, k, v, scale):
    xp = xp_of(q)
    q, k, v, _ = _operands("attention gpu_v3 forward", q, k, v)
    BH, N, hd = _check(q, k, v)
    out = xp.empty(q.shape, q.dtype)
    lse = xp.empty(q.shape[:3], q.dtype)
    if q.size:
        kernel, rows, shared = _v3("flash_fwd_v3", q.dtype, hd)
        _launch_heads(kernel, rows, 256, (q, k, v, out, lse), _scalars(q, scale), shared)
    return out, (q, k, v, out, lse, scale)


def v3_backward(grad, cache):
    q, k, v, out, lse, scale = cache
    xp = xp_of(q)
    q, k, v, grad = _operands("attention gpu_v3 backward", q, k, v, grad)
    BH, N, hd = _check(q, k, v)
    dq, dk, dv = (xp.empty(q.shape, q.dtype) for _ in range(3))
    if q.size:
        D = rowdot(grad, out)
        common = _scalars(q, scale, grad)
        kernel, rows, shared = _v3("flash_bwd_dkdv_v3", q.dtype, hd)
        _launch_heads(kernel, rows, 256, (q, k, v, grad, lse, D, dk, dv), common, shared)
        kernel, rows, shared = _v3("flash_bwd_dq_v3", q.dtype, hd)
        _launch_heads(kernel, rows, 256, (q, k, v, grad, lse, D, dq), common, shared)
    return dq, dk, dv


def flops(B, Hh, N, hd):
    """(forward, backward) multiply-adds x 2 of the nominal algorithm (4 and 8 N^2 hd per head)."""
    return 4 * B * Hh * N * N * hd, 8 * B * Hh * N * N * hd


register("attention", "gpu_v1", v1_forward, v1_backward, device="gpu",
         description="cuBLAS products + CuPy array softmax (the reference's algorithm); keeps the N x N probabilities")
register("attention", "gpu_v2", v2_forward, v2_backward, device="gpu",
         description="CUDA C (attention.cu): a warp per row, scores in shared memory, lse saved")
register("attention", "gpu_v3", v3_forward, v3_backward, device="gpu",
         description="CUDA C (attention.cu): flash tiles (64, 32 or 16 rows, as the card's shared memory allows), "
                     "online softmax, recompute from lse in backward")
