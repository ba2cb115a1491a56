"""Softmax cross-entropy on the GPU (the formulas: kernels/reference/loss.py).

Shape letters: logits (B, K), labels int64 (B,).

Versions:

    gpu_v1  the reference's algorithm in CuPy array expressions (also runs with NumPy arrays):
            log-softmax, a smoothed-target array, their product; the backward exponentiates the
            cached log-probabilities again.
    gpu_v2  CUDA C (loss.cu), fused with its gradient: one warp per row writes the row's loss and
            its gradient (softmax - t) / B in one pass over the logits; the mean over rows is one
            CuPy reduction (deterministic, no atomics); the backward is one multiplication by the
            incoming gradient, which stays on the device (no copy of the loss to the host).

Measured: numbers owed (no GPU in the session that wrote this); `python -m kernels.bench
softmax_cross_entropy --device cuda`. This op is tiny in a ViT step (B x K = 128 x 10): what
counts is the number of launches (v1: about twelve, v2: two forward, one backward).

Default (kernels/registry.py): gpu_v2.
"""
from __future__ import annotations

import numpy as np

from ..registry import register
from . import runtime
from .runtime import ctype, xp_of

DECLARED = {"loss.cu": [f"sce_fwd_v2<{t}>" for t in ("float", "double")]}


def sce_v1_forward(logits, labels, label_smoothing=0.0):
    xp = xp_of(logits)
    B, K = logits.shape
    shifted = logits - logits.max(axis=-1, keepdims=True)
    logp = shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))  # (B, K)
    t = xp.full((B, K), label_smoothing / K, dtype=logits.dtype)
    t[xp.arange(B), labels] += 1.0 - label_smoothing
    loss = -(t * logp).sum() / B
    return xp.asarray(loss, dtype=logits.dtype), (logp, t)


def sce_v1_backward(grad, cache):
    logp, t = cache
    return ((xp_of(logp).exp(logp) - t) * (grad / logp.shape[0]),)


def sce_v2_forward(logits, labels, label_smoothing=0.0):
    xp = xp_of(logits)
    B, K = logits.shape
    runtime.check_operands("softmax_cross_entropy gpu_v2", {"logits": logits})
    if tuple(labels.shape) != (B,):
        raise ValueError(f"softmax_cross_entropy gpu_v2: labels has shape {tuple(labels.shape)}, expected ({B},) "
                         "for logits of shape ({B}, {K})")
    logits = runtime.contiguous(logits)
    labels = xp.ascontiguousarray(labels, dtype=np.int64)
    loss_rows = xp.empty((B,), logits.dtype)
    dlogits = xp.empty_like(logits)
    if B and K:
        kernel = runtime.function("loss.cu", f"sce_fwd_v2<{ctype(logits.dtype)}>")
        kernel((runtime.blocks_for(B, 8, cap=65535),), (256,),
               (logits, labels, loss_rows, dlogits, np.int32(B), np.int32(K),
                runtime.scalar(logits.dtype, label_smoothing)))
    loss = loss_rows.sum() / B if B else xp.zeros((), logits.dtype)
    return loss.astype(logits.dtype, copy=False), (dlogits,)


def sce_v2_backward(grad, cache):
    (dlogits,) = cache
    return (dlogits * grad.astype(dlogits.dtype, copy=False),)


register("softmax_cross_entropy", "gpu_v1", sce_v1_forward, sce_v1_backward, device="gpu",
         description="CuPy array expressions (the reference's algorithm)")
register("softmax_cross_entropy", "gpu_v2", sce_v2_forward, sce_v2_backward, device="gpu",
         description="CUDA C (loss.cu): a warp per row writes its loss and gradient in one pass")
