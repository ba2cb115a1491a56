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
# # 06 · Position embeddings
#
# **Goal.** See what position embeddings are for, by building a task that *only* position can
# solve, and compare the variants of the paper's Appendix D.4 (Table 8) on it. With checks we
# prove that:
#
# 1. the 2D embedding, the paper's relative attention (an extra attention of each query against
#    embeddings of the 1-D offset between two patches) and "added at the input" or "before every
#    block" are what minivit computes: you rebuild each by hand (Exercises 1-3);
# 2. without a position embedding a ViT cannot beat chance on images that differ only by the
#    arrangement of their patches (whatever its weights: it is blind to patch order), while
#    models with one learn the task in 150 tiny steps;
# 3. the paper's relative attention starts much weaker than a learned 2D bias on the logits
#    (its position logits are a product of two small numbers at first), and on this short run
#    it learns the task for fewer seeds;
# 4. the fixed 2D sine-cosine table re-derived by hand is minivit's `posemb.sincos_2d`, its
#    cosine similarity depends only on the offset between two patches and falls with distance
#    along a row (for the first few steps).
#
# Topics (see tutorials/README.md): T5 (position embeddings), T8 (their similarity pattern).
# Time: about 8 s on 2 idle cores.

# %%
import os
from pathlib import Path

import numpy as np
from IPython.display import display

import minivit
from minivit import functional as F
from minivit import posemb
from minivit.analysis import plots
from minivit.analysis.measures import position_embedding_similarity
from minivit.autograd import Tensor, broadcast_to, concatenate

OUT = Path(os.environ.get("MINIVIT_TUTORIAL_OUT", "runs/tutorials")) / "06_position_embeddings"
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## The variants
#
# Eq. 1 adds E_pos, one D-vector per token, to the patch tokens: z_0 = [x_class; x_p E] + E_pos.
# The paper's Appendix D.4 compares how that position information is given; minivit's
# `pos_embed` option names each way:
#
# * `"none"`: nothing, the model sees a bag of patches;
# * `"learn"`: a learned vector per token in raster order (1D; the paper's default);
# * `"learn_2d"`: a learned X-embedding and a learned Y-embedding of D/2 each, concatenated;
# * `"relative_1d"`: the paper's relative variant. No vector is added to the tokens; instead
#   every block runs an extra attention of each query against learned embeddings of the 1-D
#   offset between the query's patch and the key's patch, and adds those logits to its own;
# * `"sincos"`: a fixed (never trained) 2D sine-cosine table, from later ViT work.
#
# minivit has one more, not from this paper: `"relative_bias_2d"`, a learned number per head and
# 2D offset (dy, dx) between two patches, added to the attention logits as it is (the relative
# position bias of the Swin Transformer, Liu et al. 2021). It differs from the paper's relative
# attention in two ways: its offsets are 2D, and its bias does not depend on the query.
#
# A learned absolute embedding can also enter at other places (`pos_embed_at`): once at the
# input (Eq. 1), a separate one before every block, or one shared embedding added before every
# block. The table below counts the parameters each adds, and checks the count against its
# formula.

# %%
S, P, D, L, Hh = 16, 4, 32, 2, 2  # image size, patch, width, blocks, heads
hd = D // Hh  # the width of one head
gh = gw = S // P  # a 4 x 4 grid of patches
Np = gh * gw
N = 1 + Np  # with a class token
base = dict(img_size=S, patch_size=P, embed_dim=D, depth=L, num_heads=Hh, num_classes=4, mlp_ratio=2.0)
expected = {  # extra parameters over pos_embed="none", from the shapes in posemb.py's docstring
    ("learn", "input"): N * D,
    ("learn", "every_block"): L * N * D,
    ("learn", "every_block_shared"): N * D,
    ("learn_2d", "input"): gw * D // 2 + gh * D // 2 + D,  # X, Y and the class token's own vector
    ("relative_1d", "input"): L * Hh * (2 * Np - 1 + 3) * hd,  # per block and head: an hd-vector per offset
    ("relative_bias_2d", "input"): L * Hh * ((2 * gh - 1) * (2 * gw - 1) + 3),  # a number per 2D offset
    ("sincos", "input"): 0,
}
n_none = minivit.ViT(**base, pos_embed="none").num_parameters()
print(f"{'pos_embed':17s} {'pos_embed_at':20s} {'extra params':>12s}")
for (kind, where), count in expected.items():
    model = minivit.ViT(**base, pos_embed=kind, pos_embed_at=where)
    extra = model.num_parameters() - n_none
    print(f"{kind:17s} {where:20s} {extra:12,d}")
    assert extra == count, (kind, where, extra, count)
