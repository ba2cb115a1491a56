"""The bookkeeping around the training loop: the running totals of an epoch, the progress bar,
Ctrl-C turned into a flag that the loop checks after each step (so that it saves a consistent
checkpoint before stopping), and the metrics log cut back to a checkpoint's step on resume."""
from __future__ import annotations

import json
from dataclasses import dataclass

from .checkpoint import CheckpointError


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


class interrupt_flag:
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


class ProgressBar:
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


def truncate_metrics(metrics, step):
    """Drop the records of metrics.jsonl logged after `step` (a resumed run logs them again)."""
    if not metrics.exists():
        return
    kept = []
    for number, line in enumerate(metrics.read_text().splitlines(), 1):
        try:
            record = json.loads(line) if line else None
        except ValueError as e:
            raise CheckpointError(f"cannot resume: {metrics} line {number} is not JSON ({e}); "
                                  "remove the damaged lines and resume again") from e
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
    metrics.write_text("".join(line + "\n" for line in kept))
