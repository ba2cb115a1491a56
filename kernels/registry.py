"""The kernel registry: every implementation of every fused op, and one table of defaults.

Every fused op the model uses (linear, attention, layernorm, ...) has several array-level
implementations: a NumPy reference (the ground truth), numbered Numba CPU versions, and later
GPU versions. Each registers here with its forward and backward. Model code only ever asks
`get("attention")` and runs whatever is selected, so swapping a kernel changes no model code.
Which one runs when nothing is chosen is written in one place: DEFAULTS, below.

Choosing (the same choices from Python and from the environment):

    import kernels
    kernels.available("attention")                  # what is there, with descriptions
    with kernels.use(attention="reference"):        # for a block of code (restored on exit)
        ...
    kernels.select(attention="cpu_v3")              # or for the rest of the process (reset() undoes)
    with kernels.use("reference"):                  # reading mode: every op runs its NumPy
        ...                                         # reference (a bare name: every op that has it)
    kernels.select("reference", attention="cpu_v3") # mixed: keywords override the bare name
    kernels.select("reference,attention=cpu_v3")    # the same, as a spec string
    kernels.validate("reference,attention=cpu_v3")  # check without applying -> {op: name}

    MINIVIT_KERNELS=reference                       # reading mode for a whole run, at import
    MINIVIT_KERNELS=reference,attention=cpu_v3      # mixed; or attention=cpu_v1,layernorm=reference

A spec string is comma-separated `op=name` items plus at most one bare implementation name,
which stands for every op that has an implementation of that name; `op=name` items override it
wherever they stand. An unknown op or name raises ValueError listing what exists.

Backends: BACKENDS maps each device to the module that registers its kernels when imported.
They are imported on first use, so `import kernels` stays cheap. A backend that fails to import
is not dropped quietly: the ops whose default it provides fall back to the NumPy reference,
with a RuntimeWarning (once) that names the backend, the exception and the fix;
`backend_errors()` returns the exceptions. Choosing the reference yourself (MINIVIT_KERNELS=
reference, or kernels.select("reference")) is no fallback, so it does not warn. Adding a device is
one line in BACKENDS and one section in DEFAULTS.

The GPU (device "gpu": CuPy arrays; the user asks for it as "cuda"): kernels.gpu registers its
versions without importing CuPy, so they are listed and DEFAULTS["gpu"] is checked on every
machine, and `import kernels` never imports CuPy; CuPy is imported on the first launch, and a
machine without CuPy or a GPU gets kernels.gpu.runtime.DeviceUnavailable saying which is missing.
Nothing on the GPU falls back: every op has a GPU version (the hybrid models' conv ops as CuPy
array calls, kernels/gpu/conv.py), and the NumPy reference never runs on GPU arrays. The reading
mode `use("reference")` chooses CPU implementations only; on the GPU, `use("gpu_v1")` runs the
first, simplest version of every op that has one (for most ops the reference's algorithm in CuPy
array calls).

Calling convention, the same for every op (see kernels/reference/__init__.py for each signature):
    out, cache = impl.forward(*arrays, **params)
    grads      = impl.backward(grad_out, cache)     # a tuple, one entry per array input
`cache` is private to the implementation: a flash attention keeps the row log-sum-exp there,
the reference keeps the full probability matrix. An implementation may also offer `foreach`, the
op over lists of arrays in one call (the multi-tensor AdamW): minivit.optim uses it when present.
"""
from __future__ import annotations

import importlib
import os
import warnings
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
    "conv2d",
    "weight_standardize",
    "groupnorm",
    "max_pool2d",
)

