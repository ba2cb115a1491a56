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
# # 07 · Inside a trained ViT
#
# **Goal.** Open up a ViT trained on CIFAR-10 and test, one by one, what the paper finds when it
# inspects its own models (Sec. 4.5, "Inspecting Vision Transformer", with Appendix D.7 and D.8):
# the patch filters, the position embeddings, how far each head looks, and where the class token
# draws its information from. Each measure is first run on a constructed case whose answer we
# know, so that we trust it; then it is run on the trained weights, and every finding is checked
# by an `assert`. Where our small model does not show what the paper's large ones show, this page
# says so with the numbers.
#
# The model ships with the course (`tutorials/trained/vit_mini_learn1d/`): ViT with the paper's
# defaults, a learned 1D position embedding and a class token (Eq. 1), 6 blocks of width 128 with
# 4 heads, 4 x 4 patches on 32 x 32 images (an 8 x 8 grid, 65 tokens), trained from scratch on
# the 50,000 CIFAR-10 training images for about an hour on two CPU cores. Its `model.json` holds
# the exact command and its test accuracy.
#
# Every number comes from one forward pass, `model(x, out=d)`, which fills the dict `d` with the
# intermediates, every block's attention weights included.
#
# **Data.** CIFAR-10 test images: from `MINIVIT_CIFAR10` if set (the official
# `cifar-10-batches-py` folder or an image-folder tree), else minivit downloads the official
# archive once into `~/.cache/minivit` (about 170 MB).
#
# Topics (see tutorials/README.md): T8 (inside the model), T3, T5. Time: about 15 s on 2 cores.

# %%
import json
import os
from pathlib import Path

import numpy as np

import minivit
from minivit.analysis import (attention_rollout, class_token_attention_map, mean_attention_distance,
                              patch_distances, patch_embedding_pcs, plots, position_embedding_similarity)
from minivit.data import load_dataset, normalize
from minivit.train.checkpoint import load_checkpoint, model_from_checkpoint, normalization

TRAINED = next(p for p in (Path("trained"), Path("tutorials/trained")) if p.is_dir())  # Jupyter or repo root
CIFAR = os.environ.get("MINIVIT_CIFAR10")  # None: the official archive, downloaded once

# %% [markdown]
# ## The trained model
#
# `model_from_checkpoint` builds the ViT that the file's config describes and loads its weights
# (a checkpoint is plain arrays and JSON; loading it never runs code from it). A second model
# with the same config, freshly initialised, is the "before training" reference for every
# measure below.

# %%
folder = TRAINED / "vit_mini_learn1d"
record = json.loads((folder / "model.json").read_text())
ckpt = load_checkpoint(folder / "weights.npz")
model, _ = model_from_checkpoint(ckpt)
model.eval()
cfg = model.config
P, grid, L, Hh = cfg.patch_size, model.grid_size, cfg.depth, cfg.num_heads
gh, gw = grid
N = 1 + gh * gw
print(record["command"])
print(f"{model.num_parameters():,} parameters; pos_embed={cfg.pos_embed!r}, class token {cfg.class_token}; "
      f"CIFAR-10 test accuracy {record['test_accuracy']:.2%} (all 10,000 images, as trained)")

minivit.manual_seed(0)
untrained = minivit.ViT(config=cfg).eval()  # the same architecture at initialisation

test_set = load_dataset("cifar10", root=CIFAR, split="test", num_samples=256, seed=1)
mean, std = normalization(ckpt, cfg.in_chans)
x, y = normalize(test_set.images, mean, std), test_set.labels  # (256, 3, 32, 32) float32, (256,)
with minivit.no_grad():
    accuracy = float((model(x).numpy().argmax(1) == y).mean())
print(f"accuracy on these {len(y)} test images: {accuracy:.1%}")
assert accuracy > 0.6  # a trained model (chance is 10%)

# %% [markdown]
# ## One forward, every intermediate
#
# `model(x, out=d)` is the ordinary forward pass; given a dict it also keeps "patch_tokens",
# "with_posemb", each block's output ("blocks") and attention weights ("attention"), "encoded",
# "pre_logits" and "logits". To keep the weights, attention runs composed (softmax of q k^T, then
# times v) instead of the fused kernel; the logits are the same.

