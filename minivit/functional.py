"""Fused ops with hand-written backward, and the composed ops built from them.

Each fused op (linear, patch embedding, layernorm, gelu, softmax, attention, softmax-cross-entropy)
is a `KernelOp` (autograd.py): its forward and backward are array kernels fetched from the
`kernels` registry at call time, so `kernels.use(attention="cpu_v3")` changes what runs without
touching model code. Dropout and drop-path draw their masks from `minivit.rng` and are written
out here.

Shape letters: B batch, N tokens, D width, Hh heads, hd = D / Hh, K classes.
"""
from __future__ import annotations

import math

import numpy as np

from . import rng
from .autograd import Function, KernelOp, MatMul, Tensor, array_module


class Linear(KernelOp):
    op = "linear"


class PatchEmbed(KernelOp):
    op = "patch_embed"


class LayerNorm(KernelOp):
    op = "layernorm"


class Gelu(KernelOp):
    op = "gelu"


class Softmax(KernelOp):
    op = "softmax"


class Attention(KernelOp):
    op = "attention"


class SoftmaxCrossEntropy(KernelOp):
    op = "softmax_cross_entropy"


def linear(x, weight, bias=None) -> Tensor:
    """y = x @ weight.T + bias; x (..., Din), weight (Dout, Din), bias (Dout,)."""
    return Linear.apply(x, weight, bias)


def matmul(a, b) -> Tensor:
    return MatMul.apply(a, b)


def patch_embed(x, weight, bias) -> Tensor:
    """(B, C, H, W) images -> (B, Np, D) patch tokens (ViT Eq. 1); weight (D, C, P, P)."""
    return PatchEmbed.apply(x, weight, bias)


def layer_norm(x, weight, bias, eps=1e-6) -> Tensor:
    return LayerNorm.apply(x, weight, bias, eps=eps)


def gelu(x) -> Tensor:
    """Exact GELU, x * Phi(x), as in ViT's MLP."""
    return Gelu.apply(x)


def softmax(x, axis=-1) -> Tensor:
    if axis in (-1, x.ndim - 1):
        return Softmax.apply(x)
    return Softmax.apply(x.transpose(_swap(x.ndim, axis))).transpose(_swap(x.ndim, axis))


def _swap(ndim, axis):
    axes = list(range(ndim))
    axes[axis], axes[-1] = axes[-1], axes[axis]
    return tuple(axes)


def scaled_dot_product_attention(q, k, v, scale=None) -> Tensor:
    """softmax(scale * q @ k^T) @ v for q, k, v (B, Hh, N, hd), by the registry's fused attention
    kernel: the flash-style CPU default never forms the (B, Hh, N, N) weights, and its backward
    recomputes them from the saved row log-sum-exp. scale defaults to 1 / sqrt(hd)."""
    if q.ndim != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k and v should all be (B, Hh, N, hd), got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return Attention.apply(q, k, v, scale=float(scale))


def cross_entropy(logits, labels, label_smoothing=0.0) -> Tensor:
    """Mean softmax cross-entropy of logits (B, K) against integer labels (B,), with optional
    label smoothing; the same function as torch.nn.functional.cross_entropy."""
    labels = labels.data if isinstance(labels, Tensor) else labels
    logits = logits if isinstance(logits, Tensor) else Tensor(logits)
    xp = array_module(logits.data)
    labels = xp.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.astype(np.int64, copy=False)
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels should have shape ({logits.shape[0]},) to match logits {tuple(logits.shape)}, "
                         f"got {tuple(labels.shape)}")
    num_classes = logits.shape[-1]
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}] for {num_classes} classes, "
                         f"got values in [{int(labels.min())}, {int(labels.max())}]")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing}")
    return SoftmaxCrossEntropy.apply(logits, labels, label_smoothing=float(label_smoothing))


class _Mask(Function):
    """x * mask, where mask is a constant (already scaled) array: dropout and drop-path."""

    @staticmethod
    def forward(ctx, x, mask):
        ctx.mask = mask
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.mask, None


def check_probability(p, what="dropout"):
    """p as a float in [0, 1), else a ValueError naming `what`: one check for every dropout."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)) or not 0.0 <= p < 1.0:
        raise ValueError(f"{what} probability must be a number in [0, 1), got {p!r}")
    return float(p)


def dropout(x, p=0.0, training=True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout)."""
    if not check_probability(p, "dropout") or not training:
        return x
    mask = _keep_mask(x.shape, p, x.dtype, x.data if isinstance(x, Tensor) else x)
    return _Mask.apply(x, mask)


def drop_path(x, p=0.0, training=True) -> Tensor:
    """Stochastic depth (Huang et al. 2016): drop a residual branch for a whole sample.
    x (B, ...) -> the mask is (B, 1, ..., 1)."""
    if not check_probability(p, "drop-path") or not training:
        return x
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return _Mask.apply(x, _keep_mask(shape, p, x.dtype, x.data if isinstance(x, Tensor) else x))


def _keep_mask(shape, p, dtype, like):
    keep = rng.generator().random(shape, dtype=np.float32) >= p
    mask = keep.astype(dtype) * np.asarray(1.0 / (1.0 - p), dtype=dtype)
    return mask if array_module(like) is np else array_module(like).asarray(mask)
