"""minivit against timm's VisionTransformer on the CPU, measured the way a user's script runs:
NumPy, PyTorch and timm imported first, then minivit; the same weights in both; training steps
(forward, loss, backward, AdamW) and inference, alternating one step at a time in one process,
no pauses between them; medians of several rounds.

    python benchmarks/timm_step.py                              # vit_mini and vit_cifar, batch 128 and 256
    python benchmarks/timm_step.py --models vit_mini_patch4_32 --batches 128 --rounds 5
    python benchmarks/timm_step.py --import-orders              # the import-order table (fresh processes)
    python benchmarks/timm_step.py --save benchmarks/results/timm_step.json

Needs timm (benchmarks/requirements.txt: pip install -r benchmarks/requirements.txt).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ORDERS = {
    "numpy, torch first": "import numpy, torch, timm\nimport minivit",
    "minivit first": "import minivit\nimport numpy, torch, timm",
    "numpy, torch first; OMP_WAIT_POLICY=PASSIVE OPENBLAS_THREAD_TIMEOUT=4": "import numpy, torch, timm\nimport minivit",
}
ENV_FOR = {"numpy, torch first; OMP_WAIT_POLICY=PASSIVE OPENBLAS_THREAD_TIMEOUT=4":
           {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}}


def median_seconds(fn, repeats, warmup=1):
    """The median time of `repeats` calls of fn(), after `warmup` untimed ones."""
    import numpy as np

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def matmul_peaks(n=2048, repeats=5):
    """GFLOP/s of a float32 n^3 product: NumPy's np.matmul (OpenBLAS, all its threads) and torch."""
    import numpy as np
    import torch

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    ta = torch.from_numpy(a)
    return {name: 2 * n**3 / median_seconds(fn, repeats) / 1e9
            for name, fn in (("numpy", lambda: a @ a), ("torch", lambda: ta @ ta))}


def model_flops(cfg, batch):
    """Forward FLOPs of one batch: 2 x multiply-adds of every product (the paper's convention)."""
    D, P, C = cfg.embed_dim, cfg.patch_size, cfg.in_chans
    Np = (cfg.img_size // P) ** 2
    N, M = Np + 1, int(D * cfg.mlp_ratio)
    per_block = N * D * 3 * D + 2 * N * N * D + N * D * D + 2 * N * D * M
    return 2 * batch * (Np * C * P * P * D + cfg.depth * per_block + D * cfg.num_classes)


def timm_twin(model):
    """timm's VisionTransformer with minivit's config and weights (the state-dict names agree)."""
    import torch
    from timm.models.vision_transformer import VisionTransformer

    c = model.config
    twin = VisionTransformer(img_size=c.img_size, patch_size=c.patch_size, in_chans=c.in_chans,
                             num_classes=c.num_classes, embed_dim=c.embed_dim, depth=c.depth,
                             num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias)
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
    return twin


def measure(name, batch, rounds, warmup):
    import numpy as np
    import torch

    import minivit

    minivit.manual_seed(0)
    model = minivit.create_model(name)
    for p in model.parameters():  # a non-zero head, so that gradients reach every parameter
        p.data += minivit.nn.trunc_normal(p.shape, 0.02)
    twin = timm_twin(model)
    cfg = model.config
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, cfg.in_chans, cfg.img_size, cfg.img_size), dtype=np.float32)
    y = rng.integers(0, cfg.num_classes, batch)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    with minivit.no_grad():
        ours = model(x).numpy()
    with torch.no_grad():
        theirs = twin(tx).numpy()
    opt = minivit.optim.AdamW(model.parameters(), lr=1e-4)
    topt = torch.optim.AdamW(twin.parameters(), lr=1e-4)

    def minivit_train():
        minivit.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()

    def timm_train():
        torch.nn.functional.cross_entropy(twin(tx), ty).backward()
        topt.step()
        topt.zero_grad()

    def minivit_infer():
        with minivit.no_grad():
            model(x)

    def timm_infer():
        with torch.no_grad():
            twin(tx)

    steps = {"minivit_train": minivit_train, "timm_train": timm_train,
             "minivit_infer": minivit_infer, "timm_infer": timm_infer}
    for fn in steps.values():
        for _ in range(warmup):  # Numba compilation, allocators, thread pools
            fn()
    times = {k: [] for k in steps}
    for _ in range(rounds):  # one step each in turn: the machine's load hits both alike
        for k, fn in steps.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    med = {k: float(np.median(v)) for k, v in times.items()}
    flops = model_flops(cfg, batch)
    return {
        "model": name, "batch": batch, "logits_rel_err": float(np.abs(ours - theirs).max() / np.abs(theirs).max()),
        "median_s": med, "images_per_s": {k: batch / v for k, v in med.items()},
        "train_ratio": med["timm_train"] / med["minivit_train"],
        "infer_ratio": med["timm_infer"] / med["minivit_infer"],
        "train_gflops": {k: 3 * flops / med[k] / 1e9 for k in ("minivit_train", "timm_train")},
        "infer_gflops": {k: flops / med[k] / 1e9 for k in ("minivit_infer", "timm_infer")},
    }


