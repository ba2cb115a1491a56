"""Convolution, weight standardization, group normalization and max pooling on the GPU (BiT's
ResNetV2 and the hybrid ViT's stem; the maths: kernels/reference/conv.py).

Shape letters: B batch, C input channels, O output channels, H/W input size, Ho/Wo output size,
kh/kw kernel, K = C*kh*kw, L = Ho*Wo, G groups.

Decision: the ViT itself needs none of these ops; the hybrid models do. Rather than leave them
without a GPU implementation (a hybrid model on the GPU would then have to stop, or copy its
activations to the host and back inside every step), each has one GPU version, `gpu_v1`: the
reference's algorithm written in CuPy array calls, so that every model minivit has trains on
the GPU. No hand-written CUDA yet: im2col is a strided window view copied once, the product is
one cuBLAS call for the whole batch, col2im adds kh*kw strided slices, max pooling's backward
scatters with cupy.add.at. These run with NumPy arrays too, which is how the tests check them
on a machine without a GPU. They are the place to start for numbered CUDA versions (an
implicit-GEMM convolution first), when the hybrid's speed on the GPU matters.

Measured: numbers owed (no GPU in the session that wrote this); `python -m kernels.bench conv2d
weight_standardize groupnorm max_pool2d --device cuda`.

Defaults (kernels/registry.py): gpu_v1 for all four (the only GPU versions).
"""
from __future__ import annotations

import numpy as np

from ..registry import register
from .runtime import xp_of


def output_size(n, k, s, pad_lo, pad_hi):
    return (n + pad_lo + pad_hi - k) // s + 1


def pad2d(x, padding, value=0.0):
    top, bottom, left, right = padding
    if not (top or bottom or left or right):
        return x
    return xp_of(x).pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def windows(xpad, kh, kw, stride):
    """Every kh x kw window at stride (sh, sw), as a view: (B, C, Ho, Wo, kh, kw)."""
    sh, sw = stride
    view = xp_of(xpad).lib.stride_tricks.sliding_window_view(xpad, (kh, kw), axis=(2, 3))
    return view[:, :, ::sh, ::sw]


def im2col(x, kh, kw, stride, padding):
    win = windows(pad2d(x, padding), kh, kw, stride)  # (B, C, Ho, Wo, kh, kw)
    B, C, Ho, Wo = win.shape[:4]
    return xp_of(x).ascontiguousarray(win.transpose(1, 4, 5, 0, 2, 3)).reshape(C * kh * kw, B * Ho * Wo)


def col2im(dcols, x_shape, kh, kw, stride, padding, out_hw):
    B, C, H, W = x_shape
    (sh, sw), (Ho, Wo) = stride, out_hw
    top, bottom, left, right = padding
    dxp = xp_of(dcols).zeros((C, B, H + top + bottom, W + left + right), dtype=dcols.dtype)
    d6 = dcols.reshape(C, kh, kw, B, Ho, Wo)
    for di in range(kh):
        for dj in range(kw):
            dxp[:, :, di:di + sh * (Ho - 1) + 1:sh, dj:dj + sw * (Wo - 1) + 1:sw] += d6[:, di, dj]
    return xp_of(dcols).ascontiguousarray(dxp[:, :, top:top + H, left:left + W].transpose(1, 0, 2, 3))


def conv2d_forward(x, w, b, stride=(1, 1), padding=(0, 0, 0, 0)):
    xp = xp_of(x)
    B, C, H, W = x.shape
    O, _, kh, kw = w.shape
    Ho = output_size(H, kh, stride[0], padding[0], padding[1])
    Wo = output_size(W, kw, stride[1], padding[2], padding[3])
    cols = im2col(x, kh, kw, stride, padding)  # (K, B*L)
    out = w.reshape(O, -1) @ cols  # (O, B*L): one cuBLAS product for the batch
    if b is not None:
        out += b[:, None]
    out = xp.ascontiguousarray(out.reshape(O, B, Ho, Wo).transpose(1, 0, 2, 3))  # (B, O, Ho, Wo)
    return out, (cols, w, b is not None, x.shape, stride, padding)


def conv2d_backward(grad, cache):
    cols, w, has_bias, x_shape, stride, padding = cache
    B, O, Ho, Wo = grad.shape
    g = xp_of(grad).ascontiguousarray(grad.transpose(1, 0, 2, 3)).reshape(O, B * Ho * Wo)  # (O, B*L)
    dw = (g @ cols.T).reshape(w.shape)
    dcols = w.reshape(O, -1).T @ g  # (K, B*L)
    dx = col2im(dcols, x_shape, w.shape[2], w.shape[3], stride, padding, (Ho, Wo))
    return dx, dw, (g.sum(axis=1) if has_bias else None)


