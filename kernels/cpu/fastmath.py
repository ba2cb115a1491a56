"""Float32 exp and erf that LLVM can vectorise: the one copy every Numba kernel here uses.

Without Intel's SVML, Numba compiles math.exp, math.erf and np.exp to one libm call per element,
a scalar call that also stops LLVM's loop vectoriser. Written as polynomials, the float32
versions compile to SIMD code (8 float32 lanes with AVX2). float64 keeps libm: these polynomials are
float32-accurate only, and the same trick measured no faster in float64.

    expf(x)      exp (Cephes expf): x = n ln2 + r with n = round(x / ln2) and |r| <= ln2/2, ln2
                 in two parts (Cody-Waite) so that r is exact; exp(r) by a degree-7 polynomial,
                 2^n built from its exponent bits. Max relative error 8.3e-8 (under 1 ulp) on
                 [-87, 88] against float64 exp; 0 below -87 (the denormal range), nan stays nan,
                 x above 88 gives exp(88): every caller here passes x <= 0 (after a max shift).
    erff(x)      erf: an odd/even rational function on [-4, 4] (the form of Eigen's and XLA's
                 fast float erf); erf(+-4) is +-1 in float32. Max abs error 3.3e-7 against scipy
                 on [-6, 6].
    fast_exp(x), fast_erf(x)
                 inside Numba: the polynomial for float32, libm for float64.
    exp_shifted(x, shift, n)
                 x[:n] = exp(x[:n] - shift) in place, one vectorised loop (a softmax row).

A caller that inlines fast_exp (normact, loss) compiles it under its own fastmath flags; theirs
are {reassoc, contract}, which leave the rounding and the Cody-Waite split alone (folding
(y + 1.5 * 2^23) - 1.5 * 2^23 into y would also need nsz). Attention's kernels use nsz and arcp,
so they call exp_shifted, compiled here with contraction (FMA) only. tests/test_kernels_cpu.py
checks the accuracy above under both. Editing this file: Numba's on-disk cache (cache=True) keys
each kernel on its own file only, so delete kernels/cpu/__pycache__/*.nbi and *.nbc (or touch the
files that import from here) to have the kernels that inline these functions recompiled.

History. This file replaces two float32 exps that had grown apart: normact's Cephes polynomial
(softmax, gelu, loss) and attention's _exp_shifted, an 8-term Taylor series with 2^k written
through a scratch int32 view and multiplied in by a second pass (max rel error 7.6e-8). The
Cephes one needs no scratch and one pass, so it stayed; it now keeps nan as nan (it returned 0),
as the Taylor one and the NumPy reference do. Rounding by adding 1.5 * 2^23 measured 3-5% faster
than np.floor(y + 0.5) (gelu's backward, exp_shifted on attention rows).

Measured before and after in one process (HEAD's modules loaded beside these under other names),
the two taking turns with the order swapped every round: median of 9 rounds, each the median of
11 runs, float32, CIFAR shapes (`python -m kernels.bench` presets), on the 2-core Intel Xeon
(family 6 model 207, Emerald Rapids, AVX-512; a KVM guest) while other jobs kept its load average at 2-2.5. ms:

    kernel (preset)                      fwd before -> after      bwd before -> after
    attention cpu_v3   (cifar)           16.33 -> 15.13           34.98 -> 33.15
    attention cpu_blas (cifar)            9.49 ->  9.32           11.79 -> 11.81
    attention cpu_v3   (long, N=1024)    83.0  -> 83.3           114.9  -> 110.9   (noisy: 48-109)
    attention cpu_blas (long, N=1024)    58.3  -> 57.1            50.4  -> 49.9
    softmax cpu_v2     (cifar)            2.752 -> 2.759           0.546 -> 0.547
    softmax_cross_entropy cpu_v1 (imagenet)  0.836 -> 0.828        0.068 -> 0.069
    gelu cpu_v3        (cifar)            2.105 -> 2.078           3.354 -> 3.340
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload


@intrinsic
def _f32_from_bits(typingctx, bits):
    """Reinterpret an int32 as the float32 with the same bits (a free register move)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(inline="always", fastmath={"contract"}, cache=True)
def expf(x):
    """exp of a float32 (see the module docstring for the method and its accuracy)."""
    xc = min(max(x, np.float32(-87.0)), np.float32(88.0))
    # n = round(x / ln2): adding 1.5 * 2^23 pushes the fraction out of float32's 23-bit mantissa
    n = (xc * np.float32(1.4426950408889634) + np.float32(12582912.0)) - np.float32(12582912.0)
    r = xc - n * np.float32(0.693359375)  # ln2's leading 9 bits: n * this is exact
    r = r - n * np.float32(-2.12194440e-4)  # the rest of ln2
    y = np.float32(1.9875691500e-4)
    y = y * r + np.float32(1.3981999507e-3)
    y = y * r + np.float32(8.3334519073e-3)
    y = y * r + np.float32(4.1665795894e-2)
    y = y * r + np.float32(1.6666665459e-1)
    y = y * r + np.float32(5.0000001201e-1)
    y = y * (r * r) + r + np.float32(1.0)
    two_n = _f32_from_bits((np.int32(n) + np.int32(127)) * np.int32(1 << 23))  # 2^n, exponent bits
    return np.float32(0.0) if x < np.float32(-87.0) else y * two_n  # nan fails the test: stays nan


@njit(inline="always", fastmath={"contract"}, cache=True)
def erff(a):
    """erf of a float32, max abs error 4.4e-7 (see the module docstring)."""
    x = min(max(a, np.float32(-4.0)), np.float32(4.0))
    x2 = x * x
    p = np.float32(-2.72614225801306e-10)
    p = p * x2 + np.float32(2.77068142495902e-08)
    p = p * x2 + np.float32(-2.10102402082508e-06)
    p = p * x2 + np.float32(-5.69250639462346e-05)
    p = p * x2 + np.float32(-7.34990630326855e-04)
    p = p * x2 + np.float32(-2.95459980854025e-03)
    p = p * x2 + np.float32(-1.60960333262415e-02)
    q = np.float32(-1.45660718464996e-05)
    q = q * x2 + np.float32(-2.13374055278905e-04)
    q = q * x2 + np.float32(-1.68282697438203e-03)
    q = q * x2 + np.float32(-7.37332916720468e-03)
    q = q * x2 + np.float32(-1.42647390514189e-02)
    return x * p / q


def fast_exp(x):
    """exp(x): the vectorisable polynomial for float32, libm for float64 (inside Numba)."""
    return math.exp(x)


def fast_erf(x):
    """erf(x): the vectorisable rational function for float32, libm for float64 (inside Numba)."""
    return math.erf(x)


@overload(fast_exp, inline="always", jit_options={"cache": True})
def _fast_exp_impl(x):
    if x == types.float32:
        return lambda x: expf(x)
    return lambda x: math.exp(x)


@overload(fast_erf, inline="always", jit_options={"cache": True})
def _fast_erf_impl(x):
    if x == types.float32:
        return lambda x: erff(x)
    return lambda x: math.erf(x)


@njit(cache=True, fastmath={"contract"})  # no reassoc or nsz: they could undo the Cody-Waite split
def exp_shifted(x, shift, n):
    """x[:n] = exp(x[:n] - shift) in place; x a float32 or float64 row, shift of its dtype."""
    for j in range(n):
        x[j] = fast_exp(x[j] - shift)
