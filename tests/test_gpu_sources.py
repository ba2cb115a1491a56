"""The GPU kernels' CUDA C compiles, without a GPU: every .cu file in kernels/gpu/ compiles with
nvcc for sm_90 (Hopper) with warnings as errors, every template instantiation the Python side
may launch included (kernels.gpu.DECLARED), and, where libnvrtc is installed, with NVRTC, the
compiler CuPy uses at run time, with the options CuPy really passes (kernels.gpu.runtime
.nvrtc_options(): ours and the include path of the shared headers, then CuPy's -ftz=true and
--device-as-default-execution-space, then -arch=sm_90, a cubin, as CuPy builds for an H100; the
PTX also shows float32 flushed to zero), on the text CuPy gets (runtime.source: the file and its
headers' digests). attention.cu compiles, per card, exactly the module CuPy builds there: the
flash tiles an H100 (sm_90, 227 KiB a block), an A100 (sm_80, 163 KiB) or an L4 (sm_89, 99 KiB)
chooses. So a syntax or type error in a kernel fails here (and in CI, which has nvcc), not first
on a GPU machine. Also: the declarations and the sources agree, the headers the .cu files include
are there, and importing minivit and kernels never imports CuPy.

Without nvcc (or libnvrtc) those tests skip with the reason. MINIVIT_NVRTC=/path/to/libnvrtc.so
points the NVRTC test at a library outside the usual places.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kernels.gpu as gpu

ROOT = Path(__file__).resolve().parents[1]
GPU_DIR = ROOT / "kernels" / "gpu"
CU_FILES = sorted(p.name for p in GPU_DIR.glob("*.cu"))
KERNEL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(")


def test_there_are_cu_files_and_each_one_is_declared_by_its_python_module():
    assert {"attention.cu", "matmul.cu", "normact.cu", "loss.cu", "optim.cu", "dropout.cu"} <= set(CU_FILES)
    assert set(gpu.DECLARED) == set(CU_FILES), "a .cu file no Python module launches, or a declaration without a file"


@pytest.mark.parametrize("name", CU_FILES)
def test_every_kernel_in_a_cu_file_is_declared_and_every_declaration_names_a_kernel_there(name):
    defined = set(KERNEL.findall((GPU_DIR / name).read_text()))
    declared = {expr.split("<")[0] for expr in gpu.DECLARED[name]}
    assert defined == declared, f"{name}: defined {sorted(defined)}, declared {sorted(declared)}"


def _wrapper(tmp_path, name):
    """A translation unit that includes kernels/gpu/<name> and takes the address of every declared
    instantiation, which makes nvcc instantiate (and so type-check) each template."""
    refs = ", ".join(f"(void*)&{expr}" for expr in gpu.DECLARED[name])
    path = tmp_path / f"check_{name}"
    path.write_text(f'#include "{GPU_DIR / name}"\nvoid* minivit_declared[] = {{{refs}}};\n')
    return path


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed (CI has it)")
@pytest.mark.parametrize("name", CU_FILES)
def test_every_cu_file_compiles_with_nvcc_for_sm90_warnings_as_errors(name, tmp_path):
    src = _wrapper(tmp_path, name)
    result = subprocess.run(["nvcc", "-arch=sm_90", "-std=c++17", "-Werror", "all-warnings", "-c", str(src),
                             "-o", str(tmp_path / "out.o")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"nvcc failed on {name}:\n{result.stderr[-4000:]}"


def _find_nvrtc():
    """libnvrtc (its builtins library loaded first, from the same folder), or None."""
    candidates = [os.environ.get("MINIVIT_NVRTC")] if os.environ.get("MINIVIT_NVRTC") else []
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda",
             *sorted(glob.glob("/usr/local/cuda-*"), reverse=True)]
    for home in filter(None, homes):
        candidates += sorted(glob.glob(os.path.join(home, "lib*", "libnvrtc.so*")), reverse=True)
    for entry in sys.path:  # the NVIDIA wheels (nvidia-cuda-nvrtc, cuda-toolkit) of this Python
        candidates += sorted(glob.glob(os.path.join(entry, "nvidia", "*", "lib", "libnvrtc.so*")), reverse=True)
    found = ctypes.util.find_library("nvrtc")
    if found:
        candidates.append(found)
    for path in candidates:
        if "builtins" in os.path.basename(path) or ".alt." in os.path.basename(path):
            continue
        try:
            for builtins in glob.glob(os.path.join(os.path.dirname(path), "libnvrtc-builtins.so*")):
                if ".alt." not in builtins:
                    ctypes.CDLL(builtins, mode=getattr(os, "RTLD_GLOBAL", 0))
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


NVRTC = _find_nvrtc()


def _nvrtc_compile(lib, name, arch="sm_90", names=None):
    """(result code, log, PTX or None) of NVRTC on kernels/gpu/<name> as CuPy gets it, with `names`
    (default: its declared name expressions) and the options CuPy passes for a card of `arch` (PTX
    only for a compute_ arch)."""
    prog = ctypes.c_void_p()
    source = gpu.runtime.source(name).encode()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source, name.encode(), 0, None, None) == 0
    try:
        for expr in gpu.DECLARED[name] if names is None else names:
            assert lib.nvrtcAddNameExpression(prog, expr.encode()) == 0
        options = [o.encode() for o in gpu.runtime.nvrtc_options(arch)]
        code = lib.nvrtcCompileProgram(prog, len(options), (ctypes.c_char_p * len(options))(*options))
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        ptx = None
        if code == 0 and arch.startswith("compute_"):
            lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            assert lib.nvrtcGetPTX(prog, buf) == 0
            ptx = buf.value.decode()
        return code, log.value.decode(errors="replace"), ptx
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def test_the_nvrtc_options_are_ours_and_the_include_path_then_what_cupy_appends():
    """CuPy appends -ftz=true after the caller's options on every compile (cupy/cuda/compiler.py),
    so the compile test must pass it too, and our options must not ask for fast math."""
    options = gpu.runtime.nvrtc_options("sm_90")
    ours = gpu.runtime.OPTIONS + gpu.runtime.INCLUDE
    assert options[:len(ours)] == ours and gpu.runtime.INCLUDE == (f"-I{GPU_DIR}",)
    assert options[len(ours):] == ("-ftz=true", "--device-as-default-execution-space", "-arch=sm_90")
    assert not any("fast" in o or "prec-" in o or "fmad" in o or "ftz" in o for o in gpu.runtime.OPTIONS)


@pytest.mark.skipif(NVRTC is None, reason="libnvrtc not found (set MINIVIT_NVRTC=/path/to/libnvrtc.so)")
@pytest.mark.parametrize("name", [n for n in CU_FILES if n != "attention.cu"])
def test_every_cu_file_compiles_with_nvrtc_as_cupy_compiles_it(name):
    code, log, _ = _nvrtc_compile(NVRTC, name)
    assert code == 0, f"NVRTC failed on {name}:\n{log[-4000:]}"
    assert "warning" not in log.lower(), f"NVRTC warned on {name}:\n{log[-4000:]}"


# cudaDevAttrMaxSharedMemoryPerBlockOptin of each card, and its architecture
CARDS = {"H100": (232448, "sm_90"), "A100": (166912, "sm_80"), "L4": (101376, "sm_89")}


@pytest.mark.skipif(NVRTC is None, reason="libnvrtc not found (set MINIVIT_NVRTC=/path/to/libnvrtc.so)")
@pytest.mark.parametrize("card", CARDS)
def test_attention_cu_compiles_with_nvrtc_with_the_flash_tiles_each_card_chooses(card):
    """The module CuPy builds for attention.cu on this card: v2, and every v3 kernel at the tile
    rows kernels.gpu.attention.v3_tile chooses for the card's shared memory, for its architecture.
    The L4 takes 32- and 16-row tiles that the H100 never does (float64 hd 64 backward: 16)."""
    limit, arch = CARDS[card]
    names = gpu.attention.compiled_names(limit)
    assert set(names) <= set(gpu.DECLARED["attention.cu"])
    code, log, _ = _nvrtc_compile(NVRTC, "attention.cu", arch=arch, names=names)
    assert code == 0, f"NVRTC failed on attention.cu for the {card}'s tiles:\n{log[-4000:]}"
    assert "warning" not in log.lower(), f"NVRTC warned on attention.cu for the {card}'s tiles:\n{log[-4000:]}"


def test_every_header_a_cu_file_includes_is_in_kernels_gpu_and_its_digest_is_in_the_source():
    """The .cu files include reduce.cuh and typed_math.cuh by name (NVRTC finds them through
    runtime.INCLUDE); CuPy's kernel cache hashes the source text only, so runtime.source appends
    each header's digest: the warp reductions are defined once, in reduce.cuh."""
    for name in CU_FILES:
        text = (GPU_DIR / name).read_text()
        for header in gpu.runtime.LOCAL_INCLUDE.findall(text):
            assert (GPU_DIR / header).is_file(), f"{name} includes {header}, which is not in kernels/gpu"
            assert f"// {header} " in gpu.runtime.source(name)
        assert "__shfl_xor_sync" not in text, f"{name} defines a warp reduction of its own; use reduce.cuh"
    attention = (GPU_DIR / "attention.cu").read_text()
    assert {"reduce.cuh", "typed_math.cuh"} <= set(gpu.runtime.LOCAL_INCLUDE.findall(attention))


