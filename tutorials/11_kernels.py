# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 11 · Kernels: swap one, check it, time it
#
# **Goal.** Every fused op of the model (linear, patch embedding, layernorm, GELU, softmax,
# attention, the loss, the AdamW update) runs an array *kernel* taken from one registry, so a
# different implementation can be swapped in without touching model code. We:
#
# 1. list the implementations and the table of defaults (`kernels.available`, `kernels.DEFAULTS`);
# 2. swap one (`with kernels.use(attention="cpu_v1")`) and switch to reading mode (every op's
#    plain NumPy reference, `kernels.use("reference")`);
# 3. check implementations against the float64 reference with the project's harness
#    (`kernels.bench`: `run_pair`, `compare`, `check`), and see it catch a wrong one;
# 4. write an attention kernel of our own, check it, register it and run the model with it;
# 5. write the forward pass of flash attention for one block of queries: one pass over the keys
#    with an online softmax, equal to the reference without ever holding a row of N scores;
# 6. time the versions (printed, never asserted) and read their story;
# 7. check that the model's logits and gradients are the same, within float32 tolerance,
#    under every CPU attention kernel.
#
# Attention is the paper's core operation (Eq. 5-7 of App. A: softmax(q k^T / sqrt(hd)) v per
# head). Topics (see tutorials/README.md): T1, T3 (the cost and the computation of attention).
# Time: a few seconds on 2 idle cores.

# %%
import kernels
import os
from pathlib import Path

import numpy as np

import kernels.cpu.attention
import minivit
from kernels import bench
from minivit import functional as F

OUT = Path(os.environ.get("MINIVIT_TUTORIAL_OUT", "runs/tutorials")) / "11_kernels"
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## What is there, and what runs
#
# `kernels.available(op)` lists every registered implementation (the device's default first);
# `kernels.DEFAULTS` is the one table that says what runs when nothing is chosen;
# `kernels.selection()` what runs now. `python -m kernels.bench --list` prints the same.

# %%
for impl in kernels.available("attention"):
    star = "*" if kernels.DEFAULTS.get(impl.device, {}).get("attention") == impl.name else " "
    print(f"{star} {impl.name:10s} {impl.device:4s} {impl.description}")
cpu_attention = [impl.name for impl in kernels.available("attention", device="cpu")]
default = kernels.DEFAULTS["cpu"]["attention"]
assert kernels.get("attention").name == default and "reference" in cpu_attention
print("\nruns now:", kernels.selection())

# %% [markdown]
# ## Swapping one, and reading mode
#
# `with kernels.use(op=name):` selects an implementation for the block and restores the
# previous choice on exit; `kernels.select(op=name)` chooses for the rest of the program. A bare
# name selects it for every op that has it: `with kernels.use("reference"):` runs every op's plain
# NumPy reference, the code to read and step through in a debugger (`MINIVIT_KERNELS=reference`
# does it for a whole run).

# %%
with kernels.use(attention="cpu_v1"):
    assert kernels.get("attention").name == "cpu_v1"
    assert kernels.get("layernorm").name == kernels.DEFAULTS["cpu"]["layernorm"]  # the others unchanged
assert kernels.get("attention").name == default  # restored
with kernels.use("reference"):
    assert set(kernels.selection().values()) == {"reference"}
print("swap and restore: ok; reading mode selects the reference of every op")

# %% [markdown]
# ## Checking against the reference
#
# The harness runs an implementation and the reference on the same inputs, the reference in
# float64 (inputs cast up exactly), runs both backward passes on the same output gradient, and
# pairs up the forward output and every gradient (`run_pair`); `compare` judges one pair within
# a float32 tolerance (|got - want| <= atol * max|want| + rtol * |want| + floor, elementwise)
# and lists the first mismatches; `check` does both for all pairs.

# %%
dims = dict(B=4, Hh=3, N=65, hd=64)  # a CIFAR ViT's attention (64 patches + class token), 4 images
inputs = bench.SPECS["attention"].make(dims, np.float32, np.random.default_rng(0))  # q, k, v and scale
pairs = bench.run_pair("attention", "cpu_v3", inputs)
for name, got, want in pairs:
    max_abs, max_rel, lines = bench.compare(name, got, want, np.float32)
    print(f"cpu_v3 {name:8s} {str(got.shape):16s} max abs err {max_abs:.2e}, max rel {max_rel:.2e}")
    assert not lines
results = {name: bench.check("attention", name, inputs) for name in cpu_attention}
for name, r in results.items():
    print(f"{name:10s} {'ok' if r.ok else 'WRONG'}  max rel error {r.max_rel:.1e}")
assert all(r.ok for r in results.values())

# %% [markdown]
# A check that cannot fail proves nothing, so give it a wrong kernel: the reference with the
# 1/sqrt(hd) scale forgotten in the forward pass. An `Impl` need not be registered to be checked.

# %%
reference = kernels.find("attention", "reference")
forgot_scale = kernels.Impl("attention", "forgot_scale", "cpu",
                            lambda q, k, v, scale: reference.forward(q, k, v, 1.0), reference.backward,
                            "the reference without the scale")
