"""Dropout and drop-path masks on the GPU, drawn from a seed (the kernel: dropout.cu).

`keep_mask(shape, p, dtype, seed)` returns a CuPy array holding 1 / (1 - p) where an element is
kept and 0 where it is dropped; element i is kept when a hash of (seed, i) maps to u >= p. The
mask is made on the device from nothing but the seed: no mask crosses from the host, and no
generator state lives on the device. minivit.functional draws the seed from minivit.rng, the
generator a checkpoint saves, so a resumed run draws the same masks.

`keep_mask_numpy` is the same hash in NumPy: the tests compare the kernel with it bit for bit.
This is not a registry op (dropout is composed in minivit.functional, not a fused kernel).
"""
from __future__ import annotations

import numpy as np

from . import runtime
from .runtime import ctype

DECLARED = {"dropout.cu": [f"keep_mask<{t}>" for t in ("float", "double")]}
_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def keep_mask(shape, p, dtype, seed):
    """A CuPy mask of `shape`: 1 / (1 - p) with probability 1 - p, else 0."""
    cp = runtime.cupy()
    mask = cp.empty(shape, dtype)
    n = mask.size
    if n:
        kernel = runtime.function("dropout.cu", f"keep_mask<{ctype(dtype)}>")
        kernel((runtime.blocks_for(n, 256, cap=8192),), (256,),
               (mask, np.int64(n), np.uint64(seed), np.float64(p), runtime.scalar(dtype, 1.0 / (1.0 - p))))
    return mask


def keep_mask_numpy(shape, p, dtype, seed):
    """The same mask as keep_mask, computed on the host (uint64 arithmetic wraps as in C)."""
    n = int(np.prod(shape))
    z = np.uint64(seed) + (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(_GOLDEN))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
    z ^= z >> np.uint64(31)
    u = (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    scale = np.asarray(1.0 / (1.0 - p), dtype=dtype)
    return np.where(u >= p, scale, np.zeros((), dtype)).astype(dtype).reshape(shape)
