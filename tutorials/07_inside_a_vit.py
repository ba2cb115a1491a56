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
# # 07 · Inside a ViT
#
# **Goal.** Draw the paper's analysis figures (Sec. 4.5, "Inspecting the Vision Transformer")
# for a small model, and make sure each measurement computes what it says by running it on a
# constructed case whose answer we know (all measures are in minivit.analysis):
#
# * Fig. 7 left, principal components of the patch filters (`patch_embedding_pcs`): filters
#   that are multiples of one pattern have one component;
# * Fig. 7 centre and Fig. 10, position-embedding similarity (`position_embedding_similarity`):
#   row/column one-hot embeddings give (same row + same column) / 2;
# * Fig. 7 right and Fig. 11, mean attention distance (`mean_attention_distance`): attending to
#   one's own patch gives 0, to a neighbour one patch width;
# * Fig. 6 and Fig. 14, attention rollout (`attention_rollout`, `class_token_attention_map`): a
#   one-hot attention chain rolls out to a known matrix.
#
# Every number comes from one forward pass, `model(x, out=d)`, which fills the dict `d` with
# the intermediates, including every block's attention weights.
#
# Topics (see tutorials/README.md): T8 (inside the model), T3. Time: about 10 s on 2 idle cores.

# %%
import minivit
import os
from pathlib import Path

import numpy as np

from minivit import functional as F
from minivit.analysis import (attention_rollout, class_token_attention_map, mean_attention_distance,
                              patch_distances, patch_embedding_pcs, plots, position_embedding_similarity)
from minivit.data import load_dataset, normalize, stats_for

OUT = Path(os.environ.get("MINIVIT_TUTORIAL_OUT", "runs/tutorials")) / "07_inside_a_vit"
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## A small model, trained briefly
#
# Procedural shapes (32 x 32, 4 classes; set `MINIVIT_CIFAR10=/path` for CIFAR-10 instead),
# 4 x 4 patches, so an 8 x 8 grid of 64 patches plus the class token; width 48, 3 blocks,
# 3 heads. It trains for a few seconds only, so expect the *beginnings* of the paper's patterns,
# not the patterns of a model trained for days (the 8-epoch CIFAR model's figures are in
# experiments/analysis/). The checks below never depend on how well it trained.

# %%
CIFAR = os.environ.get("MINIVIT_CIFAR10")
if CIFAR:
    train_set = load_dataset("cifar10", root=CIFAR, split="train", num_samples=4000, seed=0)
    test_set = load_dataset("cifar10", root=CIFAR, split="test", num_samples=256, seed=0)
else:
    train_set = load_dataset("procedural", split="train", num_samples=2000, num_classes=4)
    test_set = load_dataset("procedural", split="test", num_samples=256, num_classes=4)
mean, std = stats_for(train_set)
x_train, y_train = normalize(train_set.images, mean, std), train_set.labels  # (B, C, H, W) float32
x_test, y_test = normalize(test_set.images, mean, std), test_set.labels
K = train_set.num_classes

P, D, L, Hh = 4, 48, 3, 3
minivit.manual_seed(0)
model = minivit.ViT(img_size=32, patch_size=P, num_classes=K, embed_dim=D, depth=L, num_heads=Hh, mlp_ratio=2.0)
untrained = minivit.ViT(config=model.config)
untrained.load_state_dict(model.state_dict())  # a copy at initialisation, for comparison
grid = model.grid_size  # (8, 8)
opt = minivit.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
order = np.random.default_rng(0)
for step in range(100):
    i = order.integers(0, len(x_train), 32)
    loss = F.cross_entropy(model(x_train[i]), y_train[i])
    loss.backward()
    opt.step()
    opt.zero_grad()
model.eval()
print(f"{model.num_parameters():,} parameters; after {step + 1} steps: loss {loss.item():.3f}")

# %% [markdown]
# ## One forward, every intermediate
#
# `model(x, out=d)` is the ordinary forward pass; given a dict it also keeps "patch_tokens",
# "with_posemb", each block's output ("blocks") and attention weights ("attention"), "encoded",
# "pre_logits" and "logits". To keep the weights, attention runs composed (softmax of q k^T, then
# times v) instead of the fused kernel; the logits are the same.

