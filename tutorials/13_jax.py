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
# # 13 · The same model in JAX
#
# **Goal.** Run minivit's ViT in JAX, the framework of the paper's own code, and show that
# nothing changes but the machinery: the same parameters, logits, gradients and optimizer steps,
# then the same training step split over 8 devices. The checks prove:
#
# 1. `minivit.jax_bridge.to_jax` turns the model into a **pytree** (a dict of arrays under the
#    state-dict names) and a **pure function** `apply_fn(params, x)` whose logits equal
#    minivit's to 1e-5 (relative);
# 2. `jax.jit` traces the Python function once per input shape and reuses the compiled
#    program for every later call with that shape (counted with a side effect in the function);
# 3. `jax.grad` of the same loss gives minivit's backward-pass gradients to 1e-4, and the gradient
#    of a batch split into slices is a combination of the slices' gradients that you derive;
# 4. one jitted AdamW step (gradient clipping, weight decay exemptions and all) takes minivit's
#    AdamW steps from the same weights: the same losses and parameters to 1e-5;
# 5. the same step, data parallel on a mesh of **8 simulated devices**, gives the losses and
#    parameters of 1 device to 1e-5;
# 6. the weights round-trip exactly through the official `vit_jax` checkpoint layout;
# 7. `minivit train` run as **two processes** (2 devices each, joined by `jax.distributed`) ends
#    with the weights of one process on 4 devices, to 1e-5.
#
# Topics: (interop); the training setup of T10 on more than one device. Time: about 35 s on
# two CPU cores, most of it XLA compiling.

# %% [markdown]
# ## Eight devices on one CPU
#
# The paper trains with a batch of 4096 (Sec. 4.1) on TPUv3 cores (Sec. 4.2 counts compute in
# TPUv3-core-days), and its models and fine-tuning code were released in JAX/Flax
# (google-research/vision_transformer). Data parallelism is how such a batch is spread: every
# core holds a copy of the parameters and a slice of the batch, and the gradients are averaged
# across cores. We have no TPU pod, but XLA can split one CPU into several *host devices*. It
# must be told before JAX starts its backend, so this cell sets `XLA_FLAGS` before importing JAX
# (`minivit.train.jax_trainer.request_host_devices(8)` does the same). It also keeps JAX on the
# CPU, where float32 matrix products are exact enough for the 1e-5 checks below. (Re-running
# this cell in a kernel where JAX has already started has no effect: restart the kernel.)

# %%
import os

flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
os.environ["XLA_FLAGS"] = " ".join(flags + ["--xla_force_host_platform_device_count=8"])
os.environ["JAX_PLATFORMS"] = "cpu"

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import minivit  # noqa: E402
from minivit import functional as F  # noqa: E402
from minivit import jax_bridge as jb  # noqa: E402
from minivit import optim  # noqa: E402
from minivit.interop import load_vit_jax, read_npz, save_vit_jax  # noqa: E402
from minivit.train import param_groups  # noqa: E402

assert jax.device_count() == 8, f"JAX sees {jax.devices()}: restart the kernel and run this cell first"
print(jax.devices())

OUT = Path(os.environ.get("MINIVIT_TUTORIAL_OUT", "runs/tutorials")) / "13_jax"
OUT.mkdir(parents=True, exist_ok=True)
gen = np.random.default_rng(0)


