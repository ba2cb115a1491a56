"""Checkpoints without pickle: one `.npz` archive holding the arrays and a JSON document.

    model/<name>            parameter arrays, timm names
    optim/<i>/<key>         optimizer state arrays of parameter i (AdamW: exp_avg, exp_avg_sq)
    meta.json               UTF-8 JSON as a uint8 array: format tag, model config, training
                            position (epoch, step, batch), RNG state, optimizer hyper-parameters
                            and scalar state, normalisation, class names, training arguments

Writes are atomic (temporary file in the same folder, fsync, os.replace), so an interrupted save
never destroys the previous checkpoint. Loads never unpickle (allow_pickle=False) and turn a
damaged file into a ValueError that names it.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FORMAT = "minivit-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that is missing, damaged, or does not fit the model it is loaded into."""


def save_checkpoint(path, model, optimizer=None, **meta) -> Path:
    """Write model weights (and optimizer state) plus `meta` (JSON-serialisable) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path) -> dict:
    """{"meta": dict, "model": {name: array}, "optim": {i: {key: array}}}; raises CheckpointError
    for a missing, truncated, foreign or corrupt file."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.npz"
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):  # a .npy file: one bare array
            raise CheckpointError(f"{path} is not a minivit checkpoint (a single array, not an archive)")
        with archive:
            if "meta.json" not in archive.files:
                raise CheckpointError(f"{path} is not a minivit checkpoint (no meta.json entry)")
            meta = json.loads(archive["meta.json"].tobytes().decode())
            model, optim = {}, {}
            for name in archive.files:
                if name.startswith("model/"):
                    model[name[len("model/"):]] = archive[name]
                elif name.startswith("optim/"):
                    _, i, key = name.split("/", 2)
                    optim.setdefault(int(i), {})[key] = archive[name]
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {e})") from e
    tag = meta.get("format") if isinstance(meta, dict) else None
    if tag != FORMAT:
        raise CheckpointError(f"{path} is not a minivit checkpoint (format tag {tag!r})")
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path} holds no model config")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer minivit (format version {meta['version']})")
    return {"meta": meta, "model": model, "optim": optim, "path": path}


def optimizer_state(ckpt) -> dict:
    """Rebuild the optimizer.state_dict() structure from a loaded checkpoint."""
    opt = ckpt["meta"].get("optimizer")
    if opt is None:
        raise CheckpointError(f"{ckpt['path']} holds no optimizer state")
    state = {int(i): dict(s) for i, s in opt["scalars"].items()}
    for i, arrays in ckpt["optim"].items():
        state.setdefault(i, {}).update(arrays)
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in opt["param_groups"]]
    return {"param_groups": groups, "state": state}


def model_from_checkpoint(path_or_ckpt, **overrides):
    """Build the ViT a checkpoint was saved from and load its weights."""
    from ..vit import ViT, ViTConfig

    ckpt = path_or_ckpt if isinstance(path_or_ckpt, dict) else load_checkpoint(path_or_ckpt)
    config = ViTConfig.from_dict({**ckpt["meta"]["config"], **overrides})
    model = ViT(config=config, dtype=ckpt["meta"].get("dtype", "float32"))
    load_weights(model, ckpt)
    return model, ckpt


def load_weights(model, ckpt):
    """load_state_dict with an error message that says which checkpoint and config differ."""
    try:
        model.load_state_dict(ckpt["model"])
    except (KeyError, ValueError) as e:
        saved = ckpt["meta"].get("config", {})
        diff = {k: (saved.get(k), v) for k, v in model.config.to_dict().items() if saved.get(k) != v}
        detail = f"; config differences (checkpoint, model): {diff}" if diff else ""
        raise CheckpointError(f"checkpoint {ckpt['path']} does not fit this model: {e}{detail}") from e


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def normalization(ckpt):
    """(mean, std) the checkpoint's model was trained with; CheckpointError when absent."""
    norm = ckpt["meta"].get("normalization")
    if not norm:
        raise CheckpointError(f"{ckpt['path']} holds no input normalisation (it was not written by "
                              "`minivit train`); cannot prepare images for it")
    return norm["mean"], norm["std"]


def _host(a):
    return a if isinstance(a, np.ndarray) else a.get()


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in checkpoint metadata")
