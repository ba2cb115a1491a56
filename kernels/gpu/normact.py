"""LayerNorm, GELU and softmax on the GPU (the formulas: kernels/reference/normact.py).

Shape letters: M rows (B*N for a ViT activation) of width D; softmax rows of length n.

Versions:

    gpu_v1  the reference's algorithm in CuPy array expressions (they run with NumPy arrays too,
            which is how the tests check them on a machine without a GPU): every line is one
            kernel launch and a full-size temporary; LayerNorm forward is about eight passes over
            M x D, GELU five, softmax four, each backward as many again.
    gpu_v2  CUDA C (normact.cu), one launch forward: LayerNorm and softmax one warp per row (a
            row of a ViT is 192-1024 floats, a few loads per lane, the reductions by warp
            shuffles); GELU one element per thread, grid-stride. Caches are small: LayerNorm
            keeps x, mean and rstd (2 numbers a row, not a row of xhat); GELU keeps x and
            recomputes Phi and phi in backward; softmax keeps its output. LayerNorm's backward
            writes dx in the same pass that sums dw and db per block (one partial row per block,
            in shared memory without atomics), then one CuPy reduction over the blocks.

LayerNorm backward launch (layernorm_bwd_launch, a pure function of the card's numbers): the op
moves 3 M D numbers and does little arithmetic, so its speed is how many loads each
multiprocessor keeps in flight, that is how many warps it holds. Each warp keeps its own dw and
db sums (2 D numbers) in shared memory, and the kernel's registers (48 a thread in float32, 56 in
float64, as ptxas reports for sm_90) cap a multiprocessor at 42 (36) warps; the launch takes the
block size (1 to 32 warps) that lets a multiprocessor hold the most warps within its shared
memory, registers, threads and block slots (a smaller block only for a quarter more warps: each
block adds a partial row to sum), and one wave of such blocks over the card. In float32 at
D = 192 (the CIFAR ViT) that is 40 warps a multiprocessor on an H100, an A100 or an L4 (5 blocks
of 8); at D = 768 (ViT-B), 32 on an H100, 24 on an A100, 16 on an L4. Before, 128-thread blocks,
at most 2 per multiprocessor, held 8.

Measured: numbers owed (no GPU in the session that wrote this): `python -m kernels.bench layernorm
gelu softmax --device cuda` reports GB/s against the card's measured copy bandwidth; v2 should
approach the copy rate (bytes that must move: 2 M D forward, 3 M D backward), v1 fall several
times short of it. The fraction of the copy peak LayerNorm's backward reaches with this launch
is owed to a GPU run (scripts/gpu_check.sh's kernels_bench part prints it).

Defaults (kernels/registry.py): gpu_v2 for all three.
"""
from __future__ import annotations

import math

import numpy as np

from ..registry import register
from . import runtime
from .runtime import ctype, xp_of

DECLARED = {"normact.cu": [f"{k}<{t}>" for k in ("layernorm_fwd_v2", "layernorm_bwd_v2", "gelu_fwd_v2",
                                                   "gelu_bwd_v2", "softmax_fwd_v2", "softmax_bwd_v2")
                           for t in ("float", "double")]}
THREADS = 256  # 8 warps a block for the row kernels
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def erf(x):
    """erf of a NumPy or CuPy array (scipy's or cupyx's)."""
    if xp_of(x) is np:
        from scipy.special import erf as scipy_erf

        return scipy_erf(x)
    from cupyx.scipy.special import erf as cupy_erf

    return cupy_erf(x)


def _fn(name, x, shared_bytes=0):
    return runtime.function("normact.cu", f"{name}<{ctype(x.dtype)}>", shared_bytes)


