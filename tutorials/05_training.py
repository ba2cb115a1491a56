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
# # 05 · A first training run
#
# **Goal.** Train a small ViT from scratch with the paper's kind of optimiser and schedule
# (Sec. 4.1, Appendix B.1: Adam with weight decay, a linear warm-up of the learning rate, then a
# decay), watch its loss and accuracy curves, and compare the class token with global average
# pooling. The checks prove:
#
# 1. your learning-rate schedule, linear warm-up then a half cosine, equals
#    `minivit.optim.WarmupSchedule`, and AdamW steps by hand equal `minivit.optim.AdamW`;
# 2. your training step (forward, loss, backward, gradient clipping, optimiser step, schedule
#    step) leaves the parameters exactly where a reference loop, written out by hand, leaves
#    them after several steps with a clip that acts and a learning rate that changes;
# 3. a fresh model predicts uniformly (its head is zero, so the first loss is ln K), and
#    training lowers the loss and lifts test accuracy well above chance, with either pooling.
#
# Topics: T3 (class token), T10 (training setup). Time: about 15 s on two idle CPU cores (two
# runs of 300 steps of a 49k-parameter model).

# %%
import math
import os
import time

import numpy as np

import minivit
from minivit import functional as F
from minivit import optim
from minivit.analysis.plots import Figure
from minivit.data import DataLoader, load_dataset, stats_for
from minivit.train import evaluate, param_groups

rng = np.random.default_rng(0)

# %% [markdown]
# ## Data
#
# 4,000 training and 1,000 test images of minivit's procedural dataset (ten shape classes,
# drawn in random colours at random places, so only the shape tells the class). With
# `MINIVIT_CIFAR10=/path/to/cifar10` set, the same numbers of CIFAR-10 images are used instead.
# Pixels are normalised per channel with the training set's mean and standard deviation.

# %%
CIFAR = os.environ.get("MINIVIT_CIFAR10")
source = dict(name="cifar10", root=CIFAR) if CIFAR else dict(name="procedural")
train_set = load_dataset(**source, split="train", num_samples=4000, seed=0)
test_set = load_dataset(**source, split="test", num_samples=1000, seed=0)
mean, std = stats_for(train_set)
K = train_set.num_classes
print(train_set, test_set, sep="\n")

# %% [markdown]
# ## The learning-rate schedule
#
# The paper trains with a linear warm-up of the learning rate followed by a decay, cosine or
# linear (Appendix B.1). Warm-up is the usual practice for Transformers; the common explanation
# is that at the start Adam's second-moment estimates rest on few gradients, so the first steps
# are better taken small. minivit's `WarmupSchedule` sets the optimiser's learning rate at every step.
#
# **Exercise 1.** Write `lr_by_hand(step, base_lr, total, warmup, min_lr)`: the learning rate
# that `WarmupSchedule(..., schedule="cosine")` gives the optimiser at the 0-based `step`.
#
# * During the first `warmup` steps it rises linearly, from base_lr / warmup at step 0 to
#   base_lr at step warmup - 1 (never 0, so that the very first step moves the weights).
# * From step `warmup` on it follows half a period of a cosine, from base_lr at step `warmup`
#   down to min_lr at step `total`, flat at both ends. Derive it: map the steps from `warmup` to
#   `total` onto angles from 0 to pi, and scale and shift cos of that angle so that it runs from
#   base_lr to min_lr.
#
# **Predict, then run.** What is the learning rate half-way down the cosine? The check prints
# the schedule's peak, its middle and its end.

# %% tags=["solution"]
def lr_by_hand(step, base_lr, total, warmup, min_lr):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / (total - warmup)
    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * progress)) / 2


# %%
STEPS, WARMUP, LR, MIN_LR = 300, 30, 3e-3, 1e-5
WIDTH, DEPTH, HEADS = 48, 2, 3  # the model trained below
dummy = optim.AdamW([minivit.nn.Parameter(np.zeros(1, np.float32))], lr=LR)
schedule = optim.WarmupSchedule(dummy, total_steps=STEPS, warmup_steps=WARMUP, schedule="cosine", min_lr=MIN_LR)
lrs = []
for _ in range(STEPS):
    lrs.append(schedule.get_last_lr()[0])
    schedule.step()
