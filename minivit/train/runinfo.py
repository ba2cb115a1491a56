"""What a run was measured on: written beside its metrics so that every number it produces can be
traced to a machine, a BLAS and an environment, and to a start and an end time.

`describe()` is called once when a run starts; `finish(info)` adds the end. The trainer keeps both
in run.json, and benchmarks/torch_cifar.py in its metrics.json, so that two runs compared side by
side say themselves that they ran on the same machine, one after the other.
"""

import ctypes
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# The environment variables that change which kernels run or how many threads they use.
ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
            "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER",
            "XLA_FLAGS", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")


def now() -> str:
    """The wall-clock time in UTC, to the second, ISO 8601."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def cpu() -> dict:
    """The CPU as /proc/cpuinfo names it (Linux; elsewhere what `platform` knows), the cores this
    process may use, and whether it has AVX-512 (which OpenBLAS's and Numba's kernels use)."""
    fields, flags = {}, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu family", "model", "vendor_id") and key not in fields:
                fields[key] = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"name": fields.get("model name", platform.processor() or "unknown"),
            "vendor": fields.get("vendor_id"), "family": fields.get("cpu family"), "model": fields.get("model"),
            "machine": platform.machine(), "cores_usable": usable, "cores_total": os.cpu_count(),
            "avx512f": "avx512f" in flags, "avx2": "avx2" in flags}


def blas() -> dict:
    """NumPy's BLAS as NumPy was built with it, and (OpenBLAS) the kernels it chose on this CPU."""
    import numpy as np

    info = {"numpy": np.__version__}
    try:
        build = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info.update(name=build.get("name"), version=build.get("version"))
    except Exception:  # older NumPy: no dicts mode; the name is then unknown, which the file says
        info.update(name=None, version=None)
    core = _openblas_corename()
    if core:
        info["openblas_core"] = core
    return info


def _openblas_corename():
    """OpenBLAS's name for the kernels it picked ("Haswell", "SkylakeX", "Zen"...), or None. Found
    where NumPy's wheel bundles it (kernels/openblas_files.py), without importing kernels.cpu:
    loading minivit's CPU kernels changes the process (kernels/cpu/process.py), and describing a
    run must not (a PyTorch run in benchmarks/torch_cifar.py describes itself too)."""
    from kernels.openblas_files import bundled_openblas

    for path in bundled_openblas("numpy"):
        try:
            dll = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_LOCAL)
        except OSError:
            continue
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename64_",
                     "openblas_get_corename"):
            fn = getattr(dll, name, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return fn().decode()
    return None


def _process_started():
    """When this process started (UTC ISO), from /proc; None where there is no /proc."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    started = boot + ticks / os.sysconf("SC_CLK_TCK")
    return datetime.datetime.fromtimestamp(started, datetime.timezone.utc).replace(microsecond=0).isoformat()


def source() -> str | None:
    """The git commit of the minivit that runs (with "+changes" when its tree differs), or None
    outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def describe() -> dict:
    """Everything above, the Python, the command line, the environment variables that matter
    (absent ones as null) and the load average when the run starts (other jobs on the machine)."""
    return {"started_at": now(), "started_unix": round(time.time(), 3), "process_started_at": _process_started(),
            "argv": list(sys.argv), "minivit_source": source(), "python": platform.python_version(), "host": platform.node(),
            "cpu": cpu(), "blas": blas(), "env": {v: os.environ.get(v) for v in ENV_VARS},
            "load_average_1min_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def finish(info: dict) -> dict:
    """`info` with the end time, the seconds since describe() and the load average at the end."""
    out = dict(info)
    out.update(ended_at=now(), seconds=round(time.time() - info["started_unix"], 1),
               load_average_1min_at_end=os.getloadavg()[0] if hasattr(os, "getloadavg") else None)
    return out
