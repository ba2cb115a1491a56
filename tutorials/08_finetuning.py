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
# # 08 · Fine-tuning at a higher resolution
#
# **Goal.** Follow the paper's fine-tuning recipe (Sec. 3.2): take a pre-trained ViT, drop its
# head and attach a zero-initialised D x K layer, and fine-tune at a *higher* resolution than
# pre-training with the same patch size. The sequence gets longer, so the pre-trained position
# embeddings no longer fit; the paper interpolates them in 2D according to their place in the
# image. Sec. 3.2: "We therefore perform 2D interpolation of the pre-trained position
# embeddings, according to their location in the original image. Note that this resolution
# adjustment and patch extraction are the only points at which an inductive bias about the 2D
# structure of the images is manually injected into the Vision Transformer." We check that:
#
# 1. bilinear interpolation (`minivit.posemb.interpolate_grid`), re-derived by hand from where
#    each new patch's centre falls on the old grid, keeps a table that is linear in position
#    linear (clamped at the border);
# 2. `minivit.train.finetune` interpolates the grid part and keeps the class token's row;
# 3. a zero-initialised head starts at zero logits (loss log K) and SGD with momentum
#    (`minivit.optim.SGD`) makes the updates we compute by hand;
# 4. on a small task, fine-tuning with interpolated embeddings beats fresh ones;
# 5. the ViT trained on CIFAR-10 that ships with the course, run at 48 x 48 instead of 32 x 32,
#    keeps much more of its accuracy with interpolated embeddings than with fresh ones.
#
# **Data.** Step 5 uses CIFAR-10 test images: from `MINIVIT_CIFAR10` if set, else minivit
# downloads the official archive once into `~/.cache/minivit`.
#
# Topics (see tutorials/README.md): T7 (fine-tuning, higher resolution), T10 (SGD with momentum
# for fine-tuning). Time: about 10 s on 2 cores.

# %%
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

import minivit
from minivit import functional as F
from minivit import posemb
from minivit.analysis import plots
from minivit.data import load_dataset, normalize
from minivit.train import save_checkpoint
from minivit.train.checkpoint import load_checkpoint, model_from_checkpoint, normalization
from minivit.train.finetune import init_from_checkpoint

OUT = Path(os.environ.get("MINIVIT_TUTORIAL_OUT", "runs/tutorials")) / "08_finetuning"
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Bilinear interpolation of a grid of embeddings
#
# Think of the position table (without the class token) as a tiny image: gh x gw pixels of D
# channels, one pixel per patch. "According to their location in the original image": the
# embedding of patch i describes the patch whose *centre* is at a certain place in the image.
# Going from a 4 x 4 grid to an 8 x 8 grid of the same image, each new patch centre lies
# somewhere between old patch centres, and its embedding is the weighted mean of the old
# embeddings around it. First, where exactly?
#
# **Exercise 1.** An image of height H is cut into n_old rows of patches before and n_new rows
# after. Derive where the centre of new row i' falls, measured in old rows: a coordinate c such
# that c = 0 is the centre of old row 0, c = 1 the centre of old row 1, and so on. (Write the
# centre of new row i' in pixels, then convert pixels to old-row units.) New centres beyond the
# outermost old centres have no old row on their far side: clamp c to [0, n_old - 1] there.
# Write `centres(n_new, n_old)` returning the array of the n_new coordinates.

# %% tags=["solution"]
def centres(n_new, n_old):
    pixels = (np.arange(n_new) + 0.5) * (1.0 / n_new)  # centre of new row i', image height 1
    return np.clip(pixels * n_old - 0.5, 0, n_old - 1)  # old row k's centre is at (k + 0.5) / n_old


# %%
# A table whose value is its own row index, interpolated, is exactly the coordinate of each new row.
for n_old, n_new in [(4, 8), (4, 6), (7, 3), (4, 4), (14, 24)]:
    ramp = np.arange(n_old, dtype=np.float64)[:, None]  # (n_old, 1): a one-column grid, E(i, 0) = i
    want = posemb.interpolate_grid(ramp, (n_old, 1), (n_new, 1))[:, 0]
    assert np.allclose(centres(n_new, n_old), want), (n_old, n_new, centres(n_new, n_old), want)
print("new patch centres in old-grid coordinates:", centres(8, 4))

# %% [markdown]
# **Exercise 2.** Write `interpolate(emb, old, new)`: (oh*ow, D) -> (nh*nw, D) by bilinear
# interpolation at the coordinates of Exercise 1 (the lesson: re-derive minivit's
# `posemb.interpolate_grid`). Hint: interpolate along rows first, then along columns; a
# coordinate c lies between two old rows, and each gets a weight that grows as c gets closer.

