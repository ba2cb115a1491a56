"""The dense products of a ViT block, alone: minivit's linear products (kernels/cpu/dense.py's
_blas: OpenBLAS at one thread per chunk on minivit's threads) against PyTorch's, at the shapes of
vit_mini (width 128, MLP 256) and vit_cifar (192, 768), batch 128, 32 px (64 tokens) and 16 px
(16): forward x @ W^T, dx = g @ W, dW = g^T @ x, GFLOP/s, medians of 15 with the same arrays each
time (so their inputs stay in cache, unlike in a training step). Compare with the linear rows of
benchmarks/profile_step.py, which time the same products inside a step.

    python benchmarks/linear_shapes.py
"""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # timm_step, beside this file
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # kernels, from a checkout

from kernels.cpu.dense import _blas  # noqa: E402  (after numpy and torch, as a user's script)
from timm_step import matmul_peaks, median_seconds  # noqa: E402

WIDTHS = {"vit_mini": (128, 256), "vit_cifar": (192, 768)}  # width D, MLP hidden width
TOKENS = {32: 64, 16: 16}  # image size -> patch tokens at patch 4 (no class token, as the recipe)


def products(M, Din, Dout, data):
    """GFLOP/s of a linear layer's three products, minivit's then PyTorch's, on the same arrays."""
    x = data.standard_normal((M, Din), dtype=np.float32)
    w = data.standard_normal((Dout, Din), dtype=np.float32)
    g = data.standard_normal((M, Dout), dtype=np.float32)
    tx, tw, tg = map(torch.from_numpy, (x, w, g))
    gflop = 2 * M * Din * Dout / 1e9
    calls = {"fwd": lambda: _blas(x, w.T), "dx": lambda: _blas(g, w), "dw": lambda: _blas(g.T, x),
             "t fwd": lambda: tx @ tw.T, "t dx": lambda: tg @ tw, "t dw": lambda: tg.T @ tx}
    return {name: gflop / median_seconds(fn, repeats=15, warmup=2) for name, fn in calls.items()}


def main(batch=128):
    peaks = matmul_peaks()
    print("peak np", peaks["numpy"], "torch", peaks["torch"])
    data = np.random.default_rng(0)
    for size, tokens in TOKENS.items():
        M = batch * tokens
        for D, H in WIDTHS.values():
            for layer, Din, Dout in (("qkv", D, 3 * D), ("proj", D, D), ("fc1", D, H), ("fc2", H, D)):
                rates = products(M, Din, Dout, data)
                print(f"{f'{layer} D{D} {size}px':18s} M={M} {Din}->{Dout}: "
                      + " | ".join(f"{name} {v:6.1f}" for name, v in rates.items()), flush=True)


if __name__ == "__main__":
    main()
