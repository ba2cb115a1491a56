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
# 2. why the scores are divided by sqrt(hd): you derive the variance of q . k as a function of
#    the head width hd, sampling confirms it, and without the scale the softmax saturates;
# 3. attention does not know the order of its tokens: permuting the tokens permutes the outputs,
#    and a whole ViT without position embeddings gives the same logits, to float precision, for
#    an image whose patches were shuffled, while with position embeddings its tokens change
#    completely.
#
# Topics: T1, T3 (multi-head self-attention), T5 (why position embeddings are needed).
# Time: a few seconds.

# %%
import numpy as np

import minivit
from kernels.reference.dense import patchify, unpatchify
from minivit import Tensor
from minivit import functional as F
from minivit.analysis.plots import Figure

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
# The softmax turns each row of scores into weights. If the scores are large, the softmax is
# nearly one-hot: one key takes all the weight, and the gradient through the other weights
# vanishes. So how large are the scores q . k of random queries and keys, and how does that
# depend on the head width hd?
#
# **Exercise 2.** Let q and k have hd entries each, all independent, with mean 0; the entries of
# q have variance var_q, those of k variance var_k. Derive the variance of q . k = sum_i q_i k_i
# as a function of hd, var_q and var_k, and write it as `qk_variance(hd, var_q, var_k)` (a closed
# form, no sampling). Then write `attention_scale(hd)`: the factor by which to multiply q . k so
# that the scores have variance 1 when var_q = var_k = 1 (the paper's 1/sqrt(D_h) should follow
# from your variance). Start from two facts: the variance of a
# sum of independent terms is the sum of their variances, and Var(X) = E[X^2] - E[X]^2; use the
# independence of q_i and k_i for the variance of one product.
#
# The check draws 40,000 pairs (q, k) for several head widths and variances and compares the
# sampled variances with your formula, then runs minivit's attention kernel with your scale.

# %% tags=["solution"]
def qk_variance(hd, var_q=1.0, var_k=1.0):
    return hd * var_q * var_k


def attention_scale(hd):
    return 1.0 / np.sqrt(hd)


# %%
for width in (1, 4, 16, 64):
    for var_q, var_k in ((1.0, 1.0), (2.0, 3.0)):
        qs = rng.normal(scale=np.sqrt(var_q), size=(40_000, width))
        ks = rng.normal(scale=np.sqrt(var_k), size=(40_000, width))
        dots = (qs * ks).sum(axis=1)  # 40,000 samples of q . k
        sampled, formula = dots.var(), qk_variance(width, var_q, var_k)
        print(f"hd = {width:2d}, var_q = {var_q}, var_k = {var_k}: sampled variance {sampled:7.2f}, "
              f"your formula {formula:7.2f}")
        assert abs(sampled / formula - 1) < 0.06  # within 6%: the sampling error is about 1%
        if var_q == var_k == 1.0:
            assert abs((dots * attention_scale(width)).var() - 1) < 0.06
# minivit's attention with your scale is minivit's attention with its own default scale:
q, k, v = (Tensor(rng.normal(size=(1, 2, 6, 16)).astype(np.float32)) for _ in range(3))
assert np.allclose(F.scaled_dot_product_attention(q, k, v, scale=attention_scale(16)).numpy(),
                   F.scaled_dot_product_attention(q, k, v).numpy(), atol=1e-6)

# %% [markdown]
# **Predict, then run.** Take N = 64 tokens with random queries and keys of unit variance.
# Predict, for head widths 4, 16, 64 and 256, the mean largest weight in a row of A (1/64 would
# be uniform, 1 one-hot), without the scale and with it; and whether more or less gradient flows
# back through the softmax without the scale.

# %%
def peakiness(width, scaled, n=64, trials=50):
    """Mean largest attention weight per row, and the mean size of the gradient through the
    softmax, for random q, k of head width `width` and n tokens."""
    qs, ks = rng.normal(size=(2, trials, n, width))
    logits = qs @ np.swapaxes(ks, -1, -2) * (attention_scale(width) if scaled else 1.0)  # (trials, n, n)
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

fig = Figure(figsize=(5, 3.2))
ax = fig.add_subplot()
for s, style in ((False, "o--"), (True, "o-")):
    ax.plot(widths, [p for p, _ in peaks[s]], style, label="q.k / sqrt(hd)" if s else "q.k (unscaled)")
ax.axhline(1 / 64, color="grey", lw=0.8, ls=":", label="uniform (1/N)")
ax.set(xscale="log", xlabel="head width hd", ylabel="mean largest weight in a row", ylim=(0, 1.05),
       title="softmax saturation, N = 64 tokens")
ax.legend()
fig

