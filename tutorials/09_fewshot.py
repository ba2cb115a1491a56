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
# then measure the few-shot accuracy of the frozen features of a ViT trained on CIFAR-10.
#
# Topics (see tutorials/README.md): T11 (metrics). Time: about 10 s on 2 cores.

# %%
import os
from pathlib import Path

import numpy as np

import minivit
from minivit.analysis import fewshot_linear_eval, plots, sample_shots
from minivit.data import load_dataset, normalize
from minivit.train.checkpoint import load_checkpoint, model_from_checkpoint, normalization

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
# **Exercise 1.** The normal equations solve an (F+1) x (F+1) system, one row and column per
# feature. In the usual few-shot case there are far fewer examples than features (below: 10 to
# 250 images of 3,072 pixels), and an n x n system, one per example, would be much cheaper.
# Derive it: start from the identity X^T (X X^T + lambda I) = (X^T X + lambda I) X^T (multiply
# out both sides to see that it holds), and turn it into a formula for W that inverts (solves)
# only an n x n matrix. Then compute `W_dual` from `Xtr` and `Y` with it; the library picks the
# smaller of the two systems.

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
# ## Frozen features of a trained ViT
#
# Now the use the paper makes of it: how good are a model's frozen representations (the
# pre-logits, `model.forward_head(tokens, pre_logits=True)`: the class token's output after the
# final LayerNorm, D = 128 numbers) for a task the model was never trained on? The course ships a
# ViT trained on CIFAR-10 (`tutorials/trained/vit_mini_learn1d/`). We evaluate its frozen
# features few-shot on two tasks:
#
# * minivit's procedural shapes, the easy kind (one big shape per image; 10 classes: circle,
#   square, triangle, cross, ring, two bars, diamond, x, L): a new domain, never seen in training;
# * CIFAR-10 test images: the classes it was trained on, as a reference point;
#
# against the same architecture at initialisation and against raw pixels (3,072 numbers).
#
# **Data.** CIFAR-10 test images from `MINIVIT_CIFAR10` if set, else minivit downloads the
# official archive once into `~/.cache/minivit`.

# %%
TRAINED = next(p for p in (Path("trained"), Path("tutorials/trained")) if p.is_dir())  # Jupyter or repo root
ckpt = load_checkpoint(TRAINED / "vit_mini_learn1d" / "weights.npz")
model, _ = model_from_checkpoint(ckpt)
minivit.manual_seed(0)
untrained = minivit.ViT(config=model.config)
mean, std = normalization(ckpt, 3)


def features(model, x):
    """Frozen pre-logits (B, D) of normalised images, without gradients."""
    model.eval()
    with minivit.no_grad():
        return model.forward_head(model.forward_features(x), pre_logits=True).numpy()


tasks = {}
shapes_pool = load_dataset("procedural_easy", split="train", num_samples=1000, num_classes=10)
shapes_test = load_dataset("procedural_easy", split="test", num_samples=500, num_classes=10)
tasks["shapes"] = (shapes_pool, shapes_test)
cifar = load_dataset("cifar10", root=os.environ.get("MINIVIT_CIFAR10"), split="test", num_samples=1500, seed=3)
order = np.random.default_rng(0).permutation(len(cifar))  # the files come sorted by class
tasks["CIFAR-10"] = (cifar.subset(order[:1000]), cifar.subset(order[1000:]))
feats = {}
for task, (pool, test) in tasks.items():
    xp, xt = normalize(pool.images, mean, std), normalize(test.images, mean, std)
    feats[task] = {"pixels": (xp.reshape(len(xp), -1), xt.reshape(len(xt), -1)),
                   "ViT at init": (features(untrained, xp), features(untrained, xt)),
                   "ViT trained on CIFAR-10": (features(model, xp), features(model, xt))}
assert feats["shapes"]["ViT trained on CIFAR-10"][0].shape == (1000, model.config.embed_dim)

# %% [markdown]
# **Predict, then run.** With 5 examples per class, rank the three representations on each task.
# Does training on CIFAR-10 help on shapes it never saw?

# %%
shot_counts = (1, 5, 10, 25)
results = {}
for task, (pool, test) in tasks.items():
    for name, (f_pool, f_test) in feats[task].items():
        results[task, name] = [float(np.mean([
            fewshot_linear_eval(f_pool[idx], pool.labels[idx], f_test, test.labels, 10)
            for idx in (sample_shots(pool.labels, k, seed=s, num_classes=10) for s in range(3))]))  # 3 draws
            for k in shot_counts]
print("shots per class:", shot_counts, "(10 classes, chance 10%)")
for (task, name), accs in results.items():
    print(f"{task:9s} {name:24s}", "  ".join(f"{a:6.1%}" for a in accs))

fig = plots.Figure(figsize=(9, 3.2))
for i, task in enumerate(tasks):
    ax = fig.add_subplot(1, 2, i + 1)
    for name in feats[task]:
        ax.plot(shot_counts, results[task, name], "o-", label=name)
    ax.axhline(0.1, color="grey", ls=":", label="chance")
    ax.set(xscale="log", xticks=shot_counts, xticklabels=shot_counts, xlabel="shots per class",
           ylabel="few-shot linear accuracy", title=task, ylim=(0, 1))
    ax.legend(fontsize=7)
fig.tight_layout()
fig

# %%
trained, init = results["CIFAR-10", "ViT trained on CIFAR-10"], results["CIFAR-10", "ViT at init"]
assert trained[1] > init[1] + 0.2  # on its own classes, 5 shots: far better than untrained features
shapes_trained, shapes_init = results["shapes", "ViT trained on CIFAR-10"], results["shapes", "ViT at init"]
transfer = shapes_trained[-1] - shapes_init[-1]
print(f"shapes, 25 shots: trained {shapes_trained[-1]:.1%}, at init {shapes_init[-1]:.1%} ({transfer:+.1%})")
assert shapes_trained[-1] > shapes_init[-1]  # the CIFAR-10 features transfer to a new domain
assert shapes_trained[-1] > results["shapes", "pixels"][-1]  # and beat raw pixels there

# %% [markdown]
# How to read it. The paper uses few-shot accuracy where fine-tuning every model would cost too
# much: Fig. 4 (linear 5-shot ImageNet accuracy against the number of JFT pre-training images)
# and several appendix ablations such as Table 8 (position embeddings) report it; Figs. 3 and 5
# report fine-tuning accuracy. Its models are pre-trained for days on up to 300M images. Ours saw
# CIFAR-10's 50,000 images for an hour: on CIFAR-10's own classes its features are far better
# than an untrained network's (about 70% against 20-25%, from a single example per class), and
# on shapes it never saw they transfer too: 51% at 25 shots against 22% for the untrained
# network and 21% for raw pixels. The measurement itself
# is a few lines of linear algebra on frozen features and costs nothing next to fine-tuning:
# `minivit fewshot CHECKPOINT --shots 1,5,10,25` runs it for any trained checkpoint.
