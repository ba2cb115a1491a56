"""Dense products on the CPU in Numba: matmul, linear (x @ w.T + b) and patch embedding.

Shape letters: matmul a (L, M, Din) @ b (L, Din, Dout), L a batch of matrices (not layers), M rows,
Din the reduction, Dout columns; linear x (..., Din) @ w.T, w (Dout, Din), M = prod(...) rows
(B*N for a ViT activation); patch embedding B, C, H, W, P, Np = (H/P)(W/P) patches, D width.

Versions (the backward is two more products of the forward's size):

    cpu_naive  triple loop, prange over output rows, strict IEEE (no fastmath): the inner product
               walks a column of b with stride Dout, so loads miss the cache and the reduction cannot
               be vectorised. Here to show why BLAS wins: 1-2 GFLOP/s against OpenBLAS's 30-60.
    cpu_tiled  b packed transposed once (bt, so both operands run along Din); each task owns two
               output rows and computes 2x2 blocks: four dot products share four loads per step,
               and fastmath={reassoc, contract} lets LLVM turn them into AVX2 FMAs. 10-20 GFLOP/s,
               0.3-0.6x OpenBLAS: packing, cache blocking and a register-resident micro-kernel
               (what BLAS adds on top) are worth another 2-3x.
    cpu_blas   OpenBLAS through np.matmul, in the faster orientation: for a long reduction and a
               wide output (Din >= 4 Dout, Dout > M: linear's dw = g.T @ x for fc2, 192 x 8320 @
               8320 x 768, and matmul's db) this OpenBLAS ran 3-6x slower than on the transposed
               problem, so it computes C^T = B^T A^T there. linear adds the bias and sums the bias gradient in
               Numba prange passes (above 65536 elements; NumPy below, where waking threads costs
               more). A first matmul version looping np.dot over the batch inside Numba measured
               0.67x the reference on the attention-score shape and was dropped.
    linear cpu_v2  cpu_blas's products called from inside Numba: a prange over blocks of rows, one
               per thread, each block's product by np.dot (Numba routes it to SciPy's OpenBLAS, held
               at one thread while the kernel runs, as attention's v4 does) and then, in the forward,
               its bias add while those rows are still in cache. The backward's dw and db are four
               partial sums over fixed blocks of rows (added in order afterwards; db's in float64), so
               their bits do not depend on the thread count. 1.02-1.18x cpu_blas's training step at
               the one-hour recipe's shapes, 0.97-1.07x at 65 tokens (below).
    patch_embed cpu_v1: a Numba patchify (one pass, prange over (image, patch row)) in place of the
               reference's 6-D reshape/transpose copy, around one BLAS matmul; the backward is the
               mirror-image unpatchify. The patchify alone is 2x faster (0.45 vs 0.86 ms, median
               of 51), but the BLAS product dominates, so the op as a whole is a wash (below).

Measured on the 2-core AMD EPYC (Zen 3, AVX2) dev box, float32, CIFAR ViT shapes (B=128, N=65,
D=192, MLP 768, Hh=3, hd=64), while other jobs kept its load average at 3-6, so single numbers
move by 20%; medians, implementations timed in turns:

    python -m kernels.bench matmul linear patch_embed --impls reference,cpu_blas,cpu_tiled,cpu_v1 --repeat 15
    python -m kernels.bench all            (cpu_naive rows)

    op / preset            impl       fwd ms   bwd ms   fwd GFLOP/s  x ref fwd  x ref bwd
    matmul scores          reference     8.9     16.5      23.4        1.00       1.00
      (384 x 65x64x65)     cpu_blas      9.2     16.9      22.6        0.97       0.98
                           cpu_tiled    21.6     41.1       9.6        0.41       0.40
                           cpu_naive   133      211         1.6        0.05       0.13
    matmul mlp             reference    55.7    349        44.0        1.00       1.00
      (8320x192 @ 192x768) cpu_blas     53.7    120        45.7        1.04       2.90
                           cpu_tiled   168      419        14.6        0.33       0.83
                           cpu_naive  2643     8953         0.9        0.03       0.03
    linear qkv 192->576    reference    58.9    114        31.3        1.00       1.00
                           cpu_blas     65.7    117        28.0        0.90       0.97
    linear fc1 192->768    reference    64.0    121        38.3        1.00       1.00
                           cpu_blas     65.3    133        37.6        0.98       0.91
    linear fc2 768->192    reference    75.0    303        32.7        1.00       1.00
                           cpu_blas     77.4    144        31.7        0.97       2.10
      (tiled: 0.4-0.5x, naive: 0.02-0.05x on all three)
    patch_embed cifar      reference    13.2     30.6      11.5        1.00       1.00
                           cpu_v1       18.8     25.0       8.0        0.70       1.22

Defaults (the table in kernels/registry.py): matmul and linear cpu_blas, equal to the reference
within the noise except the long-reduction backward products, 2-3x faster there (qkv + fc1 + fc2,
forward + backward: 735 -> 602 ms); cpu_naive and cpu_tiled stay slower than the reference and
are here to be read. patch_embed keeps the reference: cpu_v1 gives no measurable gain. (Since
2026-12-08 linear's default is cpu_v2, below.)

linear cpu_v2, 2026-12-08, 2-core AMD EPYC (family 25 model 17, Zen 4, AVX-512 at half width),
NumPy's OpenBLAS 0.3.31 on SkylakeX kernels, SciPy 1.17's OpenBLAS, PyTorch imported first. Why:
inside a training step cpu_blas's products ran at 115-126 GFLOP/s (`python
benchmarks/profile_step.py --model-kwargs ...` at the one-hour recipe's shapes, 32 and 16 px with
patch dropout), where the same products alone reach 145-195 (benchmarks/linear_shapes.py). One
product of the recipe's qkv shape (4096 x 128 @ 128 x 384), taking turns in one process, medians of
41: cpu_blas's forward 146-159 GFLOP/s, the same product split into two blocks inside a Numba prange
172-186 (after a 2 ms sleep, the cold case: 146-156 against 164-176); so cpu_blas lost about 15%
handing its second block to a Python pool thread that sleeps between products, where Numba's TBB
worker is still awake from the kernel before. More blocks than threads (8, 16) were no faster.
In a whole training step, cpu_blas and cpu_v2 taking turns in one process (`python
benchmarks/impl_step.py --op linear --impls cpu_blas,cpu_v2 --rounds 9`, three runs; ratio =
cpu_blas's ms / cpu_v2's): the recipe's model at 32 px 1.12, 1.11, 1.02; at 16 px 1.13, 1.09, 1.18;
vit_mini (65 tokens) 1.04, 0.97, 1.07; vit_cifar 1.00, 0.99, 1.03. A forward pass without gradients
(`--inference`, two runs): 1.07 / 1.02, 1.02 / 1.02, 1.08 / 1.07, 1.21 / 1.13 in the same order.
Per-op profile at the recipe's shapes (benchmarks/profile_step.py --steps 10, one process each, one
after the other): the linear forward from 126 to 155 GFLOP/s at 32 px and from 115 to 159 at 16 px,
the backward from 126 to 137 and from 117 to 153; the whole step 222.2 -> 188.7 ms and 61.7 -> 45.7
ms. The CPU default since 2026-12-08 (benchmarks/results/README.md has the files).
"""

