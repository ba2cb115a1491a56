"""minivit on an NVIDIA GPU against PyTorch eager on the same GPU, in one process.

    python benchmarks/gpu_train_step.py train --out DIR       # training steps, fp32 then TF32, both sides
    python benchmarks/gpu_train_step.py attention --out DIR   # flash attention v3 vs torch SDPA, time and memory
    python benchmarks/gpu_train_step.py probe --model M --batch-size B [--set k=v,...] --out DIR
                                                              # images/s of one training setup (epoch planning)

train: the same ViT with the same weights (benchmarks/torch_vit.py), the same batch and AdamW,
for each model (default vit_cifar_patch4_32 at batch 128 and vit_small_patch16_224 at batch 64),
first in plain float32 with TF32 off on both sides (cuBLAS through CuPy; torch's matmul and cuDNN
flags), then with TF32 on on both. A step is forward, cross-entropy, backward, AdamW, zero_grad,
timed end to end on the host clock after a device synchronisation (Python overhead included:
that is what eager means), in alternating rounds, medians. Also minivit's step split into
forward / backward / optimizer (each synchronised), the logits' agreement, peak memory, and
model FLOP/s against the card's measured sgemm and TF32 peaks (kernels/gpu/timing.peaks).

attention: q, k, v (B, Hh, N, hd) in float32, the fused forward and backward of minivit's GPU
versions against torch.nn.functional.scaled_dot_product_attention (TF32 off), timed with CUDA
events; outputs and gradients compared; then peak memory of one forward + backward as N grows,
to show which versions stay linear in N (minivit: the CuPy pool's high-water mark; torch:
max_memory_allocated).

Every result is written as JSON and PNG under --out. Without CuPy or a GPU each command prints
one line saying so, writes {"skipped": reason} and exits 0, so a CPU-only rehearsal runs it too.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import kernels  # noqa: E402  (before NumPy: kernels/__init__.py sets OpenBLAS's thread timeout)
import numpy as np  # noqa: E402


def _gpu_or_skip(out: Path, what: str):
    """The cupy module, or None after writing the skip note."""
    from kernels.gpu import runtime

    try:
        return runtime.cupy()
    except runtime.DeviceUnavailable as e:
        print(f"{what}: skipped: {e}")
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{what}.json").write_text(json.dumps({"skipped": str(e)}, indent=1))
        return None


def _torch_cuda():
    """torch with CUDA, or (None, reason)."""
    try:
        import torch
    except ImportError as e:
        return None, f"torch is not installed ({e})"
    if not torch.cuda.is_available():
        return None, "torch has no CUDA device"
    return torch, None


def _set_tf32(torch, enabled):
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def _median_step(fn, sync, steps):
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - start) / steps


# ---------------------------------------------------------------- train
def _models(text):
    pairs = []
    for item in text.split(","):
        name, _, batch = item.partition(":")
        pairs.append((name.strip(), int(batch or 128)))
    return pairs


def bench_train(cp, torch, name, batch, tf32, args):
    import minivit
    from minivit import device
    from minivit import functional as F
    from train_step import model_flops

    minivit.manual_seed(0)
    model = minivit.create_model(name)
    for p in model.parameters():  # a non-zero head, so that gradients flow everywhere
        p.data += minivit.nn.trunc_normal(p.shape, 0.02)
    cfg = model.config
    tmodel = None
    if torch is not None:
        from torch_vit import from_minivit

        tmodel = from_minivit(model).cuda()
    model.to("cuda")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, cfg.in_chans, cfg.img_size, cfg.img_size), dtype=np.float32)
    y = rng.integers(0, cfg.num_classes, batch)
    xd, yd = minivit.Tensor(cp.asarray(x)), cp.asarray(y)  # a CuPy batch enters the model as a Tensor
    sync_ours = lambda: cp.cuda.get_current_stream().synchronize()  # noqa: E731
    result = {"model": name, "batch_size": batch, "tf32": tf32, "params": model.num_parameters()}
    with device.tf32(tf32):
        _set_tf32(torch, tf32)
        with minivit.no_grad():
            ours_logits = model(xd).numpy()
        opt = minivit.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)

        def ours():
            loss = F.cross_entropy(model(xd), yd)
            loss.backward()
            opt.step()
            opt.zero_grad()

        fns = {"minivit": (ours, sync_ours)}
        if tmodel is not None:
            tx, ty = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
            with torch.no_grad():
                theirs_logits = tmodel(tx).cpu().numpy()
            result["logits_rel_err_vs_torch"] = float(np.abs(ours_logits - theirs_logits).max()
                                                      / np.abs(theirs_logits).max())
            topt = torch.optim.AdamW(tmodel.parameters(), lr=1e-4, weight_decay=0.05)

            def theirs():
                loss = torch.nn.functional.cross_entropy(tmodel(tx), ty)
                loss.backward()
                topt.step()
                topt.zero_grad(set_to_none=True)

            fns["torch"] = (theirs, torch.cuda.synchronize)
        for fn, sync in fns.values():  # warm-up: compilation, cuBLAS handles, allocator pools
            for _ in range(args.warmup):
                fn()
            sync()
        times = {k: [] for k in fns}
        for _ in range(args.rounds):
            for k, (fn, sync) in fns.items():
                times[k].append(_median_step(fn, sync, args.steps))
        result["step_ms"] = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
        result["images_per_s"] = {k: batch / (v / 1e3) for k, v in result["step_ms"].items()}
        if "torch" in fns:
            result["speed_ratio_minivit_over_torch"] = result["step_ms"]["torch"] / result["step_ms"]["minivit"]
        result["minivit_split_ms"] = _split(model, opt, F, xd, yd, sync_ours, args.steps)
        flops = 3 * model_flops(cfg, batch)  # forward + backward, matmuls only
        result["train_tflops"] = {k: flops / (v / 1e3) / 1e12 for k, v in result["step_ms"].items()}
        pool = cp.get_default_memory_pool()
        result["minivit_pool_bytes"] = int(pool.total_bytes())
        if torch is not None:
            result["torch_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
    _set_tf32(torch, False)
    return result


def _split(model, opt, F, xd, yd, sync, steps):
    """minivit's step in three synchronised parts, ms (medians): forward + loss, backward, optimizer."""
    parts = {"forward": [], "backward": [], "optimizer": []}
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(xd), yd)
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad()
        sync()
        t3 = time.perf_counter()
        for k, a, b in (("forward", t0, t1), ("backward", t1, t2), ("optimizer", t2, t3)):
            parts[k].append(1e3 * (b - a))
    return {k: float(np.median(v)) for k, v in parts.items()}


