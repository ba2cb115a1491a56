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
# # 04 · The encoder and the whole model
#
# **Goal.** Follow one image through a whole ViT, equation by equation (Sec. 3.1, Eq. 1-4), and
# prove with checks that:
#
# 1. the model's forward pass is exactly Eq. 1-4: the intermediates that `model(x, out=d)` keeps
#    are reproduced by hand from the model's own modules (class token, position embedding,
#    pre-norm blocks with residuals, final LayerNorm on the class token, head);
# 2. the number of parameters follows from the configuration by a short formula, exact for
#    every model we build, and gives the paper's Table 1 counts for ViT-Base, Large and Huge
#    (86M, 307M, 632M) without building them.
#
# Topics: T3, T4 (Eq. 1-4), T9 (Table 1). Time: a few seconds.

# %%
import numpy as np

import minivit
from minivit import Tensor
from minivit.variants import WIDTHS

rng = np.random.default_rng(0)

# %% [markdown]
# ## The equations
#
#     z_0  = [x_class; x_p^1 E; ...; x_p^Np E] + E_pos      (Eq. 1)  patch tokens, class token, positions
#     z'_l = MSA(LN(z_{l-1})) + z_{l-1},   l = 1..L         (Eq. 2)  attention sub-block
#     z_l  = MLP(LN(z'_l)) + z'_l,         l = 1..L         (Eq. 3)  MLP sub-block
#     y    = LN(z_L^0)                                      (Eq. 4)  the class token's final state
#
# and a head, a linear layer from y to the K class logits. The LayerNorm sits *before* each
# sub-block ("pre-norm") and the residual connection adds the sub-block's output to its input;
# the MLP is two linear layers with a GELU between them (width D -> 4D -> D in the paper's
# models). Shape letters: B batch, Np patches, N = 1 + Np tokens, D width, Hh heads, L blocks,
# K classes.
#
# A small model, and one forward pass that keeps its named intermediates: `model(x, out=d)` is
# the forward that training runs, asked to store what it computes (attention then takes its
# composed path, which keeps the weights, instead of the fused kernel; notebook 03 checks that the
# two agree):

# %%
minivit.manual_seed(0)
model = minivit.ViT(img_size=32, patch_size=8, in_chans=3, embed_dim=32, depth=3, num_heads=4, num_classes=10)
model.head.weight.data[:] = rng.normal(size=model.head.weight.shape)  # the head starts at zero; see below
model.eval()
x = rng.normal(size=(2, 3, 32, 32)).astype(np.float32)  # (B, C, H, W)
d = {}
with minivit.no_grad():
    logits = model(x, out=d).numpy()
for name, value in d.items():
    shapes = [a.shape for a in value] if isinstance(value, list) else value.shape
    print(f"{name:13s} {shapes}")
