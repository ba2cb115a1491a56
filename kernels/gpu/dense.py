"""Dense products on the GPU: matmul, linear (x @ w.T + b) and patch embedding.

Shape letters as in kernels/cpu/dense.py: matmul a (L, M, Din) @ b (L, Din, Dout), L a batch of
matrices; linear x (..., Din) @ w.T, w (Dout, Din), M rows; patch embedding B, C, H, W, P, D.
The CUDA C is in matmul.cu. Every version handles NumPy's matmul rules (1-D operands, broadcast
batch axes); the backward is two more products of the forward's size, run by the same kernel
with the operands' strides swapped (a transpose costs no copy).

Versions (llm.c's dev/cuda sequence, against cuBLAS):

    gpu_v1      one thread per output element: K loads of a and of b from global memory each.
                Memory-bound by construction: 2 loads per multiply-add.
    gpu_v2      16 x 16 tiles in shared memory: each loaded element serves 16 multiply-adds.
    gpu_v3      register tiling: 128 x 128 x 8 tiles, each of 256 threads computes an 8 x 8 block
                of C in registers, 16 shared loads per 64 multiply-adds; strided micro-tiles so
                that neither tile read has a bank conflict; linear fuses the bias into its store.
                Plain FP32 FMA, no tensor cores: float32 results stay float32-exact, which the
                bench's tolerance demands; TF32 (tensor cores) is cuBLAS's business, below.
    gpu_cublas  cupy.matmul, i.e. cuBLAS (sgemm, strided-batched for a batch of matrices); TF32
                tensor cores only when CUPY_TF32=1 (minivit.device.set_tf32). linear adds the
                bias with one CuPy elementwise kernel and sums its gradient with a CuPy reduction;
                patch_embed patchifies by one reshape/transpose copy, then one cuBLAS product.

Launches (matmul_launches): columns over grid x, row tiles over grid y, the batch over grid z in
a grid-stride loop (capped at 65,535). Grid y stops at 65,535 too, and the kernels read it
directly, so where M needs more row tiles (linear on over 524,280 rows for v1, 8.4 million for
v3) each matrix runs as slabs of rows, one launch each on views that start at the slab.

Measured: numbers owed (no GPU in the session that wrote this). To be filled in from
`python -m kernels.bench matmul linear patch_embed --device cuda` on a named GPU (see
benchmarks/results/README.md), with the card's measured sgemm peak beside them.

Defaults (the table in kernels/registry.py): cuBLAS for all three; the numbered versions are
here to be read and timed against it (expectation, to be checked: v1 a few percent of cuBLAS,
v2 about 10-20%, v3 about half).
"""
from __future__ import annotations

import math

import numpy as np

from ..registry import register
from . import runtime
from .runtime import ctype, xp_of

_BLOCKS = {"matmul_v1": ((32, 8, 1), 32, 8), "matmul_v2": ((16, 16, 1), 16, 16), "matmul_v3": ((256, 1, 1), 128, 128)}
DECLARED = {"matmul.cu": [f"{k}<{t}>" for k in _BLOCKS for t in ("float", "double")]}


