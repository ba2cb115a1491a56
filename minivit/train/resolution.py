"""Training at a low resolution first (progressive resizing: FixRes, Touvron et al. 2019;
AutoProg, Li et al. CVPR 2022; EfficientTrain, Wang et al. ICCV 2023): for the first
`low_res_fraction` of the budget the model sees its images area-averaged to `low_res_size` pixels
(after augmentation: 32 -> 16 is a 2x2 mean), so each step has a quarter of the patches and costs
about a quarter; then it trains on the full images to the end. The patch size stays: the patch
projection, the blocks and the head keep their weights and only the patch grid changes.

What changes with the grid (ViT.set_img_size): the position embedding moves to it as its kind
in posemb.KINDS says (`resize`): e.g. pos_embed="learn" resampled bilinearly (as fine-tuning at a
new resolution), the class token's row kept; "sincos" recomputed; "none" nothing; "relative_1d"
cannot move and is refused. The optimizer's state of a learned embedding (AdamW's two moments,
and the weight EMA) is resized by the same function, not reset: a reset that keeps the step count
would damp that parameter's updates for the ~1/(1 - beta2) steps the second moment needs to
refill, and one that restarts the count would give it a full-size first Adam step at the peak
learning rate. (Resampling the second moment is an approximation; it stays positive.)

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
from .. import posemb
from ..data.transforms import area_resize


def check_low_res(model, low_res_size):
    """ValueError unless `model` can train at low_res_size and at its own size."""
    cfg = getattr(model, "config", None)
    kind = getattr(cfg, "pos_embed", None)
    if not hasattr(model, "set_img_size") or kind not in posemb.KINDS or not posemb.KINDS[kind].resizes:
        raise ValueError(f"low_res_size needs a plain ViT with pos_embed in {posemb.resizable()}; "
                         f"got {type(model).__name__} with pos_embed={kind!r}")
    if not low_res_size < cfg.img_size or low_res_size % cfg.patch_size:
        raise ValueError(f"low_res_size must be below img_size {cfg.img_size} and a multiple of the patch size "
                         f"{cfg.patch_size}, got {low_res_size}")


def switch_resolution(model, optimizer, img_size):
    """model.set_img_size(img_size), with the optimizer's per-parameter state (moments, EMA) of the
    position embedding's parameters resized like the parameters themselves (by its kind)."""
    old_grid = model.grid_size
    model.set_img_size(img_size)
    kind, own = posemb.kind_of(model.config.pos_embed), model.posemb.params  # {name: Parameter}
    index = {id(p): i for i, p in enumerate(p for group in optimizer.param_groups for p in group["params"])}
    states = {name: optimizer.state.get(index[id(p)], {}) for name, p in own.items() if id(p) in index}
    for key in {key for state in states.values() for key, value in state.items() if np.ndim(value)}:
        stale = {name: state[key] for name, state in states.items()  # still laid out for the old grid
                 if key in state and tuple(state[key].shape) != tuple(own[name].shape)}
        resized = kind.resize({name: _device.to_host(v) for name, v in stale.items()},
                              old_grid, model.grid_size, model.num_prefix_tokens)
        for name, value in stale.items():
            states[name][key] = _device.to_device(resized[name], _device.device_of(value))


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