wrong = bench.check("attention", forgot_scale, inputs)
print("\n".join(wrong.lines[:4]))
assert not wrong.ok

# %% [markdown]
# ## An attention kernel of our own
#
# A kernel is a pair of array functions: `forward(q, k, v, scale) -> (out, cache)` and
# `backward(dout, cache) -> (dq, dk, dv)`, with q, k, v of shape (B, Hh, N, hd), computing
# O = P v with P = softmax(S) row by row and S = scale q k^T.
#
# **Exercise 1.** Write `my_forward` and `my_backward` in NumPy, batched over (B, Hh) with `@`
# and `swapaxes(-1, -2)`. Forward: subtract each row's maximum before `exp` so that large
# logits do not overflow, and keep in the cache what backward needs. Backward: the chain rule
# through the three steps, as in notebook 02 (Exercise 6): O = P v gives dv and dP; the
# softmax's Jacobian (per row, the derivative of P_i with respect to S_j is
# P_i (delta_ij - P_j)) turns dP into dS; S = scale q k^T gives dq and dk. The check compares
# the output and all three gradients with the float64 reference.

# %% tags=["solution"]
def my_forward(q, k, v, scale):
    s = scale * (q @ k.swapaxes(-1, -2))  # (B, Hh, N, N)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)  # rows sum to 1
    return p @ v, (q, k, v, p, scale)  # (B, Hh, N, hd)


def my_backward(dout, cache):
    q, k, v, p, scale = cache
    dv = p.swapaxes(-1, -2) @ dout  # (B, Hh, N, hd)
    dp = dout @ v.swapaxes(-1, -2)  # (B, Hh, N, N)
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    return scale * (ds @ k), scale * (ds.swapaxes(-1, -2) @ q), dv


# %%
mine = kernels.Impl("attention", "mine", "cpu", my_forward, my_backward, "tutorial: NumPy, N x N probabilities")
result = bench.check("attention", mine, inputs)
print("my kernel:", "ok" if result.ok else "WRONG", f"max rel error {result.max_rel:.1e}", *result.lines[:4])
assert result.ok
kernels.register("attention", "tutorial_numpy", my_forward, my_backward,
                 description="tutorial 11: NumPy, N x N probabilities")
cpu_attention.append("tutorial_numpy")

# %% [markdown]
# ## One pass over the keys: the online softmax
#
# `my_forward` builds the whole (N, N) matrix of scores. cpu_v3, like FlashAttention (Dao et al.
# 2022), never does: for a block of query rows it walks over the keys one block at a time and
# keeps, per query row, a running maximum m, a running sum l of exponentials and an accumulator
# of weighted values; each key block is read once, and memory stays linear in N. The difficulty
# is the maximum that softmax subtracts before `exp`: the maximum over all keys is known only at
# the end of the pass.
#
# Start from this: for any constant c, softmax(s)_j = exp(s_j - c) / sum_k exp(s_k - c). Say the
# key blocks so far had the running maximum m_old, so that l = sum_k exp(s_k - m_old) and
# acc = sum_k exp(s_k - m_old) v_k over their keys. The next block's scores raise the maximum to
# m_new. By what must l and acc be multiplied to become the same sums under m_new? Then add the
# new block's own terms. After the last block, the output is acc / l.
#
# **Exercise 2.** Write `online_attention(q, k, v, scale, block)` for one block of query rows
# q (Nq, hd) against all keys and values k, v (N, hd): one pass over the key blocks
# `k[j:j + block]`, `v[j:j + block]` (the last one may be shorter), with a running maximum (Nq,),
# a running sum (Nq,) and an accumulator (Nq, hd); no (Nq, N) array. Return the (Nq, hd) output.
# The check builds keys whose scores grow from block to block, so that every query row's
# maximum changes during the pass, and compares with the reference kernel to 1e-5.

# %% tags=["solution"]
def online_attention(q, k, v, scale, block=32):
    Nq = q.shape[0]
    m = np.full(Nq, -np.inf)  # running maximum of each query row's scores
    l = np.zeros(Nq)  # running sum of exp(score - m)
    acc = np.zeros((Nq, v.shape[1]))  # running sum of exp(score - m) * v
    for j in range(0, k.shape[0], block):
        s = scale * (q @ k[j:j + block].T)  # (Nq, block): this key block's scores only
        m_new = np.maximum(m, s.max(axis=1))
        correction = np.exp(m - m_new)  # moves what was summed under the old maximum to the new one
        p = np.exp(s - m_new[:, None])
        l = l * correction + p.sum(axis=1)
        acc = acc * correction[:, None] + p @ v[j:j + block]
        m = m_new
    return acc / l[:, None]


