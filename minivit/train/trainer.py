"""Training and evaluation loops behind `minivit train`, `minivit eval` and `minivit demo`.

A run folder holds:
    config.json       the TrainConfig and model config
    metrics.jsonl     one JSON object per logged step and per epoch
    checkpoint.npz    the latest checkpoint (atomic); best.npz the best by validation accuracy
    curves.png        loss and accuracy curves
A checkpoint stores the position inside the epoch, the RNG state and the optimizer state, and
the data order depends only on (seed, epoch, batch), so `resume=True` continues the exact loss
trajectory of an uninterrupted run. Ctrl-C saves a checkpoint before exiting.

On the GPU (`device="cuda"`) the model, optimizer state and batches live there; a training step
copies one small array to the host, at its end: the loss and the number of correct predictions
together, to log them and to stop on divergence. Gradient clipping and the accuracy count stay
on the device; evaluation copies its two totals once per pass. The labels are checked once, on
the host, before the loaders copy any batch to the device (`functional.check_labels`), so that no step
reads them back. Checkpoints hold host arrays, and a run started on one device resumes on either.

Each trick of TrainConfig (config.py) enters the loop at one place: mimetic init where the
model is made; after each step the weight EMA (ema.py), the time-budget schedule (budget.py) and
the switch from low to full resolution (resolution.py); flip TTA in `evaluate`. Evaluation and
best.npz see the weights the run keeps (`_as_kept`: the EMA, at the full size). Checkpoints also
hold the training clock, so that a resumed run keeps a time-budgeted schedule and time limit.
"""
from __future__ import annotations

import json
import math
import os
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import kernels
import numpy as np

from .. import data as mdata
from .. import device as _device
from .. import functional as F
from .. import optim
from .. import rng
from ..autograd import Tensor
from ..data.augment import mix_batch
from ..variants import create_model
from ..vit import ViT, mimetic_init
from .budget import TimeBudgetSchedule, saved_clock
from .checkpoint import (CheckpointError, load_checkpoint, load_weights, optimizer_state, resume_state,
                         save_checkpoint)
from .config import TrainConfig
from .ema import ema_decay_at, ema_weights, update_ema
from .evaluation import evaluate
from .progress import EpochStats, ProgressBar, interrupt_flag, truncate_metrics
from . import runinfo
from .resolution import at_resolution, check_low_res, switch_resolution, to_size


def param_groups(model, weight_decay):
    """Two groups: the parameters weight decay applies to, and those it skips. Each parameter says
    which (nn.Parameter's `no_weight_decay`, set by the module that made it, never read from its
    name): biases, norms, the class token and position embeddings are exempt, as in timm and
    big_vision."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.no_weight_decay else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model, cfg: TrainConfig):
    """The optimizer cfg.optimizer names in optim.OPTIMIZERS, over the model's param_groups."""
    return optim.create_optimizer(cfg.optimizer, param_groups(model, cfg.weight_decay), cfg)


