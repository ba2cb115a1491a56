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
# 2. the number of parameters follows from the configuration by a short formula that you
#    derive, first for one block, then for the whole model; it is exact for every model built,
#    and it gives, without building them, the counts of the models the paper trains, close to
#    Table 1's 86M, 307M and 632M for ViT-Base, Large and Huge.
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
# Sec. 3.1 of the paper, with N patches there (Np here):
#
# $$
# \begin{aligned}
# \mathbf{z}_0 &= [\mathbf{x}_\text{class};\, \mathbf{x}^1_p \mathbf{E};\, \mathbf{x}^2_p \mathbf{E};\, \cdots;\,
#   \mathbf{x}^{N}_p \mathbf{E}] + \mathbf{E}_{pos},
#   \quad \mathbf{E} \in \mathbb{R}^{(P^2 \cdot C) \times D},\ \mathbf{E}_{pos} \in \mathbb{R}^{(N+1) \times D}
#   && (1) \\
# \mathbf{z}'_\ell &= \text{MSA}(\text{LN}(\mathbf{z}_{\ell-1})) + \mathbf{z}_{\ell-1}, \quad \ell = 1 \ldots L && (2) \\
# \mathbf{z}_\ell &= \text{MLP}(\text{LN}(\mathbf{z}'_\ell)) + \mathbf{z}'_\ell, \quad \ell = 1 \ldots L && (3) \\
# \mathbf{y} &= \text{LN}(\mathbf{z}^0_L) && (4)
# \end{aligned}
# $$
#
# In words: patch tokens, class token and positions (Eq. 1); the attention sub-block (Eq. 2); the
# MLP sub-block (Eq. 3); the class token's final state (Eq. 4). In plain text:
#
#     z_0  = [x_class; x_p^1 E; ...; x_p^Np E] + E_pos      (Eq. 1)
#     z'_l = MSA(LN(z_{l-1})) + z_{l-1},   l = 1..L         (Eq. 2)
#     z_l  = MLP(LN(z'_l)) + z'_l,         l = 1..L         (Eq. 3)
#     y    = LN(z_L^0)                                      (Eq. 4)
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
# stream of tokens.
#
# **Predict, then run.** minivit initialises the weights of the linear layers with small values
# (a truncated normal of standard deviation 0.02, timm's initialisation of a ViT). At
# initialisation, by how much does each block change the stream, relative to the size of z_0:
# about as much as z_0 itself, tens of percent, or a few percent?

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
# Every parameter of a ViT sits in one of: the patch projection E (with its bias), the class
# token, the position embedding E_pos, the L blocks, the final LayerNorm and the head. Here are
# the names and shapes of the parameters of our small model (D = 32, MLP ratio 4), first those
# of one block, then the rest:

# %%
for name, p in model.named_parameters():
    if name.startswith("blocks.0."):
        print(f"{name:28s} {p.shape}")
print()
for name, p in model.named_parameters():
    if not name.startswith("blocks."):
        print(f"{name:28s} {p.shape}")

# %% [markdown]
# **Exercise 2.** Derive, from the shapes above, the number of parameters of one block as a
# formula in the width D and the MLP ratio r (the MLP's hidden width is r * D), and write
# `block_params(D, mlp_ratio)`. Count every weight matrix and every bias and LayerNorm vector.
# The check builds blocks of several widths and ratios, ViT-Base's among them.
#
# **Predict, then run.** For a large D, which term of your formula dominates, and what is its
# coefficient at the paper's r = 4?

# %% tags=["solution"]
def block_params(D, mlp_ratio=4.0):
    hidden = int(D * mlp_ratio)
    norms = 2 * 2 * D  # norm1 and norm2: a scale and a shift each
    attention = (3 * D * D + 3 * D) + (D * D + D)  # qkv, proj
    mlp = (D * hidden + hidden) + (hidden * D + D)  # fc1, fc2
    return norms + attention + mlp


# %%
for D, heads, ratio in [(32, 4, 4.0), (48, 3, 2.0), (24, 2, 3.0), (64, 8, 1.5), (768, 12, 4.0)]:
    cfg = minivit.ViTConfig(img_size=32, patch_size=8, embed_dim=D, num_heads=heads, mlp_ratio=ratio, depth=1)
    built = minivit.vit.Block(cfg, np.float32).num_parameters()
    assert block_params(D, ratio) == built, (D, ratio, block_params(D, ratio), built)
print("your block formula is exact for every block built")
for D in (768, 1024, 1280):  # Base, Large, Huge
    print(f"D = {D}: one block has {block_params(D, 4.0):,} parameters = {block_params(D, 4.0) / D**2:.4f} D^2")
    assert 12 < block_params(D, 4.0) / D**2 < 12.02  # 4 D^2 in attention, 8 D^2 in the MLP, the rest O(D)

# %% [markdown]
# **Exercise 3.** Write `count_params(cfg)` for a whole model, given a `minivit.ViTConfig`
# (fields `img_size`, `patch_size`, `in_chans`, `embed_dim`, `depth`, `mlp_ratio`,
# `num_classes`; assume `class_token=True` and the learned position embedding), using your
# `block_params`. Work out the parts outside the blocks from the second list of shapes above;
# E_pos has one row per token, the class token's included. The check compares your count with
# real models built with several settings (sizes, patch sizes, MLP ratios, channels, classes).

