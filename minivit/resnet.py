"""ResNetV2 as BiT builds it (Kolesnikov et al. 2020): the ResNets of the ViT paper (Sec. 4.1,
"ResNet (BiT)") and the CNN whose feature map feeds a hybrid ViT (Sec. 3.1, minivit/hybrid.py).

    stem     a 7x7 stride-2 conv, then 3x3 stride-2 max pooling: /4 (a CIFAR stem: one 3x3 conv, /1)
    stages   bottleneck blocks: 1x1 conv to width/4, 3x3 conv (stride 2 in a stage's first block,
             but the first stage's), 1x1 conv back to width; the first block of each stage projects
             its shortcut with a strided 1x1 conv (`downsample`)
    head     the final norm, global average pooling, a linear layer (a 1x1 conv in timm: head.fc)

Every conv is weight-standardized (Qiao et al. 2019: each output channel's weights shifted and
scaled to zero mean and unit variance before use) and every norm is a GroupNorm (Wu & He 2018)
followed by ReLU: BiT's replacement for BatchNorm, independent of the batch size. Two block kinds:

    PreActBottleneck (He et al. 2016b, BiT's classifier, preact=True):
        x' = relu(GN1(x));  out = conv3(relu(GN3(conv2(relu(GN2(conv1(x'))))))) + shortcut(x' or x)
    Bottleneck (the hybrid ViT's backbone, preact=False): conv -> GN -> ReLU, the third GN without
        ReLU, the residual added, then ReLU; the projection shortcut is conv + GN.

Names and shapes follow timm's `ResNetV2` (stem.conv.weight (O, C, 7, 7), stages.{i}.blocks.{j}.
{downsample.conv, norm1, conv1, norm2, conv2, norm3, conv3}, norm, head.fc.weight (K, C, 1, 1)), so
a timm state dict loads with `load_state_dict` and gives the same logits (tests/test_resnet.py).
Differences from timm: the classifier starts at zero (as the ViT's head and BiT's fine-tuning head;
timm draws N(0, 0.01)), and stem_type "cifar" (a 3x3 stride-1 conv, no pooling) is minivit's.

Shape letters: B batch, C channels, H/W height/width, K classes; O output channels, kh/kw kernel.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass

import numpy as np

from . import functional as F
from . import nn, rng
from .autograd import Tensor
from .vit import _check_number, _keep, config_from_dict

STEM_TYPES = ("fixed", "same", "", "cifar")  # fixed: BiT's; same: TF padding (hybrid); "": PyTorch's


def make_divisible(v, divisor=8):
    """timm's channel rounding: the nearest multiple of 8, never below 90% of v."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


