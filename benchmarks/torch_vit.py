"""A plain PyTorch ViT with timm's parameter names, used only as the reference in benchmarks
(minivit itself never imports torch). Same math as minivit.ViT: pre-norm blocks, exact GELU,
LayerNorm eps 1e-6, class token or average pooling."""
import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim, heads, qkv_bias):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, Hh, T, hd)
        return self.proj(out.transpose(1, 2).reshape(B, T, D))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, qkv_bias):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, in_chans, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class TorchViT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        D, grid = cfg.embed_dim, cfg.img_size // cfg.patch_size
        self.patch_embed = PatchEmbed(cfg.in_chans, D, cfg.patch_size)
        prefix = 1 if cfg.class_token else 0
        if cfg.class_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, prefix + grid * grid, D))
        self.blocks = nn.ModuleList(Block(D, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias) for _ in range(cfg.depth))
        if cfg.global_pool == "avg":
            self.fc_norm = nn.LayerNorm(D, eps=1e-6)
        else:
            self.norm = nn.LayerNorm(D, eps=1e-6)
        self.head = nn.Linear(D, cfg.num_classes)

    def forward(self, x):
        x = self.patch_embed(x)
        if self.cfg.class_token:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        if self.cfg.global_pool == "avg":
            x = self.fc_norm(x[:, 1 if self.cfg.class_token else 0:].mean(dim=1))
        else:
            x = self.norm(x)[:, 0]
        return self.head(x)


def from_minivit(model):
    """A TorchViT holding the same weights as a minivit ViT."""
    tm = TorchViT(model.config)
    tm.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
    return tm
