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
# # 10 · Scaling and compute cost
#
# **Goal.** Count what a ViT costs and see where the cost goes as the model grows in depth,
# width or sequence length (smaller patches, larger images): the paper's scaling study
# (Sec. 4.4, App. D.2, Fig. 8) and its empirical compute cost (App. D.5, Fig. 12). We check:
#
# 1. a FLOP formula written from the config equals the multiply-adds that the model's kernels
#    actually perform, counted by wrapping them (for a small config, exactly);
# 2. what doubling depth, doubling width or halving the patch does to the count and to the
#    parameters (a smaller patch: many more FLOPs, almost no parameters);
# 3. attention's count grows with the square of the number of tokens N and the rest linearly,
#    so attention dominates only beyond N = 6 D tokens (for an MLP ratio of 4).
#
# Times are measured and printed, never asserted: this machine is shared.
#
# Topics (see tutorials/README.md): T1 (the quadratic cost), T14-T15 (what to scale), T17
# (compute cost). Time: about 5 s on 2 idle cores.

# %%
import kernels
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import minivit
from kernels import bench
from minivit.analysis.throughput import inference_throughput

OUT = Path(os.environ.get("MINIVIT_TUTORIAL_OUT", "runs/tutorials")) / "10_scaling"
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Counting what the kernels do
#
# Every dense product in minivit runs through one of four registry ops: `patch_embed`
# (Eq. 1), `linear` (qkv, the output projection, the MLP, the head), `attention` (the fused
# softmax(q k^T) v) and `matmul` (q k^T and the weights times v when attention runs composed).
# The registry lets us add an implementation of our own: here one that counts the
# multiply-adds of each call from its input shapes and then runs the default kernel. Running
# the model with them selected tallies the cost of one forward pass.

# %%
tally = {}


def counting(op, macs):
    """Register "count" for `op`: the default kernel, plus a tally of multiply-adds."""
    impl = kernels.get(op)

    def forward(*arrays, **params):
        tally[op] = tally.get(op, 0) + macs(*arrays)
        return impl.forward(*arrays, **params)

    kernels.register(op, "count", forward, impl.backward, description=f"{impl.name}, counting multiply-adds")


counting("patch_embed", lambda x, w, b: x.shape[0] * (x.shape[2] // w.shape[2]) * (x.shape[3] // w.shape[3])
         * w[0].size * w.shape[0])  # B * Np patches, each a (C*P*P) . (C*P*P, D) product
counting("linear", lambda x, w, b: x.size // x.shape[-1] * w.shape[1] * w.shape[0])  # rows * Din * Dout
counting("attention", lambda q, k, v: 2 * q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * q.shape[3])  # S and P v
counting("matmul", lambda a, b: int(np.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2])))
         * a.shape[-2] * a.shape[-1] * b.shape[-1])


def counted_macs(model, batch=2, composed=False):
    """Multiply-adds of one forward pass per image, as counted by the kernels."""
    tally.clear()
    cfg = model.config
    x = np.zeros((batch, cfg.in_chans, cfg.img_size, cfg.img_size), np.float32)
    with kernels.use("count"), minivit.no_grad():
        model(x, out={} if composed else None)  # out=...: attention composed from matmul + softmax
    return sum(tally.values()) // batch, dict(tally)


