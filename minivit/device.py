"""Where arrays live: the CPU (NumPy) or an NVIDIA GPU (CuPy), in one place.

minivit names the two places "cpu" and "gpu" (the keys of the kernel table, kernels/gpu/);
wherever a device is asked for, "cuda" (PyTorch's name, what `--device` takes) and "cuda:0"
mean the GPU too. A Tensor's data is a NumPy or a CuPy array; which one decides where each op
runs (autograd.KernelOp fetches the kernel of that device). Moving is explicit:

    model.to("cuda")                # parameters and the model's constant arrays (nn.Module.to)
    x = to_device(x, "cuda")        # an array; to_host(x) brings one back as NumPy
    DataLoader(..., device="cuda")  # batches handed over through pinned memory on a side stream

Copy policy. Host to device: only where asked (above), plus a NumPy array given to an op whose
weights are on the GPU (a batch of images: autograd.KernelOp copies it, as JAX does; a
parameter never moves by itself). Device to host: only through to_host / Tensor.numpy() /
Tensor.item(), never implicitly; a training step reads one small array (loss and number correct)
to log and to check for divergence (minivit.train.trainer). CuPy itself refuses np.asarray on a
GPU array, so a stray host copy fails loudly instead of running slowly.

Asking for the GPU where CuPy or a GPU is missing raises DeviceUnavailable, whose one-line
message starts "cuda requested but" and says which is missing and how to install the [gpu] extra.
"""
from __future__ import annotations

import sys

import numpy as np

from kernels.gpu.runtime import DeviceUnavailable  # noqa: F401  (re-exported: the error users see)
from kernels.gpu import runtime as _gpu

DEVICES = ("cpu", "gpu")
_NAMES = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "cuda:0": "gpu", "gpu:0": "gpu"}


def resolve(device) -> str:
    """"cpu" or "gpu" for a device name ("cpu", "cuda", "cuda:0", "gpu"); ValueError otherwise."""
    name = _NAMES.get(str(device).strip().lower()) if device is not None else None
    if name is None:
        hint = " (minivit uses one GPU: cuda or cuda:0)" if str(device).lower().startswith(("cuda:", "gpu:")) else ""
        raise ValueError(f"unknown device {device!r}{hint}; use 'cpu' or 'cuda'")
    return name


def require(device) -> str:
    """resolve(device), and for the GPU check now that CuPy and a GPU are there (DeviceUnavailable)."""
    device = resolve(device)
    if device == "gpu":
        _gpu.cupy()
    return device


def gpu_available() -> bool:
    """True when CuPy imports and sees a GPU (never raises)."""
    return _gpu.available()


def array_module(a):
    """numpy, or cupy for a CuPy array (cupy is already imported when one exists)."""
    return sys.modules["cupy"] if type(a).__module__.startswith("cupy") else np


def device_of(a) -> str:
    """"cpu" for a NumPy array (or anything that is not a CuPy array), "gpu" for a CuPy array."""
    return "gpu" if type(a).__module__.startswith("cupy") else "cpu"


def to_device(a, device):
    """The array on `device`: the same array when it is there already, else a copy."""
    device = require(device)
    if device_of(a) == device:
        return a
    return _gpu.cupy().asarray(a) if device == "gpu" else to_host(a)


def to_host(a):
    """A NumPy array with a's values (a copy from the GPU; a NumPy array as it is)."""
    return a.get() if device_of(a) == "gpu" else np.asarray(a)


def synchronize():
    """Wait for the GPU's queued work (timing); nothing to wait for on the CPU."""
    if "cupy" in sys.modules and _gpu.available():
        _gpu.cupy().cuda.get_current_stream().synchronize()


def tf32(enabled: bool):
    """Context manager: cuBLAS float32 products with (True) or without (False) TF32 tensor cores.
    The default is CuPy's: off unless CUPY_TF32=1 is set before the first product."""
    from kernels.gpu.timing import tf32 as _tf32

    return _tf32(enabled)


class CudaCopies:
    """The CUDA calls of the data loader's hand-off (minivit.data.loader.to_device_batches):
    pinned host buffers, a side stream, events, asynchronous copies. One small object, so that
    the tests drive the same hand-off code with a fake one on a machine without a GPU."""

    def __init__(self):
        self.cp = _gpu.cupy()
        import cupyx

        self._cupyx = cupyx

    def pinned_empty(self, shape, dtype):
        return self._cupyx.empty_pinned(shape, dtype)

    def new_stream(self):
        return self.cp.cuda.Stream(non_blocking=True)

    def current_stream(self):
        return self.cp.cuda.get_current_stream()

    def empty(self, shape, dtype):
        """Allocated on the current (compute) stream, so the pool reuses it in that stream's order."""
        return self.cp.empty(shape, dtype)

    def copy_async(self, dst, src, stream):
        dst.set(src, stream=stream)

    def record(self, stream):
        return stream.record()

    def wait(self, stream, event):
        stream.wait_event(event)
