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
# 6. see where the labels are checked (on the host, once, before they go to the GPU), and count
#    what a training step copies back to the host: one small array.
#
# Cells that need a GPU say so and skip on a machine without one; the project's GPU tests
# (tests/test_gpu.py) check the same claims on a GPU. Topics: (performance). Time: a few
# seconds without a GPU; about 30 s with one (the first run of a machine compiles the .cu
# files, then CuPy caches them).

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
# itself), and `.numpy()` brings the logits back.
#
# **Predict, then run.** Same weights, same images: will the GPU's logits equal the CPU's bit
# for bit? If not, how large a difference do you expect, relative to the largest logit?

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
    print(f"largest difference, relative to the largest logit: {err:.1e} (float32 sums in another order)")
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
# CPU. (The CUDA C versions, v2 and v3, need a GPU.)

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
# (`device.array_module(x)`) and call that. ViT's MLP uses the exact GELU, x Phi(x), where Phi
# is the cumulative distribution function of the standard normal,
# Phi(x) = integral from -inf to x of exp(-t^2 / 2) / sqrt(2 pi) dt. Libraries do not offer Phi;
# they offer the error function, erf(z) = (2 / sqrt(pi)) integral from 0 to z of exp(-t^2) dt.
#
# **Exercise 1.** Express Phi through erf (split Phi's integral at 0 and substitute t = sqrt(2) s),
# then write `gelu_xp(x)` for a NumPy or a CuPy array x. For erf use `kernels.gpu.normact.erf`,
# which picks scipy's or cupyx's. Return an array of x's dtype. The check compares with minivit's
# GELU reference on [-4, 4] (and on the GPU too, where there is one).

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
# ## Where the labels are checked
#
# A label outside [0, K) must stop a run, not train it on garbage. `F.cross_entropy` checks
# labels that are on the host, where reading them is free. It does not read labels that are
# already on the GPU: that would copy them to the host, and make the host wait for the device,
# in every step. Instead the Trainer checks every split's labels once, on the host, against its
# head's number of classes, before its loaders copy any batch to the device
# (`minivit.functional.check_labels`). Both checks run on any machine:

# %%
from minivit.functional import check_labels  # noqa: E402


def value_error(f, *args):
    """The message of the ValueError that f(*args) raises, or None if it raises none."""
    try:
        f(*args)
    except ValueError as e:
        return str(e)
    return None


assert value_error(check_labels, np.arange(10), 10, "train labels") is None
message = value_error(check_labels, np.array([0, 3, 10]), 10, "train labels")
print(message)
assert "[0, 9] for 10 classes" in message and "[0, 10]" in message
message = value_error(F.cross_entropy, np.zeros((3, 10), np.float32), np.array([0, -1, 2]))
print(message)
assert "[0, 9] for 10 classes" in message and "[-1, 2]" in message

# %% [markdown]
# ## What a training step copies back
#
# A GPU runs ahead of Python: kernels are queued, and the host waits only when it reads a value.
# So a training step should read as little as possible. minivit's Trainer reads one small array
# at the end of each step, the loss and the number of correct predictions together (two
# float64 numbers), to log them and to stop on divergence; gradient clipping computes and
# applies its norm on the device, the accuracy is counted there, and the labels were checked
# before they left the host. Below, on a GPU, we count every read of a CuPy array by the host
# during three steps, by wrapping the CuPy methods that copy to the host (`get`, `item`,
# `tolist`, and the conversions to Python numbers and NumPy arrays).
#
# **Predict, then run.** How many arrays will three training steps copy to the host, and of
# what shape?

# %%
if GPU:
    from minivit.train import TrainConfig, Trainer

    trainer = Trainer(TrainConfig(model="vit_testing", dataset="procedural", num_samples=256, val_size=0, epochs=1,
                                  batch_size=64, out_dir=str(OUT / "run"), device="cuda", progress=False,
                                  eval_test="never"))
    batches = [b for b, _ in zip(trainer.train_loader.epoch(0), range(4))]
    assert all(device.device_of(y) == "gpu" for _, y in batches)  # the labels travel with their images
    trainer.train_step(*batches[0])  # the first step compiles
    READS = [name for name in ("get", "item", "tolist", "__float__", "__int__", "__bool__", "__index__", "__array__")
             if hasattr(cp.ndarray, name)]  # the ways the host reads a GPU array (some CuPy versions lack __index__)
    originals = {name: getattr(cp.ndarray, name) for name in READS}
    copies, depth = [], []

    def counted(name):
        def read(self, *args, **kwargs):
            if not depth:  # the outermost read only: one read may call another
                copies.append((name, self.shape))
            depth.append(name)
            try:
                return originals[name](self, *args, **kwargs)
            finally:
                depth.pop()
        return read

    for name in READS:
        setattr(cp.ndarray, name, counted(name))
    try:
        for batch in batches[1:]:
            trainer.train_step(*batch)
    finally:
        for name, method in originals.items():
            setattr(cp.ndarray, name, method)
    print("reads of GPU arrays by the host in 3 steps (method, shape):", copies)
    assert copies == [("get", (2,))] * 3  # the (loss, correct) pair, once a step, and nothing else
    results["host_copies_in_3_steps"] = [list(c[1]) for c in copies]
else:
    print("skipped: no GPU")
(OUT / "results.json").write_text(json.dumps(results, indent=1))