lrs = np.array(lrs)
assert np.allclose(lrs, [lr_by_hand(s, LR, STEPS, WARMUP, MIN_LR) for s in range(STEPS)], rtol=1e-12)
assert np.all(np.diff(lrs[:WARMUP]) > 0) and np.all(np.diff(lrs[WARMUP - 1:]) <= 0)  # up, then down
assert lrs.max() == LR == lrs[WARMUP - 1] and lrs[-1] < 0.01 * LR
assert (STEPS - WARMUP) % 2 == 0  # so that the cosine has a middle step
middle = WARMUP + (STEPS - WARMUP) // 2
assert math.isclose(lrs[middle], (LR + MIN_LR) / 2, rel_tol=1e-9)  # half-way down the cosine: the mean
print(f"peak {lrs.max():.1e} at step {lrs.argmax()}, {lrs[middle]:.1e} at step {middle}, {lrs[-1]:.1e} at the end")

# %% [markdown]
# ## AdamW
#
# The paper pre-trains with Adam (beta1 = 0.9, beta2 = 0.999) and a weight decay of 0.1, which it
# found slightly better than SGD even for ResNets (Sec. 4.1, Appendix D.1). minivit's `AdamW`
# decays the weights *decoupled* from the gradient (Loshchilov & Hutter 2019), as
# `torch.optim.AdamW` does; biases, LayerNorm parameters, the class token and the position
# embedding are not decayed (`minivit.train.param_groups`). One step, for a parameter p with
# gradient g, moments m and v and step count t (from 1):
#
#     p <- p * (1 - lr * wd)
#     m <- beta1 * m + (1 - beta1) * g;      v <- beta2 * v + (1 - beta2) * g^2
#     p <- p - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
#
# The divisions by 1 - beta^t undo the bias of moments that start at zero. Here three steps by
# hand are compared with minivit's optimiser, whose update runs as a fused kernel.

# %%
def adamw_by_hand(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, wd=0.1):
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        p = p * (1 - lr * wd)
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        p = p - lr * (m / (1 - betas[0] ** t)) / (np.sqrt(v / (1 - betas[1] ** t)) + eps)
    return p


p0 = rng.normal(size=(4, 5)).astype(np.float32)
grads = [rng.normal(size=(4, 5)).astype(np.float32) for _ in range(3)]
param = minivit.nn.Parameter(p0.copy())
opt = optim.AdamW([param], lr=0.01, betas=(0.9, 0.999), weight_decay=0.1)
for g in grads:
    param.grad = g.copy()
    opt.step()
assert np.allclose(param.data, adamw_by_hand(p0, grads, lr=0.01), atol=1e-6)
print("three AdamW steps by hand == minivit.optim.AdamW")

# %% [markdown]
# ## The training loop
#
# One step of training, in order: forward a batch; the mean softmax cross-entropy of the logits
# against the labels (`F.cross_entropy`); backward; clip the gradients, all together, to a
# global L2 norm of at most `max_norm` (`optim.clip_grad_norm_`, which returns the norm before
# clipping; the paper clips at global norm 1, Appendix B.1); one optimiser step; zero the
# gradients, so that the next backward does not add to them; advance the schedule to the next
# step's learning rate. `minivit train` runs the same loop with checkpoints, logging and
# evaluation (minivit/train/trainer.py).
#
# **Exercise 2.** Write `train_step(model, opt, schedule, x, y, max_norm)`: one step as above.
# It returns the loss (a Python float), the logits (a NumPy array) and the gradient norm before
# clipping (a float).
#
# The check runs six steps of your `train_step` on a tiny model with plain SGD, a `max_norm`
# small enough that the clip acts at every step, and a schedule that changes the learning rate
# from step to step (warm-up, then cosine). A reference loop, with the clip and the learning
# rate written out by hand (your `lr_by_hand`), must end with the same parameters, to 1e-6. A
# step that skips the clip, the zeroing or the schedule ends elsewhere.

# %% tags=["solution"]
def train_step(model, opt, schedule, x, y, max_norm):
    logits = model(x)  # (B, K)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    norm = optim.clip_grad_norm_(model.parameters(), max_norm)
    opt.step()
    opt.zero_grad()
    schedule.step()
    return loss.item(), logits.numpy(), float(norm)


