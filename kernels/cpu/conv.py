"""Convolution, group normalization and max pooling on the CPU in Numba (BiT's ResNetV2 and the
hybrid ViT's stem). The maths and the pseudo-loops are in kernels/reference/conv.py.

Shape letters: B batch, C input channels, O output channels, H/W input size, Ho/Wo output size,
kh/kw kernel, sh/sw stride, R = C*kh*kw (a conv's reduction), L = Ho*Wo, G groups, S = H*W
positions of one channel. Every kernel runs prange over the B*C planes (B*G groups for GroupNorm):
a task owns its plane of dx, so the scatter-adds of col2im and of max pooling never race.

Versions:

    conv2d cpu_v1     the reference's algorithm, im2col then one OpenBLAS product for the whole
                      batch, (O, R) @ (R, B*L), with im2col and col2im as Numba loops: each column
                      row written straight from its input plane (zeros for the padding, no padded
                      copy of x), and the adjoint adding each row back into its plane.
                      Story: the first reference ran np.matmul per image ((O, R) @ (R, L), B of
                      them): each small product woke OpenBLAS's threads, and on this busy 2-core
                      box that cost 20 ms a call (cifar3x3 forward 3.1 s; one product for the batch:
                      35 ms), so both now make one product. v1 then measured an 8-20x faster
                      backward (cifar3x3 987 -> 45 ms at first, 1.8 s -> 0.11 s later): all of it
                      from the dw = dout @ cols^T product, a reduction over B*L = 32768 positions
                      that OpenBLAS ran 15-20x slower in one orientation (kernels/cpu/dense.py's
                      _blas flips it). Once the reference orders that product too, v1's Numba
                      im2col/col2im are worth nothing measurable (table below): conv2d's default is
                      the reference, and v1 stays as the measured answer to "would a Numba im2col
                      help?". Two v2s were measured and dropped: one skipping im2col for 1x1 convs
                      (the columns of an unpadded 1x1 conv are x itself, transposed), 0.94-1.08x v1;
                      one choosing each product's orientation by its shape (alone, OpenBLAS took
                      20 ms for (48 x 12) @ (12 x 65536) and 1.5-3 ms for its transpose), 0.71-1.24x
                      v1 in place, on resnetv2_20_cifar's 1x1 convs (expand1x1, reduce1x1) too.
    groupnorm cpu_v1  fused per (image, group): mean and a two-pass variance in float64, then
                      normalise, scale, shift (and ReLU: timm's GroupNormAct is one kernel) in one
                      sweep; only mean and rstd are saved (B*G numbers). The backward recomputes
                      xhat and the ReLU mask with the forward's own expression, takes both group
                      sums and writes dx in one more sweep; dweight and dbias go to (B, C) float64
                      partials, summed over B at the end (no atomics, thread-count independent).
    max_pool2d cpu_v1 one pass over each output window reading the input directly (pad_value
                      stands in for the padding, no padded copy), keeping the flat input index of
                      the maximum (-1 when it is the padding; the first on ties, as PyTorch); the
                      backward adds each gradient at that index, plane by plane, where the
                      reference needs np.add.at (windows overlap at stride 2, kernel 3).
    weight_standardize: no Numba version. It runs on the weights, once per conv per step:
                      0.08 / 0.09 ms (fwd / bwd) for a CIFAR 3x3 conv's 128 x 32 x 3 x 3, 16-31 /
                      16-62 ms for an R50's largest 512 x 512 x 3 x 3, against 90-140 ms for one
                      CIFAR conv's activations: nothing there to gain.

Measured on the 2-core Intel Xeon (Emerald Rapids, AVX-512; a KVM guest), float32, while other
jobs and one of this project's training runs kept the load average at 8-10, so single numbers move
by 20% and more; medians of 9, implementations taking turns:

    python -m kernels.bench conv2d --sizes cifar3x3 cifar1x1 cifar1x1s2 --repeat 9 --budget 30
    python -m kernels.bench groupnorm --sizes cifar imagenet --repeat 9 --budget 30
    python -m kernels.bench max_pool2d --sizes cifar stem --repeat 9 --budget 30

    op / preset                         impl       fwd ms   bwd ms  x ref fwd  x ref bwd
    conv2d cifar3x3 (32->32, 16x16)     reference    88.9    137.5     1.00       1.00
                                        cpu_v1      105.6    113.7     0.84       1.21
    conv2d cifar1x1 (128->32, 16x16)    reference    50.2     57.1     1.00       1.00
                                        cpu_v1       40.7     54.3     1.23       1.05
    conv2d cifar1x1s2 (128->256, /2)    reference    62.2     93.6     1.00       1.00
                                        cpu_v1       53.2     87.5     1.17       1.07
      (the same three a minute earlier: v1 0.79-0.99x forward, 0.94-1.00x backward; ten minutes
       later at load 6: v1 0.84-1.07x forward, 0.81-2.14x backward, the reference's cifar1x1s2
       7.8 / 14.2 ms instead of 62.2 / 93.6: one number moves up to 8x with the machine's load)
    groupnorm cifar (B=128, C=64, 16x16, G=16, ReLU)
                                        reference    44.6     71.2     1.00       1.00
                                        cpu_v1        9.5      8.0     4.68       8.85
    groupnorm imagenet (B=32, C=256, 56x56, G=32, ReLU)
                                        reference   332.9    639.3     1.00       1.00
                                        cpu_v1       47.4     67.2     7.02       9.52
    max_pool2d cifar (B=128, C=32, 32x32, 3x3 stride 2, pad 1)
                                        reference   106.0     40.8     1.00       1.00
                                        cpu_v1       49.6      4.7     2.14       8.68
    max_pool2d stem (B=32, C=64, 112x112)
                                        reference   768.1    299.5     1.00       1.00
                                        cpu_v1      339.2     36.6     2.26       8.19

Defaults (the table in kernels/registry.py): conv2d and weight_standardize the reference,
groupnorm cpu_v1, max_pool2d cpu_v1. Fusing the ReLU into groupnorm pays in a whole step: a
CIFAR ResNetV2's forward + backward (resnetv2_20_cifar, batch 128; groupnorm cpu_v1 both times)
took 4.55 s with GroupNormAct as one kernel against 6.80 s as group_norm then a composed ReLU (a
mask, a cast, a product and its backward), medians of 3 interleaved, load average 5-6.
"""
import math

