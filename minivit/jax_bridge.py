"""The ViT of vit.py as pure `jax.numpy` functions, which `jax.jit` compiles for CPU, GPU or TPU
(the extra [jax]: pip install "minivit[jax]").

    params, apply_fn = to_jax(model)        # {state-dict name: jnp array}, and the forward pass
    logits = apply_fn(params, images)       # (B, K): model(images), in JAX
    model = from_jax(params, model.config)  # back to a minivit ViT (checkpoints, analysis)

The forward below is vit.py piece by piece (the paper's Eq. 1-4), one plain function per module
taking that module's parameters: patch_embed, attention, mlp, block, forward_features,
forward_head. Parameters keep the flat state-dict names (`blocks.0.attn.qkv.weight`); `_sub(p,
"blocks.0")` hands a block its own entries, as a Module owns its attributes. Position embeddings
are posemb.py's own classes reading the JAX arrays (`position_embedding`), so every kind of
posemb.KINDS runs here with the code the NumPy model runs: `pe.add(x, layer)` and
`pe.attention_bias(layer)`. Dropout and drop-path need an explicit key in training:
`apply_fn(params, x, train=True, rng=key)`.

Training, with minivit's semantics so that a run switches backend with one flag:
    cross_entropy      = functional.cross_entropy (label smoothing)
    clip_grad_norm     = optim.clip_grad_norm_ (one global L2 norm)
    optimizer_update   = optim.AdamW / Adam / SGD, per-parameter weight decay taken from the
                         minivit optimizer's groups (train.param_groups: each Parameter's
                         no_weight_decay, so the same parameters are exempt in both backends)
    make_train_step    one jitted step: loss, gradients, clipping, update
The learning rate is an argument of the step, computed on the host by `optim.lr_at` (the
WarmupSchedule of a minivit run): one schedule for both backends, exact, and no recompilation.

Data parallel: `data_mesh(n)` is a Mesh of n devices with one axis 'data'; the step is jitted
with the batch sharded along it and parameters and optimizer state replicated, so XLA inserts
the all-reduce of the gradients itself. The same code runs on 1 or N devices. (The XLA CPU
all-reduce has been seen to hang in multi-device AdamW steps, upstream equinox issue 1232; what
was tried and found is in tests/test_jax_multidevice.py, which runs 8 devices under a timeout.)

Shape letters: B batch, C channels, H/W image size, P patch, Np patches, N tokens (prefix + Np),
D width, Hh heads, hd = D / Hh, K classes, L blocks.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import posemb
from . import rng as minivit_rng
from .vit import ViT


def to_jax(model):
    """(params, apply_fn): the model's state dict as jnp arrays under the same names, and
    `apply_fn(params, x, train=False, rng=None)` -> logits (B, K) for images (B, C, H, W)."""
    params = {name: jnp.array(value if isinstance(value, np.ndarray) else value.get())  # .get(): CuPy to host
              for name, value in model.state_dict().items()}
    return params, make_apply(model.config)


def from_jax(params, config, dtype=np.float32) -> ViT:
    """A minivit ViT holding `params` (as to_jax returns them). Building the model draws its
    random initialisation from minivit's generator, so that generator is restored afterwards."""
    state = minivit_rng.get_rng_state()
    try:
        model = ViT(config=config, dtype=dtype)
    finally:
        minivit_rng.set_rng_state(state)
    model.load_state_dict({name: np.asarray(value) for name, value in params.items()})
    return model


def make_apply(config):
    """The forward pass for `config` (a ViTConfig): apply_fn(params, x, train=False, rng=None).
    Under jax.jit mark `train` static: jax.jit(apply_fn, static_argnames="train")."""
    cfg = dataclasses.replace(config)  # a copy: later changes to the caller's config change nothing here

    def apply_fn(params, x, train=False, rng=None):
        random = cfg.drop_rate or cfg.attn_drop_rate or cfg.drop_path_rate or cfg.patch_drop_rate
        if train and random and rng is None:
            raise ValueError("training with dropout, drop-path or patch dropout needs a key: "
                             "apply_fn(..., train=True, rng=key)")
        return forward(params, x, cfg, rng if train else None)

    return apply_fn


