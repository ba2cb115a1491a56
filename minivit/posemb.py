"""Position-embedding helpers (ViT paper Section 3.1, 3.2 and Appendix D.4).

- `sincos_2d`: the fixed 2D sine-cosine embedding of later ViT work (Chen et al. 2021, MoCo v3;
  Beyer et al. 2022): a quarter of the width each for sin(y), cos(y), sin(x), cos(x).
- `relative_position_index`: for relative attention, the index of every (query, key) pair's 2D
  offset into a table of (2*gh - 1) * (2*gw - 1) learned biases, plus three entries for pairs
  involving the class token (cls->patch, patch->cls, cls->cls).
- `interpolate_grid`: 2D (bilinear) interpolation of learned embeddings to a new patch grid, as
  the paper does when fine-tuning at a higher resolution (Section 3.2).
"""
from __future__ import annotations

import numpy as np


def sincos_2d(grid, dim, temperature=10000.0, dtype=np.float32):
    """(gh*gw, dim) fixed embedding in raster order; dim must be a multiple of 4."""
    gh, gw = grid
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs embed_dim divisible by 4, got {dim}")
    y, x = np.meshgrid(np.arange(gh, dtype=np.float64), np.arange(gw, dtype=np.float64), indexing="ij")
    omega = 1.0 / temperature ** (np.arange(dim // 4) / (dim // 4 - 1 if dim > 4 else 1))  # (D/4,)
    y = y.reshape(-1, 1) * omega  # (gh*gw, D/4)
    x = x.reshape(-1, 1) * omega
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1).astype(dtype)


def relative_position_index(grid, num_prefix_tokens=1):
    """(T, T) int64 indices into a table of `relative_table_size(grid, prefix)` entries."""
    gh, gw = grid
    ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)  # (Np,)
    dy = ys[:, None] - ys[None, :] + gh - 1  # in [0, 2gh-2]
    dx = xs[:, None] - xs[None, :] + gw - 1
    patch_index = dy * (2 * gw - 1) + dx  # (Np, Np)
    if num_prefix_tokens == 0:
        return patch_index
    if num_prefix_tokens != 1:
        raise ValueError("relative position embedding supports at most one prefix (class) token")
    n = (2 * gh - 1) * (2 * gw - 1)
    T = gh * gw + 1
    index = np.empty((T, T), dtype=np.int64)
    index[1:, 1:] = patch_index
    index[0, 1:] = n  # class token attending to a patch
    index[1:, 0] = n + 1  # a patch attending to the class token
    index[0, 0] = n + 2
    return index


def relative_table_size(grid, num_prefix_tokens=1):
    gh, gw = grid
    return (2 * gh - 1) * (2 * gw - 1) + (3 if num_prefix_tokens else 0)


def interpolate_grid(emb, old_grid, new_grid):
    """Bilinearly resample per-patch embeddings (gh*gw, D) laid out on `old_grid` to `new_grid`
    (half-pixel centres, as align_corners=False)."""
    (oh, ow), (nh, nw) = old_grid, new_grid
    grid = emb.reshape(oh, ow, -1).astype(np.float64)

    def weights(n_out, n_in):
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo)[:, None]

    y0, y1, wy = weights(nh, oh)
    x0, x1, wx = weights(nw, ow)
    rows = grid[y0] * (1 - wy)[:, :, None] + grid[y1] * wy[:, :, None]  # (nh, ow, D)
    out = rows[:, x0] * (1 - wx)[None] + rows[:, x1] * wx[None]  # (nh, nw, D)
    return out.reshape(nh * nw, -1).astype(emb.dtype)
