"""AdamW update on the CPU in Numba: one fused pass over the elements, in place
(Loshchilov & Hutter 2019; torch.optim.AdamW semantics; the formulas are in
kernels/reference/optim.py).

The reference runs ten array expressions, each a full sweep over p, g, m or v with a temporary;
here each element is loaded once (p, g, m, v), updated in registers and stored once (p, m, v):
7 numbers of traffic per parameter instead of ~25. The optimizer calls this once per
parameter array, and a ViT has many tiny ones (biases, LayerNorm weights: 192 floats).

Versions:

    cpu_v1  prange over all elements of p.ravel() (the arrays are C-contiguous), in the arrays'
            own precision: a first draft computing in float64 ran 0.26 ms on the fc_w preset,
            compute-bound on 4-lane float64 division and sqrt; float32 runs 8 lanes.
    cpu_v2  the same loop, on one thread below 32768 elements, where waking the thread pool
            costs more than the whole update (a ViT's biases and LayerNorm weights: 192 floats).

Measured on the 2-core AMD EPYC (Zen 3) dev box, float32, load average 3-6 from other jobs;
medians of 5 (vit: 15), implementations in turns:

    python -m kernels.bench adamw_update --sizes bias fc_w vit

    preset               impl       ms      GB/s   x ref
    bias  n=192          reference  0.016    0.3   1.00
                         cpu_v2     0.009    0.6   1.88
                         cpu_v1     0.026    0.2   0.62
    fc_w  n=147456       reference  0.409   10.1   1.00
                         cpu_v2     0.124   33.3   3.30
                         cpu_v1     0.117   35.1   3.48
    vit   n=2.7M         reference  35.3     2.1   1.00
                         cpu_v2      5.54   13.6   6.38

Default (the table in kernels/registry.py): cpu_v2, faster than v1 on the many small arrays.
"""
import math

import numpy as np
from numba import njit, prange

from ..reference import optim as reference
from ..registry import register

_SERIAL_BELOW = 1 << 15


@njit(inline="always", cache=True)
def _adamw_one(p, g, m, v, i, c):
    """Element i, in the arrays' precision (c holds the coefficients already cast to it), so that
    float32 runs 8 lanes wide: float64 division and sqrt made a first version compute-bound."""
    decay, lr_hat, beta1, one_m_beta1 = c[0], c[1], c[2], c[3]
    beta2, one_m_beta2, eps, rsqrt_bias2 = c[4], c[5], c[6], c[7]
    gi = g[i]
    mi = beta1 * m[i] + one_m_beta1 * gi
    vi = beta2 * v[i] + one_m_beta2 * (gi * gi)
    m[i] = mi
    v[i] = vi
    p[i] = p[i] * decay - lr_hat * (mi / (math.sqrt(vi) * rsqrt_bias2 + eps))


@njit(parallel=True, cache=True)
def _adamw_parallel(p, g, m, v, c):
    for i in prange(p.size):
        _adamw_one(p, g, m, v, i, c)


@njit(cache=True)
def _adamw_serial(p, g, m, v, c):
    for i in range(p.size):
        _adamw_one(p, g, m, v, i, c)


def _update(parallel_from, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    if not all(a.flags.c_contiguous and a.flags.writeable for a in (p, m, v)):
        return reference.adamw_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step)
    decay = 1.0 - lr * weight_decay if weight_decay else 1.0
    # one small array instead of eight scalars: Numba's dispatch cost grows with the argument count
    c = np.array((decay, lr / (1.0 - beta1**step), beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps,
                  1.0 / math.sqrt(1.0 - beta2**step)), dtype=p.dtype)
    if g.dtype != p.dtype or not (g.flags.c_contiguous and g.flags.writeable):
        g = np.require(g, dtype=p.dtype, requirements=("C", "W"))  # one compiled type per dtype
    kernel = _adamw_parallel if p.size >= parallel_from else _adamw_serial
    kernel(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), c)
    return None, None


def adamw_v1(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    return _update(0, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step)


def adamw_v2(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    return _update(_SERIAL_BELOW, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step)


register("adamw_update", "cpu_v1", adamw_v1, None,
         description="Numba: one fused prange pass over p, g, m, v")
register("adamw_update", "cpu_v2", adamw_v2, None,
         description="Numba: one fused pass, single-threaded below 32768 elements")