# %%
d = {}
with minivit.no_grad():
    logits = model(x, out=d).numpy()
    plain = model(x).numpy()  # the fused attention kernel: no weights kept
for name, value in d.items():
    print(f"{name:13s}", [v.shape for v in value] if isinstance(value, list) else value.shape)
attn = d["attention"]  # L arrays (B, Hh, N, N)
assert len(attn) == L and all(a.shape == (len(x), Hh, N, N) for a in attn)
assert all(np.allclose(a.sum(axis=-1), 1.0, atol=1e-5) for a in attn)  # each query's weights sum to 1
assert np.allclose(logits, plain, atol=1e-4)

# %% [markdown]
# ## Fig. 7 left: the patch-embedding filters
#
# Sec. 4.5: "The first layer of the Vision Transformer linearly projects the flattened patches
# into a lower-dimensional space (Eq. 1). Figure 7 (left) shows the top principal components of
# the the learned embedding filters. The components resemble plausible basis functions for a
# low-dimensional representation of the fine structure within each patch."
#
# The patch embedding E has D filters of C x P x P. `patch_embedding_pcs` flattens them, centres
# them and returns the principal components (the right singular vectors), each reshaped to
# (P, P, C), with the share of the variance each explains.
#
# *Constructed case:* filters that are all multiples of one pattern vary along one direction
# only, so there is one component, it is the pattern (normalised, up to sign), and it explains
# all of the variance.

# %%
rng = np.random.default_rng(0)
pattern = rng.standard_normal((3, P, P))  # (C, P, P)
scales = rng.standard_normal(cfg.embed_dim)
comps, ratio = patch_embedding_pcs(scales[:, None, None, None] * pattern)  # filters (D, C, P, P)
unit = (pattern / np.linalg.norm(pattern)).transpose(1, 2, 0)  # (P, P, C), the components' layout
assert np.isclose(ratio[0], 1.0) and np.allclose(ratio[1:], 0.0, atol=1e-12)
assert np.allclose(comps[0], unit) or np.allclose(comps[0], -unit)
print("one pattern -> one component explaining 100%")

# %% [markdown]
# **Predict, then run.** A patch here is 4 x 4 x 3 = 48 numbers, and there are 128 filters. At
# initialisation the filters are random: how much of the variance do the first 7 of the 48
# components explain, roughly? And after training?

# %%
comps, ratio = patch_embedding_pcs(model.patch_embed.proj.weight.data, k=28)
_, ratio0 = patch_embedding_pcs(untrained.patch_embed.proj.weight.data, k=28)


def roughness(c):
    """Mean squared difference between horizontally and vertically adjacent pixels of a unit-norm
    (P, P, C) component: small for smooth patterns, larger for pixel noise."""
    return float((np.diff(c, axis=0) ** 2).mean() + (np.diff(c, axis=1) ** 2).mean())


smooth_first = np.mean([roughness(c) for c in comps[:7]])
smooth_last = np.mean([roughness(c) for c in comps[21:28]])
print(f"variance in the first 7 components: trained {ratio[:7].sum():.1%}, at init {ratio0[:7].sum():.1%}")
print(f"roughness of components 1-7: {smooth_first:.4f}; of components 22-28: {smooth_last:.4f}")
assert ratio[:7].sum() > ratio0[:7].sum()  # training concentrates the filters on fewer patterns
assert smooth_first < smooth_last  # and the leading patterns are the smooth ones
plots.plot_embedding_filters(comps, explained=ratio)

