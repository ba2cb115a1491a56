# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 12 · The same model on a GPU
#
# **Goal.** Run minivit's ViT on an NVIDIA GPU, where its arrays are CuPy arrays and its fused ops
# run CUDA C kernels (kernels/gpu/*.cu), and see that nothing else changes: the same model code,
# the same kernel table, the same check-then-time harness. We:
#
# 1. see where arrays live, and move a model with `model.to("cuda")` (a no-op to "cpu");
# 2. read the GPU column of the kernel table (`kernels.DEFAULTS["gpu"]`);
# 3. compare the model's logits on the CPU and on the GPU;
# 4. swap the GPU attention kernel one version at a time (v1 cuBLAS + softmax, v2 a warp per row,
#    v3 flash tiles), check each against the float64 reference and time it with CUDA events;
# 5. write an op in array code that runs on both devices (the exercise);
# 6. count what a training step copies back to the host: one small array.
#
# Cells that need a GPU say so and skip on a machine without one; what they claim is checked
# by tests/test_gpu.py on a GPU, and on the CPU by tests/test_device_cpu.py with a fake GPU.
# Topics: (performance). Time: a few seconds without a GPU; about 30 s with one (the first
# run of a machine compiles the .cu files, then CuPy caches them).

# %%
import kernels
import json
import os
from pathlib import Path

import numpy as np

import minivit
from kernels import bench
from minivit import device
from minivit import functional as F

OUT = Path(os.environ.get("MINIVIT_TUTORIAL_OUT", "runs/tutorials")) / "12_gpu"
OUT.mkdir(parents=True, exist_ok=True)
GPU = device.gpu_available()
if GPU:
    import cupy as cp

    from kernels.gpu import timing

    print("GPU:", timing.device_name())
else:
    try:
        device.require("cuda")
    except device.DeviceUnavailable as e:
        print(f"No GPU here, so the GPU cells will skip. Why: {e}")
results = {"gpu": GPU}

# %% [markdown]
# ## Where arrays live
#
# A `Tensor` wraps a NumPy array (the CPU) or a CuPy array (the GPU); `device_of` tells which,
# and every op runs where its inputs are. minivit calls the two places "cpu" and "gpu" (the keys
# of the kernel table); where a device is asked for, "cuda" (PyTorch's name) means the GPU too.
# `model.to(device)` moves every parameter, and the constant arrays a model holds (a fixed
# sin-cos position table), in place. Moving to where a model already is copies nothing.

# %%
model = minivit.create_model("vit_testing", pos_embed="sincos")
before = [p.data for p in model.parameters()]
assert model.to("cpu") is model and all(a is p.data for a, p in zip(before, model.parameters()))
assert device.resolve("cuda") == device.resolve("gpu") == "gpu" and device.device_of(before[0]) == "cpu"
print("parameters on:", device.device_of(model.head.weight.data), "| 'cuda' means:", device.resolve("cuda"))

# %% [markdown]
# ## The GPU column of the kernel table
#
# kernels/registry.py holds one table of defaults per device. Every op has a GPU default, and
# the GPU versions are registered on every machine (CuPy is only imported when one runs), so
# they are listed here with or without a GPU.

# %%
assert set(kernels.DEFAULTS["gpu"]) == set(kernels.OPS)
for op, name in kernels.DEFAULTS["gpu"].items():
    assert kernels.find(op, name).device == "gpu"
for impl in kernels.available("attention", device="gpu"):
    star = "*" if kernels.DEFAULTS["gpu"]["attention"] == impl.name else " "
    print(f"{star} {impl.name:7s} {impl.description}")

# %% [markdown]
# ## The same model on the CPU and on the GPU
#
# A copy of the model with the same weights goes to the GPU. NumPy images given to a model on the
# GPU are copied there by its first op (data follows the weights; a parameter never moves by
# itself), and `.numpy()` brings the logits back. The two agree to float32 rounding: the CPU and
# the GPU add in different orders.

# %%
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
with minivit.no_grad():
    cpu_logits = model(x).numpy()
if GPU:
    gpu_model = minivit.create_model("vit_testing", pos_embed="sincos")
    gpu_model.load_state_dict(model.state_dict())
    gpu_model.to("cuda")
    with minivit.no_grad():
        gpu_logits = gpu_model(x).numpy()
    err = float(np.abs(gpu_logits - cpu_logits).max() / np.abs(cpu_logits).max())
    print(f"largest difference, relative to the largest logit: {err:.1e}")
    assert err < 1e-4
    results["logits_rel_err"] = err
else:
    print("skipped: no GPU")