def _row_grid(rows):
    return (runtime.blocks_for(rows, THREADS // 32, cap=65535),)


RESERVED_SHARED = 1024  # shared memory CUDA keeps for itself in every block (sm_80 and later)
SMALLER_BLOCK_GAIN = 1.25  # a smaller block must hold this many times the warps to be chosen


def layernorm_bwd_launch(M, D, itemsize, card, regs_per_thread):
    """(blocks, warps per block, shared bytes per block) for layernorm_bwd_v2 over M rows of width
    D on `card` (a runtime.Card), the kernel using `regs_per_thread` registers. A multiprocessor
    holds as many blocks as its shared memory (each warp keeps 2 D sums), registers (allocated per
    warp in units of 256), threads and block slots allow. The block size (1 to 32 warps) with the
    most warps resident per multiprocessor wins, but a smaller block only where it holds a quarter
    more warps than a larger one (each block adds a partial row of 2 D numbers to sum at the end);
    the grid is one wave of those blocks, with no more warps than rows."""
    per_warp = 2 * D * itemsize  # this warp's dw and db sums
    warp_regs = -(-regs_per_thread * 32 // 256) * 256
    best = None  # (blocks resident per multiprocessor, warps per block)
    for warps in (32, 16, 8, 4, 2, 1):
        shared = warps * per_warp
        if shared > card.shared_per_block:
            continue
        resident = min(card.shared_per_sm // (shared + RESERVED_SHARED), card.regs_per_sm // (warps * warp_regs),
                       card.threads_per_sm // (32 * warps), card.blocks_per_sm)
        if resident and (best is None or resident * warps >= SMALLER_BLOCK_GAIN * best[0] * best[1]):
            best = (resident, warps)
    if best is None:
        raise ValueError(f"layernorm gpu_v2 backward keeps 2 x D sums per warp in shared memory: D={D} needs "
                         f"{per_warp} bytes, this GPU allows "
                         f"{min(card.shared_per_block, card.shared_per_sm - RESERVED_SHARED)} per block; choose "
                         "gpu_v1 here (kernels.use(layernorm='gpu_v1'))")
    resident, warps = best
    return min(card.sms * resident, -(-M // warps)), warps, warps * per_warp


# ---------------------------------------------------------------- v1: array expressions
def layernorm_v1_forward(x, w, b, eps=1e-6):
    xp = xp_of(x)
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    rstd = 1.0 / xp.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)
    xhat = xc * rstd
    return xhat * w + b, (xhat, rstd, w)


def layernorm_v1_backward(grad, cache):
    xhat, rstd, w = cache
    gh = grad * w
    dx = rstd * (gh - gh.mean(axis=-1, keepdims=True) - xhat * (gh * xhat).mean(axis=-1, keepdims=True))
    rows = grad.reshape(-1, grad.shape[-1])
    return dx, (rows * xhat.reshape(rows.shape)).sum(axis=0), rows.sum(axis=0)


def gelu_v1_forward(x):
    cdf = 0.5 * (1.0 + erf(x * _SQRT_HALF))
    return x * cdf, (x, cdf)


def gelu_v1_backward(grad, cache):
    x, cdf = cache
    pdf = xp_of(x).exp(-0.5 * x * x) * _INV_SQRT_2PI
    return (grad * (cdf + x * pdf),)


def softmax_v1_forward(x):
    xp = xp_of(x)
    e = xp.exp(x - x.max(axis=-1, keepdims=True))
    y = e / e.sum(axis=-1, keepdims=True)
    return y, (y,)


def softmax_v1_backward(grad, cache):
    (y,) = cache
    return (y * (grad - (grad * y).sum(axis=-1, keepdims=True)),)


# ---------------------------------------------------------------- v2: CUDA C
def layernorm_v2_forward(x, w, b, eps=1e-6):
    xp = xp_of(x)
    D = x.shape[-1]
    runtime.check_operands("layernorm gpu_v2 forward", {"x": x, "w": w, "b": b}, shapes={"w": (D,), "b": (D,)})
    x, w, b = runtime.contiguous(x, w, b)
    M = x.size // D if D else 0
    y = xp.empty_like(x)
    mean = xp.empty(x.shape[:-1], x.dtype)
    rstd = xp.empty(x.shape[:-1], x.dtype)
    if M and D:
        _fn("layernorm_fwd_v2", x)(_row_grid(M), (THREADS,),
                                   (x, w, b, y, mean, rstd, np.int32(M), np.int32(D), runtime.scalar(x.dtype, eps)))
    return y, (x, w, mean, rstd)


def layernorm_v2_backward(grad, cache):
    x, w, mean, rstd = cache
    xp = xp_of(x)
    D = x.shape[-1]
    runtime.check_operands("layernorm gpu_v2 backward", {"x": x, "grad": grad}, shapes={"grad": x.shape})
    grad = runtime.contiguous(grad)
    M = x.size // D if D else 0
    dx = xp.empty_like(x)
    if not (M and D):
        return dx, xp.zeros_like(w), xp.zeros_like(w)
    blocks, warps, shared = layernorm_bwd_launch(M, D, x.itemsize, runtime.card(), _fn("layernorm_bwd_v2", x).num_regs)
    partial = xp.empty((blocks, 2, D), x.dtype)  # per block: dw, db
    _fn("layernorm_bwd_v2", x, shared)((blocks,), (32 * warps,),
                                       (grad, x, w, mean, rstd, dx, partial, np.int32(M), np.int32(D)),
                                       shared_mem=shared)
    sums = partial.sum(axis=0)  # (2, D)
    return dx, sums[0], sums[1]


def gelu_v2_forward(x):
    runtime.check_operands("gelu gpu_v2 forward", {"x": x})
    x = runtime.contiguous(x)
    y = xp_of(x).empty_like(x)
    if x.size:
        _fn("gelu_fwd_v2", x)((runtime.blocks_for(x.size, 256, cap=8192),), (256,), (x, y, np.int64(x.size)))
    return y, (x,)


def gelu_v2_backward(grad, cache):
    (x,) = cache
    runtime.check_operands("gelu gpu_v2 backward", {"x": x, "grad": grad}, shapes={"grad": x.shape})
    grad = runtime.contiguous(grad)
    dx = xp_of(x).empty_like(x)
    if x.size:
        _fn("gelu_bwd_v2", x)((runtime.blocks_for(x.size, 256, cap=8192),), (256,), (x, grad, dx, np.int64(x.size)))
    return (dx,)


def softmax_rows(x, scale=1.0):
    """softmax(scale * x) over the last axis, one warp per row."""
    runtime.check_operands("softmax gpu_v2 forward", {"x": x})
    x = runtime.contiguous(x)
    y = xp_of(x).empty_like(x)
    n = x.shape[-1] if x.ndim else 1
    rows = x.size // n if n else 0
    if rows:
        _fn("softmax_fwd_v2", x)(_row_grid(rows), (THREADS,),
                                 (x, y, np.int64(rows), np.int32(n), runtime.scalar(x.dtype, scale)))
    return y


def softmax_rows_backward(y, grad, scale=1.0, out=None):
    """scale * y * (grad - rowsum(grad * y)); out may be grad itself (in place), then C-contiguous."""
    runtime.check_operands("softmax gpu_v2 backward", {"y": y, "grad": grad, "out": out},
                           shapes={"grad": y.shape, "out": y.shape}, written=("out",))
    y = runtime.contiguous(y)
    grad = runtime.contiguous(grad)  # the same array when out is grad: contiguous, checked above
    out = xp_of(y).empty_like(y) if out is None else out
    n = y.shape[-1] if y.ndim else 1
    rows = y.size // n if n else 0
    if rows:
        _fn("softmax_bwd_v2", y)(_row_grid(rows), (THREADS,),
                                 (y, grad, out, np.int64(rows), np.int32(n), runtime.scalar(y.dtype, scale)))
    return out


def softmax_v2_forward(x):
    y = softmax_rows(x)
    return y, (y,)


def softmax_v2_backward(grad, cache):
    return (softmax_rows_backward(cache[0], grad),)


# ---------------------------------------------------------------- registry
_V1 = "CuPy array expressions (the reference's algorithm, one launch per line)"
register("layernorm", "gpu_v1", layernorm_v1_forward, layernorm_v1_backward, device="gpu", description=_V1)
register("layernorm", "gpu_v2", layernorm_v2_forward, layernorm_v2_backward, device="gpu",
         description="CUDA C (normact.cu): a warp per row; backward sums dw, db per block in shared memory")
register("gelu", "gpu_v1", gelu_v1_forward, gelu_v1_backward, device="gpu", description=_V1 + ", cupyx erf")
register("gelu", "gpu_v2", gelu_v2_forward, gelu_v2_backward, device="gpu",
         description="CUDA C (normact.cu): one fused elementwise pass each way, exact erf")
register("softmax", "gpu_v1", softmax_v1_forward, softmax_v1_backward, device="gpu", description=_V1)
register("softmax", "gpu_v2", softmax_v2_forward, softmax_v2_backward, device="gpu",
         description="CUDA C (normact.cu): a warp per row, max / sum / write")
