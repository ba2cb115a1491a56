"""Exact parameter counts of timm's VisionTransformer for minivit's named variants.

Writes ``tests/fixtures/param_counts.json`` ({name: count}), which minivit's tests
compare against its own ``create_model(name)``.  Models are built on the meta
device, so even ViT-Huge costs no memory.

Needs timm, so run it in the separate environment described at the top of
``scripts/make_timm_fixture.py``, from the repository root::

    PYTHONPATH=. /path/to/timm-env/bin/python scripts/param_counts_timm.py

Every variant uses timm's defaults: qkv_bias=True, a class token, 'token'
pooling, final LayerNorm, learned position embedding, mlp_ratio 4.
"""

from __future__ import annotations

import json
import os
import sys

import torch

import timm
from timm.models.vision_transformer import VisionTransformer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "param_counts.json")

SIZES = {  # name: (depth, embed_dim, num_heads)
    "tiny": (12, 192, 3),
    "small": (12, 384, 6),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
    "huge": (32, 1280, 16),
}


def variants() -> dict:
    out = {}
    for size, (depth, dim, heads) in SIZES.items():
        for p in (14, 16, 32):
            out[f"vit_{size}_patch{p}_224"] = dict(
                img_size=224, patch_size=p, num_classes=1000,
                embed_dim=dim, depth=depth, num_heads=heads)
    for size in ("tiny", "small", "base"):
        depth, dim, heads = SIZES[size]
        out[f"vit_{size}_patch4_32"] = dict(
            img_size=32, patch_size=4, num_classes=10,
            embed_dim=dim, depth=depth, num_heads=heads)
    out["vit_cifar_patch4_32"] = dict(
        img_size=32, patch_size=4, num_classes=10, embed_dim=192, depth=6, num_heads=3)
    out["vit_mini_patch4_32"] = dict(
        img_size=32, patch_size=4, num_classes=10, embed_dim=128, depth=6, num_heads=4, mlp_ratio=2.0)
    out["vit_demo_patch4_32"] = dict(
        img_size=32, patch_size=4, num_classes=10, embed_dim=96, depth=4, num_heads=3, mlp_ratio=2.0)
    out["vit_nano_patch8_32"] = dict(
        img_size=32, patch_size=8, num_classes=10, embed_dim=64, depth=3, num_heads=4, mlp_ratio=2.0)
    out["vit_testing"] = dict(
        img_size=32, patch_size=8, num_classes=10, embed_dim=32, depth=2, num_heads=2)
    for name, kw in out.items():
        out[name] = {**dict(in_chans=3, mlp_ratio=4.0, qkv_bias=True, class_token=True, global_pool="token"), **kw}
    return out


def count(kwargs: dict) -> int:
    with torch.device("meta"):
        model = VisionTransformer(**kwargs)
    return sum(p.numel() for p in model.parameters())


def main() -> int:
    counts = {name: count(kw) for name, kw in variants().items()}
    assert counts["vit_base_patch16_224"] == 86_567_656, counts["vit_base_patch16_224"]
    print(f"timm {timm.__version__}, torch {torch.__version__}")
    for name, n in counts.items():
        print(f"{name:26s} {n:>14,}")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(counts, f, indent=2)
        f.write("\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
