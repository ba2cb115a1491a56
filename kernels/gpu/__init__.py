"""GPU kernels in CUDA C (the .cu files here) launched through CuPy: numbered versions per op,
each module opening with the story of its versions (llm.c's dev/cuda), all checked against the
float64 NumPy reference by `python -m kernels.bench OP --device cuda` before they are timed.

    runtime.py             the one door to CuPy: imported on the first launch, never by
                           `import kernels`; .cu files compiled by NVRTC (cupy.RawModule) once
    dense.py / matmul.cu   matmul v1 (a thread per output), v2 (shared-memory tiles), v3 (register
                           tiling) against cuBLAS; linear and patch embedding on cuBLAS
    attention.py / .cu     v1 cuBLAS + row softmax (materialised), v2 fused row kernel, v3 flash tiles
    normact.py / .cu       LayerNorm (a warp per row), GELU (exact erf), row softmax
    loss.py / .cu          softmax cross-entropy fused with its gradient
    optim.py / .cu         AdamW per array and multi-tensor (one launch a step); gradient clipping
    conv.py                the hybrid models' conv ops as CuPy array calls (no CUDA C yet)
    dropout.py / .cu       dropout masks drawn on the device from a host-drawn seed
    reduce.cuh             warp reductions (sum, max over 32 or 16 lanes), included by the .cu files
    typed_math.cuh         exp, exp2, log and -inf under one name for float and double
    timing.py              kernels/bench.py on the GPU: checks through host copies, CUDA-event
                           timing, the card's measured peaks (sgemm, TF32, device copy)

Registering needs neither CuPy nor a GPU (the table lists every version on every machine);
running a GPU version does. Version 1 of most ops is CuPy array code that also runs with NumPy,
which is how tests/test_device_cpu.py checks it without a GPU; tests/test_gpu_sources.py compiles
every .cu file with nvcc (and NVRTC where it is installed) for sm_90; tests/test_gpu_launch.py and
tests/test_gpu_cards.py test the launch arithmetic and what each launch takes from the card (tile
rows, block sizes) on the CPU; tests/test_gpu.py runs everything on a GPU.

Measured numbers: owed (no GPU in the session that wrote this); benchmarks/results/README.md
lists them, scripts/gpu_check.sh produces them in one call on a GPU machine.
"""
from . import attention, conv, dense, dropout, loss, normact, optim  # noqa: F401  (each registers its versions)

# {file: [template instantiations the Python side launches]}: what the compile test instantiates
DECLARED = {}
for _module in (attention, dense, dropout, loss, normact, optim):
    DECLARED.update(_module.DECLARED)