# %%
g = np.random.default_rng(3)
Nq, N_keys, hd, blk = 16, 96, 64, 32
u = np.ones(hd) / np.sqrt(hd)  # a direction every query leans towards
q1 = 0.5 * g.standard_normal((Nq, hd)) + 2.0 * u
k1 = g.standard_normal((N_keys, hd)) + 8.0 * (np.arange(N_keys) // blk)[:, None] * u  # later blocks score higher
v1 = g.standard_normal((N_keys, hd))
scale1 = hd ** -0.5
scores = scale1 * q1 @ k1.T  # (Nq, N): only to check that the inputs test what they should
block_max = scores.reshape(Nq, N_keys // blk, blk).max(axis=2)
assert (block_max[:, 1:] > block_max[:, :1]).all()  # every row's maximum changes after the first block
want1 = reference.forward(q1[None, None], k1[None, None], v1[None, None], scale1)[0][0, 0]  # (Nq, hd)
for b_ in (blk, 40, N_keys):  # three key blocks; a short last block; a single block
    got1 = online_attention(q1, k1, v1, scale1, b_)
    err1 = np.abs(got1 - want1).max()
    print(f"key blocks of {b_:3d}: max |online - reference| = {err1:.1e}")
    assert got1.shape == (Nq, hd) and err1 < 1e-5

# %% [markdown]
# ## Timing the versions
#
# `bench.time_impls` runs the implementations in turns (each round runs every one once, so
# the load of a shared machine hits them alike) and returns median forward and backward
# times. `python -m kernels.bench attention` prints the full table with GFLOP/s and the
# speed-up over the reference; here a smaller version at a CIFAR ViT's size. The numbers depend
# on the machine and its load: read them, don't trust a single run.
#
# **Predict, then run.** At this size (65 tokens, 48 heads of 64 dimensions in a batch), will
# our NumPy kernel be faster or slower than the reference, and which Numba version do you
# expect to be fastest? (The table of defaults above names the version that runs by default.)

# %%
dims_t = dict(B=16, Hh=3, N=65, hd=64)
inputs_t = bench.SPECS["attention"].make(dims_t, np.float32, np.random.default_rng(1))
timings = bench.time_impls("attention", cpu_attention, inputs_t, repeat=5, warmup=1, budget_s=1.0)
fwd_flops, bwd_flops = bench.SPECS["attention"].work(dims_t, 4)
ref = timings["reference"]
print(f"attention B={dims_t['B']} Hh=3 N=65 hd=64, float32\n{'impl':16s} {'fwd ms':>8s} {'bwd ms':>8s} "
      f"{'fwd GFLOP/s':>12s} {'x ref fwd':>10s} {'x ref bwd':>10s}")
for name, t in timings.items():
    print(f"{name:16s} {t.fwd_s * 1e3:8.3f} {t.bwd_s * 1e3:8.3f} {fwd_flops / t.fwd_s / 1e9:12.1f} "
          f"{ref.fwd_s / t.fwd_s:10.2f} {ref.bwd_s / t.bwd_s:10.2f}")

# %% [markdown]
# ## The numbered versions and their story
#
# Each file in kernels/cpu/ opens with its versions, the idea of each, and their measured
# speed on a named machine, so that a reader sees why each version exists and what it bought.
# Here is attention's (v3 is the online softmax of Exercise 2, with tiles of queries and keys):

# %%
story = kernels.cpu.attention.__doc__
print(story)
assert all(name in story for name in cpu_attention if name.startswith("cpu_"))  # every version tells its story

# %% [markdown]
# ## The model gives the same answer under every kernel
#
# Swapping a kernel must change nothing but speed. Run one model, one batch, under every CPU
# attention implementation (including ours) and compare the logits and a gradient with the
# reference's. The fused op only runs when no attention weights are requested (`out=None`),
# which is the ordinary forward pass used here.
#
# **Predict, then run.** Will the logits be bit for bit the same under every kernel, or only
# close? If close, how close, for float32 logits of order 1?

# %%
minivit.manual_seed(0)
model = minivit.ViT(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=2, num_classes=10)
model.head.weight.data[:] = 0.2 * np.random.default_rng(0).standard_normal(model.head.weight.shape)  # not the zero head
x = np.random.default_rng(1).standard_normal((8, 3, 32, 32)).astype(np.float32)
y = np.arange(8) % 10


def logits_and_grad(name):
    with kernels.use(attention=name):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        with minivit.no_grad():
            logits = model(x).numpy()
    grad = model.blocks[0].attn.qkv.weight.grad.copy()
    model.zero_grad()
    return logits, grad


want_logits, want_grad = logits_and_grad("reference")
for name in cpu_attention:
    logits, grad = logits_and_grad(name)
    err = np.abs(logits - want_logits).max()
    gerr = np.abs(grad - want_grad).max() / np.abs(want_grad).max()
    print(f"{name:16s} max |logits - reference| {err:.1e}, qkv gradient rel. error {gerr:.1e}")
    assert np.allclose(logits, want_logits, rtol=1e-4, atol=1e-5)
    assert np.allclose(grad, want_grad, rtol=1e-3, atol=1e-4 * np.abs(want_grad).max())

# %% [markdown]
# ## What this means
#
# The model asks the registry for "attention" and runs what it is given: a NumPy reference
# to read, Numba versions that trade memory and speed differently (v3 never builds the N x N
# matrix), GPU versions where CuPy is installed, or a kernel of your own. The harness is the
# gate: a version is checked against the float64 reference before it is timed, and only then
# can it become the default in `kernels.DEFAULTS`.
