"""Checkpoints without pickle: one `.npz` archive holding the arrays and a JSON document.

    model/<name>            parameter arrays, timm names
    optim/<i>/<key>         optimizer state arrays of parameter i (AdamW: exp_avg, exp_avg_sq)
    meta.json               UTF-8 JSON as a uint8 array: format tag, model config, training
                            position (epoch, step, batch), RNG state, optimizer hyper-parameters
                            and scalar state, normalisation, class names, training arguments

Arrays are always written as host (NumPy) arrays, whatever device the model and optimizer are
on, and load onto either device (Module.load_state_dict and Optimizer.load_state_dict copy them
to their parameters' device). Writes are atomic and loads never unpickle (minivit.npz: temporary
file in the same folder, fsync, os.replace; allow_pickle=False); a damaged file becomes a
CheckpointError (a ValueError) that names it. A checkpoint is untrusted input: meta.json's values are type-checked,
and the config is compared with the weights' shapes *before* a model is built from it, so a
crafted config (depth=10**9, embed_dim=10**7) is refused instead of allocating gigabytes; weights
and optimizer state must be finite floats.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import fields
from pathlib import Path

import numpy as np

from .. import npz, posemb
from ..device import to_host

FORMAT = "minivit-checkpoint"
VERSION = 1
DTYPES = ("float32", "float64")
# The token count N allowed with a position embedding whose weights do not pin N to their own size
# (posemb.KINDS[...].weights_pin_tokens False: no weights at all, or a relative table that grows only as
# N while its (N, N) index and (B, Hh, N, N) bias grow as N^2). 2**14 tokens: a 2048 x 2048 image in
# 16 x 16 patches; a relative index is then 2 GiB.
MAX_UNPINNED_TOKENS = 1 << 14


class CheckpointError(ValueError):
    """A checkpoint file that is missing, damaged, or does not fit the model it is loaded into."""


def save_checkpoint(path, model, optimizer=None, **meta) -> Path:
    """Write model weights (and optimizer state) plus `meta` (JSON-serialisable) atomically."""
    arrays = {f"model/{k}": np.asarray(_host(v)) for k, v in model.state_dict().items()}
    document = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(),
                "dtype": str(model.dtype), **meta}
    if optimizer is not None:
        opt = optimizer.state_dict()
        scalars = {}
        for i, state in opt["state"].items():
            for key, value in state.items():
                if np.ndim(value):
                    arrays[f"optim/{i}/{key}"] = np.asarray(_host(value))
                else:
                    scalars.setdefault(str(i), {})[key] = value
        document["optimizer"] = {"type": type(optimizer).__name__, "param_groups": opt["param_groups"],
                                 "scalars": scalars}
    arrays["meta.json"] = np.frombuffer(json.dumps(document, default=_json_default).encode(), dtype=np.uint8)
    return npz.write(path, arrays)


def load_checkpoint(path) -> dict:
    """{"meta": dict, "model": {name: array}, "optim": {i: {key: array}}}; raises CheckpointError
    for a missing, unreadable, truncated, foreign, corrupt or ill-typed file."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.npz"
    arrays = npz.read(path, CheckpointError, "checkpoint")
    if "meta.json" not in arrays:
        raise CheckpointError(f"{path} is not a minivit checkpoint (no meta.json entry)")
    try:
        meta = json.loads(arrays["meta.json"].tobytes().decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # RecursionError: deeply nested JSON
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: its meta.json does not parse "
                              f"({type(e).__name__}: {e})") from e
    model, optim = {}, {}
    for name, array in arrays.items():
        if name.startswith("model/"):
            model[name[len("model/"):]] = array
        elif name.startswith("optim/"):
            _, i, key = (name.split("/", 2) + ["", ""])[:3]
            if not i.isdigit() or not key:
                raise CheckpointError(f"checkpoint {path} has a malformed optimizer entry {name!r}")
            optim.setdefault(int(i), {})[key] = array
    _check_meta(meta, path)
    _check_finite(model, path, "weights")
    for i, arrays in optim.items():
        _check_finite(arrays, path, f"optimizer state of parameter {i}")
    return {"meta": meta, "model": model, "optim": optim, "path": path}