small = minivit.create_model("vit_testing")  # 32 x 32, patch 8, width 32, 2 blocks, 2 heads
macs, by_op = counted_macs(small)
print("vit_testing, multiply-adds per image by op:", {op: n // 2 for op, n in by_op.items()})

# %% [markdown]
# **Exercise 1.** Write `forward_macs(cfg)`, the multiply-adds of one image's forward pass,
# from a `ViTConfig`: Np = (H/P)^2 patches, N = Np + 1 tokens with a class token, D width,
# Dm = mlp_ratio * D, L blocks, K classes. Per image: the patch embedding Np (C P^2) D; per block
# the qkv projection N D 3D, the scores q k^T and the weighted sum of v N^2 D each (over all
# heads together), the output projection N D D and the MLP 2 N D Dm; the head D K.

# %% tags=["solution"]
def forward_macs(cfg):
    P, C, D, L = cfg.patch_size, cfg.in_chans, cfg.embed_dim, cfg.depth
    Np = (cfg.img_size // P) ** 2
    N = Np + (1 if cfg.class_token else 0)
    Dm = int(D * cfg.mlp_ratio)
    embed = Np * C * P * P * D
    block = N * D * 3 * D + 2 * N * N * D + N * D * D + 2 * N * D * Dm
    return embed + L * block + D * cfg.num_classes


# %%
assert forward_macs(small.config) == macs
for name in ("vit_demo_patch4_32", "vit_cifar_patch4_32"):
    model = minivit.create_model(name)
    assert forward_macs(model.config) == counted_macs(model)[0] == counted_macs(model, composed=True)[0]
print("formula == counted multiply-adds, fused and composed attention alike")
print(f"ViT-B/16 at 224: {forward_macs(minivit.model_config('vit_base_patch16_224')) / 1e9:.2f} G multiply-adds "
      "(the '17.6 GFLOPs' usually quoted counts multiply-adds; in FLOPs it is twice that)")

# %% [markdown]
# ## Depth, width, patch size (App. D.2, Fig. 8)
#
# Start from a small CIFAR-sized model and change one dimension at a time. The paper finds that
# depth helps most, width least, and that a smaller patch (a longer sequence) helps robustly
# "without introducing parameters"; and that compute predicts performance better than the
# number of parameters. The table shows why these are different axes of cost.

# %%
base = dict(img_size=32, patch_size=4, embed_dim=96, depth=4, num_heads=3, mlp_ratio=4.0, num_classes=10)
variants = {"base": {}, "depth x2": dict(depth=8), "width x2": dict(embed_dim=192, num_heads=6),
            "patch / 2": dict(patch_size=2), "patch x 2": dict(patch_size=8)}
rows = {}
print(f"{'variant':10s} {'tokens':>6s} {'params':>10s} {'MFLOPs/img':>11s} {'img/s':>8s}")
for name, change in variants.items():
    model = minivit.ViT(**{**base, **change})
    flops = 2 * forward_macs(model.config)  # FLOPs = 2 x multiply-adds
    speed = inference_throughput(model, batch_size=8, repeats=1)
    rows[name] = dict(tokens=model.num_tokens, params=model.num_parameters(), flops=flops, speed=speed,
                      D=model.config.embed_dim)
    print(f"{name:10s} {model.num_tokens:6d} {model.num_parameters():10,d} {flops / 1e6:11.1f} {speed:8.1f}")

# %% [markdown]
# What the counts say, checked. Doubling the depth doubles the blocks' cost (and parameters).
# Doubling the width quadruples the dense products but only doubles attention's N^2 D part.
# Halving the patch makes 4x the tokens: the dense products cost 4x, attention 16x; the
# parameters change only in the patch projection (4x fewer weights) and the position table
# (4x more rows), a rounding error next to the blocks.

# %%
C, D, L = 3, base["embed_dim"], base["depth"]
blocks = lambda r: r["flops"] - 2 * (C * 32 * 32 * r["D"] + r["D"] * 10)  # all but patch embedding and head
assert blocks(rows["depth x2"]) == 2 * blocks(rows["base"])
N = rows["base"]["tokens"]
dense, attention = 2 * L * 12 * N * D * D, 2 * L * 2 * N * N * D  # MLP ratio 4: 3 + 1 + 8 = 12 N D^2
assert blocks(rows["base"]) == dense + attention
assert blocks(rows["width x2"]) == 4 * dense + 2 * attention
N2 = rows["patch / 2"]["tokens"]
assert blocks(rows["patch / 2"]) == 2 * L * (12 * N2 * D * D + 2 * N2 * N2 * D)
extra = rows["patch / 2"]["params"] - rows["base"]["params"]
assert extra == C * D * (2 * 2 - 4 * 4) + (N2 - N) * D  # patch projection and position table only
print(f"patch 4 -> 2: {rows['patch / 2']['flops'] / rows['base']['flops']:.1f}x the FLOPs, "
      f"{extra / rows['base']['params']:+.1%} parameters")

# %% [markdown]
# ## The quadratic cost of attention (T1, App. D.5)
#
# Per block and image, the dense products cost 12 N D^2 multiply-adds (MLP ratio 4) and
# attention 2 N^2 D. Double the tokens: the first doubles, the second quadruples, so the total
# grows faster than N, and attention's share N / (N + 6 D) passes one half at N = 6 D. For
# ViT-B (D = 768) that is 4,608 tokens: a 224 x 224 image at patch 16 has 197, which is why the
# paper sees the quadratic cost only for its largest models at its largest resolutions; on raw
# pixels a 256 x 256 image would be 65,536 tokens, and (256 * 256)^2 = 4,294,967,296 scores
# per head and layer.

# %%
def block_macs(N, D):
    """(dense, attention) multiply-adds of one block for N tokens of width D (MLP ratio 4)."""
    return 12 * N * D * D, 2 * N * N * D


D_base = 768
for n in (64, 197, 577, 1024, 4608, 16384):
    d_, a_ = block_macs(n, D_base)
    d2, a2 = block_macs(2 * n, D_base)
    assert d2 == 2 * d_ and a2 == 4 * a_
    assert 2 < (d2 + a2) / (d_ + a_) < 4  # superlinear, below quadratic
    print(f"N={n:6d}: attention is {a_ / (d_ + a_):5.1%} of a ViT-B block; doubling N costs "
          f"{(d2 + a2) / (d_ + a_):.2f}x")
crossover = next(n for n in range(1, 10 * D_base) if block_macs(n, D_base)[1] >= block_macs(n, D_base)[0])
assert crossover == 6 * D_base
assert 1 + (224 // 16) ** 2 == 197 and (256 * 256) ** 2 == 4_294_967_296
print("attention costs as much as the rest at N =", crossover, "= 6 D")

# %% [markdown]
# Now measure the attention kernel itself (the default, `kernels.get("attention")`) at growing
# N, with the project's benchmark harness (`kernels.bench.time_impl`). Time per N^2 should
# settle once N is large enough for the quadratic work to dominate the call's fixed costs; on a
# shared machine the numbers are noisy, so they are printed, not asserted. Then the same for a
# whole small model against image size (App. D.5, Fig. 12): time per image follows the FLOP
# count once the inputs are large; small inputs leave fixed per-call costs (Python, one kernel
# call per op) visible, so the achieved GFLOP/s rises with the input size.

# %%
impl = kernels.get("attention")
Ns = (64, 128, 256, 512, 1024)
times = []
for n in Ns:
    inputs = bench.SPECS["attention"].make(dict(B=1, Hh=3, N=n, hd=64), np.float32, np.random.default_rng(0))
    times.append(bench.time_impl("attention", impl, inputs, repeat=3, budget_s=0.5).fwd_s)
print(f"attention forward, {impl.name}, B=1, Hh=3, hd=64:")
for n, t in zip(Ns, times):
    print(f"  N={n:5d}  {t * 1e3:8.3f} ms   {t / n**2 * 1e9:6.2f} ns per N^2")

# The same small ViT at 32, 64 and 96 pixels (65, 257 and 577 tokens).
res, speed, counted = (32, 64, 96), [], []
for r in res:
    model = minivit.ViT(**{**base, "img_size": r})
    speed.append(inference_throughput(model, batch_size=8, repeats=1))
    counted.append(2 * forward_macs(model.config))
assert counted[1] / counted[0] > (64 / 32) ** 2  # 4x the pixels, more than 4x the FLOPs
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
axes[0].loglog(Ns, [t * 1e3 for t in times], "o-", label="measured")
axes[0].loglog(Ns, [times[-1] * 1e3 * (n / Ns[-1]) ** 2 for n in Ns], ":", label="~ N^2")
axes[0].set(xlabel="tokens N", ylabel="ms", title="attention forward")
axes[0].legend(fontsize=8)
axes[1].plot(res, [1e3 / s for s in speed], "o-", label="measured ms / image")
axes[1].plot(res, [f / counted[0] * 1e3 / speed[0] for f in counted], ":", label="~ FLOPs (scaled to 32 px)")
axes[1].set(xlabel="image size (pixels)", ylabel="ms per image", yscale="log", title="small ViT inference")
axes[1].legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "compute_cost.png", dpi=90)
plt.close(fig)
for r, s, f in zip(res, speed, counted):
    print(f"{r:3d} px: {f / 1e6:8.1f} MFLOPs/img, {s:8.1f} img/s, {f * s / 1e9:6.2f} GFLOP/s")

# %% [markdown]
# ## What this means
#
# Cost follows the config: depth multiplies it, width multiplies the dense part by the square,
# and the sequence length (image size over patch size) multiplies it linearly until N reaches
# a few times D, then quadratically. Parameters are a poor proxy: halving the patch keeps them
# while multiplying the compute. The paper measures scaling in compute (Fig. 5, 8) for this
# reason. Notebook 11 looks at how the attention kernel timed above is written.
