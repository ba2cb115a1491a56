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
# 1. without a position embedding a ViT cannot beat chance on images that differ only by the
#    arrangement of their patches (whatever its weights: it is blind to patch order), while
#    a model with one learns the task in 150 tiny steps;
# 2. the fixed 2D sine-cosine table re-derived by hand is minivit's `posemb.sincos_2d`, its
#    cosine similarity depends only on the offset between two patches and falls with distance
#    along a row (for the first few steps);
# 3. "added at the input" and "added before every block" are what minivit does, by running
#    the blocks by hand.
#
# Topics (see tutorials/README.md): T5 (position embeddings), T8 (their similarity pattern).
# Time: about 5 s on 2 idle cores.

# %%
import minivit
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

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
# The paper's Appendix D.4 compares how that position information is given (`pos_embed`):
#
# * `"none"`: nothing, the model sees a bag of patches;
# * `"learn"`: a learned vector per token in raster order (1D; the paper's default);
# * `"learn_2d"`: a learned X-embedding and a learned Y-embedding of D/2 each, concatenated;
# * `"relative"`: no vector at all, but a learned bias per head and 2D offset (dy, dx) added
#   to the attention logits;
# * `"sincos"`: a fixed (never trained) 2D sine-cosine table, from later ViT work.
#
# and where a learned one enters (`pos_embed_at`): once at the input (Eq. 1), a separate one
# before every block, or one shared embedding added before every block.
# The table below counts the parameters each adds, and checks the count against its formula.

# %%
S, P, D, L, Hh = 16, 4, 32, 2, 2  # image size, patch, width, blocks, heads
gh = gw = S // P  # a 4 x 4 grid of patches
Np = gh * gw
N = 1 + Np  # with a class token
base = dict(img_size=S, patch_size=P, embed_dim=D, depth=L, num_heads=Hh, num_classes=4, mlp_ratio=2.0)
expected = {  # extra parameters over pos_embed="none", from the shapes in posemb.py's docstring
    ("learn", "input"): N * D,
    ("learn", "every_block"): L * N * D,
    ("learn", "every_block_shared"): N * D,
    ("learn_2d", "input"): gw * D // 2 + gh * D // 2 + D,  # X, Y and the class token's own vector
    ("relative", "input"): L * Hh * ((2 * gh - 1) * (2 * gw - 1) + 3),  # + cls->patch, patch->cls, cls->cls
    ("sincos", "input"): 0,
}
n_none = minivit.ViT(**base, pos_embed="none").num_parameters()
print(f"{'pos_embed':10s} {'pos_embed_at':20s} {'extra params':>12s}")
for (kind, where), count in expected.items():
    model = minivit.ViT(**base, pos_embed=kind, pos_embed_at=where)
    extra = model.num_parameters() - n_none
    print(f"{kind:10s} {where:20s} {extra:12,d}")
    assert extra == count, (kind, where, extra, count)

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

fig, axes = plt.subplots(1, 4, figsize=(8, 2.2))
for k, ax in enumerate(axes):
    img = x_test[k].transpose(1, 2, 0)
    ax.imshow((img - img.min()) / (img.max() - img.min()))
    ax.set_title(f"label {k}", fontsize=9)
    ax.axis("off")
fig.suptitle("one image, its four versions (same patches, other places)", fontsize=9)
fig.savefig(OUT / "quadrant_task.png", dpi=90)
plt.close(fig)

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
with minivit.no_grad():
    logits = blind(x_test).numpy().reshape(-1, 4, 4)  # (groups, version, K)
assert np.allclose(logits, logits[:, :1], atol=1e-5)  # every version: the same logits
assert accuracy(blind, x_test, y_test) == 0.25
print("no position embedding: the four versions get identical logits; accuracy exactly 25%")

# %% [markdown]
# ## Training each kind
#
# A small ViT (width 32, 1 block, 2 heads, 16 patch tokens) with global average pooling over
# the patch tokens (the paper's App. D.3 alternative to the class token; it learns this task
# faster), AdamW at lr 1e-2, 150 steps of 32 images; every kind gets the same seed and the
# same batches.

# %%
task = dict(img_size=S, patch_size=P, embed_dim=D, depth=1, num_heads=Hh, num_classes=4, mlp_ratio=2.0,
            global_pool="avg", class_token=False)


def train(steps=150, batch=32, lr=1e-2, seed=0, **options):
    minivit.manual_seed(seed)
    model = minivit.ViT(**task, **options)
    opt = minivit.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    order = np.random.default_rng(seed)
    for _ in range(steps):
        i = order.integers(0, len(x_train), batch)
        loss = F.cross_entropy(model(x_train[i]), y_train[i])
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model


models, acc = {}, {}
for kind in ("none", "learn", "learn_2d", "sincos", "relative"):
    models[kind] = train(pos_embed=kind)
    acc[kind] = accuracy(models[kind], x_test, y_test)
    print(f"{kind:9s} test accuracy {acc[kind]:.1%}")

# %%
assert acc["none"] == 0.25  # trained or not: exactly chance, as proved above
assert acc["learn"] > 0.75 and acc["sincos"] > 0.9  # position information solves the task
print("chance without position, solved with it")