# %% [markdown]
# The leading components are colour and brightness gradients across the patch (the first, for
# instance, orange at the top and blue at the bottom); the trailing ones look like pixel noise.
# Training moved the filters towards a lower-dimensional subspace of the 48 possible directions:
# the first 7 components explain 47% of the variance against 29% at initialisation (the numbers
# printed above). That is a weaker concentration than the paper's figure suggests for ViT-L/32,
# whose 28 components are all smooth patterns: our 4 x 4 patches hold little fine structure, and
# the model saw 50,000 images, not 300 million.
#
# ## Fig. 7 centre: position-embedding similarity
#
# Sec. 4.5: "Figure 7 (center) shows that the model learns to encode distance within the image in
# the similarity of position embeddings, i.e. closer patches tend to have more similar position
# embeddings. Further, the row-column structure appears; patches in the same row/column have
# similar embeddings."
#
# For each patch, the cosine similarity of its position embedding with every other patch's,
# drawn as a small grid (tile (i, j) is patch (i, j)'s similarity to all 64 patches).
#
# *Constructed case:* give patch (i, j) the embedding [one_hot(i) ; one_hot(j)]. Two such
# vectors share a 1 where the rows agree and a 1 where the columns agree; each has norm sqrt(2);
# so their cosine similarity is (same row + same column) / 2: 1 for the patch itself, 1/2 along
# its row and column, 0 elsewhere. A first row for the class token is dropped by the measure.

# %%
rows, cols = np.divmod(np.arange(gh * gw), gw)
onehot = np.concatenate([np.eye(gh)[rows], np.eye(gw)[cols]], axis=1)  # (Np, gh + gw)
with_cls = np.concatenate([np.ones((1, gh + gw)), onehot])  # (N, gh + gw)
sim = position_embedding_similarity(with_cls, grid, num_prefix_tokens=1)  # (gh, gw, gh, gw)
want = ((rows[:, None] == rows[None]).astype(float) + (cols[:, None] == cols[None])) / 2  # (Np, Np)
assert np.allclose(sim.reshape(gh * gw, gh * gw), want)
plots.plot_position_similarity(sim)

# %% [markdown]
# The model was initialised with a random table (every pair of patches about equally similar,
# near 0). **Predict, then run:** after training on CIFAR-10, how similar is a patch's embedding
# to its direct neighbour's, and to that of a patch 5 steps away?

# %%
table = model.position_embedding()  # (1, N, D): row 0 is the class token's
sim = position_embedding_similarity(table, grid, num_prefix_tokens=1)  # (gh, gw, gh, gw)
sim0 = position_embedding_similarity(untrained.position_embedding(), grid, num_prefix_tokens=1)
dist = patch_distances(grid, 1).reshape(gh, gw, gh, gw)  # grid steps between patch centres
same_line = (rows[:, None] == rows[None]) | (cols[:, None] == cols[None])  # (Np, Np)
same_line = same_line.reshape(gh, gw, gh, gw)
by_distance = {k: float(sim[np.isclose(dist, k)].mean()) for k in (1, 2, 3, 4, 5)}
print("mean similarity at 1-5 steps (same row or column):", {k: round(v, 3) for k, v in by_distance.items()})
print(f"at initialisation, neighbours: {sim0[np.isclose(dist, 1)].mean():.3f}")
values = list(by_distance.values())
assert all(a > b for a, b in zip(values, values[1:]))  # closer patches are more similar
assert by_distance[1] > sim0[np.isclose(dist, 1)].mean() + 0.2  # and that was learned

# row/column structure: at the same distance, patches in the same row or column against the rest
on_line = {k: float(sim[np.isclose(dist, k) & same_line].mean()) for k in (2, 3, 4, 5)}
off_line = {k: float(sim[(np.abs(dist - k) <= 0.5) & ~same_line].mean()) for k in (2, 3, 4, 5)}
print("same row/column at distance 2-5:", {k: round(v, 3) for k, v in on_line.items()})
print("off row/column at distance 2-5 (+-0.5):", {k: round(v, 3) for k, v in off_line.items()})
row_column = all(on_line[k] > off_line[k] for k in on_line)
print("row-column structure:", "present" if row_column else "not at every distance")
along_row = np.mean([sim[i, j, i, j + 3] for i in range(gh) for j in range(gw - 3)])  # 3 steps along a row
along_col = np.mean([sim[i, j, i + 3, j] for i in range(gh - 3) for j in range(gw)])  # 3 steps down a column
print(f"3 steps along a row: {along_row:.2f}; down a column: {along_col:.2f}")
assert along_row > along_col  # this model encodes the row more strongly than the column
plots.plot_position_similarity(sim)