import numpy as np
from numba import njit, prange

from ..reference import conv as reference
from .dense import _blas  # OpenBLAS in its faster orientation for long reductions
from ..registry import register

_FASTMATH = {"reassoc", "contract"}  # as normact.py: SIMD sums and FMAs, inf and NaN kept


def _c(a, dtype=None):
    return np.require(a if dtype is None else a.astype(dtype, copy=False), requirements=("C", "W"))


# ---------------------------------------------------------------- conv2d: im2col / col2im in Numba
@njit(parallel=True, cache=True)
def _im2col(x, kh, kw, sh, sw, top, left, Ho, Wo, cols):
    """cols (C*kh*kw, B*Ho*Wo) from x (B, C, H, W): zeros where a tap falls in the padding."""
    B, C, H, W = x.shape
    L = Ho * Wo
    for t in prange(B * C):
        b, c = t // C, t % C
        for di in range(kh):
            for dj in range(kw):
                row = cols[(c * kh + di) * kw + dj, b * L:(b + 1) * L]  # (L,) this image's part
                for i in range(Ho):
                    y = i * sh + di - top
                    if y < 0 or y >= H:
                        row[i * Wo:(i + 1) * Wo] = 0.0
                        continue
                    src = x[b, c, y]  # (W,)
                    for j in range(Wo):
                        xx = j * sw + dj - left
                        row[i * Wo + j] = src[xx] if 0 <= xx < W else 0.0


@njit(parallel=True, cache=True)
def _col2im(dcols, kh, kw, sh, sw, top, left, Ho, Wo, dx):
    """dx (B, C, H, W), zeroed, += the columns dcols (C*kh*kw, B*Ho*Wo) at the taps they came from."""
    B, C, H, W = dx.shape
    L = Ho * Wo
    for t in prange(B * C):
        b, c = t // C, t % C
        for di in range(kh):
            for dj in range(kw):
                row = dcols[(c * kh + di) * kw + dj, b * L:(b + 1) * L]
                for i in range(Ho):
                    y = i * sh + di - top
                    if y < 0 or y >= H:
                        continue
                    dst = dx[b, c, y]
                    for j in range(Wo):
                        xx = j * sw + dj - left
                        if 0 <= xx < W:
                            dst[xx] += row[i * Wo + j]


def _geometry(x_shape, w_shape, stride, padding):
    (H, W), (kh, kw) = x_shape[2:], w_shape[2:]
    Ho = reference.output_size(H, kh, stride[0], padding[0], padding[1])
    Wo = reference.output_size(W, kw, stride[1], padding[2], padding[3])
    return kh, kw, Ho, Wo


