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
# # 01 · An image is a sequence of patches
#
# **Goal.** Turn an image into the sequence of tokens a Transformer reads, the way the paper
# does (Sec. 3.1, Eq. 1), and prove three things with checks:
#
# 1. cutting an image into P x P patches and multiplying each flattened patch by one matrix E
#    gives exactly minivit's patch embedding, and exactly a convolution with kernel P and
#    stride P;
# 2. the number of tokens follows from the image and patch sizes alone: you predict it for the
#    paper's models and for minivit's CIFAR model, and the model configurations confirm it;
# 3. attention on raw pixels is out of reach: you count the attention scores a 256 x 256 image
#    would need, one token per pixel (topic T1).
#
# Topics (see tutorials/README.md): T1, T2, T3, T4 (Eq. 1). Time: a few seconds.

# %%
import os
from pathlib import Path

import numpy as np

import minivit
from kernels.reference.dense import patchify as reference_patchify
from minivit import Tensor
from minivit import functional as F
from minivit.analysis import plots
from minivit.data import load_dataset

OUT = Path(os.environ.get("MINIVIT_TUTORIAL_OUT", "runs/tutorials"))
OUT.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)

# %% [markdown]
# ## Why patches
#
# The Transformer (Vaswani et al. 2017) took over NLP because it is computationally efficient
# and scalable: bigger models trained on more text kept improving, and self-supervised
# pre-training (BERT, GPT) made the data nearly free (topic T2). Its core, self-attention, lets
# every element of a sequence look at every other one. For images that is the problem: with one
# token per pixel the sequence is H * W long and attention compares every pair. The paper's
# answer is to make tokens out of *patches*: split the image into a grid of P x P squares,
# flatten each, and project it linearly to the model width D. The rest of the model is a
# standard Transformer encoder (notebooks 03 and 04).
#
# ## The data
#
# Images come from minivit's procedural dataset: 32 x 32 RGB shapes generated in code, so
# nothing is downloaded. Set `MINIVIT_CIFAR10=/path/to/cifar10` (the `cifar-10-batches-py`
# folder or an image-folder tree) to use CIFAR-10 images instead; every check below holds for
# either.

# %%
CIFAR = os.environ.get("MINIVIT_CIFAR10")
if CIFAR:
    ds = load_dataset("cifar10", root=CIFAR, split="test", num_samples=8, seed=0)
else:
    ds = load_dataset("procedural", split="test", num_samples=8, seed=0)
images_hwc = ds.images  # (B, H, W, C) uint8, as stored
x = (images_hwc.astype(np.float32) / 255.0).transpose(0, 3, 1, 2).copy()  # (B, C, H, W): minivit's layout
B, C, H, W = x.shape
print(ds, "-> x", x.shape, x.dtype)

# %% [markdown]
# ## Patchify by hand
#
# Sec. 3.1: "we reshape the image x ∈ R^(H×W×C) into a sequence of flattened 2D patches
# x_p ∈ R^(N×(P^2·C))" (the paper's N is our Np). With B images of C x H x W and patch size P,
# the patch grid is gh x gw = H/P x W/P and there are Np = gh * gw patches, taken in raster
# order (row by row). Each patch is flattened in the order (C, P, P), the order of the weights
# of a PyTorch/timm convolution, so that the same numbers can be read as a matrix or as a
# convolution kernel.
#
# **Exercise 1.** Write `patchify(x, P)`: (B, C, H, W) -> (B, Np, C*P*P), token i*gw + j being
# the patch at grid row i and column j, flattened in the order (C, P, P). Use NumPy reshapes and
# one transpose, no Python loop. Hint: a reshape can only split or merge *neighbouring* axes;
# think about which axes of the image must become neighbours before the last reshape.

# %% tags=["solution"]
def patchify(x, P):
    B, C, H, W = x.shape
    gh, gw = H // P, W // P
    x = x.reshape(B, C, gh, P, gw, P)  # (B, C, gh, P, gw, P)
    x = x.transpose(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, P, P)
    return x.reshape(B, gh * gw, C * P * P)  # (B, Np, C*P*P)


# %%
P = 4
patches = patchify(x, P)  # (B, Np, C*P*P)
gh, gw = H // P, W // P
assert patches.shape == (B, gh * gw, C * P * P) == (B, 64, 48)
# Patch (i, j) is the (C, P, P) block of pixels at rows iP..iP+P-1 and columns jP..jP+P-1,
# token i*gw + j of the sequence:
for i, j in [(0, 0), (0, 7), (3, 5), (7, 7)]:
    block = x[:, :, i * P:(i + 1) * P, j * P:(j + 1) * P]  # (B, C, P, P)
    assert np.array_equal(patches[:, i * gw + j], block.reshape(B, -1))
