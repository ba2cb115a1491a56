"""The trained models the course ships (tutorials/trained/<name>/) are what their records say:
the command in model.json builds exactly the config stored in weights.npz, the test accuracy in
model.json is the one the run logged, the weights load and are a few MB, and, where CIFAR-10 is on
this machine, the model scores on the fixed test slice exactly what the record says.

The records are written by scripts/export_course_model.py from a finished `minivit train` run.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import asdict

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
TRAINED = ROOT / "tutorials" / "trained"
MODELS = sorted(p.parent for p in TRAINED.glob("*/model.json"))
# The slice was measured on CIFAR-10 as JPEG image folders (train/<class>/*.jpg, test/<class>/*.jpg);
# the official pickled batches hold slightly different pixels (JPEG is lossy), so only a tree counts.
CIFAR_CANDIDATES = [str(ROOT.parent / "shared" / "data" / "cifar10-jpeg"), os.environ.get("MINIVIT_CIFAR10")]


def _cifar10():
    for root in CIFAR_CANDIDATES:
        if root and (Path(root) / "test" / "airplane").is_dir():
            return root
    return None


def _export_script():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import export_course_model
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return export_course_model


def test_the_course_ships_a_model_with_the_papers_defaults():
    """At least one model uses a learned 1D position embedding and a class token (Eq. 1)."""
    from minivit.train.checkpoint import load_checkpoint

    configs = [load_checkpoint(m / "weights.npz")["meta"]["config"] for m in MODELS]
    assert any(c["pos_embed"] == "learn" and c["class_token"] and c["global_pool"] == "token" for c in configs), configs


@pytest.mark.parametrize("folder", MODELS, ids=[m.name for m in MODELS])
def test_the_command_builds_the_config_stored_with_the_weights(folder):
    from minivit import create_model
    from minivit.cli import build_parser
    from minivit.cli.args import train_config_from_args
    from minivit.train import TrainConfig
    from minivit.train.checkpoint import load_checkpoint

    record = json.loads((folder / "model.json").read_text())
    argv = shlex.split(record["command"])
    assert argv[:2] == ["minivit", "train"], record["command"]
    cfg = train_config_from_args(build_parser().parse_args(argv[1:]))
    meta = load_checkpoint(folder / "weights.npz")["meta"]
    saved = meta["train_config"]
    # options added since the model was trained read as their defaults, as a resumed run reads them
    read = asdict(TrainConfig(**saved))
    assert asdict(cfg) == read, {k: (v, read.get(k)) for k, v in asdict(cfg).items() if read.get(k) != v}
    assert all(read[k] == v for k, v in saved.items() if k != "eval_test")  # nothing stored was changed
    config = create_model(cfg.model, num_classes=len(meta["classes"]), **cfg.model_kwargs).config
    built = config.to_dict()
    assert built == type(config).from_dict(meta["config"]).to_dict()  # model options added since: their defaults
    assert all(built[k] == v for k, v in meta["config"].items())  # nothing stored was changed
    assert json.loads((folder / "config.json").read_text())["train"] == saved


@pytest.mark.parametrize("folder", MODELS, ids=[m.name for m in MODELS])
def test_the_record_matches_the_runs_log_and_the_file_is_small(folder):
    from minivit.train.checkpoint import model_from_checkpoint

    record = json.loads((folder / "model.json").read_text())
    final = _export_script().final_test_accuracy(folder / "metrics.jsonl")
    assert record["test_accuracy"] == final["test_acc"] and record["steps"] == final["step"]
    assert (folder / "weights.npz").stat().st_size < 8e6
    model, ckpt = model_from_checkpoint(folder / "weights.npz")
    assert model.num_parameters() == record["parameters"]
    assert "optimizer" not in ckpt["meta"] and "rng_state" not in ckpt["meta"]
    assert all(np.isfinite(np.asarray(v)).all() for v in model.state_dict().values())


@pytest.mark.parametrize("folder", MODELS, ids=[m.name for m in MODELS])
def test_the_weights_score_the_recorded_accuracy_on_the_fixed_test_slice(folder):
    root = _cifar10()
    if root is None:
        pytest.skip("needs CIFAR-10 as JPEG image folders (../shared/data/cifar10-jpeg or MINIVIT_CIFAR10=<tree>)")
    from minivit.train.checkpoint import load_checkpoint, model_from_checkpoint

    export = _export_script()
    record = json.loads((folder / "model.json").read_text())
    want = record["test_slice"]
    assert {k: want[k] for k in export.SLICE} == export.SLICE
    ckpt = load_checkpoint(folder / "weights.npz")
    model, _ = model_from_checkpoint(ckpt)
    acc, correct = export.slice_accuracy(model, ckpt, root)
    assert abs(correct - want["correct"]) <= 2, (correct, want)  # 2 of 1,000: summation order across machines
    assert acc > 0.5  # far above chance (10%): a trained model, not an initialised one
