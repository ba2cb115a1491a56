"""Axial-ViT (ViT paper, Appendix D.6, Fig. 13): self-attention along one axis of the patch grid at a
time (axial attention, Ho et al. 2019; Wang et al. 2020). Each Transformer block of the ViT is
replaced by two blocks of vit.py's kind, the first attending along rows, the second along columns:

    z'_l = RowBlock(z_{l-1}):  every row of the gh x gw grid is a sequence of gw tokens
    z_l  = ColBlock(z'_l):     every column is a sequence of gh tokens
    (each Block is pre-norm attention + MLP with residuals, Eq. 2-3, with its own weights)

A token then reaches every other in two steps (its row, then that token's column), and attention
costs gh*gw*(gh + gw) scores per head instead of (gh*gw)^2; the paper finds Axial-ViT better than
ViT at the same configuration, at the cost of more compute (two blocks per layer).

The class token: it lies on no row and no column, so Axial-ViT has none; the image representation
is the mean of the final patch tokens (global average pooling, `global_pool="avg"`, the final
LayerNorm after the pooling as timm's fc_norm). Position embeddings are added once at the input as
in the ViT (learned 1D by default); the relative kinds ("relative_1d", "relative_bias_2d"), biases
over (N, N) token pairs, do not apply to row and column sequences and are refused.

Names: blocks.{i}.row.* and blocks.{i}.col.*, each with vit.Block's norm1, attn.qkv, attn.proj,
norm2, mlp.fc1, mlp.fc2; the rest as in vit.py.

Shape letters: B batch, gh/gw the patch grid, Np = gh*gw patches (= N: no prefix token), D width,
Hh heads.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from . import nn, posemb
from .vit import Block, ViT, ViTConfig


@dataclass
class AxialConfig(ViTConfig):
    arch: str = "axial"
    class_token: bool = False
    global_pool: str = "avg"

    def __post_init__(self):
        if self.arch != "axial":
            raise ValueError(f"an AxialConfig has arch='axial', got {self.arch!r}")
        if self.class_token:
            raise ValueError("Axial-ViT has no class token (it lies on no row or column); "
                             "it pools the patch tokens (global_pool='avg')")
        if self.patch_drop_rate:
            raise ValueError("Axial-ViT attends along the rows and columns of the full patch grid; patch_drop_rate "
                             f"would leave holes in it (got {self.patch_drop_rate}; use 0: --patch-drop-rate 0 after a "
                             "recipe that sets it)")
        super().__post_init__()  # resolves an old pos_embed name ("relative") to its new one
        if posemb.kind_of(self.pos_embed).relative:
            usable = [name for name, kind in posemb.KINDS.items() if not kind.relative]
            raise ValueError(f"pos_embed={self.pos_embed!r} biases the attention logits of (N, N) token pairs; "
                             f"Axial-ViT attends along rows and columns, use one of {usable}")

    def num_parameters(self) -> int:
        """The ViT's count with two blocks (row and column) per layer."""
        one, two = (ViTConfig.num_parameters(dataclasses.replace(self, depth=d)) for d in (1, 2))
        return super().num_parameters() + self.depth * (two - one)


class AxialBlock(nn.Module):
    """A row block and a column block: attention + MLP along each axis of the (gh, gw) grid in turn."""

    def __init__(self, cfg, grid, dtype, drop_path=0.0):
        super().__init__()
        self.grid = grid
        self.row = Block(cfg, dtype, drop_path)
        self.col = Block(cfg, dtype, drop_path)

    def forward(self, x, attn_bias=None, out=None):
        """x (B, Np, D) in raster order -> (B, Np, D). `out` collects "row_attention"
        (B*gh, Hh, gw, gw) and "col_attention" (B*gw, Hh, gh, gh) weights and "blocks"."""
        B, Np, D = x.shape
        gh, gw = self.grid
        inner = None if out is None else {}  # the Blocks' own records, renamed below
        x = x.reshape(B * gh, gw, D)  # (B*gh, gw, D): each row of the grid one sequence
        x = self.row(x, None, inner)
        x = x.reshape(B, gh, gw, D).transpose(0, 2, 1, 3).reshape(B * gw, gh, D)  # (B*gw, gh, D): columns
        x = self.col(x, None, inner)
        x = x.reshape(B, gw, gh, D).transpose(0, 2, 1, 3).reshape(B, Np, D)  # raster order again
        if out is not None:
            out.setdefault("row_attention", []).append(inner["attention"][0])
            out.setdefault("col_attention", []).append(inner["attention"][1])
            out.setdefault("blocks", []).append(x.data)
        return x


class AxialViT(ViT):
    """ViT whose blocks attend along rows, then columns. Takes AxialConfig's keywords or `config=`;
    `model(x, out=d)` fills the ViT's intermediates, with "row_attention" and "col_attention"
    (one array per layer) in place of "attention"."""

    def __init__(self, config: AxialConfig | None = None, dtype="float32", **kwargs):
        if config is None:
            config = AxialConfig.from_dict(kwargs)
        elif kwargs:
            raise TypeError("pass either config= or keyword options, not both")
        super().__init__(config=config, dtype=dtype)
        rates = np.linspace(0, self.config.drop_path_rate, self.config.depth)
        self.blocks = nn.ModuleList(AxialBlock(self.config, self.grid_size, dtype, float(r)) for r in rates)
