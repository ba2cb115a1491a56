"""Views across arrays: the one array several NumPy views are slices of, found without a copy.
Autograd's unbind (minivit/autograd.py) and attention cpu_v5 (kernels/cpu/attention.py) both use
it; a plain module, importable without loading any backend."""
from __future__ import annotations

import numpy as np


def stacked_view(arrays, axis=0):
    """np.stack(arrays, axis) as a view, when `arrays` are NumPy views of one base with one shape,
    dtype and strides, starting at equal steps in memory (so the view covers their elements and
    nothing else); otherwise None."""
    a0 = arrays[0]
    if not all(isinstance(a, np.ndarray) for a in arrays) or a0.base is None:
        return None
    if any(a.base is not a0.base or a.shape != a0.shape or a.strides != a0.strides or a.dtype != a0.dtype
           for a in arrays):
        return None
    starts = [a.__array_interface__["data"][0] for a in arrays]
    step = starts[1] - starts[0] if len(arrays) > 1 else 0
    if any(b - a != step for a, b in zip(starts, starts[1:])):
        return None
    return np.lib.stride_tricks.as_strided(a0, a0.shape[:axis] + (len(arrays),) + a0.shape[axis:],
                                           a0.strides[:axis] + (step,) + a0.strides[axis:])