# ---------------------------------------------------------------- one product through a kernel
def _batch_stride(x, batch):
    """x broadcast to batch + its last two axes, as (array, batch stride in elements): one stride
    for the flattened batch where the layout allows it (contiguous batch axes or broadcast, stride
    0); otherwise a contiguous copy."""
    xp = xp_of(x)
    xb = xp.broadcast_to(x, tuple(batch) + x.shape[-2:])
    item = xb.itemsize
    strides = [s // item for s in xb.strides[:-2]]
    sizes = list(batch)
    live = [(n, s) for n, s in zip(sizes, strides) if n > 1]
    if not live or all(s == 0 for _, s in live):
        return xb, 0
    sb, ok, span = live[-1][1], True, 1
    for n, s in reversed(live):  # each batch axis must step over all the axes after it
        ok = ok and s == sb * span
        span *= n
    if ok:
        return xb, sb
    xb = xp.ascontiguousarray(xb)
    return xb, xb.shape[-1] * xb.shape[-2]


def kernel_product(name, a, b, bias=None):
    """a @ b (NumPy's rules for >= 2-D operands) by the matmul.cu kernel `name`, plus bias (N,)."""
    xp = xp_of(a)
    M, K = a.shape[-2:]
    N = b.shape[-1]
    if b.shape[-2] != K:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not fit ({K} != {b.shape[-2]})")
    runtime.check_operands(f"matmul ({name})", {"a": a, "b": b, "bias": bias}, shapes={"bias": (N,)})
    bias = runtime.contiguous(bias)  # a and b are read through their strides (below); the bias is not
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    L = math.prod(batch)
    out = xp.empty(tuple(batch) + (M, N), dtype=a.dtype)
    if out.size == 0:
        return out
    if K == 0:
        out[...] = 0 if bias is None else bias
        return out
    a, sab = _batch_stride(a, batch)
    b, sbb = _batch_stride(b, batch)
    item = a.itemsize
    block, tn, tm = _BLOCKS[name]
    kernel = runtime.function("matmul.cu", f"{name}<{ctype(a.dtype)}>")
    i64 = np.int64
    strides = (i64(a.strides[-2] // item), i64(a.strides[-1] // item), i64(b.strides[-2] // item),
               i64(b.strides[-1] // item))
    for grid, l, m0, m1 in matmul_launches(L, M, N, tm, tn):
        if l is None:  # the whole product in one launch: batch over grid z (a grid-stride loop)
            args = (a, b, out, L, M, sab, sbb)
        else:  # rows m0 .. m1 - 1 of matrix l: views that start there, a batch of one
            idx = np.unravel_index(l, batch) if batch else ()
            args = (a[idx][m0:m1], b[idx], out[idx][m0:m1], 1, m1 - m0, 0, 0)
        pa, pb, pc, nl, nm, sa, sb = args
        kernel(grid, block, (pa, pb, pc, pc if bias is None else bias, np.int32(bias is not None), np.int32(nl),
                             np.int32(nm), np.int32(N), np.int32(K), i64(sa), strides[0], strides[1],
                             i64(sb), strides[2], strides[3]))
    return out


def matmul_launches(L, M, N, tile_m, tile_n):
    """[(grid, l, m0, m1), ...]: the launches of a matmul.cu kernel for L products (M, K) @ (K, N)
    with tile_m x tile_n output tiles per block: columns over grid x, row tiles over grid y (read
    directly by the kernels, at most 65,535), the batch over grid z (a grid-stride loop, so capped).
    Normally one launch (l None: every product, rows 0 .. M). Where M needs more than 65,535 row
    tiles (linear on more than 65,535 x 128 rows for v3, x 8 for v1), one launch per product l
    and slab of rows m0 .. m1 - 1, each within the limits; they cover every (l, row) once."""
    row_tiles = -(-M // tile_m)
    if row_tiles <= runtime.MAX_GRID_YZ:
        return [(runtime.check_grid((-(-N // tile_n), row_tiles, min(L, runtime.MAX_GRID_YZ))), None, 0, M)]
    return [(runtime.check_grid((-(-N // tile_n), -(-(m1 - m0) // tile_m), 1)), l, m0, m1)
            for l in range(L) for m0, m1 in runtime.chunks(M, runtime.MAX_GRID_YZ * tile_m)]


def cublas_product(a, b):
    return xp_of(a).matmul(a, b)


# ---------------------------------------------------------------- matmul with NumPy's rules
def _matmul(product, a, b):
    """product() takes >= 2-D operands; 1-D ones are promoted and the added axis dropped after."""
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    out = product(a2, b2)
    if b.ndim == 1:
        out = out[..., 0]
    if a.ndim == 1:
        out = out[..., 0, :] if b.ndim > 1 else out[..., 0]
    return out


def _unbroadcast(g, shape):
    """Sum g down to shape (undo broadcasting of leading and size-1 axes)."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


def _matmul_backward(product, grad, a, b):
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = grad
    if b.ndim == 1:
        g2 = g2[..., None]
    if a.ndim == 1:
        g2 = g2[..., None, :]
    da = _unbroadcast(product(g2, b2.swapaxes(-1, -2)), a2.shape)  # dA = dC @ B^T
    db = _unbroadcast(product(a2.swapaxes(-1, -2), g2), b2.shape)  # dB = A^T @ dC
    return da.reshape(a.shape), db.reshape(b.shape)


def _matmul_version(name):
    product = cublas_product if name == "cublas" else (lambda a, b: kernel_product(name, a, b))

    def forward(a, b):
        return _matmul(product, a, b), (a, b)

    def backward(grad, cache):
        return _matmul_backward(product, grad, *cache)

    return forward, backward


# ---------------------------------------------------------------- linear and patch embedding
def _linear_version(name):
    def forward(x, w, b):
        x2 = x.reshape(-1, x.shape[-1])  # (M, Din)
        if name == "cublas":
            y = x2 @ w.T  # cuBLAS reads w transposed where it lies
            if b is not None:
                y += b
        else:
            y = kernel_product(name, x2, w.T, bias=b)  # the bias added in the kernel's store
        return y.reshape(*x.shape[:-1], w.shape[0]), (x, w, b is not None)

    def backward(grad, cache):
        x, w, has_bias = cache
        product = cublas_product if name == "cublas" else (lambda p, q: kernel_product(name, p, q))
        g2 = grad.reshape(-1, grad.shape[-1])  # (M, Dout)
        x2 = x.reshape(-1, x.shape[-1])  # (M, Din)
        dx = product(g2, w).reshape(x.shape)  # (M, Dout) @ (Dout, Din)
        dw = product(g2.T, x2)  # (Dout, M) @ (M, Din)
        db = g2.sum(axis=0) if has_bias else None
        return dx, dw, db

    return forward, backward


_linear_cublas = _linear_version("cublas")


def patchify(x, p):
    """(B, C, H, W) -> (B, Np, C*P*P), patches in raster order, each flattened as (C, P, P)."""
    B, C, H, W = x.shape
    gh, gw = H // p, W // p
    x = x.reshape(B, C, gh, p, gw, p).transpose(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, P, P)
    return xp_of(x).ascontiguousarray(x).reshape(B, gh * gw, C * p * p)


def unpatchify(patches, shape, p):
    B, C, H, W = shape
    gh, gw = H // p, W // p
    x = patches.reshape(B, gh, gw, C, p, p).transpose(0, 3, 1, 4, 2, 5)  # (B, C, gh, P, gw, P)
    return xp_of(x).ascontiguousarray(x).reshape(B, C, H, W)


def patch_embed_forward(x, w, b):
    D, P = w.shape[0], w.shape[-1]
    if x.shape[2] % P or x.shape[3] % P:
        raise ValueError(f"image size {x.shape[2]}x{x.shape[3]} is not a multiple of the patch size {P}")
    patches = patchify(x, P)  # (B, Np, C*P*P)
    y, _ = _linear_cublas[0](patches, w.reshape(D, -1), b)  # (B, Np, D)
    return y, (patches, w, b is not None, x.shape)


def patch_embed_backward(grad, cache):
    patches, w, has_bias, x_shape = cache
    dpatches, dw, db = _linear_cublas[1](grad, (patches, w.reshape(w.shape[0], -1), has_bias))
    return unpatchify(dpatches, x_shape, w.shape[-1]), dw.reshape(w.shape), db


# ---------------------------------------------------------------- registry
_CU = "CUDA C (matmul.cu)"
for _name, _what in (("v1", "one thread per output, operands read from global memory"),
                     ("v2", "16x16 shared-memory tiles"),
                     ("v3", "128x128x8 tiles, 8x8 outputs per thread in registers")):
    register("matmul", f"gpu_{_name}", *_matmul_version(f"matmul_{_name}"), device="gpu",
             description=f"{_CU}: {_what}")
register("matmul", "gpu_cublas", *_matmul_version("cublas"), device="gpu",
         description="cuBLAS through cupy.matmul (strided-batched sgemm)")
register("linear", "gpu_v3", *_linear_version("matmul_v3"), device="gpu",
         description=f"{_CU}: the v3 register-tiled product with the bias fused into its store")
register("linear", "gpu_cublas", *_linear_cublas, device="gpu",
         description="cuBLAS product (w read transposed in place) + CuPy bias add and bias-grad sum")
register("patch_embed", "gpu_cublas", patch_embed_forward, patch_embed_backward, device="gpu",
         description="patchify by one CuPy reshape/transpose copy, one cuBLAS product")