def conv2d_v1_forward(x, w, b, stride=(1, 1), padding=(0, 0, 0, 0)):
    B, C = x.shape[:2]
    O = w.shape[0]
    kh, kw, Ho, Wo = _geometry(x.shape, w.shape, stride, padding)
    cols = np.empty((C * kh * kw, B * Ho * Wo), dtype=x.dtype)  # (R, B*L)
    _im2col(_c(x), kh, kw, stride[0], stride[1], padding[0], padding[2], Ho, Wo, cols)
    out = _blas(w.reshape(O, -1), cols)  # (O, B*L)
    if b is not None:
        out += b[:, None]
    out = np.ascontiguousarray(out.reshape(O, B, Ho, Wo).transpose(1, 0, 2, 3))  # (B, O, Ho, Wo)
    return out, (cols, w, b is not None, x.shape, tuple(stride), tuple(padding))


def conv2d_v1_backward(grad, cache):
    cols, w, has_bias, x_shape, stride, padding = cache
    B, O, Ho, Wo = grad.shape
    g = np.ascontiguousarray(grad.transpose(1, 0, 2, 3)).reshape(O, B * Ho * Wo)  # (O, B*L)
    dw = _blas(g, cols.T).reshape(w.shape)  # (O, B*L) @ (B*L, R): a long reduction, oriented by _blas
    dcols = _blas(w.reshape(O, -1).T, g)  # (R, B*L)
    dx = np.zeros(x_shape, dtype=grad.dtype)
    _col2im(dcols, w.shape[2], w.shape[3], stride[0], stride[1], padding[0], padding[2], Ho, Wo, dx)
    return dx, dw, (g.sum(axis=1) if has_bias else None)


# ---------------------------------------------------------------- groupnorm
@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _groupnorm_fwd(x, w, b, eps, relu, y, mean, rstd):
    """x, y (B, C, S); w, b (C,); mean, rstd (B, G) float64. One task per (image, group)."""
    B, C, S = x.shape
    G = mean.shape[1]
    Cg = C // G
    n = Cg * S
    for t in prange(B * G):
        bi, g = t // G, t % G
        s = 0.0
        for c in range(g * Cg, (g + 1) * Cg):
            for k in range(S):
                s += x[bi, c, k]
        mu = s / n
        v = 0.0
        for c in range(g * Cg, (g + 1) * Cg):  # two-pass variance: no cancellation
            for k in range(S):
                d = x[bi, c, k] - mu
                v += d * d
        r = 1.0 / math.sqrt(v / n + eps)
        mean[bi, g], rstd[bi, g] = mu, r
        for c in range(g * Cg, (g + 1) * Cg):
            scale, shift = r * w[c], b[c] - mu * r * w[c]
            for k in range(S):
                h = x[bi, c, k] * scale + shift
                y[bi, c, k] = max(h, 0.0) if relu else h


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _groupnorm_bwd(dy, x, w, b, relu, mean, rstd, dx, dw_part, db_part):
    """dx = rstd * (gh - mean(gh) - xhat * mean(gh * xhat)) per (image, group), gh = g * w[c] where
    g = dy, zeroed where the ReLU was off (relu: recomputed, xhat * w + b <= 0); dw_part, db_part
    (B, C) float64: each task's channel sums, added over B by the caller."""
    B, C, S = x.shape
    G = mean.shape[1]
    Cg = C // G
    n = Cg * S
    for t in prange(B * G):
        bi, g = t // G, t % G
        mu, r = mean[bi, g], rstd[bi, g]
        s_gh, s_ghx = 0.0, 0.0
        for c in range(g * Cg, (g + 1) * Cg):
            scale, shift = r * w[c], b[c] - mu * r * w[c]  # the forward's, so the ReLU mask is its own
            sw, sb = 0.0, 0.0
            for k in range(S):
                h = (x[bi, c, k] - mu) * r
                gk = dy[bi, c, k] if not relu or x[bi, c, k] * scale + shift > 0 else 0.0
                sw += gk * h
                sb += gk
            dw_part[bi, c], db_part[bi, c] = sw, sb
            s_gh += sb * w[c]
            s_ghx += sw * w[c]
        s_gh /= n
        s_ghx /= n
        for c in range(g * Cg, (g + 1) * Cg):
            scale, shift = r * w[c], b[c] - mu * r * w[c]
            for k in range(S):
                h = (x[bi, c, k] - mu) * r
                gk = dy[bi, c, k] if not relu or x[bi, c, k] * scale + shift > 0 else 0.0
                dx[bi, c, k] = r * (gk * w[c] - s_gh - h * s_ghx)


