"""Named ViT variants, decoded from a cited table (as big_vision's `decode_variant`).

The paper's Table 1 (Dosovitskiy et al. 2021):

    Model      Layers  Hidden D  MLP size  Heads   Params (P=16, 224, 1000 classes)
    ViT-Base     12      768       3072     12        86M
    ViT-Large    24     1024       4096     16       307M
    ViT-Huge     32     1280       5120     16       632M

plus Tiny and Small (Touvron et al. 2021, DeiT) at patch 14, 16 and 32 for 224x224 ImageNet
inputs, CIFAR-sized variants (32x32 inputs, patch 4, 10 classes), and a tiny `vit_testing`.
"""
from __future__ import annotations

from .vit import ViT, ViTConfig

# name: (depth, embed_dim, num_heads), mlp_ratio 4 everywhere
WIDTHS = {
    "tiny": (12, 192, 3),
    "small": (12, 384, 6),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
    "huge": (32, 1280, 16),
}

_MODELS: dict[str, dict] = {}


def register_model(name: str, **config):
    ViTConfig(**config)  # validate now, not when someone asks for it
    _MODELS[name] = config


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
register_model("vit_testing", img_size=32, patch_size=8, num_classes=10, embed_dim=32, depth=2, num_heads=2)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered variant names, sorted; `pattern` keeps names containing it (or fnmatch)."""
    import fnmatch

    names = sorted(_MODELS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern) or pattern in n]
    return names


def model_config(name: str, **overrides) -> ViTConfig:
    if name not in _MODELS:
        import difflib

        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see minivit.list_models()"
        raise ValueError(f"unknown model {name!r}{hint}")
    return ViTConfig.from_dict({**_MODELS[name], **overrides})


def create_model(name: str, dtype="float32", **overrides) -> ViT:
    """`create_model("vit_base_patch16_224", num_classes=10)`: a named variant with overrides."""
    return ViT(config=model_config(name, **overrides), dtype=dtype)
