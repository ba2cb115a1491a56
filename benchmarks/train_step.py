"""minivit vs PyTorch eager on the CPU: training step and inference throughput of the same ViT
with the same weights, measured side by side in one process (alternating rounds, medians), plus
model FLOP/s as a fraction of the machine's measured float32 matrix-product peak.

    python benchmarks/train_step.py                       # vit_cifar_patch4_32, batch 128
    python benchmarks/train_step.py --openblas both       # with OPENBLAS_CORETYPE/L2_SIZE as set, and unset
    python benchmarks/train_step.py --save benchmarks/results/train_step.json

OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE choose NumPy's OpenBLAS kernels and must be set before the
process starts, so `--openblas both` re-runs this script in two child processes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np  # first, as in a user's script

sys.path.insert(0, str(Path(__file__).resolve().parent))

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def model_flops(cfg, batch):
    """Forward multiply-adds x 2 of one batch (matmuls only; the paper's convention)."""
    D, T, P, C = cfg.embed_dim, 1 + (cfg.img_size // cfg.patch_size) ** 2, cfg.patch_size, cfg.in_chans
    Np, H = (cfg.img_size // cfg.patch_size) ** 2, int(cfg.embed_dim * cfg.mlp_ratio)
    per_block = T * D * 3 * D + 2 * T * T * D + T * D * D + 2 * T * D * H
    return 2 * batch * (Np * C * P * P * D + cfg.depth * per_block + D * cfg.num_classes)


def matmul_peak(n=2048, repeats=5):
    """GFLOP/s of a float32 n x n x n np.matmul (median)."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - start)
    return 2 * n**3 / np.median(times) / 1e9


def run(args):
    # torch before minivit, as a user's script does. (This benchmark used to load minivit first so
    # that its OMP_WAIT_POLICY=PASSIVE reached torch's libgomp too, which slowed torch; since
    # kernels/cpu/threads.py the order makes no difference to minivit.)
    import torch
    from torch_vit import from_minivit

    import minivit

    torch.set_num_threads(args.threads)
    minivit.manual_seed(0)
    model = minivit.create_model(args.model)
    cfg = model.config
    for p in model.parameters():  # a non-zero head, so gradients flow everywhere
        p.data += minivit.nn.trunc_normal(p.shape, 0.02)
    tmodel = from_minivit(model)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch_size, cfg.in_chans, cfg.img_size, cfg.img_size), dtype=np.float32)
    y = rng.integers(0, cfg.num_classes, args.batch_size)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    with minivit.no_grad():
        ours = model(x).numpy()
    with torch.no_grad():
        theirs = tmodel(tx).numpy()
    err = float(np.abs(ours - theirs).max() / np.abs(theirs).max())

    opt = minivit.optim.AdamW(model.parameters(), lr=1e-4)
    topt = torch.optim.AdamW(tmodel.parameters(), lr=1e-4)

    def ours_train():
        loss = minivit.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()

    def torch_train():
        loss = torch.nn.functional.cross_entropy(tmodel(tx), ty)
        loss.backward()
        topt.step()
        topt.zero_grad()

    def ours_infer():
        with minivit.no_grad():
            model(x)

    def torch_infer():
        with torch.no_grad():
            tmodel(tx)

    fns = {"minivit_train": ours_train, "torch_train": torch_train, "minivit_infer": ours_infer,
           "torch_infer": torch_infer}
    for fn in fns.values():  # warm-up: Numba compilation, allocator, thread pools
        for _ in range(args.warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(args.rounds):  # alternate so that machine noise hits both sides alike
        for name, fn in fns.items():
            # Let the other framework's idle worker threads stop spinning (OpenMP and OpenBLAS
            # pools busy-wait after a parallel region) before timing this one.
            time.sleep(args.settle)
            for _ in range(args.steps):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    med = {k: float(np.median(v)) for k, v in times.items()}
    peak = matmul_peak()
    fwd = model_flops(cfg, args.batch_size)
    result = {
        "model": args.model, "batch_size": args.batch_size, "threads": args.threads,
        "openblas_env": {v: os.environ.get(v) for v in OPENBLAS_VARS + ("OPENBLAS_THREAD_TIMEOUT",)},
        "logits_rel_err_vs_torch": err,
        "median_s": med,
        "images_per_s": {k: args.batch_size / v for k, v in med.items()},
        "train_ratio_minivit_over_torch": med["torch_train"] / med["minivit_train"],
        "infer_ratio_minivit_over_torch": med["torch_infer"] / med["minivit_infer"],
        "matmul_peak_gflops": peak,
        "train_gflops": {k: 3 * fwd / med[k] / 1e9 for k in ("minivit_train", "torch_train")},
        "infer_gflops": {k: fwd / med[k] / 1e9 for k in ("minivit_infer", "torch_infer")},
        "kernels": __import__("kernels").selection(),
        "numpy": np.__version__, "torch": torch.__version__,
    }
    result["train_fraction_of_peak"] = {k: v / peak for k, v in result["train_gflops"].items()}
    return result


def report(r):
    env = ", ".join(f"{k}={v}" for k, v in r["openblas_env"].items())
    ips = r["images_per_s"]
    print(f"\n{r['model']} batch {r['batch_size']}, {r['threads']} threads, {env}")
    print(f"  logits vs torch: rel. error {r['logits_rel_err_vs_torch']:.2e}")
    print(f"  {'':10s} {'minivit img/s':>14s} {'torch img/s':>12s} {'ratio':>7s}")
    print(f"  {'train':10s} {ips['minivit_train']:14.1f} {ips['torch_train']:12.1f} "
          f"{r['train_ratio_minivit_over_torch']:7.2f}")
    print(f"  {'inference':10s} {ips['minivit_infer']:14.1f} {ips['torch_infer']:12.1f} "
          f"{r['infer_ratio_minivit_over_torch']:7.2f}")
    print(f"  matmul peak {r['matmul_peak_gflops']:.1f} GFLOP/s; training at "
          f"{r['train_gflops']['minivit_train']:.1f} GFLOP/s = {r['train_fraction_of_peak']['minivit_train']:.0%} "
          f"of peak (torch {r['train_fraction_of_peak']['torch_train']:.0%})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_cifar_patch4_32")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--steps", type=int, default=3, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--settle", type=float, default=0.5, help="seconds of idle before each timed section")
    p.add_argument("--openblas", choices=["asis", "unset", "both"], default="asis")
    p.add_argument("--save", help="write the results as JSON here")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.openblas == "asis":
        results = [run(args)]
    else:
        modes = ["asis", "unset"] if args.openblas == "both" else ["unset"]
        results = []
        for mode in modes:
            env = dict(os.environ)
            if mode == "unset":
                for v in OPENBLAS_VARS:
                    env.pop(v, None)
            given = argv if argv is not None else sys.argv[1:]
            child = [a for i, a in enumerate(given)
                     if not a.startswith("--openblas") and (i == 0 or given[i - 1] != "--openblas")]
            out = subprocess.run([sys.executable, __file__, *child, "--json"], env=env, check=True,
                                 capture_output=True, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps(results[0]))
        return
    for r in results:
        report(r)
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
