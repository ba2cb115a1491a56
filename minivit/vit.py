"""The Vision Transformer (Dosovitskiy et al., ICLR 2021), read top to bottom from small pieces to
the full model: the patch embedding (Eq. 1), multi-head self-attention (Appendix A), the GELU
MLP, the pre-norm block (Eq. 2-3), then the ViT with its class token or average pooling (Eq. 4).

    z_0  = [x_class; x_p^1 E; ...; x_p^Np E] + E_pos      (Eq. 1)   ViT.forward_features
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                      (Eq. 2)   Block.forward
    z_l  = MLP(LN(z'_l)) + z'_l                            (Eq. 3)   Block.forward
    y    = LN(z_L^0)                                       (Eq. 4)   ViT.forward_head

Every op below runs a kernel from the registry (kernels/registry.py: the Numba versions by
default). To read and step through plain NumPy instead, run with MINIVIT_KERNELS=reference
(every op's forward and backward from kernels/reference/), or `with kernels.use("reference"):`.

Parameter names and shapes follow timm's `VisionTransformer`, so that a timm state dict
converted to NumPy loads with `load_state_dict` and gives the same logits. Position-embedding
variants (Appendix D.4) live in posemb.py; the named variants (Table 1) in variants.py.

Shape letters: B batch, C channels, H/W image height/width, P patch, Np patches, N tokens
(prefix + Np), D width, Hh heads, hd = D / Hh, K classes, L blocks.
"""
from __future__ import annotations

import dataclasses
import numbers
import os
from dataclasses import asdict, dataclass, fields

import numpy as np

from . import device as _device
from . import functional as F
from . import nn, posemb
from .autograd import Tensor, broadcast_to, concatenate


