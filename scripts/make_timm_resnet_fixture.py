"""Regenerate the timm parity fixtures of minivit's ResNetV2 and hybrid ViT:
``tests/fixtures/timm_resnetv2_*.npz``, ``tests/fixtures/timm_hybrid_*.npz``, and the parameter
counts of minivit's registered ResNetV2, hybrid and Axial-ViT variants counted on timm's modules,
``tests/fixtures/timm_resnetv2_param_counts.npz`` and ``timm_hybrid_param_counts.npz`` (the
latter holds the Axial-ViTs too).

As ``scripts/make_timm_fixture.py`` does for the ViT: timm runs once, in its own environment
(torch + timm, see that script's docstring; the fixtures were made with timm 1.0.31, torch
2.14.1), and everything is stored as plain ``.npz`` (no pickles) that
``tests/test_resnet.py`` and ``tests/test_hybrid_axial.py`` read::

    /work/timm-venv/bin/python scripts/make_timm_resnet_fixture.py

The models are timm's own classes, built as its named models build them but tiny (two or three
stages of one block, widths 16-64, 8 GroupNorm groups):
- ResNetV2 as ``resnetv2_50x1_bit`` (pre-activation, stem "fixed": zero-padded max pool,
  StdConv2d eps 1e-8) and with PyTorch's stem padding (stem ""), at odd image sizes;
- the hybrid VisionTransformer of ``vit_base_r50_s16_224`` (HybridEmbed on a ResNetV2 with
  preact=False, stem "same", StdConv2dSame eps 1e-8), TF "same" padding on odd sizes included.

Each fixture holds ``config_json`` (the minivit config, e.g. ``ResNetV2(**config)``), ``input``
(B, C, H, W) float32, ``labels``, ``param.<name>`` float32 (every timm parameter perturbed by
noise, so no gradient is trivially zero or symmetric), ``logits`` / ``loss`` float64 and
``grad.<name>`` float64, computed by timm in float64 on the float32 values cast up.
"""

from __future__ import annotations

import json
import os
import sys
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

import timm
from timm.layers import GroupNormAct, HybridEmbed, StdConv2d, StdConv2dSame
from timm.models.resnetv2 import ResNetV2
from timm.models.vision_transformer import VisionTransformer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures")
BATCH = 2
PERTURB_STD = 0.1

# name: (minivit config, image size)
RESNETS = {
    "bit": dict(layers=(1, 1), channels=(32, 64), stem_chs=16, stem_type="fixed", num_groups=8, num_classes=5,
                img_size=32),
    "plain_stem_odd": dict(layers=(1, 1, 1), channels=(32, 48, 64), stem_chs=16, stem_type="", num_groups=8,
                           num_classes=4, img_size=29, in_chans=2),
}
HYBRIDS = {
    "s16": dict(img_size=32, patch_size=1, embed_dim=24, depth=2, num_heads=3, num_classes=5,
                backbone_layers=(1, 1), backbone_channels=(32, 64), backbone_stem_chs=16, backbone_stem="same",
                backbone_groups=8),
    "odd_patch2": dict(img_size=46, patch_size=2, embed_dim=16, depth=1, num_heads=2, num_classes=3,
                       backbone_layers=(1, 1), backbone_channels=(32, 48), backbone_stem_chs=16,
                       backbone_stem="same", backbone_groups=8, global_pool="avg", class_token=False),
}
# The parameter counts of every registered variant of minivit's "resnetv2", "hybrid" and "axial"
# families, counted on timm's modules: timm's model where timm has one of that name, else timm's
# classes configured alike (see timm_count).
FAMILIES = ("resnetv2", "hybrid", "axial")


def timm_resnet(cfg, preact=True, num_classes=None, global_pool="avg"):
    conv = StdConv2dSame if cfg.get("stem_type") == "same" else StdConv2d
    return ResNetV2(layers=list(cfg["layers"]), channels=cfg["channels"], stem_chs=cfg["stem_chs"],
                    width_factor=cfg.get("width_factor", 1),
                    stem_type=cfg["stem_type"], in_chans=cfg.get("in_chans", 3), preact=preact,
                    num_classes=cfg["num_classes"] if num_classes is None else num_classes,
                    global_pool=global_pool, conv_layer=partial(conv, eps=1e-8),
                    norm_layer=partial(GroupNormAct, num_groups=cfg["num_groups"]))


def timm_hybrid(cfg):
    backbone = timm_resnet(dict(layers=cfg["backbone_layers"], channels=cfg["backbone_channels"],
                                stem_chs=cfg["backbone_stem_chs"], stem_type=cfg["backbone_stem"],
                                num_groups=cfg["backbone_groups"], num_classes=0), preact=False, global_pool="")
    vit_kw = {k: cfg[k] for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "num_classes")}
    for k in ("global_pool", "class_token"):
        if k in cfg:
            vit_kw[k] = cfg[k]
    return VisionTransformer(embed_layer=partial(HybridEmbed, backbone=backbone), **vit_kw)


