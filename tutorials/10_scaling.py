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
#    actually perform, counted by wrapping them (exactly, for every config tried);
# 2. what doubling depth, doubling width or halving the patch does to the count and to the
#    parameters (a smaller patch: many more FLOPs, almost no parameters);
# 3. attention's count grows with the square of the number of tokens N and the rest linearly:
#    you derive the sequence length at which attention's part overtakes the rest (Exercise 2),
#    and see where the paper's models sit at 224 and 384 pixels.
#
# Times are measured and printed, never asserted: this machine is shared.
#
# Topics (see tutorials/README.md): T1 (the quadratic cost), T14-T15 (what to scale), T17
# (compute cost). Time: about 10 s on 2 idle cores.

# %%
import kernels
import numpy as np

import minivit
from kernels import bench
from minivit.analysis import plots
from minivit.analysis.throughput import inference_throughput

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
# from a `ViTConfig` (`img_size` H, `patch_size` P, `in_chans` C, `embed_dim` D, `depth` L,
# `mlp_ratio`, `class_token`, `num_classes` K). Start from one rule: multiplying an (n, a) matrix
# by an (a, b) matrix costs n a b multiply-adds. Then go through the products of a forward pass
# (Eq. 1-4): the patch embedding (Np = (H/P)^2 patches of C P^2 numbers each, projected to D);
# in each block, for N tokens (the patches and the class token), the qkv projection, the scores
# q k^T and the weighted sum of the values (count all heads together: Hh heads of width
# hd = D / Hh), the output projection, and the MLP's two layers (hidden width mlp_ratio * D);
# finally the head on the class token. LayerNorm, softmax, GELU and the additions are not
# products and are not counted. The check compares with the kernels' tallies, exactly.

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
# Start from a small CIFAR-sized model and change one dimension at a time. App. D.2 does this
# for a ViT of 8 layers, D = 1024 and patch 32: scaling the depth gives the biggest improvements,
# scaling the width the smallest, and decreasing the patch size (a longer sequence) "shows
# surprisingly robust improvements without introducing parameters"; the paper concludes that
# compute might be a better predictor of performance than the number of parameters. The table
# shows why these are different axes of cost.
#
# **Predict, then run.** Halving the patch from 4 to 2 on 32 x 32 images gives 4x the patches.
# About how many times the FLOPs will that cost, and how many more parameters? And doubling the
# width (96 -> 192)?

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
    _, by_op = counted_macs(model)  # the kernels' tally, per op, for a batch of 2
    cfg = model.config
    rows[name] = dict(tokens=model.num_tokens, params=model.num_parameters(), flops=flops, speed=speed,
                      dense=by_op["linear"] // 2 - cfg.embed_dim * cfg.num_classes,  # the blocks' linears
                      attention=by_op["attention"] // 2)  # q k^T and the weighted sum of v, all blocks
    print(f"{name:10s} {model.num_tokens:6d} {model.num_parameters():10,d} {flops / 1e6:11.1f} {speed:8.1f}")

# %% [markdown]
# What the counts say, checked on the kernels' own tally, split into the blocks' dense products
# (the `linear` kernel: qkv, output projection, MLP) and attention's two products. Doubling the
# depth doubles both (and the parameters). Doubling the width quadruples the dense products but
# only doubles attention's part (it is N^2 D). Halving the patch makes 4x the patches (257
# tokens instead of 65, with the class token): the dense products cost 257/65 times as much,
# attention (257/65)^2 times; the parameters change only in the patch projection (4x fewer
# weights) and the position table (4x more rows), a rounding error next to the blocks.

# %%
C, D = 3, base["embed_dim"]
b, N, N2 = rows["base"], rows["base"]["tokens"], rows["patch / 2"]["tokens"]
assert (rows["depth x2"]["dense"], rows["depth x2"]["attention"]) == (2 * b["dense"], 2 * b["attention"])
assert (rows["width x2"]["dense"], rows["width x2"]["attention"]) == (4 * b["dense"], 2 * b["attention"])
assert rows["patch / 2"]["dense"] * N == b["dense"] * N2  # linear in the tokens
assert rows["patch / 2"]["attention"] * N**2 == b["attention"] * N2**2  # quadratic in the tokens
extra = rows["patch / 2"]["params"] - b["params"]
assert extra == C * D * (2 * 2 - 4 * 4) + (N2 - N) * D  # patch projection and position table only
print(f"patch 4 -> 2: {rows['patch / 2']['flops'] / b['flops']:.1f}x the FLOPs, "
      f"{extra / b['params']:+.1%} parameters; width x2: {rows['width x2']['flops'] / b['flops']:.1f}x the FLOPs, "
      f"{rows['width x2']['params'] / b['params']:.1f}x the parameters")

# %% [markdown]
# ## The quadratic cost of attention (T1, App. D.5)
#
# Sort Exercise 1's per-block terms into two groups: the dense products (qkv, the output
# projection, the MLP's two layers), each N tokens through a weight matrix, so proportional to
# N D^2; and attention's two products (q k^T and the weighted sum of v), proportional to N^2 D.
# Double the tokens: the first group doubles, the second quadruples. So there is a sequence
# length N* at which attention costs a block as much as its dense products; beyond it,
# attention dominates.
#
# **Exercise 2.** Derive N* as a function of the width D and the MLP ratio r (hidden width
# Dm = r D), starting from the per-block multiply-adds of Exercise 1: set the two groups equal
# and solve for N. Write `crossover_tokens(D, mlp_ratio)`.
#
# The check searches for the crossover numerically, with the counting kernels: it runs models
# of one block on g x g images cut into 1-pixel patches (g^2 + 1 tokens), for g = 1, 2, 3, ...,
# until the attention kernel's tally reaches the dense layers' tally, and your N* must lie
# between the last two token counts. It also checks, for every model it ran, that the tallies'
# ratio attention / dense equals N / N*, which your formula implies; and it tries three
# widths and MLP ratios.

# %% tags=["solution"]
def crossover_tokens(D, mlp_ratio=4.0):
    """N* at which one block's attention products cost as much as its dense products."""
    dense_per_token = (3 + 1 + 2 * mlp_ratio) * D * D  # qkv, output projection, the MLP's two layers
    attention_per_token_pair = 2 * D  # q k^T and the weighted sum of v
    return dense_per_token / attention_per_token_pair


# %%
def counted_block(D, mlp_ratio, g):
    """(tokens, dense, attention): the kernels' multiply-adds of one block on one g x g image
    with 1-pixel patches, no head (so `linear` counts only the block's dense layers)."""
    model = minivit.ViT(img_size=g, patch_size=1, embed_dim=D, depth=1, num_heads=2, mlp_ratio=mlp_ratio,
                        num_classes=0)
    _, by_op = counted_macs(model, batch=1)
    return model.num_tokens, by_op["linear"], by_op["attention"]


for D_, r in ((16, 4.0), (32, 2.0), (24, 3.0)):
    n_star = crossover_tokens(D_, r)
    below = above = None
    for g in range(1, 40):
        n, dense, att = counted_block(D_, r, g)
        assert np.isclose(att / dense, n / n_star, rtol=1e-9, atol=0), (D_, r, n, att / dense, n / n_star)
        if att >= dense:
            above = n
            break
        below = n
    assert below is not None and above is not None and below < n_star <= above, (D_, r, below, n_star, above)
    print(f"D={D_:3d}, r={r}: attention's tally first reaches the dense tally between N={below} and N={above}; "
          f"N* = {n_star:g}")

# %% [markdown]
# ## Where the paper's models sit
#
# With N* in hand, attention's share of a block is N / (N + N*) (divide both groups by the dense
# one). The paper's models are ViT-B, L and H (D = 768, 1024, 1280, MLP ratio 4, Table 1),
# pre-trained at 224 pixels (App. B.1) and fine-tuned at 384 (App. B.1.1). At patch 16 that is
# 196 + 1 = 197 tokens and 576 + 1 = 577 tokens. (H/14, the paper's patch for H, has 257 tokens
# at 224.)
#
# **Predict, then run.** At 384 pixels, roughly what share of a block's multiply-adds is
# attention's N^2 part? Which of B, L and H spends the largest share on it?

# %%
def attention_share(cfg):
    """Attention's share of one block's multiply-adds for a config, read off forward_macs."""
    Np, D = (cfg.img_size // cfg.patch_size) ** 2, cfg.embed_dim
    per_block = (forward_macs(cfg) - Np * cfg.in_chans * cfg.patch_size**2 * D - D * cfg.num_classes) / cfg.depth
    n = Np + 1
    return 2 * n * n * D / per_block, n


shares = {}
print(f"{'model':7s} {'D':>5s} {'N*':>6s}   share of a block at 224 px (N) / 384 px (N) / 512 px (N)")
for size in ("base", "large", "huge"):
    line = []
    for px in (224, 384, 512):
        cfg = minivit.model_config(f"vit_{size}_patch16_224", img_size=px)
        share, n = attention_share(cfg)
        n_star = crossover_tokens(cfg.embed_dim, cfg.mlp_ratio)
        assert np.isclose(share, n / (n + n_star))  # the formula above, against the FLOP function
        shares[size, px] = share
        line.append(f"{share:5.1%} ({n})")
    print(f"{size:7s} {cfg.embed_dim:5d} {n_star:6.0f}   " + " / ".join(line))
assert all(shares[s, 384] < 0.12 and shares[s, 224] < 0.05 for s in ("base", "large", "huge"))
assert all(shares["base", px] > shares["large", px] > shares["huge", px] for px in (224, 384, 512))
assert all(shares[s, 512] < 0.2 for s in ("base", "large", "huge"))
assert crossover_tokens(768) > 7 * 577  # even ViT-B would need about 8x its 384-pixel sequence

# %% [markdown]
# So by the FLOP count the N^2 term never takes over for the paper's models: it would need N*
# tokens, thousands (4,608 for D = 768, 7,680 for D = 1,280), where the paper's sequences are
# 197 tokens at 224 pixels and 577 at 384. Attention is a few percent of a block at 224 pixels
# and about a tenth at 384; and its share is largest for the *narrowest* model, ViT-B, because
# N* grows with D. Even at 512 pixels, the largest input size in Fig. 12, it stays under a fifth.
#
# App. D.5 is about something else: measured speed. It times inference on a TPUv3 core across
# input sizes (Fig. 12, left), notes that real-world speed "is not always well predicted by
# theoretical FLOPs due to details like lane widths and cache sizes", and observes that "the
# theoretical bi-quadratic scaling of ViT with image size only barely starts happening for the
# largest models at the largest resolutions" (bi-quadratic: N grows with the square of the image
# side, attention with N^2, so with the side's fourth power). The FLOP count explains the
# "barely": at those sizes the N^2 term is still a small part of the work. It does not say
# which models show it first: by the formula alone, a narrower model would show it earlier; on
# real hardware, how well each model fills the chip decides.
#
# A block's cost grows faster than N at every length, but how much faster depends on N / N*:
# doubling N costs a little over 2x well below N*, exactly 3x at N*, and nearly 4x far beyond
# it. Far beyond is where the paper's introduction starts: a 256 x 256 image with one token per
# pixel has 65,536 tokens, (256 * 256)^2 = 4,294,967,296 scores per head and layer.

# %%
def doubling_cost(n, n_star):
    """How many times one block costs more at 2n tokens than at n: dense ~ n, attention ~ n^2 / n*."""
    return (2 * n + 4 * n * n / n_star) / (n + n * n / n_star)


n_star = crossover_tokens(768)
for n in (197, 577, 1024, 4608, 16384, 256 * 256):
    assert 2 < doubling_cost(n, n_star) < 4  # superlinear, below quadratic
    print(f"N={n:6d}: attention is {n / (n + n_star):5.1%} of a ViT-B block; doubling N costs "
          f"{doubling_cost(n, n_star):.2f}x")
assert np.isclose(doubling_cost(n_star, n_star), 3.0)
assert 256 * 256 / (256 * 256 + n_star) > 0.9  # on raw pixels attention is nearly all of a block

# %% [markdown]
# Now measure the attention kernel itself (the default, `kernels.get("attention")`) at growing
# N, with the project's benchmark harness (`kernels.bench.time_impl`), and then a whole small
# model against image size (App. D.5, Fig. 12). On a shared machine the numbers are noisy, so
# they are printed and plotted, not asserted.
#
# **Predict, then run.** (1) From N = 512 to N = 1024, by what factor should the attention
# kernel's time grow, and does time per N^2 settle? (2) Our small model has D = 96, so
# N* = 576: at 96 pixels (577 tokens) half of its blocks' work is attention. From 32 to 96
# pixels the FLOPs per image grow how many times, and will the measured time per image grow as
# much?

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
for r, s, f in zip(res, speed, counted):
    print(f"{r:3d} px: {f / 1e6:8.1f} MFLOPs/img, {s:8.1f} img/s, {f * s / 1e9:6.2f} GFLOP/s")

# %% [markdown]
# Left: the attention kernel's time against N, with a line of slope 2 (time proportional to N^2)
# through the last point. Right: the small model's time per image against image size, with the
# FLOP count scaled to the 32-pixel time. Where a measured curve leaves its line, something
# other than the FLOP count sets the time: fixed per-call costs (Python, one kernel call per op)
# at small sizes, memory traffic and cache sizes at large ones. That is App. D.5's point about
# real hardware, on a CPU; the GFLOP/s printed above show how well each size uses it.

# %%
fig = plots.Figure(figsize=(9, 3.2), layout="constrained")
axes = fig.subplots(1, 2)
axes[0].loglog(Ns, [t * 1e3 for t in times], "o-", label="measured")
axes[0].loglog(Ns, [times[-1] * 1e3 * (n / Ns[-1]) ** 2 for n in Ns], ":", label="~ N^2")
axes[0].set(xlabel="tokens N", ylabel="ms", title="attention forward")
axes[0].legend(fontsize=8)
axes[1].plot(res, [1e3 / s for s in speed], "o-", label="measured ms / image")
axes[1].plot(res, [f / counted[0] * 1e3 / speed[0] for f in counted], ":", label="~ FLOPs (scaled to 32 px)")
axes[1].set(xlabel="image size (pixels)", ylabel="ms per image", yscale="log", title="small ViT inference")
axes[1].legend(fontsize=8)
fig

# %% [markdown]
# ## What this means
#
# Cost follows the config: depth multiplies it, width multiplies the dense part by the square,
# and the sequence length (image size over patch size) multiplies it linearly until N nears
# N*, then quadratically. For the paper's models N* is in the thousands of tokens, so at their
# resolutions attention is a minority of the work; the quadratic cost that rules out raw pixels
# is what patches avoid. Parameters are a poor proxy for cost: halving the patch keeps them
# while multiplying the compute. App. D.2 suggests compute as the better predictor of
# performance, and Sec. 4.4 compares models by their pre-training compute (Fig. 5). Notebook 11
# looks at how the attention kernel timed above is written.
