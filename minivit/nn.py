"""Modules: containers of parameters and sub-modules with PyTorch's names and behaviour
(`parameters()`, `named_parameters()`, `state_dict()`, `load_state_dict()`, `train()`, `eval()`,
`zero_grad()`, `to(device)`), plus the layers a ViT is made of: Linear, LayerNorm, Dropout, DropPath.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from . import device as _device
from . import functional as F
from . import rng
from .autograd import Tensor, array_module


class Parameter(Tensor):
    """A Tensor that a Module registers as trainable (requires_grad=True). Its array is
    C-contiguous (row-major): made so here and by Module.load_state_dict, to() and astype(),
    because the fused optimizer kernels walk a parameter and its moments as flat memory.

    `no_weight_decay`: weight decay skips this parameter (train.param_groups reads only this).
    The module that makes a parameter knows what it is, so it says; left unsaid (None), a vector
    (ndim <= 1: biases, LayerNorm scales and shifts) is exempt and anything with more axes decays,
    timm's rule. A token or an embedding with more axes is marked by its maker (ViT's cls_token,
    every position-embedding kind in posemb.py)."""

    __slots__ = ("no_weight_decay",)

    def __init__(self, data, requires_grad=True, no_weight_decay=None):
        super().__init__(data, requires_grad=requires_grad)
        self.data = c_contiguous(self.data)
        self.no_weight_decay = self.data.ndim <= 1 if no_weight_decay is None else bool(no_weight_decay)

    def __repr__(self):
        exempt = ", no_weight_decay=True" if self.no_weight_decay else ""
        return f"Parameter(shape={self.shape}, dtype={self.dtype}{exempt})"


class Module:
    """Base class: assigning a Parameter or Module to an attribute registers it by name."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        params, modules = self.__dict__.get("_parameters"), self.__dict__.get("_modules")
        if params is None:
            raise AttributeError("call Module.__init__() before assigning attributes")
        params.pop(name, None)
        modules.pop(name, None)
        if isinstance(value, Parameter):
            params[name] = value
        elif isinstance(value, Module):
            modules[name] = value
        object.__setattr__(self, name, value)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    # ---- traversal ------------------------------------------------------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, module in self._modules.items():
            yield from module.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (m for _, m in self.named_modules())

    def children(self):
        return iter(self._modules.values())

    def named_parameters(self, prefix=""):
        for module_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                yield (f"{module_name}.{name}" if module_name else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    # ---- modes and gradients --------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def astype(self, dtype):
        """Cast every parameter to `dtype` in place (e.g. np.float64 for gradient checks)."""
        for p in self.parameters():
            p.data = p.data.astype(dtype, order="C")
            p.grad = None
        return self

    def to(self, device):
        """Move the model to `device` ("cpu" or "cuda") in place and return it: every parameter
        (and gradient) and every constant array a module holds, directly or in a plain helper
        object (a fixed sin-cos table, a relative-position index). Parameters stay the same
        objects, so an optimizer made earlier still holds them (its state follows them at its
        next step). On the device already: nothing is copied. No GPU: DeviceUnavailable, before
        anything moves. Parameters and gradients come out C-contiguous (a Fortran-ordered or
        strided array is copied to row-major order, also when it is on `device` already)."""
        device = _device.require(device)
        for p in self.parameters():
            p.data = c_contiguous(_device.to_device(p.data, device))
            if p.grad is not None:
                p.grad = c_contiguous(_device.to_device(p.grad, device))
        for m in self.modules():
            _move_constants(m, device, depth=1)
        return self

    # ---- state dicts ----------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """{name: array} with timm's names; the arrays are the live parameter arrays."""
        return OrderedDict((name, p.data) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters, in C order whatever the source's layout (interop's
        transposed kernels are Fortran-ordered). Raises KeyError listing missing and unexpected keys
        (when strict) and ValueError on any shape mismatch, before changing anything."""
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(
                "state dict does not match the model: "
                f"missing keys {missing or 'none'}; unexpected keys {unexpected or 'none'}"
            )
        mismatched = [
            f"{k}: checkpoint {tuple(np.shape(v))} vs model {own[k].shape}"
            for k, v in state_dict.items()
            if k in own and tuple(np.shape(v)) != own[k].shape
        ]
        if mismatched:
            raise ValueError("shape mismatch in state dict (was it saved from another config?): "
                             + "; ".join(mismatched))
        for k, v in state_dict.items():
            if k in own:
                p = own[k]
                p.data = _to_like(v, p.data)
                p.grad = None
        return missing, unexpected

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"

    def extra_repr(self):
        return ""


def c_contiguous(a):
    """`a` itself when it is C-contiguous (row-major), else a row-major copy on its device. A
    parameter must be: the fused AdamW kernels on the GPU (kernels/gpu/optim.py) pair element i
    of p's flat memory with element i of its gradient's and its moments', so a Fortran-ordered
    weight next to a row-major gradient would take another weight's gradient (the multi-tensor
    default refuses such a list; the Numba one falls back to the slower NumPy reference)."""
    return a if a.flags.c_contiguous else a.copy(order="C")


def _to_like(value, like):
    """`value` as an owned, C-contiguous array with `like`'s dtype and device (a checkpoint's host
    arrays load into GPU parameters, a GPU model's state dict into a CPU one)."""
    value = value.numpy() if isinstance(value, Tensor) or type(value).__module__.startswith("torch") else value
    if _device.device_of(like) == "cpu":
        return np.array(_device.to_host(value), dtype=like.dtype, copy=True, order="C")
    return c_contiguous(array_module(like).array(value, dtype=like.dtype, copy=True))