B, D, L, Hh, K = 2, 32, 3, 4, 10
Np = (32 // 8) ** 2
N = 1 + Np
assert d["patch_tokens"].shape == (B, Np, D) and d["with_posemb"].shape == (B, N, D)
assert len(d["blocks"]) == L and all(z.shape == (B, N, D) for z in d["blocks"])
assert len(d["attention"]) == L and all(a.shape == (B, Hh, N, N) for a in d["attention"])
assert d["encoded"].shape == (B, N, D) and d["pre_logits"].shape == (B, D) and logits.shape == (B, K)

# %% [markdown]
# ## Eq. 1: class token and position embedding
#
# The patch tokens x_p^i E come from notebook 01. A learnable vector x_class (`cls_token`,
# (1, 1, D)), like BERT's [class] token, is put in front of them, and a learnable position
# embedding E_pos (`pos_embed`, (1, N, D): one vector per place in the sequence, the class
# token's included) is added.

# %%
cls = np.broadcast_to(model.cls_token.data, (B, 1, D))  # (B, 1, D)
z0 = np.concatenate([cls, d["patch_tokens"]], axis=1) + model.pos_embed.data  # (B, N, D)
assert model.cls_token.shape == (1, 1, D) and model.pos_embed.shape == (1, N, D)
assert np.allclose(z0, d["with_posemb"], atol=1e-6)
print("Eq. 1 reproduced: z_0 = [x_class; x_p E] + E_pos")

# %% [markdown]
# ## Eq. 2-3: a pre-norm block
#
# **Exercise 1.** Write `block_forward(block, z)` for one of the model's blocks
# (`model.blocks[l]`, with modules `norm1`, `attn`, `norm2`, `mlp`; each is callable on a
# Tensor), following Eq. 2 and 3. Then run the three blocks from z_0.

# %% tags=["solution"]
def block_forward(block, z):
    z = z + block.attn(block.norm1(z))  # z'_l = MSA(LN(z_{l-1})) + z_{l-1}    (Eq. 2)
    return z + block.mlp(block.norm2(z))  # z_l = MLP(LN(z'_l)) + z'_l        (Eq. 3)


# %%
z = Tensor(z0)
with minivit.no_grad():
    for l, block in enumerate(model.blocks):
        z = block_forward(block, z)
        assert np.allclose(z.numpy(), d["blocks"][l], atol=1e-5), f"block {l} differs"
print("Eq. 2-3 reproduced for every block")

# %% [markdown]
# The MLP inside `block.mlp` is itself fc1 -> GELU -> fc2; the attention is notebook 03's
# multi-head attention. Because of the residual connections, each block *adds* to a running
# stream of tokens: at initialisation the sub-blocks' outputs are small, so z_l starts close
# to z_0 and every block learns a correction. We can see that in the numbers:

# %%
relative = [np.linalg.norm(d["blocks"][l] - (d["blocks"][l - 1] if l else z0)) / np.linalg.norm(z0) for l in range(L)]
print("size of each block's update relative to z_0:", np.round(relative, 3))
assert max(relative) < 0.1  # at initialisation each block changes the stream by a few percent at most

# %% [markdown]
# ## Eq. 4 and the head
#
# After the last block a final LayerNorm (`model.norm`) is applied, and the class token's state,
# y = LN(z_L^0), is the image's representation. The head is one linear layer (D -> K). In the
# paper it is an MLP with one hidden layer during pre-training and a single linear layer for
# fine-tuning; minivit's `representation_size` option adds the pre-training hidden layer.
# minivit, like the paper for fine-tuning, initialises the head to zero (Sec. 3.2), which is
# why we filled it with random numbers above. With `global_pool="avg"` the mean of the patch
# tokens replaces the class token (notebook 05 compares the two).

# %%
with minivit.no_grad():
    encoded = model.norm(z).numpy()  # (B, N, D)
    y = encoded[:, 0]  # (B, D): the class token, Eq. 4
    by_hand = y @ model.head.weight.data.T + model.head.bias.data  # (B, K)
assert np.allclose(encoded, d["encoded"], atol=1e-5)
assert np.allclose(y, d["pre_logits"], atol=1e-5)
assert np.allclose(by_hand, logits, atol=1e-4)
fresh = minivit.ViT(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=4, num_classes=10)
assert not fresh.head.weight.data.any()  # a new model's head is zero: every logit starts at 0
print("Eq. 4 and the head reproduced: the logits by hand equal the model's")

# %% [markdown]
# ## Counting parameters
#
# Every parameter of a standard ViT (learned 1D position embedding, class token, MLP ratio r)
# is in one of these:
#
# | part | parameters |
# |---|---|
# | patch projection E and its bias | P^2 C D + D |
# | class token, position embedding | D + (1 + Np) D |
# | one block: 2 LayerNorms, qkv, output projection, MLP | 4D + (3D^2 + 3D) + (D^2 + D) + (2 r D^2 + r D + D) |
# | final LayerNorm, head | 2D + (D K + K) |
#
# **Exercise 2.** Write `count_params(cfg)` for a `minivit.ViTConfig` (fields `img_size`,
# `patch_size`, `in_chans`, `embed_dim`, `depth`, `mlp_ratio`, `num_classes`; assume
# `class_token=True` and the learned position embedding). The check compares it with the number
# of parameters of real models, built with several settings (sizes, patch sizes, MLP ratios,
# channels, classes).

# %% tags=["solution"]
def count_params(cfg):
    D, P, C, K = cfg.embed_dim, cfg.patch_size, cfg.in_chans, cfg.num_classes
    hidden = int(D * cfg.mlp_ratio)
    Np = (cfg.img_size // P) ** 2
    patch = P * P * C * D + D
    tokens = D + (1 + Np) * D  # class token, position embedding
    block = 4 * D + (3 * D * D + 3 * D) + (D * D + D) + (2 * D * hidden + hidden + D)
    head = 2 * D + (D * K + K)  # final LayerNorm, head
    return patch + tokens + cfg.depth * block + head


# %%
for kw in [dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=4, num_classes=10),
           dict(img_size=32, patch_size=4, embed_dim=48, depth=2, num_heads=3, num_classes=100, mlp_ratio=2.0),
           dict(img_size=28, patch_size=7, in_chans=1, embed_dim=24, depth=1, num_heads=2, num_classes=10),
           dict(img_size=64, patch_size=16, embed_dim=64, depth=4, num_heads=8, num_classes=1000)]:
    cfg = minivit.ViTConfig(**kw)
    built = minivit.ViT(config=cfg).num_parameters()
    assert count_params(cfg) == built, (kw, count_params(cfg), built)
for name in ["vit_testing", "vit_demo_patch4_32", "vit_cifar_patch4_32"]:
    assert count_params(minivit.model_config(name)) == minivit.create_model(name).num_parameters()
print("the formula is exact for every model built")

# %% [markdown]
# ## Table 1: Base, Large, Huge
#
# | model | layers | width D | MLP size | heads | params |
# |---|---|---|---|---|---|
# | ViT-Base | 12 | 768 | 3072 | 12 | 86M |
# | ViT-Large | 24 | 1024 | 4096 | 16 | 307M |
# | ViT-Huge | 32 | 1280 | 5120 | 16 | 632M |
#
# Building ViT-Huge to count it would allocate 632M float32 numbers (2.5 GB), so we count from
# the configurations with the formula we just checked. To tie the formula to the real
# Base/Large/Huge modules as well, we build each one with a *single* block (a few hundred MB at
# most): the whole count is then that model's count plus (L - 1) times one block's.
#
# Table 1 gives one number per size, but the count depends a little on the patch size (E has
# P^2 C D entries, E_pos one row per patch) and on the head (here ImageNet's 1000 classes at
# 224 x 224). So we compute the count at patch 14, 16 and 32.

# %%
PAPER = {"base": 86, "large": 307, "huge": 632}  # millions, Table 1
counts = {}
for size in PAPER:
    depth, width, heads = WIDTHS[size]
    for P in (14, 16, 32):
        cfg = minivit.model_config(f"vit_{size}_patch{P}_224")
        assert (cfg.depth, cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio), cfg.num_heads) == (
            depth, width, 4 * width, heads)
        counts[size, P] = count_params(cfg)
    one_block = minivit.create_model(f"vit_{size}_patch16_224", depth=1)
    assert one_block.num_parameters() + (depth - 1) * one_block.blocks[0].num_parameters() == counts[size, 16]
    del one_block
    print(f"ViT-{size.capitalize():5s} (Table 1: {PAPER[size]}M): "
          + ", ".join(f"/{P}: {counts[size, P] / 1e6:.2f}M" for P in (14, 16, 32)))

