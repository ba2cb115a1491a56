"""AdamW and gradient clipping on the GPU (the AdamW formulas: kernels/reference/optim.py).

A ViT has many small parameter arrays (biases and LayerNorm weights of 192 floats, about 150
arrays in vit_cifar): on the GPU the cost of an optimizer step is its launches, not its bytes.

Versions of adamw_update (in place on p, m, v; no backward):

    gpu_v1  the reference's ten array expressions in CuPy (also runs with NumPy arrays): ten
            launches and temporaries per parameter array, ~1500 launches a step for vit_cifar.
    gpu_v2  CUDA C (optim.cu), one fused elementwise launch per parameter array: each element
            read once and written once (p, m, v), ~150 launches a step.
    gpu_v3  multi-tensor (as apex's multi_tensor_apply and torch's _foreach): one launch for every
            parameter array of a step. Block c updates chunk c (CHUNK elements) of some array,
            found in a table of pointers, sizes and chunk starts that is built on the host and
            copied to the device in one piece with the per-array hyper-parameters (learning rate,
            weight decay, bias corrections). Decision: a table of pointers, not a flat parameter
            buffer: parameters stay ordinary arrays (views of nothing), so state dicts, Module.to
            and the autograd's fresh gradient arrays need no special case. Its `foreach` takes
            lists (the optimizer calls it once a step); `forward` is foreach on one array.

Gradient clipping (minivit.optim.clip_grad_norm_ on GPU arrays) uses the same tables:
`global_norm` is one launch of per-chunk sums of squares (in float64) and one CuPy sum and
sqrt; `scale_` multiplies every gradient by min(1, max_norm / (norm + 1e-6)) read from device
memory: the norm never travels to the host.

Measured: numbers owed (no GPU in the session that wrote this); `python -m kernels.bench
adamw_update --device cuda` times one array (the presets bias, fc_w, vit); the many-array case
is what benchmarks/gpu_train_step.py's training step shows.

Default (kernels/registry.py): gpu_v3.
"""
from __future__ import annotations

import numpy as np

from ..registry import register
from . import runtime
from .runtime import ctype, xp_of

CHUNK = 65536  # elements per block of a multi-tensor launch
THREADS = 512
DECLARED = {"optim.cu": [f"{k}<{t}>" for k in ("adamw_v2", "adamw_multi_v3", "sumsq_multi", "scale_multi")
                         for t in ("float", "double")]}


def _fn(name, dtype):
    return runtime.function("optim.cu", f"{name}<{ctype(dtype)}>")


