"""Named ViT variants, decoded from a cited table (as big_vision's `decode_variant`).

The paper's Table 1 (Dosovitskiy et al. 2021):

    Model      Layers  Hidden D  MLP size  Heads   Params
    ViT-Base     12      768       3072     12        86M
    ViT-Large    24     1024       4096     16       307M
    ViT-Huge     32     1280       5120     16       632M

(the table gives no patch size; counted at 224 x 224 with 1,000 classes, B/16 has 86.6M, L/16
304.3M, L/32 306.5M, H/14 632.0M: tutorial 04 checks them)

plus Tiny and Small (Touvron et al. 2021, DeiT) at patch 14, 16 and 32 for 224x224 ImageNet
inputs, CIFAR-sized variants (32x32 inputs, patch 4, 10 classes), and a tiny `vit_testing`.

The paper's other systems are families of their own (FAMILIES below), named like timm's where
timm has them, each with CIFAR-sized and tiny testing variants:
    "resnetv2"  BiT ResNetV2 (Sec. 4.1): resnetv2_50x1_bit, ...      minivit/resnet.py
    "hybrid"    ResNet stem + ViT (Sec. 3.1): vit_base_r50_s16_224    minivit/hybrid.py
    "axial"     Axial-ViT (Appendix D.6): axial_vit_base_patch16_224  minivit/axial.py
`list_models()` lists the ViTs; `list_models(family="hybrid")` another family, family=None all.
`create_model(name)` builds any of them (the trainer's `create_model(cfg.model, **kw)` too), and
`model_from_config(config.to_dict())` rebuilds one from a saved config (its "arch" names the family).
"""
from __future__ import annotations

from .axial import AxialConfig, AxialViT
from .hybrid import HybridConfig, HybridViT
from .mpp import MaskedPatchPrediction, MPPConfig
from .resnet import ResNetV2, ResNetV2Config
from .vit import ViT, ViTConfig

# family -> (config class, model class); a config's "arch" field names its family ("vit" has none)
FAMILIES = {
    "vit": (ViTConfig, ViT),
    "resnetv2": (ResNetV2Config, ResNetV2),
    "hybrid": (HybridConfig, HybridViT),
    "axial": (AxialConfig, AxialViT),
    "mpp": (MPPConfig, MaskedPatchPrediction),  # a ViT with its masked-patch-prediction head (mpp.py)
}

# name: (depth, embed_dim, num_heads), mlp_ratio 4 everywhere
WIDTHS = {
    "tiny": (12, 192, 3),
    "small": (12, 384, 6),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
    "huge": (32, 1280, 16),
}

_MODELS: dict[str, tuple[str, dict]] = {}  # name -> (family, config)


def register_model(name: str, family: str = "vit", **config):
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; families: {', '.join(FAMILIES)}")
    FAMILIES[family][0](**config)  # validate now, not when someone asks for it
    _MODELS[name] = (family, config)


def _size(size):
    depth, dim, heads = WIDTHS[size]
    return dict(depth=depth, embed_dim=dim, num_heads=heads)


for _size_name in WIDTHS:
    for _patch in (14, 16, 32):
        register_model(f"vit_{_size_name}_patch{_patch}_224", img_size=224, patch_size=_patch,
                       num_classes=1000, **_size(_size_name))
for _size_name in ("tiny", "small", "base"):
    register_model(f"vit_{_size_name}_patch4_32", img_size=32, patch_size=4, num_classes=10, **_size(_size_name))

# The CIFAR benchmark model of the Numba issue: 6 blocks of width 192.
register_model("vit_cifar_patch4_32", img_size=32, patch_size=4, num_classes=10, embed_dim=192, depth=6, num_heads=3)
# Width 128, 6 blocks, MLP 256: a third of vit_cifar's FLOPs, for CIFAR runs of under an hour on 2 cores.
register_model("vit_mini_patch4_32", img_size=32, patch_size=4, num_classes=10, embed_dim=128, depth=6, num_heads=4,
               mlp_ratio=2.0)