def _check_meta(meta, path) -> None:
    """CheckpointError unless meta.json has the format tag and well-typed values where it has them."""
    tag = meta.get("format") if isinstance(meta, dict) else None
    if tag != FORMAT:
        raise CheckpointError(f"{path} is not a minivit checkpoint (format tag {tag!r})")
    version = meta.get("version", 0)
    if not _is_int(version) or version < 0:
        raise CheckpointError(f"{path}: meta.json 'version' should be an integer >= 0, got {version!r}")
    if version > VERSION:
        raise CheckpointError(f"{path} was written by a newer minivit (format version {version})")
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path} holds no model config")
    _check_config_types(meta["config"], path)
    if meta.get("dtype", "float32") not in DTYPES:
        raise CheckpointError(f"{path}: meta.json 'dtype' should be one of {DTYPES}, got {meta['dtype']!r}")
    classes = meta.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{path}: meta.json 'classes' should be a list of names, got {str(classes)[:80]}")
    for key in ("train_config", "position", "normalization", "optimizer"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise CheckpointError(f"{path}: meta.json {key!r} should be an object, got {str(meta[key])[:80]}")
    position = meta.get("position")
    if position is not None and not all(_is_int(v) and v >= 0 for v in position.values()):
        raise CheckpointError(f"{path}: meta.json 'position' should hold integers >= 0 (step, epoch, batch), "
                              f"got {str(position)[:80]}")
    if meta.get("rng_state") is not None:
        _check_rng_state(meta["rng_state"], path)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_JSON_TYPES = {"int": (_is_int, "an integer"), "float": (_is_number, "a finite number"),
               "bool": (lambda v: isinstance(v, bool), "true or false"),
               "str": (lambda v: isinstance(v, str), "a string")}


def _check_config_types(config: dict, path) -> None:
    """CheckpointError naming the first ViTConfig value of the wrong JSON type (e.g. img_size "abc");
    fields annotated with other types are left to ViTConfig."""
    from ..vit import ViTConfig

    for f in fields(ViTConfig):
        if f.name not in config:
            continue
        kind = (f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")).replace(" ", "")
        optional = kind.endswith("|None")
        if kind.removesuffix("|None") not in _JSON_TYPES:
            continue
        ok, expected = _JSON_TYPES[kind.removesuffix("|None")]
        value = config[f.name]
        if not (ok(value) or (optional and value is None)):
            raise CheckpointError(f"{path}: meta.json config {f.name!r} should be {expected}"
                                  f"{' or null' if optional else ''}, got {value!r:.80}")


def _check_rng_state(state, path) -> None:
    """CheckpointError unless state can be set on a fresh bit generator of the kind it names."""
    kind = state.get("bit_generator") if isinstance(state, dict) else None
    if kind not in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"):
        raise CheckpointError(f"{path}: meta.json 'rng_state' is not a NumPy bit generator state "
                              f"(bit_generator {kind!r})")
    try:
        getattr(np.random, kind)().state = state
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise CheckpointError(f"{path}: meta.json 'rng_state' is malformed ({type(e).__name__}: {e})") from e


def optimizer_state(ckpt) -> dict:
    """Rebuild the optimizer.state_dict() structure from a loaded checkpoint."""
    opt = ckpt["meta"].get("optimizer")
    if opt is None:
        raise CheckpointError(f"{ckpt['path']} holds no optimizer state")
    try:
        state = {int(i): dict(s) for i, s in opt["scalars"].items()}
        for i, arrays in ckpt["optim"].items():
            state.setdefault(i, {}).update(arrays)
        groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else dict(g) for g in opt["param_groups"]]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{ckpt['path']}: the optimizer state in meta.json is malformed "
                              f"({type(e).__name__}: {e})") from e
    return {"param_groups": groups, "state": state}