# ---------------------------------------------------------------- v1 and v2: one array at a time
def adamw_v1(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    xp = xp_of(p)
    if weight_decay:
        p *= 1.0 - lr * weight_decay
    m *= beta1
    m += (1.0 - beta1) * g
    v *= beta2
    v += (1.0 - beta2) * (g * g)
    denom = xp.sqrt(v / (1.0 - beta2**step))
    denom += eps
    p -= (lr / (1.0 - beta1**step)) * (m / denom)
    return None, None


def adamw_v2(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    runtime.check_operands("adamw_update gpu_v2", {"p": p, "g": g, "m": m, "v": v},
                           shapes={"g": p.shape, "m": p.shape, "v": p.shape}, written=("p", "m", "v"))
    g = runtime.contiguous(g)
    if p.size:
        s = lambda x: runtime.scalar(p.dtype, x)  # noqa: E731
        _fn("adamw_v2", p.dtype)((runtime.blocks_for(p.size, 256, cap=8192),), (256,),
                                 (p, g, m, v, np.int64(p.size), s(lr), s(beta1), s(beta2), s(eps), s(weight_decay),
                                  s(1.0 - beta1**step), s(1.0 - beta2**step)))
    return None, None


# ---------------------------------------------------------------- v3: every array in one launch
def chunk_table(columns, sizes, chunk=CHUNK):
    """The int64 table of optim.cu (pointer columns, sizes, chunk -> array, chunk -> start) as a
    NumPy array, and the number of chunks. columns: lists of arrays, one list per pointer column."""
    sizes = np.asarray(sizes, dtype=np.int64)
    per = np.maximum(1, -(-sizes // chunk))  # an empty array still gets a chunk, which does nothing
    tensor = np.repeat(np.arange(len(sizes), dtype=np.int64), per)
    first = np.cumsum(per) - per
    start = (np.arange(len(tensor), dtype=np.int64) - np.repeat(first, per)) * chunk
    pointers = np.array([a.data.ptr for column in columns for a in column], dtype=np.int64)
    return np.concatenate([pointers, sizes, tensor, start]), len(tensor)


def _check_lists(*lists):
    n = len(lists[0])
    if any(len(x) != n for x in lists):
        raise ValueError(f"adamw foreach: lists of different lengths {[len(x) for x in lists]}")
    for column in lists:
        for a in column:
            if not a.flags.c_contiguous:
                raise ValueError("adamw foreach: every array must be C-contiguous")


def check_foreach(ps, gs, ms, vs):
    """The multi-tensor entry check (pure: NumPy arrays stand in for CuPy ones in the tests): lists
    of one length, one float dtype, and p, g, m, v of one shape per array (the kernel walks
    p.size elements of each: a smaller g, m or v would be overrun). Layout: _check_lists."""
    lengths = [len(x) for x in (ps, gs, ms, vs)]
    if len(set(lengths)) != 1:
        raise ValueError(f"adamw foreach: lists p, g, m, v of different lengths {lengths}")
    dtypes = {a.dtype for column in (ps, gs, ms, vs) for a in column}
    if len(dtypes) != 1 or next(iter(dtypes)) not in runtime.FLOAT_DTYPES:
        raise TypeError(f"adamw foreach: arrays of one float dtype (float32 or float64) per call, got "
                        f"{sorted(str(d) for d in dtypes)}")
    for i, p in enumerate(ps):
        if not gs[i].shape == ms[i].shape == vs[i].shape == p.shape:
            raise ValueError(f"adamw foreach: array {i}: p, g, m, v have shapes {p.shape}, {gs[i].shape}, "
                             f"{ms[i].shape}, {vs[i].shape}, expected one shape")


def adamw_foreach(ps, gs, ms, vs, lr, beta1, beta2, eps, weight_decay, step):
    """AdamW on lists of arrays (one dtype), in one launch; hyper-parameters one value per array."""
    if not ps:
        return
    cp = runtime.cupy()
    check_foreach(ps, gs, ms, vs)
    gs = [cp.ascontiguousarray(g) for g in gs]  # read only: a strided gradient may be copied
    _check_lists(ps, gs, ms, vs)  # updated in place: they must be contiguous already
    hyper = np.stack([np.broadcast_to(np.asarray(x, np.float64), (len(ps),))
                      for x in (lr, beta1, beta2, eps, weight_decay)], axis=1)  # (n, 5)
    steps = np.broadcast_to(np.asarray(step, np.float64), (len(ps),))
    bias = np.stack([1.0 - hyper[:, 1] ** steps, 1.0 - hyper[:, 2] ** steps], axis=1)
    table, chunks = chunk_table([ps, gs, ms, vs], [p.size for p in ps])
    table_d = cp.asarray(table)
    hyper_d = cp.asarray(np.ascontiguousarray(np.concatenate([hyper, bias], axis=1)))  # (n, 7)
    _fn("adamw_multi_v3", ps[0].dtype)((min(chunks, 65535),), (THREADS,),
                                       (table_d, hyper_d, np.int32(len(ps)), np.int32(chunks), np.int32(CHUNK)))


def adamw_v3(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    adamw_foreach([p], [g], [m], [v], lr, beta1, beta2, eps, weight_decay, step)
    return None, None


# ---------------------------------------------------------------- gradient clipping
def _by_dtype(arrays):
    groups = {}
    for a in arrays:
        groups.setdefault(a.dtype, []).append(a)
    return groups.values()


def global_norm(arrays):
    """sqrt(sum of squares of every element of every array), as a 0-d float64 CuPy array."""
    cp = runtime.cupy()
    total = cp.zeros((), cp.float64)
    for group in _by_dtype(arrays):
        _check_lists(group)
        table, chunks = chunk_table([group], [a.size for a in group])
        partial = cp.empty((chunks,), cp.float64)
        _fn("sumsq_multi", group[0].dtype)((min(chunks, 65535),), (THREADS,),
                                           (cp.asarray(table), np.int32(len(group)), np.int32(chunks),
                                            np.int32(CHUNK), partial))
        total += partial.sum()
    return cp.sqrt(total)


def scale_(arrays, factor):
    """Every array *= factor, in place; factor a 0-d float64 CuPy array (read by the kernel)."""
    cp = runtime.cupy()
    factor = cp.ascontiguousarray(factor, dtype=cp.float64)
    for group in _by_dtype(arrays):
        _check_lists(group)
        table, chunks = chunk_table([group], [a.size for a in group])
        _fn("scale_multi", group[0].dtype)((min(chunks, 65535),), (THREADS,),
                                           (cp.asarray(table), np.int32(len(group)), np.int32(chunks),
                                            np.int32(CHUNK), factor))


register("adamw_update", "gpu_v1", adamw_v1, None, device="gpu",
         description="CuPy array expressions (the reference's ten, one launch each)")
register("adamw_update", "gpu_v2", adamw_v2, None, device="gpu",
         description="CUDA C (optim.cu): one fused elementwise launch per parameter array")
register("adamw_update", "gpu_v3", adamw_v3, None, device="gpu", foreach=adamw_foreach,
         description="CUDA C (optim.cu): multi-tensor, every parameter array of a step in one launch")