def groupnorm_v1_forward(x, w, b, groups, eps=1e-5, relu=False):
    B, C = x.shape[:2]
    x3 = _c(x).reshape(B, C, -1)  # (B, C, S)
    y = np.empty_like(x3)
    mean, rstd = np.empty((B, groups)), np.empty((B, groups))
    w, b = _c(w, x.dtype), _c(b, x.dtype)
    _groupnorm_fwd(x3, w, b, float(eps), bool(relu), y, mean, rstd)
    return y.reshape(x.shape), (x3, w, b, bool(relu), mean, rstd, x.shape)


def groupnorm_v1_backward(grad, cache):
    x3, w, b, relu, mean, rstd, shape = cache
    dy = _c(grad).reshape(x3.shape)
    dx = np.empty_like(dy)
    dw_part, db_part = np.empty(x3.shape[:2]), np.empty(x3.shape[:2])
    _groupnorm_bwd(dy, x3, w, b, relu, mean, rstd, dx, dw_part, db_part)
    return dx.reshape(shape), dw_part.sum(axis=0).astype(grad.dtype), db_part.sum(axis=0).astype(grad.dtype)


# ---------------------------------------------------------------- max pooling
@njit(parallel=True, cache=True)
def _max_pool_fwd(x, kh, kw, sh, sw, top, left, pad_value, out, arg):
    """out, arg (B, C, Ho, Wo): each window's maximum (the first on ties, the first NaN) and its
    flat index y*W + x in the input plane, -1 where the maximum is the padding."""
    B, C, H, W = x.shape
    Ho, Wo = out.shape[2], out.shape[3]
    for t in prange(B * C):
        b, c = t // C, t % C
        plane = x[b, c]
        for i in range(Ho):
            for j in range(Wo):
                best, where, first = pad_value, -1, True
                for di in range(kh):
                    y = i * sh + di - top
                    for dj in range(kw):
                        xx = j * sw + dj - left
                        inside = 0 <= y < H and 0 <= xx < W
                        v = plane[y, xx] if inside else pad_value
                        if first or v > best or (v != v and best == best):
                            best, where, first = v, (y * W + xx if inside else -1), False
                out[b, c, i, j], arg[b, c, i, j] = best, where


@njit(parallel=True, cache=True)
def _max_pool_bwd(grad, arg, dx):
    """dx (B, C, H*W), zeroed, += each output gradient at the input index of its maximum."""
    B, C, Ho, Wo = grad.shape
    for t in prange(B * C):
        b, c = t // C, t % C
        for i in range(Ho):
            for j in range(Wo):
                k = arg[b, c, i, j]
                if k >= 0:
                    dx[b, c, k] += grad[b, c, i, j]


def max_pool2d_v1_forward(x, kernel=(3, 3), stride=(2, 2), padding=(0, 0, 0, 0), pad_value=-np.inf):
    B, C, H, W = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    Ho = reference.output_size(H, kh, sh, padding[0], padding[1])
    Wo = reference.output_size(W, kw, sw, padding[2], padding[3])
    out = np.empty((B, C, Ho, Wo), dtype=x.dtype)
    arg = np.empty((B, C, Ho, Wo), dtype=np.int64)
    _max_pool_fwd(_c(x), kh, kw, sh, sw, padding[0], padding[2], x.dtype.type(pad_value), out, arg)
    return out, (arg, x.shape)


def max_pool2d_v1_backward(grad, cache):
    arg, x_shape = cache
    B, C, H, W = x_shape
    dx = np.zeros((B, C, H * W), dtype=grad.dtype)
    _max_pool_bwd(_c(grad), arg, dx)
    return (dx.reshape(x_shape),)


# ---------------------------------------------------------------- registry
register("conv2d", "cpu_v1", conv2d_v1_forward, conv2d_v1_backward,
         description="Numba one-pass im2col / col2im (no padded copy) around OpenBLAS products (= reference)")
register("groupnorm", "cpu_v1", groupnorm_v1_forward, groupnorm_v1_backward,
         description="Numba fused per (image, group): float64 stats, one normalise sweep, mean/rstd saved")
register("max_pool2d", "cpu_v1", max_pool2d_v1_forward, max_pool2d_v1_backward,
         description="Numba direct windows (no padded copy), argmax index kept, plane-wise backward")
