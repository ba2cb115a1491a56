"""Where minivit's arrays come from: memory the process already touched, not fresh pages.

A training step allocates and frees hundreds of arrays, dozens of them megabytes large (a
vit_mini activation at batch 128 is 128 x 65 x 128 floats, 4.3 MB; its MLP hidden layer 8.5 MB;
vit_cifar's 25.6 MB). NumPy takes them from the C library's malloc. glibc's malloc serves a
request above its mmap threshold (128 KiB at the start, raised up to 32 MiB by the frees it sees)
with a fresh mmap, and returns the top of its heap to the system whenever more than the trim
threshold (twice the mmap threshold) lies free there. Either way, the next array of that size is
memory the kernel has to find again: one page fault per 4 KiB page, each zeroing its page,
before the product or the GELU that fills it can start. A 25.6 MB array is 6,250 faults. In the
per-op profile (benchmarks/profile_step.py, vit_mini, batch 128) this showed up as slow
element-wise kernels (GELU's forward 7.5 ms a step, 1.5 ms once freed memory is reused; LayerNorm's
12.7 against 3.3 ms) and as time "between kernels" (autograd's adds write fresh arrays too).

`keep_freed_memory()`, called when minivit's CPU kernels load (the first kernel call; see
kernels/cpu/process.py for every such change), tells glibc (mallopt) to serve every request up to
32 MiB (the largest mmap threshold glibc accepts) from its heap and to keep up to 1 GiB of freed
memory there instead of giving it back. A freed array's pages are then reused by the next one,
already mapped. The cost: the process keeps the memory of its largest step (its peak, as it would
with PyTorch's or JAX's caching allocators), up to 1 GiB above what it holds, until it exits.
Requests above 32 MiB keep glibc's own rules. Nothing changes where the C library is not glibc
(musl, macOS, Windows), nor where the user set glibc's malloc thresholds themselves
(MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_, MALLOC_MMAP_MAX_, or those
glibc.malloc tunables in GLIBC_TUNABLES): their settings stand.

Opting out: MINIVIT_KEEP_FREED_MEMORY=0 in the environment before the first kernel call leaves
glibc untouched. Undoing it later is partial: `keep_freed_memory(False)` puts glibc's starting
thresholds back (128 KiB each), but not glibc's *dynamic* threshold, which raises the mmap
threshold to the size of each large block freed (up to 32 MiB). Setting any of the four
thresholds through mallopt switches that adjustment off for the life of the process (glibc's
malloc.c sets mp_.no_dyn_threshold, and no call clears it), so after the undo every array above
128 KiB is an mmap of its own, as in the second row of the table below (slower than glibc's
defaults and than keeping). There is no call that gives glibc's own behaviour back.

Options measured (vit_mini_patch4_32, batch 128, `python benchmarks/profile_step.py --steps 8`,
NumPy and PyTorch imported first; the 2-core AMD EPYC dev box, 2026-12-06; two rounds each, the
options taking turns; the variables set in the shell for the measurement only, in the same meaning
as the mallopt calls):

    glibc's defaults                                  259-300 images/s  ("between kernels" 18-20%)
    MALLOC_TRIM_THRESHOLD_=16 GiB only                 212-226           (the dynamic threshold
                                                                          goes off, so every array
                                                                          above 128 KiB is an mmap)
    MALLOC_MMAP_MAX_=0 (no mmap at all), trim 16 GiB   373-378
    MALLOC_MMAP_THRESHOLD_=32 MiB, trim 16 GiB         344-393           ("between kernels" 10-11%,
                                                                          GELU fwd 1.5 ms a step)

The last is what keep_freed_memory does (with a 1 GiB trim threshold). No mmap at all was as
fast, but a thread other than the main one (a data loader's, say) could then not get an array
larger than glibc's 64 MiB per-thread heap.
"""
from __future__ import annotations

import ctypes
import os
import platform

_M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
_HEAP_UP_TO = 32 << 20  # glibc's largest mmap threshold on 64-bit (HEAP_MAX_SIZE / 2)
_KEEP_UP_TO = 1 << 30
_GLIBC_START = 128 << 10  # glibc's starting mmap and trim thresholds
# The same thresholds as the user sets them (glibc's malloc/tunables): any of them, and minivit keeps out.
_USERS_MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_USERS_MALLOC_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold", "glibc.malloc.top_pad",
                          "glibc.malloc.mmap_max")

_state = {"kept": False}


def _mallopt():
    """glibc's mallopt through ctypes, or None when the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    fn = libc.mallopt
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def keep_freed_memory(keep: bool = True) -> bool:
    """Have glibc's malloc reuse freed memory for arrays up to 32 MiB (keep=True) or go back to its
    starting thresholds (keep=False; its dynamic threshold stays off, see above). Returns whether it
    is now keeping freed memory; False where the C library is not glibc."""
    mallopt = _mallopt()
    if mallopt is None:
        _state["kept"] = False
        return False
    if keep:
        ok = mallopt(_M_MMAP_THRESHOLD, _HEAP_UP_TO) == 1 and mallopt(_M_TRIM_THRESHOLD, _KEEP_UP_TO) == 1
    else:
        mallopt(_M_MMAP_THRESHOLD, _GLIBC_START)
        mallopt(_M_TRIM_THRESHOLD, _GLIBC_START)
        ok = False
    _state["kept"] = ok
    return ok


def keeping_freed_memory() -> bool:
    """Whether keep_freed_memory() is in effect."""
    return _state["kept"]


def apply_default() -> str:
    """When minivit's CPU kernels load: keep freed memory unless MINIVIT_KEEP_FREED_MEMORY is
    0/false/no/off or the user set glibc's thresholds. Returns what it did, in words."""
    if os.environ.get("MINIVIT_KEEP_FREED_MEMORY", "1").strip().lower() in ("0", "false", "no", "off"):
        return "left to the C library: MINIVIT_KEEP_FREED_MEMORY is off"
    users = [v for v in _USERS_MALLOC_VARIABLES if v in os.environ]
    users += [t for t in _USERS_MALLOC_TUNABLES if t in os.environ.get("GLIBC_TUNABLES", "")]
    if users:
        return f"left to the C library: the user set {', '.join(users)}"
    if keep_freed_memory(True):
        return "glibc keeps freed memory: arrays up to 32 MiB from its heap, up to 1 GiB kept"
    return "left to the C library: it is not glibc"