# ---- the pieces of vit.py --------------------------------------------------------------------

def _sub(params, prefix):
    """The entries under `prefix.`, without it: _sub(p, "blocks.0")["norm1.weight"]."""
    prefix += "."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def _split(rng, n):
    """n independent keys from rng, or n Nones without one (evaluation: no dropout)."""
    return [None] * n if rng is None else list(jax.random.split(rng, n))


def dropout(x, rate, rng):
    """Inverted dropout (functional.dropout); the identity without a key or at rate 0."""
    if rng is None or not rate:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x * (1.0 / (1.0 - rate)), 0.0)


def drop_path(x, rate, rng):
    """Stochastic depth: drop a residual branch for whole samples; the mask is (B, 1, 1)."""
    if rng is None or not rate:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(keep, x * (1.0 / (1.0 - rate)), 0.0)


def patch_dropout(x, rate, num_prefix_tokens, rng):
    """functional.patch_dropout: each image keeps max(1, int(L (1 - rate))) of its L patch tokens,
    a random subset in their original order, and every prefix token; the identity without a key."""
    if rng is None or not rate:
        return x
    B, N, _ = x.shape
    L = N - num_prefix_tokens
    count = max(1, int(L * (1.0 - rate)))
    order = jnp.sort(jnp.argsort(jax.random.uniform(rng, (B, L)), axis=1)[:, :count], axis=1)  # (B, K)
    prefix = jnp.broadcast_to(jnp.arange(num_prefix_tokens), (B, num_prefix_tokens))
    keep = jnp.concatenate([prefix, num_prefix_tokens + order], axis=1)  # (B, P + K)
    return jnp.take_along_axis(x, keep[:, :, None], axis=1)


def linear(p, x):
    """y = x @ weight.T + bias; weight (out, in) as in PyTorch."""
    y = x @ p["weight"].T
    return y + p["bias"] if "bias" in p else y


