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
# # 03 · Self-attention and multi-head attention
#
# **Goal.** Take apart the operation at the heart of the encoder (Sec. 3.1; Appendix A,
# Eq. 5-8), and prove with checks that:
#
# 1. attention written by hand in NumPy, softmax(q k^T / sqrt(hd)) v, equals minivit's fused
#    kernel, and the multi-head version (split into heads, attend, merge, project) equals
#    `minivit.vit.Attention`;
# 2. the 1/sqrt(hd) scale keeps the scores at unit variance whatever the head width, and
#    without it the softmax saturates;
# 3. attention does not know the order of its tokens: permuting the tokens permutes the outputs,
#    and a whole ViT without position embeddings gives the same logits for an image whose patches
#    were shuffled.
#
# Topics: T1, T3 (multi-head self-attention), T5 (why position embeddings are needed).
# Time: a few seconds.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import minivit
from kernels.reference.dense import patchify, unpatchify
from minivit import Tensor
from minivit import functional as F

OUT = Path(os.environ.get("MINIVIT_TUTORIAL_OUT", "runs/tutorials"))
OUT.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)

# %% [markdown]
# ## Scaled dot-product attention
#
# Appendix A of the paper: for a sequence z of N tokens of width D, three linear maps give
# queries, keys and values, [q, k, v] = z U_qkv; every query is compared with every key,
# A = softmax(q k^T / sqrt(D_h)), an N x N matrix whose rows sum to 1; and each output token
# is the A-weighted mean of the values, SA(z) = A v. The shape letters here: B batch,
# Hh heads, N tokens, hd the width of a head (D_h in the paper).
#
# **Exercise 1.** Write `attention(q, k, v)` for q, k, v of shape (..., N, hd): return the output
# (..., N, hd) and the weights A (..., N, N). Subtract each row's maximum before `np.exp` (the
# softmax does not change, and exp cannot overflow).

# %% tags=["solution"]
def attention(q, k, v):
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])  # (..., N, N)
    scores = scores - scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)  # rows sum to 1
    return weights @ v, weights  # (..., N, hd), (..., N, N)


# %%
B, Hh, N, hd = 2, 3, 10, 8
q, k, v = (rng.normal(size=(B, Hh, N, hd)).astype(np.float32) for _ in range(3))
out, weights = attention(q, k, v)
assert out.shape == (B, Hh, N, hd) and weights.shape == (B, Hh, N, N)
assert np.allclose(weights.sum(axis=-1), 1.0, atol=1e-6)
fused = F.scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v)).numpy()  # minivit's default kernel
assert np.allclose(out, fused, atol=1e-5)
print("hand-written attention == minivit's fused attention kernel")

# %% [markdown]
# ## Why divide by sqrt(hd)
#
# If the entries of a query and a key are independent with mean 0 and variance 1, their dot
# product is a sum of hd such products, so its variance is hd. Wide heads would give the
# softmax ever larger logits, and a softmax of large logits is nearly one-hot: one key takes
# all the weight and the gradient through the other weights vanishes. Dividing by sqrt(hd)
# brings the variance back to 1 for every head width. We measure both: the variance of the
# scores, then, for 64 tokens with random queries and keys, the largest weight in each row of A
# (1/64 would be uniform, 1 one-hot) and the mean size of the gradient that flows back through
# the softmax.

# %%
variances = {}
for width in (16, 64, 256):
    qs, ks = rng.normal(size=(2, 20_000, width))
    dots = (qs * ks).sum(axis=1)  # 20,000 dot products
    variances[width] = (dots.var(), (dots / np.sqrt(width)).var())
    print(f"hd = {width:3d}: var(q.k) = {variances[width][0]:7.1f}   var(q.k / sqrt(hd)) = {variances[width][1]:.3f}")
    assert abs(variances[width][0] / width - 1) < 0.05  # variance hd, within 5%
    assert abs(variances[width][1] - 1) < 0.05  # scaled: variance 1


def peakiness(width, scaled, n=64, trials=50):
    """Mean largest attention weight per row, and the mean size of the gradient through the
    softmax, for random q, k of head width `width` and n tokens."""
    qs, ks = rng.normal(size=(2, trials, n, width))
    logits = qs @ np.swapaxes(ks, -1, -2) / (np.sqrt(width) if scaled else 1.0)  # (trials, n, n)
    t = Tensor(logits, requires_grad=True)
    F.softmax(t).backward(rng.normal(size=logits.shape))
    return F.softmax(Tensor(logits)).numpy().max(axis=-1).mean(), np.abs(t.grad).mean()


