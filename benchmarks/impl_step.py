"""One training step (forward, loss, backward, AdamW) with one op's implementations taking turns in
one process: the same model, batch and arrays, medians of the rounds; NumPy and PyTorch imported
first, as in a user's script. Models: vit_mini and vit_cifar as they are (32 px, class token) and
vit_mini as the one-hour recipe builds it (sin-cos embedding, average pooling, no class token,
patch dropout 0.5) at 32 and 16 px.

    python benchmarks/impl_step.py --op linear --impls cpu_blas,cpu_v2 --rounds 9
    python benchmarks/impl_step.py --op linear --impls cpu_blas,cpu_v2 --inference   # forward, no gradients
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

try:
    import torch  # noqa: F401  (imported first, as a user's script does)
except ImportError:
    torch = None

RECIPE = dict(pos_embed="sincos", global_pool="avg", class_token=False, patch_drop_rate=0.5)
SETUPS = {  # name -> (model, create_model options)
    "vit_mini": ("vit_mini_patch4_32", {}),
    "vit_cifar": ("vit_cifar_patch4_32", {}),
    "recipe_32px": ("vit_mini_patch4_32", dict(RECIPE, img_size=32)),
    "recipe_16px": ("vit_mini_patch4_32", dict(RECIPE, img_size=16)),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--op", default="linear")
    p.add_argument("--impls", default="cpu_blas,cpu_v2")
    p.add_argument("--setups", default=",".join(SETUPS))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--inference", action="store_true", help="time a forward pass without gradients (eval mode)")
    args = p.parse_args(argv)

    import kernels
    from minivit.train import runinfo
    from profile_step import make_step  # beside this file: the same step the profile times

    info = runinfo.describe()
    print(json.dumps({k: info[k] for k in ("started_at", "minivit_source", "cpu", "blas", "env",
                                           "load_average_1min_at_start")}))
    impls = args.impls.split(",")
    print(f"{'setup':12s} " + " ".join(f"{i + ' ms':>12s}" for i in impls) + "  " +
          " ".join(f"{i + ' x first':>16s}" for i in impls[1:]))
    for setup in args.setups.split(","):
        name, options = SETUPS[setup]
        step = make_step(name, args.batch_size, args.inference, options)
        times = {i: [] for i in impls}
        for impl in impls:  # warm-up: compilation, memory
            with kernels.use(**{args.op: impl}):
                step()
                step()
        for _ in range(args.rounds):
            for impl in impls:
                with kernels.use(**{args.op: impl}):
                    start = time.perf_counter()
                    step()
                    times[impl].append(time.perf_counter() - start)
        ms = {i: 1e3 * float(np.median(times[i])) for i in impls}
        print(f"{setup:12s} " + " ".join(f"{ms[i]:12.1f}" for i in impls) + "  " +
              " ".join(f"{ms[impls[0]] / ms[i]:16.2f}" for i in impls[1:]))


if __name__ == "__main__":
    main()