# and it is the patchify that minivit's reference kernel uses:
assert np.array_equal(patches, reference_patchify(x, P))
print("patchify: ok,", patches.shape)

# %% [markdown]
# Here is the first image cut into its 8 x 8 grid of 4 x 4 patches, and the same patches laid
# out as the sequence the model reads (raster order, left to right). The figure is also written
# to the output folder.

# %%
fig = plots.Figure(figsize=(11, 2.8))
axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 4]})
axes[0].imshow(images_hwc[0])
for t in range(0, H + 1, P):
    axes[0].axhline(t - 0.5, color="white", lw=0.7)
    axes[0].axvline(t - 0.5, color="white", lw=0.7)
axes[0].set_title(f"{H}x{W} image, {P}x{P} patches")
axes[0].set_xticks([])
axes[0].set_yticks([])
tiles = patches[0].reshape(gh * gw, C, P, P).transpose(0, 2, 3, 1)[:16]  # (16, P, P, C): tokens 0-15
strip = np.concatenate([np.pad(t, ((0, 0), (0, 1), (0, 0)), constant_values=1) for t in tiles], axis=1)
axes[1].imshow(strip)
axes[1].set_xticks(np.arange(16) * (P + 1) + (P - 1) / 2, [str(i) for i in range(16)])
axes[1].set_yticks([])
axes[1].set_title(f"tokens 0-15 of {gh * gw} (the first two rows of patches), in raster order")
plots.save(fig, OUT / "01_patches.png")
assert (OUT / "01_patches.png").stat().st_size > 0
fig

# %% [markdown]
# ## How many tokens
#
# Each patch is one token. The paper pre-trains on 224 x 224 ImageNet-sized images and names
# its models by size and patch size: ViT-L/16 is ViT-Large with 16 x 16 patches. The ViTs it
# trains are B/32, B/16, L/32, L/16 and H/14.
#
# **Predict, then run.** How many patch tokens does ViT-B/16 read at 224 x 224? ViT-H/14?
# ViT-B/32? And minivit's CIFAR model, 32 x 32 images in 4 x 4 patches? Work them out before
# running the cell, which reads the grids from minivit's model configurations (no model is
# built). A class token (notebook 04) adds one more token to each.

# %%
rows = []
for name in ["vit_base_patch16_224", "vit_huge_patch14_224", "vit_base_patch32_224", "vit_cifar_patch4_32",
             "vit_testing"]:
    cfg = minivit.model_config(name)
    g = cfg.grid_size
    rows.append((name, cfg.img_size, cfg.patch_size, g, g[0] * g[1]))
    assert g[0] * g[1] == cfg.img_size**2 // cfg.patch_size**2  # N = HW / P^2
    print(f"{name:24s} {cfg.img_size:4d}/{cfg.patch_size:<3d} grid {g[0]:2d}x{g[1]:<2d} -> {g[0] * g[1]:4d} patches")
tokens = {r[0]: r[4] for r in rows}
assert tokens["vit_base_patch16_224"] == 196 and tokens["vit_cifar_patch4_32"] == 64
assert tokens["vit_huge_patch14_224"] == 256 and tokens["vit_base_patch32_224"] == 49
assert minivit.create_model("vit_testing").num_tokens == tokens["vit_testing"] + 1  # + the class token

# %% [markdown]
# ## Attention on raw pixels
#
# Self-attention computes one score for every (query, key) pair: N^2 scores per head and image.
# With one token per pixel, a 256 x 256 image is a sequence of 65,536 tokens.
#
# **Predict, then run.** How many attention scores is that, per head and image, and how much
# memory would they take in float32 (4 bytes each)? By what factor do 16 x 16 patches divide
# the number of scores?

