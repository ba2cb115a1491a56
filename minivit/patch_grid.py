"""Arrays laid out over the patch grid, from which posemb.py's kinds are built: the fixed 2D
sine-cosine table, the (N, N) indices of relative offsets into a learned table, and bilinear
resampling of a per-patch table to another grid (fine-tuning at a higher resolution, Sec. 3.2).
Plain NumPy, no parameters; `minivit.posemb` re-exports every name.

Shape letters: N tokens (prefix + Np), Np = gh * gw patches, D width, L blocks (or 1), Hh heads.
"""
from __future__ import annotations

import numpy as np


def sincos_2d(grid, dim, temperature=10000.0, dtype=np.float32):
    """(gh*gw, dim) fixed embedding in raster order: a quarter of the width each for sin(x),
    cos(x), sin(y), cos(y); dim must be a multiple of 4."""
    gh, gw = grid
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs embed_dim divisible by 4, got {dim}")
    y, x = np.meshgrid(np.arange(gh, dtype=np.float64), np.arange(gw, dtype=np.float64), indexing="ij")
    omega = 1.0 / temperature ** (np.arange(dim // 4) / (dim // 4 - 1 if dim > 4 else 1))  # (D/4,)
    y = y.reshape(-1, 1) * omega  # (gh*gw, D/4)
    x = x.reshape(-1, 1) * omega
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1).astype(dtype)


def relative_position_index(grid, num_prefix_tokens=1):
    """(N, N) int64 indices into a table of `relative_table_size(grid, prefix)` entries: every
    (query, key) patch pair's 2D offset ("relative_bias_2d"), plus three entries for pairs with the
    class token (cls->patch, patch->cls, cls->cls)."""
    gh, gw = grid
    ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)  # (Np,)
    dy = ys[:, None] - ys[None, :] + gh - 1  # in [0, 2gh-2]
    dx = xs[:, None] - xs[None, :] + gw - 1
    patch_index = dy * (2 * gw - 1) + dx  # (Np, Np)
    return _with_class_token(patch_index, (2 * gh - 1) * (2 * gw - 1), num_prefix_tokens)


def relative_table_size(grid, num_prefix_tokens=1):
    """Entries of a "relative_bias_2d" table: one per 2D offset, three more with a class token."""
    gh, gw = grid
    return (2 * gh - 1) * (2 * gw - 1) + (3 if num_prefix_tokens else 0)


def relative_1d_index(grid, num_prefix_tokens=1):
    """(N, N) int64 indices into a table of `relative_1d_table_size(grid, prefix)` entries
    ("relative_1d"): patch pair (q, k), raster positions p_q and p_k, reads entry p_q - p_k + Np - 1
    (the offset shifted to [0, 2Np - 2]); then three entries for pairs with the class token, as in
    `relative_position_index`."""
    num_patches = grid[0] * grid[1]
    p = np.arange(num_patches)  # raster order: p = row * gw + column
    patch_index = p[:, None] - p[None, :] + num_patches - 1  # (Np, Np)
    return _with_class_token(patch_index, 2 * num_patches - 1, num_prefix_tokens)


def relative_1d_table_size(grid, num_prefix_tokens=1):
    """Entries of a "relative_1d" table: 2Np - 1 offsets, three more with a class token."""
    return 2 * grid[0] * grid[1] - 1 + (3 if num_prefix_tokens else 0)


def _with_class_token(patch_index, n, num_prefix_tokens):
    """patch_index (Np, Np) into n patch-offset entries, extended to (N, N) with a class token:
    entry n for the class token attending to a patch, n + 1 for a patch attending to it, n + 2
    for the class token attending to itself."""
    if num_prefix_tokens == 0:
        return patch_index
    if num_prefix_tokens != 1:
        raise ValueError("relative position embeddings support at most one prefix (class) token")
    N = len(patch_index) + 1
    index = np.empty((N, N), dtype=np.int64)
    index[1:, 1:] = patch_index
    index[0, 1:] = n  # class token attending to a patch
    index[1:, 0] = n + 1  # a patch attending to the class token
    index[0, 0] = n + 2
    return index


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


def resize_pos_embed(pos_embed, old_grid, new_grid, num_prefix_tokens):
    """(L, prefix + gh*gw, D) -> (L, prefix + gh'*gw', D) by bilinear interpolation of the grid part
    (L = 1, or one embedding per block); the prefix (class token) rows are kept."""
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    return np.stack([np.concatenate([layer[:num_prefix_tokens],
                                     interpolate_grid(layer[num_prefix_tokens:], old_grid, new_grid)])
                     for layer in pos_embed])


def resize_relative_bias(table, old_grid, new_grid, num_prefix_tokens):
    """(L, Hh, (2gh-1)(2gw-1) [+3]) -> the same for new_grid: each head's offset table is a small
    2D grid, interpolated like an image; the three class-token entries are kept."""
    (oh, ow), (nh, nw) = old_grid, new_grid
    if (oh, ow) == (nh, nw):
        return table
    n_old = (2 * oh - 1) * (2 * ow - 1)
    L, Hh, _ = table.shape
    grid = table[:, :, :n_old].reshape(L * Hh, n_old).T  # (offsets, L*Hh)
    resized = interpolate_grid(grid, (2 * oh - 1, 2 * ow - 1), (2 * nh - 1, 2 * nw - 1)).T
    resized = resized.reshape(L, Hh, -1)
    return np.concatenate([resized, table[:, :, n_old:]], axis=2) if num_prefix_tokens else resized
