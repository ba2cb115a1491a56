"""The one door to CuPy for the GPU kernels.

CuPy is imported on the first launch of a GPU kernel, never by `import kernels`: the GPU versions
register in the table (kernels/registry.py) on every machine, so that `kernels.available()` lists
them and DEFAULTS["gpu"] is checked everywhere, and only running one needs CuPy and a GPU.
Asking for one where either is missing raises DeviceUnavailable, whose message says which is
missing and how to install the [gpu] extra.

Each .cu file beside this one holds one family of kernels in CUDA C. `function(file, name)`
returns one kernel, a plain `extern "C"` name or a template instantiation by name
("flash_fwd_v3<float, 64>"). The first call for a file compiles it with NVRTC through
cupy.RawModule, with every instantiation its Python module declares (kernels.gpu.DECLARED, the
list the compile test checks too): one compile per file and process (attention.cu, the largest,
about 15 s), and CuPy caches the binary on disk (~/.cupy/kernel_cache), so later processes on the
same machine load it in milliseconds.

The arithmetic is not bit-for-bit IEEE, and the tests do not expect it to be: every output is
compared with the float64 NumPy reference within a tolerance (kernels/bench.py TOLERANCE). What
NVRTC is asked for (`nvrtc_options()`, the exact list tests/test_gpu_sources.py compiles with):
- our OPTIONS: C++17 only. No --use_fast_math, so -prec-div and -prec-sqrt keep NVRTC's default
  (true): float division and sqrt are IEEE round-to-nearest.
- INCLUDE: this folder, as an include path (-I): the .cu files share their warp reductions
  (reduce.cuh) and float/double math names (typed_math.cuh). CuPy's on-disk cache hashes the
  source text and options, not the headers a source includes, so `source()` appends each included
  header's digest to the text it hands CuPy: an edited header compiles afresh.
- CUPY_ADDED_OPTIONS: CuPy appends -ftz=true to every compile, after anything in OPTIONS
  (cupy/cuda/compiler.py, _compile_with_cache_cuda; read in CuPy 13's source, and older ones do
  the same). So float32 subnormals (|x| < 1.18e-38) are flushed to zero, as inputs and as
  results, where the NumPy reference keeps them: absolute differences below 1.2e-38, far under
  any tolerance, but a float32 result that is exactly 0 on the GPU can be a tiny non-zero on the
  CPU. float64 is not flushed. With NVRTC 12 or later CuPy also passes --device-as-default-execution-space, and then
  the target: -arch=sm_XX (a cubin) on a card NVRTC knows, -arch=compute_XX (PTX for the driver to
  finish) with CUPY_COMPILE_WITH_PTX=1 or a card newer than NVRTC. It also adds include paths
  (CCCL's, its own headers, CUDA's include), which these files do not use.
- NVRTC's defaults otherwise: -fmad=true, so a*b + c may be one fused multiply-add (one rounding,
  not two); expf, erff, tanhf and the rest are CUDA's math library, within the few-ulp bounds the
  CUDA C++ Programming Guide lists, not correctly rounded.
"""
from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

HERE = Path(__file__).resolve().parent
INSTALL_HINT = ("install the [gpu] extra: pip install -e '.[gpu]' (cupy-cuda13x, CuPy built for CUDA 13; "
                "with an older CUDA 12 driver, pip install cupy-cuda12x instead)")
# Our NVRTC options for every .cu file (cupy.RawModule(options=OPTIONS)): C++17 for `if constexpr`.
# No --use_fast_math: division and sqrt stay IEEE round-to-nearest (see the module docstring).
OPTIONS = ("-std=c++17",)
INCLUDE = (f"-I{HERE}",)  # where the .cu files find reduce.cuh and typed_math.cuh
# What CuPy adds after OPTIONS on every compile (cupy/cuda/compiler.py): -ftz=true (float32
# subnormals flushed to zero, unconditionally), and with NVRTC 12 or later
# --device-as-default-execution-space; then the target, see nvrtc_options().
CUPY_ADDED_OPTIONS = ("-ftz=true", "--device-as-default-execution-space")


