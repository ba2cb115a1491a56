"""Position embeddings (ViT paper Sec. 3.1 and Eq. 1; the variants of Appendix D.4, Table 8),
behind one small interface so that vit.py reads like the paper's equations:

    pe = posemb.create(config, grid, num_prefix_tokens, dtype)
    pe.params                 {name: Parameter}: the model registers these under these names
    pe.add(x, layer)          tokens (B, N, D) with E_pos added, if it enters before block `layer`
    pe.attention_bias(layer)  what is added to block `layer`'s attention logits, or None: an array
                              (Hh, N, N), or, for a bias that depends on the queries, a function
                              bias(q) of the block's queries q (B, Hh, N, hd) -> (B, Hh, N, N)
    pe.table()                the absolute embedding (N, D) as an array (analysis), or None

Kinds (`config.pos_embed`):
    "learn"             learned, one vector per token in raster order (the paper's default):
                        pos_embed (1, N, D), timm's name and shape
    "none"              no position information: the model is then equivariant to permuting the
                        patches
    "learn_2d"          learned X and Y embeddings of D/2 each, concatenated per patch:
                        pos_embed_x (1, gw, D/2), pos_embed_y (1, gh, D/2), pos_embed_cls (1, 1, D)
    "sincos"            the fixed 2D sine-cosine table of later ViT work (Chen et al. 2021, MoCo v3;
                        Beyer et al. 2022): never trained, not in the state dict
    "relative_1d"       the paper's relative variant (App. D.4), 1-D relative attention: every
                        1-D offset p_q - p_k between a query patch and a key patch (raster order)
                        has an embedding r; an extra attention of the original query against the
                        r of each pair gives logits that are added to the content logits before
                        the softmax: rel_pos_embed (L, Hh, 2Np - 1 [+ 3], hd). See below.
    "relative_bias_2d"  not in the paper: a learned scalar per head and 2D offset (dy, dx) between
                        patches, added to the attention logits of each block (Swin's relative
                        position bias, Liu et al. 2021, with BEiT's three class-token entries,
                        Bao et al. 2021): rel_pos_bias (L, Hh, (2gh-1)(2gw-1) + 3)
Old names (ALIASES, resolved by `resolve` when a ViTConfig is made, so that configs and
checkpoints that use them still load): "relative" is "relative_bias_2d".

Where a learned embedding enters (`config.pos_embed_at`, "learn" only):
    "input"               once, before the first block (Eq. 1)
    "every_block"         a separate embedding before every block: pos_embed (L, N, D)
    "every_block_shared"  one embedding, added before every block: pos_embed (1, N, D)

"relative_1d", the choices the paper leaves open. In block l and head h, with q_i the query of
token i (hd numbers), k_j a key and r_o the embedding of index o:

    logit(i, j) = q_i . k_j / sqrt(hd)  +  q_i . r_{o(i, j)} / sqrt(hd)
    o(i, j)     = p_i - p_j + Np - 1           for two patches (p = row * gw + column), in [0, 2Np - 2]

  * Width hd, per head: the embeddings act as keys, and keys live in each head (hd numbers each,
    D over all heads), so every head has its own r_o of hd numbers and q . r is defined.
  * Per block: each block has its own table, as each has its own keys. Every offset of the grid
    has an entry (no clipping to a maximum distance): 2Np - 1 of them.
  * Class token: it has no place in the raster order, so pairs with it get three entries of their
    own after the patch offsets: class token -> patch (2Np - 1), patch -> class token (2Np),
    class token -> itself (2Np + 1); the same three as "relative_bias_2d" has.
  * Scale: the relative logits are scaled by 1/sqrt(hd) as the content logits are, so that the
    sum is q . (k + r) / sqrt(hd) (the form of Shaw et al. 2018).
  * Initialisation: truncated normal, std 0.02, as the learned absolute embeddings; the relative
    logits start near 0 and the first attention is nearly content-only. Not weight-decayed (its
    name holds "pos_embed", like the other position embeddings).
  * Computed from autograd ops: q @ r^T gives every query against every offset (B, Hh, N, R);
    indexing row i at o(i, j) gathers the (B, Hh, N, N) bias, and the gradient of that gather
    (scatter-add) reaches both q and the table. The fused attention kernel takes no bias, so a
    model with either relative kind runs attention composed.
  * 1-D offsets ignore the grid's rows: the last patch of a row and the first of the next are 1
    apart, as two neighbours in a row are. The offsets of another grid mean other 2D
    displacements, so a trained table cannot be carried to a new resolution (finetune.py refuses).

Also the helpers: `sincos_2d`, `relative_position_index` (2D offsets), `relative_1d_index`, their
table sizes, and `interpolate_grid` (2D resampling of learned embeddings for fine-tuning at a
higher resolution, Sec. 3.2).

Shape letters: B batch, N tokens (prefix + Np), Np = gh * gw patches, D width, Hh heads,
hd = D / Hh, L blocks, R table entries.
"""
from __future__ import annotations