def config_from_dict(cls, d, what):
    """cls(**d) for a config dataclass, with a TypeError naming unknown keys and the valid ones."""
    if not isinstance(d, dict):
        raise TypeError(f"{what} options must be a dict, got {type(d).__name__}")
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
    num_classes: int = 1000  # 0: no head, the model returns the pre-logits representation
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
    patch_drop_rate: float = 0.0  # training drops this fraction of each image's patch tokens (functional.patch_dropout)
    pos_embed: str = "learn"  # one of posemb.KINDS (an old name in posemb.ALIASES becomes its new one)
    pos_embed_at: str = "input"  # one of posemb.WHERE (learned embeddings only)
    representation_size: int | None = None  # pre-logits Linear + tanh, as in pre-training
    norm_eps: float = 1e-6
    fc_norm: bool | None = None  # final LayerNorm after pooling instead of before; None: only for "avg" (timm)

    def __post_init__(self):
        if isinstance(self.img_size, (tuple, list)):
            if len(self.img_size) != 2 or len(set(self.img_size)) != 1:
                raise ValueError(f"only square images are supported, got img_size={tuple(self.img_size)}")
            self.img_size = self.img_size[0]
        for name in ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads"):
            _check_number(name, getattr(self, name), integer=True, low=1)
        _check_number("num_classes", self.num_classes, integer=True, low=0)
        if self.representation_size is not None:
            _check_number("representation_size", self.representation_size, integer=True, low=1)
        _check_number("mlp_ratio", self.mlp_ratio, low=0, low_open=True)
        _check_number("norm_eps", self.norm_eps, low=0, low_open=True)
        for name in ("drop_rate", "attn_drop_rate", "drop_path_rate", "patch_drop_rate"):
            F.check_probability(getattr(self, name), name)
        for name in ("class_token", "qkv_bias") + (("fc_norm",) if self.fc_norm is not None else ()):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {self.global_pool!r}")
        if self.global_pool == "token" and not self.class_token:
            raise ValueError("global_pool='token' needs class_token=True")
        self.pos_embed = posemb.resolve(self.pos_embed)  # pos_embed="relative" (old) -> "relative_bias_2d"
        posemb.check(self.pos_embed, self.pos_embed_at, self.embed_dim)
        if self.patch_drop_rate and (posemb.kind_of(self.pos_embed).relative or self.pos_embed_at != "input"):
            raise ValueError("patch_drop_rate removes tokens after the position embedding is added at the input; "
                             "it cannot be combined with a relative position embedding or one added in every "
                             f"block (got pos_embed={self.pos_embed!r}, pos_embed_at={self.pos_embed_at!r} with "
                             f"patch_drop_rate={self.patch_drop_rate}; patch_drop_rate=0, or --patch-drop-rate 0 "
                             "after a recipe that sets it, turns it off)")

    @property
    def grid_size(self):
        return (self.img_size // self.patch_size,) * 2

    def num_parameters(self) -> int:
        """The number of learned numbers of a ViT with this config, counted from the shapes
        without building it (at 224 x 224 and 1,000 classes: B/16 86.6M, L/16 304.3M, H/14 632.0M,
        against Table 1's 86M, 307M and 632M for Base, Large and Huge)."""
        D, C, P, K = self.embed_dim, self.in_chans, self.patch_size, self.num_classes
        M, R = int(D * self.mlp_ratio), self.representation_size or 0
        prefix = 1 if self.class_token else 0
        block = (2 * 2 * D  # norm1, norm2
                 + 3 * D * D + (3 * D if self.qkv_bias else 0) + D * D + D  # qkv, proj
                 + D * M + M + M * D + D)  # fc1, fc2
        head = (D * R + R if R else 0) + ((R or D) * K + K if K > 0 else 0)
        return (D * C * P * P + D + prefix * D  # patch projection, class token
                + posemb.num_parameters(self, self.grid_size, prefix)
                + self.depth * block + 2 * D + head)  # blocks, final norm (or fc_norm), head

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return config_from_dict(cls, d, "ViT")


def _check_number(name, value, integer=False, low=None, low_open=False):
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not np.isfinite(value):
        raise TypeError(f"{name} must be {'an integer' if integer else 'a finite number'}, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")


def physical_memory() -> int | None:
    """Bytes of RAM in this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX: no check
        return None


def _check_fits_in_memory(cfg, dtype):
    """MemoryError, at once, for a config whose weights alone exceed this machine's memory
    (depth=10**9 would otherwise build blocks for minutes before failing)."""
    need, ram = cfg.num_parameters() * dtype.itemsize, physical_memory()
    if ram and need > ram:
        raise MemoryError(f"a ViT with depth={cfg.depth}, embed_dim={cfg.embed_dim}, img_size={cfg.img_size} and "
                          f"patch_size={cfg.patch_size} has {cfg.num_parameters():,} parameters: "
                          f"{need / 2**30:,.1f} GiB of {dtype.name} weights, more than this machine's "
                          f"{ram / 2**30:,.1f} GiB")


def _keep(out, name, x):
    """Store an intermediate's value (its array, no graph) in `out`, when the caller passed a dict
    to fill; the per-block names ("blocks", "attention") collect one array per block."""
    if out is None:
        return
    if name in ("blocks", "attention"):
        out.setdefault(name, []).append(x.data)
    else:
        out[name] = x.data


class PatchProjection(nn.Module):
    """The patch projection E of Eq. 1, stored like timm's conv: weight (D, C, P, P), bias (D,)."""

    def __init__(self, in_chans, embed_dim, patch_size, dtype):
        super().__init__()
        fan_in = in_chans * patch_size * patch_size
        self.weight = nn.Parameter(nn.lecun_normal((embed_dim, in_chans, patch_size, patch_size), fan_in, dtype))
        self.bias = nn.Parameter(np.zeros(embed_dim, dtype=dtype))

    def forward(self, x):
        return F.patch_embed(x, self.weight, self.bias)  # (B, C, H, W) -> (B, Np, D)


class PatchEmbed(nn.Module):
    def __init__(self, cfg, dtype):
        super().__init__()
        self.proj = PatchProjection(cfg.in_chans, cfg.embed_dim, cfg.patch_size, dtype)

    def forward(self, x):
        return self.proj(x)


class Attention(nn.Module):
    """Multi-head self-attention: softmax(q k^T / sqrt(hd)) v in each of Hh heads, then the output
    projection. `qkv.weight` (3D, D) stacks the q, k and v projections, as in timm."""

    def __init__(self, cfg, dtype):
        super().__init__()
        D = cfg.embed_dim
        self.num_heads, self.head_dim = cfg.num_heads, D // cfg.num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(D, 3 * D, bias=cfg.qkv_bias, dtype=dtype)
        self.attn_drop = nn.Dropout(cfg.attn_drop_rate)
        self.proj = nn.Linear(D, D, dtype=dtype)
        self.proj_drop = nn.Dropout(cfg.drop_rate)

    def forward(self, x, bias=None, out=None):
        """x (B, N, D) -> (B, N, D). bias, added to the logits (relative position embeddings,
        posemb.py): an array (Hh, N, N) or (B, Hh, N, N), or a function of the queries q
        (B, Hh, N, hd) that returns one. `out`, a dict, collects the attention weights under
        "attention"."""
        B, N, D = x.shape
        Hh, hd = self.num_heads, self.head_dim
        qkv = self.qkv(x)  # (B, N, 3D)
        qkv = qkv.reshape(B, N, 3, Hh, hd).transpose(2, 0, 3, 1, 4)  # (3, B, Hh, N, hd)
        q, k, v = qkv.unbind(0)  # (B, Hh, N, hd) each, views
        if out is None and bias is None and not (self.training and self.attn_drop.p):
            y = F.scaled_dot_product_attention(q, k, v, self.scale)  # fused kernel, no (N, N) matrix kept
        else:  # the same attention composed, where the weights are needed
            logits = (q @ k.transpose(0, 1, 3, 2)) * self.scale  # (B, Hh, N, N)
            if callable(bias):
                bias = bias(q)  # a bias that depends on the query (posemb "relative_1d")
            att = F.softmax(logits if bias is None else logits + bias)  # (B, Hh, N, N), rows sum to 1
            _keep(out, "attention", att)
            y = self.attn_drop(att) @ v  # (B, Hh, N, hd)
        y = y.transpose(0, 2, 1, 3).reshape(B, N, D)  # (B, N, D): the heads side by side again
        return self.proj_drop(self.proj(y))


class Mlp(nn.Module):
    def __init__(self, cfg, dtype):
        super().__init__()
        hidden = int(cfg.embed_dim * cfg.mlp_ratio)
        self.fc1 = nn.Linear(cfg.embed_dim, hidden, dtype=dtype)
        self.fc2 = nn.Linear(hidden, cfg.embed_dim, dtype=dtype)
        self.drop = nn.Dropout(cfg.drop_rate)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))  # (B, N, D) -> (B, N, D * mlp_ratio) -> (B, N, D)