# %% [markdown]
# The learned table encodes the grid, as the paper finds, though the model was told nothing
# about it: a patch's embedding is very similar to its neighbours' (0.87 at one step), and the
# similarity falls with distance until it turns negative (-0.26 at five steps). The row-column
# structure is there too, lopsided: the tiles are mostly horizontal bands (three steps along a
# row 0.44, down a column 0.09), so this model encodes a patch's row more strongly than its column. (The paper's Appendix D.4 notes that the pattern
# a model learns depends on its training hyperparameters, Fig. 10.)

# %% [markdown]
# **Exercise 1.** Compute the similarity-against-distance curve yourself, from the raw table
# `table` (1, N, D): drop the class token's row, compute the cosine similarity of every pair of
# patch embeddings, and average it over the pairs that are k grid steps apart (k = 1..5, along a
# row or a column; `dist` above holds the distances). Result: `curve`, a dict {k: mean similarity}.
# (The check compares with the library's numbers above.)

# %% tags=["solution"]
e = table.reshape(N, -1)[1:].astype(np.float64)  # (Np, D): patches only
e = e / np.linalg.norm(e, axis=1, keepdims=True)
cosine = (e @ e.T).reshape(gh, gw, gh, gw)
curve = {k: float(cosine[np.isclose(dist, k)].mean()) for k in (1, 2, 3, 4, 5)}

# %%
assert set(curve) == {1, 2, 3, 4, 5}
assert all(np.isclose(curve[k], by_distance[k], atol=1e-6) for k in curve), (curve, by_distance)
print("similarity against distance by hand == the library's")

# %% [markdown]
# ## Fig. 7 right: mean attention distance
#
# Sec. 4.5: "we compute the average distance in image space across which information is
# integrated, based on the attention weights (Figure 7, right). This 'attention distance' is
# analogous to receptive field size in CNNs. We find that some heads attend to most of the image
# already in the lowest layers, showing that the ability to integrate information globally is
# indeed used by the model. Other attention heads have consistently small attention distances in
# the low layers. [...] Further, the attention distance increases with network depth." Appendix
# D.7 adds: "Average attention distance is highly variable across heads in lower layers [...] As
# depth increases, attention distance increases for all heads."
#
# For each head: the distance in pixels between a query patch and the patches it attends to,
# weighted by the attention, averaged over queries and images. Class-token rows and columns are
# dropped (it has no place in the image), and each query's weights over the patches renormalised
# to sum to 1.
#
# *Constructed cases:* a head in which each patch attends only to itself has distance 0; one in
# which each patch attends half to the class token and half to the patch on its right (wrapping
# at the row's end) has distance P pixels within a row, and more at the wrap.

# %%
def constructed_attention(target):
    """(1, 1, N, N) weights: every patch query gives 1/2 to the class token, 1/2 to patch target[q]."""
    a = np.zeros((1, 1, N, N))
    a[0, 0, 0, 0] = 1.0  # the class token's own row (dropped by the measure)
    a[0, 0, 1 + np.arange(gh * gw), 0] = 0.5
    a[0, 0, 1 + np.arange(gh * gw), 1 + target] += 0.5
    return a


own = np.arange(gh * gw)
right = rows * gw + (cols + 1) % gw  # the next patch in the same row, wrapping around
assert np.allclose(mean_attention_distance(constructed_attention(own), grid, P), 0.0)
wrap = P * (gw - 1)  # the last patch of a row looks back to the first
want = (P * (gw - 1) + wrap) / gw  # average over the gw patches of a row
assert np.isclose(mean_attention_distance(constructed_attention(right), grid, P)[0], want)
print(f"own patch -> 0 px; right neighbour (with wrap) -> {want:.2f} px")

# %% [markdown]
# At initialisation q and k are small, the attention logits are near 0 and every head attends
# almost uniformly, so its distance is the grid's average distance between two patches.
# **Predict, then run:** in the trained model, which blocks will have the heads with the smallest
# distances, and which block the largest spread between its heads?

# %%
with minivit.no_grad():
    d0 = {}
    untrained(x[:64], out=d0)