def nvrtc_options(arch: str = "sm_90") -> tuple[str, ...]:
    """The options NVRTC gets for a .cu file here when CuPy compiles it for a card of `arch`
    ("sm_90": an H100, compiled to a cubin as CuPy does; "compute_90": PTX, as with
    CUPY_COMPILE_WITH_PTX=1), less CuPy's include paths, which these files do not use."""
    return (*OPTIONS, *INCLUDE, *CUPY_ADDED_OPTIONS, f"-arch={arch}")


LOCAL_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def source(file: str, folder: Path = HERE) -> str:
    """The text of folder/<file> as CuPy gets it: the file itself, then one comment line per header
    it includes from this folder, with the header's digest. CuPy's kernel cache keys on the source
    text, not on the headers it includes, so without these lines an edited reduce.cuh would load
    the binary compiled from the old one."""
    text = (folder / file).read_text()
    digests = [f"// {name} {hashlib.sha256((folder / name).read_bytes()).hexdigest()[:16]}"
               for name in sorted(set(LOCAL_INCLUDE.findall(text)))]
    return text + ("\n" + "\n".join(digests) + "\n" if digests else "")


class DeviceUnavailable(RuntimeError):
    """The GPU was asked for where CuPy or a usable GPU is missing; the message says which."""


_cupy = None
_MODULES: dict = {}  # (file, device, names) -> cupy.RawModule
_FUNCTIONS: dict = {}  # (file, name, device) -> [RawKernel, the dynamic shared memory it may use]