def cmd_train(args):
    out = Path(args.out)
    cp = _gpu_or_skip(out, "train_step")
    if cp is None:
        return 0
    from kernels.gpu import timing

    torch, why = _torch_cuda()
    peaks = timing.peaks()
    print(f"device {peaks['device']}: sgemm {peaks['sgemm_gflops'] / 1e3:.1f} TFLOP/s, TF32 "
          f"{peaks['tf32_gflops'] / 1e3:.1f} TFLOP/s, copy {peaks['copy_gbs']:.0f} GB/s; torch: "
          f"{torch.__version__ if torch else why}")
    rows = []
    for tf32 in (False, True):
        for name, batch in _models(args.models):
            r = bench_train(cp, torch, name, batch, tf32, args)
            cp.get_default_memory_pool().free_all_blocks()  # the last model's arrays are gone with it
            if torch is not None:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            peak = peaks["tf32_gflops" if tf32 else "sgemm_gflops"] / 1e3
            r["fraction_of_matmul_peak"] = {k: v / peak for k, v in r["train_tflops"].items()}
            rows.append(r)
            ms = r["step_ms"]
            versus = (f"torch {ms['torch']:.2f} ms, minivit/torch speed {r['speed_ratio_minivit_over_torch']:.2f}x"
                      if "torch" in ms else "torch: not run")
            print(f"{name} batch {batch} TF32 {'on ' if tf32 else 'off'}: minivit {ms['minivit']:.2f} ms/step "
                  f"({r['images_per_s']['minivit']:.0f} img/s; fwd/bwd/opt {r['minivit_split_ms']['forward']:.1f}/"
                  f"{r['minivit_split_ms']['backward']:.1f}/{r['minivit_split_ms']['optimizer']:.1f} ms), {versus}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_step.json").write_text(json.dumps({"device": peaks["device"], "peaks": peaks,
                                                     "torch": torch.__version__ if torch else why,
                                                     "kernels": kernels.selection("gpu"), "rows": rows}, indent=1))
    _plot_train(rows, out / "train_step.png", peaks["device"])
    return 0


