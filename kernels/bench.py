"""Check every kernel against the float64 reference, then time it (llm.c dev/cuda style).

    python -m kernels.bench OP [OP ...] [--impls a,b] [--sizes PRESET|key=value ...]
                           [--dtype float32[,float64]] [--repeat N] [--plot out.png]
    python -m kernels.bench all            # every op, its default (CIFAR ViT) presets
    python -m kernels.bench --list         # what is registered; * marks the defaults (registry.DEFAULTS)
    python -m kernels.bench OP --device cuda [--json out.json]   # the GPU versions (kernels/gpu/)

For each op, preset and dtype, every implementation is first run on the same inputs as the
NumPy reference run in float64 (inputs cast up exactly). A mismatch beyond the dtype's
tolerance prints the first mismatching indices with both values and the max error, marks the
row WRONG, and the implementation is not timed; after the tables the command lists every WRONG
row again and exits 1, so that a wrong version (on the GPU above all) fails the run that checks
it, in a script as on the command line. Correct ones are timed forward and backward
separately after a warm-up (median of --repeat runs, time.perf_counter; the implementations take
turns run by run, so a shared machine's changing load hits them alike) and reported in ms,
GFLOP/s (dense ops, attention) or GB/s (elementwise and row ops: bytes that must move at least
once), and as a speed-up over the reference.

On the GPU (--device cuda) the same check runs on inputs copied to the device, with outputs
and gradients copied back and compared on the host against the float64 reference; correct
versions are then timed with CUDA events on device-resident inputs (kernels/gpu/timing.py), the
ratio columns are against the GPU default (registry.DEFAULTS["gpu"]), and "% peak" puts each row
against the card's ceilings measured first: cuBLAS sgemm (GFLOP/s rows) and a device-to-device
copy (GB/s rows). Without CuPy or a GPU, --device cuda exits 2 with one line saying which.

The same run-and-compare serves the tests (tests/test_kernels_cpu*.py): run_pair runs an
implementation and the reference on one set of inputs and pairs up every output and gradient,
compare / compare_all judge them within a tolerance, check wraps both for the table.

Shape letters as everywhere: B batch, N tokens, D width, Hh heads, hd head dim, K classes,
C/H/W/P image channels, size and patch; M = B*N rows for linear (Din -> Dout); matmul
(L, M, Din) @ (L, Din, Dout) with L a batch of matrices (384 = B*Hh heads for attention scores).
The default presets are the CIFAR ViT's: B=128, N=65 (64 patches + cls), D=192, Hh=3, hd=64,
MLP 768, K=10.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import registry

# Per-dtype (rtol, atol, floor): |got - want| <= atol * max|want| + rtol * |want| + floor,
# elementwise, where want is the float64 reference on the same (exactly up-cast) inputs.
TOLERANCE = {"float32": (1e-3, 1e-4, 1e-5), "float64": (1e-8, 1e-10, 1e-13)}


# ---------------------------------------------------------------- inputs and op specifications
@dataclass
class Inputs:
    args: tuple  # positional arrays (None allowed), as the kernels take them
    params: dict = field(default_factory=dict)  # keyword scalars: eps, scale, label_smoothing, lr, ...

    def astype(self, dtype):
        """Every float array in dtype (integer labels stay as they are); arrays already in dtype
        are passed through, not copied, so that a strided view reaches the kernel as a view."""
        cast = tuple(a.astype(dtype, copy=False) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
                     for a in self.args)
        return Inputs(cast, dict(self.params))

    def copy(self):
        return Inputs(tuple(a.copy() if isinstance(a, np.ndarray) else a for a in self.args), dict(self.params))


@dataclass
class OpSpec:
    presets: dict[str, dict]  # name -> dims
    default: tuple[str, ...]  # presets run when --sizes names none
    make: Callable  # (dims, dtype, rng) -> Inputs
    work: Callable  # (dims, itemsize) -> (forward, backward) FLOPs or bytes
    unit: str  # "GFLOP/s" or "GB/s"


def _normal(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def _mk_matmul(d, dt, rng):
    a = _normal(rng, (d["L"], d["M"], d["Din"]), dt)  # (L, M, Din)
    return Inputs((a, _normal(rng, (d["L"], d["Din"], d["Dout"]), dt)))


def _mk_linear(d, dt, rng):
    x = _normal(rng, (d["B"], d["N"], d["Din"]), dt)
    w = _normal(rng, (d["Dout"], d["Din"]), dt, 1 / math.sqrt(d["Din"]))
    return Inputs((x, w, _normal(rng, (d["Dout"],), dt)))


def _mk_patch_embed(d, dt, rng):
    x = _normal(rng, (d["B"], d["C"], d["H"], d["W"]), dt)
    w = _normal(rng, (d["D"], d["C"], d["P"], d["P"]), dt, 1 / d["P"])
    return Inputs((x, w, _normal(rng, (d["D"],), dt)))


def _mk_layernorm(d, dt, rng):
    x = _normal(rng, (d["B"], d["N"], d["D"]), dt, 2.0) + 0.5
    w, b = 1 + _normal(rng, (d["D"],), dt, 0.1), _normal(rng, (d["D"],), dt, 0.1)
    return Inputs((x, w.astype(dt), b), {"eps": 1e-6})


def _mk_attention(d, dt, rng):
    q, k, v = (_normal(rng, (d["B"], d["Hh"], d["N"], d["hd"]), dt) for _ in range(3))
    return Inputs((q, k, v), {"scale": 1.0 / math.sqrt(d["hd"])})


def _mk_sce(d, dt, rng):
    logits = _normal(rng, (d["B"], d["K"]), dt, 3.0)
    return Inputs((logits, rng.integers(0, d["K"], d["B"])), {"label_smoothing": d["smoothing"]})


def _mk_adamw(d, dt, rng):
    p, g, m = (_normal(rng, (d["n"],), dt) for _ in range(3))
    v = np.abs(_normal(rng, (d["n"],), dt))
    return Inputs((p, g, m, v), dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.05, step=10))


def _mk_conv2d(d, dt, rng):
    x = _normal(rng, (d["B"], d["C"], d["H"], d["H"]), dt)  # (B, C, H, W), square
    w = _normal(rng, (d["O"], d["C"], d["k"], d["k"]), dt, 1 / math.sqrt(d["C"] * d["k"] ** 2))  # (O, C, kh, kw)
    p = d["p"]
    return Inputs((x, w, _normal(rng, (d["O"],), dt)), {"stride": (d["s"], d["s"]), "padding": (p, p, p, p)})


def _conv_flops(d, s):
    Ho = (d["H"] + 2 * d["p"] - d["k"]) // d["s"] + 1
    f = 2 * d["B"] * d["O"] * Ho * Ho * d["C"] * d["k"] ** 2
    return f, 2 * f


def _mk_weight_standardize(d, dt, rng):
    # Uniform, not normal: check()'s upstream gradient is standard normal from the same seed, so
    # normal weights would be proportional to it, where weight standardization's gradient is 0.
    w = rng.uniform(-0.1, 0.1, (d["O"], d["I"], d["k"], d["k"])).astype(dt)  # (O, I, kh, kw)
    return Inputs((w,), {"eps": 1e-8})


def _mk_groupnorm(d, dt, rng):
    x = _normal(rng, (d["B"], d["C"], d["H"], d["H"]), dt, 2.0) + 0.5
    w, b = 1 + _normal(rng, (d["C"],), dt, 0.1), _normal(rng, (d["C"],), dt, 0.1)
    return Inputs((x, w.astype(dt), b), {"groups": d["G"], "eps": 1e-5, "relu": bool(d["relu"])})


def _mk_max_pool2d(d, dt, rng):
    x = _normal(rng, (d["B"], d["C"], d["H"], d["H"]), dt)
    p = d["p"]
    return Inputs((x,), {"kernel": (3, 3), "stride": (2, 2), "padding": (p, p, p, p), "pad_value": -math.inf})


_ROWS = {"B": 128, "N": 65}
SPECS: dict[str, OpSpec] = {
    "matmul": OpSpec(
        {"scores": dict(L=384, M=65, Din=64, Dout=65), "mlp": dict(L=1, M=8320, Din=192, Dout=768)},
        ("scores", "mlp"), _mk_matmul,
        lambda d, s: (2 * d["L"] * d["M"] * d["Din"] * d["Dout"], 4 * d["L"] * d["M"] * d["Din"] * d["Dout"]),
        "GFLOP/s"),
    "linear": OpSpec(
        {"qkv": dict(_ROWS, Din=192, Dout=576), "proj": dict(_ROWS, Din=192, Dout=192),
         "fc1": dict(_ROWS, Din=192, Dout=768), "fc2": dict(_ROWS, Din=768, Dout=192),
         "head": dict(B=128, N=1, Din=192, Dout=10)},
        ("qkv", "fc1", "fc2"), _mk_linear,
        lambda d, s: (2 * d["B"] * d["N"] * d["Din"] * d["Dout"], 4 * d["B"] * d["N"] * d["Din"] * d["Dout"]),
        "GFLOP/s"),
    "patch_embed": OpSpec(
        {"cifar": dict(B=128, C=3, H=32, W=32, P=4, D=192), "imagenet": dict(B=32, C=3, H=224, W=224, P=16, D=768)},
        ("cifar",), _mk_patch_embed,
        lambda d, s: (2 * d["B"] * d["H"] * d["W"] * d["C"] * d["D"], 4 * d["B"] * d["H"] * d["W"] * d["C"] * d["D"]),
        "GFLOP/s"),
    "layernorm": OpSpec(
        {"cifar": dict(_ROWS, D=192), "wide": dict(_ROWS, D=768)}, ("cifar",), _mk_layernorm,
        lambda d, s: (2 * d["B"] * d["N"] * d["D"] * s, 3 * d["B"] * d["N"] * d["D"] * s), "GB/s"),
    "gelu": OpSpec(
        {"cifar": dict(_ROWS, D=768)}, ("cifar",),
        lambda d, dt, rng: Inputs((_normal(rng, (d["B"], d["N"], d["D"]), dt),)),
        lambda d, s: (2 * d["B"] * d["N"] * d["D"] * s, 3 * d["B"] * d["N"] * d["D"] * s), "GB/s"),
    "softmax": OpSpec(
        {"cifar": dict(B=128, Hh=3, N=65)}, ("cifar",),
        lambda d, dt, rng: Inputs((_normal(rng, (d["B"], d["Hh"], d["N"], d["N"]), dt, 3.0),)),
        lambda d, s: (2 * d["B"] * d["Hh"] * d["N"] ** 2 * s, 3 * d["B"] * d["Hh"] * d["N"] ** 2 * s), "GB/s"),
    "attention": OpSpec(
        {"mini": dict(B=128, Hh=4, N=64, hd=32), "cifar": dict(B=128, Hh=3, N=65, hd=64),
         "long": dict(B=4, Hh=3, N=1024, hd=64)},
        ("mini", "cifar", "long"), _mk_attention,
        lambda d, s: (4 * d["B"] * d["Hh"] * d["N"] ** 2 * d["hd"], 8 * d["B"] * d["Hh"] * d["N"] ** 2 * d["hd"]),
        "GFLOP/s"),
    "softmax_cross_entropy": OpSpec(
        {"cifar": dict(B=128, K=10, smoothing=0.1), "imagenet": dict(B=256, K=1000, smoothing=0.1)},
        ("cifar", "imagenet"), _mk_sce, lambda d, s: (2 * d["B"] * d["K"] * s, 2 * d["B"] * d["K"] * s), "GB/s"),
    "adamw_update": OpSpec(
        {"bias": dict(n=192), "fc_w": dict(n=768 * 192), "vit": dict(n=2_700_000)},
        ("bias", "fc_w"), _mk_adamw, lambda d, s: (7 * d["n"] * s, 0), "GB/s"),
    # the convs of a CIFAR ResNetV2 (widths 12-256 on 32x32 .. 8x8; expand/reduce1x1 are
    # resnetv2_20_cifar's first-stage 1x1 convs) and the ImageNet stem; O output channels,
    # k kernel, s stride, p padding on every side
    "conv2d": OpSpec(
        {"cifar3x3": dict(B=128, C=32, H=16, O=32, k=3, s=1, p=1),
         "cifar1x1": dict(B=128, C=128, H=16, O=32, k=1, s=1, p=0),
         "cifar1x1s2": dict(B=128, C=128, H=16, O=256, k=1, s=2, p=0),
         "expand1x1": dict(B=128, C=12, H=32, O=48, k=1, s=1, p=0),
         "reduce1x1": dict(B=128, C=48, H=32, O=12, k=1, s=1, p=0),
         "stem": dict(B=32, C=3, H=224, O=64, k=7, s=2, p=3)},
        ("cifar3x3", "cifar1x1"), _mk_conv2d, _conv_flops, "GFLOP/s"),
    "weight_standardize": OpSpec(
        {"cifar": dict(O=128, I=32, k=3), "r50": dict(O=512, I=512, k=3)}, ("cifar", "r50"),
        _mk_weight_standardize,
        lambda d, s: (2 * d["O"] * d["I"] * d["k"] ** 2 * s, 3 * d["O"] * d["I"] * d["k"] ** 2 * s), "GB/s"),
    "groupnorm": OpSpec(
        {"cifar": dict(B=128, C=64, H=16, G=16, relu=1), "imagenet": dict(B=32, C=256, H=56, G=32, relu=1),
         "norelu": dict(B=128, C=64, H=16, G=16, relu=0)}, ("cifar",),
        _mk_groupnorm, lambda d, s: (2 * d["B"] * d["C"] * d["H"] ** 2 * s, 3 * d["B"] * d["C"] * d["H"] ** 2 * s),
        "GB/s"),
    "max_pool2d": OpSpec(
        {"cifar": dict(B=128, C=32, H=32, p=1), "stem": dict(B=32, C=64, H=112, p=1)}, ("cifar",),
        _mk_max_pool2d,
        lambda d, s: (1.25 * d["B"] * d["C"] * d["H"] ** 2 * s, 1.5 * d["B"] * d["C"] * d["H"] ** 2 * s), "GB/s"),
}


# ---------------------------------------------------------------- check
@dataclass
class CheckResult:
    ok: bool
    max_abs: float  # largest |got - want| over every output and gradient
    max_rel: float  # the same divided by max|want| of that array
    lines: list[str]  # human-readable mismatch report (empty when ok)


def _impl(op, impl):
    return impl if isinstance(impl, registry.Impl) else registry.find(op, impl)


def _float_dtype(inputs):
    return next(a.dtype for a in inputs.args if isinstance(a, np.ndarray) and a.dtype.kind == "f")


def run_pair(op, impl, inputs: Inputs, grad=None, seed=0) -> list[tuple[str, object, object]]:
    """Run `impl` (an Impl or a registered name) on `inputs` and the reference on the same values
    cast up to float64; return (name, got, want) for the forward output ("out") and each gradient
    ("grad[i]"), or for an in-place op (adamw_update) the state it leaves: p, m, v. The backward
    gets `grad` (default: standard normal drawn from `seed`, in the inputs' dtype). An in-place op
    runs on copies; the others get the arrays as they are (strided views stay views) and raise
    ValueError here if they change them."""
    impl, ref = _impl(op, impl), _impl(op, "reference")
    up = inputs.astype(np.float64).copy()  # copy: astype passes float64 arrays through as they are
    if impl.backward is None:
        mine = inputs.copy()
        impl.forward(*mine.args, **mine.params)
        ref.forward(*up.args, **up.params)
        return [(name, mine.args[i], up.args[i]) for name, i in (("p", 0), ("m", 2), ("v", 3))]
    pristine = inputs.copy()
    out, cache = impl.forward(*inputs.args, **inputs.params)
    want, ref_cache = ref.forward(*up.args, **up.params)
    if grad is None:
        grad = np.random.default_rng(seed).standard_normal(np.shape(want)).astype(_float_dtype(inputs))
    grad64 = np.array(grad, dtype=np.float64)  # taken first: a backward must not change grad either
    grads = impl.backward(grad, cache)
    want_grads = ref.backward(grad64, ref_cache)
    changed = [i for i, (a, b) in enumerate(zip(inputs.args, pristine.args)) if isinstance(a, np.ndarray)
               and not np.array_equal(a, b, equal_nan=a.dtype.kind == "f")]
    if changed or not np.array_equal(grad, grad64, equal_nan=True):
        raise ValueError(f"{impl.name} changed its inputs in place (args {changed}, or the gradient)")
    if len(grads) != len(want_grads):
        raise ValueError(f"backward returned {len(grads)} gradients, reference {len(want_grads)}")
    return [("out", out, want)] + [(f"grad[{i}]", g, w) for i, (g, w) in enumerate(zip(grads, want_grads))]


def compare(name, got, want, dtype, show=5, tolerance=None):
    """(max_abs, max_rel, mismatch lines) of one output against its float64 reference, elementwise
    within tolerance = (rtol, atol, floor) (default: TOLERANCE of the dtype)."""
    if got is None or want is None:
        return 0.0, 0.0, ([] if got is None and want is None else [f"{name}: got {got!r}, want {want!r}"])
    got, want = np.asarray(got), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return math.inf, math.inf, [f"{name}: shape {got.shape} != reference {want.shape}"]
    lines = [] if got.dtype == np.dtype(dtype) else [f"{name}: dtype {got.dtype} != input dtype {dtype}"]
    rtol, atol, floor = tolerance or TOLERANCE[np.dtype(dtype).name]
    g64 = got.astype(np.float64)
    finite = np.isfinite(want)
    scale = float(np.abs(want[finite]).max(initial=0.0)) or 1.0
    with np.errstate(invalid="ignore"):
        diff = np.abs(g64 - want)
        same = (g64 == want) | (np.isnan(g64) & np.isnan(want))
        bad = ~(same | (diff <= atol * scale + rtol * np.abs(want) + floor))
    max_abs = float(np.nanmax(np.where(same, 0.0, diff), initial=0.0))
    if bad.any():
        lines.append(f"{name}: {int(bad.sum())} of {bad.size} mismatch (max abs {max_abs:.3g}, "
                     f"max rel {max_abs / scale:.3g}; tolerance rtol={rtol:g}, atol={atol:g}*max|ref| + {floor:g})")
        for idx in np.argwhere(bad)[:show]:
            idx = tuple(int(i) for i in idx)
            lines.append(f"    {name}{list(idx)}: got {g64[idx]:.7g}, reference {want[idx]:.7g}")
    return max_abs, max_abs / scale, lines


def compare_all(pairs, dtype, tolerance=None) -> CheckResult:
    """compare() every (name, got, want) of run_pair into one result."""
    results = [compare(name, got, want, dtype, tolerance=tolerance) for name, got, want in pairs]
    lines = [line for _, _, ls in results for line in ls]
    return CheckResult(not lines, max(r[0] for r in results), max(r[1] for r in results), lines)


def check(op, impl, inputs: Inputs, seed=0, tolerance=None) -> CheckResult:
    """run_pair, then compare_all: the forward output and every gradient (for adamw_update: p, m,
    v after one step) against the float64 reference. A kernel that raises is reported WRONG."""
    try:
        return compare_all(run_pair(op, impl, inputs, seed=seed), _float_dtype(inputs), tolerance)
    except Exception as e:  # a crash is a wrong answer too: report it, do not stop the table
        return CheckResult(False, math.inf, math.inf, [f"raised {type(e).__name__}: {e}"])


# ---------------------------------------------------------------- timing
@dataclass
class Timing:
    fwd_s: float
    bwd_s: float | None  # None for ops without a backward


def _median_time(fn, repeat, warmup, budget_s):
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < max(1, repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:  # a slow (naive) kernel: fewer repeats
            break
    return float(np.median(times))


def time_impl(op, impl, inputs: Inputs, repeat=5, warmup=1, budget_s=3.0, seed=0) -> Timing:
    """Median forward and backward wall time (seconds) after `warmup` untimed calls. The
    backward is timed on one forward's cache; in-place ops (adamw_update) run on a copy."""
    impl = _impl(op, impl)
    mine = inputs.copy()
    fwd = _median_time(lambda: impl.forward(*mine.args, **mine.params), repeat, warmup, budget_s)
    if impl.backward is None:
        return Timing(fwd, None)
    out, cache = impl.forward(*mine.args, **mine.params)
    grad = np.random.default_rng(seed).standard_normal(np.shape(out)).astype(out.dtype)
    return Timing(fwd, _median_time(lambda: impl.backward(grad, cache), repeat, warmup, budget_s))


def time_impls(op, impls, inputs: Inputs, repeat=5, warmup=0, budget_s=3.0, seed=0) -> dict[str, Timing]:
    """time_impl for several implementations, interleaved: each round runs every one once, so
    a change of load on a shared machine hits them all alike (their ratios stay meaningful). An
    implementation whose runs have taken more than budget_s drops out of later rounds."""
    runs = []
    for impl in (_impl(op, i) for i in impls):
        mine = inputs.copy()
        fwd = (lambda impl, mine: lambda: impl.forward(*mine.args, **mine.params))(impl, mine)
        bwd = None
        if impl.backward is not None:
            out, cache = fwd()
            grad = np.random.default_rng(seed).standard_normal(np.shape(out)).astype(out.dtype)
            bwd = (lambda impl, grad, cache: lambda: impl.backward(grad, cache))(impl, grad, cache)
        runs.append((impl.name, fwd, bwd))
    for _ in range(warmup):
        for _, fwd, bwd in runs:
            fwd()
            if bwd:
                bwd()
    times = {name: ([], []) for name, _, _ in runs}
    for r in range(max(1, repeat)):
        for name, fwd, bwd in runs:
            if r and sum(times[name][0]) + sum(times[name][1]) > budget_s:
                continue  # a slow (naive) kernel: fewer repeats
            for fn, out in ((fwd, times[name][0]), (bwd, times[name][1])):
                if fn is not None:
                    t0 = time.perf_counter()
                    fn()
                    out.append(time.perf_counter() - t0)
    return {name: Timing(float(np.median(f)), float(np.median(b)) if b else None) for name, (f, b) in times.items()}


# ---------------------------------------------------------------- the table
@dataclass
class Row:
    impl: str
    status: str  # "ok" or "WRONG"
    check: CheckResult
    timing: Timing | None = None  # None when WRONG (never timed)


def resolve_sizes(op, sizes):
    """--sizes tokens -> [(preset name, dims)]: preset names choose presets (default: the op's
    default ones); key=value tokens override dims in every chosen preset."""
    spec = SPECS[op]
    tokens = [t for s in (sizes or []) for t in s.split(",") if t.strip()]
    names = [t for t in tokens if "=" not in t]
    overrides = {}
    for t in tokens:
        if "=" in t:
            key, value = (s.strip() for s in t.split("=", 1))
            overrides[key] = float(value) if any(c in value for c in ".e") else int(value)
    unknown = [n for n in names if n not in spec.presets]
    if unknown:
        raise SystemExit(f"{op}: unknown preset(s) {', '.join(unknown)}; presets: {', '.join(spec.presets)}")
    chosen = []
    for name in names or spec.default:
        dims = dict(spec.presets[name])
        bad = [k for k in overrides if k not in dims]
        if bad:
            raise SystemExit(f"{op}: unknown size key(s) {', '.join(bad)}; keys of {name!r}: {', '.join(dims)}")
        dims.update(overrides)
        chosen.append((name + ("*" if overrides else ""), dims))
    return chosen


def run_case(op, impls, inputs, repeat=5, budget_s=3.0, out=print, device="cpu"):
    """Check each implementation on one input set, then time the correct ones (interleaved);
    on the CPU the reference always runs first as the baseline. Returns the rows (WRONG ones
    untimed). On the GPU (device "gpu") only the GPU versions are rows, checked through
    kernels/gpu/timing.on_device and timed with CUDA events."""
    if device == "gpu":
        return _run_case_gpu(op, impls, inputs, repeat, budget_s, out)
    rows = []
    ref = _impl(op, "reference")
    for impl in [ref] + [i for i in impls if i.name != "reference"]:
        result = check(op, impl, inputs)
        if not result.ok:
            out(f"  {impl.name}: WRONG")
            for line in result.lines:
                out("    " + line)
        rows.append(Row(impl.name, "ok" if result.ok else "WRONG", result))
    ok = [r.impl for r in rows if r.status == "ok"]
    # check() has just run every forward and backward once: that was the warm-up (and compile)
    timings = time_impls(op, ok, inputs, repeat=repeat, warmup=0, budget_s=budget_s) if ok else {}
    for r in rows:
        r.timing = timings.get(r.impl) if r.status == "ok" else None
    return rows


def _run_case_gpu(op, impls, inputs, repeat, budget_s, out):
    from .gpu import timing

    rows = []
    for impl in impls:
        result = check(op, timing.on_device(impl), inputs)
        if not result.ok:
            out(f"  {impl.name}: WRONG")
            for line in result.lines:
                out("    " + line)
        rows.append(Row(impl.name, "ok" if result.ok else "WRONG", result))
    ok = [i for i in impls if any(r.impl == i.name and r.status == "ok" for r in rows)]
    timings = timing.time_impls(op, ok, inputs, repeat=repeat, warmup=1, budget_s=budget_s) if ok else {}
    for r in rows:
        r.timing = timings.get(r.impl)
    return rows


def format_table(op, rows, work, unit, peak=None):
    """The table of one case; the "x" columns are against the first row (the reference on the
    CPU, the default on the GPU); with `peak` (GFLOP/s or GB/s) a "% peak" column too."""
    base = rows[0].timing if rows and rows[0].timing else None
    head = ["impl", "fwd ms", "bwd ms", f"fwd {unit}", f"bwd {unit}", "x fwd", "x bwd", "max err", "status"]
    if peak:
        head.insert(5, "% peak")
    body = []
    for r in rows:
        t = r.timing
        if t is None:
            body.append([r.impl] + ["-"] * (len(head) - 3) + [f"{r.check.max_rel:.1e}", r.status])
            continue
        bwd = t.bwd_s
        cells = [
            r.impl, f"{t.fwd_s * 1e3:.3f}", "-" if bwd is None else f"{bwd * 1e3:.3f}",
            f"{work[0] / t.fwd_s / 1e9:.1f}", "-" if bwd is None else f"{work[1] / bwd / 1e9:.1f}",
            f"{base.fwd_s / t.fwd_s:.2f}" if base else "-",
            f"{base.bwd_s / bwd:.2f}" if base and bwd else "-",
            f"{r.check.max_rel:.1e}", r.status]
        if peak:
            best = max(work[0] / t.fwd_s, work[1] / bwd if bwd else 0.0) / 1e9
            cells.insert(5, f"{100 * best / peak:.0f}%")
        body.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def plot(results, path):
    """Bar chart of forward and backward ms per implementation, one panel per case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(8, 2.6 * len(results)), squeeze=False)
    for ax, (title, rows) in zip(axes[:, 0], results):
        timed = [r for r in rows if r.timing]
        x = np.arange(len(timed))
        ax.bar(x - 0.2, [r.timing.fwd_s * 1e3 for r in timed], 0.4, label="forward")
        ax.bar(x + 0.2, [(r.timing.bwd_s or 0) * 1e3 for r in timed], 0.4, label="backward")
        ax.set_xticks(x, [r.impl for r in timed])
        ax.set_ylabel("ms")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def list_impls(out=print, device="cpu"):
    """Every registered implementation on `device`: * marks the default (registry.DEFAULTS), > what
    runs now where that differs (MINIVIT_KERNELS, kernels.use(), or a backend that failed to import)."""
    overridden = False
    for op in registry.OPS:
        for i in registry.available(op, device=device):
            now = registry.get(op, i.device).name if i.device in registry.DEFAULTS else None
            if i.name == registry.DEFAULTS.get(i.device, {}).get(op):
                mark = "*"
            elif i.name == now:
                mark, overridden = ">", True
            else:
                mark = " "
            out(f"{mark} {op:22s} {i.name:12s} {i.device:4s}  {i.description}")
    out("(* = default on its device: the table DEFAULTS in kernels/registry.py)")
    if overridden:
        out("(> = runs now instead of the default: MINIVIT_KERNELS, kernels.use() or a failed backend)")
    for device, e in registry.backend_errors().items():
        out(f"the {device} backend failed to import: {type(e).__name__}: {e}")


def _result_record(title, op, name, dims, dtype, rows, work, unit):
    """One case of the table as JSON-ready data (--json)."""
    out = []
    for r in rows:
        t = r.timing
        out.append({"impl": r.impl, "status": r.status, "max_rel_err": r.check.max_rel,
                    "fwd_ms": t.fwd_s * 1e3 if t else None,
                    "bwd_ms": t.bwd_s * 1e3 if t and t.bwd_s is not None else None,
                    f"fwd_{unit}": work[0] / t.fwd_s / 1e9 if t else None,
                    f"bwd_{unit}": work[1] / t.bwd_s / 1e9 if t and t.bwd_s else None})
    return {"title": title, "op": op, "preset": name, "dims": dims, "dtype": dtype, "unit": unit, "rows": out}


def _start_device(device, out=print):
    """None on the CPU; on the GPU the measured peaks (printed), or SystemExit(2) with one line
    when CuPy or a GPU is missing."""
    if device == "cpu":
        return None
    from .gpu import runtime, timing

    try:
        runtime.cupy()
    except runtime.DeviceUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    peaks = timing.peaks()
    out(f"device: {peaks['device']}; measured peaks: cuBLAS sgemm {peaks['sgemm_gflops']:.0f} GFLOP/s "
        f"(TF32 {peaks['tf32_gflops']:.0f}), device copy {peaks['copy_gbs']:.0f} GB/s; cuBLAS rows run with "
        f"TF32 {'on' if timing.tf32_enabled() else 'off'} (CUPY_TF32); the numbered kernels are plain FP32")
    return peaks


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m kernels.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("ops", nargs="*", help=f"op(s) or 'all': {', '.join(SPECS)}")
    p.add_argument("--impls", help="comma-separated implementation names (default: all on the device)")
    p.add_argument("--sizes", nargs="+", help="preset names and/or key=value overrides, e.g. N=256,hd=64")
    p.add_argument("--dtype", default="float32", help="float32, float64 or both comma-separated")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per direction (median)")
    p.add_argument("--budget", type=float, default=3.0, help="stop repeating after this many seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "gpu"],
                   help="cpu (Numba and NumPy versions) or cuda (the CuPy/CUDA versions of kernels/gpu/)")
    p.add_argument("--plot", help="save a bar chart PNG here")
    p.add_argument("--json", help="save every case's rows as JSON here")
    p.add_argument("--list", action="store_true", help="list the registered implementations of the device")
    args = p.parse_args(argv)
    device = "cpu" if args.device == "cpu" else "gpu"
    where = "on the CPU" if device == "cpu" else "on the GPU"
    if args.list:
        list_impls(device=device)
        return 0
    if not args.ops:
        p.error("give an op (or 'all'), or --list")
    ops = list(SPECS) if "all" in args.ops else args.ops
    for op in ops:
        if op not in SPECS:
            p.error(f"unknown op {op!r}; ops: {', '.join(SPECS)}")
    wanted = [s.strip() for s in args.impls.split(",")] if args.impls else None
    peaks = _start_device(device)
    results, records = [], []
    for op in ops:
        impls = registry.available(op, device=device)
        if wanted:
            missing = [w for w in wanted if w not in {i.name for i in impls}]
            if missing and len(ops) == 1:
                p.error(f"{op}: no implementation {', '.join(missing)} {where}; available: "
                        f"{', '.join(i.name for i in impls)}")
            impls = [i for i in impls if i.name in wanted]
        if not impls and not wanted:
            print(f"{op}: nothing registered {where}")
            continue
        for name, dims in resolve_sizes(op, args.sizes):
            for dtype in args.dtype.split(","):
                rng = np.random.default_rng(args.seed)
                inputs = SPECS[op].make(dims, np.dtype(dtype), rng)
                title = f"{op} [{name}] {' '.join(f'{k}={v}' for k, v in dims.items())} {dtype}"
                print(f"\n== {title}" + ("" if device == "cpu" else " (cuda)"))
                rows = run_case(op, impls, inputs, repeat=args.repeat, budget_s=args.budget, device=device)
                work = SPECS[op].work(dims, np.dtype(dtype).itemsize)
                unit = SPECS[op].unit
                peak = None
                if peaks and dtype == "float32":
                    peak = peaks["sgemm_gflops"] if unit == "GFLOP/s" else peaks["copy_gbs"]
                print(format_table(op, rows, work, unit, peak))
                results.append((title, rows))
                records.append(_result_record(title, op, name, dims, dtype, rows, work, unit))
    if args.plot and results:
        plot(results, args.plot)
        print(f"\nplot saved to {args.plot}")
    wrong = wrong_rows(results)
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump({"device": peaks["device"] if peaks else "cpu", "peaks": peaks, "cases": records,
                       "wrong": [f"{title}: {impl}" for title, impl, _ in wrong]}, f, indent=1)
        print(f"results saved to {args.json}")
    if wrong:
        report_wrong(wrong)
        return 1
    return 0


def wrong_rows(results):
    """[(case title, impl, first mismatch line)] of every WRONG row of the tables."""
    return [(title, r.impl, r.check.lines[0] if r.check.lines else "no detail")
            for title, rows in results for r in rows if r.status != "ok"]


def report_wrong(wrong, out=print):
    """The WRONG rows again, after the tables: the last lines, the ones a script's log tail shows."""
    out(f"\nFAILED: {len(wrong)} implementation(s) WRONG against the float64 reference (exit 1):")
    for title, impl, detail in wrong:
        out(f"  {impl} in {title}: {detail.strip()}")


if __name__ == "__main__":
    sys.exit(main())