def cupy():
    """The cupy module, imported and checked on first use (DeviceUnavailable if it cannot run)."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy as cp
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] != "cupy":  # CuPy is there, one of its dependencies is not
            raise DeviceUnavailable(f"cuda requested but CuPy failed to import: {e}; {INSTALL_HINT}") from e
        raise DeviceUnavailable(f"cuda requested but CuPy is not installed; {INSTALL_HINT}") from e
    except (ImportError, OSError) as e:  # e.g. a CUDA library CuPy links against is missing
        raise DeviceUnavailable(f"cuda requested but CuPy failed to import ({type(e).__name__}: {e}); "
                                f"{INSTALL_HINT}") from e
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError: no driver, a driver too old for CuPy's runtime, ...
        raise DeviceUnavailable(explain_cuda_error(e)) from e
    if count < 1:
        raise DeviceUnavailable("cuda requested but CuPy sees no CUDA GPU (getDeviceCount() is 0); check "
                                "nvidia-smi and CUDA_VISIBLE_DEVICES, or run on the CPU (--device cpu)")
    _cupy = cp
    return cp


def explain_cuda_error(e) -> str:
    """One line saying what a CUDA runtime error at start-up means for the user."""
    text = f"{type(e).__name__}: {e}"
    if "NoDevice" in text or "no CUDA-capable device" in text:
        return (f"cuda requested but CuPy finds no CUDA GPU ({text}); check nvidia-smi and CUDA_VISIBLE_DEVICES, "
                "or run on the CPU (--device cpu)")
    if "InsufficientDriver" in text or "driver version is insufficient" in text:
        return (f"cuda requested but the NVIDIA driver is missing or older than the CUDA runtime CuPy was built "
                f"for ({text}); on a machine without a GPU run on the CPU (--device cpu), else update the "
                f"driver or {INSTALL_HINT}")
    return f"cuda requested but CUDA failed to start ({text}); run on the CPU (--device cpu)"


def available() -> bool:
    """True when CuPy imports and sees a GPU (never raises)."""
    try:
        cupy()
    except DeviceUnavailable:
        return False
    return True


def is_device_array(a) -> bool:
    return type(a).__module__.startswith("cupy")


def xp_of(a):
    """numpy for a NumPy array, cupy for a CuPy array: the array-expression (v1) versions run on both."""
    return cupy() if is_device_array(a) else np


def ctype(dtype) -> str:
    """The CUDA C type of a float array: float32 -> "float", float64 -> "double"."""
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return "float"
    if dtype == np.float64:
        return "double"
    raise TypeError(f"the GPU kernels take float32 or float64 arrays, got {dtype}")


def module(file: str, names: tuple[str, ...] = ()):
    """The RawModule of kernels/gpu/<file>, compiled with these template instantiations."""
    cp = cupy()
    key = (file, cp.cuda.runtime.getDevice(), tuple(names))
    mod = _MODULES.get(key)
    if mod is None:
        mod = cp.RawModule(code=source(file), options=OPTIONS + INCLUDE, name_expressions=list(names) or None)
        _MODULES[key] = mod
    return mod


DEFAULT_SHARED = 48 * 1024  # dynamic shared memory a kernel may use without opting in to more


def function(file: str, name: str, shared_bytes: int = 0, names=None):
    """One kernel of kernels/gpu/<file>: a plain `extern "C"` name, or a template instantiation
    such as "gelu_fwd<float>", compiled in one module with `names` (default: every instantiation
    kernels/gpu declares for the file; attention.py passes the flash tiles this card uses).
    `shared_bytes` above 48 KiB opts the kernel in to that much dynamic shared memory
    (RawKernel.max_dynamic_shared_size_bytes, CUDA's cudaFuncAttributeMaxDynamicSharedMemorySize),
    up to the card's limit (227 KiB per block on an H100); a launch asking for more than 48 KiB
    without it fails."""
    key = (file, name, cupy().cuda.runtime.getDevice())
    entry = _FUNCTIONS.get(key)
    if entry is None:  # cached: this runs on every launch, where microseconds count
        from . import DECLARED

        declared = tuple(DECLARED.get(file, ()))
        names = declared if names is None else tuple(names)
        if "<" in name and not (name in names and name in declared):
            raise ValueError(f"{name} is not among the instantiations kernels/gpu declares for {file}; add it to the "
                             "DECLARED list of the module that launches it")
        entry = _FUNCTIONS[key] = [module(file, names).get_function(name), DEFAULT_SHARED]
    kernel, allowed = entry
    if shared_bytes > allowed:
        limit = max_shared_bytes()
        if shared_bytes > limit:
            raise ValueError(f"{name} needs {shared_bytes} bytes of shared memory per block, this GPU allows {limit}")
        kernel.max_dynamic_shared_size_bytes = shared_bytes
        entry[1] = shared_bytes
    return kernel


def attribute(name: str) -> int:
    """A property of the current GPU by its CUDA name, e.g. "cudaDevAttrMultiProcessorCount"."""
    return _attribute(name, cupy().cuda.runtime.getDevice())


@functools.lru_cache(maxsize=None)
def _attribute(name: str, device: int) -> int:
    cp = cupy()
    return cp.cuda.runtime.deviceGetAttribute(getattr(cp.cuda.runtime, name), device)


def max_shared_bytes() -> int:
    """Shared memory one block may opt in to on the current GPU (cudaDevAttrMaxSharedMemoryPerBlockOptin:
    227 KiB on an H100, 163 KiB on an A100, 99 KiB on an L4 or RTX 4090)."""
    return attribute("cudaDevAttrMaxSharedMemoryPerBlockOptin")


def multiprocessors() -> int:
    return attribute("cudaDevAttrMultiProcessorCount")


class Card(NamedTuple):
    """What a launch choice needs to know of a GPU (CUDA's device attributes), so that the choice
    is a pure function that tests can run with an H100's, an A100's or an L4's numbers."""

    sms: int             # multiprocessors
    shared_per_sm: int   # bytes of shared memory per multiprocessor, shared by its resident blocks
    shared_per_block: int  # bytes a block may opt in to (max_shared_bytes)
    threads_per_sm: int
    regs_per_sm: int = 65536
    blocks_per_sm: int = 16


def card() -> Card:
    """The current GPU's numbers."""
    return Card(multiprocessors(), attribute("cudaDevAttrMaxSharedMemoryPerMultiprocessor"), max_shared_bytes(),
                attribute("cudaDevAttrMaxThreadsPerMultiProcessor"),
                attribute("cudaDevAttrMaxRegistersPerMultiprocessor"),
                attribute("cudaDevAttrMaxBlocksPerMultiprocessor"))


def blocks_for(n: int, threads: int = 256, cap: int | None = None) -> int:
    """Blocks of `threads` covering n items, at most `cap` (grid-stride loops cover the rest)."""
    blocks = max(1, -(-int(n) // threads))
    return min(blocks, cap) if cap else blocks


def scalar(dtype, value):
    """`value` as the C type a kernel argument of `dtype` expects (CuPy passes NumPy scalars by type)."""
    return np.dtype(dtype).type(value)


# ---------------------------------------------------------------- launch arithmetic (pure, CPU-tested)
MAX_GRID_X = 2**31 - 1  # CUDA's grid limits (every card CuPy supports): x < 2^31, y and z <= 65,535
MAX_GRID_YZ = 65535


def check_grid(grid) -> tuple[int, ...]:
    """`grid` as a tuple of ints, or ValueError when CUDA would refuse it (each side >= 1,
    x <= 2^31 - 1, y and z <= 65,535)."""
    grid = tuple(int(g) for g in grid)
    limits = (MAX_GRID_X, MAX_GRID_YZ, MAX_GRID_YZ)[:len(grid)]
    if not 1 <= len(grid) <= 3 or any(not 1 <= g <= lim for g, lim in zip(grid, limits)):
        raise ValueError(f"grid {grid} is outside CUDA's limits (x <= {MAX_GRID_X}, y and z <= {MAX_GRID_YZ}, "
                         "each at least 1)")
    return grid


def chunks(n: int, most: int | None = None) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering range(n) in order, each at most `most` (default MAX_GRID_YZ)
    long: the pieces of a grid axis the kernel reads directly (blockIdx.y as a head or a row
    tile), one launch each."""
    n, most = int(n), int(MAX_GRID_YZ if most is None else most)
    if most < 1:
        raise ValueError(f"chunks of at most {most} items")
    return [(start, min(start + most, n)) for start in range(0, n, most)]


# ---------------------------------------------------------------- operand checks (pure, CPU-tested)
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_operands(op: str, arrays: dict, shapes: dict | None = None, written=()) -> np.dtype:
    """Check the arrays a raw kernel is about to read or write, before it sees raw pointers: one
    float dtype for all (float32 x with float64 w would read the wrong bits), the shapes given in
    `shapes` ({name: shape}), and C-contiguous layout for the names in `written` (a kernel that
    writes in place cannot be handed a copy; a strided view would be written as its base buffer).
    Arrays that are only read are made contiguous by `contiguous()`. Uses nothing but .dtype,
    .shape and .flags, so NumPy arrays stand in for CuPy ones in the tests. Returns the dtype;
    TypeError or ValueError naming the op, what was expected and what was given."""
    items = [(name, a) for name, a in arrays.items() if a is not None]
    first_name, first = items[0]
    dtype = np.dtype(first.dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {first_name} must be float32 or float64, got {dtype}")
    for name, a in items[1:]:
        if np.dtype(a.dtype) != dtype:
            raise TypeError(f"{op}: {name} is {np.dtype(a.dtype)}, expected {dtype} (the dtype of {first_name}); "
                            "the kernel reads every operand as one type, convert first")
    for name, shape in (shapes or {}).items():
        a = arrays.get(name)
        if a is not None and tuple(a.shape) != tuple(shape):
            raise ValueError(f"{op}: {name} has shape {tuple(a.shape)}, expected {tuple(shape)}")
    for name in written:
        a = arrays.get(name)
        if a is not None and not a.flags.c_contiguous:
            raise ValueError(f"{op}: {name} is written in place and must be C-contiguous, got strides "
                             f"{a.strides} for shape {tuple(a.shape)} (make it contiguous before the call)")
    return dtype


def contiguous(*arrays):
    """Each array C-contiguous (a copy only where it is not): what a raw kernel reads must be,
    since it gets a bare pointer and walks it as a dense row-major array. None stays None."""
    out = tuple(None if a is None else (a if a.flags.c_contiguous else xp_of(a).ascontiguousarray(a))
                for a in arrays)
    return out if len(out) != 1 else out[0]