def _plot_train(rows, path, device_name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['model'].replace('_patch', '/')}\nB={r['batch_size']} TF32 {'on' if r['tf32'] else 'off'}"
              for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 2 * len(rows)), 4))
    for i, who in enumerate(("minivit", "torch")):
        ax.bar(x + (i - 0.5) * 0.4, [r["step_ms"].get(who, 0) for r in rows], 0.4, label=who)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("ms per training step")
    ax.set_title(f"training step on {device_name}: minivit (CuPy) vs PyTorch eager", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- attention
def _events(cp, fn):
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    value = fn()
    end.record()
    return value, (start, end)


def bench_attention_time(cp, torch, B, Hh, N, hd, repeat, impls):
    rng = np.random.default_rng(0)
    q, k, v, g = (rng.standard_normal((B, Hh, N, hd), dtype=np.float32) for _ in range(4))
    scale = hd ** -0.5
    rows = {}
    qd, kd, vd, gd = (cp.asarray(a) for a in (q, k, v, g))
    for name in impls:
        impl = kernels.find("attention", name)
        try:
            impl.backward(gd, impl.forward(qd, kd, vd, scale=scale)[1])  # warm-up and compile
        except (ValueError, MemoryError, cp.cuda.memory.OutOfMemoryError) as e:
            rows[name] = {"skipped": f"{type(e).__name__}: {e}"}
            continue
        f, b = [], []
        for _ in range(repeat):
            (out, cache), (e0, e1) = _events(cp, lambda: impl.forward(qd, kd, vd, scale=scale))
            _, (e2, e3) = _events(cp, lambda: impl.backward(gd, cache))
            e3.synchronize()
            f.append(cp.cuda.get_elapsed_time(e0, e1))
            b.append(cp.cuda.get_elapsed_time(e2, e3))
        rows[name] = {"fwd_ms": float(np.median(f)), "bwd_ms": float(np.median(b))}
        rows[name]["_out"] = (cp.asnumpy(out), [cp.asnumpy(x) for x in impl.backward(gd, cache)])
    if torch is not None:
        tq, tk, tv = (torch.from_numpy(a).cuda().requires_grad_() for a in (q, k, v))
        tg = torch.from_numpy(g).cuda()
        sdpa = torch.nn.functional.scaled_dot_product_attention
        for _ in range(2):
            sdpa(tq, tk, tv).backward(tg)
        f, b = [], []
        for _ in range(repeat):
            for t in (tq, tk, tv):
                t.grad = None
            e = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
            e[0].record()
            out = sdpa(tq, tk, tv)
            e[1].record()
            out.backward(tg)
            e[2].record()
            e[2].synchronize()
            f.append(e[0].elapsed_time(e[1]))
            b.append(e[1].elapsed_time(e[2]))
        rows["torch_sdpa"] = {"fwd_ms": float(np.median(f)), "bwd_ms": float(np.median(b)),
                              "_out": (out.detach().cpu().numpy(), [t.grad.cpu().numpy() for t in (tq, tk, tv)])}
    reference = rows.get("torch_sdpa", rows.get("gpu_v1", {})).get("_out")
    for name, row in rows.items():
        got = row.pop("_out", None)
        if got is not None and reference is not None:
            row["max_rel_err_vs_" + ("torch" if "torch_sdpa" in rows else "gpu_v1")] = float(max(
                np.abs(a - r).max() / max(np.abs(r).max(), 1e-30)
                for a, r in zip([got[0], *got[1]], [reference[0], *reference[1]])))
        if "fwd_ms" in row:
            row["fwd_bwd_ms"] = row["fwd_ms"] + row["bwd_ms"]
    return rows


def peak_memory(cp, torch, name, B, Hh, N, hd):
    """Bytes above the inputs that one forward + backward needs at its peak."""
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((B, Hh, N, hd), dtype=np.float32) for _ in range(4)]
    if name == "torch_sdpa":
        tq, tk, tv = (torch.from_numpy(a).cuda().requires_grad_() for a in arrays[:3])
        tg = torch.from_numpy(arrays[3]).cuda()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        torch.nn.functional.scaled_dot_product_attention(tq, tk, tv).backward(tg)
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    pool = cp.get_default_memory_pool()
    qd, kd, vd, gd = (cp.asarray(a) for a in arrays)
    pool.free_all_blocks()
    base = pool.total_bytes()  # with nothing cached, the pool holds exactly the live arrays
    impl = kernels.find("attention", name)
    try:
        grads = impl.backward(gd, impl.forward(qd, kd, vd, scale=hd ** -0.5)[1])
    except (ValueError, MemoryError, cp.cuda.memory.OutOfMemoryError):  # too large for a version: not measured
        return None
    cp.cuda.get_current_stream().synchronize()
    peak = int(pool.total_bytes() - base)  # the pool's high-water mark: it keeps every block it needed
    del grads
    pool.free_all_blocks()
    return peak


