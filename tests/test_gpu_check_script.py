"""Without a GPU: the parts of the GPU check that decide things, tested on the CPU.

- tests/test_gpu.py's copy counter (_CopyCounter) wraps only the read paths an array class has
  (CuPy 13.6-14.2 have no ndarray.__index__) and counts each device-to-host read once, at its
  call site in minivit; tested here on a stand-in class shaped like cupy.ndarray (a Python class
  over a base that holds the methods).
- scripts/gpu_check.sh fails loudly (exit 3, the reason last) where nvidia-smi lists a GPU but
  CuPy cannot import, see it, or compile and run a kernel, and rehearses on the CPU only where
  there is no GPU. The script runs with --dry-run (it stops after that decision, in about 2 s; the
  rehearsal itself, minutes on this machine, is not run here), a fake nvidia-smi first on PATH
  and, where a test needs one, a fake `cupy` package first on PYTHONPATH.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from test_gpu import _CopyCounter

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


# ---------------------------------------------------------------- the copy counter, on a stand-in class
class _DeviceArrayBase:
    """What cupy's _ndarray_base holds: the read paths that copy to the host (all through get()),
    and no __index__, as in CuPy 13.6-14.2."""

    def __init__(self, values):
        self._values = np.asarray(values)
        self.copies = 0  # copies really made

    def get(self):
        self.copies += 1
        return self._values.copy()

    def tolist(self):
        return self.get().tolist()

    def item(self):
        return self.get().item()

    def __float__(self):
        return float(self.get())

    def __int__(self):
        return int(self.get())

    def __bool__(self):
        return bool(self.get())

    def __array__(self, dtype=None, copy=None):
        return self.get()

    def __repr__(self):
        return f"array({self.get()!r})"


class FakeNdarray(_DeviceArrayBase):
    """As cupy.ndarray: a Python class over the base, so that its attributes can be patched."""


def _in_minivit(monkeypatch, tmp_path, relpath, code):
    """Functions defined in a file whose path names minivit, as the counter finds call sites."""
    path = tmp_path / "minivit" / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code))
    namespace = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


def test_the_counter_wraps_only_the_read_paths_the_class_has(monkeypatch):
    assert not hasattr(FakeNdarray, "__index__")
    counter = _CopyCounter(monkeypatch, FakeNdarray)  # the counter before the fix raised AttributeError here
    assert set(counter.wrapped) == {"get", "tolist", "item", "__float__", "__int__", "__bool__", "__array__",
                                    "__repr__"}
    assert "__index__" not in counter.wrapped and "__format__" not in counter.wrapped  # object's own: no copy
    assert "__index__" in _CopyCounter.METHODS  # still wrapped on a CuPy that defines it


def test_the_counter_counts_every_read_path_once_and_the_copies_it_does_not_make_not_at_all(monkeypatch):
    a = FakeNdarray(1.5)
    counter = _CopyCounter(monkeypatch, FakeNdarray)
    reads = [lambda: a.get(), lambda: a.tolist(), lambda: a.item(), lambda: float(a), lambda: int(a),
             lambda: bool(a), lambda: np.asarray(a), lambda: repr(a), lambda: str(a), lambda: f"{a!r}"]
    for i, read in enumerate(reads, 1):
        read()
        assert len(counter.sites) == i == a.copies, (i, counter.sites)  # nested get() calls count once
    assert counter.sites == ["elsewhere"] * len(reads)  # no minivit frame on the stack
    a.shape = ()  # not a read
    assert len(counter.sites) == len(reads)
    monkeypatch.undo()
    assert FakeNdarray.get is _DeviceArrayBase.get and "get" not in vars(FakeNdarray)  # the class as it was


def test_the_counter_names_the_minivit_function_that_reads_past_device_helpers(monkeypatch, tmp_path):
    device = _in_minivit(monkeypatch, tmp_path, "device.py", """
        def to_host(a):
            return a.get()
    """)
    trainer = _in_minivit(monkeypatch, tmp_path, "train/trainer.py", """
        def train_step(a, to_host):
            loss = float(a)
            return loss, to_host(a)
    """)
    counter = _CopyCounter(monkeypatch, FakeNdarray)
    trainer["train_step"](FakeNdarray(2.0), device["to_host"])
    assert counter.sites == ["trainer.py:train_step"] * 2  # device.py is a helper: its caller is the site


def test_test_gpu_imports_and_builds_no_counter_without_cupy():
    """test_gpu.py must import on a machine without CuPy (this file imports it); the counter reaches
    for CuPy only when given no class."""
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    with pytest.raises(ModuleNotFoundError):
        _CopyCounter(pytest.MonkeyPatch())


# ---------------------------------------------------------------- gpu_check.sh: GPU or rehearsal
H100 = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5e1c2d9a-0000-0000-0000-000000000000)"
BROKEN_IMPORT = 'raise ImportError("libnvrtc.so.13: cannot open shared object file: No such file or directory")\n'
FAKE_CUPY = '''
import numpy as _np

__version__ = "14.0.0 (a stand-in)"
float32 = _np.float32
arange, asnumpy = _np.arange, _np.asarray


class _Runtime:
    getDeviceCount = staticmethod(lambda: 1)
    getDevice = staticmethod(lambda: 0)
    getDeviceProperties = staticmethod(lambda device: {"name": b"Stand-in H100"})


class _Nvrtc:
    getVersion = staticmethod(lambda: (13, 0))


class cuda:
    runtime, nvrtc = _Runtime, _Nvrtc


class RawModule:
    def __init__(self, code, options=(), **kwargs):
        assert "-std=c++17" in options
        MODE  # replaced per test

    def get_function(self, name):
        def probe(grid, block, args):
            args[0][...] = 2 * args[0] + OFFSET
        return probe
'''


def _fake_bin(tmp_path, smi):
    """A folder holding an nvidia-smi that prints `smi` (exit 0), or fails as it does without a
    driver (smi None)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    body = f"echo '{smi}'" if smi is not None else \
        "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9"
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\n{body}\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    return bin_dir


