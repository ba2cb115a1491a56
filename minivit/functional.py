"""Fused ops with hand-written backward, and the composed ops built from them.

Each fused op (linear, patch embedding, layernorm, gelu, softmax, attention, softmax-cross-entropy)
is a `KernelOp` (autograd.py): its forward and backward are array kernels fetched from the
`kernels` registry at call time, so `with kernels.use(attention="cpu_v3"):` changes what runs
without touching model code. Dropout, drop-path and patch dropout draw their masks from `minivit.rng`
and are written out here.

Shape letters: B batch, N tokens, D width, Hh heads, hd = D / Hh, K classes.
"""
from __future__ import annotations

import math

import numpy as np

from . import rng
from .autograd import Function, KernelOp, MatMul, Tensor, array_module
from .device import device_of


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
    strided = True  # on the GPU, q, k, v reach the kernels as unbind's views: no contiguous copies of them


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


def check_labels(labels, num_classes, what="labels"):
    """A ValueError unless every one of the host `labels` lies in [0, num_classes) (`what` names
    them in the message): cross_entropy's check, which the Trainer also runs once per split."""
    labels = np.asarray(labels)
    if labels.size:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise ValueError(f"{what} must lie in [0, {num_classes - 1}] for {num_classes} classes, "
                             f"got values in [{low}, {high}]")


def cross_entropy(logits, labels, label_smoothing=0.0) -> Tensor:
    """Mean softmax cross-entropy of logits (B, K) against integer labels (B,), with optional
    label smoothing; the same function as torch.nn.functional.cross_entropy."""
    labels = labels.data if isinstance(labels, Tensor) else labels
    logits = logits if isinstance(logits, Tensor) else Tensor(logits)
    labels = labels if device_of(labels) == "gpu" else np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels should have shape ({logits.shape[0]},) to match logits {tuple(logits.shape)}, "
                         f"got {tuple(labels.shape)}")
    num_classes = logits.shape[-1]
    # Host labels are checked here, at no cost. Labels already on the GPU are not: reading them back
    # would copy them to the host and wait for the device in every step. The Trainer checked them on
    # the host, every split once, before its loaders copied batches to the GPU (with check_labels);
    # an out-of-range label that reaches the GPU anyway gets a NaN loss from the default GPU kernel
    # (kernels/gpu/loss.cu), which the Trainer reports as a non-finite loss.
    if device_of(labels) != "gpu":
        check_labels(labels, num_classes)
    labels = array_module(logits.data).asarray(labels).astype(np.int64, copy=False)  # on the logits' device
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


def patch_dropout(x, p=0.0, num_prefix_tokens=0, training=True) -> Tensor:
    """PatchDropout (Liu et al. 2022, "PatchDropout: Economizing Vision Transformers Using Patch
    Dropout"): in training, each image keeps a random subset of its patch tokens and the rest are
    removed, so every block after it runs on fewer tokens (cheaper steps) and sees a partial image
    (a regulariser). x (B, N, D), position embeddings already added, so a kept token still knows
    where it came from -> (B, P + K, D): the P prefix tokens (class token) and K = max(1, int(L (1 - p)))
    of the L = N - P patch tokens, each image its own draw from minivit.rng, in their original
    order. timm's `PatchDropout` (VisionTransformer(patch_drop_rate=p)) keeps the same count; it
    draws with torch's generator and leaves the kept tokens unordered, which a Transformer without
    position-dependent parts after this point cannot tell apart. Evaluation (training=False) keeps
    every token."""
    if not check_probability(p, "patch dropout") or not training:
        return x
    B, N = x.shape[0], x.shape[1]
    L = N - num_prefix_tokens
    if L < 1:
        raise ValueError(f"patch dropout needs patch tokens: x has {N} tokens, {num_prefix_tokens} of them prefix")
    count = max(1, int(L * (1.0 - p)))
    order = np.argsort(rng.generator().random((B, L)), axis=1)[:, :count]  # (B, K): a random subset
    keep = np.concatenate([np.broadcast_to(np.arange(num_prefix_tokens), (B, num_prefix_tokens)),
                           num_prefix_tokens + np.sort(order, axis=1)], axis=1)  # (B, P + K)
    data = x.data if isinstance(x, Tensor) else x
    return _TakeTokens.apply(x, keep=array_module(data).asarray(keep))


class _TakeTokens(Function):
    """x (B, N, D) -> x[b, keep[b, j]] (B, K, D). The indices of a row are distinct, so the backward
    scatters the gradient into zeros by assignment (no accumulation needed)."""

    @staticmethod
    def forward(ctx, x, keep):
        xp = array_module(x)
        ctx.shape, ctx.keep = x.shape, keep
        ctx.rows = xp.arange(x.shape[0])[:, None]  # (B, 1)
        return x[ctx.rows, keep]

    @staticmethod
    def backward(ctx, grad):
        out = array_module(grad).zeros(ctx.shape, dtype=grad.dtype)
        out[ctx.rows, ctx.keep] = grad
        return out


