"""What the two experiment scripts share: training a model for a fixed number of steps with
minivit.train, scoring it on the CIFAR-10 test split, and keeping one JSON row per run.

Every run: seed 0, batch 64, AdamW (lr 1e-3, weight decay 0.05, betas 0.9/0.999), warm-up over
the first 10% of the steps then cosine to 1e-5 at the last step, label smoothing 0.1, gradient
clipping at 1, random crop + flip, no validation split (the test split is scored once, at the
end). The steps are fixed: the Trainer is stopped at `steps` (max_steps) and its learning-rate
schedule is rebuilt for exactly that many, so that every run, whatever its training-set size,
ends its cosine at its last step.

Run folders go to runs/experiments/<experiment>/<run>; config.json, metrics.jsonl and curves.png
are copied next to this file's results (checkpoints are not).
"""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import minivit
from minivit import data as mdata
from minivit import optim
from minivit.analysis.plots import plot_training_curves
from minivit.train import TrainConfig, Trainer, evaluate
from minivit.variants import create_model, family_of

from flops import forward_flops

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg"
BATCH = 64
COMMON = dict(dataset="cifar10", data_dir=str(DATA), batch_size=BATCH, val_size=0, eval_test="never", lr=1e-3,
              min_lr=1e-5, weight_decay=0.05, label_smoothing=0.1, grad_clip=1.0, augment=True, seed=0,
              progress=False, log_every=25, schedule="cosine")

_TEST = {}


def test_loader(mean, std):
    """The 10,000-image CIFAR-10 test split, normalised with the training statistics."""
    if "set" not in _TEST:
        _TEST["set"] = mdata.load_dataset("cifar10", str(DATA), "test")
    return mdata.DataLoader(_TEST["set"], 256, shuffle=False, augment=False, drop_last=False, mean=mean, std=std)


def fwd_mflops(model_name, **model_kwargs):
    """Forward MFLOPs of one 32x32 image (2 x multiply-adds of the dense products)."""
    import numpy as np

    model = create_model(model_name, **model_kwargs)
    return forward_flops(model, np.zeros((1, 3, 32, 32), np.float32)) / 1e6


def train_fixed_steps(experiment, run, model, steps, num_samples=None, trainer_cls=Trainer, cfg_cls=TrainConfig,
                      **extra):
    """Train `model` for exactly `steps` steps of BATCH images and return its result row."""
    out = ROOT / "runs" / "experiments" / experiment / run
    if out.exists():
        shutil.rmtree(out)  # a run is repeated from the start, never resumed half-way
    n = num_samples or 50_000
    epochs = math.ceil(steps / (n // BATCH))  # enough epochs; max_steps stops the run at `steps`
    cfg = cfg_cls(model=model, num_samples=num_samples, epochs=epochs, max_steps=steps, out_dir=str(out),
                  warmup_epochs=0.0, **{**COMMON, "log_every": min(25, steps), **extra})
    t0 = time.perf_counter()
    trainer = trainer_cls(cfg)
    trainer.schedule = optim.WarmupSchedule(trainer.optimizer, steps, round(0.1 * steps), cfg.schedule, cfg.min_lr)
    trainer.fit()
    train_s = time.perf_counter() - t0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    plot_training_curves(records, out / "curves.png")  # a run stopped by max_steps has not drawn it yet
    last = [r for r in records if "train_loss" in r][-1]
    row = {"experiment": experiment, "run": run, "model": model, "family": family_of(model),
           "model_kwargs": extra.get("model_kwargs", {}), "params": trainer.model.num_parameters(),
           "steps": trainer.step, "batch": BATCH, "train_images": len(trainer.train_set),
           "images_seen": trainer.step * BATCH, "train_loss": last["train_loss"], "train_acc": last["train_acc"],
           "minutes": train_s / 60, "seed": cfg.seed}
    if trainer_cls is Trainer:
        row["test_loss"], row["test_acc"] = evaluate(trainer.model, test_loader(trainer.mean, trainer.std))
        row["fwd_mflops"] = fwd_mflops(model, **extra.get("model_kwargs", {}))
        row["train_pflops"] = 3 * row["fwd_mflops"] * 1e6 * row["images_seen"] / 1e15
    keep = Path(__file__).resolve().parents[1] / experiment / run
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "metrics.jsonl", "curves.png"):
        if (out / name).exists():
            shutil.copy(out / name, keep / name)
    print(json.dumps(row), flush=True)
    return row, trainer


def load_rows(path):
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def append_row(path, row):
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def versions():
    import numpy

    return {"minivit": minivit.__version__, "numpy": numpy.__version__}
