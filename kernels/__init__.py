"""Pure array kernels for minivit: no autograd, just forward and backward of each fused op.

    kernels/reference/   plain NumPy, readable, float64-capable: the ground truth
    kernels/cpu/         Numba versions, numbered, each telling its story
    registry.py          DEFAULTS, the table of what runs on each device; BACKENDS, where it comes from
    bench.py             checks every version against the reference, then times it
    cpu/threads.py       who runs the CPU work: one policy for BLAS and Numba threads, whatever
                         order a script imports NumPy, PyTorch and minivit in
    cpu/memory.py        where the arrays come from: glibc keeps freed memory for reuse
    cpu/process.py       every change minivit makes to the process, when, and how to opt out

`kernels.get(op)` returns the implementation that runs now; `with kernels.use(op=name):` swaps one
for a block, `kernels.select(op=name)` for the rest of the process, `with kernels.use("reference"):`
runs every op in plain NumPy (see registry.py). This package never imports minivit. Loading the CPU
kernels changes the process in a few stated ways: cpu/process.py lists them.
"""
from .registry import (
    BACKENDS, DEFAULTS, OPS, Impl, available, backend_errors, default, find, get, parse_spec, register, reset,
    select, selection, use, validate,
)

__all__ = ["BACKENDS", "DEFAULTS", "OPS", "Impl", "available", "backend_errors", "default", "find", "get",
           "parse_spec", "register", "reset", "select", "selection", "use", "validate"]
