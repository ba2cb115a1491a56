"""Regenerate the timm parity fixtures in ``tests/fixtures/timm_vit_*.npz``.

minivit must give the same logits and parameter gradients as timm's
``VisionTransformer`` for the same weights.  CI has no timm, so this script
runs timm once, in a separate virtual environment outside the repository, and
stores the weights, inputs and reference results as plain ``.npz`` files (no
pickled objects) that ``tests/test_timm_parity.py`` reads.

Set up the environment (once; the torch wheel is large) and run it from the
repository root::

    python3 -m venv /tmp/timmenv
    /tmp/timmenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/timmenv/bin/pip install timm          # fixtures were made with timm 1.0.31
    /tmp/timmenv/bin/python scripts/make_timm_fixture.py

What each fixture holds (one ``.npz`` per config):

- ``config_json``: 0-d unicode array, the JSON of the structural kwargs given to
  ``timm.models.vision_transformer.VisionTransformer`` (also valid for
  ``minivit.ViT(**config)``); drop rates are 0 and ``dynamic_img_size`` is False.
- ``input`` (B, C, H, W) float32, ``labels`` (B,) int64.
- ``param.<state_dict key>``: every state-dict entry, float32 (after a random
  perturbation of every parameter, so no gradient is trivially zero).
- ``logits`` (B, K) float64 and ``loss`` () float64: computed in float64 from the
  float32 weights and input cast up (``model.double()``), model in eval mode.
- ``grad.<parameter name>``: float64 gradient of
  ``torch.nn.functional.cross_entropy(logits, labels)`` (mean, no smoothing).
- ``timm_version``, ``torch_version``: 0-d unicode arrays.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

import timm
from timm.models.vision_transformer import VisionTransformer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures")

BATCH = 3
PERTURB_STD = 0.1  # noise added to every parameter (weights, biases, norms, tokens, head)
QKV_EXTRA_STD = 0.25  # extra noise on attn.qkv.weight so attention is far from uniform

# Structural kwargs, shared by timm and minivit.ViT.  Kept small so that all three
# fixtures (float32 weights + float64 gradients) stay well under 1 MB together.
CONFIGS = {
    # class token, 'token' pooling, final `norm`, qkv bias, hd = 8
    "a": dict(img_size=32, patch_size=8, in_chans=3, num_classes=10, embed_dim=24, depth=2,
              num_heads=3, mlp_ratio=4, qkv_bias=True, global_pool="token", class_token=True),
    # no class token, 'avg' pooling (so `fc_norm`, no `norm`), no qkv bias, hd = 16
    "b": dict(img_size=24, patch_size=4, in_chans=3, num_classes=7, embed_dim=32, depth=2,
              num_heads=2, mlp_ratio=2, qkv_bias=False, global_pool="avg", class_token=False),
    # class token AND 'avg' pooling (the class token is excluded from the mean),
    # one input channel, 3 blocks, hd = 6 (not a power of two)
    "c": dict(img_size=32, patch_size=4, in_chans=1, num_classes=5, embed_dim=24, depth=3,
              num_heads=4, mlp_ratio=4.0, qkv_bias=True, global_pool="avg", class_token=True),
}

FIXED_KWARGS = dict(
    drop_rate=0.0, pos_drop_rate=0.0, patch_drop_rate=0.0, proj_drop_rate=0.0,
    attn_drop_rate=0.0, drop_path_rate=0.0, dynamic_img_size=False,
)


def build(cfg: dict, seed: int) -> VisionTransformer:
    torch.manual_seed(seed)
    model = VisionTransformer(**cfg, **FIXED_KWARGS)
    model.eval()
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(PERTURB_STD * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            if name.endswith("attn.qkv.weight"):
                p.add_(QKV_EXTRA_STD * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def run(model: VisionTransformer, x: torch.Tensor, labels: torch.Tensor):
    model.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return logits.detach(), loss.detach(), grads


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.double()
    b = b.double()
    return float((a - b).abs().max() / b.abs().max())


def make(key: str, cfg: dict, seed: int) -> str:
    model = build(cfg, seed)
    gen = torch.Generator().manual_seed(seed + 2000)
    x32 = torch.randn(BATCH, cfg["in_chans"], cfg["img_size"], cfg["img_size"],
                      generator=gen, dtype=torch.float32)
    labels = torch.randint(0, cfg["num_classes"], (BATCH,), generator=gen, dtype=torch.int64)

    state32 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert all(v.dtype == torch.float32 for v in state32.values())

    # float32 run, only to report how far float32 is from the float64 truth.
    logits32, loss32, grads32 = run(model, x32, labels)

    # float64 ground truth from the same (float32) weights and input, cast up.
    model = model.double()
    logits, loss, grads = run(model, x32.double(), labels)

    assert set(grads) <= set(state32)
    for n, g in grads.items():
        assert g.abs().max() > 0, f"gradient of {n} is zero"

    probs = torch.softmax(
        _first_block_scores(model, x32.double()), dim=-1)
    ent = -(probs * probs.clamp_min(1e-300).log()).sum(-1).mean()
    n_tok = probs.shape[-1]

    arrays = {
        "config_json": np.array(json.dumps(cfg, sort_keys=True)),
        "input": x32.numpy(),
        "labels": labels.numpy(),
        "logits": logits.numpy(),
        "loss": np.array(loss.item(), dtype=np.float64),
        "timm_version": np.array(timm.__version__),
        "torch_version": np.array(torch.__version__),
    }
    for k, v in state32.items():
        arrays[f"param.{k}"] = v.numpy().astype(np.float32)
    for k, v in grads.items():
        arrays[f"grad.{k}"] = v.numpy().astype(np.float64)

    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, f"timm_vit_{key}.npz")
    np.savez_compressed(path, **arrays)

    worst_grad = max(rel_err(grads32[n], grads[n]) for n in grads)
    n_params = sum(v.numel() for v in state32.values())
    print(f"[{key}] {path}: {os.path.getsize(path)} bytes, {n_params} params, "
          f"loss={loss.item():.6f}, float32-vs-float64 rel err: logits "
          f"{rel_err(logits32, logits):.2e}, worst grad {worst_grad:.2e}, "
          f"block-0 attention entropy {ent:.3f} (uniform {np.log(n_tok):.3f})")
    return path


@torch.no_grad()
def _first_block_scores(model: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """Pre-softmax attention scores of block 0 (a diagnostic that attention is not uniform)."""
    t = model._pos_embed(model.patch_embed(x))
    blk = model.blocks[0]
    h = blk.norm1(t)
    B, N, D = h.shape
    a = blk.attn
    qkv = a.qkv(h).reshape(B, N, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.unbind(0)
    return (q @ k.transpose(-2, -1)) * a.scale


def main() -> int:
    torch.set_num_threads(1)
    print(f"timm {timm.__version__}, torch {torch.__version__}")
    for i, (key, cfg) in enumerate(CONFIGS.items()):
        if key == "a":
            m = build(cfg, 0)
            print("state_dict of config A:")
            for k, v in m.state_dict().items():
                print(f"  {k:32s} {tuple(v.shape)}")
        make(key, cfg, seed=i)
    total = sum(os.path.getsize(os.path.join(OUT_DIR, f"timm_vit_{k}.npz")) for k in CONFIGS)
    print(f"total fixture size: {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
