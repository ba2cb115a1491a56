"""Optimisers and learning-rate schedules with torch.optim's names and behaviour.

    opt = minivit.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    loss.backward(); minivit.optim.clip_grad_norm_(model.parameters(), 1.0); opt.step(); opt.zero_grad()

SGD (momentum, Nesterov), Adam (L2 penalty added to the gradient) and AdamW (decoupled weight
decay, Loshchilov & Hutter 2019). The AdamW update itself is the `adamw_update` kernel, so the
Numba version runs it in one fused pass, and on the GPU one multi-tensor launch updates every
parameter of a step (the kernel's `foreach`). Schedules: linear warm-up, then cosine or linear
decay (the paper's fine-tuning and pre-training schedules, Appendix B.1).

Two tables name what a training run can choose, and nothing else lists them (TrainConfig and
the `minivit train` flags read their keys): OPTIMIZERS (name -> how a TrainConfig builds it) and
SCHEDULES (name -> the decay after the warm-up).

Devices: optimizer state lives on its parameter's device (made there; loaded there from a
checkpoint's host arrays; moved there at the next step if the model was moved after the
optimizer was made). clip_grad_norm_ returns the norm as a 0-d float64 array of the gradients'
array module on every device (as torch returns a tensor): on the GPU neither the norm nor the
clipping factor is copied to the host; `float(norm)` reads it when a number is wanted.
"""
from __future__ import annotations

import math

import numpy as np

import kernels

from .device import array_module, device_of, to_device, to_host
from .nn import c_contiguous


class Optimizer:
    """Holds `param_groups` (list of dicts: "params" and hyper-parameters) and per-parameter
    `state`, like torch.optim.Optimizer."""

    def __init__(self, params, defaults):
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups = [{**defaults, **g, "params": list(g["params"])} for g in groups]
        self.state: dict[int, dict] = {}  # keyed by the parameter's position across all groups

    def _params(self):
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                yield i, group, p
                i += 1

    def zero_grad(self):
        for _, _, p in self._params():
            p.grad = None

    def step(self):
        for i, group, p in self._params():
            if p.grad is not None:
                self._update(p, p.grad, _follow(self.state.setdefault(i, {}), p.data), group)

    def _update(self, p, g, state, group):
        raise NotImplementedError

    def state_dict(self):
        """{"param_groups": hyper-parameters (no arrays), "state": {index: {name: array or int}}}."""
        groups = [{k: v for k, v in g.items() if k != "params"} | {"num_params": len(g["params"])}
                  for g in self.param_groups]
        return {"param_groups": groups, "state": {i: dict(s) for i, s in self.state.items()}}

    def load_state_dict(self, state_dict):
        groups = state_dict["param_groups"]
        if [g["num_params"] for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("optimizer state does not match: it was saved for parameter groups of sizes "
                             f"{[g['num_params'] for g in groups]}, this optimizer has "
                             f"{[len(g['params']) for g in self.param_groups]}")
        for group, saved in zip(self.param_groups, groups):
            group.update({k: v for k, v in saved.items() if k != "num_params"})
        params = {i: p for i, _, p in self._params()}
        self.state = {}
        for i, s in state_dict["state"].items():
            i = int(i)
            like = params[i].data
            self.state[i] = {k: (_array_like(v, like) if np.ndim(v) else v) for k, v in s.items()}


def _array_like(value, like):
    """A C-contiguous copy of value with like's dtype, on like's device (the fused AdamW kernels
    pair a moment's flat memory with its parameter's, which is C-contiguous: see nn.Parameter;
    a checkpoint may hold Fortran-ordered moments)."""
    if device_of(like) == "cpu":
        return np.array(to_host(value), dtype=like.dtype, order="C")
    return c_contiguous(array_module(like).array(value, dtype=like.dtype))


def _follow(state, like):
    """The state's arrays moved to like's device where they are elsewhere; returns state."""
    where = device_of(like)
    for key, value in state.items():
        if np.ndim(value) and device_of(value) != where:
            state[key] = to_device(value, where)
    return state


class SGD(Optimizer):
    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _update(self, p, g, state, group):
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        if group["momentum"]:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= group["momentum"]
                buf += (1.0 - group["dampening"]) * g
            g = g + group["momentum"] * buf if group["nesterov"] else buf
        p.data -= group["lr"] * g


class AdamW(Optimizer):
    """Adam with decoupled weight decay: p <- p - lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def step(self):
        """Update every parameter that has a gradient: the kernel once per parameter, or once
        for all of them (of one device and dtype) where it takes lists (`foreach`)."""
        todo = {}  # (device, dtype) -> [(p, g, state, group, weight decay)]
        for i, group, p in self._params():
            if p.grad is None:
                continue
            state = _follow(self.state.setdefault(i, {}), p.data)
            if not state:
                xp = array_module(p.data)
                # C order, as the parameter (nn.Parameter); zeros_like would copy a Fortran layout
                state.update(step=0, exp_avg=xp.zeros(p.data.shape, p.data.dtype),
                             exp_avg_sq=xp.zeros(p.data.shape, p.data.dtype))
            state["step"] += 1
            g, wd = p.grad, group["weight_decay"]
            if not self.decoupled and wd:
                g = g + wd * p.data  # Adam's L2 penalty goes through the moments
                wd = 0.0
            todo.setdefault((device_of(p.data), p.data.dtype), []).append((p, g, state, group, wd))
        for (device, _), items in todo.items():
            impl = kernels.get("adamw_update", device)
            if impl.foreach is not None:  # one call for every parameter: one list per argument
                params, grads, states, groups, decays = zip(*items)
                impl.foreach([p.data for p in params], list(grads),
                             [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                             lr=[g["lr"] for g in groups], beta1=[g["betas"][0] for g in groups],
                             beta2=[g["betas"][1] for g in groups], eps=[g["eps"] for g in groups],
                             weight_decay=list(decays), step=[s["step"] for s in states])
                continue
            for p, g, state, group, wd in items:
                beta1, beta2 = group["betas"]
                impl.forward(p.data, g, state["exp_avg"], state["exp_avg_sq"], lr=group["lr"], beta1=beta1,
                             beta2=beta2, eps=group["eps"], weight_decay=wd, step=state["step"])


class Adam(AdamW):
    """Adam (Kingma & Ba 2015); weight_decay adds an L2 penalty to the gradient, as in torch."""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def clip_grad_norm_(parameters, max_norm: float):
    """Scale all gradients together so that their global L2 norm is at most max_norm; returns the
    norm before clipping (as torch.nn.utils.clip_grad_norm_) as a 0-d float64 array of the
    gradients' array module: NumPy on the CPU, CuPy on the GPU (where neither the norm nor the
    factor is copied to the host). No gradients: a NumPy 0. `float(norm)` gives a number."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return np.zeros((), np.float64)
    if device_of(grads[0]) == "gpu":
        return _clip_on_device(grads, max_norm)
    total = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    scale = max_norm / (total + 1e-6)
    if scale < 1.0:
        for g in grads:
            g *= g.dtype.type(scale)
    return np.asarray(total, np.float64)