# %% [markdown]
# ## Multi-head attention
#
# Eq. 8 of Appendix A: run Hh attentions side by side, each on its own hd = D / Hh slice of the
# projected queries, keys and values, concatenate their outputs and project with U_msa (D x D).
# minivit's `Attention` (minivit/vit.py) holds the three projections of all heads in one linear
# layer, `qkv` (weight (3D, D), bias (3D,)), and U_msa in `proj` (weight (D, D), bias (D,));
# both act as x @ weight.T + bias. The 3D outputs of `qkv` for a token are ordered
# (q, k or v; head; position within the head): the first D are the queries of heads 0, 1, ...,
# hd numbers each, then the keys, then the values. Heads are merged back by putting their
# outputs side by side, head 0 first, before `proj`.
#
# **Exercise 3.** Write `multi_head_attention(x, attn)` in NumPy from the weights of a minivit
# `Attention` module `attn` (`attn.qkv.weight.data`, `attn.qkv.bias.data`, `attn.proj...`,
# `attn.num_heads`), using your `attention`, for x of shape (B, N, D). Return the output
# (B, N, D) and the weights (B, Hh, N, N). Mind which axes a reshape may merge: the heads must
# be split from the feature axis and merged back into it, never mixed with the tokens.

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
# `pos_embed="none"`, cut an image into patches, shuffle them and sew them back together: the
# encoder's output tokens are the original ones, shuffled the same way, and whatever pools them
# (the mean of the patch tokens, or a class token, which attends to all patches alike) gives the
# same logits. With the paper's learned 1D position embedding E_pos (Eq. 1), each patch token
# gets the embedding of the place where it lands, so the tokens that enter the encoder are no
# longer a permutation of the original ones. To see the effect clearly we give E_pos entries of
# standard deviation 1, the size of the patch tokens here, instead of its initial 0.02.
#
# **Predict, then run.** For each of the three models below (no position embedding with mean
# pooling, none with a class token, learned with mean pooling), predict how much shuffling the
# patches changes (a) the encoder's output tokens, once put back in the original order, and
# (b) the logits, both relative to their size: about float32 precision (1e-7), a few percent,
# or the size of the values themselves?

# %%
def scramble(images, P, perm):
    """Images (B, C, H, W) with their P x P patches shuffled by `perm`."""
    return unpatchify(patchify(images, P)[:, perm], images.shape, P)


def relative_change(a, b):
    return float(np.abs(a - b).max() / np.abs(a).max())


images = rng.normal(size=(4, 3, 32, 32)).astype(np.float32)  # (B, C, H, W)
patch_perm = rng.permutation(16)  # 32/8 = 4 x 4 patches
scrambled = scramble(images, 8, patch_perm)
assert not np.allclose(scrambled, images)

tokens_change, logits_change, z0 = {}, {}, {}
for kind, pool in [("none", "avg"), ("none", "token"), ("learn", "avg")]:
    minivit.manual_seed(0)
    model = minivit.ViT(img_size=32, patch_size=8, embed_dim=24, depth=2, num_heads=3, num_classes=10,
                        pos_embed=kind, global_pool=pool, class_token=pool == "token")
    model.head.weight.data[:] = rng.normal(size=model.head.weight.shape)  # the head starts at zero
    if kind == "learn":
        model.pos_embed.data[:] = rng.normal(size=model.pos_embed.shape)  # std 1 instead of 0.02
    d_orig, d_scr = {}, {}
    with minivit.no_grad():
        a, b = model(images, out=d_orig).numpy(), model(scrambled, out=d_scr).numpy()
    prefix = 1 if pool == "token" else 0  # the class token stays in front
    unshuffled = d_orig["encoded"][:, prefix:][:, patch_perm]  # (B, Np, D): the original tokens, shuffled
    tokens_change[kind, pool] = relative_change(unshuffled, d_scr["encoded"][:, prefix:])
    logits_change[kind, pool] = relative_change(a, b)
    z0[kind, pool] = d_orig["with_posemb"][:, prefix:], d_scr["with_posemb"][:, prefix:]  # z_0 of Eq. 1
    print(f"pos_embed={kind!r:8s} pool={pool!r:8s}: relative change of the output tokens "
          f"{tokens_change[kind, pool]:.1e}, of the logits {logits_change[kind, pool]:.1e}")
# Without position embeddings z_0 of the scrambled image is z_0 of the original, permuted ...
assert np.allclose(z0["none", "avg"][1], z0["none", "avg"][0][:, patch_perm], atol=1e-6)
# ... and so are the output tokens, and the logits agree, to float32 precision, with either pooling:
assert max(tokens_change["none", "avg"], tokens_change["none", "token"]) < 1e-5
assert max(logits_change["none", "avg"], logits_change["none", "token"]) < 1e-5
# With the position embedding, the output tokens change by as much as their own size,
assert tokens_change["learn", "avg"] > 0.3
# and the logits by far more than float precision:
assert logits_change["learn", "avg"] > 1000 * logits_change["none", "avg"]

# %% [markdown]
# The logits change much less than the tokens. Mean pooling adds the tokens up, and a fresh
# model is close to linear in its tokens: its blocks add small corrections to the residual
# stream, so the sum of the tokens hardly depends on which position each patch received.
# Training makes the blocks' contributions large and position-dependent, and notebook 06 trains
# models with and without position embeddings on a task that only position can solve.

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