# %%
pixels = 256 * 256
scores_pixels = pixels**2
scores_patches = ((256 // 16) ** 2) ** 2  # 16 x 16 patches: 256 tokens
print(f"pixels as tokens : {pixels:,} tokens -> {scores_pixels:,} scores "
      f"({scores_pixels * 4 / 2**30:.0f} GiB in float32, per head and image)")
print(f"16x16 patches    : {(256 // 16) ** 2:,} tokens -> {scores_patches:,} scores")
assert scores_pixels == 4_294_967_296
assert scores_pixels * 4 == 16 * 2**30  # 16 GiB of float32 for one attention matrix
assert scores_pixels // scores_patches == 16**4  # patches of P x P divide the cost by P^4

# %% [markdown]
# That is why earlier work used attention only locally, or on small images, or along one axis
# at a time (axial attention, notebook 14). Patches divide the sequence length by P^2 and the
# attention cost by P^4; notebook 10 measures what remains of the quadratic cost in practice.
#
# ## The patch projection E
#
# Eq. 1 projects every flattened patch with the same matrix E of shape (P^2 C, D):
# z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos. minivit stores E the way timm stores its
# convolution, `patch_embed.proj.weight` with shape (D, C, P, P), plus a bias (D,). Reshaped to
# (D, C*P*P) and transposed it *is* E. Below, our patchify and one matrix product reproduce the
# model's patch tokens, both from the module and from the model's own forward pass
# (`model(x, out=d)` keeps the intermediates of the forward it runs).

# %%
minivit.manual_seed(0)
model = minivit.ViT(img_size=32, patch_size=P, embed_dim=48, depth=1, num_heads=3, num_classes=10)
weight = model.patch_embed.proj.weight.data  # (D, C, P, P)
bias = model.patch_embed.proj.bias.data  # (D,)
bias[:] = rng.normal(size=bias.shape)  # a non-zero bias, so that the check covers it too
E = weight.reshape(weight.shape[0], -1).T  # (C*P*P, D)
by_hand = patchify(x, P) @ E + bias  # (B, Np, D)

d = {}
with minivit.no_grad():
    model(x, out=d)
    from_module = model.patch_embed(x).numpy()  # (B, Np, D)
assert E.shape == (C * P * P, 48)
assert np.allclose(by_hand, from_module, atol=1e-5)
assert np.allclose(by_hand, d["patch_tokens"], atol=1e-5)
print("patchify + matmul == minivit's patch embedding:", by_hand.shape)

# %% [markdown]
# ## The same thing as a strided convolution
#
# A convolution with kernel size P slides a (C, P, P) filter over the image; with stride P the
# windows do not overlap and tile the image exactly, so each output position sees one patch,
# and each of the D filters is one column of E. That is why implementations write the patch
# embedding as `Conv2d(C, D, kernel_size=P, stride=P)`.
#
# **Exercise 2.** Write `conv2d(x, w, b, stride)`: a convolution without padding, as deep
# learning libraries define it (no kernel flip). x (B, C, H, W), w (D, C, k, k), b (D,) ->
# (B, D, Ho, Wo). Output (i, j) of filter d is the sum of w[d] times the k x k window of x whose
# top-left corner is at row i * stride, column j * stride, over all C channels, plus b[d].
# Work out Ho and Wo yourself (how many windows fit?). Loop over the output positions (i, j);
# use `np.einsum` or `np.tensordot` for the sum.
#
# The check compares your convolution with minivit's `F.conv2d` at stride P (the patch
# embedding) and at a stride smaller than the kernel, where windows overlap.

# %% tags=["solution"]
def conv2d(x, w, b, stride):
    B, C, H, W = x.shape
    D, _, k, _ = w.shape
    Ho, Wo = (H - k) // stride + 1, (W - k) // stride + 1
    out = np.empty((B, D, Ho, Wo), dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            window = x[:, :, i * stride:i * stride + k, j * stride:j * stride + k]  # (B, C, k, k)
            out[:, :, i, j] = np.einsum("bcuv,dcuv->bd", window, w) + b
    return out


# %%
conv = conv2d(x, weight, bias, stride=P)  # (B, D, gh, gw)
assert conv.shape == (B, 48, gh, gw)
as_tokens = conv.reshape(B, 48, gh * gw).transpose(0, 2, 1)  # (B, Np, D): the grid in raster order
assert np.allclose(as_tokens, by_hand, atol=1e-5)
assert np.allclose(as_tokens, d["patch_tokens"], atol=1e-5)
# minivit's convolution, and a stride smaller than the kernel: the windows overlap, so there are
# more tokens than patches, and it is no longer Eq. 1.
with minivit.no_grad():
    for stride in (P, P // 2, 3):
        library = F.conv2d(Tensor(x), Tensor(weight), Tensor(bias), stride=stride).numpy()
        mine = conv2d(x, weight, bias, stride)
        assert mine.shape == library.shape and np.allclose(mine, library, atol=1e-5), stride
assert conv2d(x, weight, bias, stride=P // 2).shape[2:] == (2 * gh - 1, 2 * gw - 1)
print("strided convolution == patchify + matmul == minivit's patch embedding")

# %% [markdown]
# ## What this means
#
# The patch embedding looks at each patch on its own: the same E for every position, no
# knowledge of where a patch came from. So far the sequence could be shuffled without changing
# any token; position embeddings (notebooks 04 and 06) are the only place the model is told
# where a patch sits, and notebook 03 proves that without them a ViT cannot tell the order of
# its patches at all. Notebook 07 shows what the filters of E look like after training.
#
# Next: **02 · autograd**, how minivit computes the gradients that train E and everything else.