def _clip_on_device(grads, max_norm):
    """Two multi-tensor launches (kernels/gpu/optim.py): the norm, then every gradient times
    min(1, max_norm / (norm + 1e-6)), a factor the second launch reads from device memory."""
    from kernels.gpu import optim as gpu_optim

    if any(device_of(g) != "gpu" for g in grads):
        raise ValueError("clip_grad_norm_: gradients on both the CPU and the GPU; move the model to one device")
    xp = array_module(grads[0])
    total = gpu_optim.global_norm(grads)  # 0-d float64 on the device
    gpu_optim.scale_(grads, xp.minimum(1.0, max_norm / (total + 1e-6)))
    return total


# ---- the optimizers a training run can name (TrainConfig.optimizer, `minivit train --optimizer`) --------
# name -> build(param_groups, cfg): cfg is a TrainConfig (lr; for SGD momentum and nesterov); each
# group brings its own weight_decay (minivit.train.param_groups); betas and eps are the defaults.
OPTIMIZERS = {
    "adamw": lambda groups, cfg: AdamW(groups, lr=cfg.lr),
    "adam": lambda groups, cfg: Adam(groups, lr=cfg.lr),
    # Nesterov momentum unless cfg.nesterov is False, as timm's "sgd" (its "momentum" is the plain kind)
    "sgd": lambda groups, cfg: SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov),
}


def create_optimizer(name: str, param_groups, cfg) -> Optimizer:
    """The optimizer that OPTIMIZERS names, over `param_groups`, with cfg's hyper-parameters."""
    return _lookup(OPTIMIZERS, "optimizer", name)(param_groups, cfg)


# ---- learning-rate schedules: the decay after the warm-up ----------------------------------------
# name -> decay(progress, base_lr, min_lr), progress running from 0 (end of warm-up) to 1 (total_steps)
def cosine_decay(progress, base_lr, min_lr):
    """Half a cosine from base_lr down to min_lr."""
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def linear_decay(progress, base_lr, min_lr):
    """A straight line from base_lr down to min_lr."""
    return base_lr + (min_lr - base_lr) * progress


def constant_lr(progress, base_lr, min_lr):
    """base_lr throughout; min_lr is not used."""
    return base_lr


SCHEDULES = {"cosine": cosine_decay, "linear": linear_decay, "constant": constant_lr}


def _lookup(table, what, name):
    """table[name], or a ValueError naming what was given and what the table holds."""
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"{what} must be one of {', '.join(table)}, got {name!r}")
    return table[name]


def lr_at(step, base_lr, total_steps, warmup_steps=0, schedule="cosine", min_lr=0.0):
    """Learning rate at `step` (0-based): linear warm-up from 0 over `warmup_steps`, then the
    decay SCHEDULES names, from base_lr to `min_lr` at `total_steps` (and after it)."""
    decay = _lookup(SCHEDULES, "schedule", schedule)
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return decay(progress, base_lr, min_lr)


class WarmupSchedule:
    """The learning-rate schedule of a training run: sets every group's lr to `lr_at(step)` (its
    own base lr, min_lr scaled alike) at construction and after each `step()`; its only state is
    the step count, so `set_step(n)` puts a resumed run back on the same curve."""

    def __init__(self, optimizer, total_steps, warmup_steps=0, schedule="cosine", min_lr=0.0):
        _lookup(SCHEDULES, "schedule", schedule)  # a ValueError now, not at the first step
        self.optimizer, self.total_steps, self.warmup_steps = optimizer, total_steps, warmup_steps
        self.schedule, self.min_lr = schedule, min_lr
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.set_step(0)

    def set_step(self, step):
        self.last_step = int(step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = lr_at(self.last_step, base, self.total_steps, self.warmup_steps, self.schedule,
                                self.min_lr * base / self.base_lrs[0] if self.base_lrs[0] else self.min_lr)

    def step(self):
        self.set_step(self.last_step + 1)

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {"last_step": self.last_step, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state):
        self.base_lrs = list(state["base_lrs"])
        self.set_step(state["last_step"])
