"""Where one CPU training step's time goes: each kernel (forward and backward) with its calls,
milliseconds and GFLOP/s, and what is left between them (autograd's views and adds, the graph
walk, Python). Imports NumPy and PyTorch first, as a user's script does.

    python benchmarks/profile_step.py                                  # vit_mini, batch 128
    python benchmarks/profile_step.py --model vit_cifar_patch4_32 --batch-size 128 --steps 5
    python benchmarks/profile_step.py --markdown                       # the README's table
    python benchmarks/profile_step.py --inference                      # a forward pass without gradients
    python benchmarks/profile_step.py --model-kwargs '{"img_size": 16, "patch_drop_rate": 0.5,
        "pos_embed": "sincos", "global_pool": "avg", "class_token": false}'   # the one-hour recipe's model

How: every implementation the registry hands out (`kernels.get`, which minivit's autograd and
optimizer call for each fused op) is wrapped with a timer for the profiled steps; a step is
forward + loss + backward + AdamW + zero_grad, timed as a whole too. FLOPs are 2 x the
multiply-adds of the products each dense kernel performs, counted from its input shapes
(attention's backward: its four products, not the forward a flash kernel recomputes).
The timer's own cost (two perf_counter calls a kernel, about 1 us) is in the kernel rows.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections import defaultdict

import numpy  # noqa: F401  (first, as in a user's script)

try:
    import torch  # noqa: F401
except ImportError:
    torch = None


def _flops(op, arrays, params):
    """(forward, backward) FLOPs of one call from its input arrays; (0, 0) for row/elementwise ops."""
    if op == "matmul":
        a, b = arrays[:2]
        f = 2 * math.prod(numpy.broadcast_shapes(a.shape[:-2], b.shape[:-2])) * a.shape[-2] * a.shape[-1] * b.shape[-1]
        return f, 2 * f
    if op == "linear":
        x, w = arrays[:2]  # x (..., Din), w (Dout, Din)
        f = 2 * math.prod(x.shape[:-1]) * w.shape[0] * w.shape[1]
        return f, 2 * f
    if op == "patch_embed":
        x, w = arrays[:2]  # x (B, C, H, W), w (D, C, P, P)
        P = w.shape[-1]
        f = 2 * x.shape[0] * (x.shape[2] // P) * (x.shape[3] // P) * w.shape[0] * w.shape[1] * P * P
        return f, f  # its backward needs only dw: the image gets no gradient
    if op == "attention":
        q = arrays[0]  # (B, Hh, N, hd)
        f = 4 * math.prod(q.shape[:-2]) * q.shape[-2] ** 2 * q.shape[-1]  # QK^T and PV
        return f, 2 * f
    return 0, 0


class Profile:
    def __init__(self):
        self.on = False
        self.calls = defaultdict(int)
        self.seconds = defaultdict(float)
        self.flops = defaultdict(float)

    def wrap(self, impl):
        prof, op = self, impl.op

        def forward(*arrays, **params):
            if not prof.on:
                return impl.forward(*arrays, **params)
            fwd, bwd = _flops(op, arrays, params)
            start = time.perf_counter()
            out, cache = impl.forward(*arrays, **params)
            prof.add((op, "fwd"), time.perf_counter() - start, fwd)
            return out, _Timed(cache, bwd)

        def backward(grad, cache):
            if not isinstance(cache, _Timed):
                return impl.backward(grad, cache)
            start = time.perf_counter()
            grads = impl.backward(grad, cache.cache)
            prof.add((op, "bwd"), time.perf_counter() - start, cache.flops)
            return grads

        def foreach(*lists, **params):
            start = time.perf_counter()
            out = impl.foreach(*lists, **params)
            if prof.on:
                prof.add((op, "fwd"), time.perf_counter() - start, 0)
            return out

        return dataclasses.replace(impl, forward=forward, backward=backward if impl.backward else None,
                                   **({"foreach": foreach} if getattr(impl, "foreach", None) else {}))

    def add(self, key, seconds, flops):
        self.calls[key] += 1
        self.seconds[key] += seconds
        self.flops[key] += flops


@dataclasses.dataclass
class _Timed:
    cache: object
    flops: float


def make_step(model_name, batch, inference=False, model_kwargs=None):
    """A function that runs one step of a fresh model (seed 0) on fixed random images: forward + loss
    (label smoothing 0.1) + backward + AdamW + zero_grad, or with `inference` a forward pass without
    gradients in eval mode. benchmarks/impl_step.py times the same step."""
    import minivit

    minivit.manual_seed(0)
    model = minivit.create_model(model_name, **(model_kwargs or {}))
    cfg = model.config
    opt = minivit.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((batch, cfg.in_chans, cfg.img_size, cfg.img_size), dtype=numpy.float32)
    y = rng.integers(0, cfg.num_classes, batch)
    if inference:
        model.eval()  # no dropout or patch dropout in a forward pass without gradients

    def step():
        if inference:
            with minivit.no_grad():
                model(x)
            return
        minivit.functional.cross_entropy(model(x), y, label_smoothing=0.1).backward()
        opt.step()
        opt.zero_grad()

    return step


def profile(model_name, batch, steps, warmup, inference=False, model_kwargs=None):
    import kernels
    from kernels import registry

    prof = Profile()
    original = registry.get
    wrapped = {}

    def get(op, device="cpu"):
        impl = original(op, device)
        key = (impl.op, impl.name, impl.device)
        if key not in wrapped:
            wrapped[key] = prof.wrap(impl)
        return wrapped[key]

    kernels.get = registry.get = get
    try:
        step = make_step(model_name, batch, inference, model_kwargs)
        for _ in range(warmup):
            step()
        totals = []
        prof.on = True
        for _ in range(steps):
            start = time.perf_counter()
            step()
            totals.append(time.perf_counter() - start)
        prof.on = False
    finally:
        kernels.get = registry.get = original
    return prof, totals, kernels.selection()


def report(model_name, batch, prof, totals, selection, markdown=False):
    steps = len(totals)
    step_ms = 1e3 * sum(totals) / steps
    rows = sorted(prof.seconds, key=lambda k: -prof.seconds[k])
    kernel_ms = 1e3 * sum(prof.seconds.values()) / steps
    all_flops = sum(prof.flops.values()) / steps
    if markdown:
        print("| op (kernel) | pass | calls/step | ms/step | share | GFLOP/s |")
        print("|---|---|---|---|---|---|")
    else:
        print(f"{model_name}, batch {batch}: {step_ms:.1f} ms a step (mean of {steps}), "
              f"{batch / step_ms * 1e3:.1f} images/s, {all_flops / step_ms / 1e6:.1f} GFLOP/s over the step")
        print(f"{'op (kernel)':34s} {'pass':4s} {'calls':>5s} {'ms/step':>8s} {'share':>6s} {'GFLOP/s':>8s}")
    for key in rows:
        op, direction = key
        ms = 1e3 * prof.seconds[key] / steps
        gflops = f"{prof.flops[key] / prof.seconds[key] / 1e9:.1f}" if prof.flops[key] else "-"
        name = f"{op} ({selection.get(op, '?')})"
        cells = [name, direction, f"{prof.calls[key] // steps}", f"{ms:.1f}", f"{ms / step_ms:.0%}", gflops]
        print(("| " + " | ".join(cells) + " |") if markdown else
              f"{cells[0]:34s} {cells[1]:4s} {cells[2]:>5s} {cells[3]:>8s} {cells[4]:>6s} {cells[5]:>8s}")
    rest = step_ms - kernel_ms
    last = ["between kernels: autograd views and adds, graph walk, Python", "", "", f"{rest:.1f}",
            f"{rest / step_ms:.0%}", "-"]
    total = ["whole step", "", "", f"{step_ms:.1f}", "100%", f"{all_flops / step_ms / 1e6:.1f}"]
    for cells in (last, total):
        print(("| " + " | ".join(cells) + " |") if markdown else
              f"{cells[0]:34s} {cells[1]:4s} {cells[2]:>5s} {cells[3]:>8s} {cells[4]:>6s} {cells[5]:>8s}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit_mini_patch4_32")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--inference", action="store_true", help="profile a forward pass without gradients instead")
    p.add_argument("--model-kwargs", type=json.loads, default={}, help="JSON object of create_model options")
    args = p.parse_args(argv)
    prof, totals, selection = profile(args.model, args.batch_size, args.steps, args.warmup, args.inference,
                                      args.model_kwargs)
    report(args.model, args.batch_size, prof, totals, selection, args.markdown)


if __name__ == "__main__":
    main()