def environment():
    import numba
    import numpy as np
    import torch

    import kernels
    from kernels.cpu import threads

    return {"numpy": np.__version__, "torch": torch.__version__, "numba": numba.__version__,
            "numba_threading_layer": numba.threading_layer(), "minivit_threads": threads.num_threads(),
            "torch_threads": torch.get_num_threads(), "kernels": kernels.selection(),
            "env": {v: os.environ.get(v) for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_WAIT_POLICY",
                                                    "OPENBLAS_THREAD_TIMEOUT", "OMP_NUM_THREADS")},
            "load_average_1min": os.getloadavg()[0], "cpu": _cpu_name()}


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def run(args):
    import numpy, torch, timm  # noqa: E401,F401  (first, as in a user's script)

    import minivit  # noqa: F401

    rows = [measure(m, b, args.rounds, args.warmup) for m in args.models for b in args.batches]
    result = {"rows": rows, "matmul_peak_gflops": matmul_peaks(), "environment": environment()}
    for r in rows:
        r["train_fraction_of_numpy_peak"] = r["train_gflops"]["minivit_train"] / result["matmul_peak_gflops"]["numpy"]
    return result


def report(result):
    env = result["environment"]
    print(f"{env['cpu']}; numpy {env['numpy']}, torch {env['torch']}, numba layer {env['numba_threading_layer']}; "
          f"load {env['load_average_1min']:.2f}; matmul peak numpy {result['matmul_peak_gflops']['numpy']:.0f}, "
          f"torch {result['matmul_peak_gflops']['torch']:.0f} GFLOP/s")
    print(f"{'model':22s} {'batch':>5s} {'train img/s (minivit/timm)':>28s} {'ratio':>6s} "
          f"{'infer img/s':>18s} {'ratio':>6s} {'train % peak':>13s}")
    for r in result["rows"]:
        ips = r["images_per_s"]
        print(f"{r['model']:22s} {r['batch']:5d} {ips['minivit_train']:13.1f} / {ips['timm_train']:<12.1f} "
              f"{r['train_ratio']:6.2f} {ips['minivit_infer']:8.1f} / {ips['timm_infer']:<7.1f} "
              f"{r['infer_ratio']:6.2f} {r['train_fraction_of_numpy_peak']:12.0%}")


def import_order_table(args):
    """Each import order in a fresh process (the order matters only at first import)."""
    table = {}
    for label, imports in ORDERS.items():
        code = (f"{imports}\nimport sys, json\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                f"import timm_step\nprint(json.dumps(timm_step.run(timm_step.parse({sys.argv[1:]!r}))))")
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}
        env.update(ENV_FOR.get(label, {}))
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
        table[label] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"\n== {label}")
        report(table[label])
    return table


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vit_mini_patch4_32", "vit_cifar_patch4_32"])
    p.add_argument("--batches", nargs="+", type=int, default=[128, 256])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--import-orders", action="store_true", help="the three import orders, each in a fresh process")
    p.add_argument("--save", help="write the results as JSON here")
    args = p.parse_args([a for a in argv if a != "--import-orders"] if argv is not None else None)
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if "--import-orders" in argv:
        result = import_order_table(args)
    else:
        result = run(args)
        report(result)
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