def rel_err(a, b):
    """max |a - b| / max |b|: one number for a whole array."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


# %% [markdown]
# ## The model as a pytree and a pure function
#
# A minivit `ViT` is an object that owns its parameters; a forward pass reads them from `self`.
# JAX wants the opposite: the parameters are plain data passed in, and the model is a function
# of (parameters, images). `to_jax` gives both: `params`, a dict `{state-dict name: jnp array}`
# (JAX calls any nesting of dicts, lists and tuples of arrays a *pytree*), and `apply_fn`,
# vit.py's forward pass (Eq. 1-4) written in `jax.numpy`, one function per module. A tiny model
# keeps this fast: 16 x 16 images, 4 x 4 patches (16 tokens and a class token), width 32, two
# blocks of two heads, ten classes. Its head starts at zero, so we draw it at random: with a zero
# head no gradient would reach the rest of the model.

# %%
minivit.manual_seed(0)
model = minivit.ViT(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=10)
model.head.weight.data[:] = gen.normal(0, 0.02, model.head.weight.shape)
cfg = model.config
x = gen.standard_normal((16, 3, 16, 16)).astype(np.float32)  # (B, C, H, W)
y = gen.integers(0, 10, 16)  # (B,)

params, apply_fn = jb.to_jax(model)
state = model.state_dict()
assert list(params) == list(state)  # the same names, in the same order
for name, value in params.items():
    assert isinstance(value, jax.Array) and value.shape == state[name].shape and value.dtype == jnp.float32
leaves = jax.tree_util.tree_leaves(params)
assert len(leaves) == len(state) and sum(a.size for a in leaves) == model.num_parameters()
for name in list(params)[:5] + ["blocks.0.attn.qkv.weight", "head.weight"]:
    print(f"{name:28s} {tuple(params[name].shape)}")
print(f"... {len(params)} arrays, {model.num_parameters():,} numbers")

# %% [markdown]
# ## The same logits
#
# `apply_fn(params, x)` should compute what `model(x)` computes. The two run different code
# (minivit's kernels against XLA's), so float32 round-off differs; we ask for agreement to 1e-5
# of the largest logit. Because `apply_fn` is pure, changing the parameters means passing other
# ones: adding 1 to the head's bias adds 1 to every logit, and the original `params` are untouched.

# %%
with minivit.no_grad():
    want = model.eval()(x).numpy()  # (B, K)
got = apply_fn(params, x)
print(f"logits {got.shape}, relative difference {rel_err(got, want):.1e}")
assert got.shape == want.shape == (16, 10)
assert rel_err(got, want) < 1e-5

bumped = {**params, "head.bias": params["head.bias"] + 1.0}  # a new dict; params is not changed
assert np.allclose(apply_fn(bumped, x), got + 1.0, atol=1e-5)
assert np.array_equal(apply_fn(params, x), got)

# %% [markdown]
# ## Exercise: one attention head in jax.numpy
#
# The bridge's `attention` is Eq. 5-8 of the paper's Appendix A for all heads at once. Write
# one head. `p` holds the attention's parameters under their state-dict names (what
# `jb._sub(params, "blocks.0.attn")` returns): `p["qkv.weight"]` is (3D, D), its rows are
# [W_q; W_k; W_v] with D rows each, and head h owns rows h*hd to (h+1)*hd of each; `p["qkv.bias"]`
# is (3D,) in the same order.
#
# **Exercise 1.** Write `one_head(p, x, h, num_heads)` for tokens x (B, N, D): project x to the
# head's q, k, v (B, N, hd), then return softmax(q k^T / sqrt(hd)) v, (B, N, hd). Use `jnp` and
# `jax.nn.softmax`. The check concatenates your heads, applies the output projection and compares
# with the bridge.

# %% tags=["solution"]
def one_head(p, x, h, num_heads):
    D = x.shape[-1]
    hd = D // num_heads
    rows = [slice(j * D + h * hd, j * D + (h + 1) * hd) for j in range(3)]  # q, k, v rows of head h
    q, k, v = (x @ p["qkv.weight"][r].T + p["qkv.bias"][r] for r in rows)  # (B, N, hd) each
    weights = jax.nn.softmax(q @ k.swapaxes(-1, -2) / jnp.sqrt(hd), axis=-1)  # (B, N, N)
    return weights @ v


# %%
attn = jb._sub(params, "blocks.0.attn")  # {"qkv.weight": ..., "qkv.bias": ..., "proj.weight": ..., ...}
tokens = jnp.asarray(3 * gen.standard_normal((2, 17, 32)), jnp.float32)  # (B, N, D)
heads = jnp.concatenate([one_head(attn, tokens, h, cfg.num_heads) for h in range(cfg.num_heads)], axis=-1)
mine = heads @ attn["proj.weight"].T + attn["proj.bias"]  # (B, N, D)
assert mine.shape == (2, 17, 32)
assert rel_err(mine, jb.attention(attn, tokens, cfg)) < 1e-5
hd = cfg.embed_dim // cfg.num_heads  # plain jnp code compiles too (h and num_heads are Python ints: static)
assert rel_err(jax.jit(one_head, static_argnums=(2, 3))(attn, tokens, 1, cfg.num_heads), heads[..., hd:2 * hd]) < 1e-5
print("one head by hand == the bridge's attention, one slice at a time")

# %% [markdown]
# ## What `jax.jit` does
#
# Called directly, `apply_fn` runs one JAX operation after another, as NumPy would. `jax.jit`
# instead *traces* it: it calls the Python function once with abstract arrays that record every
# operation into a program (a jaxpr), which XLA then compiles and fuses. Later calls with
# arguments of the same shapes and dtypes run the compiled program and never enter the Python
# function again; a new shape means a new trace. A Python side effect shows when tracing
# happens: `forward` below appends the shape it is traced with to a list. JAX also returns
# before the result is computed, so the timings (printed, not checked: this machine is shared)
# wait for it with `block_until_ready()`.
#
# **Predict, then run.** The cell calls the jitted function five times: twice on the batch x,
# once on the same images in reverse order, once on the first 4 images, and once more on x. How
# many entries will `traces` hold at the end, and which shapes?

# %%
traces = []


def forward(params, x):
    traces.append(x.shape)  # Python code: runs while tracing, not when the compiled program runs
    return apply_fn(params, x)


fast = jax.jit(forward)
start = time.perf_counter()
first = fast(params, x).block_until_ready()
t_first = time.perf_counter() - start
start = time.perf_counter()
second = fast(params, x).block_until_ready()
t_second = time.perf_counter() - start
print(f"first call (trace + compile + run) {1e3 * t_first:.0f} ms, second call {1e3 * t_second:.2f} ms")
assert traces == [x.shape]  # traced once for two calls
assert np.array_equal(first, second) and rel_err(first, want) < 1e-5  # fused, still the same logits
reverse = fast(params, x[::-1])  # other values, the same shape and dtype: the same program
assert traces == [x.shape] and rel_err(reverse, first[::-1]) < 1e-5
fast(params, x[:4])
assert traces == [x.shape, x[:4].shape]  # a new batch size: traced and compiled again
fast(params, x)
assert len(traces) == 2  # the program for x's shape is still cached: no third trace
print("traced with:", traces)
program = jax.make_jaxpr(apply_fn)(params, x)
print(f"the traced forward pass: {len(program.jaxpr.eqns)} operations, e.g. {program.jaxpr.eqns[0].primitive}")

# %% [markdown]
# ## The same gradients
#
# minivit computes gradients with its own reverse-mode autograd (tutorial 02): `loss.backward()`
# fills `p.grad`. JAX differentiates the function instead: `jax.value_and_grad(loss_fn)` is a
# new function returning the loss and d loss / d params, a pytree shaped like `params`; a function
# like any other, so it can be jitted (compiling the backward pass with the forward). Both sides
# use the same loss, softmax cross-entropy with label smoothing 0.1 (`jb.cross_entropy` is
# `functional.cross_entropy`).

# %%
model.train()
loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
loss.backward()


def loss_fn(params, x, y):
    return jb.cross_entropy(apply_fn(params, x), y, 0.1)


value_and_grad_fn = jax.jit(jax.value_and_grad(loss_fn))  # traced and compiled for batches of 16 images
value, grads = value_and_grad_fn(params, x, y)
assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
assert abs(float(value) - loss.item()) < 1e-5 * loss.item()
errors = {name: rel_err(grads[name], p.grad) for name, p in model.named_parameters()}
worst = max(errors, key=errors.get)
print(f"loss {loss.item():.6f} (minivit) {float(value):.6f} (JAX); worst gradient: {worst}, {errors[worst]:.1e}")
assert max(errors.values()) < 1e-4
model.zero_grad()

# %% [markdown]
# ## Exercise: the gradient of a batch split into slices
#
# Data parallelism (below) gives each device a slice of the batch: every device computes the
# gradient of the loss on its own slice, with the same parameters, and the devices then combine
# their gradients into one, which every device applies. Which combination gives exactly the
# gradient of the whole batch?
#
# Start from the loss: `loss_fn` is the mean, over the batch, of the per-image losses. Split a
# batch of B images into n slices of B / n images, write the whole batch's loss in terms of the
# n slices' losses (each a mean over its own slice), and differentiate.
#
# **Exercise 2.** Write `split_batch_grads(params, x, y, n)`: cut x and y into n equal slices
# along the batch axis, compute each slice's gradient with `value_and_grad_fn` from the cell
# above (it returns (loss, gradients); it is compiled for slices of 16 images, the size every
# device gets in the check), and combine the n gradient pytrees into one:
# `jax.tree_util.tree_map(f, *trees)` calls f on the matching leaves of all the trees, and f may
# be NumPy code (it runs on the host; JAX arrays convert to NumPy arrays). The check
# gives your function batches of 32 and 128 images (2 and 8 slices) and compares with the
# gradient of the whole batch from minivit's backward pass, on the host, to 1e-5.

# %% tags=["solution"]
def split_batch_grads(params, x, y, n):
    size = len(x) // n
    per_slice = [value_and_grad_fn(params, x[i * size:(i + 1) * size], y[i * size:(i + 1) * size])[1]
                 for i in range(n)]
    return jax.tree_util.tree_map(lambda *g: np.mean(g, axis=0), *per_slice)  # on the host, leaf by leaf


# %%
def minivit_grads(xb, yb):
    """The gradient of the whole batch's loss, from minivit's own backward pass."""
    F.cross_entropy(model(xb), yb, label_smoothing=0.1).backward()
    out = {name: p.grad.copy() for name, p in model.named_parameters()}
    model.zero_grad()
    return out


x_big = np.concatenate([x, gen.standard_normal((112, 3, 16, 16)).astype(np.float32)])  # (128, C, H, W)
y_big = np.concatenate([y, gen.integers(0, 10, 112)])
for n in (2, 8):
    xb, yb = x_big[:16 * n], y_big[:16 * n]  # 16 images per slice
    combined = split_batch_grads(params, xb, yb, n)
    assert jax.tree_util.tree_structure(combined) == jax.tree_util.tree_structure(grads)
    want_grads = minivit_grads(xb, yb)
    errs = {name: rel_err(combined[name], want_grads[name]) for name in want_grads}
    print(f"{n} slices of 16: worst gradient difference to the whole batch's {max(errs.values()):.1e}")
    assert max(errs.values()) < 1e-5, max(errs, key=errs.get)

# %% [markdown]
# ## One jitted AdamW step
#
# `jb.make_train_step` builds the whole training step as one jitted function: forward, loss,
# gradients, clipping to a global norm of 1, and the optimizer update, with minivit's semantics
# read off a minivit optimizer by `optimizer_spec` (which parameters decay: matrices only, as
# `param_groups` decides). The learning rate is an argument, so a schedule computed on the host
# (`optim.lr_at`) never triggers a recompilation. The step returns new parameters and optimizer
# state instead of changing them (it *donates* the old ones, so XLA may reuse their memory: use
# only the returned ones). It takes a device mesh: here one device.
#
# We take three steps on each side from the same weights and the same batches.

# %%
LR, STEPS = 1e-3, 3
xs = gen.standard_normal((STEPS, 16, 3, 16, 16)).astype(np.float32)  # a batch per step
ys = gen.integers(0, 10, (STEPS, 16))
start_weights = {k: v.copy() for k, v in model.state_dict().items()}

opt = optim.AdamW(param_groups(model, 0.05), lr=LR)
spec = jb.optimizer_spec(opt, model)
assert {k for k, wd in spec.weight_decay.items() if wd} == {
    k for k in params if k.endswith(".weight") and "norm" not in k}  # matrices decay; the rest is exempt
mesh1 = jb.data_mesh(1)
step1 = jb.make_train_step(apply_fn, spec, mesh1, label_smoothing=0.1, grad_clip=1.0)
p1 = jb.replicate(jb.to_jax(model)[0], mesh1)
s1 = jb.replicate(jb.init_optimizer_state(p1, spec), mesh1)
key = jax.random.key(0)  # for dropout; this model has none

losses_np, losses_1 = [], []
for s in range(STEPS):
    loss = F.cross_entropy(model(xs[s]), ys[s], label_smoothing=0.1)  # minivit: backward, clip, step
    loss.backward()
    optim.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad()
    losses_np.append(loss.item())
    batch = jb.shard_batch((xs[s], ys[s]), mesh1)  # JAX: the same in one call
    p1, s1, loss_j, _ = step1(p1, s1, *batch, np.float32(LR), key)
    losses_1.append(float(loss_j))
print("minivit losses", np.round(losses_np, 6), "\nJAX losses    ", np.round(losses_1, 6))
assert np.allclose(losses_1, losses_np, rtol=1e-5)
assert np.ptp(losses_np) > 1e-4  # the steps changed the model

after_1 = jax.device_get(p1)
for name, p in model.named_parameters():
    assert np.allclose(after_1[name], p.data, rtol=1e-5, atol=1e-5), name
print(f"{STEPS} AdamW steps: the same parameters to 1e-5")

# %% [markdown]
# ## Data parallel on 8 devices
#
# A mesh names devices along axes; `jb.data_mesh(8)` puts the 8 devices on one axis, 'data'.
# `shard_batch` splits the batch's leading axis over it (2 of the 16 images per device) and
# `replicate` puts a full copy of the parameters and optimizer state on every device. The step is
# the same function jitted with those shardings: XLA partitions the computation and inserts the
# all-reduce that combines the devices' gradients itself, as in Exercise 2. Mathematically
# nothing changes; the sums are only taken in a different order.
#
# **Predict, then run.** Will the 8-device losses and parameters equal the 1-device ones bit
# for bit?

# %%
mesh8 = jb.data_mesh(8)
print(mesh8)
x8, y8 = jb.shard_batch((xs[0], ys[0]), mesh8)
assert [shard.data.shape for shard in x8.addressable_shards] == [(2, 3, 16, 16)] * 8
assert {shard.device for shard in x8.addressable_shards} == set(jax.devices())  # one slice per device
p8 = jb.replicate(jax.tree_util.tree_map(jnp.asarray, start_weights), mesh8)  # the start weights again
s8 = jb.replicate(jb.init_optimizer_state(p8, spec), mesh8)
assert p8["head.weight"].sharding.is_fully_replicated and len(p8["head.weight"].addressable_shards) == 8

step8 = jb.make_train_step(apply_fn, spec, mesh8, label_smoothing=0.1, grad_clip=1.0)
losses_8 = []
for s in range(STEPS):
    p8, s8, loss_j, _ = step8(p8, s8, *jb.shard_batch((xs[s], ys[s]), mesh8), np.float32(LR), key)
    losses_8.append(float(loss_j))
print("1 device ", np.round(losses_1, 7), "\n8 devices", np.round(losses_8, 7))
print("largest loss difference:", float(np.abs(np.subtract(losses_8, losses_1)).max()))
assert np.allclose(losses_8, losses_1, rtol=1e-5)
after_8 = jax.device_get(p8)
for name in after_1:
    assert np.allclose(after_8[name], after_1[name], rtol=1e-5, atol=1e-5), name
print("8 devices and 1: the same losses and parameters to 1e-5")

# %% [markdown]
# The partitioned program does contain the communication: the compiled step (XLA's own text of
# it) has an all-reduce, which the one-device step does not need.

# %%
batch8 = jb.shard_batch((xs[0], ys[0]), mesh8)
compiled8 = step8.lower(p8, s8, *batch8, np.float32(LR), key).compile().as_text()
assert "all-reduce" in compiled8
compiled1 = step1.lower(p1, s1, *jb.shard_batch((xs[0], ys[0]), mesh1), np.float32(LR), key).compile().as_text()
assert "all-reduce" not in compiled1
print(f"all-reduce operations in the 8-device step: {compiled8.count('all-reduce(')}, in the 1-device step: 0")

# %% [markdown]
# ## Official checkpoints
#
# The checkpoints the paper released are `.npz` files of the Flax model's parameters, keyed by
# their paths in the Flax module tree, with Flax's shapes: a Dense kernel is (in, out) where
# minivit (like PyTorch) stores (out, in), the patch embedding is an HWIO convolution kernel, and
# q, k, v are separate (D, heads, hd) kernels. `save_vit_jax` and `load_vit_jax`
# (minivit/interop.py) translate, so weights trained here with JAX or NumPy open in the official
# code, and the released weights open here. `from_jax` turns the trained pytree back into a
# minivit `ViT`.

# %%
trained = jb.from_jax(after_8, cfg)
path = save_vit_jax(trained, OUT / "vit_tiny_vit_jax.npz")
official = read_npz(path)
for k in ["cls", "embedding/kernel", "Transformer/posembed_input/pos_embedding",
          "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel",
          "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel", "head/kernel"]:
    print(f"{k:72s} {official[k].shape}")
sd = trained.state_dict()
P, C, D = cfg.patch_size, cfg.in_chans, cfg.embed_dim
assert official["embedding/kernel"].shape == (P, P, C, D)  # conv kernel, HWIO
assert np.array_equal(official["embedding/kernel"], sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0))
assert np.array_equal(official["head/kernel"], sd["head.weight"].T)  # Dense: (in, out)
q_kernel = official["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"]
assert q_kernel.shape == (D, cfg.num_heads, D // cfg.num_heads)
assert np.array_equal(q_kernel.reshape(D, D).T, sd["blocks.0.attn.qkv.weight"][:D])  # the q rows

back = load_vit_jax(path)  # the configuration is read off the shapes
assert (back.config.embed_dim, back.config.depth, back.config.num_heads, back.config.patch_size) == (
    cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size)
assert all(np.array_equal(v, sd[k]) for k, v in back.state_dict().items()) and back.state_dict().keys() == sd.keys()
with minivit.no_grad():
    assert np.array_equal(back.eval()(x).numpy(), trained.eval()(x).numpy())
print(f"{len(official)} official arrays; loaded back bit for bit")

# %% [markdown]
# ## Training with the JAX backend
#
# `minivit train --backend jax --devices N` runs this notebook's step inside minivit's own
# `Trainer` (`minivit.train.jax_trainer.JaxTrainer`): the same data order, initial weights,
# schedule, metrics and checkpoints as the NumPy backend, with the parameters living on the
# devices while training; its step is `make_train_step`, the step checked above against
# minivit's AdamW. On a CPU, `--devices 8` asks XLA for 8 host devices with
# `request_host_devices(8)`, which sets the flag the first cell set by hand; on a GPU or TPU
# build of JAX it uses the real devices.
#
#     minivit train --backend jax --devices 8 --epochs 2 --out runs/jax
#
# The number of host devices is fixed when JAX starts its backend, which is why the first cell
# set `XLA_FLAGS` before any computation (`request_host_devices` sets JAX's `jax_num_cpu_devices`
# option instead, and leaves the environment alone). Asked again now, it finds the 8 devices it
# wants, but it cannot give 16 any more: it says so.

# %%
from minivit.train.jax_trainer import request_host_devices  # noqa: E402

request_host_devices(8)  # JAX already has them: nothing to do
try:
    request_host_devices(16)
    refused = None
except RuntimeError as e:
    refused = str(e)
print(refused)
assert refused is not None and "already started with 8" in refused
assert jax.device_count() == 8

# %% [markdown]
# ## Two processes on one machine
#
# One process drives the devices of one host. A TPU pod slice larger than one host, or a GPU
# cluster, runs one process per host, and JAX joins them with `jax.distributed.initialize`:
# process 0 runs a coordinator that the others reach at HOST:PORT, and afterwards `jax.devices()`
# lists the devices of every process. The mesh then spans all of them, each process feeds the
# rows of the batch that its own devices hold (it loads only those), and the all-reduce of the
# gradients crosses processes (over TCP through gloo on CPUs). `minivit train --backend jax` takes
# three flags for this (minivit/train/distributed.py does the joining):
#
#     minivit train --backend jax --devices 2 --coordinator-address localhost:PORT --num-processes 2 --process-id 0
#     minivit train --backend jax --devices 2 --coordinator-address localhost:PORT --num-processes 2 --process-id 1
#
# Below, two such processes train a tiny ViT for one epoch (4 steps) on 2 CPU devices each, while
# this kernel runs the same training on 4 of its 8 devices in one process. Process 0 alone
# prints and writes the run folder; a process that dies stops the other within the heartbeat
# timeout (`--heartbeat-timeout`), and the README shows the commands for a TPU pod and SLURM.
#
# **Predict, then run.** Each process feeds 16 of the 32 images of a step. Should the two-process
# weights equal the one-process ones exactly, to rounding, or not at all?

# %%
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from minivit.train import TrainConfig  # noqa: E402
from minivit.train.checkpoint import load_checkpoint  # noqa: E402
from minivit.train.jax_trainer import JaxTrainer  # noqa: E402

with socket.socket() as s:  # a port free now, for the coordinator
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
for folder in ("two_processes", "one_process"):
    shutil.rmtree(OUT / folder, ignore_errors=True)
run = dict(model="vit_testing", dataset="procedural", num_samples=128, val_size=0, batch_size=32, epochs=1,
           lr=2e-3, eval_test="never", progress=False)
flags = [f"--{k.replace('_', '-')}={v}" for k, v in run.items() if k != "progress"] + ["--no-progress"]
command = [sys.executable, "-m", "minivit.cli", "train", "--backend", "jax", *flags, "--out",
           str(OUT / "two_processes"), "--devices", "2", "--coordinator-address", f"localhost:{port}",
           "--num-processes", "2", "--init-timeout", "60", "--heartbeat-timeout", "20"]
processes = [subprocess.Popen(command + ["--process-id", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}) for i in (0, 1)]

one = JaxTrainer(TrainConfig(**run, out_dir=str(OUT / "one_process")), devices=4)  # meanwhile, here
one.fit()
outputs = [p.communicate(timeout=180) for p in processes]
for i, (p, (out, err)) in enumerate(zip(processes, outputs)):
    assert p.returncode == 0, f"process {i} exited {p.returncode}: {err[-2000:]}"
print("process 0 printed:\n" + outputs[0][0])
assert "of 2 processes" in outputs[0][0] and "epoch 1" not in outputs[1][0]  # process 1 prints no metrics

two = load_checkpoint(OUT / "two_processes" / "checkpoint.npz")
mine = one.model.state_dict()
gap = max(float(np.abs(two["model"][k] - mine[k]).max()) for k in mine)
print(f"two processes x 2 devices vs one process x 4 devices, after {two['meta']['position']['step']} steps: "
      f"largest weight difference {gap:.1e}")
assert two["meta"]["position"]["step"] == one.step == 4
assert gap < 1e-5

# %% [markdown]
# The same weights to float32 rounding, not bit for bit: the processes add their gradients over
# the network in another order than one process adds its devices' gradients.

# %% [markdown]
# ## What this means
#
# The model is a set of named arrays and a function; which library evaluates the function is a
# detail, and a detail one can check: minivit and JAX agree on logits, gradients and optimizer
# steps, and one device and eight agree on training. What JAX adds is the machinery the paper's
# scale needed: whole-step compilation, gradients of plain functions, and a program partitioned
# over many devices from a sharding annotation, which is how a batch of 4096 is spread over TPU
# cores.