def _move_constants(obj, device, depth):
    """Move the arrays (and gradient-free tensors) that obj holds as attributes to `device`; look
    `depth` levels into plain minivit helper objects (posemb's), never into Modules (they are
    visited themselves) or Parameters (moved by Module.to)."""
    for name, value in list(vars(obj).items()):
        if isinstance(value, (Module, Parameter)) or name in ("_parameters", "_modules"):
            continue
        if isinstance(value, np.ndarray) or _device.device_of(value) == "gpu":  # a NumPy or a CuPy array
            moved = _device.to_device(value, device)
            if moved is not value:
                object.__setattr__(obj, name, moved)
        elif isinstance(value, Tensor):
            value.data = _device.to_device(value.data, device)
        elif depth and type(value).__module__.startswith("minivit.") and hasattr(value, "__dict__"):
            _move_constants(value, device, depth - 1)


class ModuleList(Module):
    """A list of modules registered under "0", "1", ... (timm's `blocks.{i}` names)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        setattr(self, str(len(self._modules)), module)

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        return list(self._modules.values())[i]


class Identity(Module):
    def forward(self, x):
        return x


# ---- initialisation -------------------------------------------------------------------------

def trunc_normal(shape, std=0.02, dtype=np.float32):
    """Normal(0, std) truncated to [-2 std, 2 std] by resampling (the truncation of JAX's
    initializers; timm's trunc_normal_ cuts at +-2 absolute, i.e. hardly at all for std 0.02)."""
    gen = rng.generator()
    out = gen.standard_normal(shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = gen.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2.0
    return (out * std).astype(dtype)


def lecun_normal(shape, fan_in, dtype=np.float32):
    """Truncated normal with variance 1/fan_in (big_vision's patch-embedding init)."""
    # 0.8796 corrects the variance lost by truncating at 2 std.
    return trunc_normal(shape, std=math.sqrt(1.0 / fan_in) / 0.87962566103423978, dtype=dtype)


# ---- layers ---------------------------------------------------------------------------------

class Linear(Module):
    """y = x @ weight.T + bias; weight (out, in) as in PyTorch. Init: trunc normal 0.02, bias 0
    (timm's ViT init)."""

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(trunc_normal((out_features, in_features), dtype=dtype))  # (out, in)
        self.bias = Parameter(np.zeros(out_features, dtype=dtype)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class LayerNorm(Module):
    def __init__(self, dim, eps=1e-6, dtype=np.float32):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = Parameter(np.ones(dim, dtype=dtype))
        self.bias = Parameter(np.zeros(dim, dtype=dtype))

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


class Dropout(Module):
    def __init__(self, p=0.0):
        super().__init__()
        self.p = F.check_probability(p, "dropout")

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class DropPath(Module):
    """Stochastic depth per sample on a residual branch."""

    def __init__(self, p=0.0):
        super().__init__()
        self.p = F.check_probability(p, "drop-path")

    def forward(self, x):
        return F.drop_path(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"
