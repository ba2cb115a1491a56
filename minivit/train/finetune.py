"""Fine-tuning helpers (ViT paper Section 3.2): start from a trained checkpoint, replace the head
with a zero-initialised D x K layer for the new classes, drop the pre-logits layer, and at a
higher resolution 2D-interpolate the learned position embeddings over the new patch grid
(the class token's embedding is kept as it is). A "relative_bias_2d" table is interpolated over
the new grid's 2D offsets; a "relative_1d" table is refused at another grid (see
`adapt_state_dict`).
"""
from __future__ import annotations

import numpy as np

from .. import posemb
from ..posemb import resize_pos_embed
from ..vit import ViTConfig
from .checkpoint import CheckpointError, load_checkpoint


def resize_relative_bias(table, old_grid, new_grid, num_prefix_tokens):
    """(L, Hh, (2gh-1)(2gw-1) [+3]) -> the same for new_grid: each head's offset table is a small
    2D grid, interpolated like an image; the three class-token entries are kept."""
    (oh, ow), (nh, nw) = old_grid, new_grid
    n_old = (2 * oh - 1) * (2 * ow - 1)
    L, Hh, _ = table.shape
    grid = table[:, :, :n_old].reshape(L * Hh, n_old).T  # (offsets, L*Hh)
    resized = posemb.interpolate_grid(grid, (2 * oh - 1, 2 * ow - 1), (2 * nh - 1, 2 * nw - 1)).T
    resized = resized.reshape(L, Hh, -1)
    return np.concatenate([resized, table[:, :, n_old:]], axis=2) if num_prefix_tokens else resized


def adapt_state_dict(state, saved_config, model):
    """Make a checkpoint's weights fit `model`: new head, no pre-logits, resized position
    embeddings. `saved_config` is the checkpoint's ViTConfig (or its dict). Returns the adapted
    dict and a list of what was changed."""
    cfg = model.config
    saved = saved_config if isinstance(saved_config, ViTConfig) else _saved_config(saved_config)
    own = model.state_dict()
    state, notes = dict(state), []
    for key in [k for k in state if k.startswith("head.") or k.startswith("pre_logits.")]:
        if key not in own or own[key].shape != state[key].shape:
            del state[key]
            notes.append(f"dropped {key} (new head or no pre-logits layer)")
    old_grid = saved.grid_size
    for key in [k for k in state if k == "pos_embed"]:
        if key in own and state[key].shape != own[key].shape:
            if saved.patch_size != cfg.patch_size:
                raise CheckpointError(f"cannot fine-tune across patch sizes ({saved.patch_size} -> "
                                      f"{cfg.patch_size}): the patch projection would not fit")
            state[key] = resize_pos_embed(state[key], old_grid, model.grid_size, model.num_prefix_tokens)
            notes.append(f"interpolated {key} from a {old_grid[0]}x{old_grid[1]} to a "
                         f"{model.grid_size[0]}x{model.grid_size[1]} patch grid")
    new_grid = model.grid_size
    for key in [k for k in state if k in ("pos_embed_y", "pos_embed_x") and state[k].shape != own.get(k, state[k]).shape]:
        axis = 0 if key == "pos_embed_y" else 1  # factorised 2D embedding: resize each axis in 1-D
        old_n, new_n = old_grid[axis], new_grid[axis]
        state[key] = posemb.interpolate_grid(state[key][0], (old_n, 1), (new_n, 1))[None]
        notes.append(f"interpolated {key} from {old_n} to {new_n} positions")
    if "rel_pos_embed" in state and "rel_pos_embed" in own and tuple(saved.grid_size) != tuple(new_grid):
        # A 1-D offset p_q - p_k means another 2D displacement on another grid (an offset of gw is one
        # row down on a gh x gw grid, part of a row on a wider one): nothing to interpolate between.
        raise CheckpointError(
            f"cannot fine-tune pos_embed='relative_1d' from a {old_grid[0]}x{old_grid[1]} to a "
            f"{new_grid[0]}x{new_grid[1]} patch grid: its embeddings belong to 1-D raster offsets p_q - p_k, "
            "which stand for other 2D displacements on another grid, so they cannot be interpolated; "
            "fine-tune at the same resolution, or train with pos_embed='learn' or 'relative_bias_2d'")
    for key in [k for k in state if k == "rel_pos_bias" and k in own and state[k].shape != own[k].shape]:
        state[key] = resize_relative_bias(state[key], old_grid, new_grid, model.num_prefix_tokens)
        notes.append(f"interpolated {key} over the relative offsets of the new grid")
    for key in [k for k in own if k.startswith("head.") or k.startswith("pre_logits.")]:
        state.setdefault(key, own[key])  # keep the model's zero-initialised head
    return state, notes


def _saved_config(values):
    try:
        return ViTConfig.from_dict(values)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"the checkpoint's model config is invalid: {e}") from e


def init_from_checkpoint(model, path):
    """Load a checkpoint's weights into a (possibly differently sized) model for fine-tuning."""
    ckpt = load_checkpoint(path)
    state, notes = adapt_state_dict(ckpt["model"], ckpt["meta"]["config"], model)
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"cannot initialise from {ckpt['path']}: {e}") from e
    for note in notes:
        print(f"init-from: {note}")
    return notes
