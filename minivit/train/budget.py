"""A learning-rate schedule that follows a time budget instead of a step count (TrainConfig
schedule_by="time"): a run given an hour decays its learning rate over that hour, to min_lr when
the time is up, whatever speed the machine has, as "budgeted training" does (Li, Yumer & Ramanan,
ICLR 2020: linear decay to zero at the end of the budget).

    warm-up   steps 0 .. W-1: lr = base * (step + 1) / W    (counted in steps, as optim.lr_at)
    decay     afterwards: lr = lr_at(progress), progress = (t - t_W) / (time_limit - t_W)

t is the training time in seconds after the last step (the trainer's clock: evaluations count,
building the data and the model do not; a resumed run starts from the time saved in its
checkpoint) and t_W the time when the warm-up ended. The warm-up stays in steps: it is about the
first updates of the optimizer, not about the budget. The schedule's state is (step, t, t_W);
the trainer saves t and t_W in the checkpoint, so a resumed run computes the same learning rate
for its next step as the run it continues did.
"""
from __future__ import annotations

import math

from .. import optim
from .checkpoint import CheckpointError


class TimeBudgetSchedule(optim.WarmupSchedule):
    """optim.WarmupSchedule with the decay over `time_limit` seconds: the trainer calls
    `set_elapsed(t)` after every step, which sets the learning rate of the next one."""

    def __init__(self, optimizer, time_limit, warmup_steps=0, schedule="cosine", min_lr=0.0):
        self.time_limit = float(time_limit)
        self.elapsed = 0.0
        self.warmup_end = 0.0 if warmup_steps == 0 else None  # seconds at the end of the warm-up
        super().__init__(optimizer, total_steps=warmup_steps + 1, warmup_steps=warmup_steps, schedule=schedule,
                         min_lr=min_lr)

    def set_elapsed(self, seconds):
        self.elapsed = float(seconds)
        if self.warmup_end is None and self.last_step >= self.warmup_steps:
            self.warmup_end = self.elapsed
        self.set_step(self.last_step)

    def progress(self):
        """How far the decay has gone, 0 .. 1 (0 during the warm-up)."""
        if self.warmup_end is None:
            return 0.0
        return min(1.0, max(0.0, (self.elapsed - self.warmup_end) / max(self.time_limit - self.warmup_end, 1e-9)))

    def set_step(self, step):
        self.last_step = int(step)
        first = self.base_lrs[0]
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            min_lr = self.min_lr * base / first if first else self.min_lr  # scaled per group, as WarmupSchedule
            if self.last_step < self.warmup_steps:
                group["lr"] = optim.lr_at(self.last_step, base, self.total_steps, self.warmup_steps, self.schedule,
                                          min_lr)
            else:  # lr_at over a single unit of progress: its "step" is the progress itself
                group["lr"] = optim.lr_at(self.progress(), base, 1, 0, self.schedule, min_lr)

    def state_dict(self):
        return {**super().state_dict(), "elapsed": self.elapsed, "warmup_end": self.warmup_end}

    def load_state_dict(self, state):
        self.elapsed, self.warmup_end = float(state["elapsed"]), state["warmup_end"]
        super().load_state_dict(state)


def saved_clock(ckpt):
    """A checkpoint's training clock, {"elapsed": seconds, "warmup_end": seconds or None}, checked
    (CheckpointError); a run saved before the clock existed restarts it at zero."""
    clock = ckpt["meta"].get("clock") or {"elapsed": 0.0, "warmup_end": None}
    elapsed, end = (clock.get("elapsed"), clock.get("warmup_end")) if isinstance(clock, dict) else (None, None)
    if not _seconds(elapsed) or not (end is None or _seconds(end)):
        raise CheckpointError(f"{ckpt['path']}: meta.json 'clock' should hold seconds >= 0, got {str(clock)[:80]}")
    return {"elapsed": float(elapsed), "warmup_end": end}


def _seconds(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