class Block(nn.Module):
    """Pre-norm transformer block (Eq. 2-3): x + MSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, cfg, dtype, drop_path=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, cfg.norm_eps, dtype)
        self.attn = Attention(cfg, dtype)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, cfg.norm_eps, dtype)
        self.mlp = Mlp(cfg, dtype)
        self.drop_path = nn.DropPath(drop_path)

    def forward(self, x, attn_bias=None, out=None):
        x = x + self.drop_path(self.attn(self.norm1(x), attn_bias, out))  # z'_l (Eq. 2)
        x = x + self.drop_path(self.mlp(self.norm2(x)))  # z_l (Eq. 3)
        _keep(out, "blocks", x)
        return x


class ViT(nn.Module):
    """Vision Transformer. Takes timm's `VisionTransformer` keyword names (see ViTConfig), or
    a `config=ViTConfig(...)`. Input: float images (B, C, H, W), NumPy array or Tensor; output:
    logits (B, K) as a Tensor.

    `model(x, out=d)` also fills the dict d with the named intermediates of that same forward
    pass, as arrays (as big_vision's ViT does): "patch_tokens" (B, Np, D), "with_posemb" (B, N, D),
    "blocks" (L arrays (B, N, D)), "attention" (L arrays (B, Hh, N, N) of weights), "encoded"
    (B, N, D), "pre_logits" (B, D) and "logits" (B, K). Asking for them runs attention composed
    instead of fused (the weights must exist to be kept)."""

    def __init__(self, config: ViTConfig | None = None, dtype=np.float32, **kwargs):
        super().__init__()
        if config is not None and kwargs:
            raise TypeError("pass either config= or keyword options, not both")
        # A copy: reset_classifier changes the model's config, never the caller's.
        cfg = dataclasses.replace(config) if config is not None else ViTConfig.from_dict(kwargs)
        self.config, self.dtype = cfg, np.dtype(dtype)
        _check_fits_in_memory(cfg, self.dtype)
        D = cfg.embed_dim
        self.grid_size = cfg.grid_size  # (gh, gw)
        self.num_prefix_tokens = 1 if cfg.class_token else 0
        self.num_tokens = self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]  # N

        self.patch_embed = PatchEmbed(cfg, dtype)
        if cfg.class_token:
            self.cls_token = nn.Parameter(nn.trunc_normal((1, 1, D), dtype=dtype), no_weight_decay=True)  # (1, 1, D)
        self.posemb = posemb.create(cfg, self.grid_size, self.num_prefix_tokens, dtype)
        for name, p in self.posemb.params.items():
            setattr(self, name, p)  # registered under timm's names: pos_embed (1, N, D), ...
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        rates = np.linspace(0, cfg.drop_path_rate, cfg.depth)  # stochastic depth grows with depth
        self.blocks = nn.ModuleList(Block(cfg, dtype, float(r)) for r in rates)
        use_fc_norm = cfg.global_pool == "avg" if cfg.fc_norm is None else cfg.fc_norm  # norm after pooling
        self.norm = nn.Identity() if use_fc_norm else nn.LayerNorm(D, cfg.norm_eps, dtype)
        self.fc_norm = nn.LayerNorm(D, cfg.norm_eps, dtype) if use_fc_norm else nn.Identity()
        if cfg.representation_size:
            self.pre_logits = nn.Module()
            self.pre_logits.fc = nn.Linear(D, cfg.representation_size, dtype=dtype)
        self.head = self._zero_head(cfg.representation_size or D, cfg.num_classes, dtype)

    @staticmethod
    def _zero_head(in_features, num_classes, dtype):
        if num_classes <= 0:
            return nn.Identity()
        head = nn.Linear(in_features, num_classes, dtype=dtype)
        head.weight.data[:] = 0  # zero-initialised head (Section 3.1, fine-tuning)
        return head

    # ---- the forward pass ----------------------------------------------------------------------
    def forward_features(self, x, out=None):
        """Images (B, C, H, W) -> encoded tokens (B, N, D): Eq. 1-3 and the final LayerNorm."""
        x = self.patch_embed(self._check_input(x))  # (B, Np, D): x_p^i E
        _keep(out, "patch_tokens", x)
        if self.config.class_token:
            cls = broadcast_to(self.cls_token, (x.shape[0], 1, x.shape[2]))  # (B, 1, D): x_class
            x = concatenate([cls, x], axis=1)  # (B, N, D)
        x = self.pos_drop(self.posemb.add(x, layer=0))  # z_0 = [x_class; x_p E] + E_pos (Eq. 1)
        _keep(out, "with_posemb", x)
        # Training only: each image keeps a random subset of its patch tokens (timm's patch_drop).
        x = F.patch_dropout(x, self.config.patch_drop_rate, self.num_prefix_tokens, self.training)
        for i, block in enumerate(self.blocks):
            if i > 0:
                x = self.posemb.add(x, layer=i)  # only App. D.4's "every block" variants add E_pos again
            x = block(x, self.posemb.attention_bias(i), out)  # z_l (Eq. 2-3)
        x = self.norm(x)  # (B, N, D)
        _keep(out, "encoded", x)
        return x

    def forward_head(self, x, pre_logits=False) -> Tensor:
        """Tokens (B, N, D) -> logits (B, K); with pre_logits=True the image representation the head
        reads, (B, D) or (B, representation_size). A Tensor in every case (as timm's), also for an
        array x and a model without a head (num_classes=0)."""
        x = x if isinstance(x, Tensor) else Tensor(x)
        if self.config.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(axis=1)  # (B, D): mean of the patch tokens
        else:
            x = x[:, 0]  # (B, D): the class token, y = LN(z_L^0) of Eq. 4
        x = self.fc_norm(x)
        if self.config.representation_size:
            x = self.pre_logits.fc(x).tanh()  # (B, representation_size)
        return x if pre_logits else self.head(x)

    def forward(self, x, out=None):
        """Images (B, C, H, W) -> logits (B, K); `out` (a dict) collects the intermediates."""
        x = self.forward_head(self.forward_features(x, out), pre_logits=True)  # (B, D)
        _keep(out, "pre_logits", x)
        x = self.head(x)  # (B, K)
        _keep(out, "logits", x)
        return x

    def _check_input(self, x):
        data = x.data if isinstance(x, Tensor) else x if _device.device_of(x) == "gpu" else np.asarray(x)
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
        if data.dtype.kind not in "fiub":
            raise TypeError(f"expected images as numbers (float32), got dtype {data.dtype}")
        if isinstance(x, Tensor):
            return x if x.dtype == self.dtype else x.astype(self.dtype)
        return data.astype(self.dtype, copy=False)

    # ---- the rest ------------------------------------------------------------------------------
    def position_embedding(self):
        """The absolute position embedding (N, D) as an array (for the "every block" variant the
        first block's), or None where there is none (no embedding, or a relative kind)."""
        return self.posemb.table()

    def astype(self, dtype):
        """Cast parameters, inputs and any fixed table (sin-cos) to `dtype` (e.g. float64)."""
        super().astype(dtype)
        self.dtype = np.dtype(dtype)
        self.posemb.astype(dtype)
        return self

    def set_img_size(self, img_size):
        """Take img_size x img_size images from now on, with the same patch size and weights (for
        training at a low resolution first; `minivit.train.resolution`). The patch grid changes,
        and the position embedding moves to it as its kind says (posemb.KINDS[...].resize: a
        learned table resampled bilinearly, the class token's row kept, as for fine-tuning at a
        higher resolution, Sec. 3.2; a sin-cos table recomputed). Its Parameters stay the same
        objects (an optimizer holds them), with new arrays."""
        cfg = self.config
        kind = posemb.kind_of(cfg.pos_embed)
        if not kind.resizes:
            raise ValueError(f"set_img_size supports pos_embed in {posemb.resizable()}, not {cfg.pos_embed!r}")
        new = dataclasses.replace(cfg, img_size=img_size)  # a ValueError if the patches do not tile it
        old_grid, prefix, params = self.grid_size, self.num_prefix_tokens, self.posemb.params
        resized = kind.resize({name: _device.to_host(p.data) for name, p in params.items()},
                              old_grid, new.grid_size, prefix)
        self.config, self.grid_size = new, new.grid_size
        self.num_tokens = prefix + self.grid_size[0] * self.grid_size[1]
        self.posemb = posemb.create(new, self.grid_size, prefix, self.dtype, params=params)  # constants for the grid
        for name, p in params.items():
            p.data = _device.to_device(resized[name], _device.device_of(p.data))
        self.to(_device.device_of(self.parameters()[0].data))  # new constants (a table, an index) where the weights are
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


# ---- mimetic initialisation ----------------------------------------------------------------------
def mimetic_init(model, rng, alpha1=0.7, beta1=0.7, alpha2=0.4, beta2=0.4):
    """Initialise every block's attention as Trockman & Kolter, "Mimetic Initialization of
    Self-Attention Layers" (ICML 2023) do, so that it starts looking like the attention of a
    pre-trained ViT: per head h the query-key product, and over all heads the value-output
    product, are set to a small random matrix plus or minus the identity,

        W_q^h W_k^h^T ~ alpha1 Z_h + beta1 I    (D, D): a token attends to tokens like itself
        W_v W_proj    ~ alpha2 Z   - beta2 I    (D, D): attention subtracts what it averages,

    with Z entries drawn from N(0, 1/D). Each product is factored by its SVD, M = U S V^T:
    W_q^h = U_hd S_hd^1/2 and W_k^h = V_hd S_hd^1/2 from the top hd singular values (the best
    rank-hd fit, hd = D / Hh), W_v = U S^1/2 and W_proj = S^1/2 V^T (exact, full rank). Here x is a
    row, q = x W_q, so the (out, in) Linear weights hold the transposes. Biases stay zero; all
    other weights keep their init. The alphas and betas are options to tune (TrainConfig's
    init="mimetic" takes these defaults). rng: a NumPy Generator (the library's, for
    reproducibility)."""
    for block in model.blocks:
        attn = block.attn
        qkv, proj = attn.qkv.weight, attn.proj.weight  # (3D, D) rows [q; k; v]; (D, D)
        D, hd = proj.shape[0], attn.head_dim
        eye = np.eye(D)
        for h in range(attn.num_heads):
            U, S, Vt = np.linalg.svd(alpha1 * rng.standard_normal((D, D)) / np.sqrt(D) + beta1 * eye)
            root = np.sqrt(S[:hd])
            qkv.data[h * hd:(h + 1) * hd] = (U[:, :hd] * root).T.astype(qkv.data.dtype)  # W_q^h^T (hd, D)
            qkv.data[D + h * hd:D + (h + 1) * hd] = (Vt[:hd].T * root).T.astype(qkv.data.dtype)  # W_k^h^T
        U, S, Vt = np.linalg.svd(alpha2 * rng.standard_normal((D, D)) / np.sqrt(D) - beta2 * eye)
        qkv.data[2 * D:] = (U * np.sqrt(S)).T.astype(qkv.data.dtype)  # W_v^T (D, D)
        proj.data[:] = (np.sqrt(S)[:, None] * Vt).T.astype(proj.data.dtype)  # W_proj^T (D, D)
    return model