import numpy as np
from numba import njit, prange

from ..reference import dense as reference
from ..reference.dense import unbroadcast
from ..registry import register
from . import threads


# reassoc lets LLVM split a dot product over SIMD lanes; contract fuses a*b+c into an FMA.
# No nnan/ninf: inf and NaN in the inputs must still come out as the reference's.
_FASTMATH = {"reassoc", "contract"}
_COLSUM_CHUNKS = 16  # fixed, so the bias gradient is bitwise the same on any thread count
_PARALLEL_FROM = 1 << 16  # elements; below, NumPy's one-thread pass beats waking the thread pool


# ---------------------------------------------------------------- products: two Numba kernels, one BLAS
@njit(parallel=True, cache=True)
def _gemm_naive(a, b, out):
    """out[l] = a[l] @ b[l]; a (L, M, Din), b (L, Din, Dout), out (L, M, Dout) zeroed."""
    L, M, Din = a.shape
    Dout = b.shape[2]
    for r in prange(L * M):
        l, i = r // M, r % M
        for j in range(Dout):
            s = out[l, i, j]
            for k in range(Din):
                s += a[l, i, k] * b[l, k, j]  # b walks down a column: stride Dout
            out[l, i, j] = s


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _gemm_nt(a, bt, out):
    """out[l] += a[l] @ bt[l].T; a (L, M, Din), bt (L, Dout, Din), both contiguous along Din.

    Each task owns two output rows and sweeps them in 2x2 blocks; an odd last row/column is
    computed twice (clamped index) and written once, which keeps the hot loop branch-free."""
    L, M, Din = a.shape
    Dout = bt.shape[1]
    mb = (M + 1) // 2
    for t in prange(L * mb):
        l = t // mb
        i0 = 2 * (t % mb)
        i1 = min(i0 + 1, M - 1)
        a0, a1 = a[l, i0], a[l, i1]  # (Din,) rows
        for j0 in range(0, Dout, 2):
            j1 = min(j0 + 1, Dout - 1)
            b0, b1 = bt[l, j0], bt[l, j1]
            s00, s01 = out[l, i0, j0], out[l, i0, j1]
            s10, s11 = out[l, i1, j0], out[l, i1, j1]
            for k in range(Din):
                s00 += a0[k] * b0[k]
                s01 += a0[k] * b1[k]
                s10 += a1[k] * b0[k]
                s11 += a1[k] * b1[k]
            out[l, i0, j0] = s00
            if j1 != j0:
                out[l, i0, j1] = s01
            if i1 != i0:
                out[l, i1, j0] = s10
                if j1 != j0:
                    out[l, i1, j1] = s11