def perturb(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(PERTURB_STD * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model.eval()


def run(model, x, labels):
    model.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    return logits.detach(), loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def save(name, build, cfg, seed):
    torch.manual_seed(seed)
    model = perturb(build(), seed + 1000)
    gen = torch.Generator().manual_seed(seed + 2000)
    size, chans = cfg["img_size"], cfg.get("in_chans", 3)
    x32 = torch.randn(BATCH, chans, size, size, generator=gen, dtype=torch.float32)
    labels = torch.randint(0, cfg["num_classes"], (BATCH,), generator=gen)
    state32 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    logits32, _, _ = run(model, x32, labels)
    model = model.double()
    logits, loss, grads = run(model, x32.double(), labels)
    for n, g in grads.items():
        assert g.abs().max() > 0, f"gradient of {n} is zero"
    arrays = {"config_json": np.array(json.dumps(cfg, sort_keys=True)), "input": x32.numpy(),
              "labels": labels.numpy(), "logits": logits.numpy(), "loss": np.array(loss.item()),
              "timm_version": np.array(timm.__version__), "torch_version": np.array(torch.__version__)}
    arrays.update({f"param.{k}": v.numpy().astype(np.float32) for k, v in state32.items()})
    arrays.update({f"grad.{k}": v.numpy() for k, v in grads.items()})
    path = os.path.join(OUT_DIR, f"{name}.npz")
    np.savez_compressed(path, **arrays)
    err = float((logits32.double() - logits).abs().max() / logits.abs().max())
    print(f"{path}: {os.path.getsize(path):,} bytes, {sum(v.numel() for v in state32.values()):,} params, "
          f"loss {loss.item():.5f}, float32 logits rel err {err:.1e}")


def timm_count(name, cfg):
    """Parameters of minivit's variant `name` (config cfg) counted on timm's modules. minivit's "cifar"
    stem (3x3, stride 1, no pool) is counted as timm's 7x7 stem minus its 49 - 9 extra taps per
    weight, at 4x the image size so that the feature grid (the position embedding) is the same;
    an Axial-ViT of L layers as timm's ViT of 2L blocks without class token (average pooling)."""
    def n(model):
        return sum(p.numel() for p in model.parameters())

    if name in timm.list_models():
        return n(timm.create_model(name, pretrained=False, num_classes=cfg.num_classes))
    if cfg.arch == "axial":
        return n(VisionTransformer(img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                                   depth=2 * cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
                                   num_classes=cfg.num_classes, class_token=False, global_pool="avg"))
    res = cfg if cfg.arch == "resnetv2" else cfg.backbone()
    cifar = res.stem_type == "cifar"
    resnet = dict(layers=res.layers, channels=res.channels, stem_chs=res.stem_chs, width_factor=res.width_factor,
                  stem_type="" if cifar else res.stem_type, num_groups=res.num_groups, in_chans=res.in_chans,
                  num_classes=res.num_classes)
    extra_taps = res.in_chans * res.stem_width * (49 - 9) if cifar else 0
    if cfg.arch == "resnetv2":
        return n(timm_resnet(resnet, preact=res.preact)) - extra_taps
    backbone = timm_resnet(resnet, preact=False, num_classes=0, global_pool="")
    vit = VisionTransformer(embed_layer=partial(HybridEmbed, backbone=backbone),
                            img_size=cfg.img_size * (4 if cifar else 1),
                            patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
                            num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, num_classes=cfg.num_classes)
    return n(vit) - extra_taps


def counts():
    sys.path.insert(0, ROOT)
    from minivit.variants import list_models, model_config

    for file, families in (("timm_resnetv2_param_counts.npz", ("resnetv2",)), ("timm_hybrid_param_counts.npz",
                                                                            ("hybrid", "axial"))):
        out = {}
        for family in families:
            for name in list_models(family=family):
                with torch.device("meta"):
                    out[name] = timm_count(name, model_config(name))
                print(f"{name:28s} {out[name]:>14,}")
        path = os.path.join(OUT_DIR, file)
        np.savez_compressed(path, counts_json=np.array(json.dumps(out, sort_keys=True)),
                            timm_version=np.array(timm.__version__))
        print(f"wrote {path}")


def main() -> int:
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    print(f"timm {timm.__version__}, torch {torch.__version__}")
    for i, (key, cfg) in enumerate(RESNETS.items()):
        save(f"timm_resnetv2_{key}", partial(timm_resnet, cfg), {k: list(v) if isinstance(v, tuple) else v
                                                         for k, v in cfg.items()}, seed=10 + i)
    for i, (key, cfg) in enumerate(HYBRIDS.items()):
        save(f"timm_hybrid_{key}", partial(timm_hybrid, cfg), {k: list(v) if isinstance(v, tuple) else v
                                                      for k, v in cfg.items()}, seed=20 + i)
    counts()
    return 0


if __name__ == "__main__":
    sys.exit(main())
