"""Training at a low resolution first (progressive resizing: FixRes, Touvron et al. 2019;
AutoProg, Li et al. CVPR 2022; EfficientTrain, Wang et al. ICCV 2023): for the first
`low_res_fraction` of the budget the model sees its images area-averaged to `low_res_size` pixels
(after augmentation: 32 -> 16 is a 2x2 mean), so each step has a quarter of the patches and costs
about a quarter; then it trains on the full images to the end. The patch size stays: the patch
projection, the blocks and the head keep their weights and only the patch grid changes.

What changes with the grid (ViT.set_img_size):
    pos_embed="sincos"   the fixed table is recomputed for the new grid
    pos_embed="learn"    the learned table is resampled bilinearly (as fine-tuning at a new
                         resolution, posemb.resize_pos_embed), the class token's row kept
    pos_embed="none"     nothing
The optimizer's state of a learned table (AdamW's two moments, and the weight EMA) is resampled
the same way, not reset: a reset that keeps the step count would damp that parameter's updates
for the ~1/(1 - beta2) steps the second moment needs to refill, and one that restarts the count
would give it a full-size first Adam step at the peak learning rate. (Resampling the second
moment is an approximation; it stays positive.)

Evaluation always runs at the full resolution, during the low-resolution phase too (a learned
table is resampled for the evaluation, then put back bit for bit), so every validation accuracy
and best.npz describe the model that will be tested. A checkpoint saved in the low-resolution
phase holds the model at that size (its config says img_size=16); the trainer resumes at the
size its checkpoint holds.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from .. import device as _device
from ..data.transforms import area_resize
from ..vit import RESIZABLE_POS_EMBEDS
from ..posemb import resize_pos_embed


def check_low_res(model, low_res_size):
    """ValueError unless `model` can train at low_res_size and at its own size."""
    cfg = getattr(model, "config", None)
    if not hasattr(model, "set_img_size") or getattr(cfg, "pos_embed", None) not in RESIZABLE_POS_EMBEDS:
        raise ValueError(f"low_res_size needs a plain ViT with pos_embed in {RESIZABLE_POS_EMBEDS}; "
                         f"got {type(model).__name__} with pos_embed={getattr(cfg, 'pos_embed', None)!r}")
    if not low_res_size < cfg.img_size or low_res_size % cfg.patch_size:
        raise ValueError(f"low_res_size must be below img_size {cfg.img_size} and a multiple of the patch size "
                         f"{cfg.patch_size}, got {low_res_size}")


def switch_resolution(model, optimizer, img_size):
    """model.set_img_size(img_size), with the optimizer's per-parameter state (moments, EMA) of a
    learned position embedding resampled like the embedding itself."""
    old_grid = model.grid_size
    model.set_img_size(img_size)
    table = getattr(model, "pos_embed", None)
    if table is None or model.config.pos_embed != "learn":
        return
    params = [p for group in optimizer.param_groups for p in group["params"]]
    i = next(i for i, p in enumerate(params) if p is table)
    state = optimizer.state.get(i, {})
    for key, value in state.items():
        if np.ndim(value) and value.shape != table.shape:
            resized = resize_pos_embed(_device.to_host(value), old_grid, model.grid_size, model.num_prefix_tokens)
            state[key] = _device.to_device(resized, _device.device_of(value))


@contextmanager
def at_resolution(model, img_size):
    """The model at img_size within the block, and afterwards exactly as it was: the arrays of a
    resampled position embedding are put back, not resampled a second time."""
    if model.config.img_size == img_size:
        yield model
        return
    before, kept = model.config.img_size, [(p, p.data) for p in model.parameters()]
    model.set_img_size(img_size)
    try:
        yield model
    finally:
        model.set_img_size(before)
        for p, data in kept:
            p.data = data


def to_size(x, img_size):
    """A batch (B, C, H, W) area-averaged to img_size x img_size, or as it is at that size."""
    return x if x.shape[-1] == img_size else area_resize(x, img_size)