def _fake_cupy(tmp_path, source):
    pkg = tmp_path / "fake" / "cupy"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(source)
    return pkg.parent


def _run(tmp_path, bin_dir=None, pythonpath=None, **env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GPU_CHECK_", "CUDA_VISIBLE"))}
    environ.update(PYTHON=sys.executable, OUT=str(tmp_path / "out"), TMPDIR=str(tmp_path), **env)
    environ["PATH"] = os.pathsep.join(filter(None, [str(bin_dir) if bin_dir else None, "/usr/bin", "/bin"]))
    environ.pop("PYTHONPATH", None)
    if pythonpath:
        environ["PYTHONPATH"] = str(pythonpath)
    result = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=environ,
                            cwd=tmp_path, timeout=120)
    return result.returncode, result.stdout + result.stderr


def _summary(tmp_path):
    return json.loads((tmp_path / "out" / "summary.json").read_text())


def test_a_gpu_machine_without_cupy_fails_loudly(tmp_path):
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed in this Python; the next test breaks its import instead")
    rc, out = _run(tmp_path, _fake_bin(tmp_path, H100))
    assert rc == 3, out
    assert "ERROR: this is a GPU machine (nvidia-smi lists 1 GPU(s)) but CuPy cannot use the GPU" in out
    assert "CuPy is not installed" in out.splitlines()[-3] and "CPU rehearsal" in out.splitlines()[-2]
    assert "dry run" not in out and "GPU: no" not in out
    assert _summary(tmp_path)["gpu"] is False and "CuPy is not installed" in _summary(tmp_path)["error"]


def test_a_gpu_machine_whose_cupy_fails_to_import_fails_loudly(tmp_path):
    rc, out = _run(tmp_path, _fake_bin(tmp_path, H100), _fake_cupy(tmp_path, BROKEN_IMPORT))
    assert rc == 3, out
    assert "but CuPy cannot use the GPU" in out and "CuPy failed to import" in out and "libnvrtc.so.13" in out


@pytest.mark.parametrize("mode, why", [
    ("raise RuntimeError('nvrtc: error: failed to load builtins for compute_90')", "cannot compile or run a kernel"),
    ("pass", "got the wrong numbers")])