def cmd_attention(args):
    out = Path(args.out)
    cp = _gpu_or_skip(out, "attention")
    if cp is None:
        return 0
    torch, why = _torch_cuda()
    if torch is not None:
        _set_tf32(torch, False)
    from kernels.gpu import timing

    impls = [i.name for i in kernels.available("attention", device="gpu")]
    B, Hh, hd = args.batch, args.heads, args.hd
    times = bench_attention_time(cp, torch, B, Hh, args.n, hd, args.repeat, impls)
    print(f"attention B={B} Hh={Hh} N={args.n} hd={hd} float32 on {timing.device_name()} (torch: "
          f"{torch.__version__ if torch else why}):")
    for name, row in times.items():
        if "skipped" in row:
            print(f"  {name:11s} skipped: {row['skipped']}")
            continue
        err = next((f"{k} {v:.1e}" for k, v in row.items() if k.startswith("max_rel_err")), "")
        print(f"  {name:11s} fwd {row['fwd_ms']:8.3f} ms  bwd {row['bwd_ms']:8.3f} ms  "
              f"fwd+bwd {row['fwd_bwd_ms']:8.3f} ms  {err}")
    if "torch_sdpa" in times and "fwd_bwd_ms" in times.get("gpu_v3", {}):
        ratio = times["gpu_v3"]["fwd_bwd_ms"] / times["torch_sdpa"]["fwd_bwd_ms"]
        print(f"  gpu_v3 takes {ratio:.2f}x torch SDPA's time (target: within 2x)")
    memory = {name: {} for name in impls + (["torch_sdpa"] if torch else [])}
    for N in [int(n) for n in args.memory_n.split(",")]:
        for name in memory:
            if name == "gpu_v1" and B * Hh * N * N * 4 * 3 > args.v1_limit_bytes:
                memory[name][N] = None  # would not fit comfortably: skipped, not measured
                continue
            memory[name][N] = peak_memory(cp, torch, name, B, Hh, N, hd)
    print("  peak memory of one forward + backward above the inputs (MiB), by N:")
    for name, by_n in memory.items():
        cells = (f"N={n}: {'-' if b is None else f'{b / 2**20:.0f}'}" for n, b in by_n.items())
        print(f"  {name:11s} " + "  ".join(cells))
    out.mkdir(parents=True, exist_ok=True)
    (out / "attention.json").write_text(json.dumps({
        "device": timing.device_name(), "torch": torch.__version__ if torch else why, "dtype": "float32",
        "B": B, "Hh": Hh, "N": args.n, "hd": hd, "times_ms": times,
        "peak_bytes_by_N": {k: {str(n): b for n, b in v.items()} for k, v in memory.items()}}, indent=1))
    _plot_attention(times, memory, out / "attention.png", f"B={B} Hh={Hh} N={args.n} hd={hd}")
    return 0