# %% tags=["solution"]
def interpolate(emb, old, new):
    (oh, ow), (nh, nw) = old, new
    g = emb.reshape(oh, ow, -1).astype(np.float64)  # (oh, ow, D)

    def neighbours(n_new, n_old):
        c = centres(n_new, n_old)
        lo = np.floor(c).astype(int)
        return lo, np.minimum(lo + 1, n_old - 1), c - lo

    lo, hi, t = neighbours(nh, oh)
    g = g[lo] * (1 - t)[:, None, None] + g[hi] * t[:, None, None]  # (nh, ow, D)
    lo, hi, t = neighbours(nw, ow)
    g = g[:, lo] * (1 - t)[None, :, None] + g[:, hi] * t[None, :, None]  # (nh, nw, D)
    return g.reshape(nh * nw, -1)


# %%
rng = np.random.default_rng(0)
table = rng.standard_normal((4 * 4, 8))  # (Np, D) on a 4 x 4 grid
for new in [(8, 8), (6, 10), (4, 4), (2, 3)]:  # larger, non-square, the same, smaller
    assert np.allclose(interpolate(table, (4, 4), new), posemb.interpolate_grid(table, (4, 4), new))
print("bilinear interpolation by hand == posemb.interpolate_grid")

# %% [markdown]
# A table that is linear in position, E(i, j) = a i + b j + c (one a, b, c per channel), stays
# linear: bilinear interpolation reproduces linear functions exactly, so the new table is
# E evaluated at each new patch's (clamped) old coordinates. Inside the grid the step between
# neighbours shrinks by old/new; at the border the clamp repeats the outermost old value.

# %%
a, b, c = rng.standard_normal((3, 8))  # per-channel slopes and offset, D = 8
rows, cols = np.divmod(np.arange(16), 4)
linear = rows[:, None] * a + cols[:, None] * b + c  # (16, D): E(i, j) on the 4 x 4 grid
big = posemb.interpolate_grid(linear, (4, 4), (8, 8)).reshape(8, 8, 8)  # (nh, nw, D)
old_coord = np.clip((np.arange(8) + 0.5) * 4 / 8 - 0.5, 0, 3)  # [0, .25, .75, ..., 2.75, 3]
want = old_coord[:, None, None] * a + old_coord[None, :, None] * b + c
assert np.allclose(big, want)
assert np.allclose(np.diff(big[1:-1], axis=0), a / 2)  # interior rows: half the old step
assert np.allclose(big[1] - big[0], a / 4)  # at the border: new rows 0 and 1 sit at old rows 0 (clamped) and 0.25
print("a linear-in-position table stays linear after interpolation (clamped at the border)")

# %% [markdown]
# ## A task for pre-training and fine-tuning
#
# Images of noise with one bright quadrant, labelled by the quadrant (as in notebook 06): it
# can only be solved with position information, so it shows what the embeddings carry over.
# The same kind of image exists at any resolution. We pre-train at 16 x 16 (a 4 x 4 grid of
# 4 x 4 patches) and fine-tune at 32 x 32 (an 8 x 8 grid, 4x the sequence length).
#
# The model keeps its class token (so the table has a class-token row that must be handled)
# but classifies the mean of the patch tokens (`global_pool="avg"`), which learns this task
# in a few hundred steps.

# %%
def quadrant_images(n, size, seed):
    rng = np.random.default_rng(seed)
    x = 0.5 * rng.standard_normal((n, 3, size, size)).astype(np.float32)  # (B, C, H, W)
    y = rng.integers(0, 4, n)
    h = size // 2
    for k in range(4):
        qy, qx = divmod(k, 2)
        x[y == k, :, qy * h:(qy + 1) * h, qx * h:(qx + 1) * h] += 1.5
    return x, y


def accuracy(model, x, y):
    with minivit.no_grad():
        return float((model(x).numpy().argmax(axis=1) == y).mean())


def train(model, opt, x, y, steps, batch=32, seed=0):
    order = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        i = order.integers(0, len(x), batch)
        loss = F.cross_entropy(model(x[i]), y[i])
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


small = dict(patch_size=4, embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0, num_classes=4, global_pool="avg")
x16, y16 = quadrant_images(2048, 16, seed=0)
minivit.manual_seed(0)
pretrained = minivit.ViT(img_size=16, **small)
train(pretrained, minivit.optim.AdamW(pretrained.parameters(), lr=1e-2, weight_decay=0.0), x16, y16, steps=200)
x16_test, y16_test = quadrant_images(512, 16, seed=1)
print(f"pre-trained at 16 x 16: test accuracy {accuracy(pretrained, x16_test, y16_test):.1%}")
ckpt = save_checkpoint(OUT / "pretrained.npz", pretrained)