widths = [4, 16, 64, 256]
peaks = {s: [peakiness(w, s) for w in widths] for s in (False, True)}
for w, (p0, g0), (p1, g1) in zip(widths, peaks[False], peaks[True]):
    print(f"hd = {w:3d}: largest weight unscaled {p0:.2f}, scaled {p1:.2f};   "
          f"mean |gradient| through the softmax unscaled {g0:.1e}, scaled {g1:.1e}")
scaled_peaks = [p for p, _ in peaks[True]]
assert max(scaled_peaks) - min(scaled_peaks) < 0.05  # scaled: the same spread for every head width
assert peaks[False][-1][0] > 0.8  # hd = 256 unscaled: most rows nearly one-hot
assert peaks[True][-1][0] < 0.2  # scaled: the weight stays spread out
assert peaks[True][-1][1] > 3 * peaks[False][-1][1]  # and several times more gradient flows

fig, ax = plt.subplots(figsize=(5, 3.2))
for s, style in ((False, "o--"), (True, "o-")):
    ax.plot(widths, [p for p, _ in peaks[s]], style, label="q.k / sqrt(hd)" if s else "q.k (unscaled)")
ax.axhline(1 / 64, color="grey", lw=0.8, ls=":", label="uniform (1/N)")
ax.set(xscale="log", xlabel="head width hd", ylabel="mean largest weight in a row", ylim=(0, 1.05),
       title="softmax saturation, N = 64 tokens")
