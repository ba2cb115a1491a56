"""kernels/cpu/memory.py: with minivit's CPU kernels loaded, arrays of a few MiB that are freed
and allocated again reuse pages the process already touched (few page faults), whatever was
imported first; MINIVIT_KEEP_FREED_MEMORY=0 and keep_freed_memory(False) give glibc's own
behaviour back; elsewhere than glibc nothing is changed. Speed: benchmarks/profile_step.py."""
import os
import platform
import subprocess
import sys

import pytest

pytest.importorskip("numba", reason="kernels.cpu needs Numba")
from kernels.cpu import memory  # noqa: E402

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

# Page faults per page touched while three arrays (12, 12 and 4 MiB) are allocated, filled and
# freed ten times: the pattern of a training step, whose arrays come and go in groups.
_FAULTS = """
import resource, numpy as np
{first}
import kernels.cpu
from kernels.cpu import memory
{then}
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
n = 3 << 20
for _ in range(3):
    a = np.ones(n, np.float32); b = np.ones(n, np.float32); del a, b
f0 = faults()
for _ in range(10):
    a = np.ones(n, np.float32); b = np.ones(n, np.float32); c = np.ones(n // 3, np.float32); del a, b, c
print(memory.keeping_freed_memory(), (faults() - f0) / (10 * (2 * n + n // 3) * 4 / 4096))
"""


def _faults(first="", then="", env=None):
    code = _FAULTS.format(first=first, then=then)
    environ = {k: v for k, v in os.environ.items() if k != "MINIVIT_KEEP_FREED_MEMORY"} | (env or {})
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         check=True, env=environ).stdout.split()
    return out[0] == "True", float(out[1])


@glibc
@pytest.mark.parametrize("first", ["import numpy", "import numpy, torch"])
def test_freed_arrays_are_reused_without_page_faults_whatever_was_imported_first(first):
    if "torch" in first:
        pytest.importorskip("torch", reason="the import-order case with PyTorch loaded first")
    kept, per_page = _faults(first=first)
    assert kept
    assert per_page < 0.05, f"{per_page:.3f} page faults per page touched"


@glibc
def test_glibc_behaviour_comes_back_with_the_environment_variable_or_the_switch():
    # glibc's own thresholds return the freed tops of its heap to the system: the pattern
    # faults again on a good part of its pages. Both ways of opting out must show it.
    kept, by_env = _faults(env={"MINIVIT_KEEP_FREED_MEMORY": "0"})
    assert not kept and by_env > 0.1, by_env
    kept, by_switch = _faults(then="memory.keep_freed_memory(False)")
    assert not kept and by_switch > 0.1, by_switch


def test_nothing_changes_where_the_c_library_is_not_glibc(monkeypatch):
    was = memory.keeping_freed_memory()
    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("musl", "1.2"))
    try:
        assert memory._mallopt() is None
        assert memory.keep_freed_memory(True) is False
        assert memory.keeping_freed_memory() is False
    finally:
        memory._state["kept"] = was