# %% tags=["solution"]
def count_params(cfg):
    D, P, C, K = cfg.embed_dim, cfg.patch_size, cfg.in_chans, cfg.num_classes
    Np = (cfg.img_size // P) ** 2
    patch = P * P * C * D + D
    tokens = D + (1 + Np) * D  # class token, position embedding
    head = 2 * D + (D * K + K)  # final LayerNorm, head
    return patch + tokens + cfg.depth * block_params(D, cfg.mlp_ratio) + head


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
print("your count is exact for every model built")

# %% [markdown]
# ## Table 1: Base, Large, Huge
#
# The paper's Table 1 (Sec. 4.1) describes its three sizes by depth, width and MLP size:
#
# | model | layers | width D | MLP size | heads | params |
# |---|---|---|---|---|---|
# | ViT-Base | 12 | 768 | 3072 | 12 | 86M |
# | ViT-Large | 24 | 1024 | 4096 | 16 | 307M |
# | ViT-Huge | 32 | 1280 | 5120 | 16 | 632M |
#
# A model's count also depends on its patch size, through E (P^2 C D numbers) and E_pos (one row
# per token), and on its head (here ImageNet's 1000 classes at 224 x 224). The paper's ViTs are
# named by size and patch size, and those it trains are B/32, B/16, L/32, L/16 and H/14 (for
# example in its scaling study, Sec. 4.4). Building ViT-Huge to count it would allocate 632M
# float32 numbers (2.5 GB), so we count these five with your formula, from their
# configurations. To tie the formula to the real modules as well, each size is also built with
# a *single* block: the whole count is then that model's count plus (L - 1) blocks.
#
# **Predict, then run.** Which has more parameters, ViT-B/16 or ViT-B/32, and by roughly how
# many? (E grows with P^2; E_pos shrinks with the number of patches.)

# %%
PAPER = {"base": 86, "large": 307, "huge": 632}  # millions, Table 1
TRAINED = [("base", 32), ("base", 16), ("large", 32), ("large", 16), ("huge", 14)]  # the paper's ViTs
counts = {}
for size, P in TRAINED:
    depth, width, heads = WIDTHS[size]
    cfg = minivit.model_config(f"vit_{size}_patch{P}_224")
    assert (cfg.depth, cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio), cfg.num_heads) == (
        depth, width, 4 * width, heads)  # the rows of Table 1
    counts[size, P] = count_params(cfg)
    assert counts[size, P] == cfg.num_parameters()  # minivit's own count from the shapes
    print(f"ViT-{size[0].upper()}/{P}: {counts[size, P] / 1e6:6.2f}M   (Table 1, ViT-{size.capitalize()}: "
          f"{PAPER[size]}M)")
for size in PAPER:
    P = 14 if size == "huge" else 16
    one_block = minivit.create_model(f"vit_{size}_patch{P}_224", depth=1)
    depth, width, _ = WIDTHS[size]
    assert one_block.num_parameters() + (depth - 1) * block_params(width) == counts[size, P]
    del one_block

# %% [markdown]
# What the numbers show, and the checks below prove:
#
# * every model the paper trains is within 3% of Table 1's number for its size; the counts of
#   one size differ a little with the patch size, so Table 1's single number per size is a
#   rounded description, not the count of every model of that size;
# * between two patch sizes of one model size, the whole difference is in E and E_pos: the
#   blocks, the class token, the final LayerNorm and the head do not depend on the patch size.

# %%
for (size, P), n in counts.items():
    assert abs(n / 1e6 - PAPER[size]) / PAPER[size] < 0.03, (size, P, n)
C = 3
for size in ("base", "large"):
    D = WIDTHS[size][1]
    tokens16, tokens32 = 1 + (224 // 16) ** 2, 1 + (224 // 32) ** 2
    by_E_and_Epos = (32**2 - 16**2) * C * D + (tokens32 - tokens16) * D
    print(f"ViT-{size.capitalize()}: /32 minus /16 = {counts[size, 32] - counts[size, 16]:,} "
          f"= E {(32**2 - 16**2) * C * D:,} + E_pos {(tokens32 - tokens16) * D:,}")
    assert counts[size, 32] - counts[size, 16] == by_E_and_Epos

# %% [markdown]
# **Predict, then run.** What fraction of ViT-Base/16's parameters sit in its 12 blocks, and
# what fraction in everything else (patch projection, tokens, head)?

# %%
for size, P in TRAINED:
    depth, width, _ = WIDTHS[size]
    share = depth * block_params(width) / counts[size, P]
    print(f"ViT-{size[0].upper()}/{P}: {share:.1%} of the parameters are in the blocks")
    assert share > 0.96

# %% [markdown]
# Almost all of a ViT's parameters sit in its blocks, about 12 D^2 each: that is why Table 1
# can describe each model by its depth, width and MLP size alone, and why the number of
# *tokens* (the patch size) changes the compute (notebook 10) far more than the parameter count.
#
# Next: **05 · training**, the first training run of a small model.
