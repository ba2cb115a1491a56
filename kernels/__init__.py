"""Pure array kernels for minivit: no autograd, just forward and backward of each fused op.

    kernels/reference/   plain NumPy, readable, float64-capable: the ground truth
    kernels/cpu/         Numba versions, numbered, each telling its story
    registry.py          DEFAULTS, the table of what runs on each device; BACKENDS, where it comes from
    bench.py             checks every version against the reference, then times it

`kernels.get(op)` returns the implementation that runs now; `kernels.use(op=name)` swaps one,
`kernels.use("reference")` runs every op in plain NumPy (see registry.py). This package never
imports minivit.
"""
import os

# Read by OpenBLAS when NumPy loads it, so this must run before the first `import numpy`:
# OpenBLAS's idle worker threads spin for 2^28 cycles (about 0.1 s) after every call by default,
# and on a 2-core machine they took a core away from each Numba kernel that followed a matmul (in
# a training step, nearly all of them). 2^4 cycles makes them sleep at once: vit_cifar's training
# step went from 0.93x to 1.07-1.15x PyTorch's speed (benchmarks/train_step.py). Set the variable
# yourself to choose another value.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from .registry import (  # noqa: E402
    BACKENDS, DEFAULTS, OPS, Impl, available, backend_errors, default, find, get, parse_spec, register, reset,
    selection, use, validate,
)

__all__ = ["BACKENDS", "DEFAULTS", "OPS", "Impl", "available", "backend_errors", "default", "find", "get",
           "parse_spec", "register", "reset", "selection", "use", "validate"]