# %% [markdown]
# What the table shows, besides the checks. The learned 1D and 2D embeddings start as small
# random numbers (std 0.02) and must learn the grid; the fixed sin-cos table knows it from the
# first step (with other seeds the learned ones sometimes need more steps, sin-cos rarely). The
# relative kind knows only the offset between two patches, never where a patch is; it still
# learns to tell the quadrants apart, more slowly, through the border of the grid: which offsets
# exist gives a patch's place away (a patch in the top row has no key above it), and on a 4 x 4
# grid every patch is near the border. On ImageNet the paper sees little difference between the
# kinds (Table 8, 5-shot linear accuracy of ViT-B/16: 1D, 2D and relative within 0.2 points,
# none about 3 points lower): recognising objects depends much less on absolute position than
# this task does.
#
# ## Where the embedding enters
#
# `pos_embed_at="every_block_shared"` adds one table before *every* block, not only before the
# first. Run a 2-block model's pieces by hand and compare with its own forward:

# %%
minivit.manual_seed(0)
shared = minivit.ViT(**base, pos_embed="learn", pos_embed_at="every_block_shared")
x = Tensor(x_test[:8])
with minivit.no_grad():
    tokens = shared.patch_embed(x)  # (B, Np, D): x_p E
    cls = broadcast_to(shared.cls_token, (8, 1, D))  # (B, 1, D)
    z = concatenate([cls, tokens], axis=1)  # (B, N, D)
    for block in shared.blocks:
        z = block(z + shared.pos_embed)  # E_pos before every block
    by_hand = shared.head(shared.norm(z)[:, 0]).numpy()  # y = LN(z_L^0), then the head
    own = shared(x).numpy()
assert np.allclose(by_hand, own, atol=1e-5)
print("every_block_shared == add pos_embed before each block, by hand")

# %% [markdown]
# **Exercise 1.** Do the same for the default (`pos_embed_at="input"`): write `forward_input(model, x)`
# that runs the blocks by hand, adding `model.pos_embed` only once, and returns the logits as a
# NumPy array.

# %% tags=["solution"]
def forward_input(model, x):
    with minivit.no_grad():
        tokens = model.patch_embed(Tensor(x))  # (B, Np, D)
        cls = broadcast_to(model.cls_token, (len(x), 1, tokens.shape[2]))  # (B, 1, D)
        z = concatenate([cls, tokens], axis=1) + model.pos_embed  # z_0 of Eq. 1
        for block in model.blocks:
            z = block(z)
        return model.head(model.norm(z)[:, 0]).numpy()


# %%
minivit.manual_seed(0)
at_input = minivit.ViT(**base, pos_embed="learn")
with minivit.no_grad():
    assert np.allclose(forward_input(at_input, x_test[:8]), at_input(x_test[:8]).numpy(), atol=1e-5)
print("pos_embed_at='input' == add pos_embed once, by hand")

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
print(plots.plot_position_similarity(sim, OUT / "similarity_sincos.png"))

# %% [markdown]
# And the learned 1D embedding of the model trained above. It started as noise (random vectors
# in 32 dimensions are nearly orthogonal: similarity about 0); what it learned is whatever
# separates the quadrants, so patches of the same quadrant now tend to be similar (printed
# below). On ImageNet, trained much longer, the paper's 1D embeddings learn the whole 2D grid,
# with rows and columns (Fig. 10).

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
print(plots.plot_position_similarity(sim_learned, OUT / "similarity_learned.png"))

# %% [markdown]
# **Exercise 2.** The `learn_2d` kind stores X-embeddings `pos_embed_x` (1, gw, D/2) and
# Y-embeddings `pos_embed_y` (1, gh, D/2). Build its (Np, D) table by hand: patch (i, j) gets
# [X_j ; Y_i], patches in raster order. (The model's table also has the class token's vector
# in front when there is a class token; this model has none.)

# %% tags=["solution"]
two_d = models["learn_2d"]
X = two_d.pos_embed_x.data[0]  # (gw, D/2)
Y = two_d.pos_embed_y.data[0]  # (gh, D/2)
rows, cols = np.divmod(np.arange(gh * gw), gw)
table_2d = np.concatenate([X[cols], Y[rows]], axis=1)  # (Np, D)

# %%
assert table_2d.shape == (Np, D)
assert np.allclose(table_2d, two_d.position_embedding())
# Patches in the same row share their Y half exactly: a 2D embedding has the grid built in.
assert np.allclose(table_2d[0, D // 2:], table_2d[gw - 1, D // 2:])
print("learn_2d table by hand == the model's")

# %% [markdown]
# ## What this means
#
# Position embeddings are the only thing in a ViT that knows where a patch is: without them
# the model is provably blind to patch order. Which kind matters little on natural images (the
# paper's Table 8), and where it enters matters little too; the learned 1D default learns 2D
# structure by itself given enough data. Notebook 07 draws this similarity figure for a model
# trained on shapes, and notebook 08 shows what happens to the table at a higher resolution.