def _c(a):
    """C-contiguous and writable: a read-only array (np.broadcast_to makes them) would be another
    type to Numba, and another compilation of every kernel it reaches."""
    return np.require(a, requirements=("C", "W"))


def _naive(a3, b3):
    out = np.zeros((a3.shape[0], a3.shape[1], b3.shape[2]), dtype=a3.dtype)
    _gemm_naive(_c(a3), _c(b3), out)
    return out


def _tiled(a3, b3):
    out = np.zeros((a3.shape[0], a3.shape[1], b3.shape[2]), dtype=a3.dtype)
    _gemm_nt(_c(a3), _c(b3.transpose(0, 2, 1)), out)  # bt: free when b3 is itself a transposed view
    return out


def _blas(a, b):
    """a (..., M, Din) @ b (..., Din, Dout) by OpenBLAS, in the faster orientation: with a long
    reduction (Din >= 4 Dout, Dout > M) OpenBLAS 0.3.31 ran 3-6x slower than on the transposed
    problem (measured: (192 x 8320) @ (8320 x 768) 430 ms, (768 x 8320) @ (8320 x 192) 60 ms,
    both min of 7), so compute C^T = B^T A^T there and transpose the small result back."""
    M, Din, Dout = a.shape[-2], a.shape[-1], b.shape[-1]
    if M < Dout and Din >= 4 * Dout:  # e.g. linear's dw = g.T @ x for fc2: (192 x 8320) @ (8320 x 768)
        ct = threads.matmul(np.swapaxes(b, -1, -2), np.swapaxes(a, -1, -2))  # (..., Dout, M)
        return np.ascontiguousarray(np.swapaxes(ct, -1, -2))
    return threads.matmul(a, b)


# ---------------------------------------------------------------- matmul with np.matmul semantics
def _matmul_with(gemm, a, b):
    """np.matmul(a, b) (1-D promotion, batch broadcasting) computed by a 3-D `gemm`."""
    dtype = np.result_type(a, b)
    a2 = a[None, :] if a.ndim == 1 else a  # (..., M, Din)
    b2 = b[:, None] if b.ndim == 1 else b  # (..., Din, Dout)
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    (M, Din), Dout = a2.shape[-2:], b2.shape[-1]
    a3 = np.broadcast_to(a2, batch + (M, Din)).reshape(-1, M, Din).astype(dtype, copy=False)  # (L, M, Din)
    b3 = np.broadcast_to(b2, batch + (Din, Dout)).reshape(-1, Din, Dout).astype(dtype, copy=False)
    out = gemm(a3, b3).reshape(batch + (M, Dout))
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return out


