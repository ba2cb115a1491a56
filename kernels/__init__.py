"""Pure array kernels for minivit: no autograd, just forward and backward of each fused op.

    kernels/reference/   plain NumPy, readable, float64-capable: the ground truth
    kernels/cpu/         Numba versions, numbered, each telling its story
    registry.py          DEFAULTS, the table of what runs on each device; BACKENDS, where it comes from
    bench.py             checks every version against the reference, then times it
    cpu/threads.py       who runs the CPU work: one policy for BLAS and Numba threads, whatever
                         order a script imports NumPy, PyTorch and minivit in
    cpu/memory.py        where the arrays come from: glibc keeps freed memory for reuse

`kernels.get(op)` returns the implementation that runs now; `kernels.use(op=name)` swaps one,
`kernels.use("reference")` runs every op in plain NumPy (see registry.py). This package never
imports minivit.
"""
from .registry import (
    BACKENDS, DEFAULTS, OPS, Impl, available, backend_errors, default, find, get, parse_spec, register, reset,
    selection, use, validate,
)

__all__ = ["BACKENDS", "DEFAULTS", "OPS", "Impl", "available", "backend_errors", "default", "find", "get",
           "parse_spec", "register", "reset", "selection", "use", "validate"]