# Small enough for `minivit demo` on procedural data in about two minutes on a laptop CPU.
register_model("vit_demo_patch4_32", img_size=32, patch_size=4, num_classes=10, embed_dim=96, depth=4, num_heads=3,
               mlp_ratio=2.0)
# `minivit demo`'s model: 16 patches of 8x8, 3 blocks of width 64; above 90% on procedural_easy in
# about a minute of a 2-core CPU.
register_model("vit_nano_patch8_32", img_size=32, patch_size=8, num_classes=10, embed_dim=64, depth=3, num_heads=4,
               mlp_ratio=2.0)
register_model("vit_testing", img_size=32, patch_size=8, num_classes=10, embed_dim=32, depth=2, num_heads=2)


# ---- ResNetV2 (BiT; Kolesnikov et al. 2020): the paper's ResNet baselines -------------------------
# name: (layers, width factor); BiT's stem ("fixed"), pre-activation blocks, 1000 classes at 224
for _name, _layers, _wf in (("resnetv2_50x1_bit", (3, 4, 6, 3), 1), ("resnetv2_50x3_bit", (3, 4, 6, 3), 3),
                            ("resnetv2_101x1_bit", (3, 4, 23, 3), 1), ("resnetv2_152x2_bit", (3, 8, 36, 3), 2)):
    register_model(_name, family="resnetv2", layers=_layers, width_factor=_wf)
# CIFAR: a 3x3 stride-1 stem, three stages at 32, 16 and 8 pixels; named by depth as ResNets are (1 stem
# + 3 convs a block + 1 head). resnetv2_20_cifar has vit_demo's FLOPs (46 M a 32x32 image), resnetv2_29_cifar
# about vit_mini's (98 M against 116 M)
register_model("resnetv2_20_cifar", family="resnetv2", layers=(2, 2, 2), channels=(48, 96, 192), stem_chs=24,
               stem_type="cifar", num_groups=4, num_classes=10, img_size=32)
register_model("resnetv2_29_cifar", family="resnetv2", layers=(3, 3, 3), channels=(64, 128, 256), stem_chs=32,
               stem_type="cifar", num_groups=8, num_classes=10, img_size=32)
register_model("resnetv2_testing", family="resnetv2", layers=(1, 1), channels=(32, 64), stem_chs=16,
               stem_type="cifar", num_groups=8, num_classes=10, img_size=32)

# ---- hybrids (Sec. 3.1): timm's names, vit_{size}_r{ResNet depth}_s{feature stride}_{image size} ----
# (ii) of Sec. 4.1, R50 with stage 4's blocks moved into stage 3: layers (3, 4, 9), /16
# (i)  the output of stage 4 of a regular R50: layers (3, 4, 6, 3), /32; R26: (2, 2, 2, 2), /32
_HYBRIDS = {  # name: (ViT size, backbone layers); all but vit_base_r50_s32_224 (the paper's R50+ViT-B/32) are timm's
    "vit_base_r50_s16_224": ("base", (3, 4, 9)), "vit_base_r50_s16_384": ("base", (3, 4, 9)),
    "vit_base_r50_s32_224": ("base", (3, 4, 6, 3)),
    "vit_large_r50_s32_224": ("large", (3, 4, 6, 3)), "vit_large_r50_s32_384": ("large", (3, 4, 6, 3)),
    "vit_small_r26_s32_224": ("small", (2, 2, 2, 2)), "vit_small_r26_s32_384": ("small", (2, 2, 2, 2)),
    "vit_base_r26_s32_224": ("base", (2, 2, 2, 2)),
}
for _name, (_size_name, _backbone) in _HYBRIDS.items():
    register_model(_name, family="hybrid", img_size=int(_name[-3:]), num_classes=1000, backbone_layers=_backbone,
                   **_size(_size_name))
