"""Position embeddings (ViT paper Sec. 3.1 and Eq. 1; the variants of Appendix D.4, Table 8),
behind one small interface so that vit.py reads like the paper's equations:

    pe = posemb.create(config, grid, num_prefix_tokens, dtype)
    pe.params                 {name: Parameter}: the model registers these under these names
    pe.add(x, layer)          tokens (B, N, D) with E_pos added, if it enters before block `layer`
    pe.attention_bias(layer)  what is added to block `layer`'s attention logits, or None: an array
                              (Hh, N, N), or, for a bias that depends on the queries, a function
                              bias(q) of the block's queries q (B, Hh, N, hd) -> (B, Hh, N, N)
    pe.table()                the absolute embedding (N, D) as an array (analysis), or None

One definition per kind. KINDS maps each name (`config.pos_embed`) to its class, and the class
owns everything about its kind; the rest of minivit asks it instead of keeping lists of names:
    shapes(cfg, grid, prefix)  its parameters by state-dict name and their shapes: create() makes
                               them, num_parameters() counts them, checkpoint.py checks a saved
                               config against them before building a model
    decayed                    the names among them that weight decay applies to: none, for every
                               kind here (as timm and big_vision exempt position embeddings);
                               create() marks the others Parameter.no_weight_decay, and
                               train.param_groups reads only that mark
    places                     where it may enter (`config.pos_embed_at`, below)
    check_width(D)             ValueError for an embed_dim it cannot use
    relative                   it biases the attention logits of (N, N) token pairs, adds no E_pos
    resizes, resize(...)       whether and how its arrays (the parameters, or their optimizer
                               moments) move to another patch grid: ViT.set_img_size (training at
                               a low resolution first) and a checkpoint fine-tuned at another
                               resolution (finetune.py) both call it
    weights_pin_tokens         whether its weights' shapes fix the token count N (checkpoint.py
                               bounds N for the kinds whose weights do not)
    learned                    whether it has trained weights (a checkpoint without a table can
                               only be a kind that has none: interop.py)
    official_layouts           the official checkpoint layouts that hold it (interop.py)
The JAX bridge runs this same code: `create(cfg, grid, prefix, params=jax_arrays, ops=jax_ops())`
reads JAX arrays with jax.numpy's broadcast_to and concatenate (the only two functions a kind
calls; everything else is an operator or a method that a Tensor and a jax array share). Adding a
kind is adding a class here and its name to KINDS (and its tests).

Kinds:
    "learn"             learned, one vector per token in raster order (the paper's default):
                        pos_embed (1, N, D), timm's name and shape
    "none"              no position information: the model is then equivariant to permuting the
                        patches
    "learn_2d"          learned X and Y embeddings of D/2 each, concatenated per patch:
                        pos_embed_y (1, gh, D/2), pos_embed_x (1, gw, D/2), pos_embed_cls (1, 1, D)
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
    logits start near 0 and the first attention is nearly content-only. Not weight-decayed, as no
    position embedding is.
  * Computed from autograd ops: q @ r^T gives every query against every offset (B, Hh, N, R);
    indexing row i at o(i, j) gathers the (B, Hh, N, N) bias, and the gradient of that gather
    (scatter-add) reaches both q and the table. The fused attention kernel takes no bias, so a
    model with either relative kind runs attention composed.
  * 1-D offsets ignore the grid's rows: the last patch of a row and the first of the next are 1
    apart, as two neighbours in a row are. The offsets of another grid mean other 2D
    displacements, so a trained table cannot be carried to a new resolution (resize refuses).

The arrays these are built from (`sincos_2d`, `relative_position_index`, `relative_1d_index`,
their table sizes, `interpolate_grid`, `resize_pos_embed`, `resize_relative_bias`) live in
patch_grid.py and are importable from here.

Shape letters: B batch, N tokens (prefix + Np), Np = gh * gw patches, D width, Hh heads,
hd = D / Hh, L blocks, R table entries.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from . import nn
from .autograd import broadcast_to, concatenate
from .patch_grid import (interpolate_grid, relative_1d_index, relative_1d_table_size,  # noqa: F401 (re-exported)
                         relative_position_index, relative_table_size, resize_pos_embed, resize_relative_bias,
                         sincos_2d)

WHERE = ("input", "every_block", "every_block_shared")
# The two array functions a kind calls, from minivit's autograd (jax_ops() gives JAX's).
AUTOGRAD_OPS = SimpleNamespace(broadcast_to=broadcast_to, concatenate=concatenate)


def jax_ops():
    """broadcast_to and concatenate from jax.numpy, for create(..., ops=jax_ops()) (the JAX bridge);
    JAX is imported only here, so minivit runs without it."""
    import jax.numpy as jnp

    return SimpleNamespace(broadcast_to=jnp.broadcast_to, concatenate=jnp.concatenate)


class PositionEmbedding:
    """The interface every kind implements, and the "none" kind: no parameters, adds nothing,
    biases nothing. `params` are the arrays it reads (Parameters in the model), `ops` the two
    array functions it calls."""

    name = "none"
    places = ("input",)
    decayed = ()
    relative = False
    resizes = True
    weights_pin_tokens = False
    learned = False
    official_layouts = ()

    def __init__(self, cfg, grid, num_prefix_tokens, dtype=np.float32):
        """The constants of this kind for `grid` (a fixed table, an index); no parameters yet."""
        self.grid, self.num_prefix_tokens, self.dtype = tuple(grid), num_prefix_tokens, np.dtype(dtype)
        self.params, self.ops = {}, AUTOGRAD_OPS

    @classmethod
    def shapes(cls, cfg, grid, num_prefix_tokens):
        """{state-dict name: shape} of the parameters, in the order they are made."""
        return {}

    @classmethod
    def check_width(cls, embed_dim):
        """ValueError for an embed_dim this kind cannot use."""

    @classmethod
    def init(cls, shape, dtype):
        """A parameter's initial value: truncated normal, std 0.02 (timm's)."""
        return nn.trunc_normal(shape, dtype=dtype)

    @classmethod
    def resize(cls, arrays, old_grid, new_grid, num_prefix_tokens):
        """{name: array} of this kind's parameters (or of their optimizer moments), laid out for
        old_grid, for new_grid (host NumPy arrays). Here nothing depends on the grid; any
        constants are rebuilt when the model makes the embedding for the new grid."""
        return dict(arrays)

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

    name = "learn"
    places = WHERE
    weights_pin_tokens = learned = True
    official_layouts = ("vit_jax", "big_vision")

    def __init__(self, cfg, grid, num_prefix_tokens, dtype=np.float32):
        super().__init__(cfg, grid, num_prefix_tokens, dtype)
        self.where = cfg.pos_embed_at

    @classmethod
    def shapes(cls, cfg, grid, num_prefix_tokens):
        layers = cfg.depth if cfg.pos_embed_at == "every_block" else 1
        return {"pos_embed": (layers, num_prefix_tokens + grid[0] * grid[1], cfg.embed_dim)}  # (1 or L, N, D)

    @classmethod
    def resize(cls, arrays, old_grid, new_grid, num_prefix_tokens):
        """Bilinear resampling of the grid rows, the class token's row kept (Sec. 3.2)."""
        return {k: resize_pos_embed(v, old_grid, new_grid, num_prefix_tokens) for k, v in arrays.items()}

    def add(self, x, layer):
        pos_embed = self.params["pos_embed"]  # (1 or L, N, D)
        if self.where == "input":
            return x + pos_embed if layer == 0 else x
        if self.where == "every_block_shared":
            return x + pos_embed
        return x + pos_embed[layer]  # every_block: this block's own (N, D)

    def table(self):
        return self.params["pos_embed"].data[0]