def layer_norm(p, x, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = jnp.square(x - mu).mean(axis=-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + eps) * p["weight"] + p["bias"]


def patch_embed(p, x):
    """Images (B, C, H, W) -> patch tokens (B, Np, D): x_p^i E of Eq. 1; weight (D, C, P, P)."""
    B, C, H, W = x.shape
    D, _, P, _ = p["weight"].shape
    gh, gw = H // P, W // P
    x = x.reshape(B, C, gh, P, gw, P).transpose(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, P, P)
    x = x.reshape(B, gh * gw, C * P * P)  # (B, Np, C*P*P): each patch flattened as (C, P, P)
    return x @ p["weight"].reshape(D, C * P * P).T + p["bias"]  # (B, Np, D)


def attention(p, x, cfg, bias=None, rng=None):
    """Multi-head self-attention, x (B, N, D) -> (B, N, D); bias is added to the logits: an array
    (Hh, N, N) or (B, Hh, N, N), or a function of the queries q (B, Hh, N, hd) that returns one."""
    B, N, D = x.shape
    Hh = cfg.num_heads
    hd = D // Hh
    r = _split(rng, 2)
    qkv = linear(_sub(p, "qkv"), x)  # (B, N, 3D)
    qkv = qkv.reshape(B, N, 3, Hh, hd).transpose(2, 0, 3, 1, 4)  # (3, B, Hh, N, hd)
    q, k, v = qkv[0], qkv[1], qkv[2]  # (B, Hh, N, hd) each
    logits = (q @ k.transpose(0, 1, 3, 2)) * hd**-0.5  # (B, Hh, N, N)
    if callable(bias):
        bias = bias(q)  # a bias that depends on the query ("relative_1d")
    att = jax.nn.softmax(logits if bias is None else logits + bias, axis=-1)  # rows sum to 1
    y = dropout(att, cfg.attn_drop_rate, r[0]) @ v  # (B, Hh, N, hd)
    y = y.transpose(0, 2, 1, 3).reshape(B, N, D)  # (B, N, D): the heads side by side again
    return dropout(linear(_sub(p, "proj"), y), cfg.drop_rate, r[1])


def mlp(p, x, cfg, rng=None):
    """(B, N, D) -> (B, N, D * mlp_ratio) -> (B, N, D), exact (erf) GELU."""
    r = _split(rng, 2)
    h = dropout(jax.nn.gelu(linear(_sub(p, "fc1"), x), approximate=False), cfg.drop_rate, r[0])
    return dropout(linear(_sub(p, "fc2"), h), cfg.drop_rate, r[1])


def block(p, x, cfg, drop_path_rate, attn_bias=None, rng=None):
    """Pre-norm transformer block (Eq. 2-3): x + MSA(LN(x)), then x + MLP(LN(x))."""
    r = _split(rng, 4)
    x = x + drop_path(attention(_sub(p, "attn"), layer_norm(_sub(p, "norm1"), x, cfg.norm_eps), cfg, attn_bias,
                                r[0]), drop_path_rate, r[1])  # z'_l (Eq. 2)
    x = x + drop_path(mlp(_sub(p, "mlp"), layer_norm(_sub(p, "norm2"), x, cfg.norm_eps), cfg, r[2]),
                      drop_path_rate, r[3])  # z_l (Eq. 3)
    return x


# ---- position embeddings: posemb.py's own code, reading JAX arrays --------------------------------

def position_embedding(params, cfg):
    """The config's position embedding (posemb.KINDS) reading `params` with jax.numpy: the very
    class the NumPy model runs, so every kind works here as it does there. Its constants (a sin-cos
    table, an (N, N) index) are NumPy arrays, which jit folds into the compiled step."""
    prefix = 1 if cfg.class_token else 0
    return posemb.create(cfg, cfg.grid_size, prefix, params=params, ops=posemb.jax_ops())


# ---- the model ---------------------------------------------------------------------------------

def _uses_fc_norm(cfg):
    return cfg.global_pool == "avg" if cfg.fc_norm is None else cfg.fc_norm


def forward_features(params, x, cfg, rng=None):
    """Images (B, C, H, W) -> encoded tokens (B, N, D): Eq. 1-3 and the final LayerNorm."""
    r = _split(rng, 1 + cfg.depth)
    x = patch_embed(_sub(params, "patch_embed.proj"), x)  # (B, Np, D)
    B, _, D = x.shape
    if cfg.class_token:
        cls = jnp.broadcast_to(params["cls_token"], (B, 1, D))  # (B, 1, D): x_class
        x = jnp.concatenate([cls, x], axis=1)  # (B, N, D)
    pe = position_embedding(params, cfg)
    x = dropout(pe.add(x, layer=0), cfg.drop_rate, r[0])  # z_0 (Eq. 1)
    if cfg.patch_drop_rate and rng is not None:  # its own key, so the other draws stay as without it
        x = patch_dropout(x, cfg.patch_drop_rate, 1 if cfg.class_token else 0, jax.random.fold_in(rng, 1 << 20))
    rates = np.linspace(0, cfg.drop_path_rate, cfg.depth)  # stochastic depth grows with depth
    for i in range(cfg.depth):
        if i > 0:
            x = pe.add(x, layer=i)  # only App. D.4's "every block" variants add E_pos again
        x = block(_sub(params, f"blocks.{i}"), x, cfg, float(rates[i]), pe.attention_bias(i), r[1 + i])
    return x if _uses_fc_norm(cfg) else layer_norm(_sub(params, "norm"), x, cfg.norm_eps)  # (B, N, D)


def forward_head(params, x, cfg):
    """Tokens (B, N, D) -> logits (B, K), or the (B, D) representation when num_classes = 0."""
    if cfg.global_pool == "avg":
        x = x[:, 1 if cfg.class_token else 0:].mean(axis=1)  # (B, D): mean of the patch tokens
    else:
        x = x[:, 0]  # (B, D): the class token, y = LN(z_L^0) of Eq. 4
    if _uses_fc_norm(cfg):
        x = layer_norm(_sub(params, "fc_norm"), x, cfg.norm_eps)
    if cfg.representation_size:
        x = jnp.tanh(linear(_sub(params, "pre_logits.fc"), x))  # (B, representation_size)
    return linear(_sub(params, "head"), x) if cfg.num_classes > 0 else x  # (B, K)


def forward(params, x, cfg, rng=None):
    """Images (B, C, H, W) -> logits (B, K); dropout and drop-path only when rng is a key."""
    return forward_head(params, forward_features(params, x, cfg, rng), cfg)


# ---- loss and optimizers -------------------------------------------------------------------------

def cross_entropy(logits, labels, label_smoothing=0.0):
    """Mean softmax cross-entropy of logits (B, K) against labels (B,), targets smoothed as
    (1 - s) * one_hot + s / K (functional.cross_entropy)."""
    B, K = logits.shape
    logp = jax.nn.log_softmax(logits, axis=-1)  # (B, K)
    targets = jax.nn.one_hot(labels, K, dtype=logits.dtype) * (1.0 - label_smoothing) + label_smoothing / K
    return -(targets * logp).sum() / B


def clip_grad_norm(grads, max_norm):
    """(grads scaled together to a global L2 norm of at most max_norm, the norm before)."""
    total = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in grads.values()))
    scale = max_norm / (total + 1e-6)
    return {k: jnp.where(scale < 1.0, g * scale, g) for k, g in grads.items()}, total