uniform = patch_distances(grid, P).mean()
at_init = mean_attention_distance(d0["attention"], grid, P)  # (L, Hh)
assert np.allclose(at_init, uniform, rtol=0.05)
trained = mean_attention_distance(attn, grid, P)  # (L, Hh) pixels
per_block = trained.mean(axis=1)
spread = trained.max(axis=1) - trained.min(axis=1)
print(f"uniform attention: {uniform:.2f} px")
print("trained, block x head (px):\n", np.round(trained, 1))
print("mean per block:  ", np.round(per_block, 1))
print("spread per block:", np.round(spread, 1))
assert per_block[-2:].mean() > per_block[:2].mean()  # distance grows with depth, first blocks to last
assert spread[:2].max() > spread[-1]  # heads differ most in the low blocks
local = trained[:2].min() / uniform
print(f"the most local head of blocks 1-2 attends at {trained[:2].min():.1f} px, {local:.0%} of uniform")
assert local > 0.75  # but no head of this model is local: see below
plots.plot_attention_distance(trained, P, cfg.img_size)

# %% [markdown]
# What the small model shows and what it does not. The distance grows with depth, from about
# 14.6 px in the first two blocks to about 15.9 px in the last two (not monotonically: block 2
# is the lowest), and the heads differ most in a low block (block 2). But every head of every
# block stays within a few pixels of uniform attention (16.5 px): none of this model's heads is
# *local*, whereas in the paper's Fig. 7 (right) and Fig. 11 some heads of the lowest layers sit
# near the bottom of the plot, attending mostly around the query. On a 32 x 32 image cut into an
# 8 x 8 grid the whole image is only 8 patches across, so a "global" head and a local one are not
# far apart; and the paper's models learned from hundreds of millions of images.

# %% [markdown]
# **Exercise 2.** Compute the trained model's mean attention distance of block 0 by hand from
# `attn[0]` (B, Hh, N, N) and `patch_distances(grid, P)` (Np, Np), following the definition
# above. Result: one number per head, `by_hand` (Hh,).

# %% tags=["solution"]
a = attn[0][:, :, 1:, 1:].astype(np.float64)  # (B, Hh, Np, Np): patch queries and keys only
a = a / a.sum(axis=-1, keepdims=True)
by_hand = (a * patch_distances(grid, P)).sum(axis=-1).mean(axis=(0, 2))  # (Hh,)

# %%
assert by_hand.shape == (Hh,)
assert np.allclose(by_hand, trained[0])
print("mean attention distance by hand == the library's:", np.round(by_hand, 2))

# %% [markdown]
# ## Fig. 6: attention rollout
#
# Which input patches does the class token's output draw on? Appendix D.8: "we used Attention
# Rollout (Abnar & Zuidema, 2020). Briefly, we averaged attention weights of ViT-L/16 across all
# heads and then recursively multiplied the weight matrices of all layers. This accounts for the
# mixing of attention across tokens through all layers." The residual connection is accounted
# for as A <- (A + I) / 2, with rows renormalised; R = A_L ... A_2 A_1, and row 0 of R over the
# patch columns is the class token's map.
#
# *Constructed case:* in block 1 token t attends only to token p1[t], in block 2 only to p2[t].
# Then token t of the output draws on token p1[p2[t]] of the input: R is the permutation matrix
# of that composition. With the residual term, R = (A2 + I)/2 (A1 + I)/2.

# %%
n = 5
p1, p2 = np.array([1, 2, 3, 4, 0]), np.array([0, 0, 4, 2, 1])
A1, A2 = np.eye(n)[p1], np.eye(n)[p2]  # one-hot rows: A[t, p[t]] = 1
chain = [A1[None, None], A2[None, None]]  # two blocks of (B=1, Hh=1, N, N)
R = attention_rollout(chain, add_residual=False)[0]
assert np.array_equal(R, np.eye(n)[p1[p2]])
half = lambda A: (A + np.eye(n)) / 2
assert np.allclose(attention_rollout(chain)[0], half(A2) @ half(A1))
print("one-hot chain rolls out to the composed permutation")