# %% [markdown]
# The checks below say what the numbers show:
#
# * the paper's counts are those of the Table 1 configurations: within 1% at patch 16 and within
#   3% at every patch size (ViT-B/32's larger patch projection puts it furthest, at 88.2M);
# * rounded to the nearest million, the paper's number is the count of one of the patch sizes
#   the paper trained: 86M is ViT-B/14 (B/16 has 86.57M, usually quoted as "86M" by truncating),
#   307M is ViT-L/32 (L/16 has 304.3M), 632M is ViT-H/14 (and H/16).

# %%
for (size, P), n in counts.items():
    assert abs(n / 1e6 - PAPER[size]) / PAPER[size] < (0.01 if P == 16 else 0.03), (size, P, n)
for size, paper in PAPER.items():
    assert paper in {round(counts[size, P] / 1e6) for P in (14, 16, 32)}, size
assert round(counts["base", 14] / 1e6) == 86 and int(counts["base", 16] / 1e6) == 86
assert round(counts["large", 32] / 1e6) == 307 and round(counts["large", 16] / 1e6) == 304
assert round(counts["huge", 14] / 1e6) == 632 == round(counts["huge", 16] / 1e6)

# %% [markdown]
# Almost all of a ViT's parameters sit in its blocks, 12 D^2 per block (4 D^2 in attention, 8 D^2
# in the MLP): the patch projection, the tokens and the head are under 2% of ViT-Base. That is
# why Table 1 can describe each model by its depth, width and MLP size alone, and why the
# number of *tokens* (the patch size) changes the compute (notebook 10) far more than the
# parameter count.

# %%
for size in PAPER:
    cfg = minivit.model_config(f"vit_{size}_patch16_224")
    in_blocks = cfg.depth * (12 * cfg.embed_dim**2 + 13 * cfg.embed_dim)
    print(f"ViT-{size.capitalize():5s}/16: {in_blocks / counts[size, 16]:.1%} of the parameters are in the blocks")
    assert in_blocks / counts[size, 16] > 0.98

# %% [markdown]
# Next: **05 · training**, the first training run of a small model.
