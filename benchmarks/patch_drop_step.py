"""What patch dropout saves in a training step: vit_mini_patch4_32 as the one-hour recipe builds it
(fixed sin-cos position embedding, average pooling, no class token), batch 128, at 32 and 16 px,
with patch_drop_rate 0, 0.25 and 0.5 (and, with --mlp-ratios, other MLP widths); one process, the
settings taking turns, medians of the rounds. NumPy and PyTorch are imported first, as in a user's
script.

    python benchmarks/patch_drop_step.py                 # --rounds 7 --batch-size 128
    python benchmarks/patch_drop_step.py --rates 0.5 --mlp-ratios 2,4    # what a wider MLP costs
"""
from __future__ import annotations

import argparse
import time

import numpy as np

try:
    import torch  # noqa: F401  (imported first, as a user's script does)
except ImportError:
    torch = None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rates", default="0,0.25,0.5")
    p.add_argument("--mlp-ratios", default="2", help="vit_mini's is 2")
    args = p.parse_args(argv)

    import json

    import minivit
    from minivit.train import runinfo

    info = runinfo.describe()
    print(json.dumps({k: info[k] for k in ("started_at", "minivit_source", "cpu", "blas", "env",
                                           "load_average_1min_at_start")}))
    settings = [(float(r), float(m)) for m in args.mlp_ratios.split(",") for r in args.rates.split(",")]
    data = np.random.default_rng(0)
    print(f"{'px':>3s} {'mlp_ratio':>9s} {'patch_drop_rate':>15s} {'tokens':>6s} {'ms/step':>8s} {'images/s':>9s} "
          f"{'x first':>7s}")
    for size in (32, 16):
        steps, times = {}, {s: [] for s in settings}
        for rate, mlp_ratio in settings:
            minivit.manual_seed(0)
            model = minivit.create_model("vit_mini_patch4_32", img_size=size, patch_drop_rate=rate, mlp_ratio=mlp_ratio,
                                         pos_embed="sincos", global_pool="avg", class_token=False)
            opt = minivit.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
            x = data.standard_normal((args.batch_size, 3, size, size), dtype=np.float32)
            y = data.integers(0, 10, args.batch_size)

            def step(model=model, opt=opt, x=x, y=y):
                minivit.functional.cross_entropy(model(x), y, label_smoothing=0.1).backward()
                opt.step()
                opt.zero_grad()

            step()  # warm-up: compilation, memory
            step()
            steps[rate, mlp_ratio] = step
        for _ in range(args.rounds):  # the settings take turns
            for setting in settings:
                start = time.perf_counter()
                steps[setting]()
                times[setting].append(time.perf_counter() - start)
        base = np.median(times[settings[0]])
        patches = (size // 4) ** 2
        for rate, mlp_ratio in settings:
            ms = np.median(times[rate, mlp_ratio])
            kept = max(1, int(patches * (1 - rate))) if rate else patches
            print(f"{size:3d} {mlp_ratio:9g} {rate:15g} {kept:6d} {1e3 * ms:8.1f} {args.batch_size / ms:9.0f} "
                  f"{base / ms:7.2f}")


if __name__ == "__main__":
    main()