class Learned2D(PositionEmbedding):
    """E_pos of patch (i, j) = [X_j ; Y_i], two learned halves of D/2 (App. D.4)."""

    name = "learn_2d"
    weights_pin_tokens = learned = True

    @classmethod
    def shapes(cls, cfg, grid, num_prefix_tokens):
        (gh, gw), D = grid, cfg.embed_dim
        shapes = {"pos_embed_y": (1, gh, D // 2), "pos_embed_x": (1, gw, D // 2)}
        return {**shapes, "pos_embed_cls": (1, 1, D)} if num_prefix_tokens else shapes

    @classmethod
    def check_width(cls, embed_dim):
        if embed_dim % 2:
            raise ValueError(f"pos_embed='learn_2d' needs an even embed_dim (X and Y halves), got {embed_dim}")

    @classmethod
    def resize(cls, arrays, old_grid, new_grid, num_prefix_tokens):
        """Each axis resampled in 1-D (Y over the rows, X over the columns); the class token's kept."""
        axis = {"pos_embed_y": 0, "pos_embed_x": 1}
        return {k: v if k not in axis else interpolate_grid(v[0], (old_grid[axis[k]], 1), (new_grid[axis[k]], 1))[None]
                for k, v in arrays.items()}

    def _grid(self):
        (gh, gw), D2, ops = self.grid, self.params["pos_embed_y"].shape[-1], self.ops
        y = ops.broadcast_to(self.params["pos_embed_y"].reshape(1, gh, 1, D2), (1, gh, gw, D2))
        x = ops.broadcast_to(self.params["pos_embed_x"].reshape(1, 1, gw, D2), (1, gh, gw, D2))
        grid = ops.concatenate([x, y], axis=3).reshape(1, gh * gw, 2 * D2)  # (1, Np, D)
        cls = self.params.get("pos_embed_cls")
        return grid if cls is None else ops.concatenate([cls, grid], axis=1)  # (1, N, D)

    def add(self, x, layer):
        return x + self._grid() if layer == 0 else x

    def table(self):
        return self._grid().data[0]


class SinCos(PositionEmbedding):
    """A fixed table: sin and cos of x and y at geometrically spaced frequencies; zero for the
    class token."""

    name = "sincos"
    official_layouts = ("big_vision",)

    def __init__(self, cfg, grid, num_prefix_tokens, dtype=np.float32):
        super().__init__(cfg, grid, num_prefix_tokens, dtype)
        fixed = np.zeros((1, num_prefix_tokens + grid[0] * grid[1], cfg.embed_dim), dtype=dtype)
        fixed[0, num_prefix_tokens:] = sincos_2d(grid, cfg.embed_dim, dtype=dtype)
        self.fixed = fixed  # (1, N, D), a constant: no gradient, not in the state dict

    @classmethod
    def check_width(cls, embed_dim):
        if embed_dim % 4:
            raise ValueError(f"pos_embed='sincos' needs embed_dim divisible by 4, got {embed_dim}")

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

    name = "relative_1d"
    relative = learned = True
    resizes = False

    def __init__(self, cfg, grid, num_prefix_tokens, dtype=np.float32):
        super().__init__(cfg, grid, num_prefix_tokens, dtype)
        self.index = relative_1d_index(grid, num_prefix_tokens)  # (N, N) into the table
        self.rows = np.arange(len(self.index))[:, None]  # (N, 1): query i reads row i
        self.scale = (cfg.embed_dim // cfg.num_heads) ** -0.5

    @classmethod
    def shapes(cls, cfg, grid, num_prefix_tokens):
        size = relative_1d_table_size(grid, num_prefix_tokens)
        return {"rel_pos_embed": (cfg.depth, cfg.num_heads, size, cfg.embed_dim // cfg.num_heads)}  # (L, Hh, R, hd)

    @classmethod
    def resize(cls, arrays, old_grid, new_grid, num_prefix_tokens):
        """Refused at another grid: nothing to interpolate between (see below)."""
        if tuple(old_grid) == tuple(new_grid):
            return dict(arrays)
        # A 1-D offset p_q - p_k means another 2D displacement on another grid (an offset of gw is one
        # row down on a gh x gw grid, part of a row on a wider one).
        raise ValueError(
            f"pos_embed='relative_1d' cannot move from a {old_grid[0]}x{old_grid[1]} to a "
            f"{new_grid[0]}x{new_grid[1]} patch grid: its embeddings belong to 1-D raster offsets p_q - p_k, "
            "which stand for other 2D displacements on another grid, so they cannot be interpolated; "
            "keep the resolution, or train with pos_embed='learn' or 'relative_bias_2d'")

    def attention_bias(self, layer):
        def bias(q):  # q (B, Hh, N, hd): the block's queries
            r = self.params["rel_pos_embed"][layer]  # (Hh, R, hd): the embeddings play the keys
            logits = (q @ r.transpose(0, 2, 1)) * self.scale  # (B, Hh, N, R): each query, every offset
            return logits[:, :, self.rows, self.index]  # (B, Hh, N, N): [.., i, j] = logits[.., i, index[i, j]]

        return bias


class RelativeBias2D(PositionEmbedding):
    """A learned scalar per head and 2D offset (dy, dx) between query and key patch, added to
    the attention logits (Swin's relative position bias; not the paper's relative attention,
    which is Relative1D); each block has its own table."""

    name = "relative_bias_2d"
    relative = learned = True

    def __init__(self, cfg, grid, num_prefix_tokens, dtype=np.float32):
        super().__init__(cfg, grid, num_prefix_tokens, dtype)
        self.index = relative_position_index(grid, num_prefix_tokens)  # (N, N) into the table

    @classmethod
    def shapes(cls, cfg, grid, num_prefix_tokens):
        return {"rel_pos_bias": (cfg.depth, cfg.num_heads, relative_table_size(grid, num_prefix_tokens))}  # (L, Hh, S)

    @classmethod
    def resize(cls, arrays, old_grid, new_grid, num_prefix_tokens):
        """Each head's table of 2D offsets interpolated like an image; the class-token entries kept."""
        return {k: resize_relative_bias(v, old_grid, new_grid, num_prefix_tokens) for k, v in arrays.items()}

    def attention_bias(self, layer):
        return self.params["rel_pos_bias"][layer][:, self.index]  # (Hh, N, N)


# ---- the registry ------------------------------------------------------------------------------

KINDS = {kind.name: kind for kind in (Learned, PositionEmbedding, Learned2D, SinCos, Relative1D, RelativeBias2D)}
RELATIVE_KINDS = tuple(name for name, kind in KINDS.items() if kind.relative)  # derived, for readers and tests
# Old names of kinds, kept so that configs and checkpoints written with them still load. This is the
# only place they are mapped: ViTConfig resolves them when it is made, so the rest of minivit sees
# only KINDS. "relative" was the learned 2D offset bias, before the paper's 1-D relative attention
# ("relative_1d") was added; it was renamed to say what it is.
ALIASES = {"relative": "relative_bias_2d"}


def resolve(kind):
    """The kind `kind` names today: itself, or the new name of an old one (ALIASES)."""
    return ALIASES.get(kind, kind) if isinstance(kind, str) else kind


def kind_of(name):
    """The class of kind `name` (an old name resolved); ValueError listing the kinds otherwise."""
    resolved = resolve(name)
    if not isinstance(resolved, str) or resolved not in KINDS:
        old = ", ".join(f"{a!r} (= {b!r})" for a, b in ALIASES.items())
        raise ValueError(f"pos_embed must be one of {tuple(KINDS)} (or the old name {old}), got {name!r}")
    return KINDS[resolved]


def resizable():
    """The names of the kinds whose arrays move to another patch grid."""
    return tuple(name for name, kind in KINDS.items() if kind.resizes)


def check(name, where, embed_dim):
    """ValueError for a kind / place / width that do not go together (ViTConfig calls this)."""
    kind = kind_of(name)
    if where not in WHERE:
        raise ValueError(f"pos_embed_at must be one of {WHERE}, got {where!r}")
    if where not in kind.places:
        fits = " or ".join(repr(n) for n, other in KINDS.items() if where in other.places)
        raise ValueError(f"pos_embed_at={where!r} needs pos_embed={fits}, got pos_embed={kind.name!r}")
    kind.check_width(embed_dim)


def create(cfg, grid, num_prefix_tokens, dtype=np.float32, params=None, ops=AUTOGRAD_OPS):
    """The position embedding a ViTConfig asks for, on `grid`. params=None: new Parameters,
    initialised, with weight decay off for all but the kind's `decayed`; else it reads these
    arrays by name (the model's own Parameters after a change of grid, or, with ops=jax_ops(),
    the JAX bridge's arrays)."""
    check(cfg.pos_embed, cfg.pos_embed_at, cfg.embed_dim)
    kind = kind_of(cfg.pos_embed)
    pe = kind(cfg, grid, num_prefix_tokens, dtype)  # its constants for this grid
    shapes = kind.shapes(cfg, grid, num_prefix_tokens)
    if params is None:
        pe.params = {name: nn.Parameter(kind.init(shape, dtype), no_weight_decay=name not in kind.decayed)
                     for name, shape in shapes.items()}
    else:
        pe.params = {name: params[name] for name in shapes}
    pe.ops = ops
    return pe


def num_parameters(cfg, grid, num_prefix_tokens):
    """How many learned numbers `create(cfg, ...)` makes, without making them."""
    return sum(math.prod(shape) for shape in kind_of(cfg.pos_embed).shapes(cfg, grid, num_prefix_tokens).values())
