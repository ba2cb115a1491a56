"""An exponential moving average (EMA) of the weights (Polyak averaging; used for ViTs by DeiT and
timm's ModelEma, and by the CIFAR speed-run trainers): after each optimizer step n,

    ema <- decay_n * ema + (1 - decay_n) * weights,    decay_n = min(decay, 1 - n^(-3/4))

The warm-up of decay_n (timm's ModelEmaV3 with gamma 1 and power 3/4, its setting for runs of
under 10k steps; TensorFlow's ExponentialMovingAverage has the same idea) makes decay_1 = 0, so
the average starts as the weights after the first step, and then averages over a window that
grows with the run, 1/(1 - decay_n) = n^(3/4) steps (400 at step 3000), until it reaches
1/(1 - decay) steps: a short run's average is not pulled back towards the random init. With
warmup=False, decay_n = decay from step 2 on.

Where the average lives: in the optimizer's per-parameter state, under "ema", beside AdamW's
moments (as optax keeps its ema as optimizer state). So checkpoints save it and resume it
exactly, it sits on the parameters' device, and it is resized with them when the resolution
changes (train/resolution.py), with no new checkpoint format. `ema_weights` swaps it into the
model for a while: evaluation and best.npz use the average, training the weights.
"""
from __future__ import annotations

from contextlib import contextmanager

WARMUP_POWER = 0.75


def ema_decay_at(step, decay, warmup=True):
    """decay_n after optimizer step n (1-based): 0 at n = 1 (the average starts as the weights)."""
    if step <= 1:
        return 0.0
    return min(decay, 1.0 - step ** -WARMUP_POWER) if warmup else decay


def _stepped(optimizer):
    """(parameter, its state) for the parameters the optimizer has updated so far."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return [(p, optimizer.state[i]) for i, p in enumerate(params) if i in optimizer.state]


def update_ema(optimizer, decay):
    """ema <- ema + (1 - decay) * (weights - ema) for every parameter the optimizer updates
    (decay 0: a copy of the weights); in place, on the parameters' device."""
    for p, state in _stepped(optimizer):
        ema = state.get("ema")
        if ema is None or decay == 0.0:
            state["ema"] = p.data.copy()
        else:
            ema += (1.0 - decay) * (p.data - ema)


@contextmanager
def ema_weights(optimizer):
    """Within the block the parameters hold their averages (where there is one yet); after it,
    the very arrays they held before. Nothing is copied: each parameter points at its average."""
    swapped = []
    for p, state in _stepped(optimizer):
        if "ema" in state:
            swapped.append((p, p.data))
            p.data = state["ema"]
    try:
        yield
    finally:
        for p, data in swapped:
            p.data = data
