"""Fine-tuning helpers (ViT paper Section 3.2): start from a trained checkpoint, replace the head
with a zero-initialised D x K layer for the new classes, drop the pre-logits layer, and at a
higher resolution move the position embedding to the new patch grid as its kind says
(posemb.KINDS[...].resize: a learned table 2D-interpolated, the class token's embedding kept; a
"relative_bias_2d" table interpolated over the new grid's 2D offsets; a "relative_1d" table
refused at another grid).
"""
from __future__ import annotations

from .. import posemb
from ..posemb import resize_pos_embed, resize_relative_bias  # noqa: F401 (importable from here, as before)
from ..vit import ViTConfig
from .checkpoint import CheckpointError, load_checkpoint


def adapt_state_dict(state, saved_config, model):
    """Make a checkpoint's weights fit `model`: new head, no pre-logits, the position embedding on
    the model's patch grid. `saved_config` is the checkpoint's ViTConfig (or its dict). Returns the
    adapted dict and a list of what was changed."""
    cfg = model.config
    saved = saved_config if isinstance(saved_config, ViTConfig) else _saved_config(saved_config)
    own = model.state_dict()
    state, notes = dict(state), []
    for key in [k for k in state if k.startswith("head.") or k.startswith("pre_logits.")]:
        if key not in own or own[key].shape != state[key].shape:
            del state[key]
            notes.append(f"dropped {key} (new head or no pre-logits layer)")
    old_grid, new_grid = tuple(saved.grid_size), tuple(model.grid_size)
    kind = posemb.kind_of(cfg.pos_embed)
    tables = {k: state[k] for k in model.posemb.params if k in state}
    if old_grid != new_grid and tables and saved.pos_embed == cfg.pos_embed:
        if saved.patch_size != cfg.patch_size:
            raise CheckpointError(f"cannot fine-tune across patch sizes ({saved.patch_size} -> "
                                  f"{cfg.patch_size}): the patch projection would not fit")
        try:
            resized = kind.resize(tables, old_grid, new_grid, model.num_prefix_tokens)
        except ValueError as e:  # a kind that cannot move to another grid says why
            raise CheckpointError(f"cannot fine-tune: {e}") from e
        for key, value in resized.items():
            if value.shape != tables[key].shape:
                state[key] = value
                notes.append(f"interpolated {key} from a {old_grid[0]}x{old_grid[1]} to a "
                             f"{new_grid[0]}x{new_grid[1]} patch grid")
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