@dataclass
class ResNetV2Config:
    arch: str = "resnetv2"  # the family, so that a saved config says which model it builds
    layers: tuple = (3, 4, 6, 3)  # blocks per stage (ResNet-50)
    channels: tuple = (256, 512, 1024, 2048)  # output width of each stage, before width_factor
    width_factor: int = 1  # BiT's R50x1, R50x3, ...
    stem_chs: int = 64
    stem_type: str = "fixed"  # one of STEM_TYPES
    preact: bool = True  # PreActBottleneck (BiT) or Bottleneck (hybrid backbone)
    num_groups: int = 32  # GroupNorm groups
    norm_eps: float = 1e-5  # GroupNorm eps (PyTorch's default, as timm's GroupNormAct)
    ws_eps: float = 1e-8  # weight standardization eps (timm's BiT models pass 1e-8)
    bottle_ratio: float = 0.25
    num_classes: int = 1000  # 0: no head
    in_chans: int = 3
    img_size: int = 224  # the size it is built for (FLOP counts, the hybrid's sequence length)

    def __post_init__(self):
        if self.arch != "resnetv2":
            raise ValueError(f"a ResNetV2Config has arch='resnetv2', got {self.arch!r}")
        self.layers, self.channels = tuple(self.layers), tuple(self.channels)
        if not self.layers or len(self.channels) < len(self.layers):
            raise ValueError(f"layers {self.layers} need one width each in channels {self.channels}")
        for n in self.layers + self.channels:
            _check_number("layers and channels", n, integer=True, low=1)
        for name in ("width_factor", "stem_chs", "num_groups", "in_chans", "img_size"):
            _check_number(name, getattr(self, name), integer=True, low=1)
        _check_number("num_classes", self.num_classes, integer=True, low=0)
        for name in ("norm_eps", "ws_eps", "bottle_ratio"):
            _check_number(name, getattr(self, name), low=0, low_open=True)
        if self.stem_type not in STEM_TYPES:
            raise ValueError(f"stem_type must be one of {STEM_TYPES}, got {self.stem_type!r}")
        widths = [self.stem_width] + [w for c in self.stage_widths for w in (c, make_divisible(c * self.bottle_ratio))]
        bad = sorted({w for w in widths if w % self.num_groups})
        if bad:
            raise ValueError(f"GroupNorm with num_groups={self.num_groups} needs every width divisible by it; "
                             f"these are not: {bad}")

    @property
    def stem_width(self):
        return make_divisible(self.stem_chs * self.width_factor)

    @property
    def stage_widths(self):
        return [make_divisible(c * self.width_factor) for c in self.channels[:len(self.layers)]]

    @property
    def reduction(self):
        """How many input pixels one feature-map position spans: the stem's /4 (/1 for "cifar") times 2
        for every stage after the first."""
        return (1 if self.stem_type == "cifar" else 4) * 2 ** (len(self.layers) - 1)

    def feature_size(self, size=None):
        """Side of the final feature map for an input side `size` (default img_size): every stride-2
        conv and pool here gives ceil(n / 2)."""
        n = self.img_size if size is None else size
        for _ in range(int(math.log2(self.reduction))):
            n = -(-n // 2)
        return n

    def num_parameters(self) -> int:
        """The learned numbers of a ResNetV2 with this config, counted from the shapes."""
        stem_k = 3 if self.stem_type == "cifar" else 7
        total = self.in_chans * self.stem_width * stem_k ** 2 + (0 if self.preact else 2 * self.stem_width)
        c_in = self.stem_width
        for depth, c_out in zip(self.layers, self.stage_widths):
            mid = make_divisible(c_out * self.bottle_ratio)
            total += c_in * c_out + (0 if self.preact else 2 * c_out)  # the first block's projection shortcut
            for j in range(depth):
                c = c_in if j == 0 else c_out
                convs = c * mid + mid * mid * 9 + mid * c_out
                norms = 2 * (c + 2 * mid) if self.preact else 2 * (2 * mid + c_out)
                total += convs + norms
            c_in = c_out
        head = c_in * self.num_classes + self.num_classes if self.num_classes > 0 else 0
        return total + (2 * c_in if self.preact else 0) + head  # final norm (pre-activation only), head

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return config_from_dict(cls, d, "ResNetV2")


# ---- layers --------------------------------------------------------------------------------

class StdConv2d(nn.Module):
    """A bias-free conv whose weight (O, C, kh, kw) is standardized per output channel at every call
    (timm's StdConv2d; padding "same" as StdConv2dSame). Init: He normal, fan-out."""

    def __init__(self, in_chs, out_chs, kernel_size, stride=1, padding=None, eps=1e-8, dtype=np.float32):
        super().__init__()
        self.stride, self.eps = stride, eps
        self.padding = ((stride - 1) + (kernel_size - 1)) // 2 if padding is None else padding  # timm's get_padding
        std = math.sqrt(2.0 / (out_chs * kernel_size * kernel_size))
        self.weight = nn.Parameter((rng.generator().standard_normal(
            (out_chs, in_chs, kernel_size, kernel_size)) * std).astype(dtype))  # (O, C, kh, kw)

    def forward(self, x):
        return F.conv2d(x, F.weight_standardize(self.weight, self.eps), None, self.stride, self.padding)

    def extra_repr(self):
        O, C, kh, _ = self.weight.shape
        return f"{C}, {O}, kernel_size={kh}, stride={self.stride}, padding={self.padding!r}"


class GroupNormAct(nn.Module):
    """GroupNorm, then ReLU unless act=False (timm's GroupNormAct): weight, bias (C,)."""

    def __init__(self, channels, groups, eps=1e-5, act=True, dtype=np.float32):
        super().__init__()
        self.groups, self.eps, self.act = groups, eps, act
        self.weight = nn.Parameter(np.ones(channels, dtype=dtype))
        self.bias = nn.Parameter(np.zeros(channels, dtype=dtype))

    def forward(self, x):
        return F.group_norm(x, self.weight, self.bias, self.groups, self.eps, relu=self.act)  # one fused kernel

    def extra_repr(self):
        return f"{self.weight.shape[0]}, groups={self.groups}, act={self.act}"


# ---- blocks --------------------------------------------------------------------------------

class Downsample(nn.Module):
    """The projection shortcut: a strided 1x1 conv (+ GroupNorm without ReLU when not pre-activated)."""

    def __init__(self, in_chs, out_chs, stride, cfg, padding, dtype):
        super().__init__()
        self.conv = StdConv2d(in_chs, out_chs, 1, stride, padding, cfg.ws_eps, dtype)
        self.norm = nn.Identity() if cfg.preact else GroupNormAct(out_chs, cfg.num_groups, cfg.norm_eps, False, dtype)

    def forward(self, x):
        return self.norm(self.conv(x))


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: the norms come before the convs, the shortcut stays unnormalised."""

    def __init__(self, in_chs, out_chs, stride, cfg, project, padding=None, dtype=np.float32):
        super().__init__()
        mid, g, eps, ws = make_divisible(out_chs * cfg.bottle_ratio), cfg.num_groups, cfg.norm_eps, cfg.ws_eps
        self.downsample = Downsample(in_chs, out_chs, stride, cfg, padding, dtype) if project else None
        self.norm1 = GroupNormAct(in_chs, g, eps, dtype=dtype)
        self.conv1 = StdConv2d(in_chs, mid, 1, eps=ws, padding=padding, dtype=dtype)
        self.norm2 = GroupNormAct(mid, g, eps, dtype=dtype)
        self.conv2 = StdConv2d(mid, mid, 3, stride, padding, ws, dtype)
        self.norm3 = GroupNormAct(mid, g, eps, dtype=dtype)
        self.conv3 = StdConv2d(mid, out_chs, 1, eps=ws, padding=padding, dtype=dtype)

    def forward(self, x):  # (B, C, H, W) -> (B, O, H/stride, W/stride)
        x_preact = self.norm1(x)
        shortcut = x if self.downsample is None else self.downsample(x_preact)
        x = self.conv1(x_preact)
        x = self.conv2(self.norm2(x))
        x = self.conv3(self.norm3(x))
        return x + shortcut


class Bottleneck(nn.Module):
    """Post-activation bottleneck with GroupNorm (ResNet v1.5 order), the hybrid ViT's backbone."""

    def __init__(self, in_chs, out_chs, stride, cfg, project, padding=None, dtype=np.float32):
        super().__init__()
        mid, g, eps, ws = make_divisible(out_chs * cfg.bottle_ratio), cfg.num_groups, cfg.norm_eps, cfg.ws_eps
        self.downsample = Downsample(in_chs, out_chs, stride, cfg, padding, dtype) if project else None
        self.conv1 = StdConv2d(in_chs, mid, 1, eps=ws, padding=padding, dtype=dtype)
        self.norm1 = GroupNormAct(mid, g, eps, dtype=dtype)
        self.conv2 = StdConv2d(mid, mid, 3, stride, padding, ws, dtype)
        self.norm2 = GroupNormAct(mid, g, eps, dtype=dtype)
        self.conv3 = StdConv2d(mid, out_chs, 1, eps=ws, padding=padding, dtype=dtype)
        self.norm3 = GroupNormAct(out_chs, g, eps, act=False, dtype=dtype)

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.norm1(self.conv1(x))
        x = self.norm2(self.conv2(x))
        x = self.norm3(self.conv3(x))
        return F.relu(x + shortcut)


class Stage(nn.Module):
    def __init__(self, in_chs, out_chs, depth, stride, cfg, padding, dtype):
        super().__init__()
        block = PreActBottleneck if cfg.preact else Bottleneck
        self.blocks = nn.ModuleList(
            block(in_chs if j == 0 else out_chs, out_chs, stride if j == 0 else 1, cfg, project=j == 0,
                  padding=padding, dtype=dtype)
            for j in range(depth))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class Stem(nn.Module):
    """conv (+ GroupNorm and ReLU when not pre-activated), then max pooling: stem_type "fixed" pads the
    pool with zeros (BiT's ConstantPad2d(1, 0)), "same" with -inf by TF's rule, "" with -inf by one;
    "cifar" is a 3x3 stride-1 conv and no pool."""

    def __init__(self, cfg, dtype):
        super().__init__()
        self.kind = cfg.stem_type
        kernel, stride = (3, 1) if self.kind == "cifar" else (7, 2)
        padding = "same" if self.kind == "same" else None
        self.conv = StdConv2d(cfg.in_chans, cfg.stem_width, kernel, stride, padding, cfg.ws_eps, dtype)
        self.norm = nn.Identity() if cfg.preact else GroupNormAct(cfg.stem_width, cfg.num_groups, cfg.norm_eps,
                                                                 dtype=dtype)

    def forward(self, x):  # (B, C, H, W) -> (B, stem width, H/4, W/4), or H, W for "cifar"
        x = self.norm(self.conv(x))
        if self.kind == "fixed":
            return F.max_pool2d(x, 3, 2, padding=1, pad_value=0.0)
        if self.kind in ("same", ""):
            return F.max_pool2d(x, 3, 2, padding="same" if self.kind == "same" else 1)
        return x


# ---- the network ----------------------------------------------------------------------------

class ClassifierConv(nn.Module):
    """timm's head.fc: a 1x1 conv, weight (K, C, 1, 1), on the pooled (B, C, 1, 1) features; here the
    same numbers as a linear layer on (B, C). Starts at zero."""

    def __init__(self, in_chs, num_classes, dtype):
        super().__init__()
        self.weight = nn.Parameter(np.zeros((num_classes, in_chs, 1, 1), dtype=dtype))  # (K, C, 1, 1)
        self.bias = nn.Parameter(np.zeros(num_classes, dtype=dtype))

    def forward(self, x):  # (B, C) -> (B, K)
        K, C = self.weight.shape[:2]
        return F.linear(x, self.weight.reshape(K, C), self.bias)


class ResNetV2(nn.Module):
    """ResNetV2 with GroupNorm and weight standardization. Takes ResNetV2Config's keywords or
    `config=`. Input: float images (B, C, H, W); output: logits (B, K), or with num_classes=0 the
    pooled (B, C_final) features. `model(x, out=d)` fills d with "stem" (B, C, H/4, W/4), "stages"
    (one feature map per stage), "features" (after the final norm), "pre_logits" (B, C) and
    "logits" (B, K), as arrays."""

    def __init__(self, config: ResNetV2Config | None = None, dtype=np.float32, **kwargs):
        super().__init__()
        if config is not None and kwargs:
            raise TypeError("pass either config= or keyword options, not both")
        cfg = dataclasses.replace(config) if config is not None else ResNetV2Config.from_dict(kwargs)
        self.config, self.dtype = cfg, np.dtype(dtype)
        padding = "same" if cfg.stem_type == "same" else None  # the hybrid's convs pad as TF does
        self.stem = Stem(cfg, dtype)
        widths = [cfg.stem_width] + cfg.stage_widths
        self.stages = nn.ModuleList(
            Stage(widths[i], widths[i + 1], depth, 1 if i == 0 else 2, cfg, padding, dtype)
            for i, depth in enumerate(cfg.layers))
        self.num_features = widths[-1]
        self.norm = GroupNormAct(self.num_features, cfg.num_groups, cfg.norm_eps, dtype=dtype) if cfg.preact \
            else nn.Identity()
        self.head = nn.Module()
        self.head.fc = ClassifierConv(self.num_features, cfg.num_classes, dtype) if cfg.num_classes > 0 \
            else nn.Identity()

    def forward_features(self, x, out=None):
        """Images (B, C, H, W) -> the final feature map (B, C_final, H/32, W/32) for an R50."""
        x = self.stem(self._check_input(x))
        _keep(out, "stem", x)
        for stage in self.stages:
            x = stage(x)
            if out is not None:
                out.setdefault("stages", []).append(x.data)
        x = self.norm(x)
        _keep(out, "features", x)
        return x

    def forward_head(self, x, pre_logits=False) -> Tensor:
        """Feature map (B, C, h, w) -> logits (B, K): global average pooling, then head.fc; with
        pre_logits=True the pooled (B, C). A Tensor in every case, also for an array x."""
        x = x if isinstance(x, Tensor) else Tensor(x)
        x = x.mean(axis=(2, 3))  # (B, C)
        return x if pre_logits else self.head.fc(x)

    def forward(self, x, out=None):
        """Images (B, C, H, W) -> logits (B, K); `out` (a dict) collects the intermediates."""
        x = self.forward_head(self.forward_features(x, out), pre_logits=True)  # (B, C)
        _keep(out, "pre_logits", x)
        x = self.head.fc(x)  # (B, K)
        _keep(out, "logits", x)
        return x

    def _check_input(self, x):
        data = x.data if isinstance(x, Tensor) else np.asarray(x)
        if data.ndim != 4 or data.shape[1] != self.config.in_chans:
            raise ValueError(f"expected images of shape (B, {self.config.in_chans}, H, W), got {tuple(data.shape)}")
        if isinstance(x, Tensor):
            return x if x.dtype == self.dtype else x.astype(self.dtype)
        return data.astype(self.dtype, copy=False)

    def astype(self, dtype):
        super().astype(dtype)
        self.dtype = np.dtype(dtype)
        return self

    def reset_classifier(self, num_classes):
        """A new zero-initialised head for fine-tuning."""
        self.config.num_classes = num_classes
        self.head.fc = ClassifierConv(self.num_features, num_classes, self.dtype) if num_classes > 0 else nn.Identity()
        return self

    def extra_repr(self):
        c = self.config
        return f"layers={c.layers}, width_factor={c.width_factor}, preact={c.preact}, params={self.num_parameters():,}"