@dataclass(frozen=True)
class OptimizerSpec:
    """What the update needs to know of a minivit optimizer: its kind, hyper-parameters, and
    each parameter's weight decay (by state-dict name)."""

    kind: str  # "adamw" | "adam" | "sgd"
    weight_decay: dict  # {name: float}
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False


def optimizer_spec(optimizer, model) -> OptimizerSpec:
    """The OptimizerSpec of a minivit optimizer over `model`'s parameters (its param groups say
    which parameters decay). Every group must share the hyper-parameters but weight decay."""
    from . import optim

    kinds = {optim.Adam: "adam", optim.AdamW: "adamw", optim.SGD: "sgd"}
    if type(optimizer) not in kinds:
        raise TypeError(f"no JAX update for {type(optimizer).__name__}; supported: AdamW, Adam, SGD")
    names = {id(p): name for name, p in model.named_parameters()}
    shared = [{k: v for k, v in g.items() if k not in ("params", "weight_decay")} for g in optimizer.param_groups]
    if any(s != shared[0] for s in shared):
        raise ValueError(f"parameter groups differ in more than weight decay: {shared}")
    decay = {names[id(p)]: float(g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    h = shared[0]
    return OptimizerSpec(kinds[type(optimizer)], decay, tuple(h.get("betas", (0.9, 0.999))), h.get("eps", 1e-8),
                         h.get("momentum", 0.0), h.get("dampening", 0.0), h.get("nesterov", False))


def init_optimizer_state(params, spec):
    """Zero moments (AdamW, Adam) or momentum buffers (SGD), and the step count 0."""
    names = ("momentum_buffer",) if spec.kind == "sgd" else ("exp_avg", "exp_avg_sq")
    state = {name: {k: jnp.zeros_like(v) for k, v in params.items()} for name in names}
    return {"step": jnp.zeros((), jnp.int32), **state}


def adamw_update(p, g, m, v, lr, step, beta1, beta2, eps, weight_decay):
    """One array's AdamW update (kernels/reference/optim.py): returns the new (p, m, v)."""
    p = p * (1.0 - lr * weight_decay) if weight_decay else p  # decoupled weight decay
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * (g * g)
    bias1, bias2 = 1.0 - beta1**step, 1.0 - beta2**step
    return p - (lr / bias1) * (m / (jnp.sqrt(v / bias2) + eps)), m, v


def sgd_update(p, g, buf, lr, step, momentum, dampening, nesterov, weight_decay):
    """One array's SGD update (optim.SGD): L2 weight decay, momentum (its buffer starts at the
    first gradient), Nesterov; returns the new (p, buf)."""
    if weight_decay:
        g = g + weight_decay * p
    if momentum:
        buf = jnp.where(step == 1, g, momentum * buf + (1.0 - dampening) * g)
        g = g + momentum * buf if nesterov else buf
    return p - lr * g, buf


def optimizer_update(spec, params, grads, state, lr):
    """(new params, new state) after one step at learning rate `lr`."""
    step = state["step"] + 1
    new, out = {}, {k: {} for k in state if k != "step"}
    for name, p in params.items():
        g, wd = grads[name], spec.weight_decay[name]
        if spec.kind == "sgd":
            new[name], out["momentum_buffer"][name] = sgd_update(
                p, g, state["momentum_buffer"][name], lr, step, spec.momentum, spec.dampening, spec.nesterov, wd)
            continue
        if spec.kind == "adam" and wd:  # Adam's L2 penalty goes through the moments
            g, wd = g + wd * p, 0.0
        new[name], out["exp_avg"][name], out["exp_avg_sq"][name] = adamw_update(
            p, g, state["exp_avg"][name], state["exp_avg_sq"][name], lr, step, *spec.betas, spec.eps, wd)
    return new, {"step": step, **out}


# ---- devices and the jitted step -------------------------------------------------------------------

def data_mesh(devices=None):
    """A Mesh with one axis 'data' over the first `devices` devices (an int), a list of
    devices, or all of them (None)."""
    available = jax.devices()
    if devices is None or isinstance(devices, int):
        n = len(available) if devices is None else devices
        if not 1 <= n <= len(available):
            raise ValueError(f"asked for {n} devices, JAX sees {len(available)}: {available} (on the CPU, "
                             f"minivit.train.jax_trainer.request_host_devices({n}) before JAX's first computation)")
        devices = available[:n]
    return Mesh(np.array(devices), ("data",))


def replicate(tree, mesh):
    """Every array of `tree` on every device of the mesh (parameters, optimizer state)."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(tree, mesh):
    """Split the leading (batch) axis of every array over the mesh's 'data' axis."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec("data")))


def make_train_step(apply_fn, spec, mesh, label_smoothing=0.0, grad_clip=None):
    """step(params, opt_state, x, y, lr, rng) -> (params, opt_state, loss, correct), jitted:
    x (B, C, H, W) and y (B,) sharded over the mesh's 'data' axis, everything else replicated.
    params and opt_state are donated (updated in place): use the returned ones."""

    def loss_fn(params, x, y, rng):
        logits = apply_fn(params, x, train=True, rng=rng)  # (B, K)
        return cross_entropy(logits, y, label_smoothing), logits

    def train_step(params, opt_state, x, y, lr, rng):
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y, rng)
        if grad_clip:
            grads, _ = clip_grad_norm(grads, grad_clip)
        params, opt_state = optimizer_update(spec, params, grads, opt_state, lr)
        correct = jnp.sum(jnp.argmax(logits, axis=-1) == y)
        return params, opt_state, loss, correct

    same, split = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
    return jax.jit(train_step, in_shardings=(same, same, split, split, same, same),
                   out_shardings=(same, same, same, same), donate_argnums=(0, 1))


def make_predict(apply_fn, mesh):
    """predict(params, x) -> logits (B, K), jitted, x sharded over 'data' (B a multiple of the mesh size)."""
    same, split = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
    return jax.jit(lambda params, x: apply_fn(params, x), in_shardings=(same, split), out_shardings=split)