# %%
rollout = attention_rollout(attn)  # (B, N, N)
maps = class_token_attention_map(rollout, grid)  # (B, gh, gw), each image's maximum is 1
assert maps.shape == (len(x), gh, gw) and np.allclose(maps.max(axis=(1, 2)), 1.0)
assert np.allclose(rollout.sum(axis=-1), 1.0)  # rows still sum to 1: a mixing of the input tokens
pred = logits.argmax(axis=1)
titles = [f"{test_set.classes[p]}" + ("" if p == t else f" ({test_set.classes[t]})") for p, t in zip(pred, y)]
plots.plot_attention_maps(test_set.images[:12], maps[:12], titles=titles[:12], pairs_per_row=4)

# %% [markdown]
# Titles are the model's predictions (the true class in brackets where it is wrong).
#
# "Globally, we find that the model attends to image regions that are semantically relevant for
# classification (Figure 6)": a picture can only suggest that. A test: hide the quarter of the
# patches the map ranks highest (set them to the dataset mean, i.e. 0 after normalisation) and,
# separately, the quarter it ranks lowest, and compare the accuracy.
# **Predict, then run:** which hurts more, and by how much?

# %%
def hide(images, keep_out):
    """Copy of (B, C, H, W) images with the patches keep_out (B, k) indices into the grid set to 0."""
    out = images.copy()
    for b, idx in enumerate(keep_out):
        for i, j in zip(*np.divmod(idx, gw)):
            out[b, :, i * P:(i + 1) * P, j * P:(j + 1) * P] = 0.0
    return out


k = gh * gw // 4
ranked = np.argsort(-maps.reshape(len(x), -1), axis=1)  # (B, Np), most attended first
with minivit.no_grad():
    acc_top = float((model(hide(x, ranked[:, :k])).numpy().argmax(1) == y).mean())
    acc_bottom = float((model(hide(x, ranked[:, -k:])).numpy().argmax(1) == y).mean())
print(f"accuracy {accuracy:.1%}; hiding the {k} most attended patches: {acc_top:.1%}; "
      f"the {k} least attended: {acc_bottom:.1%}")
assert acc_top < acc_bottom - 0.1  # the attended patches are the ones the decision needs

# %% [markdown]
# **Exercise 3.** Roll out the trained model's attention by hand (head mean, residual, row
# normalisation, product over blocks, later blocks on the left) into `R_by_hand` (B, N, N).

# %% tags=["solution"]
R_by_hand = None
for a in attn:
    A = a.astype(np.float64).mean(axis=1)  # (B, N, N): heads fused by their mean
    A = (A + np.eye(N)) / 2  # the residual connection
    A = A / A.sum(axis=-1, keepdims=True)
    R_by_hand = A if R_by_hand is None else A @ R_by_hand

# %%
assert R_by_hand.shape == (len(x), N, N)
assert np.allclose(R_by_hand, rollout)
print("rollout by hand == the library's")

# %% [markdown]
# ## What this small model shows, and what it does not
#
# The paper inspects ViT-L/16 and ViT-L/32 pre-trained on JFT-300M: 24 blocks of width 1024 and
# 16 heads. Ours has 6 blocks of width 128, 4 heads, and saw CIFAR-10 for an hour. The cell below
# prints each finding next to our numbers.

# %%
findings = [
    ("filters: fewer, smoother components", f"first 7 explain {ratio[:7].sum():.0%} (init {ratio0[:7].sum():.0%})", True),
    ("closer patches, more similar embeddings", f"1 step {by_distance[1]:.2f}, 5 steps {by_distance[5]:.2f}", True),
    ("row-column structure", f"same line {on_line[3]:.2f} vs off line {off_line[3]:.2f} at 3 steps", row_column),
    ("attention distance grows with depth", f"blocks 1-2 {per_block[:2].mean():.1f} px, last two "
     f"{per_block[-2:].mean():.1f} px", True),
    ("heads differ most in low blocks", f"largest spread {spread.max():.1f} px in block {spread.argmax() + 1}, "
     f"last block {spread[-1]:.1f} px", True),
    ("some low heads are local", f"most local head {trained[:2].min():.1f} px, uniform {uniform:.1f} px", False),
    ("attends to what the decision needs", f"hide top quarter {acc_top:.0%}, bottom {acc_bottom:.0%}", True),
]
for claim, numbers, shown in findings:
    print(f"{'yes' if shown else 'NO ':4s} {claim:42s} {numbers}")