def _keep_mask(shape, p, dtype, like):
    """1 / (1 - p) where an element is kept, 0 where dropped, on like's device. On the GPU the mask
    is drawn there from one seed taken from minivit.rng (kernels/gpu/dropout.py): no mask is
    copied from the host, and a resumed run, whose checkpoint restored minivit.rng, draws the same."""
    if array_module(like) is not np:
        from kernels.gpu.dropout import keep_mask

        return keep_mask(shape, p, dtype, seed=int(rng.generator().integers(2**63)))
    keep = rng.generator().random(shape, dtype=np.float32) >= p
    return keep.astype(dtype) * np.asarray(1.0 / (1.0 - p), dtype=dtype)


# ---- convolutional ops (BiT's ResNetV2 and the hybrid ViT's stem; kernels/reference/conv.py) ----
# Extra shape letters here: O output channels, kh/kw kernel size, G groups.

class Conv2d(KernelOp):
    op = "conv2d"


class WeightStandardize(KernelOp):
    op = "weight_standardize"


class GroupNorm(KernelOp):
    op = "groupnorm"


class MaxPool2d(KernelOp):
    op = "max_pool2d"


def _pair(v):
    return (int(v), int(v)) if np.isscalar(v) else tuple(int(a) for a in v)


def conv_padding(padding, size, kernel, stride):
    """(top, bottom, left, right) from an int, a pair (ph, pw), a 4-tuple, or "same": TensorFlow's
    SAME (output size ceil(size / stride), the odd pixel of padding at the bottom / right), as
    timm's StdConv2dSame and MaxPool2dSame pad for the hybrid ViT's ResNet."""
    if isinstance(padding, str):
        if padding != "same":
            raise ValueError(f"padding must be a number, a pair, a 4-tuple or 'same', got {padding!r}")
        out = []
        for n, k, s in zip(size, kernel, stride):
            total = max((-(-n // s) - 1) * s + k - n, 0)
            out += [total // 2, total - total // 2]
        return tuple(out)
    p = (int(padding),) * 4 if np.isscalar(padding) else tuple(int(a) for a in padding)
    if len(p) == 2:
        p = (p[0], p[0], p[1], p[1])
    if len(p) != 4 or min(p) < 0:
        raise ValueError(f"padding must be >= 0: an int, (ph, pw) or (top, bottom, left, right), got {padding!r}")
    return p


def conv2d(x, weight, bias=None, stride=1, padding=0) -> Tensor:
    """2D convolution (cross-correlation, as PyTorch's): x (B, C, H, W), weight (O, C, kh, kw),
    bias (O,) or None -> (B, O, Ho, Wo). stride: int or pair; padding: see conv_padding."""
    if x.ndim != 4 or weight.ndim != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"conv2d wants x (B, C, H, W) and weight (O, C, kh, kw), got {tuple(x.shape)} and "
                         f"{tuple(weight.shape)}")
    stride = _pair(stride)
    padding = conv_padding(padding, x.shape[2:], weight.shape[2:], stride)
    return Conv2d.apply(x, weight, bias, stride=stride, padding=padding)


def weight_standardize(weight, eps=1e-6) -> Tensor:
    """Each output channel's weights (weight[o], all but the first axis) shifted and scaled to zero
    mean and unit (biased) variance: BiT's StdConv2d (Qiao et al. 2019), eps inside the sqrt."""
    return WeightStandardize.apply(weight, eps=float(eps))


def group_norm(x, weight, bias, groups, eps=1e-5, relu=False) -> Tensor:
    """GroupNorm (Wu & He 2018) as torch.nn.functional.group_norm: x (B, C, ...) normalised over
    each group of C/G channels and all positions, then weight[c] * xhat + bias[c]; relu=True
    applies ReLU in the same kernel (timm's GroupNormAct)."""
    if x.shape[1] % groups:
        raise ValueError(f"group_norm: {x.shape[1]} channels do not split into {groups} groups")
    return GroupNorm.apply(x, weight, bias, groups=int(groups), eps=float(eps), relu=bool(relu))


def max_pool2d(x, kernel_size=3, stride=2, padding=0, pad_value=-math.inf) -> Tensor:
    """Max over kh x kw windows at a stride: x (B, C, H, W) -> (B, C, Ho, Wo). The padding (see
    conv_padding) holds pad_value: -inf as PyTorch's MaxPool2d; 0 for BiT's stem, which pads with
    ConstantPad2d(1, 0) and then pools unpadded."""
    kernel, stride = _pair(kernel_size), _pair(stride)
    padding = conv_padding(padding, x.shape[2:], kernel, stride)
    return MaxPool2d.apply(x, kernel=kernel, stride=stride, padding=padding, pad_value=float(pad_value))


def relu(x) -> Tensor:
    """max(x, 0), composed: x times the constant mask (x > 0), so the gradient is the mask (0 at 0)."""
    data = x.data if isinstance(x, Tensor) else x
    return x * (data > 0).astype(data.dtype)
