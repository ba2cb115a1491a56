"""JAX's jitted training step (minivit.jax_bridge) against minivit's own step and PyTorch eager:
the same ViT with the same weights and batch, AdamW in all three, side by side in one process
(alternating rounds, medians), in images/s and as ratios to minivit.

    python benchmarks/jax_step.py                                  # CPU: vit_cifar and vit_mini, batch 128
    python benchmarks/jax_step.py --device gpu                     # JAX with CUDA, and torch on CUDA if it can
    python benchmarks/jax_step.py --save benchmarks/results/jax_step.json

Before timing, each framework's first-step loss is checked against minivit's. JAX's step is timed
until its updated parameters are ready (not only the loss), after compilation, whose time is
reported apart. On the CPU, XLA sizes its thread pool to the cores it may use (`taskset` limits
them); torch gets --threads. On --device gpu, minivit's CPU step is not timed (a GPU run compares
JAX and torch). --save refuses to write on a busy machine (1-minute load above half the cores),
because other jobs would make the numbers meaningless.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np  # first, as in a user's script: minivit's speed does not depend on the order

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build(name, batch_size, device):
    """{framework: step function} for one model, each taking one AdamW step on the same batch,
    and their first-step losses."""
    import jax
    import torch

    import minivit
    from minivit import jax_bridge as jb
    from torch_vit import from_minivit

    minivit.manual_seed(0)
    model = minivit.create_model(name)
    cfg = model.config
    for p in model.parameters():  # a non-zero head, so gradients flow everywhere
        p.data += minivit.nn.trunc_normal(p.shape, 0.02)
    gen = np.random.default_rng(0)
    x = gen.standard_normal((batch_size, cfg.in_chans, cfg.img_size, cfg.img_size), dtype=np.float32)  # (B, C, H, W)
    y = gen.integers(0, cfg.num_classes, batch_size)
    torch_device = "cuda" if device == "gpu" and torch.cuda.is_available() else "cpu"
    steps, first_loss = {}, {}

    # JAX first: its parameters are copied before minivit's step changes the model
    opt = minivit.optim.AdamW(model.parameters(), lr=1e-4)
    spec = jb.optimizer_spec(opt, model)
    mesh = jb.data_mesh(jax.devices(device)[:1])
    params, apply_fn = jb.to_jax(model)
    state = {"params": jb.replicate(params, mesh), "opt": jb.replicate(jb.init_optimizer_state(params, spec), mesh)}
    jx, jy = jb.shard_batch((x, y), mesh)
    train_step = jb.make_train_step(apply_fn, spec, mesh)
    key = jax.random.key(0)

    def jax_step():
        state["params"], state["opt"], loss, _ = train_step(state["params"], state["opt"], jx, jy,
                                                             np.float32(1e-4), key)
        jax.block_until_ready(state)
        return float(loss)

    start = time.perf_counter()
    first_loss["jax"] = jax_step()
    compile_s = time.perf_counter() - start
    steps["jax"] = jax_step

    tmodel = from_minivit(model).to(torch_device)
    topt = torch.optim.AdamW(tmodel.parameters(), lr=1e-4)
    tx, ty = torch.from_numpy(x).to(torch_device), torch.from_numpy(y).to(torch_device)

    def torch_step():
        loss = torch.nn.functional.cross_entropy(tmodel(tx), ty)
        loss.backward()
        topt.step()
        topt.zero_grad()
        return loss.item()  # waits for the GPU, as float(loss) does in the JAX step

    first_loss["torch"] = torch_step()
    steps["torch"] = torch_step

    if device == "cpu":
        def minivit_step():
            loss = minivit.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            return loss.item()

        first_loss["minivit"] = minivit_step()
        steps["minivit"] = minivit_step
    return steps, first_loss, compile_s, torch_device


def run(name, args):
    import jax
    import torch

    steps, first_loss, compile_s, torch_device = build(name, args.batch_size, args.device)
    reference = first_loss.get("minivit", first_loss["torch"])
    loss_err = {k: abs(v - reference) / abs(reference) for k, v in first_loss.items()}
    for fn in steps.values():  # warm-up: Numba, allocators, thread pools
        for _ in range(args.warmup):
            fn()
    times = {k: [] for k in steps}
    for _ in range(args.rounds):  # alternate so that machine noise hits every framework alike
        for k, fn in steps.items():
            time.sleep(args.settle)  # let the previous framework's worker threads stop spinning
            for _ in range(args.steps):
                start = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - start)
    med = {k: float(np.median(v)) for k, v in times.items()}
    base = "minivit" if "minivit" in med else "torch"
    return {"model": name, "batch_size": args.batch_size, "device": args.device,
            "jax_device": str(jax.devices(args.device)[0]), "torch_device": torch_device,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "first_step_loss_rel_err_vs_minivit": loss_err, "jax_compile_s": compile_s,
            "median_s": med, "images_per_s": {k: args.batch_size / v for k, v in med.items()},
            "speed_vs_" + base: {k: med[base] / v for k, v in med.items()},
            "versions": {"jax": jax.__version__, "torch": torch.__version__, "numpy": np.__version__}}


def report(r):
    base = next(k for k in r if k.startswith("speed_vs_"))
    print(f"\n{r['model']} batch {r['batch_size']} on {r['device']} (JAX {r['jax_device']}, torch {r['torch_device']}, "
          f"{r['torch_threads']} torch threads); JAX compile {r['jax_compile_s']:.1f} s")
    print(f"  {'':8s} {'img/s':>8s} {base.replace('speed_vs_', 'x '):>10s} {'step-1 loss err':>16s}")
    for k, ips in r["images_per_s"].items():
        print(f"  {k:8s} {ips:8.1f} {r[base][k]:10.2f} {r['first_step_loss_rel_err_vs_minivit'][k]:16.1e}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vit_cifar_patch4_32", "vit_mini_patch4_32"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch's intra-op threads")
    p.add_argument("--steps", type=int, default=3, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--settle", type=float, default=0.5, help="seconds of idle before each timed section")
    p.add_argument("--save", help="write the results as JSON here (refused on a busy machine)")
    p.add_argument("--force-save", action="store_true", help="save even when the machine is busy")
    args = p.parse_args(argv)
    import torch  # before minivit, as in a user's script (kernels/cpu/threads.py makes the order irrelevant)

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    results = [run(name, args) for name in args.models]
    load_after = os.getloadavg()[0]
    for r in results:
        r["load_1min_before_after"] = [load_before, load_after]
        report(r)
    busy = load_before > 0.5 * os.cpu_count()  # after the run the load counts this benchmark itself
    print(f"\n1-minute load average {load_before:.2f} before, {load_after:.2f} after ({os.cpu_count()} cores)"
          + ("; the machine was busy: these numbers are not a measurement" if busy else ""))
    if args.save:
        if busy and not args.force_save:
            print(f"not saving {args.save}: the machine was busy (--force-save to save anyway)")
            return
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
