"""The Vision Transformer (Dosovitskiy et al., ICLR 2021), read top to bottom from small pieces to
the full model: patch embedding (Eq. 1), multi-head self-attention (Appendix A), the GELU MLP,
the pre-norm block (Eq. 2-3), then the ViT with its class token or average pooling (Eq. 4).

Parameter names and shapes follow timm's `VisionTransformer`, so that a timm state dict
converted to NumPy loads with `load_state_dict` and gives the same logits.

Shape letters: B batch, C channels, H/W image size, P patch, Np patches, T tokens (prefix + Np),
D width, Hh heads, hd = D / Hh, K classes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from . import functional as F
from . import nn, posemb
from .autograd import Tensor, broadcast_to, concatenate, no_grad

POS_EMBEDS = ("learn", "none", "learn_2d", "sincos", "relative")
POS_EMBED_AT = ("input", "every_block", "every_block_shared")


def config_from_dict(cls, d, what):
    """cls(**d) for a config dataclass, with a TypeError naming unknown keys and the valid ones."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise TypeError(f"unknown {what} option(s) {unknown}; valid options: {sorted(names)}")
    return cls(**d)


@dataclass
class ViTConfig:
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    global_pool: str = "token"  # "token": class token output; "avg": mean of the patch tokens
    class_token: bool = True
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0  # dropout after the position embedding and after every dense layer but qkv
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    pos_embed: str = "learn"  # one of POS_EMBEDS
    pos_embed_at: str = "input"  # one of POS_EMBED_AT (learned embeddings only)
    representation_size: int | None = None  # pre-logits Linear + tanh, as in pre-training
    norm_eps: float = 1e-6

    def __post_init__(self):
        if isinstance(self.img_size, (tuple, list)):
            if len(set(self.img_size)) != 1:
                raise ValueError(f"only square images are supported, got img_size={tuple(self.img_size)}")
            self.img_size = int(self.img_size[0])
        if min(self.img_size, self.patch_size, self.in_chans, self.embed_dim, self.depth, self.num_heads) <= 0:
            raise ValueError("img_size, patch_size, in_chans, embed_dim, depth and num_heads must be positive")
        checks = [
            (self.img_size % self.patch_size == 0,
             f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}"),
            (self.embed_dim % self.num_heads == 0,
             f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"),
            (self.global_pool in ("token", "avg"), f"global_pool must be 'token' or 'avg', got {self.global_pool!r}"),
            (self.global_pool != "token" or self.class_token, "global_pool='token' needs class_token=True"),
            (self.pos_embed in POS_EMBEDS, f"pos_embed must be one of {POS_EMBEDS}, got {self.pos_embed!r}"),
            (self.pos_embed_at in POS_EMBED_AT, f"pos_embed_at must be one of {POS_EMBED_AT}, got {self.pos_embed_at!r}"),
            (self.pos_embed_at == "input" or self.pos_embed == "learn",
             "pos_embed_at other than 'input' needs pos_embed='learn'"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def grid_size(self):
        return (self.img_size // self.patch_size,) * 2

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return config_from_dict(cls, d, "ViT")


class PatchProjection(nn.Module):
    """The patch projection E of Eq. 1, stored like timm's conv: weight (D, C, P, P), bias (D,)."""

    def __init__(self, in_chans, embed_dim, patch_size, dtype):
        super().__init__()
        fan_in = in_chans * patch_size * patch_size
        self.weight = nn.Parameter(nn.lecun_normal((embed_dim, in_chans, patch_size, patch_size), fan_in, dtype))
        self.bias = nn.Parameter(np.zeros(embed_dim, dtype=dtype))

    def forward(self, x):
        return F.patch_embed(x, self.weight, self.bias)  # (B, Np, D)


class PatchEmbed(nn.Module):
    def __init__(self, cfg, dtype):
        super().__init__()
        self.proj = PatchProjection(cfg.in_chans, cfg.embed_dim, cfg.patch_size, dtype)

    def forward(self, x):
        return self.proj(x)


class Attention(nn.Module):
    """Multi-head self-attention: qkv projection, softmax(q k^T / sqrt(hd)) v per head, output
    projection. `qkv.weight` (3D, D) stacks the q, k and v projections, as in timm."""

    def __init__(self, cfg, dtype, relative_index=None):
        super().__init__()
        D = cfg.embed_dim
        self.num_heads, self.head_dim = cfg.num_heads, D // cfg.num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(D, 3 * D, bias=cfg.qkv_bias, dtype=dtype)
        self.attn_drop = cfg.attn_drop_rate
        self.proj = nn.Linear(D, D, dtype=dtype)
        self.proj_drop = nn.Dropout(cfg.drop_rate)
        self.relative_index = relative_index  # (T, T) or None
        if relative_index is not None:
            size = int(relative_index.max()) + 1
            self.rel_pos_bias = nn.Parameter(nn.trunc_normal((cfg.num_heads, size), dtype=dtype))  # (Hh, table)

    def forward(self, x, return_weights=False):
        B, T, D = x.shape
        Hh, hd = self.num_heads, self.head_dim
        plain = self.relative_index is None and not (self.attn_drop and self.training) and not return_weights
        if plain:  # one qkv matmul; the fused op splits and merges the heads around the kernel
            return self.proj_drop(self.proj(F.qkv_attention(self.qkv(x), Hh, self.scale)))
        # The composed path (relative bias, attention dropout, weights for analysis): three
        # projections through slices of the stacked weight, so each head-split is a view, and
        # backward writes each slice's gradient into its third of qkv.weight.
        w, b = self.qkv.weight, self.qkv.bias
        q, k, v = (
            F.linear(x, w[i * D:(i + 1) * D], None if b is None else b[i * D:(i + 1) * D])
            .reshape(B, T, Hh, hd).transpose(0, 2, 1, 3)  # (B, Hh, T, hd)
            for i in range(3)
        )
        bias = None
        if self.relative_index is not None:
            bias = self.rel_pos_bias[:, self.relative_index]  # (Hh, T, T)
        out = F.scaled_dot_product_attention(q, k, v, self.scale, bias=bias, dropout_p=self.attn_drop,
                                             training=self.training, return_weights=return_weights)
        out, weights = out if return_weights else (out, None)
        out = out.transpose(0, 2, 1, 3).reshape(B, T, D)  # (B, T, D)
        out = self.proj_drop(self.proj(out))
        return (out, weights) if return_weights else out


class Mlp(nn.Module):
    def __init__(self, cfg, dtype):
        super().__init__()
        hidden = int(cfg.embed_dim * cfg.mlp_ratio)
        self.fc1 = nn.Linear(cfg.embed_dim, hidden, dtype=dtype)
        self.fc2 = nn.Linear(hidden, cfg.embed_dim, dtype=dtype)
        self.drop = nn.Dropout(cfg.drop_rate)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))  # (B, T, D)


class Block(nn.Module):
    """Pre-norm transformer block (Eq. 2-3): x + MSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, cfg, dtype, drop_path=0.0, relative_index=None, num_tokens=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, cfg.norm_eps, dtype)
        self.attn = Attention(cfg, dtype, relative_index)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, cfg.norm_eps, dtype)
        self.mlp = Mlp(cfg, dtype)
        self.drop_path = nn.DropPath(drop_path)
        if cfg.pos_embed_at == "every_block":  # Appendix D.4: a separate embedding per layer
            self.pos_embed = nn.Parameter(nn.trunc_normal((1, num_tokens, cfg.embed_dim), dtype=dtype))

    def forward(self, x, return_weights=False):
        out = self.attn(self.norm1(x), return_weights=return_weights)
        out, weights = out if return_weights else (out, None)
        x = x + self.drop_path(out)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return (x, weights) if return_weights else x


class ViT(nn.Module):
    """Vision Transformer. Takes timm's `VisionTransformer` keyword names (see ViTConfig), or
    a `config=ViTConfig(...)`. Input: float images (B, C, H, W), NumPy array or Tensor; output:
    logits (B, K) as a Tensor."""

    def __init__(self, config: ViTConfig | None = None, dtype=np.float32, **kwargs):
        super().__init__()
        cfg = config if config is not None else ViTConfig.from_dict(kwargs)
        if config is not None and kwargs:
            raise TypeError("pass either config= or keyword options, not both")
        self.config, self.dtype = cfg, np.dtype(dtype)
        D, gh = cfg.embed_dim, cfg.grid_size[0]
        self.num_prefix_tokens = 1 if cfg.class_token else 0
        self.grid_size = cfg.grid_size
        self.num_tokens = self.num_prefix_tokens + gh * gh

        self.patch_embed = PatchEmbed(cfg, dtype)
        if cfg.class_token:
            self.cls_token = nn.Parameter(nn.trunc_normal((1, 1, D), dtype=dtype))  # (1, 1, D)
        self._init_position_embedding(cfg, dtype)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        rel = posemb.relative_position_index(self.grid_size, self.num_prefix_tokens) if cfg.pos_embed == "relative" else None
        rates = np.linspace(0, cfg.drop_path_rate, cfg.depth)  # stochastic depth grows with depth
        self.blocks = nn.ModuleList(Block(cfg, dtype, float(r), rel, self.num_tokens) for r in rates)
        use_fc_norm = cfg.global_pool == "avg"  # timm: final norm after pooling for 'avg'
        self.norm = nn.Identity() if use_fc_norm else nn.LayerNorm(D, cfg.norm_eps, dtype)
        self.fc_norm = nn.LayerNorm(D, cfg.norm_eps, dtype) if use_fc_norm else nn.Identity()
        if cfg.representation_size:
            self.pre_logits = nn.Module()
            self.pre_logits.fc = nn.Linear(D, cfg.representation_size, dtype=dtype)
        self.head = self._zero_head(cfg.representation_size or D, cfg.num_classes, dtype)

    def _init_position_embedding(self, cfg, dtype):
        T, D = self.num_tokens, cfg.embed_dim
        gh, gw = self.grid_size
        if cfg.pos_embed == "learn" and cfg.pos_embed_at != "every_block":
            self.pos_embed = nn.Parameter(nn.trunc_normal((1, T, D), dtype=dtype))  # (1, T, D)
        elif cfg.pos_embed == "learn_2d":  # Appendix D.4: X and Y embeddings of D/2 each
            if D % 2:
                raise ValueError(f"2D position embedding needs an even embed_dim, got {D}")
            self.pos_embed_y = nn.Parameter(nn.trunc_normal((1, gh, D // 2), dtype=dtype))
            self.pos_embed_x = nn.Parameter(nn.trunc_normal((1, gw, D // 2), dtype=dtype))
            if cfg.class_token:
                self.pos_embed_cls = nn.Parameter(nn.trunc_normal((1, 1, D), dtype=dtype))
        elif cfg.pos_embed == "sincos":
            fixed = np.zeros((1, T, D), dtype=dtype)
            fixed[0, self.num_prefix_tokens:] = posemb.sincos_2d(self.grid_size, D, dtype=dtype)
            self._fixed_pos_embed = fixed  # not a parameter: never trained, not in the state dict

    @staticmethod
    def _zero_head(in_features, num_classes, dtype):
        if num_classes <= 0:
            return nn.Identity()
        head = nn.Linear(in_features, num_classes, dtype=dtype)
        head.weight.data[:] = 0  # zero-initialised head (Section 3.1, fine-tuning)
        return head

    # ---- pieces of the forward pass -----------------------------------------------------------
    def position_embedding(self):
        """The model's absolute position embedding (1, T, D) as a Tensor or array (for the
        per-block variant, the first block's); None for no embedding or relative attention."""
        cfg = self.config
        if cfg.pos_embed == "learn":
            return self.blocks[0].pos_embed if cfg.pos_embed_at == "every_block" else self.pos_embed
        if cfg.pos_embed == "sincos":
            return self._fixed_pos_embed
        if cfg.pos_embed == "learn_2d":
            gh, gw = self.grid_size
            D2 = cfg.embed_dim // 2
            y = broadcast_to(self.pos_embed_y.reshape(1, gh, 1, D2), (1, gh, gw, D2))
            x = broadcast_to(self.pos_embed_x.reshape(1, 1, gw, D2), (1, gh, gw, D2))
            grid = concatenate([x, y], axis=3).reshape(1, gh * gw, cfg.embed_dim)  # (1, Np, D)
            return concatenate([self.pos_embed_cls, grid], axis=1) if cfg.class_token else grid
        return None

    def _check_input(self, x):
        data = x.data if isinstance(x, Tensor) else np.asarray(x) if not hasattr(x, "__array_namespace__") else x
        cfg = self.config
        if data.ndim != 4:
            hint = " (add a batch axis: x[None])" if data.ndim == 3 else ""
            raise ValueError(f"expected images of shape (B, C, H, W) = (B, {cfg.in_chans}, {cfg.img_size}, "
                             f"{cfg.img_size}), got an array of shape {tuple(data.shape)}{hint}")
        if data.shape[1] != cfg.in_chans:
            raise ValueError(f"expected {cfg.in_chans} channels (in_chans={cfg.in_chans}), got {data.shape[1]} "
                             f"(input shape {tuple(data.shape)}; images must be channels-first, (B, C, H, W))")
        if data.shape[2:] != (cfg.img_size, cfg.img_size):
            raise ValueError(f"expected {cfg.img_size}x{cfg.img_size} images (img_size={cfg.img_size}, "
                             f"patch_size={cfg.patch_size}), got {data.shape[2]}x{data.shape[3]}")
        if isinstance(x, Tensor):
            return x if x.dtype == self.dtype else x.astype(self.dtype)
        return data.astype(self.dtype, copy=False)

    def _embed(self, x):
        """Images -> tokens with class token and position embedding: z_0 of Eq. 1. (B, T, D)"""
        x = self.patch_embed(self._check_input(x))  # (B, Np, D)
        B = x.shape[0]
        if self.config.class_token:
            cls = broadcast_to(self.cls_token, (B, 1, self.config.embed_dim))  # (B, 1, D)
            x = concatenate([cls, x], axis=1)  # (B, T, D)
        pos = self.position_embedding() if self.config.pos_embed_at == "input" else None
        if pos is not None:
            x = x + pos
        return self.pos_drop(x)

    def _block_input(self, x, block):
        if self.config.pos_embed_at == "every_block":
            return x + block.pos_embed
        if self.config.pos_embed_at == "every_block_shared":
            return x + self.pos_embed
        return x

    def forward_features(self, x):
        """Images (B, C, H, W) -> final token representations (B, T, D) (after the last norm)."""
        x = self._embed(x)
        for block in self.blocks:
            x = block(self._block_input(x, block))
        return self.norm(x)

    def forward_head(self, x, pre_logits=False):
        """Tokens (B, T, D) -> logits (B, K); with pre_logits=True the (B, D) image representation."""
        if self.config.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(axis=1)  # (B, D)
        else:
            x = x[:, 0]  # (B, D): the class token, y = LN(z_L^0) of Eq. 4
        x = self.fc_norm(x)
        if self.config.representation_size:
            x = self.pre_logits.fc(x).tanh()
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x):
        """Runs without gradients and returns the named intermediates as NumPy arrays (as
        big_vision's ViT does): patch_tokens (B, Np, D), with_posemb (B, T, D), blocks (list of
        L (B, T, D)), attention (list of L (B, Hh, T, T) probabilities), pre_logits (B, D),
        logits (B, K)."""
        out = {"blocks": [], "attention": []}
        with no_grad():
            out["patch_tokens"] = self.patch_embed(self._check_input(x)).numpy()
            h = self._embed(x)
            out["with_posemb"] = h.numpy()
            for block in self.blocks:
                h, weights = block(self._block_input(h, block), return_weights=True)
                out["blocks"].append(h.numpy())
                out["attention"].append(weights.numpy())
            h = self.norm(h)
            out["encoded"] = h.numpy()
            pre = self.forward_head(h, pre_logits=True)
            out["pre_logits"] = pre.numpy()
            out["logits"] = (self.head(pre)).numpy()
        return out

    def astype(self, dtype):
        """Cast parameters, inputs and the fixed sin-cos table to `dtype` (e.g. float64)."""
        super().astype(dtype)
        self.dtype = np.dtype(dtype)
        if hasattr(self, "_fixed_pos_embed"):
            self._fixed_pos_embed = self._fixed_pos_embed.astype(dtype)
        return self

    def reset_classifier(self, num_classes):
        """A new zero-initialised D x K head for fine-tuning (the pre-logits layer is dropped)."""
        cfg = self.config
        if cfg.representation_size:
            del self._modules["pre_logits"]
            object.__delattr__(self, "pre_logits")
            cfg.representation_size = None
        cfg.num_classes = num_classes
        self.head = self._zero_head(cfg.embed_dim, num_classes, self.dtype)
        return self

    def extra_repr(self):
        c = self.config
        return (f"img_size={c.img_size}, patch_size={c.patch_size}, embed_dim={c.embed_dim}, depth={c.depth}, "
                f"num_heads={c.num_heads}, num_classes={c.num_classes}, params={self.num_parameters():,}")