def test_the_source_cupy_gets_changes_when_an_included_header_changes(tmp_path):
    (tmp_path / "k.cu").write_text('#include "h.cuh"\n__global__ void k() {}\n')
    (tmp_path / "h.cuh").write_text("#pragma once\n")
    before = gpu.runtime.source("k.cu", tmp_path)
    assert before.startswith((tmp_path / "k.cu").read_text())
    (tmp_path / "h.cuh").write_text("#pragma once\n// edited\n")
    assert gpu.runtime.source("k.cu", tmp_path) != before
    (tmp_path / "plain.cu").write_text("__global__ void k() {}\n")
    assert gpu.runtime.source("plain.cu", tmp_path) == "__global__ void k() {}\n"


@pytest.mark.skipif(NVRTC is None, reason="libnvrtc not found (set MINIVIT_NVRTC=/path/to/libnvrtc.so)")
def test_compiled_as_cupy_compiles_float32_flushes_subnormals_and_float64_does_not():
    """What kernels/gpu/runtime.py says of the arithmetic, read off the PTX of normact.cu (CuPy's
    PTX route, -arch=compute_90): float32 arithmetic carries .ftz (subnormals flushed), float64
    does not, and division and sqrt round to nearest (.rn: no fast math) in both."""
    code, log, ptx = _nvrtc_compile(NVRTC, "normact.cu", arch="compute_90")
    assert code == 0, log[-4000:]
    op = r"\b(?:add|sub|mul|fma|div|sqrt)(?:\.[a-z]+)*\.f{}\b"
    f32, f64 = re.findall(op.format(32), ptx), re.findall(op.format(64), ptx)
    assert f32 and f64
    assert all(".ftz" in o for o in f32), sorted(set(o for o in f32 if ".ftz" not in o))
    assert not any(".ftz" in o for o in f64), sorted(set(f64))
    assert all(".rn" in o for o in f32 + f64 if o.startswith(("div", "sqrt"))), sorted(set(f32 + f64))


def test_importing_minivit_and_listing_every_kernel_never_imports_cupy():
    code = ("import sys, kernels, minivit; kernels.available(); kernels.get('attention', 'gpu'); "
            "import minivit.cli, minivit.train; print('cupy' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_every_gpu_default_is_a_registered_gpu_version_with_a_description():
    import kernels

    assert set(kernels.DEFAULTS["gpu"]) == set(kernels.OPS)
    for op, name in kernels.DEFAULTS["gpu"].items():
        impl = kernels.find(op, name)
        assert impl.device == "gpu" and impl.description.strip(), (op, name)
    assert kernels.BACKENDS["gpu"][0] == "kernels.gpu"