# What runs when nothing is chosen, per device. The measurements behind each choice are in the
# docstring of the file that holds the versions (kernels/cpu/<file>.py, named on the right).
DEFAULTS = {
    "cpu": {
        "matmul": "cpu_blas",                 # dense.py: = reference, 2-3x on long-reduction backward products
        "linear": "cpu_v2",                   # dense.py: products on Numba's threads, bias add fused; 1.04-1.13x a step
        "patch_embed": "cpu_v1",              # dense.py: its product on minivit's threads (threads.py)
        "layernorm": "cpu_v1",                # normact.py: as fast as v2, M*D less memory
        "gelu": "cpu_v3",                     # normact.py: vectorised float32 erf and exp
        "softmax": "cpu_v2",                  # normact.py: vectorised float32 exp
        "attention": "cpu_v5",                # attention.py: v4 on the qkv projection in place (no copies); v3 past 256 MiB of P
        "softmax_cross_entropy": "cpu_v1",    # loss.py: the only Numba version
        "adamw_update": "cpu_v2",             # optim.py: serial below 32768 elements
        "conv2d": "reference",                # conv.py: im2col + one BLAS product; cpu_v1 is no faster
        "weight_standardize": "reference",    # conv.py: runs on weights only, nothing to gain
        "groupnorm": "cpu_v1",                # conv.py: fused per (image, group)
        "max_pool2d": "cpu_v1",               # conv.py: direct windows, no padded copy
    },
    # kernels/gpu/<file>.py. Chosen by design: no GPU was lent to the session that wrote them, so
    # their measurements are owed (benchmarks/results/README.md); re-check each line against
    # `python -m kernels.bench OP --device cuda` once they are measured.
    "gpu": {
        "matmul": "gpu_cublas",               # dense.py: v1-v3 are here to be read and timed against it
        "linear": "gpu_cublas",               # dense.py: cuBLAS + one bias-add kernel
        "patch_embed": "gpu_cublas",          # dense.py: one patchify copy + one cuBLAS product
        "layernorm": "gpu_v2",                # normact.py: a warp per row, one launch forward
        "gelu": "gpu_v2",                     # normact.py: one fused elementwise pass
        "softmax": "gpu_v2",                  # normact.py: a warp per row
        "attention": "gpu_v3",                # attention.py: flash tiles, memory linear in N
        "softmax_cross_entropy": "gpu_v2",    # loss.py: loss and gradient in one pass
        "adamw_update": "gpu_v3",             # optim.py: every parameter array in one launch
        "conv2d": "gpu_v1",                   # conv.py: CuPy array calls, the only GPU version
        "weight_standardize": "gpu_v1",       # conv.py: the same
        "groupnorm": "gpu_v1",                # conv.py: the same
        "max_pool2d": "gpu_v1",               # conv.py: the same
    },
}

# device -> (module that registers the device's kernels on import, the package it needs)
BACKENDS = {
    "cpu": ("kernels.cpu", "numba"),
    "gpu": ("kernels.gpu", "cupy-cuda13x"),  # registers without CuPy; CuPy loads on the first launch
}

REFERENCE = "reference"  # kernels/reference/: always importable (NumPy), the fallback on the CPU


@dataclass(frozen=True)
class Impl:
    op: str
    name: str
    device: str  # "cpu" (NumPy arrays) or "gpu" (CuPy arrays)
    forward: Callable
    backward: Callable | None  # None for ops without a gradient (adamw_update)
    description: str
    foreach: Callable | None = None  # the op on lists of arrays in one call (multi-tensor adamw_update)
    strided: bool = False  # takes strided views as they are (else autograd passes C-contiguous copies)


_TABLE: dict[str, dict[str, Impl]] = {op: {} for op in OPS}  # op -> name -> Impl
_SELECTED: dict[tuple[str, str], str] = {}  # (op, device) -> name chosen by select(), use() or MINIVIT_KERNELS
_BACKEND_ERRORS: dict[str, ImportError] = {}  # device -> why its backend failed to import
_WARNED: set[str] = set()  # devices whose fallback has been announced
_LOADED = False


def register(op, name, forward, backward=None, *, device="cpu", description="", foreach=None, strided=False):
    """Add one implementation to the table (a later registration with the same name replaces it).
    Whether it runs by default is decided by DEFAULTS, not here."""
    _check_op(op)
    _TABLE[op][name] = Impl(op, name, device, forward, backward, description, foreach, strided)
    return _TABLE[op][name]


def _check_op(op):
    if op not in _TABLE:
        raise ValueError(f"unknown op {op!r}; known ops: {', '.join(OPS)}")