# %%
CLIP, BASE, TOTAL, WARM = 0.05, 0.5, 8, 3  # a clip that acts, and a schedule over 8 steps
batches = [(rng.normal(size=(8, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, size=8)) for _ in range(6)]


def tiny_model():
    minivit.manual_seed(1)
    return minivit.create_model("vit_testing")


mine, reference = tiny_model(), tiny_model()
sgd = optim.SGD(mine.parameters(), lr=BASE)
sgd_schedule = optim.WarmupSchedule(sgd, total_steps=TOTAL, warmup_steps=WARM, schedule="cosine", min_lr=0.0)
yours = [train_step(mine, sgd, sgd_schedule, x, y, CLIP) for x, y in batches]

by_hand = []  # (loss, logits, norm, lr) of each step of the reference
for step, (x, y) in enumerate(batches):
    out = reference(x)
    objective = F.cross_entropy(out, y)
    objective.backward()
    norm = math.sqrt(sum(float((p.grad.astype(np.float64) ** 2).sum()) for p in reference.parameters()))
    factor = np.float32(min(1.0, CLIP / (norm + 1e-6)))  # scale every gradient by the same factor
    lr = lr_by_hand(step, BASE, TOTAL, WARM, 0.0)
    for p in reference.parameters():
        p.data -= lr * (p.grad * factor)  # plain SGD
        p.grad = None
    by_hand.append((objective.item(), out.numpy(), norm, lr))

assert all(norm > 2 * CLIP for _, _, norm, _ in by_hand)  # the clip acts at every step
assert len({round(lr, 12) for *_, lr in by_hand}) == 5  # warm-up then cosine: only the peak comes twice
for (loss, logits, norm), (ref_loss, ref_logits, ref_norm, _) in zip(yours, by_hand):
    assert isinstance(loss, float) and abs(loss - ref_loss) < 1e-6
    assert np.allclose(logits, ref_logits, atol=1e-6) and math.isclose(norm, ref_norm, rel_tol=1e-6)
for (name, p), q in zip(mine.named_parameters(), reference.parameters()):
    assert np.allclose(p.data, q.data, atol=1e-6), name
print("six steps of your train_step == the reference loop: "
      f"gradient norms {', '.join(f'{n:.2f}' for _, _, n, _ in by_hand)} clipped to {CLIP}, "
      f"learning rates {', '.join(f'{lr:.3f}' for *_, lr in by_hand)}")

# %% [markdown]
# Now a real run. The model is small enough for a few seconds of training: 32 x 32 images cut
# into 8 x 8 patches (16 tokens and a class token), width 48, 2 blocks, 3 heads, MLP ratio 2,
# trained with AdamW for 300 steps of 64 images, gradients clipped at norm 1.
#
# **Predict, then run.** A new model's head is zero (Sec. 3.2). What is the loss at the very
# first step, before any update, for K = 10 classes? And what test accuracy do you expect after
# 300 steps, compared with the 1/K of guessing?
#
# The checks: the first loss, then a loss that falls and a test accuracy of at least 1.5 times
# chance, a margin that a model that learned nothing would miss by more than five standard
# deviations (1,000 test images).

# %%
def run(global_pool, steps=STEPS, seed=0):
    """Train a fresh model for `steps` steps; returns the model and a history of
    (loss, batch accuracy, learning rate, gradient norm before clipping) per step."""
    minivit.manual_seed(seed)
    model = minivit.ViT(img_size=32, patch_size=8, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS, mlp_ratio=2.0,
                        num_classes=K, global_pool=global_pool, class_token=global_pool == "token")
    opt = optim.AdamW(param_groups(model, weight_decay=0.05), lr=LR, betas=(0.9, 0.999))
    schedule = optim.WarmupSchedule(opt, total_steps=steps, warmup_steps=WARMUP, min_lr=MIN_LR)
    loader = DataLoader(train_set, batch_size=64, shuffle=True, augment=False, mean=mean, std=std, seed=seed)
    history, epoch = [], 0
    while len(history) < steps:
        for x, y in loader.epoch(epoch):
            lr = schedule.get_last_lr()[0]
            loss, logits, norm = train_step(model, opt, schedule, x, y, max_norm=1.0)
            history.append((loss, (logits.argmax(axis=1) == y).mean(), lr, norm))
            if len(history) == steps:
                break
        epoch += 1
    return model, np.array(history)


test_loader = DataLoader(test_set, batch_size=250, shuffle=False, augment=False, drop_last=False, mean=mean, std=std)
start = time.perf_counter()
model, history = run("token")
test_loss, test_acc = evaluate(model, test_loader)
seconds = time.perf_counter() - start
print(f"{model.num_parameters():,} parameters, {STEPS} steps in {seconds:.1f} s: "
      f"test accuracy {test_acc:.1%} (chance {1 / K:.0%}), test loss {test_loss:.3f}")
loss, acc, lr, norm = history.T
print(f"first loss {loss[0]:.4f} (ln K = {math.log(K):.4f}); the clip acted at {(norm > 1).sum()} of {STEPS} steps")
assert math.isclose(loss[0], math.log(K), rel_tol=1e-5)
assert loss[-25:].mean() < loss[:10].mean() - 0.1
assert test_acc > 1.5 / K

# %% [markdown]
# The curves: the loss falls from ln K, the accuracy on the training batches rises, the
# learning rate follows the schedule checked above, and the gradient norm is shown against the
# clip at 1.

# %%
smooth = np.convolve(loss, np.ones(10) / 10, mode="valid")
fig = Figure(figsize=(15, 3.2))
axes = fig.subplots(1, 4)
axes[0].plot(loss, alpha=0.3, label="per step")
axes[0].plot(np.arange(9, STEPS), smooth, label="mean of 10")
axes[0].axhline(math.log(K), color="grey", ls=":", label="ln K (uniform)")
axes[0].set(xlabel="step", ylabel="training loss", title="loss")
axes[0].legend()
axes[1].plot(np.arange(9, STEPS), np.convolve(acc, np.ones(10) / 10, mode="valid"))
axes[1].axhline(1 / K, color="grey", ls=":", label="chance")
axes[1].axhline(test_acc, color="C1", ls="--", label=f"test {test_acc:.0%}")
axes[1].set(xlabel="step", ylabel="accuracy", title="training batches (mean of 10)")
axes[1].legend()
axes[2].plot(lr)
axes[2].set(xlabel="step", ylabel="learning rate", title="warm-up + cosine")
axes[3].plot(norm)
axes[3].axhline(1.0, color="grey", ls=":", label="clip")
axes[3].set(xlabel="step", ylabel="global gradient norm", yscale="log", title="before clipping")
axes[3].legend()
fig.tight_layout()
fig

# %% [markdown]
# ## Class token or average pooling
#
# The paper classifies from the class token's final state, as BERT does, and notes in Appendix
# D.3 that global average pooling (GAP) of the patch tokens works as well, provided the learning
# rate is tuned for it (with the class token's learning rate GAP did much worse). minivit has
# both: `global_pool="avg"` (here without a class token at all; a final LayerNorm then follows the
# pooling, as in timm). We train the second model with the same data, steps and learning rate.
# Two short runs of one seed each cannot say which is better, so the check only asks that both
# learn; the numbers are reported as they come.

# %%
avg_model, avg_history = run("avg")
avg_loss, avg_acc = evaluate(avg_model, test_loader)
results = {"class token": (test_acc, history[-25:, 0].mean()),
           "average pooling": (avg_acc, avg_history[-25:, 0].mean())}
for name, (a, l) in results.items():
    print(f"{name:16s} test accuracy {a:.1%}   final training loss {l:.3f}")
assert avg_acc > 1.5 / K and test_acc > 1.5 / K
assert avg_model.num_parameters() == model.num_parameters() - 2 * WIDTH  # no class token, no row of E_pos for it
assert avg_model.num_tokens == model.num_tokens - 1

# %% [markdown]
# ## From this run to the paper's results
#
# This run is a few seconds of training on a few thousand 32 x 32 images. The paper's setup
# (Sec. 4.1, Appendix B; topic T10) has the same pieces at a very different scale: pre-training
# with Adam (beta1 = 0.9, beta2 = 0.999) at batch size 4096 with weight decay 0.1, a linear
# warm-up followed by a decay, 7 to 300 epochs on ImageNet, ImageNet-21k or JFT-300M, dropout
# after every dense layer except the qkv projection; then fine-tuning with SGD with momentum at
# batch size 512, usually at a higher resolution (notebook 08). What that buys, in accuracy and
# in the amount of data a ViT needs, is the subject of the paper's results, which
# tutorials/README.md maps to where they are covered.
#
# Next: **06 · position embeddings**, what the model is told about where each patch sits.