# %% [markdown]
# ## Loading at a higher resolution
#
# `init_from_checkpoint(model, path)` loads a checkpoint into a model of another size
# (`minivit train --init-from` uses it): the learned position table is interpolated from the
# old grid to the new one (`finetune.resize_pos_embed`), the class token's row is kept as it
# is, and a head that does not fit is dropped. Here the number of classes is the same, so we
# replace the head ourselves with `reset_classifier`, a zero-initialised D x K layer.

# %%
def finetune_model(interpolated):
    minivit.manual_seed(1)
    model = minivit.ViT(img_size=32, **small)  # 8 x 8 grid: pos_embed (1, 65, 32)
    fresh = model.pos_embed.data.copy()
    notes = init_from_checkpoint(model, ckpt)
    assert np.array_equal(model.head.weight.data, pretrained.head.weight.data)  # it fits, so it was loaded
    if not interpolated:
        model.pos_embed.data[:] = fresh  # everything pre-trained but the position table
    model.reset_classifier(4)  # the paper's zero-initialised head
    return model, notes


model, notes = finetune_model(interpolated=True)
old = pretrained.pos_embed.data[0]  # (1 + 16, D)
new = model.pos_embed.data[0]  # (1 + 64, D)
assert any("interpolated pos_embed" in n for n in notes)
assert np.array_equal(new[0], old[0])  # the class token's embedding, unchanged
assert np.allclose(new[1:], interpolate(old[1:], (4, 4), (8, 8)), atol=1e-6)
assert np.array_equal(model.blocks[0].attn.qkv.weight.data, pretrained.blocks[0].attn.qkv.weight.data)

# %% [markdown]
# A zero-initialised head gives zero logits for every image, so the first loss is exactly
# log K: fine-tuning starts from "no opinion" rather than from the old task's classes (Sec. 3.2).
# And with W = 0 the gradient of the loss with respect to the features, W^T (p - y), is zero:
# the first step changes only the head, not the pre-trained body.

# %%
x32, y32 = quadrant_images(2048, 32, seed=2)
x32_test, y32_test = quadrant_images(512, 32, seed=3)
with minivit.no_grad():
    logits = model(x32_test[:64]).numpy()
    first = F.cross_entropy(model(x32_test[:64]), y32_test[:64]).item()
loss = F.cross_entropy(model(x32_test[:64]), y32_test[:64])
loss.backward()
body = [(name, p) for name, p in model.named_parameters() if not name.startswith("head.")]
assert np.all(logits == 0.0)
assert math.isclose(first, math.log(4), rel_tol=1e-6)
assert all(p.grad is None or not np.any(p.grad) for _, p in body)  # no gradient into the body
assert np.any(model.head.weight.grad)  # but the head learns
model.zero_grad()
print(f"zero head: logits all 0, loss {first:.4f} = log 4, first gradients only in the head")

# %% [markdown]
# ## SGD with momentum
#
# The paper fine-tunes with SGD, momentum 0.9 (App. B.1.1). With gradient g_t the update keeps a
# velocity v_t = m v_{t-1} + g_t (v_1 = g_1) and steps p <- p - lr v_t (PyTorch's convention,
# which `minivit.optim.SGD` follows).
#
# **Exercise 3.** Apply three momentum steps by hand to `p0` with the gradients `grads` and put
# the result in `p_by_hand`.

# %%
p0 = rng.standard_normal(5).astype(np.float32)
grads = rng.standard_normal((3, 5)).astype(np.float32)
lr, momentum = 0.1, 0.9

# %% tags=["solution"]
p_by_hand, v = p0.copy(), np.zeros_like(p0)
for t, g in enumerate(grads):
    v = g if t == 0 else momentum * v + g
    p_by_hand = p_by_hand - lr * v

# %%
param = minivit.nn.Parameter(p0.copy())
sgd = minivit.optim.SGD([param], lr=lr, momentum=momentum)
for g in grads:
    param.grad = g.copy()
    sgd.step()
assert np.allclose(p_by_hand, param.data, atol=1e-6)
print("three momentum steps by hand == minivit.optim.SGD")

# %% [markdown]
# ## Interpolated against fresh embeddings
#
# Fine-tune at 32 x 32 for 60 SGD steps (lr 0.03, momentum 0.9, batch 32), once from the
# interpolated table and once with a freshly initialised one (everything else pre-trained, and
# the head zero in both). Tiny models, one seed, a toy task: read the numbers as an
# illustration of why the paper interpolates, not as a measurement.
# **Predict, then run:** both start at the same accuracy (why?). Which one ends higher after 60
# steps, and by roughly how much?

