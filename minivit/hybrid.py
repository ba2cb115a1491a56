"""The hybrid ViT (ViT paper, Sec. 3.1 "Hybrid Architecture"): the input sequence is taken from a
CNN's feature map instead of raw image patches, with patches of 1x1 feature-map positions, and
the rest of the model is the ViT of vit.py unchanged (class token, position embeddings, Eq. 1-4).

    z_0 = [x_class; f^1 E; ...; f^Np E] + E_pos,   f^i = position i of ResNet(x), (B, Cf, gh, gw)

The CNN is the BiT ResNetV2 of resnet.py in its post-activation form (timm's `_resnetv2` backbone:
Bottleneck blocks, TF "same" padding, weight-standardized convs, GroupNorm). Sec. 4.1 gives two
ways to choose the sequence length from an R50 (layers 3, 4, 6, 3):
    (i)  the output of stage 4: a /32 feature map (timm's vit_large_r50_s32_224: 7 x 7 = 49 tokens)
    (ii) stage 4 removed and its 3 blocks moved into stage 3 (layers 3, 4, 9): a /16 map, a 4x
         longer sequence and a more expensive ViT (timm's vit_base_r50_s16_224: 14 x 14 = 196)
CIFAR-sized hybrids (variants.py) use a 3x3 stride-1 stem, so three stages give a /4 map, the
8 x 8 grid of a ViT with 4 x 4 patches on 32 x 32 images.

Names follow timm's hybrid VisionTransformer: patch_embed.backbone.{stem, stages}.* (the ResNet,
without norm or head), patch_embed.proj.weight (D, Cf, P, P) and .bias, then cls_token, pos_embed,
blocks.*, norm, head as in vit.py.

Shape letters: B batch, C channels, H/W image size, Cf the CNN's feature channels, gh/gw the
feature grid (over P), Np = gh*gw tokens from the CNN, N = 1 + Np, D width.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import nn
from .resnet import ResNetV2, ResNetV2Config
from .vit import PatchProjection, ViT, ViTConfig, _check_number


@dataclass
class HybridConfig(ViTConfig):
    """A ViTConfig (patch_size counts feature-map positions, 1 by default) plus the ResNet backbone."""

    arch: str = "hybrid"
    patch_size: int = 1
    backbone_layers: tuple = (3, 4, 9)  # (ii) of Sec. 4.1; (3, 4, 6, 3) is (i)
    backbone_channels: tuple = (256, 512, 1024, 2048)
    backbone_width: int = 1  # width factor
    backbone_stem_chs: int = 64
    backbone_stem: str = "same"  # "same" as timm's hybrids; "cifar": a 3x3 stride-1 conv, no pooling
    backbone_groups: int = 32

    def __post_init__(self):
        if self.arch != "hybrid":
            raise ValueError(f"a HybridConfig has arch='hybrid', got {self.arch!r}")
        self.backbone_layers, self.backbone_channels = tuple(self.backbone_layers), tuple(self.backbone_channels)
        _check_number("patch_size", self.patch_size, integer=True, low=1)
        patch, self.patch_size = self.patch_size, 1  # the ViT's checks, but patches tile the feature map,
        try:  # not the image: its "img_size divisible by patch_size" does not apply
            super().__post_init__()
        finally:
            self.patch_size = patch
        feature = self.backbone().feature_size()
        if feature % self.patch_size:
            raise ValueError(f"the {feature}x{feature} feature map is not divisible by patch_size {self.patch_size}")

    def backbone(self) -> ResNetV2Config:
        """The ResNet's config (no head, post-activation blocks); a ValueError for bad backbone options."""
        return ResNetV2Config(layers=self.backbone_layers, channels=self.backbone_channels,
                              width_factor=self.backbone_width, stem_chs=self.backbone_stem_chs,
                              stem_type=self.backbone_stem, preact=False, num_groups=self.backbone_groups,
                              num_classes=0, in_chans=self.in_chans, img_size=self.img_size)

    @property
    def grid_size(self):
        return (self.backbone().feature_size() // self.patch_size,) * 2

    def num_parameters(self) -> int:
        """The ViT's count with the projection reading the CNN's Cf channels, plus the CNN's."""
        backbone = self.backbone()
        Cf, C = backbone.stage_widths[-1], self.in_chans
        vit = super().num_parameters() + self.embed_dim * (Cf - C) * self.patch_size ** 2
        return vit + backbone.num_parameters()


class HybridEmbed(nn.Module):
    """Images (B, C, H, W) -> the ResNet's feature map (B, Cf, gh*P, gw*P) -> tokens (B, Np, D)."""

    def __init__(self, cfg: HybridConfig, dtype):
        super().__init__()
        self.backbone = ResNetV2(cfg.backbone(), dtype=dtype)
        self.proj = PatchProjection(self.backbone.num_features, cfg.embed_dim, cfg.patch_size, dtype)

    def forward(self, x):
        return self.proj(self.backbone.forward_features(x))  # (B, Np, D): 1x1 "patches" of the feature map


class HybridViT(ViT):
    """ViT on a ResNet feature map. Takes HybridConfig's keywords or `config=`; everything else,
    including `model(x, out=d)`, is the ViT's ("patch_tokens" are the projected CNN features)."""

    def __init__(self, config: HybridConfig | None = None, dtype="float32", **kwargs):
        if config is None:
            config = HybridConfig.from_dict(kwargs)
        elif kwargs:
            raise TypeError("pass either config= or keyword options, not both")
        super().__init__(config=config, dtype=dtype)
        self.patch_embed = HybridEmbed(self.config, dtype)  # replaces the ViT's image-patch embedding