def _load_all():
    """Import the reference and every backend once, on first use, then apply MINIVIT_KERNELS."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    importlib.import_module(f"{__package__}.reference")
    for device, (module, _) in BACKENDS.items():
        try:
            importlib.import_module(module)
        except ImportError as e:  # announced by default() when an op falls back, not hidden
            _BACKEND_ERRORS[device] = e
    spec = os.environ.get("MINIVIT_KERNELS", "").strip()
    if spec:
        _apply(validate(spec))


def backend_errors() -> dict[str, ImportError]:
    """{device: the ImportError its backend raised}; empty when every backend imported."""
    _load_all()
    return dict(_BACKEND_ERRORS)


def _backend_note(device="cpu"):
    """' (the cpu backend failed to import: ...)' when it did, else ''."""
    e = _BACKEND_ERRORS.get(device)
    return f" (the {device} backend {BACKENDS[device][0]} failed to import: {type(e).__name__}: {e})" if e else ""


def _names(op):
    """The registered names of op, the CPU's first: 'cpu_v1, reference; on the gpu: gpu_v1'."""
    by_device = {}
    for name in sorted(_TABLE[op]):
        by_device.setdefault(_TABLE[op][name].device, []).append(name)
    parts = [", ".join(by_device.pop("cpu", []))] + [f"on the {d}: {', '.join(n)}" for d, n in by_device.items()]
    return "; ".join(p for p in parts if p) or "none"


def find(op: str, name: str) -> Impl:
    """The implementation of `op` registered as `name`, whichever device it runs on."""
    _load_all()
    _check_op(op)
    if name not in _TABLE[op]:
        raise ValueError(f"no implementation {name!r} of {op!r}; available: {_names(op)}{_backend_note()}")
    return _TABLE[op][name]


def available(op: str | None = None, device: str | None = None) -> list[Impl]:
    """All registered implementations (of one op / one device), each device's default first."""
    _load_all()
    ops = [op] if op else list(OPS)
    for o in ops:
        _check_op(o)
    rows = [impl for o in ops for impl in _TABLE[o].values() if device in (None, impl.device)]
    is_default = lambda i: DEFAULTS.get(i.device, {}).get(i.op) == i.name
    return sorted(rows, key=lambda i: (OPS.index(i.op), i.device, not is_default(i), i.name))


def default(op: str, device: str = "cpu") -> str:
    """The name of what runs for `op` on `device` when nothing is chosen: its entry in DEFAULTS,
    or the reference (with a warning) when that entry's backend failed to import."""
    _load_all()
    _check_op(op)
    if device not in DEFAULTS:
        raise RuntimeError(f"no {device} implementation of {op!r} is registered; "
                           f"devices with defaults: {', '.join(DEFAULTS)}")
    name = DEFAULTS[device][op]
    if name in _TABLE[op]:
        return name
    if device not in _BACKEND_ERRORS:
        raise RuntimeError(f"DEFAULTS[{device!r}] names {name!r} for {op!r}, but no such implementation "
                           f"is registered; available: {_names(op)}")
    ref = _TABLE[op].get(REFERENCE)
    if ref is None or ref.device != device:
        raise RuntimeError(f"no {device} implementation of {op!r}{_backend_note(device)}")
    _warn_fallback(device)
    return REFERENCE


def _warn_fallback(device):
    if device in _WARNED:
        return
    _WARNED.add(device)
    module, package = BACKENDS[device]
    e = _BACKEND_ERRORS[device]
    ops = [op for op in OPS if DEFAULTS[device][op] not in _TABLE[op]]
    warnings.warn(
        f"kernels: the {device} backend ({module}) failed to import: {type(e).__name__}: {e}. "
        f"Its ops ({', '.join(ops)}) fall back to the NumPy reference, several times slower. "
        f"Fix: install {package} (pip install {package}), or set MINIVIT_KERNELS=reference to "
        f"choose the reference deliberately, which silences this warning. "
        f"kernels.backend_errors() holds the exception.",
        RuntimeWarning, stacklevel=4)


def get(op: str, device: str = "cpu") -> Impl:
    """The implementation of `op` that runs now on `device`."""
    _load_all()
    _check_op(op)
    name = _SELECTED.get((op, device))
    return _TABLE[op][default(op, device) if name is None else name]