# %%
x = x_test[:32]
d = {}
with minivit.no_grad():
    logits = model(x, out=d).numpy()
    plain = model(x).numpy()  # the fused attention kernel: no weights kept
for name, value in d.items():
    print(f"{name:13s}", [v.shape for v in value] if isinstance(value, list) else value.shape)
attn = d["attention"]  # L arrays (B, Hh, N, N)
N = 1 + grid[0] * grid[1]
assert len(attn) == L and all(a.shape == (32, Hh, N, N) for a in attn)
assert all(np.allclose(a.sum(axis=-1), 1.0, atol=1e-5) for a in attn)  # each query's weights sum to 1
assert np.allclose(logits, plain, atol=1e-4)
print("test accuracy", float((model(x_test).numpy().argmax(1) == y_test).mean()), f"(chance {1 / K:.0%})")

# %% [markdown]
# ## Fig. 7 left: the patch-embedding filters
#
# The patch embedding E has D filters of C x P x P. `patch_embedding_pcs` flattens them, centres
# them and returns the principal components (the right singular vectors), each reshaped to
# (P, P, C), with the share of the variance each explains. The leading components of the
# paper's trained filters "resemble plausible basis functions for a low-dimensional
# representation of the fine structure within each patch".
#
# *Constructed case:* filters that are all multiples of one pattern vary along one direction
# only, so there is one component, it is the pattern (normalised, up to sign), and it explains
# all of the variance.

# %%
rng = np.random.default_rng(0)
pattern = rng.standard_normal((3, P, P))  # (C, P, P)
scales = rng.standard_normal(D)
comps, ratio = patch_embedding_pcs(scales[:, None, None, None] * pattern)  # filters (D, C, P, P)
unit = (pattern / np.linalg.norm(pattern)).transpose(1, 2, 0)  # (P, P, C), the components' layout
assert np.isclose(ratio[0], 1.0) and np.allclose(ratio[1:], 0.0, atol=1e-12)
assert np.allclose(comps[0], unit) or np.allclose(comps[0], -unit)
print("one pattern -> one component explaining 100%")

comps, ratio = patch_embedding_pcs(model.patch_embed.proj.weight.data, k=21)
print("trained filters, variance explained by the first components:", np.round(ratio[:6], 3))
print(plots.plot_embedding_filters(comps, OUT / "embedding_filters.png", explained=ratio))

# %% [markdown]
# ## Fig. 7 centre, Fig. 10: position-embedding similarity
#
# For each patch, the cosine similarity of its position embedding with every other patch's,
# drawn as a small grid; the paper's ImageNet models show high similarity to nearby patches and
# a row-and-column pattern (notebook 06 does this for sin-cos).
#
# *Constructed case:* give patch (i, j) the embedding [one_hot(i) ; one_hot(j)]. Two such
# vectors share a 1 where the rows agree and a 1 where the columns agree; each has norm sqrt(2);
# so their cosine similarity is (same row + same column) / 2: 1 for the patch itself, 1/2 along
# its row and column, 0 elsewhere. A first row for the class token is dropped by the measure.

# %%
gh, gw = grid
rows, cols = np.divmod(np.arange(gh * gw), gw)
onehot = np.concatenate([np.eye(gh)[rows], np.eye(gw)[cols]], axis=1)  # (Np, gh + gw)
with_cls = np.concatenate([np.ones((1, gh + gw)), onehot])  # (N, gh + gw)
sim = position_embedding_similarity(with_cls, grid, num_prefix_tokens=1)  # (gh, gw, gh, gw)
want = ((rows[:, None] == rows[None]).astype(float) + (cols[:, None] == cols[None])) / 2  # (Np, Np)
assert np.allclose(sim.reshape(gh * gw, gh * gw), want)
print(plots.plot_position_similarity(sim, OUT / "similarity_constructed.png"))

sim = position_embedding_similarity(model.position_embedding(), grid, num_prefix_tokens=1)
dist = patch_distances(grid, 1).reshape(gh, gw, gh, gw)  # in grid steps
print(f"trained: mean similarity to neighbours {sim[dist == 1].mean():.3f}, to patches further away "
      f"{sim[dist > 1.5].mean():.3f}")
print(plots.plot_position_similarity(sim, OUT / "similarity_trained.png"))