import numpy as np

from . import nn
from .autograd import broadcast_to, concatenate

KINDS = ("learn", "none", "learn_2d", "sincos", "relative_1d", "relative_bias_2d")
RELATIVE_KINDS = ("relative_1d", "relative_bias_2d")  # bias the logits of (N, N) token pairs; add no E_pos
WHERE = ("input", "every_block", "every_block_shared")
# Old names of kinds, kept so that configs and checkpoints written with them still load. This is the
# only place they are mapped: ViTConfig resolves them when it is made, so the rest of minivit sees
# only KINDS. "relative" was the learned 2D offset bias, before the paper's 1-D relative attention
# ("relative_1d") was added; it was renamed to say what it is.
ALIASES = {"relative": "relative_bias_2d"}


def resolve(kind):
    """The kind `kind` names today: itself, or the new name of an old one (ALIASES)."""
    return ALIASES.get(kind, kind) if isinstance(kind, str) else kind


def check(kind, where, embed_dim):
    """ValueError for a kind / place / width that do not go together (ViTConfig calls this)."""
    kind = resolve(kind)
    if kind not in KINDS:
        old = ", ".join(f"{a!r} (= {b!r})" for a, b in ALIASES.items())
        raise ValueError(f"pos_embed must be one of {KINDS} (or the old name {old}), got {kind!r}")
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
    kind = resolve(cfg.pos_embed)
    N, D = num_prefix_tokens + grid[0] * grid[1], cfg.embed_dim
    if kind == "learn":
        return Learned(N, D, cfg.depth, cfg.pos_embed_at, dtype)
    if kind == "learn_2d":
        return Learned2D(grid, D, num_prefix_tokens, dtype)
    if kind == "sincos":
        return SinCos(grid, D, num_prefix_tokens, dtype)
    if kind == "relative_1d":
        return Relative1D(grid, cfg.num_heads, D // cfg.num_heads, cfg.depth, num_prefix_tokens, dtype)
    if kind == "relative_bias_2d":
        return RelativeBias2D(grid, cfg.num_heads, cfg.depth, num_prefix_tokens, dtype)
    return PositionEmbedding()


def num_parameters(cfg, grid, num_prefix_tokens):
    """How many learned numbers `create(cfg, ...)` makes, without making them."""
    N, D, (gh, gw) = num_prefix_tokens + grid[0] * grid[1], cfg.embed_dim, grid
    kind = resolve(cfg.pos_embed)
    if kind == "learn":
        return (cfg.depth if cfg.pos_embed_at == "every_block" else 1) * N * D
    if kind == "learn_2d":
        return (gh + gw) * (D // 2) + (D if num_prefix_tokens else 0)
    if kind == "relative_1d":  # (L, Hh, R, hd): Hh * hd = D numbers per offset and block
        return cfg.depth * relative_1d_table_size(grid, num_prefix_tokens) * D
    if kind == "relative_bias_2d":
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


class Relative1D(PositionEmbedding):
    """The paper's relative attention (App. D.4): each 1-D offset p_q - p_k between a query and a
    key patch has an embedding r (hd numbers per head, its own table per block); the query's
    logits against the r of each pair, q . r / sqrt(hd), are added to the content logits. The
    choices behind it are in the module docstring."""

    def __init__(self, grid, num_heads, head_dim, depth, num_prefix_tokens, dtype):
        self.index = relative_1d_index(grid, num_prefix_tokens)  # (N, N) into the table
        self.rows = np.arange(len(self.index))[:, None]  # (N, 1): query i reads row i
        self.scale = head_dim**-0.5
        size = relative_1d_table_size(grid, num_prefix_tokens)
        self.rel_pos_embed = nn.Parameter(
            nn.trunc_normal((depth, num_heads, size, head_dim), dtype=dtype))  # (L, Hh, R, hd)
        self.params = {"rel_pos_embed": self.rel_pos_embed}

    def attention_bias(self, layer):
        def bias(q):  # q (B, Hh, N, hd): the block's queries
            r = self.rel_pos_embed[layer]  # (Hh, R, hd): the embeddings play the keys
            logits = (q @ r.transpose(0, 2, 1)) * self.scale  # (B, Hh, N, R): each query, every offset
            return logits[:, :, self.rows, self.index]  # (B, Hh, N, N): [.., i, j] = logits[.., i, index[i, j]]

        return bias


class RelativeBias2D(PositionEmbedding):
    """A learned scalar per head and 2D offset (dy, dx) between query and key patch, added to
    the attention logits (Swin's relative position bias; not the paper's relative attention,
    which is Relative1D); each block has its own table."""

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