assert {kind for kind, _ in expected} | {"none"} == set(posemb.KINDS)  # every kind minivit has

# %% [markdown]
# Both relative kinds have three entries more than their offsets: a class token has no place
# on the grid, so the pairs with it (class token to patch, patch to class token, class token to
# itself) get entries of their own.
#
# ## The 2D embedding by hand
#
# **Exercise 1.** The `learn_2d` kind stores X-embeddings `pos_embed_x` (1, gw, D/2) and
# Y-embeddings `pos_embed_y` (1, gh, D/2). Build its (Np, D) table for the patches by hand: patch
# (i, j) (row i, column j) gets [X_j ; Y_i], patches in raster order. The model's own table,
# `position_embedding()`, has the class token's vector in front.

# %%
minivit.manual_seed(0)
two_d = minivit.ViT(**base, pos_embed="learn_2d")
X = two_d.pos_embed_x.data[0]  # (gw, D/2)
Y = two_d.pos_embed_y.data[0]  # (gh, D/2)

# %% tags=["solution"]
table_2d = np.concatenate([X[np.arange(Np) % gw],  # patch p (raster order) sits in column p % gw
                           Y[np.arange(Np) // gw]], axis=1)  # and in row p // gw: (Np, D)

# %%
assert table_2d.shape == (Np, D)
assert np.allclose(table_2d, two_d.position_embedding()[1:])  # the class token's row comes first
# Patches in the same row share their Y half exactly: a 2D embedding has the grid built in.
assert np.allclose(table_2d[0, D // 2:], table_2d[gw - 1, D // 2:])
print("learn_2d table by hand == the model's")

# %% [markdown]
# ## The paper's relative attention
#
# Appendix D.4 describes it in words: "we use 1-dimensional Relative Attention, in which we
# define the relative distance all possible pairs of patches. Thus, for every given pair (one as
# query, and the other as key/value in the attention mechanism), we have an offset p_q − p_k,
# where each offset is associated with an embedding. Then, we simply run extra attention, where
# we use the original query (the content of query), but use relative positional embeddings as
# keys. We then use the logits from the relative attention as a bias term and add it to the
# logits of the main attention (content-based attention) before applying the softmax."
#
# The paper leaves some choices open; minivit's `"relative_1d"` makes them so:
#
# * p is a patch's place in raster order, p = row * gw + column, so the offsets p_q - p_k of a
#   gh x gw grid run from -(Np - 1) to Np - 1: 2Np - 1 of them;
# * the embeddings play the keys, and keys live in the heads, so every head has its own
#   embedding of hd numbers per offset, and every block its own table: `rel_pos_embed`
#   (L, Hh, R, hd). In the table of one block and head, row 0 holds offset -(Np - 1) and the
#   rows go up one offset at a time to row 2Np - 2, offset Np - 1; then come three rows for the
#   pairs with the class token: class token to a patch, a patch to the class token, the class
#   token to itself;
# * the relative logits are scaled by 1/sqrt(hd), as the content logits are.
#
# To see the relative part at work we give a fresh model random weights, its table of std 1 (a
# fresh table has std 0.02, and its logits would hardly move the attention), and compute block
# 0's queries and keys from what enters that block, as the block does: LayerNorm, then the qkv
# projection, split into heads.

# %%
rng = np.random.default_rng(0)
rel = minivit.ViT(**base, pos_embed="relative_1d", dtype=np.float64)
for p in rel.parameters():
    p.data = rng.normal(0.0, 0.3, p.shape)
rel.rel_pos_embed.data = rng.normal(0.0, 1.0, rel.rel_pos_embed.shape)  # (L, Hh, 2Np - 1 + 3, hd)
x_random = rng.standard_normal((2, 3, S, S))
out = {}
with minivit.no_grad():
    rel(x_random, out=out)  # out["attention"]: block by block, (B, Hh, N, N) weights
    block = rel.blocks[0]
    z = block.norm1(Tensor(out["with_posemb"]))  # (B, N, D): what attention reads in block 0
    qkv = block.attn.qkv(z).numpy().reshape(2, N, 3, Hh, hd).transpose(2, 0, 3, 1, 4)  # (3, B, Hh, N, hd)
q, k = qkv[0, 0], qkv[1, 0]  # image 0: (Hh, N, hd) each, the class token first
weights = out["attention"][0][0]  # (Hh, N, N): the model's attention weights, block 0, image 0


def softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


content = q @ k.transpose(0, 2, 1) / np.sqrt(hd)  # (Hh, N, N): the content logits q . k / sqrt(hd)
assert np.abs(softmax(content) - weights).max() > 0.05  # the content logits alone are not the model's
print(f"table of block 0: {rel.rel_pos_embed.data[0].shape} (Hh, R, hd); the attention differs from "
      f"content-only attention by up to {np.abs(softmax(content) - weights).max():.2f}")

# %% [markdown]
# **Exercise 2.** Write `relative_logits(q, r, Np)`: for one head, with q (N, hd) its queries
# (token 0 the class token, token t >= 1 patch p = t - 1) and r (2Np + 2, hd) its table, return
# the (N, N) relative logits, entry (i, j) the query of token i against the embedding of the
# pair (i, j). Start from the offset p_q - p_k of two patches and ask which row of r holds it;
# then the pairs with the class token. The check adds your logits to the content logits and
# compares the softmax with the model's attention weights, in every head.

# %% tags=["solution"]
def relative_logits(q, r, Np):
    N, hd = q.shape
    p = np.arange(N) - 1  # each token's place in raster order (the class token's -1 is not used)
    row = p[:, None] - p[None, :] + Np - 1  # (N, N): the offset p_q - p_k, shifted to rows 0 .. 2Np - 2
    row[0, 1:], row[1:, 0], row[0, 0] = 2 * Np - 1, 2 * Np, 2 * Np + 1  # pairs with the class token
    return np.einsum("id,ijd->ij", q, r[row]) / np.sqrt(hd)  # q_i . r[row[i, j]], scaled as q . k is


# %%
for h in range(Hh):
    by_hand = softmax(content[h] + relative_logits(q[h], rel.rel_pos_embed.data[0, h], Np))
    assert by_hand.shape == (N, N)
    assert np.allclose(by_hand, weights[h], rtol=0, atol=1e-9), f"head {h}"
print("content logits + relative logits by hand, softmaxed == the model's attention, every head")

# %% [markdown]
# ## Where the embedding enters
#
# The paper also tried the learned embeddings at other places (App. D.4): added to the inputs
# once, after the stem (the default, Eq. 1); a separate learned embedding added to the inputs of
# every block; and one learned embedding, shared, added to the inputs of every block. In minivit
# these are `pos_embed_at="input"`, `"every_block"` (`pos_embed` is then (L, N, D), one (N, D)
# per block) and `"every_block_shared"` (`pos_embed` (1, N, D)).
#
# **Exercise 3.** Write `forward_by_hand(model, x)`: the logits of a ViT with a learned
# embedding (`pos_embed="learn"`) and a class token, for any of the three places
# (`model.config.pos_embed_at`), as a NumPy array, from the model's pieces: `model.patch_embed`
# (images to (B, Np, D) tokens), `model.cls_token` (1, 1, D), `model.pos_embed`, the blocks in
# `model.blocks` (each maps (B, N, D) to (B, N, D), Eq. 2-3), `model.norm` and `model.head`
# (Eq. 4). The check runs it on a model of each place, with random weights, against the model's
# own forward.

# %% tags=["solution"]
def forward_by_hand(model, x):
    where = model.config.pos_embed_at
    with minivit.no_grad():
        tokens = model.patch_embed(Tensor(x))  # (B, Np, D): x_p E
        cls = broadcast_to(model.cls_token, (len(x), 1, tokens.shape[2]))  # (B, 1, D): x_class
        z = concatenate([cls, tokens], axis=1)  # (B, N, D)
        for layer, block in enumerate(model.blocks):
            if where == "every_block":
                z = z + model.pos_embed[layer]  # this block's own (N, D)
            elif layer == 0 or where == "every_block_shared":
                z = z + model.pos_embed  # (1, N, D): z_0 of Eq. 1, or again before every block
            z = block(z)
        return model.head(model.norm(z)[:, 0]).numpy()  # y = LN(z_L^0) (Eq. 4), then the head


# %%
for where in posemb.WHERE:
    placed = minivit.ViT(**base, pos_embed="learn", pos_embed_at=where)
    for p in placed.parameters():  # random weights: a fresh head is all zeros, every logit 0
        p.data = rng.normal(0.0, 0.3, p.shape).astype(np.float32)
    with minivit.no_grad():
        own = placed(x_random.astype(np.float32)).numpy()
    assert np.allclose(forward_by_hand(placed, x_random.astype(np.float32)), own, rtol=1e-4, atol=1e-4), where
print("by hand == the model's forward, for every place:", ", ".join(posemb.WHERE))

# %% [markdown]
# ## A task only position can solve
#
# Each image is noise with one bright quadrant; the label is *which* quadrant (4 classes). We
# make the four versions of an image by swapping its bright top-left quadrant with another
# quadrant. A quadrant is 2 x 2 whole patches, so the four versions consist of exactly the
# same 16 patches, only arranged differently: without position information they are the same
# bag of patches.

# %%
def quadrant_images(n, seed):
    """n base images, each in all four versions: x (4n, 3, S, S), y (4n,) = bright quadrant,
    ordered so that x[4i:4i+4] are the versions of base image i."""
    rng = np.random.default_rng(seed)
    x = 0.5 * rng.standard_normal((n, 3, S, S)).astype(np.float32)  # (n, C, H, W)
    x[:, :, :S // 2, :S // 2] += 1.5  # the bright quadrant, top left
    versions = []
    for k in range(4):
        v = x.reshape(n, 3, 2, S // 2, 2, S // 2).copy()  # (n, C, qy, H/2, qx, W/2): quadrant blocks
        qy, qx = divmod(k, 2)
        v[:, :, [0, qy], :, [0, qx]] = v[:, :, [qy, 0], :, [qx, 0]]  # swap quadrant 0 and quadrant k
        versions.append(v.reshape(n, 3, S, S))
    x4 = np.stack(versions, axis=1).reshape(4 * n, 3, S, S)  # (4n, C, H, W)
    return x4, np.tile(np.arange(4), n)


x_train, y_train = quadrant_images(512, seed=0)  # 2048 images
x_test, y_test = quadrant_images(128, seed=1)  # 512 images, 128 groups of four
# The four versions of an image hold the same patches, in another order:
grid = x_test.reshape(-1, 3, gh, P, gw, P).transpose(0, 2, 4, 1, 3, 5).reshape(-1, Np, 3 * P * P)
for i in range(len(x_test) // 4):
    same_bag = [sorted(map(bytes, grid[4 * i + k])) for k in range(4)]
    assert all(b == same_bag[0] for b in same_bag), "versions should be patch permutations"

fig = plots.Figure(figsize=(8, 2.2))
for k, ax in enumerate(fig.subplots(1, 4)):
    img = x_test[k].transpose(1, 2, 0)
    ax.imshow((img - img.min()) / (img.max() - img.min()))
    ax.set_title(f"label {k}", fontsize=9)
    ax.axis("off")
fig.suptitle("one image, its four versions (same patches, other places)", fontsize=9)
fig

# %% [markdown]
# ## Why "none" cannot beat chance
#
# Without E_pos every step of the model treats the patch tokens alike: the patch embedding
# works patch by patch, attention is a weighted sum over *all* keys (a sum does not care about
# order), LayerNorm and the MLP act on each token alone, and the class token (or the mean of the
# patch tokens) sums over them again. So permuting the patches permutes the patch tokens at
# every layer and leaves the class token's output unchanged. For our task that means the four
# versions of an image get the same logits, the same prediction, and exactly one of the four
# labels is right: 25% accuracy, for **any** weights, trained or not. Check it on a random model:

# %%
def accuracy(model, x, y):
    with minivit.no_grad():
        return float((model(x).numpy().argmax(axis=1) == y).mean())


blind = minivit.ViT(**base, pos_embed="none")
for p in blind.parameters():  # random weights, the head too (a fresh head is all zeros: every logit 0)
    p.data = rng.normal(0.0, 0.3, p.shape).astype(np.float32)
with minivit.no_grad():
    logits = blind(x_test).numpy().reshape(-1, 4, 4)  # (groups, version, K)
assert logits.std() > 0.1 and np.allclose(logits, logits[:, :1], atol=1e-5)  # every version: the same logits
assert accuracy(blind, x_test, y_test) == 0.25
print("no position embedding: the four versions get identical logits; accuracy exactly 25%")

# %% [markdown]
# ## Training each kind
#
# A small ViT (width 32, 1 block, 2 heads, 16 patch tokens) with global average pooling over
# the patch tokens (the paper's App. D.3 alternative to the class token; it learns this task
# faster), AdamW at lr 1e-2, 150 steps of 32 images; every kind gets the same seed and the
# same batches.
#
# **Predict, then run.** Before running the next cell, write down for each of the six kinds the
# test accuracy you expect after 150 steps: exactly 25%, somewhat above, or close to 100%. The
# two relative kinds never see where a patch is, only offsets between patches: can they tell the
# quadrants apart at all? Which of the two do you expect to learn faster?

# %%
task = dict(img_size=S, patch_size=P, embed_dim=D, depth=1, num_heads=Hh, num_classes=4, mlp_ratio=2.0,
            global_pool="avg", class_token=False)


def train(steps=150, batch=32, lr=1e-2, seed=0, **options):
    """(model, training losses) after `steps` AdamW steps on random batches of x_train."""
    minivit.manual_seed(seed)
    model = minivit.ViT(**task, **options)
    opt = minivit.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    order = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        i = order.integers(0, len(x_train), batch)
        loss = F.cross_entropy(model(x_train[i]), y_train[i])
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return model, np.array(losses)


models, curves, acc = {}, {}, {}
for kind in posemb.KINDS:  # every kind minivit has
    models[kind], curves[kind] = train(pos_embed=kind)
    acc[kind] = accuracy(models[kind], x_test, y_test)
    print(f"{kind:17s} test accuracy {acc[kind]:6.1%}   last 20 training losses {curves[kind][-20:].mean():.3f}")

fig = plots.Figure(figsize=(10, 3.2))
ax_loss, ax_acc = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
for kind in posemb.KINDS:
    smooth = np.convolve(curves[kind], np.ones(10) / 10, mode="valid")  # a running mean over 10 steps
    ax_loss.plot(np.arange(len(smooth)) + 10, smooth, label=kind)
ax_loss.axhline(np.log(4), color="grey", lw=0.8, ls=":")
ax_loss.set(xlabel="step", ylabel="training loss (mean of 10 steps)", title="loss; dotted: ln 4, chance")
ax_loss.legend(fontsize=7)
ax_acc.barh(list(posemb.KINDS), [acc[k] for k in posemb.KINDS], color="tab:blue")
ax_acc.axvline(0.25, color="grey", lw=0.8, ls=":")
ax_acc.set(xlim=(0, 1), xlabel="test accuracy", title="after 150 steps; dotted: chance")
fig.tight_layout()
fig

# %%
assert acc["none"] == 0.25  # trained or not: exactly chance, as proved above
assert acc["learn"] > 0.75 and acc["sincos"] > 0.9  # position information solves the task
assert acc["relative_bias_2d"] > 0.5  # offsets alone are enough to tell the quadrants apart
print("chance without position, solved with it; the 2D offset bias beats chance with offsets only")

# %% [markdown]
# How can a model that knows only offsets find a quadrant? Through the border of the grid:
# which offsets exist gives a patch's place away (a patch in the top row has no key above it;
# in 1-D, patch p has keys at offsets p - (Np - 1) up to p and no others), and on a 4 x 4 grid
# every patch is near the border. The table rows each patch reads say so:

# %%
rows_read = posemb.relative_1d_index((gh, gw), num_prefix_tokens=0)  # (Np, Np): query p, key p' -> row
for p in range(Np):
    offsets = rows_read[p] - (Np - 1)  # back to p - p'
    assert sorted(offsets) == list(range(p - (Np - 1), p + 1))  # a different set for every patch
print(f"patch 0 has keys at offsets {-(Np - 1)} .. 0, patch {Np - 1} at offsets 0 .. {Np - 1}")

# %% [markdown]
# ## Why the paper's relative attention starts slowly
#
# The 2D bias is a number added to the logits: its gradient is the gradient of the logits
# themselves, from the first step. The paper's relative logits are q . r / sqrt(hd), a product:
# at initialisation the queries are small (small random weights) and so is the table (std
# 0.02), so the relative logits start much smaller than the 2D bias, and the gradient of each
# factor is proportional to the other, small, one. Measure both on the fresh models of the run
# above, on the same images:

# %%
def initial_position_logits(kind):
    """The position part of block 0's attention logits of a fresh `task` model (seed 0), on 64
    test images: (Hh, Np, Np) for the 2D bias, (B, Hh, Np, Np) for the relative attention."""
    minivit.manual_seed(0)
    fresh = minivit.ViT(**task, pos_embed=kind)
    first = fresh.blocks[0]
    with minivit.no_grad():
        z = first.norm1(fresh.patch_embed(Tensor(x_test[:64])))  # (B, Np, D): no class token, nothing added
        q = first.attn.qkv(z).reshape(64, Np, 3, Hh, hd).transpose(2, 0, 3, 1, 4).unbind(0)[0]  # (B, Hh, Np, hd)
        bias = fresh.posemb.attention_bias(0)
        return (bias(q) if callable(bias) else bias).numpy()


std_1d, std_2d = initial_position_logits("relative_1d").std(), initial_position_logits("relative_bias_2d").std()
print(f"std of the position logits at initialisation: relative_1d {std_1d:.4f}, relative_bias_2d {std_2d:.4f}")
assert std_1d < 0.2 * std_2d

# %% [markdown]
# One run is one seed. Train both relative kinds from four seeds (seed 0 is the run above) and
# compare how often each gets past chance:

# %%
seeds = range(4)
acc_seeds = {kind: [acc[kind] if s == 0 else accuracy(train(pos_embed=kind, seed=s)[0], x_test, y_test)
                    for s in seeds] for kind in ("relative_1d", "relative_bias_2d")}
for kind, values in acc_seeds.items():
    print(f"{kind:17s} test accuracy by seed: " + "  ".join(f"{a:6.1%}" for a in values))
assert np.mean(acc_seeds["relative_bias_2d"]) > np.mean(acc_seeds["relative_1d"]) + 0.1
assert min(acc_seeds["relative_bias_2d"]) > 0.5 and min(acc_seeds["relative_1d"]) < 0.35  # some seeds: chance

# %% [markdown]
# At this size and length the paper's relative attention is the slowest starter of the kinds
# with position information: the 2D bias gets past chance from every seed, the relative
# attention from some seeds only, the others still at chance after 150 steps, on the flat start
# of a product of two small factors. This is a fact about a tiny model trained for seconds. On
# ImageNet the paper sees little difference between the kinds (Table 8, 5-shot linear accuracy
# of ViT-B/16: 1D, 2D and relative within 0.2 points, none about 3 points lower): recognising
# objects depends much less on absolute position than this task does, and the paper's models
# train for far longer than 150 steps.

# %% [markdown]
# ## The sine-cosine table by hand
#
# For patch (i, j) (row i, column j) the fixed table holds a quarter of the width each for
# sin(j w_k), cos(j w_k), sin(i w_k), cos(i w_k), with D/4 frequencies w_k = 1 / 10000^(k / (D/4 - 1))
# spaced geometrically from 1 down to 1/10000 (the Transformer's recipe, Vaswani et al. 2017,
# made 2D). Patches are in raster order.

# %%
def sincos_by_hand(gh, gw, dim, temperature=10000.0):
    rows, cols = np.divmod(np.arange(gh * gw), gw)  # (Np,) each, raster order
    w = 1.0 / temperature ** (np.arange(dim // 4) / (dim // 4 - 1))  # (D/4,)
    x, y = cols[:, None] * w, rows[:, None] * w  # (Np, D/4)
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)  # (Np, D)


table = sincos_by_hand(8, 8, 64)
assert np.allclose(table, posemb.sincos_2d((8, 8), 64), atol=1e-6)
sincos_model = models["sincos"]
assert np.allclose(sincos_model.position_embedding(), sincos_by_hand(gh, gw, D), atol=1e-6)
print("sin-cos table by hand == posemb.sincos_2d == the model's table")

# %% [markdown]
# ## Similarity of position embeddings (Fig. 7 centre, Fig. 10)
#
# The paper draws, for every patch, the cosine similarity of its position embedding with every
# other patch's. Two facts about the sin-cos table follow from its formula and are checked here.
# The dot product of the embeddings of patches (i, j) and (i', j') is
# sum_k cos(w_k (j - j')) + sum_k cos(w_k (i - i')) (from cos a cos b + sin a sin b = cos(a - b)),
# and every vector has the same norm, so the similarity depends only on the offset: it is the
# same pattern around every patch. Along a row each term cos(w_k d) falls as the distance d
# grows, as long as w_k d <= pi; the largest frequency is 1 per patch, so the similarity falls
# strictly for d = 0, 1, 2, 3 and may rise again after that (the fastest sine wraps around
# every 2 pi = 6.3 patches).

# %%
sim = position_embedding_similarity(posemb.sincos_2d((8, 8), 64), (8, 8), num_prefix_tokens=0)  # (8, 8, 8, 8)
assert np.allclose(sim[2, 3, 4, 1], sim[0, 3, 2, 1]) and np.allclose(sim[5, 5, 6, 7], sim[0, 0, 1, 2])  # offset only
row = sim[0, 0, 0, :]  # patch (0, 0) against (0, d)
assert np.all(np.diff(row[:4]) < 0)
print("sin-cos similarity along a row:", np.round(row, 3), "(falls for d <= 3, then wiggles)")
display(plots.plot_position_similarity(sim))

# %% [markdown]
# And the learned 1D embedding of the model trained above. It started as noise (random vectors
# in 32 dimensions are nearly orthogonal: similarity about 0); what it learned is whatever
# separates the quadrants, so patches of the same quadrant now tend to be similar (printed
# below). On ImageNet, trained much longer, the paper's 1D embeddings learn the whole 2D grid,
# with rows and columns (Fig. 10). The relative kinds have no such table: their position
# information lives in the attention of every block.

# %%
learned = models["learn"].position_embedding()  # (Np, D): no class token in this model
sim_learned = position_embedding_similarity(learned, (gh, gw), num_prefix_tokens=0)  # (gh, gw, gh, gw)
flat = sim_learned.reshape(Np, Np)
assert np.allclose(np.diag(flat), 1.0)  # each embedding against itself
r, c = np.divmod(np.arange(Np), gw)
quadrant = (r // 2) * 2 + c // 2  # (Np,): the quadrant of each patch
same = (quadrant[:, None] == quadrant[None]) & ~np.eye(Np, dtype=bool)
other = quadrant[:, None] != quadrant[None]
print(f"mean similarity: same quadrant {flat[same].mean():.2f}, different quadrants {flat[other].mean():.2f}")
assert flat[same].mean() > flat[other].mean()
assert models["relative_1d"].position_embedding() is None and models["relative_bias_2d"].position_embedding() is None
display(plots.plot_position_similarity(sim_learned))

# %% [markdown]
# ## What this means
#
# Position embeddings are the only thing in a ViT that knows where a patch is: without them
# the model is provably blind to patch order. They can be vectors added to the tokens, or, as
# in the paper's relative attention, logits added inside every block's attention. Which kind
# matters little on natural images (the paper's Table 8), and where it enters matters little
# too; the learned 1D default learns 2D structure by itself given enough data. Notebook 07 draws
# this similarity figure for a model trained on shapes, and notebook 08 shows what happens to
# the table at a higher resolution.