# %% [markdown]
# ## Fig. 7 right, Fig. 11: mean attention distance
#
# For each head: the distance in pixels between a query patch and the patches it attends to,
# weighted by the attention, averaged over queries and images; the ViT analogue of a CNN's
# receptive field. Class-token rows and columns are dropped (it has no place in the image), and
# each query's weights over the patches renormalised to sum to 1.
#
# *Constructed cases:* a head in which each patch attends only to itself has distance 0; one
# in which each patch attends half to the class token and half to the patch on its right
# (wrapping at the row's end) has distance P pixels within a row, and more at the wrap.

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
# almost uniformly, so its distance is the grid's average distance between two patches. In the
# paper's trained models the heads of the lowest layers spread from local (small distance) to
# global, and the distance grows with depth; our briefly trained model has hardly moved.

# %%
with minivit.no_grad():
    d0 = {}
    untrained(x, out=d0)
uniform = patch_distances(grid, P).mean()
at_init = mean_attention_distance(d0["attention"], grid, P)  # (L, Hh)
assert np.allclose(at_init, uniform, rtol=0.05)
trained = mean_attention_distance(attn, grid, P)  # (L, Hh)
print(f"uniform attention: {uniform:.2f} px\nat init:\n{np.round(at_init, 2)}\ntrained:\n{np.round(trained, 2)}")
print(plots.plot_attention_distance(trained, P, 32, OUT / "attention_distance.png"))

# %% [markdown]
# **Exercise 1.** Compute the trained model's mean attention distance of block 0 by hand from
# `attn[0]` (B, Hh, N, N) and `patch_distances(grid, P)` (Np, Np): drop the class token's row
# and column, renormalise each query's weights, weight the distances, average over queries and
# images. Result: one number per head, `by_hand` (Hh,).

# %% tags=["solution"]
a = attn[0][:, :, 1:, 1:].astype(np.float64)  # (B, Hh, Np, Np): patch queries and keys only
a = a / a.sum(axis=-1, keepdims=True)
by_hand = (a * patch_distances(grid, P)).sum(axis=-1).mean(axis=(0, 2))  # (Hh,)

# %%
assert by_hand.shape == (Hh,)
assert np.allclose(by_hand, trained[0])
print("mean attention distance by hand == the library's:", np.round(by_hand, 2))

# %% [markdown]
# ## Fig. 6, Fig. 14: attention rollout
#
# Which input patches does the class token's output draw on? Rollout (Abnar & Zuidema 2020,
# used in the paper's App. D.8) averages each block's attention over heads, accounts for the
# residual connection as A <- (A + I) / 2, renormalises rows, and multiplies the blocks:
# R = A_L ... A_2 A_1. Row 0 of R over the patch columns is the attention map.
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
assert maps.shape == (32, gh, gw) and np.allclose(maps.max(axis=(1, 2)), 1.0)
assert np.allclose(rollout.sum(axis=-1), 1.0)  # rows still sum to 1: a mixing of the input tokens
with minivit.no_grad():
    pred = model(x[:8]).numpy().argmax(axis=1)
titles = [f"{test_set.classes[p]}" for p in pred]
print(plots.plot_attention_maps(test_set.images[:8], maps[:8], OUT / "attention_maps.png", titles=titles))

# %% [markdown]
# **Exercise 2.** Roll out the trained model's attention by hand (head mean, residual, row
# normalisation, product over blocks) into `R_by_hand` (B, N, N).

# %% tags=["solution"]
R_by_hand = None
for a in attn:
    A = a.astype(np.float64).mean(axis=1)  # (B, N, N): heads fused by their mean
    A = (A + np.eye(N)) / 2  # the residual connection
    A = A / A.sum(axis=-1, keepdims=True)
    R_by_hand = A if R_by_hand is None else A @ R_by_hand  # later blocks on the left

# %%
assert R_by_hand.shape == (32, N, N)
assert np.allclose(R_by_hand, rollout)
print("rollout by hand == the library's")

# %% [markdown]
# ## What this means
#
# Each figure of Sec. 4.5 is a few lines of NumPy on arrays the forward pass already holds: the
# patch projection's weights, the position table, and every block's attention weights. Run the
# same measures on a model trained for hours (`minivit analyze CHECKPOINT`) to see the paper's
# patterns: smooth filter components, neighbour-and-row position similarity, heads whose
# distance ranges from local to global in the first blocks and grows with depth, and rollout
# maps on the object.