def _make_matmul(gemm):
    def forward(a, b):
        return _matmul_with(gemm, a, b), (a, b)

    def backward(grad, cache):
        a, b = cache
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        g2 = np.reshape(grad, batch + (a2.shape[-2], b2.shape[-1]))  # give back the promoted axes
        da = unbroadcast(_matmul_with(gemm, g2, np.swapaxes(b2, -1, -2)), a2.shape)  # dA = G B^T
        db = unbroadcast(_matmul_with(gemm, np.swapaxes(a2, -1, -2), g2), b2.shape)  # dB = A^T G
        return da.reshape(a.shape), db.reshape(b.shape)

    return forward, backward


matmul_naive_forward, matmul_naive_backward = _make_matmul(_naive)
matmul_tiled_forward, matmul_tiled_backward = _make_matmul(_tiled)


def matmul_blas_forward(a, b):
    if a.ndim < 2 or b.ndim < 2:  # vector cases: nothing to gain over np.matmul
        return reference.matmul_forward(a, b)
    return _blas(a, b), (a, b)


def matmul_blas_backward(grad, cache):
    a, b = cache
    if a.ndim < 2 or b.ndim < 2:
        return reference.matmul_backward(grad, cache)
    da = unbroadcast(_blas(grad, np.swapaxes(b, -1, -2)), a.shape)  # dA = G B^T
    db = unbroadcast(_blas(np.swapaxes(a, -1, -2), grad), b.shape)  # dB = A^T G
    return da, db


# ---------------------------------------------------------------- linear: bias add and bias grad
@njit(parallel=True, cache=True)
def _add_rowvec(y, b):
    """y[i, :] += b for every row i; y (M, Dout), b (Dout,)."""
    for i in prange(y.shape[0]):
        for j in range(y.shape[1]):
            y[i, j] += b[j]


