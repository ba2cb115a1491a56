"""The ops of a BiT ResNetV2 (Kolesnikov et al. 2020) and of the hybrid ViT's CNN stem (ViT paper,
Sec. 3.1): 2D convolution, weight standardization, group normalization and max pooling, NCHW.

Shape letters: B batch, C input channels, O output channels, H/W input height/width, Ho/Wo output
height/width, kh/kw kernel size, sh/sw stride, R = C*kh*kw (a conv's reduction), L = Ho*Wo (its
output positions), G groups (GroupNorm). Padding is (top, bottom, left, right) at this level;
minivit.functional turns an int, a pair or TensorFlow's "same" into it.

conv2d (im2col, then one matrix product for the whole batch):
    xp = x zero-padded
    for c, di, dj, b, i, j:                                        # im2col
        cols[(c, di, dj), (b, i, j)] = xp[b, c, i*sh + di, j*sw + dj]
    out = w.reshape(O, R) @ cols + bias                            # (O, B*L) -> (B, O, Ho, Wo)
  backward, given dout as (O, B*L):
    dw = dout @ cols^T;  dbias = sum over b, i, j of dout
    dcols = w^T @ dout;  dxp[b, c, i*sh + di, j*sw + dj] += dcols[(c, di, dj), (b, i, j)]   # col2im
    dx = dxp without its padding

weight_standardize (BiT's StdConv2d: per output channel o, over its R weights; biased variance):
    mu = mean(w[o]);  rstd = 1 / sqrt(var(w[o]) + eps);  what[o] = (w[o] - mu) * rstd
  backward: dw[o] = rstd * (g - mean(g) - what * mean(g * what))   # LayerNorm's, without affine

group_norm (Wu & He 2018; per image b and group g of C/G channels, over those channels and H*W):
    xhat = (x - mean) * rstd;  y[b, c] = weight[c] * xhat[b, c] + bias[c]   (then max(y, 0) if relu)
  backward: dy *= (y > 0) if relu;  gh = dy * weight[c]
            dx = rstd * (gh - mean(gh) - xhat * mean(gh * xhat))      (means per (b, g))
            dweight[c] = sum over b, h, w of dy * xhat;  dbias[c] = sum of dy

max_pool2d:
    xp = x padded with pad_value (-inf: PyTorch's MaxPool2d padding; 0: BiT's ConstantPad2d(1, 0))
    out[b, c, i, j] = max over di, dj of xp[b, c, i*sh + di, j*sw + dj]   # first maximum on ties
  backward: dxp[b, c, where that maximum was] += dout[b, c, i, j]        # windows overlap if sh < kh
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def output_size(n, k, s, pad_lo, pad_hi):
    """Output length of a window of size k and stride s sliding over n + pad_lo + pad_hi."""
    return (n + pad_lo + pad_hi - k) // s + 1


def pad2d(x, padding, value=0.0):
    """(B, C, H, W) -> (B, C, H + top + bottom, W + left + right), filled with value."""
    top, bottom, left, right = padding
    if not (top or bottom or left or right):
        return x
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def windows(xp, kh, kw, stride):
    """Every kh x kw window at stride (sh, sw), as a view: (B, C, Ho, Wo, kh, kw)."""
    sh, sw = stride
    return sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]


def im2col(x, kh, kw, stride, padding):
    """(B, C, H, W) -> cols (C*kh*kw, B*Ho*Wo), a copy: one column per output position of every image."""
    win = windows(pad2d(x, padding), kh, kw, stride)  # (B, C, Ho, Wo, kh, kw)
    B, C, Ho, Wo = win.shape[:4]
    return win.transpose(1, 4, 5, 0, 2, 3).reshape(C * kh * kw, B * Ho * Wo)  # (R, B*L)


def col2im(dcols, x_shape, kh, kw, stride, padding, out_hw):
    """The adjoint of im2col: dcols (R, B*L) summed back into (B, C, H, W)."""
    B, C, H, W = x_shape
    (sh, sw), (Ho, Wo) = stride, out_hw
    top, bottom, left, right = padding
    dxp = np.zeros((C, B, H + top + bottom, W + left + right), dtype=dcols.dtype)  # channels first here
    d6 = dcols.reshape(C, kh, kw, B, Ho, Wo)
    for di in range(kh):
        for dj in range(kw):  # every tap adds into a strided (C, B, Ho, Wo) slice of dxp
            dxp[:, :, di:di + sh * (Ho - 1) + 1:sh, dj:dj + sw * (Wo - 1) + 1:sw] += d6[:, di, dj]
    return dxp[:, :, top:top + H, left:left + W].transpose(1, 0, 2, 3)  # (B, C, H, W)


# ---------------------------------------------------------------- conv2d
# One matrix product over all images, (O, R) @ (R, B*L): np.matmul over a batch axis would run B
# small products, and each one wakes OpenBLAS's threads (on a busy 2-core machine 20 ms apiece).
def conv2d_forward(x, w, b, stride=(1, 1), padding=(0, 0, 0, 0)):
    B, C, H, W = x.shape
    O, _, kh, kw = w.shape
    Ho = output_size(H, kh, stride[0], padding[0], padding[1])
    Wo = output_size(W, kw, stride[1], padding[2], padding[3])
    cols = im2col(x, kh, kw, stride, padding)  # (R, B*L)
    out = w.reshape(O, -1) @ cols  # (O, B*L)
    if b is not None:
        out += b[:, None]
    out = out.reshape(O, B, Ho, Wo).transpose(1, 0, 2, 3)  # (B, O, Ho, Wo)
    return np.ascontiguousarray(out), (cols, w, b is not None, x.shape, stride, padding)


def conv2d_backward(grad, cache):
    cols, w, has_bias, x_shape, stride, padding = cache
    B, O, Ho, Wo = grad.shape
    g = grad.transpose(1, 0, 2, 3).reshape(O, B * Ho * Wo)  # (O, B*L), a copy
    # dw = g @ cols^T sums over all B*L positions. OpenBLAS ran such a long reduction up to 20x slower
    # when its output has fewer rows than columns (kernels/cpu/dense.py, _blas): the longer of O and R
    # goes first, transposing the (R, O) result where R is.
    dw = g @ cols.T if O >= cols.shape[0] else (cols @ g.T).T  # (O, B*L) @ (B*L, R) -> (O, R)
    dw = dw.reshape(w.shape)
    dcols = w.reshape(O, -1).T @ g  # (R, O) @ (O, B*L)
    dx = col2im(dcols, x_shape, w.shape[2], w.shape[3], stride, padding, (Ho, Wo))
    db = g.sum(axis=1) if has_bias else None
    return dx, dw, db


# ---------------------------------------------------------------- weight standardization
def weight_standardize_forward(w, eps=1e-6):
    rows = w.reshape(w.shape[0], -1)  # (O, R)
    mu = rows.mean(axis=1, keepdims=True)
    rstd = 1.0 / np.sqrt(((rows - mu) ** 2).mean(axis=1, keepdims=True) + eps)
    what = (rows - mu) * rstd
    return what.reshape(w.shape), (what, rstd, w.shape)


def weight_standardize_backward(grad, cache):
    what, rstd, shape = cache
    g = grad.reshape(what.shape)  # (O, R)
    dw = rstd * (g - g.mean(axis=1, keepdims=True) - what * (g * what).mean(axis=1, keepdims=True))
    return (dw.reshape(shape),)


# ---------------------------------------------------------------- group normalization
def groupnorm_forward(x, w, b, groups, eps=1e-5, relu=False):
    B, C = x.shape[:2]
    xg = x.reshape(B, groups, -1)  # (B, G, C/G * H*W)
    mu = xg.mean(axis=2, keepdims=True)
    rstd = 1.0 / np.sqrt(((xg - mu) ** 2).mean(axis=2, keepdims=True) + eps)
    xhat = ((xg - mu) * rstd).reshape(x.shape)
    per_channel = (1, C) + (1,) * (x.ndim - 2)  # weight and bias broadcast over B, H, W
    y = xhat * w.reshape(per_channel) + b.reshape(per_channel)
    active = y > 0 if relu else None  # GroupNorm + ReLU fused (timm's GroupNormAct)
    return (y * active if relu else y), (xhat, rstd, w, groups, active)


def groupnorm_backward(grad, cache):
    xhat, rstd, w, groups, active = cache
    if active is not None:
        grad = grad * active  # through the ReLU first
    B, C = grad.shape[:2]
    spatial = tuple(range(2, grad.ndim))
    dw = (grad * xhat).sum(axis=(0,) + spatial)
    db = grad.sum(axis=(0,) + spatial)
    gh = (grad * w.reshape((1, C) + (1,) * len(spatial))).reshape(B, groups, -1)  # (B, G, C/G * H*W)
    xg = xhat.reshape(B, groups, -1)
    dx = rstd * (gh - gh.mean(axis=2, keepdims=True) - xg * (gh * xg).mean(axis=2, keepdims=True))
    return dx.reshape(grad.shape), dw, db


# ---------------------------------------------------------------- max pooling
def max_pool2d_forward(x, kernel=(3, 3), stride=(2, 2), padding=(0, 0, 0, 0), pad_value=-np.inf):
    kh, kw = kernel
    xp = pad2d(x, padding, pad_value)
    win = windows(xp, kh, kw, stride)  # (B, C, Ho, Wo, kh, kw)
    flat = win.reshape(win.shape[:4] + (kh * kw,))  # (B, C, Ho, Wo, kh*kw), a copy
    arg = flat.argmax(axis=-1)  # first maximum in row-major window order, as PyTorch
    out = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    return out, (arg, x.shape, xp.shape, kernel, stride, padding)


def max_pool2d_backward(grad, cache):
    arg, x_shape, xp_shape, (kh, kw), (sh, sw), padding = cache
    B, C, Ho, Wo = grad.shape
    rows = np.arange(Ho)[:, None] * sh + arg // kw  # (B, C, Ho, Wo): where each maximum sits in xp
    cols = np.arange(Wo)[None, :] * sw + arg % kw
    dxp = np.zeros((B * C, xp_shape[2] * xp_shape[3]), dtype=grad.dtype)
    where = (rows * xp_shape[3] + cols).reshape(B * C, -1)  # flat index within each (b, c) plane
    np.add.at(dxp, (np.arange(B * C)[:, None], where), grad.reshape(B * C, -1))  # overlapping windows add
    top, _, left, _ = padding
    H, W = x_shape[2:]
    return (dxp.reshape(xp_shape)[:, :, top:top + H, left:left + W],)
