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
# # 09 · Few-shot linear evaluation
#
# **Goal.** Re-derive the paper's second metric (Sec. 4.1, "Metrics"): *few-shot linear
# accuracy*, "obtained by solving a regularized least-squares regression problem that maps the
# (frozen) representation of a subset of training images to {-1, 1}^K target vectors", in
# closed form. We check that:
#
# 1. the closed form written by hand makes exactly the predictions of
#    `minivit.analysis.fewshot.fewshot_linear_eval`;
# 2. its primal and dual forms give the same weights (the dual is the cheap one when there are
#    fewer examples than features, the usual few-shot case);
# 3. with a tiny regulariser it fits any few-shot training set exactly, and on a constructed
#    separable set it classifies held-out points almost perfectly;
#
# then measure few-shot accuracy of frozen ViT features on held-out classes.
#
# Topics (see tutorials/README.md): T11 (metrics). Time: about 10 s on 2 idle cores.

# %%
import minivit
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from minivit import functional as F
from minivit.analysis import fewshot_linear_eval, sample_shots
from minivit.data import load_dataset, normalize, stats_for

OUT = Path(os.environ.get("MINIVIT_TUTORIAL_OUT", "runs/tutorials")) / "09_fewshot"
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## The closed form
#
# With n training images, features X (n, F) and labels in 0..K-1:
#
# 1. standardise each feature with the training mean and std (test features with the same);
# 2. append a constant column of 100, so that the bias is a weight too but is hardly
#    regularised (big_vision's evaluator does this);
# 3. targets Y (n, K): +1 in the column of the true class, -1 elsewhere;
# 4. W = argmin ||X W - Y||^2 + lambda ||W||^2 = (X^T X + lambda I)^{-1} X^T Y;
# 5. predict argmax_k (x W)_k.
#
# A constructed set to try it on: K = 5 classes in F = 16 dimensions, each class a point
# (4 times a unit vector of its own) plus Gaussian noise of std 0.5 in every dimension.

# %%
K, Fdim = 5, 16
rng = np.random.default_rng(0)


def blobs(n_per_class, seed):
    g = np.random.default_rng(seed)
    y = np.repeat(np.arange(K), n_per_class)
    x = 4.0 * np.eye(K, Fdim)[y] + 0.5 * g.standard_normal((len(y), Fdim))  # (n, F)
    return x, y


pool_x, pool_y = blobs(50, seed=1)  # a labelled pool to draw shots from
test_x, test_y = blobs(200, seed=2)
shots = sample_shots(pool_y, 5, seed=0)  # indices: exactly 5 per class
assert np.array_equal(np.bincount(pool_y[shots]), [5] * K)
train_x, train_y = pool_x[shots], pool_y[shots]


def closed_form(train_x, train_y, test_x, K, l2=1.0):
    """W (F + 1, K) and the test predictions (m,), by the primal normal equations."""
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-5
    Xtr = np.column_stack([(train_x - mean) / std, np.full(len(train_x), 100.0)])  # (n, F + 1)
    Xte = np.column_stack([(test_x - mean) / std, np.full(len(test_x), 100.0)])  # (m, F + 1)
    Y = 2.0 * np.eye(K)[train_y] - 1.0  # (n, K) in {-1, 1}
    W = np.linalg.solve(Xtr.T @ Xtr + l2 * np.eye(Xtr.shape[1]), Xtr.T @ Y)  # (F + 1, K)
    return W, Xtr, Y, (Xte @ W).argmax(axis=1)


W, Xtr, Y, pred = closed_form(train_x, train_y, test_x, K)
acc_by_hand = float(np.mean(pred == test_y))
acc_library = fewshot_linear_eval(train_x, train_y, test_x, test_y, K)
# Same accuracy, and the same prediction for every test point: scored against our own
# predictions as labels, the library's are all "right".
assert acc_by_hand == acc_library
assert fewshot_linear_eval(train_x, train_y, test_x, pred, K) == 1.0
print(f"5-shot accuracy on the constructed set: by hand {acc_by_hand:.1%}, library {acc_library:.1%}")

# %% [markdown]
# **Exercise 1.** The normal equations solve an (F+1) x (F+1) system. The *dual* form
# W = X^T (X X^T + lambda I)^{-1} Y solves an n x n one instead (the push-through identity
# (X^T X + lambda I)^{-1} X^T = X^T (X X^T + lambda I)^{-1}): the cheaper one in the usual
# few-shot case of fewer examples than features (below: 6 to 150 images of 3,072 pixels).
# The library picks the smaller system. Compute `W_dual` from `Xtr` and `Y`.

# %% tags=["solution"]
W_dual = Xtr.T @ np.linalg.solve(Xtr @ Xtr.T + 1.0 * np.eye(len(Xtr)), Y)  # (F + 1, K)

# %%
assert W_dual.shape == W.shape
assert np.allclose(W_dual, W, atol=1e-8)
print(f"dual form ({len(Xtr)} x {len(Xtr)} system) == primal form ({Xtr.shape[1]} x {Xtr.shape[1]})")

# %% [markdown]
# Three properties to check. With fewer examples than features, the rows of X are
# (generically) independent, so as lambda -> 0 the regression fits every training target
# exactly: training accuracy 100% whatever the labels, even random ones; that is why the *test*
# accuracy is the metric. On the constructed set the classes are far apart compared with the
# noise, so 5 shots already put almost every held-out point in its class. And the quality of the
# features matters: append 48 features of pure noise and standardisation scales them up to the
# same weight as the informative ones; with 25 examples the regression then fits some of that
# noise, and held-out accuracy drops.

