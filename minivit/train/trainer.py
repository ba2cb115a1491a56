"""Training and evaluation loops behind `minivit train`, `minivit eval` and `minivit demo`.

A run folder holds:
    config.json       the TrainConfig and model config
    metrics.jsonl     one JSON object per logged step and per epoch
    checkpoint.npz    the latest checkpoint (atomic); best.npz the best by validation accuracy
    curves.png        loss and accuracy curves
A checkpoint stores the position inside the epoch, the RNG state and the optimizer state, and
the data order depends only on (seed, epoch, batch), so `resume=True` continues the exact loss
trajectory of an uninterrupted run. Ctrl-C saves a checkpoint before exiting.
"""
from __future__ import annotations

import json
import math
import numbers
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


import kernels

from .. import data as mdata
from .. import functional as F
from .. import optim
from .. import rng
from ..autograd import no_grad
from ..variants import create_model
from ..vit import config_from_dict
from .checkpoint import (CheckpointError, load_checkpoint, load_weights, optimizer_state, resume_state,
                         save_checkpoint)


@dataclass
class TrainConfig:
    model: str = "vit_cifar_patch4_32"
    model_kwargs: dict = field(default_factory=dict)  # ViT overrides, e.g. {"depth": 4}
    dataset: str = "cifar10"
    data_dir: str | None = None
    num_samples: int | None = None  # a subset of the training set (procedural: how many to generate)
    val_size: float = 5000  # images carved from train for validation: a count (>= 1), a fraction (< 1), or 0
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adamw"  # adamw | adam | sgd
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd only
    warmup_epochs: float = 1.0
    schedule: str = "cosine"  # cosine | linear | constant
    label_smoothing: float = 0.0
    grad_clip: float | None = 1.0
    augment: bool = True
    seed: int = 0
    out_dir: str = "runs/run"
    kernels: str = ""  # e.g. "attention=cpu_v1,layernorm=reference", or "reference" for every op
    log_every: int = 20
    eval_test: bool = True  # report test accuracy at the end of every epoch
    save_every: int = 0  # also checkpoint every this many steps (0: at epoch ends only)
    max_steps: int | None = None  # stop (with a checkpoint) after this many steps in total
    init_from: str | None = None  # start from these weights (fine-tuning); see finetune.py
    progress: bool = True

    def __post_init__(self):
        integers = {"epochs": 1, "batch_size": 1, "log_every": 1, "save_every": 0, "seed": 0}
        for name, low in integers.items():
            _check(name, getattr(self, name), integer=True, low=low)
        for name in ("num_samples", "max_steps"):
            if getattr(self, name) is not None:
                _check(name, getattr(self, name), integer=True, low=1)
        for name in ("lr", "min_lr", "weight_decay", "warmup_epochs", "val_size"):
            _check(name, getattr(self, name), low=0)
        _check("momentum", self.momentum, low=0, high=1)
        _check("label_smoothing", self.label_smoothing, low=0, high=1, high_closed=True)
        if self.grad_clip is not None:
            _check("grad_clip", self.grad_clip, low=0, low_open=True)
        if self.val_size >= 1:  # a count: 5000 and 5000.0 both mean 5000 images
            if self.val_size != int(self.val_size):
                raise ValueError(f"val_size is a count of images (>= 1) or a fraction (< 1), got {self.val_size}")
            self.val_size = int(self.val_size)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in optim.SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(optim.SCHEDULES)}, got {self.schedule!r}")
        if not isinstance(self.model_kwargs, dict):
            raise TypeError(f"model_kwargs must be a dict of ViT options, got {self.model_kwargs!r}")

    @classmethod
    def from_dict(cls, d):
        return config_from_dict(cls, d, "training")


OPTIMIZERS = ("adamw", "adam", "sgd")


