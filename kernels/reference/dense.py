"""Dense products: matmul, linear (x @ w.T + b) and patch embedding.

Patch embedding (ViT paper, Eq. 1) cuts a (C, H, W) image into P x P patches in raster order and
projects each flattened patch with the same matrix E; it equals a conv with stride P, which is
how timm stores E: `patch_embed.proj.weight` (D, C, P, P).

    for b, (i, j) in patches:                  # i over H/P rows, j over W/P columns
        out[b, i*gw + j, :] = E . x[b, :, iP:(i+1)P, jP:(j+1)P].flatten() + bias
"""
import numpy as np


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`, undoing NumPy broadcasting."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def matmul_forward(a, b):
    return np.matmul(a, b), (a, b)


def matmul_backward(grad, cache):
    a, b = cache
    if b.ndim == 1:  # (..., Din) @ (Din,) -> (...)
        da = grad[..., None] * b
        db = unbroadcast((a * grad[..., None]).reshape(-1, b.shape[0]).sum(0), b.shape) if a.ndim > 1 else grad * a
        return da, db
    if a.ndim == 1:  # (Din,) @ (..., Din, Dout) -> (..., Dout)
        da = unbroadcast(np.matmul(b, grad[..., None])[..., 0], a.shape)
        return da, unbroadcast(a[:, None] * grad[..., None, :], b.shape)
    da = unbroadcast(np.matmul(grad, np.swapaxes(b, -1, -2)), a.shape)
    db = unbroadcast(np.matmul(np.swapaxes(a, -1, -2), grad), b.shape)
    return da, db


def linear_forward(x, w, b):
    # One 2-D product over all rows: a 3-D `x @ w.T` would run one small GEMM per batch entry.
    y = x.reshape(-1, x.shape[-1]) @ w.T  # (M, Dout)
    if b is not None:
        y += b
    return y.reshape(*x.shape[:-1], w.shape[0]), (x, w, b is not None)


def linear_backward(grad, cache):
    x, w, has_bias = cache
    g2 = grad.reshape(-1, grad.shape[-1])  # (M, Dout)
    x2 = x.reshape(-1, x.shape[-1])  # (M, Din)
    dx = (g2 @ w).reshape(x.shape)
    dw = g2.T @ x2  # (Dout, Din)
    db = g2.sum(axis=0) if has_bias else None
    return dx, dw, db


def patchify(x, p):
    """(B, C, H, W) -> (B, Np, C*P*P), patches in raster order, each flattened as (C, P, P)."""
    B, C, H, W = x.shape
    gh, gw = H // p, W // p
    x = x.reshape(B, C, gh, p, gw, p).transpose(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, P, P)
    return x.reshape(B, gh * gw, C * p * p)


def unpatchify(patches, shape, p):
    """Inverse of patchify: (B, Np, C*P*P) -> (B, C, H, W)."""
    B, C, H, W = shape
    gh, gw = H // p, W // p
    x = patches.reshape(B, gh, gw, C, p, p).transpose(0, 3, 1, 4, 2, 5)  # (B, C, gh, P, gw, P)
    return x.reshape(B, C, H, W)


def patch_embed_forward(x, w, b):
    p = w.shape[-1]
    patches = patchify(x, p)  # (B, Np, C*P*P)
    y, _ = linear_forward(patches, w.reshape(w.shape[0], -1), b)  # (B, Np, D)
    return y, (patches, w, b is not None, x.shape)


def patch_embed_backward(grad, cache):
    patches, w, has_bias, x_shape = cache
    dpatches, dw, db = linear_backward(grad, (patches, w.reshape(w.shape[0], -1), has_bias))
    return unpatchify(dpatches, x_shape, w.shape[-1]), dw.reshape(w.shape), db