# %%
random_labels = np.random.default_rng(3).integers(0, K, len(train_x))
noisy_train = np.column_stack([train_x, rng.standard_normal((len(train_x), 48))])  # (25, 64): F + 1 > n
noisy_test = np.column_stack([test_x, rng.standard_normal((len(test_x), 48))])
W0, X0, Y0, _ = closed_form(noisy_train, random_labels, noisy_test, K, l2=1e-8)
assert np.allclose(X0 @ W0, Y0, atol=1e-3)  # every target hit: a perfect fit of random labels
assert fewshot_linear_eval(noisy_train, random_labels, noisy_train, random_labels, K, l2_reg=1e-8) == 1.0
acc_noisy = fewshot_linear_eval(noisy_train, train_y, noisy_test, test_y, K)
assert acc_library > 0.95
assert acc_noisy < acc_library - 0.1
print(f"random labels fitted exactly; real labels: {acc_library:.1%} on held-out points, "
      f"{acc_noisy:.1%} with 48 noise features appended")

# %% [markdown]
# ## Frozen features of a ViT
#
# Now the use the paper makes of it: how good are a model's frozen representations (the
# pre-logits, `model.forward_head(tokens, pre_logits=True)`) for classes it never saw? We
# pre-train a tiny ViT for a few seconds on 4 of the procedural shapes (circle, square,
# triangle, cross) and evaluate few-shot on the 6 others (ring, bars, diamond, x, L), against
# the same model at initialisation and raw pixels. Set `MINIVIT_CIFAR10=/path` to pre-train on
# CIFAR-10's classes 0-3 and evaluate on 4-9 instead.

# %%
CIFAR = os.environ.get("MINIVIT_CIFAR10")
if CIFAR:
    full = load_dataset("cifar10", root=CIFAR, split="train", num_samples=2500, seed=0)
    held = load_dataset("cifar10", root=CIFAR, split="test", num_samples=500, seed=0)
else:
    full = load_dataset("procedural", split="train", num_samples=2500, num_classes=10)
    held = load_dataset("procedural", split="test", num_samples=500, num_classes=10)
mean, std = stats_for(full)
seen = full.labels < 4
pre_x, pre_y = normalize(full.images[seen], mean, std), full.labels[seen]  # classes 0-3: pre-training
pool = np.flatnonzero(~seen)[:600]  # classes 4-9: about 100 images each to draw the shots from
new_x, new_y = normalize(full.images[pool], mean, std), full.labels[pool] - 4
test_new = held.labels >= 4
new_test_x, new_test_y = normalize(held.images[test_new], mean, std), held.labels[test_new] - 4

minivit.manual_seed(0)
cfg = dict(img_size=32, patch_size=4, embed_dim=48, depth=2, num_heads=3, mlp_ratio=2.0, num_classes=4)
model = minivit.ViT(**cfg)
untrained = minivit.ViT(**cfg)
untrained.load_state_dict(model.state_dict())
opt = minivit.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
order = np.random.default_rng(0)
for step in range(100):
    i = order.integers(0, len(pre_x), 32)
    loss = F.cross_entropy(model(pre_x[i]), pre_y[i])
    loss.backward()
    opt.step()
    opt.zero_grad()
print(f"pre-trained {step + 1} steps on 4 classes: last loss {loss.item():.3f}")


def features(model, x):
    """Frozen pre-logits (B, D) of normalised images, without gradients."""
    model.eval()
    with minivit.no_grad():
        return model.forward_head(model.forward_features(x), pre_logits=True).numpy()


feats = {"pixels": (new_x.reshape(len(new_x), -1), new_test_x.reshape(len(new_test_x), -1)),
         "ViT at init": (features(untrained, new_x), features(untrained, new_test_x)),
         "ViT pre-trained": (features(model, new_x), features(model, new_test_x))}
assert feats["ViT pre-trained"][0].shape == (len(new_x), cfg["embed_dim"])

# %%
shot_counts = (1, 5, 10, 25)
results = {name: [] for name in feats}
for name, (pool, test) in feats.items():
    for k in shot_counts:
        accs = [fewshot_linear_eval(pool[idx], new_y[idx], test, new_test_y, 6)
                for idx in (sample_shots(new_y, k, seed=s) for s in range(3))]  # 3 draws of the shots
        results[name].append(float(np.mean(accs)))
print("shots per class:", shot_counts, "(6 classes, chance 16.7%)")
for name, accs in results.items():
    print(f"{name:16s}", "  ".join(f"{a:6.1%}" for a in accs))

fig, ax = plt.subplots(figsize=(5, 3.2))
for name, accs in results.items():
    ax.plot(shot_counts, accs, "o-", label=name)
ax.axhline(1 / 6, color="grey", ls=":", label="chance")
ax.set(xscale="log", xticks=shot_counts, xticklabels=shot_counts, xlabel="shots per class",
       ylabel="few-shot linear accuracy", title="6 unseen classes")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "fewshot.png", dpi=90)
plt.close(fig)
assert all(0.0 <= a <= 1.0 for accs in results.values() for a in accs)

# %% [markdown]
# How to read it. The paper uses few-shot accuracy where fine-tuning every model would cost
# too much (Fig. 3-5, on ImageNet with 1-25 shots); its models are pre-trained for days on up
# to 300M images. Ours saw 4 classes for a few seconds, so its features are not yet much better
# than those of the untrained model, or of raw pixels: the point here is the measurement, which
# is a few lines of linear algebra on frozen features and costs nothing next to fine-tuning.
# `minivit fewshot CHECKPOINT --shots 1,5,10,25` runs it for a trained checkpoint.