def weight_standardize_forward(w, eps=1e-6):
    xp = xp_of(w)
    rows = w.reshape(w.shape[0], -1)  # (O, K)
    mu = rows.mean(axis=1, keepdims=True)
    rstd = 1.0 / xp.sqrt(((rows - mu) ** 2).mean(axis=1, keepdims=True) + eps)
    what = (rows - mu) * rstd
    return what.reshape(w.shape), (what, rstd, w.shape)


def weight_standardize_backward(grad, cache):
    what, rstd, shape = cache
    g = grad.reshape(what.shape)
    dw = rstd * (g - g.mean(axis=1, keepdims=True) - what * (g * what).mean(axis=1, keepdims=True))
    return (dw.reshape(shape),)


def groupnorm_forward(x, w, b, groups, eps=1e-5, relu=False):
    xp = xp_of(x)
    B, C = x.shape[:2]
    xg = x.reshape(B, groups, -1)  # (B, G, C/G * H*W)
    mu = xg.mean(axis=2, keepdims=True)
    rstd = 1.0 / xp.sqrt(((xg - mu) ** 2).mean(axis=2, keepdims=True) + eps)
    xhat = ((xg - mu) * rstd).reshape(x.shape)
    per_channel = (1, C) + (1,) * (x.ndim - 2)
    y = xhat * w.reshape(per_channel) + b.reshape(per_channel)
    active = y > 0 if relu else None  # GroupNorm + ReLU fused, as the reference
    return (y * active if relu else y), (xhat, rstd, w, groups, active)


def groupnorm_backward(grad, cache):
    xhat, rstd, w, groups, active = cache
    if active is not None:
        grad = grad * active
    B, C = grad.shape[:2]
    spatial = tuple(range(2, grad.ndim))
    dw = (grad * xhat).sum(axis=(0,) + spatial)
    db = grad.sum(axis=(0,) + spatial)
    gh = (grad * w.reshape((1, C) + (1,) * len(spatial))).reshape(B, groups, -1)
    xg = xhat.reshape(B, groups, -1)
    dx = rstd * (gh - gh.mean(axis=2, keepdims=True) - xg * (gh * xg).mean(axis=2, keepdims=True))
    return dx.reshape(grad.shape), dw, db


def max_pool2d_forward(x, kernel=(3, 3), stride=(2, 2), padding=(0, 0, 0, 0), pad_value=-np.inf):
    xp = xp_of(x)
    kh, kw = kernel
    xpad = pad2d(x, padding, pad_value)
    win = windows(xpad, kh, kw, stride)  # (B, C, Ho, Wo, kh, kw)
    flat = xp.ascontiguousarray(win).reshape(win.shape[:4] + (kh * kw,))
    arg = flat.argmax(axis=-1)  # the first maximum, as PyTorch
    out = xp.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    return out, (arg, x.shape, xpad.shape, kernel, stride, padding)


def max_pool2d_backward(grad, cache):
    arg, x_shape, xp_shape, (kh, kw), (sh, sw), padding = cache
    xp = xp_of(grad)
    B, C, Ho, Wo = grad.shape
    rows = xp.arange(Ho)[:, None] * sh + arg // kw  # where each maximum sits in the padded input
    cols = xp.arange(Wo)[None, :] * sw + arg % kw
    dxp = xp.zeros((B * C, xp_shape[2] * xp_shape[3]), dtype=grad.dtype)
    where = (rows * xp_shape[3] + cols).reshape(B * C, -1)
    xp.add.at(dxp, (xp.arange(B * C)[:, None], where), grad.reshape(B * C, -1))  # overlapping windows add
    top, _, left, _ = padding
    H, W = x_shape[2:]
    return (xp.ascontiguousarray(dxp.reshape(xp_shape)[:, :, top:top + H, left:left + W]),)


_V1 = "CuPy array calls (the reference's algorithm); no hand-written CUDA yet"
register("conv2d", "gpu_v1", conv2d_forward, conv2d_backward, device="gpu",
         description=f"{_V1}: im2col copy, one cuBLAS product, col2im by slice adds")
register("weight_standardize", "gpu_v1", weight_standardize_forward, weight_standardize_backward, device="gpu",
         description=_V1)
register("groupnorm", "gpu_v1", groupnorm_forward, groupnorm_backward, device="gpu", description=_V1)
register("max_pool2d", "gpu_v1", max_pool2d_forward, max_pool2d_backward, device="gpu",
         description=f"{_V1}: argmax over a window view, cupy.add.at backward")
