"""Fused ops with hand-written backward, and the composed ops built from them.

Each fused op (linear, patch embedding, layernorm, gelu, softmax, attention, softmax-cross-entropy)
is a `KernelOp`: its forward and backward are array kernels fetched from the `kernels` registry at
call time, so `kernels.use(attention="cpu_v3")` changes what runs without touching model code.
Dropout and drop-path draw their masks from `minivit.rng` and are written out here.

Shape letters: B batch, N tokens, D width, Hh heads, hd = D / Hh, K classes.
"""
from __future__ import annotations

import math

import numpy as np

import kernels

from . import rng
from .autograd import Function, Tensor, array_module, device_of


class KernelOp(Function):
    """A fused op whose forward and backward are the registry's current kernels for `op`."""

    op: str = ""

    @classmethod
    def forward(cls, ctx, *arrays, **params):
        arrays = [_contiguous(a) if a is not None and a.dtype.kind == "f" else a for a in arrays]
        ctx.impl = kernels.get(cls.op, device_of(arrays[0]))
        out, ctx.cache = ctx.impl.forward(*arrays, **params)
        return out

    @staticmethod
    def backward(ctx, grad):
        return ctx.impl.backward(_contiguous(grad), ctx.cache)


def _contiguous(a):
    """Kernels take C-contiguous arrays (Numba compiles one version per memory layout)."""
    if a.ndim == 0 or a.flags.c_contiguous:  # ascontiguousarray would turn 0-d into 1-d
        return a
    return array_module(a).ascontiguousarray(a)


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


class MatMul(KernelOp):
    op = "matmul"


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


def scaled_dot_product_attention(q, k, v, scale=None, bias=None, dropout_p=0.0, training=False,
                                 return_weights=False):
    """softmax(scale * q @ k^T + bias) @ v for q, k, v (B, Hh, N, hd).

    The plain case runs the fused attention kernel. An additive bias (relative position
    embeddings), attention dropout or a request for the weights (analysis) take the composed
    path, which materialises the (B, Hh, N, N) probabilities."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if bias is None and not (dropout_p and training) and not return_weights:
        return Attention.apply(q, k, v, scale=scale)
    logits = (q @ k.transpose(0, 1, 3, 2)) * scale  # (B, Hh, N, N)
    if bias is not None:
        logits = logits + bias
    weights = softmax(logits)
    out = dropout(weights, dropout_p, training) @ v  # (B, Hh, N, hd)
    return (out, weights) if return_weights else out


class QKVAttention(Function):
    """Multi-head attention read straight from the qkv projection's output, (B, N, 3D) -> (B, N, D).

    One copy splits the packed (B, N, 3, Hh, hd) projection into contiguous (3, B, Hh, N, hd)
    heads for the registry's attention kernel and one merges its (B, Hh, N, hd) output back into
    tokens; backward does the same in reverse, so the whole qkv projection stays one matmul
    (forward and backward) instead of three."""

    @staticmethod
    def forward(ctx, qkv, num_heads, scale):
        B, N, D3 = qkv.shape
        hd = D3 // (3 * num_heads)
        xp = array_module(qkv)
        heads = xp.ascontiguousarray(qkv.reshape(B, N, 3, num_heads, hd).transpose(2, 0, 3, 1, 4))
        ctx.impl = kernels.get("attention", device_of(qkv))
        out, ctx.cache = ctx.impl.forward(heads[0], heads[1], heads[2], scale=scale)  # (B, Hh, N, hd)
        ctx.shape = (B, N, num_heads, hd)
        return xp.ascontiguousarray(out.transpose(0, 2, 1, 3)).reshape(B, N, num_heads * hd)

    @staticmethod
    def backward(ctx, grad):
        B, N, Hh, hd = ctx.shape
        xp = array_module(grad)
        dout = xp.ascontiguousarray(grad.reshape(B, N, Hh, hd).transpose(0, 2, 1, 3))
        dq, dk, dv = ctx.impl.backward(dout, ctx.cache)
        dqkv = xp.empty((B, N, 3, Hh, hd), dtype=dq.dtype)
        for i, d in enumerate((dq, dk, dv)):
            dqkv[:, :, i] = d.transpose(0, 2, 1, 3)
        return dqkv.reshape(B, N, 3 * Hh * hd), None, None


def qkv_attention(qkv, num_heads, scale=None) -> Tensor:
    """softmax(scale * q k^T) v over num_heads heads, with q, k, v the thirds of the last axis of
    qkv (B, N, 3D), each split into heads as timm does; returns (B, N, D)."""
    if qkv.ndim != 3 or qkv.shape[-1] % (3 * num_heads):
        raise ValueError(f"qkv should be (B, N, 3 * D) with D a multiple of {num_heads} heads, "
                         f"got shape {tuple(qkv.shape)}")
    hd = qkv.shape[-1] // (3 * num_heads)
    scale = 1.0 / math.sqrt(hd) if scale is None else scale
    return QKVAttention.apply(qkv, num_heads, scale)


def cross_entropy(logits, labels, label_smoothing=0.0) -> Tensor:
    """Mean softmax cross-entropy of logits (B, K) against integer labels (B,), with optional
    label smoothing; the same function as torch.nn.functional.cross_entropy."""
    labels = labels.data if isinstance(labels, Tensor) else labels
    xp = array_module(logits.data if isinstance(logits, Tensor) else logits)
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


def dropout(x, p=0.0, training=True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout)."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must lie in [0, 1), got {p}")
    mask = _keep_mask(x.shape, p, x.dtype, x.data if isinstance(x, Tensor) else x)
    return _Mask.apply(x, mask)


def drop_path(x, p=0.0, training=True) -> Tensor:
    """Stochastic depth (Huang et al. 2016): drop a residual branch for a whole sample.
    x (B, ...) -> the mask is (B, 1, ..., 1)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop-path probability must lie in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return _Mask.apply(x, _keep_mask(shape, p, x.dtype, x.data if isinstance(x, Tensor) else x))


def _keep_mask(shape, p, dtype, like):
    keep = rng.generator().random(shape, dtype=np.float32) >= p
    mask = keep.astype(dtype) * np.asarray(1.0 / (1.0 - p), dtype=dtype)
    return mask if array_module(like) is np else array_module(like).asarray(mask)
