"""Forward FLOPs of any minivit model, counted from the shapes its dense kernels see.

Every fused op runs through autograd.KernelOp.forward; wrapped for one no-grad forward pass, it
tallies 2 x multiply-adds of the products (matmul, linear, patch embedding, attention, conv2d).
Norms, activations and pooling are left out, as the ViT paper's compute counts leave them out.
Training costs about 3x the forward (the backward computes two products per forward product).
"""
from __future__ import annotations

import math

import numpy as np

from minivit.autograd import KernelOp, no_grad


def op_flops(op, arrays, params):
    """2 x multiply-adds of one kernel call (0 for ops without a product)."""
    a = arrays[0]
    if op == "matmul":
        b = arrays[1]
        batch = math.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2])) if a.ndim > 1 and b.ndim > 1 else 1
        return 2 * batch * (a.shape[-2] if a.ndim > 1 else 1) * a.shape[-1] * (b.shape[-1] if b.ndim > 1 else 1)
    if op == "linear":
        return 2 * math.prod(a.shape[:-1]) * a.shape[-1] * arrays[1].shape[0]
    if op == "patch_embed":
        w = arrays[1]  # (D, C, P, P)
        return 2 * a.shape[0] * (a.shape[2] // w.shape[2]) * (a.shape[3] // w.shape[3]) * w[0].size * w.shape[0]
    if op == "attention":
        B, Hh, N, hd = a.shape
        return 4 * B * Hh * N * N * hd  # q k^T and p v
    if op == "conv2d":
        w = arrays[1]  # (O, C, kh, kw)
        (sh, sw), (t, b, l, r) = params["stride"], params["padding"]
        Ho = (a.shape[2] + t + b - w.shape[2]) // sh + 1
        Wo = (a.shape[3] + l + r - w.shape[3]) // sw + 1
        return 2 * a.shape[0] * Ho * Wo * w[0].size * w.shape[0]
    return 0


def forward_flops(model, x, **kwargs) -> int:
    """FLOPs of model(x, **kwargs), for the whole batch x."""
    total = []
    original = KernelOp.__dict__["forward"]

    def counting(cls, ctx, *arrays, **params):
        total.append(op_flops(cls.op, arrays, params))
        return original.__func__(cls, ctx, *arrays, **params)

    KernelOp.forward = classmethod(counting)
    try:
        with no_grad():
            model(x, **kwargs)
    finally:
        KernelOp.forward = original
    return int(sum(total))
