"""LayerNorm, GELU and softmax over the last axis (ViT paper, Eq. 2-3; Ba et al. 2016;
Hendrycks & Gimpel 2016).

LayerNorm, per row x of width D:
    mu = mean(x); rstd = 1 / sqrt(var(x) + eps); xhat = (x - mu) * rstd; y = w * xhat + b
    backward, with gh = dy * w:  dx = rstd * (gh - mean(gh) - xhat * mean(gh * xhat))
GELU, exact form used by ViT: y = x * Phi(x), Phi the standard normal CDF;
    dy/dx = Phi(x) + x * phi(x), phi the standard normal density.
Softmax: y = exp(x - max x) / sum(...);  dx = y * (dy - sum(dy * y)).
"""
import math

import numpy as np
from scipy.special import erf

# Python floats, not NumPy float64 scalars: those would promote float32 arrays (NEP 50).
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def layernorm_forward(x, w, b, eps=1e-6):
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)
    xhat = xc * rstd
    return xhat * w + b, (xhat, rstd, w)


def layernorm_backward(grad, cache):
    xhat, rstd, w = cache
    gh = grad * w
    dx = rstd * (gh - gh.mean(axis=-1, keepdims=True) - xhat * (gh * xhat).mean(axis=-1, keepdims=True))
    rows = grad.reshape(-1, grad.shape[-1])
    dw = (rows * xhat.reshape(rows.shape)).sum(axis=0)
    db = rows.sum(axis=0)
    return dx, dw, db


def gelu_forward(x):
    cdf = 0.5 * (1.0 + erf(x * _SQRT_HALF))
    return x * cdf, (x, cdf)


def gelu_backward(grad, cache):
    x, cdf = cache
    pdf = np.exp(-0.5 * x * x) * _INV_SQRT_2PI
    return (grad * (cdf + x * pdf),)


def softmax_forward(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    y = e / e.sum(axis=-1, keepdims=True)
    return y, (y,)


def softmax_backward(grad, cache):
    (y,) = cache
    return (y * (grad - (grad * y).sum(axis=-1, keepdims=True)),)
