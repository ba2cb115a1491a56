"""The kernel registry: a small visible table of (op, name) -> implementation.

Every fused op the model uses (linear, attention, layernorm, ...) has several array-level
implementations: a NumPy reference (the ground truth), numbered Numba CPU versions, CuPy GPU
versions. Each registers here with its forward and backward. Model code only ever asks
`get("attention")` and runs whatever is selected, so swapping a kernel changes no model code:

    import kernels
    kernels.available("attention")                  # what is there, with descriptions
    with kernels.use(attention="reference"):        # for a block of code
        ...
    kernels.use(attention="cpu_v3")                 # or for the rest of the process

The environment variable MINIVIT_KERNELS="attention=cpu_v1,layernorm=reference" sets the
selection at import time.

Calling convention, the same for every op (see kernels/reference/__init__.py for each signature):
    out, cache = impl.forward(*arrays, **params)
    grads      = impl.backward(grad_out, cache)     # a tuple, one entry per array input
`cache` is private to the implementation: a flash attention keeps the row log-sum-exp there,
the reference keeps the full probability matrix.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

OPS = (
    "matmul",
    "linear",
    "patch_embed",
    "layernorm",
    "gelu",
    "softmax",
    "attention",
    "softmax_cross_entropy",
    "adamw_update",
)


@dataclass(frozen=True)
class Impl:
    op: str
    name: str
    device: str  # "cpu" (NumPy arrays) or "gpu" (CuPy arrays)
    forward: Callable
    backward: Callable | None  # None for ops without a gradient (adamw_update)
    description: str
    priority: int = 0  # the highest-priority registered impl of a device is its default


_TABLE: dict[str, dict[str, Impl]] = {op: {} for op in OPS}
_SELECTED: dict[tuple[str, str], str] = {}  # (op, device) -> name chosen by use()
_LOADED = False


def register(op, name, forward, backward=None, *, device="cpu", description="", priority=0):
    """Add one implementation to the table (later registrations with the same name replace)."""
    if op not in _TABLE:
        raise ValueError(f"unknown op {op!r}; known ops: {', '.join(OPS)}")
    _TABLE[op][name] = Impl(op, name, device, forward, backward, description, priority)
    return _TABLE[op][name]


def _load_all():
    """Import the backends lazily, so `import kernels` stays cheap and a missing Numba or
    CuPy only removes that backend's rows from the table."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from . import reference  # noqa: F401  (registers on import)

    for backend in ("cpu", "gpu"):
        try:
            __import__(f"{__package__}.{backend}")
        except ImportError:
            pass  # accelerator library missing: its kernels are simply not available
    _apply_env()


def _apply_env():
    spec = os.environ.get("MINIVIT_KERNELS", "").strip()
    if spec:
        _select(parse_spec(spec))


def parse_spec(spec: str) -> dict[str, str]:
    """'attention=cpu_v1,layernorm=reference' -> {'attention': 'cpu_v1', 'layernorm': 'reference'}."""
    choices = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        op, sep, name = item.partition("=")
        if not sep or not name:
            raise ValueError(f"kernel choice {item!r} should look like op=name, e.g. attention=reference")
        choices[op.strip()] = name.strip()
    return choices


def available(op: str | None = None, device: str | None = None) -> list[Impl]:
    """All registered implementations (of one op / one device), defaults first."""
    _load_all()
    ops = [op] if op else list(OPS)
    for o in ops:
        if o not in _TABLE:
            raise ValueError(f"unknown op {o!r}; known ops: {', '.join(OPS)}")
    rows = [impl for o in ops for impl in _TABLE[o].values() if device in (None, impl.device)]
    return sorted(rows, key=lambda i: (OPS.index(i.op), i.device, -i.priority, i.name))


def get(op: str, device: str = "cpu") -> Impl:
    """The implementation of `op` that runs now on `device`."""
    _load_all()
    impls = _TABLE.get(op)
    if impls is None:
        raise ValueError(f"unknown op {op!r}; known ops: {', '.join(OPS)}")
    name = _SELECTED.get((op, device))
    if name is not None:
        return impls[name]
    candidates = [i for i in impls.values() if i.device == device]
    if not candidates:
        raise RuntimeError(f"no {device} implementation of {op!r} is registered")
    return max(candidates, key=lambda i: i.priority)


def _select(choices: dict[str, str]) -> dict[tuple[str, str], str | None]:
    """Apply choices; return the previous selection of every touched (op, device)."""
    _load_all()
    for op, name in choices.items():  # validate all before applying any
        if op not in _TABLE:
            raise ValueError(f"unknown op {op!r}; known ops: {', '.join(OPS)}")
        if name not in _TABLE[op]:
            names = ", ".join(sorted(_TABLE[op])) or "none"
            raise ValueError(f"no implementation {name!r} of {op!r}; available: {names}")
    previous = {}
    for op, name in choices.items():
        key = (op, _TABLE[op][name].device)
        previous.setdefault(key, _SELECTED.get(key))
        _SELECTED[key] = name
    return previous


class use:
    """Choose implementations by name: `kernels.use(attention="cpu_v1")` takes effect at once
    for the whole process; `with kernels.use(...):` restores the previous choice on exit."""

    def __init__(self, **choices: str):
        self._previous = _select(choices)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for key, name in self._previous.items():
            if name is None:
                _SELECTED.pop(key, None)
            else:
                _SELECTED[key] = name
        return False


def reset():
    """Forget every choice made by use(): each op goes back to its device default."""
    _SELECTED.clear()


def selection(device: str = "cpu") -> dict[str, str]:
    """{op: name} of what runs now on `device`."""
    _load_all()
    return {op: get(op, device).name for op in OPS if any(i.device == device for i in _TABLE[op].values())}