def parse_spec(spec: str) -> dict[str, str]:
    """'reference,attention=cpu_v3' -> {op: name}: a bare name stands for every op that has an
    implementation of that name (at most one bare name), op=name items override it. Checks the
    syntax and expands the bare name; validate() also checks every op=name."""
    bare, explicit = None, {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        op, sep, name = (s.strip() for s in item.partition("="))
        if not sep:
            if bare is not None:
                raise ValueError(f"kernel spec {spec!r} names two implementations for every op ({bare!r} and "
                                 f"{op!r}); give at most one, then op=name items")
            bare = op
        elif not op or not name:
            raise ValueError(f"kernel choice {item!r} should look like op=name, e.g. attention=reference")
        else:
            explicit[op] = name
    return {**(_everywhere(bare) if bare else {}), **explicit}


def _everywhere(name):
    """{op: name} for every op that has an implementation called `name`."""
    _load_all()
    choices = {op: name for op in OPS if name in _TABLE[op]}
    if not choices:
        every = sorted({n for impls in _TABLE.values() for n in impls})
        hint = f" ({name!r} is an op: write {name}=NAME)" if name in OPS else ""
        raise ValueError(f"no op has an implementation named {name!r}{hint}; write op=name, e.g. "
                         f"attention=reference, or one name for every op that has it: {', '.join(every)}"
                         f"{_backend_note()}")
    return choices


def validate(choices: str | dict[str, str]) -> dict[str, str]:
    """Check kernel choices without applying them: a spec string (as MINIVIT_KERNELS takes it)
    or a dict {op: name}. Returns the {op: name} they stand for; raises ValueError naming the
    known ops or the available implementations."""
    _load_all()
    choices = parse_spec(choices) if isinstance(choices, str) else dict(choices)
    for op, name in choices.items():
        find(op, name)
    return choices


def _apply(choices: dict[str, str]) -> dict[tuple[str, str], str | None]:
    """Select validated choices; return the previous selection of every touched (op, device)."""
    previous = {}
    for op, name in choices.items():
        key = (op, _TABLE[op][name].device)
        previous.setdefault(key, _SELECTED.get(key))
        _SELECTED[key] = name
    return previous


class use:
    """`with kernels.use(attention="cpu_v1"):` runs the chosen implementations inside the block and
    restores the previous choices on exit, after nesting or an exception too. A positional spec
    comes first and keywords override it: `use("reference")` runs every op that has a reference on
    it, `use("reference", attention="cpu_v3")` all but attention. Nothing is applied unless every
    choice is valid.

    The choice takes effect when use() is called. Called without `with`, it stays for the rest of
    the process; that is what select() is for, so a use() that is dropped without ever being
    entered says so with a RuntimeWarning (as Python does for a coroutine never awaited)."""

    def __init__(self, spec: str | None = None, /, **choices: str):
        self._choices = validate({**(parse_spec(spec) if spec else {}), **choices})
        self._previous = _apply(self._choices)
        self._entered = False

    def __enter__(self):
        self._entered = True
        return self

    def __exit__(self, *exc):
        for key, name in self._previous.items():
            if name is None:
                _SELECTED.pop(key, None)
            else:
                _SELECTED[key] = name
        return False

    def __del__(self):
        if getattr(self, "_entered", True):  # entered, or __init__ raised before applying anything
            return
        spec = ", ".join(f"{op}={name}" for op, name in self._choices.items())
        try:
            warnings.warn(f"kernels.use({spec}) was not used with `with`, so its choice holds for the rest of "
                          f"the process: write kernels.select(...) to choose for the process, or "
                          f"`with kernels.use(...):` to choose for a block", RuntimeWarning, stacklevel=2)
        except Exception:  # at interpreter shutdown the warnings machinery may be gone
            pass


def select(spec: str | None = None, /, **choices: str) -> None:
    """Choose implementations for the rest of the process, until reset() (a `with kernels.use(...)`
    block inside runs its own choice, then puts this one back). The same arguments as use(); nothing
    is applied unless every choice is valid."""
    _apply(validate({**(parse_spec(spec) if spec else {}), **choices}))


def reset():
    """Forget every choice made by select(), use() or MINIVIT_KERNELS: each op goes back to DEFAULTS."""
    _SELECTED.clear()


def selection(device: str = "cpu") -> dict[str, str]:
    """{op: name} of what runs now on `device`."""
    _load_all()
    ops = OPS if device in DEFAULTS else [op for op in OPS if (op, device) in _SELECTED]
    return {op: get(op, device).name for op in ops}
