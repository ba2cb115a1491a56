"""What kernels/bench.py needs to check and time GPU versions: the same harness as on the CPU,
with three device-side pieces.

- `on_device(impl)`: the implementation as host-in, host-out functions, so that bench.run_pair
  checks it exactly as a CPU version: inputs copied to the device, outputs and gradients copied
  back and compared on the host with the float64 reference; an in-place op (AdamW) has its
  state copied back into the caller's arrays; a version that changes its device inputs is
  reported, as on the CPU.
- `time_impls(op, impls, inputs)`: forward and backward times from CUDA events recorded around
  each call on the current stream (the GPU's own clock, not the host's), on inputs copied to
  the device once; implementations take turns run by run, medians as on the CPU.
- `peaks()`: the card's measured ceilings, to put each row in proportion: cuBLAS sgemm in
  float32 and with TF32 tensor cores (8192^3), and a device-to-device copy (bytes read plus
  written).
"""
from __future__ import annotations

import contextlib

import numpy as np

from . import runtime


def _host(a):
    return runtime.cupy().asnumpy(a) if runtime.is_device_array(a) else a


def _device(a):
    return runtime.cupy().asarray(a) if isinstance(a, np.ndarray) else a


def on_device(impl):
    """impl (a GPU Impl) as an Impl over host arrays (see the module docstring)."""
    from ..registry import Impl

    cp = runtime.cupy()
    sent = {}

    def forward(*args, **params):
        dev = [_device(a) for a in args]
        out, cache = impl.forward(*dev, **params)
        if impl.backward is None:  # in place: the caller reads its own arrays afterwards
            for a, d in zip(args, dev):
                if isinstance(a, np.ndarray):
                    a[...] = cp.asnumpy(d)
            return out, cache
        sent["pairs"] = [(a, d) for a, d in zip(args, dev) if isinstance(a, np.ndarray)]
        return _host(out), cache

    def backward(grad, cache):
        grads = impl.backward(cp.asarray(grad), cache)
        changed = [i for i, (a, d) in enumerate(sent.get("pairs", []))
                   if not np.array_equal(a, cp.asnumpy(d), equal_nan=a.dtype.kind == "f")]
        if changed:
            raise ValueError(f"{impl.name} changed its inputs in place on the device (args {changed})")
        return tuple(_host(g) for g in grads)

    return Impl(impl.op, impl.name, impl.device, forward, backward if impl.backward else None, impl.description)


def _elapsed(fn, cp):
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    fn()
    end.record()
    end.synchronize()
    return cp.cuda.get_elapsed_time(start, end) / 1e3  # seconds


def time_impls(op, impls, inputs, repeat=5, warmup=1, budget_s=3.0, seed=0):
    """{name: Timing} for GPU Impls, timed with CUDA events (see the module docstring)."""
    from ..bench import Timing

    cp = runtime.cupy()
    runs = []
    for impl in impls:
        args = tuple(_device(a) for a in inputs.args)  # each its own copy: AdamW updates in place
        params = dict(inputs.params)
        fwd = (lambda impl, args, params: lambda: impl.forward(*args, **params))(impl, args, params)
        bwd = None
        if impl.backward is not None:
            out, cache = fwd()
            grad = cp.asarray(np.random.default_rng(seed).standard_normal(out.shape).astype(out.dtype))
            bwd = (lambda impl, grad, cache: lambda: impl.backward(grad, cache))(impl, grad, cache)
        runs.append((impl.name, fwd, bwd))
    for _ in range(warmup):
        for _, fwd, bwd in runs:
            fwd()
            if bwd:
                bwd()
    cp.cuda.get_current_stream().synchronize()
    times = {name: ([], []) for name, _, _ in runs}
    for r in range(max(1, repeat)):
        for name, fwd, bwd in runs:
            if r and sum(times[name][0]) + sum(times[name][1]) > budget_s:
                continue
            for fn, out in ((fwd, times[name][0]), (bwd, times[name][1])):
                if fn is not None:
                    out.append(_elapsed(fn, cp))
    return {name: Timing(float(np.median(f)), float(np.median(b)) if b else None) for name, (f, b) in times.items()}


@contextlib.contextmanager
def tf32(enabled: bool):
    """Within the block, cuBLAS float32 products may (True) or may not (False) use TF32 tensor
    cores. CuPy reads its switch, CUPY_TF32, once; this sets the compute type it derived from it
    (cupy._core._routines_linalg: not public API, so a CuPy that moves it raises here)."""
    runtime.cupy()
    from cupy._core import _routines_linalg as linalg

    before = linalg.get_compute_type(np.float32)
    linalg.set_compute_type(np.float32, linalg.COMPUTE_TYPE_TF32 if enabled else linalg.COMPUTE_TYPE_DEFAULT)
    try:
        yield
    finally:
        linalg.set_compute_type(np.float32, before)


def tf32_enabled() -> bool:
    runtime.cupy()
    from cupy._core import _routines_linalg as linalg

    return linalg.get_compute_type(np.float32) == linalg.COMPUTE_TYPE_TF32


def peaks(n=8192, repeat=5, copy_bytes=1 << 30):
    """{"sgemm_gflops", "tf32_gflops", "copy_gbs", "device"}: the card's measured ceilings."""
    cp = runtime.cupy()
    result = {key: _gemm_gflops(cp, n, repeat, enabled)
              for key, enabled in (("sgemm_gflops", False), ("tf32_gflops", True))}
    src = cp.ones(copy_bytes // 4, cp.float32)
    dst = cp.empty_like(src)
    cp.copyto(dst, src)
    t = float(np.median([_elapsed(lambda: cp.copyto(dst, src), cp) for _ in range(repeat)]))
    result["copy_gbs"] = 2 * src.nbytes / t / 1e9  # read + write
    result["device"] = device_name()
    return result


def _gemm_gflops(cp, n, repeat, enabled):
    """GFLOP/s of an n x n x n cuBLAS float32 product on random data, TF32 on or off (median)."""
    rng = cp.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=cp.float32)
    b = rng.standard_normal((n, n), dtype=cp.float32)
    with tf32(enabled):
        cp.matmul(a, b)
        t = float(np.median([_elapsed(lambda: cp.matmul(a, b), cp) for _ in range(repeat)]))
    return 2 * n**3 / t / 1e9


def device_name() -> str:
    cp = runtime.cupy()
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.runtime.getDevice())
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)