def resume_state(ckpt) -> dict:
    """What a resumed run reads from a checkpoint, checked: {"step", "epoch", "batch": ints >= 0,
    "epoch_running": 4 numbers, "best_val": a number, "rng_state"}; CheckpointError otherwise."""
    meta, where = ckpt["meta"], ckpt["path"]
    position = meta.get("position")
    if not (isinstance(position, dict) and all(_is_int(position.get(k)) for k in ("step", "epoch", "batch"))):
        raise CheckpointError(f"{where} holds no training position (step, epoch, batch), so it cannot be resumed; "
                              "start a new run from its weights with --init-from")
    running = meta.get("epoch_running", [0.0, 0, 0, 0.0])
    if not (isinstance(running, list) and len(running) == 4 and all(_is_number(v) for v in running)):
        raise CheckpointError(f"{where}: meta.json 'epoch_running' should be 4 numbers, got {str(running)[:80]}")
    best_val = meta.get("best_val", -1.0)
    if not _is_number(best_val):
        raise CheckpointError(f"{where}: meta.json 'best_val' should be a number, got {best_val!r:.80}")
    if meta.get("rng_state") is None:
        raise CheckpointError(f"{where} holds no RNG state, so it cannot be resumed exactly")
    return {**{k: position[k] for k in ("step", "epoch", "batch")}, "epoch_running": tuple(running),
            "best_val": best_val, "rng_state": meta["rng_state"]}


def model_from_checkpoint(path_or_ckpt, **overrides):
    """Build the ViT a checkpoint was saved from and load its weights.

    The config is checked against the weights' shapes before the model is built (see the top).
    """
    from ..vit import ViT, ViTConfig

    ckpt = path_or_ckpt if isinstance(path_or_ckpt, dict) else load_checkpoint(path_or_ckpt)
    try:
        config = ViTConfig.from_dict({**ckpt["meta"]["config"], **overrides})
    except (TypeError, ValueError) as e:  # unknown keys (TypeError) or values that do not go together
        raise CheckpointError(f"checkpoint {ckpt['path']} holds an invalid model config: {e}") from e
    check_weights_fit_config(ckpt, config)
    model = ViT(config=config, dtype=ckpt["meta"].get("dtype", "float32"))
    load_weights(model, ckpt)
    return model, ckpt


def size_shapes(config) -> dict[str, tuple]:
    """The shapes of the weights whose size grows with the config's size fields, by timm's names
    (DESIGN.md): patch projection (D, C, P, P), the first block's qkv (3D, D) and fc1 (M, D),
    pre-logits, head, and the position embedding's parameters (their shapes, by its kind in
    posemb.KINDS)."""
    D, C, P = config.embed_dim, config.in_chans, config.patch_size
    prefix = 1 if config.class_token else 0
    shapes = {"patch_embed.proj.weight": (D, C, P, P), "blocks.0.attn.qkv.weight": (3 * D, D),
              "blocks.0.mlp.fc1.weight": (int(D * config.mlp_ratio), D)}
    if config.representation_size:
        shapes["pre_logits.fc.weight"] = (config.representation_size, D)
    if config.num_classes > 0:
        shapes["head.weight"] = (config.num_classes, config.representation_size or D)
    shapes.update(posemb.kind_of(config.pos_embed).shapes(config, config.grid_size, prefix))  # tuples: no allocation
    return shapes