# CIFAR: vit_demo's and vit_mini's transformers (MLP ratio 2) on small ResNets with a stride-1 stem;
# (ii) /4: layers (1, 1, 2), an 8x8 grid of 64 tokens; (i) /8: layers (1, 1, 1, 1), 4x4 = 16 tokens.
# One block fewer than the plain ViT (demo 3, mini 5), for the CNN's share of the FLOPs.
for _size_name, _width, _depth, _heads, _chs in (("demo", 96, 3, 3, (16, 32, 64, 128)),
                                                  ("mini", 128, 5, 4, (32, 64, 128, 256))):
    for _stride, _backbone in ((4, (1, 1, 2)), (8, (1, 1, 1, 1))):
        register_model(f"vit_{_size_name}_r14_s{_stride}_32", family="hybrid", img_size=32, num_classes=10,
                       embed_dim=_width, depth=_depth, num_heads=_heads, mlp_ratio=2.0, backbone_layers=_backbone,
                       backbone_channels=_chs, backbone_stem_chs=_chs[0] // 2, backbone_stem="cifar",
                       backbone_groups=4 if _size_name == "demo" else 8)
register_model("vit_testing_r11_s4_32", family="hybrid", img_size=32, num_classes=10, embed_dim=32, depth=2,
               num_heads=2, backbone_layers=(1, 1, 1), backbone_channels=(16, 32, 64), backbone_stem_chs=8,
               backbone_stem="cifar", backbone_groups=4)

# ---- Axial-ViT (Appendix D.6): each block a row block and a column block ---------------------------
for _patch in (16, 32):
    register_model(f"axial_vit_base_patch{_patch}_224", family="axial", img_size=224, patch_size=_patch,
                   num_classes=1000, **_size("base"))
# CIFAR: vit_demo's and vit_mini's widths with half their layers (each layer two blocks): about their FLOPs
register_model("axial_vit_demo_patch4_32", family="axial", img_size=32, patch_size=4, num_classes=10, embed_dim=96,
               depth=2, num_heads=3, mlp_ratio=2.0)
register_model("axial_vit_mini_patch4_32", family="axial", img_size=32, patch_size=4, num_classes=10, embed_dim=128,
               depth=3, num_heads=4, mlp_ratio=2.0)
register_model("axial_vit_testing", family="axial", img_size=32, patch_size=8, num_classes=10, embed_dim=32, depth=2,
               num_heads=2)


def list_models(pattern: str | None = None, family: str | None = "vit") -> list[str]:
    """Registered variant names of one family (default the ViTs; None: every family), sorted;
    `pattern` keeps names containing it (or fnmatch)."""
    import fnmatch

    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; families: {', '.join(FAMILIES)}")
    names = sorted(n for n, (f, _) in _MODELS.items() if family in (None, f))
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern) or pattern in n]
    return names


def family_of(name: str) -> str:
    return _entry(name)[0]


def _entry(name):
    if name not in _MODELS:
        import difflib

        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (every name: minivit.list_models(family=None))")
    return _MODELS[name]


def _family(name, overrides):
    """The family a variant is built as: its own, or "mpp" for a ViT given arch="mpp" (the named ViT
    with mpp.py's [mask] embedding and colour head, for masked patch prediction)."""
    family, config = _entry(name)
    if overrides.get("arch") == "mpp" and family == "vit":
        return "mpp", config
    return family, config


def model_config(name: str, **overrides):
    """The config of a named variant (ViTConfig, ResNetV2Config, HybridConfig, AxialConfig; an
    MPPConfig for a ViT with arch="mpp")."""
    family, config = _family(name, overrides)
    return FAMILIES[family][0].from_dict({**config, **overrides})


def create_model(name: str, dtype="float32", **overrides):
    """`create_model("vit_base_patch16_224", num_classes=10)`: a named variant with overrides;
    `create_model("vit_demo_patch4_32", arch="mpp", num_classes=None)` its masked patch predictor."""
    family, _ = _family(name, overrides)
    return FAMILIES[family][1](config=model_config(name, **overrides), dtype=dtype)


def model_from_config(config: dict, dtype="float32"):
    """The model a saved config describes (`model.config.to_dict()`), its family read from "arch"."""
    family = config.get("arch", "vit")
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r} in config; families: {', '.join(FAMILIES)}")
    config_cls, model_cls = FAMILIES[family]
    return model_cls(config=config_cls.from_dict(config), dtype=dtype)