# %%
curves, acc = {}, {}
for name, interpolated in [("interpolated", True), ("fresh", False)]:
    model, _ = finetune_model(interpolated)
    acc[name + " (before)"] = accuracy(model, x32_test, y32_test)
    sgd = minivit.optim.SGD(model.parameters(), lr=0.03, momentum=0.9)
    curves[name] = train(model, sgd, x32, y32, steps=60, seed=1)
    acc[name] = accuracy(model, x32_test, y32_test)
for name, value in acc.items():
    print(f"{name:22s} test accuracy {value:.1%}")

fig = plots.Figure(figsize=(5, 3))
ax = fig.add_subplot(1, 1, 1)
for name, losses in curves.items():
    ax.plot(losses, label=name)
ax.set(xlabel="fine-tuning step", ylabel="training loss", title="fine-tuning at 32 x 32")
ax.legend()
fig.tight_layout()
fig

# %%
# Before fine-tuning the zero head ties all classes and argmax picks class 0 for every image:
assert acc["interpolated (before)"] == acc["fresh (before)"] == np.mean(y32_test == 0)
# The interpolated table carries the pre-trained sense of place to the new grid; the fresh
# one has not learned it back after 60 steps (the gap was 73-78 points over four seeds).
assert acc["interpolated"] > 0.9 and acc["interpolated"] > acc["fresh"] + 0.3
print("interpolated - fresh:", f"{acc['interpolated'] - acc['fresh']:+.1%}")

# %% [markdown]
# ## The trained CIFAR-10 model at 48 x 48
#
# The course ships a ViT trained on CIFAR-10 at 32 x 32 (`tutorials/trained/vit_mini_learn1d/`:
# 4 x 4 patches, an 8 x 8 grid, a learned 1D position embedding and a class token). Its training
# already used this section's trick once: it trained on 16 x 16 images (a 4 x 4 grid) first and
# switched to 32 x 32 for the rest, interpolating its position table at the switch.
#
# Give it CIFAR-10 test images upsampled to 48 x 48: the same patch size makes a 12 x 12 grid,
# 145 tokens. Build a 48 x 48 model and load the checkpoint with `init_from_checkpoint`, which
# interpolates the table from 8 x 8 to 12 x 12; for comparison, the same model with a fresh
# (random) table. No fine-tuning at all: how much of the 32 x 32 accuracy survives?
# **Predict, then run.**

# %%
TRAINED = next(p for p in (Path("trained"), Path("tutorials/trained")) if p.is_dir())  # Jupyter or repo root
weights = TRAINED / "vit_mini_learn1d" / "weights.npz"
cifar_ckpt = load_checkpoint(weights)
native, _ = model_from_checkpoint(cifar_ckpt)
mean, std = normalization(cifar_ckpt, 3)
test_set = load_dataset("cifar10", root=os.environ.get("MINIVIT_CIFAR10"), split="test", num_samples=1000, seed=2)
big = np.stack([np.asarray(Image.fromarray(im).resize((48, 48), Image.BILINEAR)) for im in test_set.images])
x32c, x48c, yc = normalize(test_set.images, mean, std), normalize(big, mean, std), test_set.labels

at48 = {}
for name in ("interpolated", "fresh"):
    minivit.manual_seed(0)
    m = minivit.ViT(**{**native.config.to_dict(), "img_size": 48})  # pos_embed (1, 1 + 144, D)
    fresh = m.pos_embed.data.copy()
    init_from_checkpoint(m, weights)
    if name == "fresh":
        m.pos_embed.data[:] = fresh
    at48[name] = accuracy(m.eval(), x48c, yc)
at32 = accuracy(native.eval(), x32c, yc)
print(f"32 x 32, as trained: {at32:.1%}")
for name, value in at48.items():
    print(f"48 x 48, {name:12s} table: {value:.1%}")
assert at32 > 0.6
assert at48["interpolated"] > at48["fresh"] + 0.1  # the interpolated table keeps the sense of place

# %% [markdown]
# Without any fine-tuning, the interpolated table keeps the model at about 60% (from 78% at
# 32 x 32), a fresh one drops it to about 40%: the 20 points between them are what the
# interpolated embeddings carry over about place. The rest of the loss is not about place: the
# patches themselves changed (a 4 x 4 patch of an upsampled image covers less of the object,
# and is blurrier), which is what the paper's fine-tuning at the higher resolution then adapts
# to. That a fresh table still leaves 40% says how much this model decides from the patches'
# content alone, as a bag of patches.
#
# ## What this means
#
# Fine-tuning at a higher resolution changes only the length of the sequence: the patch
# projection, the blocks and the class token fit as they are. The position table is the one
# piece tied to the grid, and interpolating it carries what it learned about *where* over to
# the new grid; a fresh table has to learn that again from the fine-tuning data.
# `minivit train --init-from CHECKPOINT --model-kwargs ...` does all of this from the command line.