class Trainer:
    """Builds data, model, optimizer and learning-rate schedule from a TrainConfig and runs (or
    resumes) training. `fit()` is the loop: each step (`train_step`) is followed by the
    bookkeeping of `_after_step` (statistics, progress bar, log, periodic checkpoint, Ctrl-C,
    max_steps); each epoch ends with evaluation and a checkpoint (`_end_of_epoch`)."""

    backend = "numpy"  # recorded in config.json; the JAX trainer says "jax"
    # Whether this process writes the run folder (config, metrics, checkpoints, plots) and prints
    # the metrics: False in every process but the first of a multi-process JAX run.
    writes_outputs = True

    def __init__(self, cfg: TrainConfig, resume=False):
        self._created = time.perf_counter()
        self.time_to_first_step = None  # seconds from construction to the end of the first step
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        self.device = _device.require(cfg.device)  # "cpu" or "gpu"; no GPU: DeviceUnavailable, before any work
        # Checked now, applied only while fit() runs: the process-wide choice is restored after.
        self.kernel_choices = kernels.validate(cfg.kernels)  # {op: name}
        self._build_data()
        rng.manual_seed(cfg.seed)
        kw = {"num_classes": self.train_set.num_classes, "in_chans": self.train_set.images.shape[-1],
              **cfg.model_kwargs}
        model = create_model(cfg.model, **kw)
        if cfg.init == "mimetic":
            if not isinstance(model, ViT):
                raise ValueError(f"init='mimetic' sets a ViT's attention; {cfg.model} is a {type(model).__name__}")
            mimetic_init(model, rng.generator())
        self.model = model.to(self.device)  # initialised on the host, then moved
        self.full_img_size = getattr(model.config, "img_size", None)  # evaluation's size, and training's after low res
        if cfg.low_res_size:
            check_low_res(model, cfg.low_res_size)
        if self.backend != "numpy" and (cfg.ema_decay or cfg.flip_tta or cfg.low_res_size or cfg.mixup_alpha
                                        or cfg.cutmix_alpha):
            raise ValueError(f"ema_decay, flip_tta, low_res_size, mixup_alpha and cutmix_alpha are options of the "
                             f"NumPy trainer, not of backend {self.backend!r}")
        self.optimizer = build_optimizer(self.model, cfg)  # its state is made on the parameters' device
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch size {cfg.batch_size} is larger than the training set "
                             f"({len(self.train_set)} images); lower --batch-size")
        total_steps = cfg.epochs * self.steps_per_epoch
        warmup_steps = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        if cfg.schedule_by == "time":
            self.schedule = TimeBudgetSchedule(self.optimizer, cfg.time_limit, warmup_steps, cfg.schedule, cfg.min_lr)
        else:
            self.schedule = optim.WarmupSchedule(self.optimizer, total_steps, warmup_steps, cfg.schedule, cfg.min_lr)
        self.low_res_steps = int(round(cfg.low_res_fraction * total_steps))  # by steps; by time: a fraction of it
        self.step, self.epoch, self.batch = 0, 0, 0  # position of the next step
        self.elapsed = 0.0  # seconds of training at the last step (the clock of time_limit and schedule_by="time")
        self.stats = EpochStats()  # the epoch in progress
        self.best_val = -1.0
        self.resumed = bool(resume)  # run.json keeps the earlier fit() calls of a resumed run only
        if resume:
            self._resume()
        elif cfg.init_from:
            from .finetune import init_from_checkpoint

            init_from_checkpoint(self.model, cfg.init_from)

    # ---- setup -----------------------------------------------------------------------------
    def _build_data(self):
        cfg = self.cfg
        full = mdata.load_dataset(cfg.dataset, cfg.data_dir, "train", num_samples=cfg.num_samples, seed=cfg.seed)
        self.test_set = (mdata.load_dataset(cfg.dataset, cfg.data_dir, "test", seed=cfg.seed)
                         if cfg.eval_test != "never" else None)
        # On the host, before any loader copies a batch to the device: cross_entropy does not read
        # labels back from the GPU. Against the head's outputs (the MPP model has no class head).
        classes = cfg.model_kwargs.get("num_classes") or full.num_classes
        for split, ds in (("train", full), ("test", self.test_set)):
            if ds is not None:
                F.check_labels(ds.labels, classes, f"{cfg.dataset} {split} labels")
        if cfg.val_size:
            self.train_set, self.val_set = mdata.split_train_val(full, cfg.val_size, seed=cfg.seed)
        else:
            self.train_set, self.val_set = full, None
        self.mean, self.std = mdata.stats_for(full)
        common = dict(mean=self.mean, std=self.std, seed=cfg.seed, device=self._loader_device())
        self.train_loader = mdata.DataLoader(self.train_set, cfg.batch_size, shuffle=True, augment=cfg.augment,
                                             drop_last=True, crop_padding=cfg.crop_padding,
                                             trivial_augment=cfg.trivial_augment, random_erase=cfg.random_erase,
                                             random_erase_mode=cfg.random_erase_mode, **common)
        eval_kw = dict(shuffle=False, augment=False, drop_last=False, **common)
        self.val_loader = mdata.DataLoader(self.val_set, 256, **eval_kw) if self.val_set is not None else None
        self.test_loader = mdata.DataLoader(self.test_set, 256, **eval_kw) if self.test_set is not None else None

    def _loader_device(self):
        """Where the loaders hand their batches: the model's device (the JAX trainer: the host)."""
        return self.device

    def _resume(self):
        path = self.out / "checkpoint.npz"
        ckpt = load_checkpoint(path)
        # A run saved before an option existed ran with its default.
        saved = {**asdict(TrainConfig()), **ckpt["meta"].get("train_config", {})}
        changed = {k: (saved.get(k), v) for k, v in asdict(self.cfg).items()
                   if k in self.cfg.trajectory_keys() and saved.get(k) != v}
        if changed:
            raise CheckpointError(f"cannot resume {path}: the run was started with different settings "
                                  f"(saved, now): {changed}")
        state = resume_state(ckpt)  # checked: position, running totals, best_val, RNG state
        clock = saved_clock(ckpt)
        size = ckpt["meta"]["config"].get("img_size")
        if self.cfg.low_res_size and size != self.model.config.img_size:  # saved in the low-resolution phase
            switch_resolution(self.model, self.optimizer, size)
        load_weights(self.model, ckpt)
        self.optimizer.load_state_dict(optimizer_state(ckpt))
        self.step, self.epoch, self.batch = state["step"], state["epoch"], state["batch"]
        self.elapsed = clock["elapsed"]
        if isinstance(self.schedule, TimeBudgetSchedule):
            self.schedule.elapsed, self.schedule.warmup_end = clock["elapsed"], clock["warmup_end"]
        self.schedule.set_step(self.step)
        self.stats = EpochStats(*state["epoch_running"])
        self.best_val = state["best_val"]
        rng.set_rng_state(state["rng_state"])
        if self.writes_outputs:
            truncate_metrics(self.out / "metrics.jsonl", self.step)  # the resumed run logs the rest again

    # ---- one step ------------------------------------------------------------------------------
    def train_step(self, x, y):
        """One optimisation step at the schedule's learning rate; returns (loss, number correct).

        Its one copy to the host comes last: the loss and the number correct, read together once
        the step's work is queued (on the GPU the only wait for the device in a step). So a
        diverged step is caught after its update: the error points to the last good checkpoint."""
        cfg = self.cfg
        lr = self.schedule.get_last_lr()[0]
        # mixup / CutMix (data/augment.py): the loss is the mix of the two images' losses, and a
        # hit is the larger share's label; drawn from (seed, step), so a resumed run draws the same
        x, y_a, y_b, lam = mix_batch(x, y, np.random.default_rng([cfg.seed, self.step, 5]),
                                     cfg.mixup_alpha, cfg.cutmix_alpha)
        logits = self.model(Tensor(x))  # a Tensor: the model takes NumPy and CuPy batches alike
        loss = F.cross_entropy(logits, y_a, cfg.label_smoothing)
        if lam < 1.0:
            loss = lam * loss + (1.0 - lam) * F.cross_entropy(logits, y_b, cfg.label_smoothing)
        self.update(loss)
        xp = _device.array_module(logits.data)
        hits = (logits.data.argmax(axis=1) == xp.asarray(y_a if lam >= 0.5 else y_b)).sum()
        value, correct = _device.to_host(xp.stack([loss.data.astype(xp.float64), hits.astype(xp.float64)])).tolist()
        if not math.isfinite(value):
            raise FloatingPointError(
                f"loss is {value} at step {self.step} (epoch {self.epoch}, lr {lr:.3g}); "
                "training diverged: lower --lr, raise --warmup-epochs or set --grad-clip."
                + (f" The last good checkpoint is {self.out / 'checkpoint.npz'}"
                   if (self.out / "checkpoint.npz").exists() else ""))
        return value, int(correct)

    def update(self, loss):
        """Backward from `loss`, clip the gradients (cfg.grad_clip), one optimizer step, zeroed
        gradients, the schedule one step on: what every training objective does with its loss."""
        loss.backward()
        if self.cfg.grad_clip:
            optim.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.schedule.step()

    # ---- the loop ------------------------------------------------------------------------------
    def fit(self):
        """Train to the end (or to max_steps, or to the time limit). Returns the final metrics dict."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if cfg.flip_tta and type(self).evaluate is not Trainer.evaluate:
            raise ValueError(f"flip_tta is an option of Trainer.evaluate, which {type(self).__name__} replaces")
        if cfg.schedule_by == "time" and not isinstance(self.schedule, TimeBudgetSchedule):
            raise ValueError(f"schedule_by='time': {type(self).__name__} replaced the time-budget schedule")
        run = runinfo.describe()
        earlier = self._earlier_fits()
        self._write_run(earlier + [run])
        try:
            return self._fit()
        finally:
            self._write_run(earlier + [runinfo.finish(run)])

    def _earlier_fits(self):
        """The fit() calls that run.json records already (a resumed run adds its own after them)."""
        if not (self.resumed and self.writes_outputs):
            return []
        try:
            fits = json.loads((self.out / "run.json").read_text())["fits"]
        except (OSError, ValueError, KeyError, TypeError):
            return []
        return [f for f in fits if isinstance(f, dict)] if isinstance(fits, list) else []  # a hand-edited file: skip junk

    def _write_run(self, fits):
        """run.json: for each fit() call, the machine, BLAS and environment, its start and (once it
        returns or fails) its end; replaced whole, so a reader never sees half a file."""
        if self.writes_outputs:
            tmp = self.out / "run.json.tmp"
            tmp.write_text(json.dumps({"fits": fits}, indent=2))
            os.replace(tmp, self.out / "run.json")

    def _fit(self):
        cfg = self.cfg
        final = {}
        with kernels.use(**self.kernel_choices), interrupt_flag() as self._interrupted:
            model_config = self.model.config.to_dict()  # at the full size, also when training starts at low res
            model_config.update({"img_size": self.full_img_size} if cfg.low_res_size else {})
            if self.writes_outputs:
                (self.out / "config.json").write_text(json.dumps(
                    {"train": asdict(cfg), "model": model_config, "params": self.model.num_parameters(),
                     "backend": self.backend, "device": self.device, "kernels": kernels.selection(self.device)},
                    indent=2))
            self.model.train()
            self._fit_start, self._elapsed_before = time.perf_counter(), self.elapsed
            self._follow_resolution()
            while self.epoch < cfg.epochs:
                if self._stop_requested() or self._run_epoch():
                    return self._stopped()
                final = self._end_of_epoch()
        return final

    def _clock(self):
        """Seconds of training so far: this fit() call's, plus those before the checkpoint it resumed."""
        return self._elapsed_before + time.perf_counter() - self._fit_start

    def _stopped(self):
        """The result of a run stopped early: by max_steps as it is; by the time limit with an
        evaluation of the model as it stands (metrics.jsonl and best.npz get it too)."""
        if not self._out_of_time():
            return {"stopped_at_step": self.step}
        record = {"step": self.step, "epoch": self.epoch + self.batch / self.steps_per_epoch,
                  "stopped": "time_limit", "seconds": self._clock()}
        return {"stopped_at_step": self.step, **self._evaluate_and_keep(record, self.cfg.eval_test != "never")}

    def _run_epoch(self):
        """Steps from the current position to the end of the epoch; True if a stop came first."""
        bar = ProgressBar(self.steps_per_epoch, self.batch, f"epoch {self.epoch + 1}/{self.cfg.epochs}",
                          self.cfg.progress)
        t0 = time.perf_counter() - self.stats.seconds
        with bar:
            for x, y in self.train_loader.epoch(self.epoch, start=self.batch):
                x = to_size(x, self.model.config.img_size) if self.cfg.low_res_size else x
                loss, hits = self.train_step(x, y)
                # the batch size, not len(y): one process of several holds only its rows of the batch
                self.stats.add(loss, hits, self.cfg.batch_size, time.perf_counter() - t0)
                if self._after_step(loss, bar):
                    return True
        self.epoch, self.batch = self.epoch + 1, 0
        return False

    def _after_step(self, loss, bar):
        """Bookkeeping after each step; True when training must stop here (saved first)."""
        if self.time_to_first_step is None:  # data, model and kernel compilation included
            self.time_to_first_step = time.perf_counter() - self._created
        self.step, self.batch = self.step + 1, self.batch + 1
        self.elapsed = self._clock()  # one reading per step: the schedule and the resolution follow it
        stats, cfg = self.stats, self.cfg
        if cfg.ema_decay:
            update_ema(self.optimizer, ema_decay_at(self.step, cfg.ema_decay, cfg.ema_warmup))
        if isinstance(self.schedule, TimeBudgetSchedule):
            self.schedule.set_elapsed(self.elapsed)  # the learning rate of the next step
        self._follow_resolution()
        bar.update(loss=f"{loss:.3f}", acc=f"{stats.accuracy:.3f}", img_s=f"{stats.images_per_s:.0f}")
        if self.step % cfg.log_every == 0:
            self._log({"step": self.step, "epoch": self.epoch + self.batch / self.steps_per_epoch,
                       "train_loss": stats.loss, "train_acc": stats.accuracy,
                       "lr": self.optimizer.param_groups[0]["lr"], "images_per_s": stats.images_per_s,
                       **({"img_size": self.model.config.img_size} if cfg.low_res_size else {})})
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

    def _follow_resolution(self):
        """With low_res_size: the low size for the first low_res_fraction of the budget (steps, or
        seconds of time_limit by time), then the full size; switched between two steps."""
        cfg = self.cfg
        if not cfg.low_res_size:
            return
        low = (self.elapsed < cfg.low_res_fraction * cfg.time_limit if cfg.schedule_by == "time"
               else self.step < self.low_res_steps)
        size = cfg.low_res_size if low else self.full_img_size
        if size != self.model.config.img_size:
            switch_resolution(self.model, self.optimizer, size)
            print(f"\nstep {self.step} ({self.elapsed:.0f} s): training at {size}x{size} pixels")

    def _stop_requested(self):
        return (self.cfg.max_steps is not None and self.step >= self.cfg.max_steps) or self._out_of_time()

    def _out_of_time(self):
        limit = self.cfg.time_limit
        return limit is not None and hasattr(self, "_fit_start") and self._clock() > limit

    def _end_of_epoch(self):
        record = {"epoch": self.epoch, "step": self.step, "train_loss": self.stats.loss,
                  "train_acc": self.stats.accuracy, "images_per_s": self.stats.images_per_s}
        self.stats = EpochStats()
        last = self.epoch == self.cfg.epochs
        return self._evaluate_and_keep(record, self.cfg.eval_test == "epoch" or (last and self.cfg.eval_test == "end"))

    def _evaluate_and_keep(self, record, test):
        """Evaluate (validation, and the test set if `test`) into the record, log and print it,
        save the checkpoint, and best.npz when it is the best so far: by validation accuracy,
        else by test accuracy where every epoch has one, else the latest. best_val goes into the
        checkpoint saved right after, so a resumed run compares against the right value."""
        if self.val_loader is not None:
            record["val_loss"], record["val_acc"] = self._evaluate(self.val_loader)
        if test and self.test_loader is not None:
            record["test_loss"], record["test_acc"] = self._evaluate(self.test_loader)
        self._log(record)
        if self.writes_outputs:
            print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
        score = record.get("val_acc", record.get("test_acc") if self.cfg.eval_test == "epoch" else None)
        is_best = score is None or score > self.best_val
        self.best_val = self.best_val if score is None else max(score, self.best_val)
        self.save()
        if is_best:
            with self._as_kept():
                self.save(self.out / "best.npz")  # the weights that were evaluated
        self._plot()
        return record

    def _evaluate(self, loader):
        with self._as_kept():
            return self.evaluate(loader)

    def _as_kept(self):
        """A context in which the model holds the weights the run keeps, what evaluation scores and
        best.npz holds: the EMA when on, at the full size also during a low-resolution phase."""
        stack = ExitStack()
        if self.cfg.ema_decay:
            stack.enter_context(ema_weights(self.optimizer))
        if self.cfg.low_res_size:
            stack.enter_context(at_resolution(self.model, self.full_img_size))
        return stack

    def evaluate(self, loader):
        """(mean loss, accuracy) of the model over `loader`; the JAX trainer runs it in JAX."""
        return evaluate(self.model, loader, flip_tta=self.cfg.flip_tta)

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
            "device": self.device,
            "clock": {"elapsed": self.elapsed, "warmup_end": getattr(self.schedule, "warmup_end", None)},
        }
        return save_checkpoint(path or self.out / "checkpoint.npz", self.model, self.optimizer, **meta)

    def _log(self, record):
        if not self.writes_outputs:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _plot(self):
        from ..analysis.plots import plot_training_curves

        if not self.writes_outputs:
            return
        records = [json.loads(line) for line in (self.out / "metrics.jsonl").read_text().splitlines() if line]
        plot_training_curves(records, self.out / "curves.png")