def _plot_attention(times, memory, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    names = [n for n, r in times.items() if "fwd_ms" in r]
    x = np.arange(len(names))
    a.bar(x - 0.2, [times[n]["fwd_ms"] for n in names], 0.4, label="forward")
    a.bar(x + 0.2, [times[n]["bwd_ms"] for n in names], 0.4, label="backward")
    a.set_xticks(x, names)
    a.set_ylabel("ms")
    a.set_title(f"attention float32, {title}", fontsize=9)
    a.legend()
    for name, by_n in memory.items():
        pts = [(n, v / 2**20) for n, v in by_n.items() if v is not None]
        if pts:
            b.plot(*zip(*pts), marker="o", label=name)
    b.set_xlabel("N (tokens)")
    b.set_ylabel("peak MiB above the inputs")
    b.set_xscale("log", base=2)
    b.set_yscale("log", base=2)
    b.set_title("memory of one forward + backward", fontsize=9)
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- probe
def cmd_probe(args):
    """images/s of minivit's training step for one model setup (gpu_check.sh plans epochs by it)."""
    out = Path(args.out)
    cp = _gpu_or_skip(out, "probe")
    if cp is None:
        return 0
    import minivit
    from minivit import device
    from minivit import functional as F

    overrides = {}
    for item in filter(None, (args.set or "").split(",")):
        key, _, value = item.partition("=")
        overrides[key] = float(value) if "." in value else int(value)
    model = minivit.create_model(args.model, **overrides).to("cuda")
    cfg = model.config
    rng = np.random.default_rng(0)
    xd = minivit.Tensor(cp.asarray(rng.standard_normal((args.batch_size, cfg.in_chans, cfg.img_size, cfg.img_size),
                                                       dtype=np.float32)))
    yd = cp.asarray(rng.integers(0, cfg.num_classes, args.batch_size))
    opt = minivit.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        loss = F.cross_entropy(model(xd), yd)
        loss.backward()
        minivit.optim.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    sync = cp.cuda.get_current_stream().synchronize
    with device.tf32(args.tf32 == "on"):
        for _ in range(3):
            step()
        seconds = min(_median_step(step, sync, 10) for _ in range(3))
    result = {"model": args.model, "overrides": overrides, "batch_size": args.batch_size, "tf32": args.tf32,
              "params": model.num_parameters(), "step_ms": 1e3 * seconds, "images_per_s": args.batch_size / seconds}
    print(f"probe {args.model} {overrides} batch {args.batch_size} TF32 {args.tf32}: {1e3 * seconds:.2f} ms/step, "
          f"{result['images_per_s']:.0f} images/s")
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(result, indent=1))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--models", default="vit_cifar_patch4_32:128,vit_small_patch16_224:64", help="name:batch,...")
    t.add_argument("--steps", type=int, default=10, help="steps per timed round")
    t.add_argument("--rounds", type=int, default=5)
    t.add_argument("--warmup", type=int, default=5)
    a = sub.add_parser("attention")
    a.add_argument("--batch", type=int, default=16)
    a.add_argument("--heads", type=int, default=6)
    a.add_argument("--n", type=int, default=1024)
    a.add_argument("--hd", type=int, default=64)
    a.add_argument("--repeat", type=int, default=10)
    a.add_argument("--memory-n", default="256,512,1024,2048,4096")
    a.add_argument("--v1-limit-bytes", type=float, default=8e9, help="skip gpu_v1 where its N x N arrays pass this")
    r = sub.add_parser("probe")
    r.add_argument("--model", default="vit_cifar_patch4_32")
    r.add_argument("--batch-size", type=int, default=256)
    r.add_argument("--set", help="ViT overrides, e.g. embed_dim=256,num_heads=4,mlp_ratio=2.0")
    r.add_argument("--tf32", choices=["on", "off"], default="on")
    for s in (t, a, r):
        s.add_argument("--out", default="benchmarks/results/gpu")
    args = p.parse_args(argv)
    return {"train": cmd_train, "attention": cmd_attention, "probe": cmd_probe}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