@njit(parallel=True, cache=True)
def _colsum(g, out):
    """out = g.sum(axis=0), g (M, D): fixed row chunks summed in parallel (float64), then added."""
    M, D = g.shape
    nc = max(1, min(_COLSUM_CHUNKS, M))
    part = np.zeros((nc, D))
    for c in prange(nc):
        for i in range(c * M // nc, (c + 1) * M // nc):
            for j in range(D):
                part[c, j] += g[i, j]
    for j in range(D):
        s = 0.0
        for c in range(nc):
            s += part[c, j]
        out[j] = s


def _linear_products(mm, x, w, b):
    """forward of x @ w.T + b where mm(a, b) is a 2-D product; returns y and the cache."""
    x2 = x.reshape(-1, x.shape[-1])  # (M, Din)
    y = mm(x2, w.T)  # (M, Dout)
    if b is not None and y.size >= _PARALLEL_FROM:
        _add_rowvec(y, _c(b.astype(y.dtype, copy=False)))
    elif b is not None:
        y += b
    return y.reshape(x.shape[:-1] + (w.shape[0],)), (x, w, b is not None)


def _linear_grads(mm, grad, cache):
    x, w, has_bias = cache
    g2 = grad.reshape(-1, grad.shape[-1])  # (M, Dout)
    x2 = x.reshape(-1, x.shape[-1])  # (M, Din)
    dx = mm(g2, w).reshape(x.shape)  # (M, Din)
    dw = mm(g2.T, x2)  # (Dout, Din)
    db = None
    if has_bias and g2.size >= _PARALLEL_FROM:
        db = np.empty(g2.shape[1], dtype=grad.dtype)
        _colsum(_c(g2), db)
    elif has_bias:
        db = g2.sum(axis=0)
    return dx, dw, db


def _make_linear(mm):
    return (lambda x, w, b: _linear_products(mm, x, w, b)), (lambda grad, cache: _linear_grads(mm, grad, cache))


def _mm2(gemm):
    return lambda a, b: gemm(a[None], b[None])[0]


linear_naive_forward, linear_naive_backward = _make_linear(_mm2(_naive))
linear_tiled_forward, linear_tiled_backward = _make_linear(_mm2(_tiled))
linear_blas_forward, linear_blas_backward = _make_linear(_blas)  # OpenBLAS, no copies of x or grad


# ---------------------------------------------------------------- linear cpu_v2: products inside Numba
_DW_PARTS = 4  # dw and db are summed over this many row blocks on any thread count: bitwise the same everywhere


@njit(parallel=True, cache=True)
def _linear_v2_fwd(x, wt, b, y, chunks):
    """y = x @ wt + b, x (M, Din), wt (Din, Dout) (w.T, a view), y (M, Dout); b (Dout,) or (0,) for
    none. One task per block of rows: its product (np.dot: SciPy's BLAS, one thread) and then its
    bias add while those rows are still in cache."""
    M, Dout = y.shape
    for c in prange(chunks):
        lo, hi = c * M // chunks, (c + 1) * M // chunks
        yc = y[lo:hi]
        np.dot(x[lo:hi], wt, yc)
        if b.shape[0]:
            for i in range(hi - lo):
                for j in range(Dout):
                    yc[i, j] += b[j]


@njit(parallel=True, cache=True)
def _linear_v2_bwd(g, x, w, dx, dw_parts, db_parts, chunks, transposed):
    """dx = g @ w by blocks of rows; dw = g.T @ x and db = colsum(g) as P partial sums over P
    blocks of rows (dw_parts (P, Dout, Din), or (P, Din, Dout) when `transposed`: x.T @ g, the
    orientation OpenBLAS runs faster for a long reduction into a wide output); db_parts (P, Dout)
    float64, or (P, 0) for no bias. g (M, Dout), x (M, Din), w (Dout, Din)."""
    M, Dout = g.shape
    for c in prange(chunks):
        lo, hi = c * M // chunks, (c + 1) * M // chunks
        np.dot(g[lo:hi], w, dx[lo:hi])
    P = dw_parts.shape[0]
    for c in prange(P):
        lo, hi = c * M // P, (c + 1) * M // P
        if transposed:
            np.dot(x[lo:hi].T, g[lo:hi], dw_parts[c])
        else:
            np.dot(g[lo:hi].T, x[lo:hi], dw_parts[c])
        if db_parts.shape[1]:
            part = db_parts[c]
            for i in range(lo, hi):
                for j in range(Dout):
                    part[j] += g[i, j]


def _v2_chunks(M, Din, Dout):
    """Blocks of rows for the products: one per thread from 16 MFLOP (threads._SPLIT_FROM), else one."""
    if 2 * M * Din * Dout < threads._SPLIT_FROM:
        return 1
    return max(1, min(threads.num_threads(), M))


def _v2_dtype(x, w, b):
    """float32 or float64 when x, w (and b) share it, else None (cpu_blas's path then)."""
    dtype = np.result_type(x, w) if b is None else np.result_type(x, w, b)
    return dtype if dtype in (np.float32, np.float64) and x.dtype == w.dtype == dtype else None


def linear_v2_forward(x, w, b):
    if _v2_dtype(x, w, b) is None or x.size == 0 or w.size == 0:  # cpu_blas's path: nothing to gain
        return linear_blas_forward(x, w, b)
    x2 = _c(x.reshape(-1, x.shape[-1]))  # (M, Din)
    w = _c(w)
    M, (Dout, Din) = x2.shape[0], w.shape
    y = np.empty((M, Dout), dtype=x2.dtype)
    bias = np.empty(0, dtype=y.dtype) if b is None else _c(b.astype(y.dtype, copy=False))
    with threads.single_threaded_blas(which="scipy"):
        _linear_v2_fwd(x2, w.T, bias, y, _v2_chunks(M, Din, Dout))
    return y.reshape(x.shape[:-1] + (Dout,)), ("v2", (x, w, b is not None))


def linear_v2_backward(grad, cache):
    if not isinstance(cache[0], str):  # cpu_blas ran the forward (mixed or other dtypes): its cache (x, w, has_bias)
        return linear_blas_backward(grad, cache)
    x, w, has_bias = cache[1]
    x2 = _c(x.reshape(-1, x.shape[-1]))  # (M, Din)
    g2 = _c(grad.reshape(-1, grad.shape[-1]).astype(x2.dtype, copy=False))  # (M, Dout)
    M, (Dout, Din) = x2.shape[0], w.shape
    P = min(_DW_PARTS, M)
    transposed = Dout < Din and M // P >= 4 * Din  # as _blas: C^T = x.T @ g for this shape
    dx = np.empty((M, Din), dtype=x2.dtype)
    dw_parts = np.empty((P,) + ((Din, Dout) if transposed else (Dout, Din)), dtype=x2.dtype)
    db_parts = np.zeros((P, Dout if has_bias else 0))
    with threads.single_threaded_blas(which="scipy"):
        _linear_v2_bwd(g2, x2, w, dx, dw_parts, db_parts, _v2_chunks(M, Din, Dout), transposed)
    dw = dw_parts.sum(axis=0)  # the P blocks added in order
    dw = np.ascontiguousarray(dw.T) if transposed else dw
    db = db_parts.sum(axis=0).astype(x2.dtype) if has_bias else None
    return dx.reshape(x.shape), dw, db


# ---------------------------------------------------------------- patch embedding
@njit(parallel=True, cache=True)
def _patchify(x, P, out):
    """x (B, C, H, W) -> out (B, Np, C*P*P), patches in raster order, each flattened (C, P, P)."""
    B, C, H, W = x.shape
    gh, gw = H // P, W // P
    for t in prange(B * gh):
        n, i = t // gh, t % gh
        for c in range(C):
            for di in range(P):
                src = x[n, c, i * P + di]  # (W,) one image row, read once
                base = (c * P + di) * P
                for j in range(gw):
                    dst = out[n, i * gw + j]
                    for dj in range(P):
                        dst[base + dj] = src[j * P + dj]


@njit(parallel=True, cache=True)
def _unpatchify(patches, P, out):
    """Inverse of _patchify: patches (B, Np, C*P*P) -> out (B, C, H, W)."""
    B, C, H, W = out.shape
    gh, gw = H // P, W // P
    for t in prange(B * gh):
        n, i = t // gh, t % gh
        for c in range(C):
            for di in range(P):
                dst = out[n, c, i * P + di]
                base = (c * P + di) * P
                for j in range(gw):
                    src = patches[n, i * gw + j]
                    for dj in range(P):
                        dst[j * P + dj] = src[base + dj]


def patch_embed_forward(x, w, b):
    B, C, H, W = x.shape
    D, P = w.shape[0], w.shape[-1]
    if H % P or W % P:
        raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {P}")
    patches = np.empty((B, (H // P) * (W // P), C * P * P), dtype=x.dtype)  # (B, Np, C*P*P)
    _patchify(_c(x), P, patches)
    y, _ = linear_blas_forward(patches, w.reshape(D, -1), b)  # (B, Np, D)
    return y, (patches, w, b is not None, x.shape)


def patch_embed_backward(grad, cache):
    patches, w, has_bias, x_shape = cache
    D, P = w.shape[0], w.shape[-1]
    dpatches, dw, db = linear_blas_backward(grad, (patches, w.reshape(D, -1), has_bias))
    dx = np.empty(x_shape, dtype=dpatches.dtype)  # (B, C, H, W)
    _unpatchify(_c(dpatches), P, dx)
    return dx, dw.reshape(w.shape), db


# ---------------------------------------------------------------- registry
register("matmul", "cpu_naive", matmul_naive_forward, matmul_naive_backward,
         description="Numba: triple loop, prange over rows, strided column walk (why BLAS wins)")
register("matmul", "cpu_tiled", matmul_tiled_forward, matmul_tiled_backward,
         description="Numba: b packed transposed, 2x2 register blocks, fastmath FMA dot products")
register("matmul", "cpu_blas", matmul_blas_forward, matmul_blas_backward,
         description="np.matmul (OpenBLAS) in the faster orientation for long-reduction wide outputs")
register("linear", "cpu_naive", linear_naive_forward, linear_naive_backward,
         description="Numba: naive triple-loop products + prange bias add / bias-grad sum")
register("linear", "cpu_tiled", linear_tiled_forward, linear_tiled_backward,
         description="Numba: 2x2-blocked fastmath dot products (x and w both run along Din)")
register("linear", "cpu_blas", linear_blas_forward, linear_blas_backward,
         description="OpenBLAS, oriented dw product + Numba prange bias add and bias-grad sum")
register("linear", "cpu_v2", linear_v2_forward, linear_v2_backward,
         description="Numba task per block of rows calling BLAS (SciPy's, one thread), bias add fused; "
                     "dw and db as 4 partial sums")
register("patch_embed", "cpu_v1", patch_embed_forward, patch_embed_backward,
         description="Numba one-pass prange patchify/unpatchify around one BLAS matmul")