def check_weights_fit_config(ckpt, config) -> None:
    """CheckpointError unless the weights have the depth and the shapes that `config` implies.

    Only shapes are compared, and `depth` only against the block numbers present, so nothing
    the size of the model is allocated: a checkpoint whose meta.json claims depth=10**9 or
    embed_dim=10**7 for small weights fails here, before ViT(config) would allocate for it.
    """
    weights, where = ckpt["model"], ckpt["path"]
    blocks = sorted({int(m.group(1)) for k in weights if (m := re.match(r"blocks\.(\d+)\.", k))})
    if len(blocks) != config.depth or blocks != list(range(len(blocks))):  # never range(depth): it may be 10**9
        raise CheckpointError(f"checkpoint {where}: its config says depth={config.depth} (blocks 0..depth-1), but "
                              f"its weights hold {len(blocks)} block(s) numbered {blocks[:8]}"
                              f"{'...' if len(blocks) > 8 else ''}")
    for key, shape in size_shapes(config).items():
        got = tuple(weights[key].shape) if key in weights else None
        if got != shape:
            raise CheckpointError(f"checkpoint {where} does not match its own config: {key} should be {shape} "
                                  f"for {_config_summary(config)}, " + (f"but is {got}" if got else "but is missing"))
    tokens = (1 if config.class_token else 0) + config.grid_size[0] * config.grid_size[1]
    if not posemb.kind_of(config.pos_embed).weights_pin_tokens and tokens > MAX_UNPINNED_TOKENS:
        raise CheckpointError(f"checkpoint {where}: img_size={config.img_size} with patch_size={config.patch_size} "
                              f"makes {tokens} tokens, more than the {MAX_UNPINNED_TOKENS} minivit accepts with "
                              f"pos_embed={config.pos_embed!r}, whose weights do not confirm the image size")


def _config_summary(config) -> str:
    return ", ".join(f"{k}={getattr(config, k)}" for k in ("img_size", "patch_size", "in_chans", "embed_dim",
                                                            "depth", "num_heads", "mlp_ratio", "num_classes"))


def load_weights(model, ckpt):
    """load_state_dict with an error message that says which checkpoint and config differ."""
    try:
        model.load_state_dict(ckpt["model"])
    except (KeyError, ValueError) as e:
        saved = ckpt["meta"].get("config", {})
        diff = {k: (saved.get(k), v) for k, v in model.config.to_dict().items() if saved.get(k) != v}
        detail = f"; config differences (checkpoint, model): {diff}" if diff else ""
        raise CheckpointError(f"checkpoint {ckpt['path']} does not fit this model: {e}{detail}") from e


def _check_finite(arrays: dict, path, what: str) -> None:
    """CheckpointError naming the first array that is not floating point or holds NaN or inf."""
    for name, a in arrays.items():
        if a.dtype.kind != "f":
            raise CheckpointError(f"checkpoint {path}: {what} {name!r} has dtype {a.dtype}, expected floats")
        if not np.isfinite(a).all():
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            raise CheckpointError(f"checkpoint {path}: {what} {name!r} holds {bad} NaN or infinite value(s) "
                                  f"of {a.size}; a run that diverged saves no usable weights")


def normalization(ckpt, channels: int | None = None):
    """(mean, std) the checkpoint's model was trained with: one finite number per input channel
    (std > 0); CheckpointError when absent or malformed."""
    norm = ckpt["meta"].get("normalization")
    if not norm:
        raise CheckpointError(f"{ckpt['path']} holds no input normalisation (it was not written by "
                              "`minivit train`); cannot prepare images for it")
    mean, std = norm.get("mean"), norm.get("std")
    channels = channels or (len(mean) if isinstance(mean, list) else 0)
    for name, values, low in (("mean", mean, -math.inf), ("std", std, 0.0)):
        if not (isinstance(values, list) and len(values) == channels and channels > 0
                and all(_is_number(v) and v > low for v in values)):
            raise CheckpointError(f"{ckpt['path']}: meta.json normalization {name!r} should be {channels or 'C'} "
                                  f"finite number(s){' > 0' if name == 'std' else ''} (one per input channel), "
                                  f"got {str(values)[:80]}")
    return mean, std


def _host(a):
    """A NumPy array: GPU arrays are copied to the host (the only copies a checkpoint makes)."""
    return to_host(a)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in checkpoint metadata")
