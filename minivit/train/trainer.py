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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import kernels

from .. import data as mdata
from .. import functional as F
from .. import optim
from .. import rng
from ..autograd import no_grad
from ..variants import create_model
from ..vit import config_from_dict
from .checkpoint import CheckpointError, load_checkpoint, load_weights, optimizer_state, save_checkpoint


@dataclass
class TrainConfig:
    model: str = "vit_cifar_patch4_32"
    model_kwargs: dict = field(default_factory=dict)  # ViT overrides, e.g. {"depth": 4}
    dataset: str = "cifar10"
    data_dir: str | None = None
    num_samples: int | None = None  # a subset of the training set (procedural: how many to generate)
    val_size: float = 5000  # images carved from train for validation (count, or fraction < 1); 0 for none
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
    kernels: str = ""  # e.g. "attention=cpu_v1,layernorm=reference"
    log_every: int = 20
    eval_test: bool = True  # report test accuracy at the end of every epoch
    save_every: int = 0  # also checkpoint every this many steps (0: at epoch ends only)
    max_steps: int | None = None  # stop (with a checkpoint) after this many steps in total
    init_from: str | None = None  # start from these weights (fine-tuning); see finetune.py
    progress: bool = True

    @classmethod
    def from_dict(cls, d):
        return config_from_dict(cls, d, "training")


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


class Trainer:
    """Builds data, model and optimizer from a TrainConfig and runs (or resumes) training."""

    def __init__(self, cfg: TrainConfig, resume=False):
        self._created = time.perf_counter()
        self.time_to_first_step = None  # seconds from construction to the end of the first step
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        if cfg.kernels:
            kernels.use(**kernels.parse_spec(cfg.kernels))
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
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.warmup_steps = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        self.step, self.epoch, self.batch = 0, 0, 0  # position of the next step
        self._running = (0.0, 0, 0, 0.0)  # this epoch so far: loss sum, correct, seen, seconds
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
        load_weights(self.model, ckpt)
        self.optimizer.load_state_dict(optimizer_state(ckpt))
        pos = ckpt["meta"]["position"]
        self.step, self.epoch, self.batch = pos["step"], pos["epoch"], pos["batch"]
        self._running = tuple(ckpt["meta"].get("epoch_running", (0.0, 0, 0, 0.0)))
        self.best_val = ckpt["meta"].get("best_val", -1.0)
        rng.set_rng_state(ckpt["meta"]["rng_state"])
        metrics = self.out / "metrics.jsonl"
        if metrics.exists():  # drop what was logged after the checkpoint: it will be logged again
            kept = [line for line in metrics.read_text().splitlines()
                    if line and json.loads(line).get("step", 0) <= self.step]
            metrics.write_text("".join(line + "\n" for line in kept))

    # ---- the loop ----------------------------------------------------------------------------
    def train_step(self, x, y):
        """One optimisation step; returns (loss, number correct)."""
        cfg = self.cfg
        lr_scale = optim.lr_at(self.step, 1.0, self.total_steps, self.warmup_steps, cfg.schedule,
                               cfg.min_lr / cfg.lr if cfg.lr else 0.0)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * lr_scale
        logits = self.model(x)
        loss = F.cross_entropy(logits, y, cfg.label_smoothing)
        value = float(loss.item())
        if not math.isfinite(value):
            raise FloatingPointError(
                f"loss is {value} at step {self.step} (epoch {self.epoch}, lr {cfg.lr * lr_scale:.3g}); "
                "training diverged: lower --lr, raise --warmup-epochs or set --grad-clip."
                + (f" The last good checkpoint is {self.out / 'checkpoint.npz'}"
                   if (self.out / "checkpoint.npz").exists() else ""))
        loss.backward()
        if cfg.grad_clip:
            optim.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return value, int((logits.numpy().argmax(axis=1) == y).sum())

    def fit(self):
        """Train to the end (or to max_steps). Returns the final metrics dict."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(
            {"train": asdict(cfg), "model": self.model.config.to_dict(), "params": self.model.num_parameters(),
             "kernels": kernels.selection()}, indent=2))
        self.model.train()
        final = {}
        with _interrupt_flag() as self._interrupted:
            while self.epoch < cfg.epochs:
                if self._run_epoch():
                    return {"stopped_at_step": self.step}
                final = self._end_of_epoch()
        return final

    def _run_epoch(self):
        """Steps from the current position to the end of the epoch; True if max_steps stopped it."""
        cfg = self.cfg
        if cfg.max_steps is not None and self.step >= cfg.max_steps:
            return True
        bar = _progress(self.steps_per_epoch, self.batch, f"epoch {self.epoch + 1}/{cfg.epochs}", cfg.progress)
        loss_sum, correct, seen, elapsed = self._running
        t0 = time.perf_counter() - elapsed
        rate = 0.0
        for x, y in self.train_loader.epoch(self.epoch, start=self.batch):
            loss, hits = self.train_step(x, y)
            if self.time_to_first_step is None:  # data, model and kernel compilation included
                self.time_to_first_step = time.perf_counter() - self._created
            self.step += 1
            self.batch += 1
            loss_sum, correct, seen = loss_sum + loss * len(y), correct + hits, seen + len(y)
            self._running = (loss_sum, correct, seen, time.perf_counter() - t0)
            rate = seen / self._running[3]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", acc=f"{correct / seen:.3f}", img_s=f"{rate:.0f}")
            if self.step % cfg.log_every == 0:
                self._log({"step": self.step, "epoch": self.epoch + self.batch / self.steps_per_epoch,
                           "train_loss": loss_sum / seen, "train_acc": correct / seen,
                           "lr": self.optimizer.param_groups[0]["lr"], "images_per_s": rate})
            if cfg.save_every and self.step % cfg.save_every == 0:
                self.save()
            if self._interrupted():
                bar is not None and bar.close()
                path = self.save()
                print(f"\ninterrupted: saved {path} at step {self.step}; continue with: "
                      f"minivit train ... --resume --out {self.out}")
                raise KeyboardInterrupt
            if cfg.max_steps is not None and self.step >= cfg.max_steps:
                if bar is not None:
                    bar.close()
                self.save()
                return True
        if bar is not None:
            bar.close()
        self._epoch_train = (loss_sum / max(seen, 1), correct / max(seen, 1), rate)
        self.epoch, self.batch, self._running = self.epoch + 1, 0, (0.0, 0, 0, 0.0)
        return False

    def _end_of_epoch(self):
        train_loss, train_acc, rate = self._epoch_train
        record = {"epoch": self.epoch, "step": self.step, "train_loss": train_loss, "train_acc": train_acc,
                  "images_per_s": rate}
        if self.val_loader is not None:
            record["val_loss"], record["val_acc"] = evaluate(self.model, self.val_loader)
        if self.test_loader is not None:
            record["test_loss"], record["test_acc"] = evaluate(self.model, self.test_loader)
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

    # ---- outputs -------------------------------------------------------------------------------
    def save(self, path=None):
        meta = {
            "position": {"step": self.step, "epoch": self.epoch, "batch": self.batch},
            "epoch_running": list(self._running),
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


def _progress(total, initial, desc, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)
