"""Empirical compute cost (ViT paper Section 4.5, Fig. 12): inference throughput against input
resolution for several variants, and the largest batch that fits a memory budget.

Memory is measured with tracemalloc, which sees NumPy's allocations: the peak of one forward
pass at two batch sizes gives a fixed part and a per-image part, and the largest batch is
(budget - fixed) / per_image.
"""
from __future__ import annotations

import time
import tracemalloc

import numpy as np

from ..autograd import no_grad
from ..variants import create_model


def inference_throughput(model, batch_size=32, repeats=3):
    """Images per second of forward passes without gradients (median of `repeats`)."""
    cfg = model.config
    x = np.random.default_rng(0).standard_normal((batch_size, cfg.in_chans, cfg.img_size, cfg.img_size),
                                                 dtype=np.float32)
    model.eval()
    times = []
    with no_grad():
        model(x)  # warm-up (kernel compilation, caches)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return batch_size / float(np.median(times))


def peak_memory(model, batch_size):
    """Peak bytes allocated during one inference forward pass."""
    cfg = model.config
    x = np.zeros((batch_size, cfg.in_chans, cfg.img_size, cfg.img_size), dtype=np.float32)
    model.eval()
    with no_grad():
        tracemalloc.start()
        tracemalloc.reset_peak()
        model(x)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def max_batch_size(model, budget_bytes, probe=(2, 8)):
    """Largest batch whose forward pass stays within budget_bytes (linear fit of two probes)."""
    m1, m2 = peak_memory(model, probe[0]), peak_memory(model, probe[1])
    per_image = max((m2 - m1) / (probe[1] - probe[0]), 1.0)
    fixed = m1 - per_image * probe[0]
    return max(0, int((budget_bytes - fixed) // per_image)), per_image, fixed


def bench_models(names, resolutions, batch_size=32, budget_gib=1.0, repeats=3):
    """Rows of {model, img_size, images_per_s, max_batch, bytes_per_image} for every
    (variant, resolution) whose resolution is divisible by the variant's patch size."""
    rows = []
    for name in names:
        for res in resolutions:
            model = create_model(name, img_size=res)
            if res % model.config.patch_size:
                continue
            ips = inference_throughput(model, batch_size, repeats)
            batch, per_image, _ = max_batch_size(model, budget_gib * 2**30)
            rows.append({"model": name, "img_size": res, "tokens": model.num_tokens, "images_per_s": ips,
                         "max_batch": batch, "bytes_per_image": per_image})
            print(f"{name:26s} {res:4d}px {model.num_tokens:5d} tokens  {ips:8.1f} img/s  "
                  f"max batch {batch:6d} in {budget_gib:g} GiB")
    return rows


def plot_bench(rows, path):
    """Two panels: throughput and max batch size against resolution, a line per model."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for name in dict.fromkeys(r["model"] for r in rows):
        sub = [r for r in rows if r["model"] == name]
        ax1.plot([r["img_size"] for r in sub], [r["images_per_s"] for r in sub], "o-", label=name)
        ax2.plot([r["img_size"] for r in sub], [r["max_batch"] for r in sub], "o-", label=name)
    ax1.set(xlabel="input size (pixels)", ylabel="inference images/s", yscale="log", title="speed")
    ax2.set(xlabel="input size (pixels)", ylabel="largest batch in budget", yscale="log", title="memory")
    ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