def test_a_gpu_machine_whose_cupy_cannot_compile_or_gets_wrong_numbers_fails_loudly(tmp_path, mode, why):
    fake = FAKE_CUPY.replace("MODE  # replaced per test", mode).replace("OFFSET", "2")
    rc, out = _run(tmp_path, _fake_bin(tmp_path, H100), _fake_cupy(tmp_path, fake))
    assert rc == 3, out
    assert "but CuPy cannot use the GPU" in out and why in out, out


def test_a_gpu_machine_whose_cupy_compiles_and_runs_the_probe_goes_on_as_a_gpu_check(tmp_path):
    fake = FAKE_CUPY.replace("MODE  # replaced per test", "pass").replace("OFFSET", "1")
    rc, out = _run(tmp_path, _fake_bin(tmp_path, H100), _fake_cupy(tmp_path, fake))
    assert rc == 0, out
    assert "GPU: yes: CuPy 14.0.0 (a stand-in) compiles and runs kernels on Stand-in H100 (NVRTC 13.0)" in out
    assert out.rstrip().endswith("dry run: stopping after the GPU decision (GPU)")


def test_no_gpu_listed_means_a_cpu_rehearsal(tmp_path):
    rc, out = _run(tmp_path, _fake_bin(tmp_path, None))  # nvidia-smi there, no driver
    assert rc == 0, out
    assert "GPU: no (" in out and out.rstrip().endswith("dry run: stopping after the GPU decision (CPU rehearsal)")
    assert "ERROR" not in out


def test_no_nvidia_smi_means_a_cpu_rehearsal_unless_a_gpu_is_expected(tmp_path):
    if shutil.which("nvidia-smi", path="/usr/bin:/bin"):
        pytest.skip("a real nvidia-smi is in /usr/bin or /bin")
    broken = _fake_cupy(tmp_path, BROKEN_IMPORT)
    rc, out = _run(tmp_path, None, broken)
    assert rc == 0 and "(CPU rehearsal)" in out, out
    rc, out = _run(tmp_path, None, broken, GPU_CHECK_EXPECT_GPU="1")
    assert rc == 3 and "this is a GPU machine (GPU_CHECK_EXPECT_GPU=1)" in out, out
    rc, out = _run(tmp_path, _fake_bin(tmp_path, H100), broken, GPU_CHECK_EXPECT_GPU="0")
    assert rc == 0 and "(CPU rehearsal)" in out, out


def test_the_script_refuses_an_unknown_argument():
    result = subprocess.run(["bash", str(SCRIPT), "--fast"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "unknown argument --fast" in result.stderr


def test_the_header_estimates_how_long_each_part_takes_on_an_h100_within_the_calls_600_s():
    """The one call for a GPU machine says what each default part should take on an H100,
    labelled an estimate; parts 1-4 at their longest leave CIFAR's training some of the budget
    (the budget, not they, sets the call's length), and the total it states is under 600 s."""
    import re

    text = SCRIPT.read_text()
    header = text[:text.index("set -uo pipefail")]
    block = header[header.index("ESTIMATE"):]
    assert "H100" in header and "not measured" in header
    parts = re.search(r'GPU_CHECK_PARTS:-([a-z0-9_ ]+)\}', text).group(1).split()
    upper = {}
    for part in parts:
        entry = re.search(rf"#\s+\d\. {part}\b.*?(?=#\s+\d\. |# In all)", block, re.S)
        assert entry, f"no estimate for the part {part}"
        ranges = re.findall(r"(\d+)-(\d+) s", entry.group(0))
        assert ranges, f"the estimate for {part} gives no range of seconds"
        upper[part] = int(ranges[-1][1])
    budget = int(re.search(r'BUDGET="\$\{GPU_CHECK_BUDGET:-(\d+)\}"', text).group(1))
    start = int(re.search(r"~(\d+) s\n", block).group(1))
    assert start + sum(v for k, v in upper.items() if k != "cifar10") < budget - 50, upper
    low, high = (int(x) for x in re.search(r"about (\d+)-(\d+) s, under the 600 s", block).groups())
    assert low == budget and high <= 600