# %% [markdown]
# ## One kernel swapped at a time: check, then time
#
# The same harness as for the CPU kernels (tutorial 11): `bench.check` compares an
# implementation's output and gradients with the float64 NumPy reference; on the GPU the inputs
# are copied to the device and the results back (`timing.on_device`), and `timing.time_impls`
# times with CUDA events, on the GPU's own clock. The three attention versions at the CIFAR ViT's
# shape, then the model itself with each one selected.
#
# Without a GPU, one claim can still be checked here: version 1 of most GPU ops is written as
# CuPy array code, which runs unchanged with NumPy arrays, so it meets the same reference on the
# CPU. (The CUDA C versions, v2 and v3, are compiled by tests/test_gpu_sources.py on any machine
# with nvcc, and run by tests/test_gpu.py on a GPU.)

# %%
dims = dict(B=32, Hh=3, N=65, hd=64)
inputs = bench.SPECS["attention"].make(dims, np.dtype("float32"), np.random.default_rng(1))
if GPU:
    impls = kernels.available("attention", device="gpu")
    for impl in impls:
        result = bench.check("attention", timing.on_device(impl), inputs)
        assert result.ok, result.lines
    times = timing.time_impls("attention", impls, inputs, repeat=20)
    for name, t in times.items():
        print(f"{name}: forward {t.fwd_s * 1e3:.3f} ms, backward {t.bwd_s * 1e3:.3f} ms")
    results["attention_ms"] = {k: [t.fwd_s * 1e3, t.bwd_s * 1e3] for k, t in times.items()}
    for impl in impls:
        with kernels.use(attention=impl.name), minivit.no_grad():
            assert np.allclose(gpu_model(x).numpy(), cpu_logits, rtol=1e-3, atol=1e-4), impl.name
else:
    result = bench.check("attention", kernels.find("attention", "gpu_v1"), inputs)
    assert result.ok, result.lines
    print(f"gpu_v1 run with NumPy: matches the float64 reference (largest relative error {result.max_rel:.1e})")

# %% [markdown]
# ## Exercise: an op in array code, for both devices
#
# The array-code versions never name NumPy or CuPy: they ask the array which module it belongs to
# (`device.array_module(x)`) and call that. Write `gelu_xp(x)`, the exact GELU of ViT's MLP,
# `x * Phi(x)` with `Phi(x) = (1 + erf(x / sqrt(2))) / 2`, for a NumPy or a CuPy array. For erf use
# `kernels.gpu.normact.erf`, which picks scipy's or cupyx's. Return an array of x's dtype.

# %% tags=["solution"]
from kernels.gpu.normact import erf  # noqa: E402


def gelu_xp(x):
    xp = device.array_module(x)
    return (x * (0.5 * (1.0 + erf(x / xp.sqrt(xp.asarray(2.0, dtype=x.dtype)))))).astype(x.dtype, copy=False)


# %%
x1 = np.linspace(-4, 4, 1001).astype(np.float32)
want, _ = kernels.find("gelu", "reference").forward(x1.astype(np.float64))
assert gelu_xp(x1).dtype == np.float32 and np.allclose(gelu_xp(x1), want, atol=1e-6)
if GPU:
    assert np.allclose(cp.asnumpy(gelu_xp(cp.asarray(x1))), want, atol=1e-6)
print("gelu_xp matches the reference", "on the CPU and the GPU" if GPU else "on the CPU")

# %% [markdown]
# ## What a training step copies back
#
# A GPU runs ahead of Python: kernels are queued, and the host waits only when it reads a value.
# So a training step should read as little as possible. minivit's Trainer reads one small array
# at the end of each step, the loss and the number of correct predictions together (8 bytes),
# to log them and to stop on divergence; gradient clipping computes and applies its norm on the
# device, and the accuracy is counted there. (`F.cross_entropy` also checks that the labels lie
# in range, which reads them; issue 10's report discusses moving that check to the host.)
# Below, on a GPU, we count the copies of three steps by wrapping CuPy's `get`.

# %%
if GPU:
    from minivit.train import TrainConfig, Trainer

    trainer = Trainer(TrainConfig(model="vit_testing", dataset="procedural", num_samples=256, val_size=0, epochs=1,
                                  batch_size=64, out_dir=str(OUT / "run"), device="cuda", progress=False))
    batches = [b for b, _ in zip(trainer.train_loader.epoch(0), range(4))]
    trainer.train_step(*batches[0])  # the first step compiles
    calls, get = [], cp.ndarray.get
    cp.ndarray.get = lambda self, *a, **k: calls.append(self.shape) or get(self, *a, **k)
    try:
        for batch in batches[1:]:
            trainer.train_step(*batch)
    finally:
        cp.ndarray.get = get
    print("arrays copied to the host in 3 steps (shapes):", calls)
    assert calls.count((2,)) == 3  # the (loss, correct) pair, once a step
else:
    print("skipped: no GPU")
(OUT / "results.json").write_text(json.dumps(results, indent=1))