def _check(name, value, integer=False, low=None, high=None, low_open=False, high_closed=False):
    """A TypeError or ValueError naming the option, what it must be, and what it got."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        raise TypeError(f"{name} must be {'an integer' if integer else 'a finite number'}, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value > high if high_closed else value >= high)
    if too_low or too_high:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<=' if high_closed else '<'} {high}"
        raise ValueError(f"{name} must be {' and '.join(filter(None, (lo, hi)))}, got {value!r}")


def param_groups(model, weight_decay):
    """Decay matrices only: biases, norms, class token and position embeddings are exempt (as
    in timm and big_vision)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        exempt = p.ndim <= 1 or "pos_embed" in name or "cls_token" in name or "rel_pos_bias" in name
        (no_decay if exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model, cfg: TrainConfig):
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "adam":
        return optim.Adam(groups, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    raise ValueError(f"optimizer must be adamw, adam or sgd, got {cfg.optimizer!r}")


def evaluate(model, loader, label_smoothing=0.0):
    """(mean loss, accuracy) over a loader, without gradients, in eval mode."""
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    with no_grad():
        for x, y in loader.epoch(0):
            logits = model(x)
            total_loss += float(F.cross_entropy(logits, y, label_smoothing).item()) * len(y)
            correct += int((logits.numpy().argmax(axis=1) == y).sum())
            count += len(y)
    model.train(was_training)
    return total_loss / max(count, 1), correct / max(count, 1)


@dataclass
class EpochStats:
    """Running totals of the epoch in progress; a checkpoint saves them, so that an epoch resumed
    half-way reports the same mean loss and accuracy as one run through."""

    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0

    def add(self, loss, correct, n, seconds):
        self.loss_sum, self.correct, self.seen = self.loss_sum + loss * n, self.correct + correct, self.seen + n
        self.seconds = seconds

    @property
    def loss(self):
        return self.loss_sum / max(self.seen, 1)

    @property
    def accuracy(self):
        return self.correct / max(self.seen, 1)

    @property
    def images_per_s(self):
        return self.seen / self.seconds if self.seconds > 0 else 0.0

    def to_list(self):
        return [self.loss_sum, self.correct, self.seen, self.seconds]


class Trainer:
    """Builds data, model, optimizer and learning-rate schedule from a TrainConfig and runs (or
    resumes) training. `fit()` is the loop: each step (`train_step`) is followed by the
    bookkeeping of `_after_step` (statistics, progress bar, log, periodic checkpoint, Ctrl-C,
    max_steps); each epoch ends with evaluation and a checkpoint (`_end_of_epoch`)."""

    backend = "numpy"  # recorded in config.json; the JAX trainer says "jax"

    def __init__(self, cfg: TrainConfig, resume=False):
        self._created = time.perf_counter()
        self.time_to_first_step = None  # seconds from construction to the end of the first step
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        # Checked now, applied only while fit() runs: the process-wide choice is restored after.
        self.kernel_choices = kernels.validate(cfg.kernels)  # {op: name}
        self._build_data()
        rng.manual_seed(cfg.seed)
        kw = {"num_classes": self.train_set.num_classes, "in_chans": self.train_set.images.shape[-1],
              **cfg.model_kwargs}
        self.model = create_model(cfg.model, **kw)
        self.optimizer = build_optimizer(self.model, cfg)
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch size {cfg.batch_size} is larger than the training set "
                             f"({len(self.train_set)} images); lower --batch-size")
        total_steps = cfg.epochs * self.steps_per_epoch
        warmup_steps = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        self.schedule = optim.WarmupSchedule(self.optimizer, total_steps, warmup_steps, cfg.schedule, cfg.min_lr)
        self.step, self.epoch, self.batch = 0, 0, 0  # position of the next step
        self.stats = EpochStats()  # the epoch in progress
        self.best_val = -1.0
        if resume:
            self._resume()
        elif cfg.init_from:
            from .finetune import init_from_checkpoint

            init_from_checkpoint(self.model, cfg.init_from)

    # ---- setup -----------------------------------------------------------------------------
    def _build_data(self):
        cfg = self.cfg
        full = mdata.load_dataset(cfg.dataset, cfg.data_dir, "train", num_samples=cfg.num_samples, seed=cfg.seed)
        self.test_set = mdata.load_dataset(cfg.dataset, cfg.data_dir, "test", seed=cfg.seed) if cfg.eval_test else None
        if cfg.val_size:
            self.train_set, self.val_set = mdata.split_train_val(full, cfg.val_size, seed=cfg.seed)
        else:
            self.train_set, self.val_set = full, None
        self.mean, self.std = mdata.stats_for(full)
        common = dict(mean=self.mean, std=self.std, seed=cfg.seed)
        self.train_loader = mdata.DataLoader(self.train_set, cfg.batch_size, shuffle=True, augment=cfg.augment,
                                             drop_last=True, **common)
        eval_kw = dict(shuffle=False, augment=False, drop_last=False, **common)
        self.val_loader = mdata.DataLoader(self.val_set, 256, **eval_kw) if self.val_set is not None else None
        self.test_loader = mdata.DataLoader(self.test_set, 256, **eval_kw) if self.test_set is not None else None

    def _resume(self):
        path = self.out / "checkpoint.npz"
        ckpt = load_checkpoint(path)
        saved = ckpt["meta"].get("train_config", {})
        changed = {k: (saved.get(k), v) for k, v in asdict(self.cfg).items()
                   if k in _TRAJECTORY_KEYS and saved.get(k) != v}
        if changed:
            raise CheckpointError(f"cannot resume {path}: the run was started with different settings "
                                  f"(saved, now): {changed}")
        state = resume_state(ckpt)  # checked: position, running totals, best_val, RNG state
        load_weights(self.model, ckpt)
        self.optimizer.load_state_dict(optimizer_state(ckpt))
        self.step, self.epoch, self.batch = state["step"], state["epoch"], state["batch"]
        self.schedule.set_step(self.step)
        self.stats = EpochStats(*state["epoch_running"])
        self.best_val = state["best_val"]
        rng.set_rng_state(state["rng_state"])
        self._truncate_metrics()

    def _truncate_metrics(self):
        """Drop what was logged after the checkpoint's step: the resumed run logs it again."""
        metrics = self.out / "metrics.jsonl"
        if not metrics.exists():
            return
        kept = []
        for number, line in enumerate(metrics.read_text().splitlines(), 1):
            try:
                record = json.loads(line) if line else None
            except ValueError as e:
                raise CheckpointError(f"cannot resume: {metrics} line {number} is not JSON ({e}); "
                                      "remove the damaged lines and resume again") from e
            if isinstance(record, dict) and record.get("step", 0) <= self.step:
                kept.append(line)
        metrics.write_text("".join(line + "\n" for line in kept))

    # ---- one step ------------------------------------------------------------------------------
    def train_step(self, x, y):
        """One optimisation step at the schedule's learning rate; returns (loss, number correct)."""
        cfg = self.cfg
        logits = self.model(x)
        loss = F.cross_entropy(logits, y, cfg.label_smoothing)
        value = float(loss.item())
        if not math.isfinite(value):
            raise FloatingPointError(
                f"loss is {value} at step {self.step} (epoch {self.epoch}, lr {self.schedule.get_last_lr()[0]:.3g}); "
                "training diverged: lower --lr, raise --warmup-epochs or set --grad-clip."
                + (f" The last good checkpoint is {self.out / 'checkpoint.npz'}"
                   if (self.out / "checkpoint.npz").exists() else ""))
        loss.backward()
        if cfg.grad_clip:
            optim.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.schedule.step()
        return value, int((logits.numpy().argmax(axis=1) == y).sum())

    # ---- the loop ------------------------------------------------------------------------------
    def fit(self):
        """Train to the end (or to max_steps). Returns the final metrics dict."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        final = {}
        with kernels.use(**self.kernel_choices), _interrupt_flag() as self._interrupted:
            (self.out / "config.json").write_text(json.dumps(
                {"train": asdict(cfg), "model": self.model.config.to_dict(), "params": self.model.num_parameters(),
                 "backend": self.backend, "kernels": kernels.selection()}, indent=2))
            self.model.train()
            while self.epoch < cfg.epochs:
                if self._stop_requested() or self._run_epoch():
                    return {"stopped_at_step": self.step}
                final = self._end_of_epoch()
        return final

    def _run_epoch(self):
        """Steps from the current position to the end of the epoch; True if max_steps stopped it."""
        bar = _Progress(self.steps_per_epoch, self.batch, f"epoch {self.epoch + 1}/{self.cfg.epochs}",
                        self.cfg.progress)
        t0 = time.perf_counter() - self.stats.seconds
        with bar:
            for x, y in self.train_loader.epoch(self.epoch, start=self.batch):
                loss, hits = self.train_step(x, y)
                self.stats.add(loss, hits, len(y), time.perf_counter() - t0)
                if self._after_step(loss, bar):
                    return True
        self.epoch, self.batch = self.epoch + 1, 0
        return False

    def _after_step(self, loss, bar):
        """Bookkeeping after each step; True when training must stop here (saved first)."""
        if self.time_to_first_step is None:  # data, model and kernel compilation included
            self.time_to_first_step = time.perf_counter() - self._created
        self.step, self.batch = self.step + 1, self.batch + 1
        stats, cfg = self.stats, self.cfg
        bar.update(loss=f"{loss:.3f}", acc=f"{stats.accuracy:.3f}", img_s=f"{stats.images_per_s:.0f}")
        if self.step % cfg.log_every == 0:
            self._log({"step": self.step, "epoch": self.epoch + self.batch / self.steps_per_epoch,
                       "train_loss": stats.loss, "train_acc": stats.accuracy,
                       "lr": self.optimizer.param_groups[0]["lr"], "images_per_s": stats.images_per_s})
        if cfg.save_every and self.step % cfg.save_every == 0:
            self.save()
        if self._interrupted():
            bar.close()
            path = self.save()
            print(f"\ninterrupted: saved {path} at step {self.step}; continue with: "
                  f"minivit train ... --resume --out {self.out}")
            raise KeyboardInterrupt
        if self._stop_requested():
            self.save()
            return True
        return False

    def _stop_requested(self):
        return self.cfg.max_steps is not None and self.step >= self.cfg.max_steps

    def _end_of_epoch(self):
        record = {"epoch": self.epoch, "step": self.step, "train_loss": self.stats.loss,
                  "train_acc": self.stats.accuracy, "images_per_s": self.stats.images_per_s}
        self.stats = EpochStats()
        if self.val_loader is not None:
            record["val_loss"], record["val_acc"] = self.evaluate(self.val_loader)
        if self.test_loader is not None:
            record["test_loss"], record["test_acc"] = self.evaluate(self.test_loader)
        self._log(record)
        print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
        # Best by validation accuracy (else test, else the latest epoch); best_val goes into the
        # checkpoint saved right after, so a resumed run compares against the right value.
        val = record.get("val_acc", record.get("test_acc", float(self.epoch)))
        is_best = val > self.best_val
        self.best_val = max(val, self.best_val)
        self.save()
        if is_best:
            self.save(self.out / "best.npz")
        self._plot()
        return record

    def evaluate(self, loader):
        """(mean loss, accuracy) of the model over `loader`; the JAX trainer runs it in JAX."""
        return evaluate(self.model, loader)

    # ---- outputs -------------------------------------------------------------------------------
    def save(self, path=None):
        meta = {
            "position": {"step": self.step, "epoch": self.epoch, "batch": self.batch},
            "epoch_running": self.stats.to_list(),
            "rng_state": rng.get_rng_state(),
            "train_config": asdict(self.cfg),
            "classes": list(self.train_set.classes),
            "normalization": {"mean": list(self.mean), "std": list(self.std)},
            "best_val": self.best_val,
        }
        return save_checkpoint(path or self.out / "checkpoint.npz", self.model, self.optimizer, **meta)

    def _log(self, record):
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _plot(self):
        from ..analysis.plots import plot_training_curves

        records = [json.loads(line) for line in (self.out / "metrics.jsonl").read_text().splitlines() if line]
        plot_training_curves(records, self.out / "curves.png")


# Settings that change the loss trajectory: a resumed run must use the same ones.
_TRAJECTORY_KEYS = ("model", "model_kwargs", "dataset", "num_samples", "val_size", "epochs", "batch_size",
                    "optimizer", "lr", "min_lr", "weight_decay", "momentum", "warmup_epochs", "schedule",
                    "label_smoothing", "grad_clip", "augment", "seed")


class _interrupt_flag:
    """Within the block, the first Ctrl-C only sets a flag that the loop checks after each step
    (so the checkpoint it saves is consistent); a second Ctrl-C interrupts at once."""

    def __enter__(self):
        import signal
        import threading

        self.hit = False
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return lambda: self.hit

    def _handler(self, signum, frame):
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True
        print("\nCtrl-C: saving a checkpoint after this step (press again to quit at once)")

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


class _Progress:
    """A tqdm bar over an epoch's steps, or nothing when progress is off."""

    def __init__(self, total, initial, desc, enabled):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)

    def update(self, **postfix):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(**postfix)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
