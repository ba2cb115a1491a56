"""Position embeddings (ViT paper Sec. 3.1 and Eq. 1; the variants of Appendix D.4, Table 8),
behind one small interface so that vit.py reads like the paper's equations:

    pe = posemb.create(config, grid, num_prefix_tokens, dtype)
    pe.params                 {name: Parameter}: the model registers these under these names
    pe.add(x, layer)          tokens (B, N, D) with E_pos added, if it enters before block `layer`
    pe.attention_bias(layer)  (Hh, N, N) added to block `layer`'s attention logits, or None
    pe.table()                the absolute embedding (N, D) as an array (analysis), or None

Kinds (`config.pos_embed`):
    "learn"     learned, one vector per token in raster order (the paper's default):
                pos_embed (1, N, D), timm's name and shape
    "none"      no position information: the model is then equivariant to permuting the patches
    "learn_2d"  learned X and Y embeddings of D/2 each, concatenated per patch:
                pos_embed_x (1, gw, D/2), pos_embed_y (1, gh, D/2), pos_embed_cls (1, 1, D)
    "sincos"    the fixed 2D sine-cosine table of later ViT work (Chen et al. 2021, MoCo v3;
                Beyer et al. 2022): never trained, not in the state dict
    "relative"  a learned bias per head and 2D offset between patches, added to the attention
                logits of each block: rel_pos_bias (L, Hh, (2gh-1)(2gw-1) + 3)
Where a learned embedding enters (`config.pos_embed_at`, "learn" only):
    "input"               once, before the first block (Eq. 1)
    "every_block"         a separate embedding before every block: pos_embed (L, N, D)
    "every_block_shared"  one embedding, added before every block: pos_embed (1, N, D)

Also the helpers: `sincos_2d`, `relative_position_index` and `interpolate_grid` (2D resampling
of learned embeddings for fine-tuning at a higher resolution, Sec. 3.2).

Shape letters: B batch, N tokens (prefix + Np), Np = gh * gw patches, D width, Hh heads,
L blocks.
"""
from __future__ import annotations

import numpy as np

from . import nn
from .autograd import broadcast_to, concatenate

KINDS = ("learn", "none", "learn_2d", "sincos", "relative")
WHERE = ("input", "every_block", "every_block_shared")


def check(kind, where, embed_dim):
    """ValueError for a kind / place / width that do not go together (ViTConfig calls this)."""
    if kind not in KINDS:
        raise ValueError(f"pos_embed must be one of {KINDS}, got {kind!r}")
    if where not in WHERE:
        raise ValueError(f"pos_embed_at must be one of {WHERE}, got {where!r}")
    if where != "input" and kind != "learn":
        raise ValueError(f"pos_embed_at={where!r} needs pos_embed='learn', got pos_embed={kind!r}")
    if kind == "learn_2d" and embed_dim % 2:
        raise ValueError(f"pos_embed='learn_2d' needs an even embed_dim (X and Y halves), got {embed_dim}")
    if kind == "sincos" and embed_dim % 4:
        raise ValueError(f"pos_embed='sincos' needs embed_dim divisible by 4, got {embed_dim}")


def create(cfg, grid, num_prefix_tokens, dtype):
    """The position embedding a ViTConfig asks for (see the module docstring)."""
    check(cfg.pos_embed, cfg.pos_embed_at, cfg.embed_dim)
    N, D = num_prefix_tokens + grid[0] * grid[1], cfg.embed_dim
    if cfg.pos_embed == "learn":
        return Learned(N, D, cfg.depth, cfg.pos_embed_at, dtype)
    if cfg.pos_embed == "learn_2d":
        return Learned2D(grid, D, num_prefix_tokens, dtype)
    if cfg.pos_embed == "sincos":
        return SinCos(grid, D, num_prefix_tokens, dtype)
    if cfg.pos_embed == "relative":
        return Relative(grid, cfg.num_heads, cfg.depth, num_prefix_tokens, dtype)
    return PositionEmbedding()


