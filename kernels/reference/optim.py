"""AdamW update (Loshchilov & Hutter 2019), in place, with torch.optim.AdamW's semantics:

    p <- p * (1 - lr * weight_decay)                  # decoupled weight decay
    m <- beta1 * m + (1 - beta1) * g
    v <- beta2 * v + (1 - beta2) * g^2
    p <- p - lr * (m / (1 - beta1^step)) / (sqrt(v / (1 - beta2^step)) + eps)
"""
import numpy as np


def adamw_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    if weight_decay:
        p *= 1.0 - lr * weight_decay
    m *= beta1
    m += (1.0 - beta1) * g
    v *= beta2
    v += (1.0 - beta2) * (g * g)
    bias1 = 1.0 - beta1**step
    bias2 = 1.0 - beta2**step
    denom = np.sqrt(v / bias2)
    denom += eps
    p -= (lr / bias1) * (m / denom)
    return None, None
