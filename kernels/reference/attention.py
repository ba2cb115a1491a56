"""Scaled dot-product attention (Vaswani et al. 2017; ViT paper, Appendix A, Eq. 5-7).

For each batch b and head h (q, k, v are (N, hd) there):
    S = scale * q @ k.T                     # (N, N) logits
    P = softmax(S, axis=-1)                 # rows sum to 1
    O = P @ v                               # (N, hd)
backward, given dO:
    dv = P.T @ dO;  dP = dO @ v.T;  dS = P * (dP - rowsum(dP * P))
    dq = scale * dS @ k;  dk = scale * dS.T @ q
This reference materialises P (memory B*Hh*N*N); flash versions keep only the row log-sum-exp.
"""
import numpy as np


def attention_forward(q, k, v, scale):
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale  # (B, Hh, N, N)
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    out = np.matmul(p, v)  # (B, Hh, N, hd)
    return out, (q, k, v, p, scale)


def attention_backward(grad, cache):
    q, k, v, p, scale = cache
    dv = np.matmul(np.swapaxes(p, -1, -2), grad)  # (B, Hh, N, hd)
    dp = np.matmul(grad, np.swapaxes(v, -1, -2))  # (B, Hh, N, N)
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    ds *= scale
    dq = np.matmul(ds, k)
    dk = np.matmul(np.swapaxes(ds, -1, -2), q)
    return dq, dk, dv