def num_parameters(cfg, grid, num_prefix_tokens):
    """How many learned numbers `create(cfg, ...)` makes, without making them."""
    N, D, (gh, gw) = num_prefix_tokens + grid[0] * grid[1], cfg.embed_dim, grid
    if cfg.pos_embed == "learn":
        return (cfg.depth if cfg.pos_embed_at == "every_block" else 1) * N * D
    if cfg.pos_embed == "learn_2d":
        return (gh + gw) * (D // 2) + (D if num_prefix_tokens else 0)
    if cfg.pos_embed == "relative":
        return cfg.depth * cfg.num_heads * relative_table_size(grid, num_prefix_tokens)
    return 0


class PositionEmbedding:
    """The interface, and the "none" kind: adds nothing, biases nothing."""

    def __init__(self):
        self.params = {}

    def add(self, x, layer):
        return x

    def attention_bias(self, layer):
        return None

    def table(self):
        return None

    def astype(self, dtype):
        """Cast any fixed (non-parameter) arrays; parameters are cast by the model."""


class Learned(PositionEmbedding):
    """E_pos learned per token: at the input (Eq. 1), or before every block (App. D.4)."""

    def __init__(self, N, D, depth, where, dtype):
        self.where = where
        layers = depth if where == "every_block" else 1
        self.pos_embed = nn.Parameter(nn.trunc_normal((layers, N, D), dtype=dtype))  # (1 or L, N, D)
        self.params = {"pos_embed": self.pos_embed}

    def add(self, x, layer):
        if self.where == "input":
            return x + self.pos_embed if layer == 0 else x
        if self.where == "every_block_shared":
            return x + self.pos_embed
        return x + self.pos_embed[layer]  # every_block: this block's own (N, D)

    def table(self):
        return self.pos_embed.data[0]


class Learned2D(PositionEmbedding):
    """E_pos of patch (i, j) = [X_j ; Y_i], two learned halves of D/2 (App. D.4)."""

    def __init__(self, grid, D, num_prefix_tokens, dtype):
        (self.gh, self.gw), self.D = grid, D
        self.params = {"pos_embed_y": nn.Parameter(nn.trunc_normal((1, self.gh, D // 2), dtype=dtype)),
                       "pos_embed_x": nn.Parameter(nn.trunc_normal((1, self.gw, D // 2), dtype=dtype))}
        if num_prefix_tokens:
            self.params["pos_embed_cls"] = nn.Parameter(nn.trunc_normal((1, 1, D), dtype=dtype))

    def _grid(self):
        gh, gw, D2 = self.gh, self.gw, self.D // 2
        y = broadcast_to(self.params["pos_embed_y"].reshape(1, gh, 1, D2), (1, gh, gw, D2))
        x = broadcast_to(self.params["pos_embed_x"].reshape(1, 1, gw, D2), (1, gh, gw, D2))
        grid = concatenate([x, y], axis=3).reshape(1, gh * gw, self.D)  # (1, Np, D)
        cls = self.params.get("pos_embed_cls")
        return grid if cls is None else concatenate([cls, grid], axis=1)  # (1, N, D)

    def add(self, x, layer):
        return x + self._grid() if layer == 0 else x

    def table(self):
        return self._grid().data[0]


class SinCos(PositionEmbedding):
    """A fixed table: sin and cos of x and y at geometrically spaced frequencies; zero for the
    class token."""

    def __init__(self, grid, D, num_prefix_tokens, dtype):
        fixed = np.zeros((1, num_prefix_tokens + grid[0] * grid[1], D), dtype=dtype)
        fixed[0, num_prefix_tokens:] = sincos_2d(grid, D, dtype=dtype)
        self.fixed = fixed  # (1, N, D), a constant: no gradient, not in the state dict
        self.params = {}

    def add(self, x, layer):
        return x + self.fixed if layer == 0 else x

    def table(self):
        return self.fixed[0]

    def astype(self, dtype):
        self.fixed = self.fixed.astype(dtype)


class Relative(PositionEmbedding):
    """A learned scalar per head and 2D offset (dy, dx) between query and key patch, added to
    the attention logits (App. D.4's relative attention); each block has its own table."""

    def __init__(self, grid, num_heads, depth, num_prefix_tokens, dtype):
        self.index = relative_position_index(grid, num_prefix_tokens)  # (N, N) into the table
        size = relative_table_size(grid, num_prefix_tokens)
        self.rel_pos_bias = nn.Parameter(nn.trunc_normal((depth, num_heads, size), dtype=dtype))  # (L, Hh, S)
        self.params = {"rel_pos_bias": self.rel_pos_bias}

    def attention_bias(self, layer):
        return self.rel_pos_bias[layer][:, self.index]  # (Hh, N, N)


# ---- helpers -----------------------------------------------------------------------------------

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
    (query, key) patch pair's 2D offset, plus three entries for pairs with the class token
    (cls->patch, patch->cls, cls->cls)."""
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
    N = gh * gw + 1
    index = np.empty((N, N), dtype=np.int64)
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


def resize_pos_embed(pos_embed, old_grid, new_grid, num_prefix_tokens):
    """(L, prefix + gh*gw, D) -> (L, prefix + gh'*gw', D) by bilinear interpolation of the grid part
    (L = 1, or one embedding per block); the prefix (class token) rows are kept."""
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    return np.stack([np.concatenate([layer[:num_prefix_tokens],
                                     interpolate_grid(layer[num_prefix_tokens:], old_grid, new_grid)])
                     for layer in pos_embed])
