"""Pure array kernels for minivit: no autograd, just forward and backward of each fused op.

    kernels/reference/   plain NumPy, readable, float64-capable: the ground truth
    kernels/cpu/         Numba versions, numbered, each telling its story
    kernels/gpu/         CuPy versions (imported only when CuPy is installed)

`kernels.get(op)` returns the implementation that runs now; `kernels.use(op=name)` swaps one
(see registry.py). This package never imports minivit.
"""
from .registry import OPS, Impl, available, get, parse_spec, register, reset, selection, use

__all__ = ["OPS", "Impl", "available", "get", "parse_spec", "register", "reset", "selection", "use"]