ax.legend()
fig.savefig(OUT / "03_attention_scale.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## Multi-head attention
#
# Eq. 8 of Appendix A: run Hh attentions side by side, each on its own hd = D / Hh slice of the
# projected queries, keys and values, concatenate their outputs and project with U_msa (D x D).
# minivit's `Attention` (minivit/vit.py) does it with one (3D, D) matrix `qkv.weight` and
# reshapes:
#
#     qkv = x @ qkv.weight.T + qkv.bias                        # (B, N, 3D)
#     qkv = qkv.reshape(B, N, 3, Hh, hd).transpose(2, 0, 3, 1, 4)   # (3, B, Hh, N, hd)
#     q, k, v = qkv                                            # (B, Hh, N, hd) each
#     y = attention(q, k, v)                                   # (B, Hh, N, hd)
#     y = y.transpose(0, 2, 1, 3).reshape(B, N, D)             # (B, N, D): heads side by side
#     y = y @ proj.weight.T + proj.bias
#
# **Exercise 2.** Write `multi_head_attention(x, attn)` in NumPy from the weights of a minivit
# `Attention` module `attn` (`attn.qkv.weight.data`, ..., `attn.num_heads`), using your
# `attention`. Return the output (B, N, D) and the weights (B, Hh, N, N).

# %% tags=["solution"]
def multi_head_attention(x, attn):
    B, N, D = x.shape
    Hh = attn.num_heads
    hd = D // Hh
    qkv = x @ attn.qkv.weight.data.T + attn.qkv.bias.data  # (B, N, 3D)
    q, k, v = qkv.reshape(B, N, 3, Hh, hd).transpose(2, 0, 3, 1, 4)  # (B, Hh, N, hd) each
    y, weights = attention(q, k, v)  # (B, Hh, N, hd), (B, Hh, N, N)
    y = y.transpose(0, 2, 1, 3).reshape(B, N, D)  # (B, N, D)
    return y @ attn.proj.weight.data.T + attn.proj.bias.data, weights


# %%
minivit.manual_seed(0)
cfg = minivit.ViTConfig(img_size=32, patch_size=8, embed_dim=24, depth=1, num_heads=3, num_classes=10)
attn = minivit.vit.Attention(cfg, np.float32)
attn.qkv.bias.data[:] = rng.normal(size=attn.qkv.bias.shape)  # non-zero biases, so the check covers them
attn.proj.bias.data[:] = rng.normal(size=attn.proj.bias.shape)
x = rng.normal(size=(2, 17, 24)).astype(np.float32)  # (B, N, D)

by_hand, hand_weights = multi_head_attention(x, attn)
d = {}
with minivit.no_grad():
    fused = attn(Tensor(x)).numpy()  # the fused kernel path
    composed = attn(Tensor(x), out=d).numpy()  # asking for the weights runs the composed path
assert np.allclose(by_hand, fused, atol=1e-5) and np.allclose(by_hand, composed, atol=1e-5)
assert hand_weights.shape == d["attention"][0].shape == (2, 3, 17, 17)
assert np.allclose(hand_weights, d["attention"][0], atol=1e-5)
print("hand-written multi-head attention == minivit.vit.Attention (fused and composed paths)")

# %% [markdown]
# ## Attention does not know the order of its tokens
#
# Nothing in softmax(q k^T / sqrt(hd)) v refers to a token's position: permute the rows of x and
# q, k, v, the rows and columns of A, and the output rows are permuted the same way. LayerNorm
# and the MLP act on each token separately, so a whole Transformer block is *permutation
# equivariant* too. We check both with a random permutation.

# %%
perm = rng.permutation(17)
with minivit.no_grad():
    assert np.allclose(attn(Tensor(x[:, perm])).numpy(), fused[:, perm], atol=1e-5)
    block = minivit.vit.Block(cfg, np.float32)
    z = block(Tensor(x)).numpy()
    assert np.allclose(block(Tensor(x[:, perm])).numpy(), z[:, perm], atol=1e-5)
print("attention and a whole block: permuting the tokens permutes the outputs")

# %% [markdown]
# So a ViT without position embeddings sees its image as a *bag of patches*. Take a model with
# `pos_embed="none"` whose output pools the patch tokens by their mean (average pooling, no
# class token; a class token does as well, since it attends to all patches alike), cut an image
# into patches, shuffle them and sew them back together: the scrambled image gets the same
# logits, up to float32 rounding. With the paper's learned 1D position embedding the tokens that
# enter the encoder are no longer a permutation of each other (each patch now carries the
# embedding of the place it landed in), and the logits change. This is why the paper adds
# position embeddings (Eq. 1, Appendix D.4; notebook 06 compares the kinds).

# %%
def scramble(images, P, perm):
    """Images (B, C, H, W) with their P x P patches shuffled by `perm`."""
    return unpatchify(patchify(images, P)[:, perm], images.shape, P)


images = rng.normal(size=(4, 3, 32, 32)).astype(np.float32)  # (B, C, H, W)
patch_perm = rng.permutation(16)  # 32/8 = 4 x 4 patches
scrambled = scramble(images, 8, patch_perm)
assert not np.allclose(scrambled, images)

change, z0 = {}, {}
for kind, pool, cls in [("none", "avg", False), ("none", "token", True), ("learn", "avg", False)]:
    minivit.manual_seed(0)
    model = minivit.ViT(img_size=32, patch_size=8, embed_dim=24, depth=2, num_heads=3, num_classes=10,
                        pos_embed=kind, global_pool=pool, class_token=cls)
    model.head.weight.data[:] = rng.normal(size=model.head.weight.shape)  # the head starts at zero
    d_orig, d_scr = {}, {}
    with minivit.no_grad():
        a, b = model(images, out=d_orig).numpy(), model(scrambled, out=d_scr).numpy()
    change[kind, pool] = np.abs(a - b).max()
    z0[kind, pool] = d_orig["with_posemb"], d_scr["with_posemb"]  # (B, N, D): z_0 of Eq. 1
    print(f"pos_embed={kind!r:8s} pool={pool!r:8s}: largest logit change after shuffling the patches "
          f"{change[kind, pool]:.1e} (logits up to {np.abs(a).max():.1f})")
# Without position embeddings z_0 of the scrambled image is z_0 of the original, permuted ...
assert np.allclose(z0["none", "avg"][1], z0["none", "avg"][0][:, patch_perm], atol=1e-6)
# ... and the logits agree up to rounding, with either pooling.
assert change["none", "avg"] < 1e-4 and change["none", "token"] < 1e-4
# With a learned position embedding z_0 is no longer a permutation, and the logits change:
assert not np.allclose(z0["learn", "avg"][1], z0["learn", "avg"][0][:, patch_perm], atol=1e-3)
assert change["learn", "avg"] > 100 * change["none", "avg"]

# %% [markdown]
# At initialisation the change is small: the position embeddings start at std 0.02 and random
# attention is nearly uniform, so a fresh model is still close to a bag of patches. Training is
# what makes the model use positions, and notebook 07 shows what the learned embeddings encode.

# %% [markdown]
# ## The cost
#
# The weights A are an N x N matrix per head and image, so attention costs O(N^2 hd) per head
# in time and, if A is kept, O(N^2) in memory: the quadratic cost of notebook 01 (topic T1).
# minivit's default CPU kernel is flash-style: it never forms A during training and keeps only
# each row's log-sum-exp for the backward (kernels/cpu/attention.py). Notebook 10 measures
# where the quadratic term starts to show; notebook 11 swaps and times the kernels.
#
# Next: **04 · the encoder**, attention and MLP blocks stacked into the whole model.
