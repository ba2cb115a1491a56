"""`minivit train --backend jax [--devices N]`: the Trainer of trainer.py with its step run by JAX.

    from minivit.train.jax_trainer import JaxTrainer, request_host_devices
    request_host_devices(8)                  # 8 CPU devices; before JAX computes anything
    JaxTrainer(TrainConfig(...), devices=8).fit()

Everything but the step is the NumPy Trainer's: data and its order, the initial weights, the
optimizer's parameter groups and the learning-rate schedule, progress, metrics.jsonl, epochs,
Ctrl-C, max_steps. The parameters and optimizer state live on the devices as JAX arrays
(jax_bridge) while training; they are copied back into the NumPy model and optimizer before
anything reads them there: a checkpoint (save), the end of an epoch (evaluation), and the end of
fit(). So checkpoints are minivit's own format, and a run resumes exactly on either backend.

Randomness: dropout and drop-path keys are `fold_in(key(seed), step)`, a function of the step
alone, so a resumed run draws the same masks without storing a JAX key. They are not the NumPy
trainer's masks (that one draws from minivit.rng); without dropout the two backends take the same
steps to float32 rounding.

Several processes (distributed.py: one per host of a TPU pod slice or a GPU cluster, joined by
distributed.initialize before the trainer is made): the mesh spans every process's devices;
each process loads only its rows of every batch; checkpoints are written once, by process 0,
between barriers; metrics, plots and the progress bar come from process 0 only
(Trainer.writes_outputs); Ctrl-C or a preemption notice in any process stops all of them after
the same step, with a checkpoint. The same code runs with one process.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import jax_bridge as jb
from . import distributed
from .trainer import Trainer


def request_host_devices(n):
    """Ask JAX for n CPU devices (data parallel on one machine: tests, trying the mesh), through
    its `jax_num_cpu_devices` option, not the environment. Must run before JAX first computes
    anything (importing it is fine); harmless on GPUs; a no-op for 1."""
    if not n or n == 1:
        return
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # the CPU backend is already up: say so below if it has too few devices
        pass
    if jax.default_backend() == "cpu" and len(jax.local_devices()) < n:
        raise RuntimeError(f"JAX already started with {len(jax.local_devices())} CPU device(s): call "
                           f"request_host_devices({n}) before any JAX computation")


class JaxTrainer(Trainer):
    """A Trainer whose steps and evaluations run in JAX, data parallel over `devices` (an int, a
    list of jax devices, or None for all devices of the default backend; with several processes,
    None: every device of every process)."""

    backend = "jax"

    def __init__(self, cfg, resume=False, devices=None):
        self.processes = distributed.processes()
        if self.processes.count > 1:
            _check_multiprocess_options(cfg, devices)
        self.writes_outputs = self.processes.first
        cfg = cfg if self.processes.first else replace(cfg, progress=False)  # one progress bar
        super().__init__(cfg, resume=resume)  # data, model, optimizer, schedule; a resume loads them
        self.mesh = distributed.global_mesh() if self.processes.count > 1 else jb.data_mesh(devices)
        if cfg.batch_size % self.mesh.size:
            raise ValueError(f"batch size {cfg.batch_size} does not split evenly over {self.mesh.size} devices")
        self.rows = distributed.local_rows(self.mesh, cfg.batch_size)  # all of them with one process
        self.train_loader.rows = self.rows  # this process loads only its rows of every batch
        distributed.check_same({k: getattr(cfg, k) for k in cfg.trajectory_keys()} | {"step": self.step},
                               "the training options or the step resumed from")
        self.spec = jb.optimizer_spec(self.optimizer, self.model)  # one lr for all groups: the step takes one
        params, self.apply_fn = jb.to_jax(self.model)
        self.params = jb.replicate(params, self.mesh)
        self.opt_state = jb.replicate(optimizer_state_to_jax(self.optimizer, self.model, self.spec, self.step),
                                     self.mesh)
        self._step_fn = jb.make_train_step(self.apply_fn, self.spec, self.mesh, cfg.label_smoothing, cfg.grad_clip)
        self._predict = jb.make_predict(self.apply_fn, self.mesh)
        self._key = jax.random.key(cfg.seed)
        self._synced_step = self.step  # the NumPy model and optimizer hold the parameters of this step

    # ---- one step ------------------------------------------------------------------------------
    def train_step(self, x, y):
        """One step on the devices at the schedule's learning rate; x and y are this process's rows
        of the batch (all of it with one process). Returns (loss, number correct) of the whole batch."""
        lr = self.optimizer.param_groups[0]["lr"]
        key = jax.random.fold_in(self._key, self.step)
        x, y = distributed.global_batch((x, y), self.mesh, self.cfg.batch_size)
        self.params, self.opt_state, loss, correct = self._step_fn(
            self.params, self.opt_state, x, y, np.float32(lr), key)
        value = float(loss)
        if not math.isfinite(value):
            raise FloatingPointError(
                f"loss is {value} at step {self.step} (epoch {self.epoch}, lr {lr:.3g}); training diverged: lower "
                "--lr, raise --warmup-epochs or set --grad-clip. The model holds the weights of step "
                f"{self._synced_step}" + (f"; the last checkpoint is {self.out / 'checkpoint.npz'}"
                                          if (self.out / "checkpoint.npz").exists() else ""))
        self.schedule.step()
        return value, int(correct)

    def evaluate(self, loader):
        """(mean loss, accuracy) over a loader, the forward in JAX, the loss as trainer.evaluate's.
        Every process loads the whole evaluation batch (no augmentation: cheap) and feeds its rows."""
        from .. import functional as F

        total_loss, correct, count = 0.0, 0, 0
        n = self.mesh.size
        for x, y in loader.epoch(0):
            pad = -len(x) % n  # the last batch, padded to split over the devices
            x_full = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
            rows = distributed.local_rows(self.mesh, len(x_full))
            x_global = distributed.global_batch(x_full[rows], self.mesh, len(x_full))
            logits = distributed.to_host(self._predict(self.params, x_global))[:len(x)]
            total_loss += float(F.cross_entropy(logits, y).item()) * len(y)
            correct += int((logits.argmax(axis=1) == y).sum())
            count += len(y)
        return total_loss / max(count, 1), correct / max(count, 1)

    # ---- where the NumPy side reads the parameters ---------------------------------------------
    def fit(self):
        final = super().fit()
        self.sync_to_minivit()
        distributed.barrier("minivit fit done")  # process 0's last writes are done before any process exits
        return final

    def save(self, path=None):
        """Process 0 writes the checkpoint once every process has reached this step; all go on
        once it is written (atomically: a process lost meanwhile leaves the previous one whole)."""
        self.sync_to_minivit()
        name = Path(path or "checkpoint.npz").name
        distributed.barrier(f"minivit: save {name} at step {self.step}")
        written = super().save(path) if self.processes.first else Path(path or self.out / "checkpoint.npz")
        distributed.barrier(f"minivit: {name} saved at step {self.step}")
        return written

    def _after_step(self, loss, bar):
        """With several processes, a Ctrl-C in any of them or a preemption notice (SIGTERM) stops
        every one after this same step, with a checkpoint (Trainer's Ctrl-C path)."""
        if self.processes.count > 1 and (distributed.any_process(self._interrupted())
                                         or distributed.preempted(self.step + 1)):
            self._interrupted = lambda: True
        return super()._after_step(loss, bar)

    def sync_to_minivit(self):
        """Copy the devices' parameters and optimizer state into the NumPy model and optimizer."""
        if self._synced_step == self.step:
            return
        params, state = jax.device_get((self.params, self.opt_state))
        for name, p in self.model.named_parameters():
            p.data = np.array(params[name], dtype=p.data.dtype)
        optimizer_state_from_jax(state, self.optimizer, self.model, self.spec)
        self._synced_step = self.step


def _check_multiprocess_options(cfg, devices):
    """ValueError for what several processes cannot do together."""
    if devices is not None:
        raise ValueError(f"with {jax.process_count()} processes the mesh is every device of every process; got "
                         f"devices={devices!r} (on the CPU, request_host_devices(n) sets each process's count)")
    if cfg.time_limit is not None or cfg.schedule_by == "time":
        raise ValueError("time_limit and schedule_by='time' follow this process's clock, which the other processes "
                         "do not share: use epochs or max_steps with several processes")


# ---- optimizer state: minivit's {index: {key: array}} <-> the bridge's {key: {name: array}} ------------
def _indexed_names(optimizer, model):
    """[(index in optimizer.state, parameter name)]: minivit numbers parameters across groups."""
    names = {id(p): name for name, p in model.named_parameters()}
    return list(enumerate(names[id(p)] for g in optimizer.param_groups for p in g["params"]))


def optimizer_state_to_jax(optimizer, model, spec, steps_taken=0):
    """A minivit optimizer's state ({index: {"exp_avg": array, ...}}) as the bridge's
    ({"exp_avg": {name: array}, ..., "step": count}); SGD keeps no count, so `steps_taken` gives it."""
    params = {name: p.data for name, p in model.named_parameters()}
    state = jb.init_optimizer_state(params, spec)
    saved = optimizer.state
    if not saved:
        return state
    counts = {s.get("step", steps_taken) for s in saved.values()}
    if len(saved) != len(params) or len(counts) != 1:
        raise ValueError("the JAX update needs optimizer state for every parameter, at one step count")
    state["step"] = jnp.asarray(counts.pop(), dtype=jnp.int32)
    for i, name in _indexed_names(optimizer, model):
        for key in state:
            if key != "step":
                state[key][name] = jnp.array(saved[i][key])
    return state


def optimizer_state_from_jax(state, optimizer, model, spec):
    """Write the bridge's optimizer state back into a minivit optimizer (the inverse of the above)."""
    step = int(state["step"])
    keys = [k for k in state if k != "step"]
    count = {} if spec.kind == "sgd" else {"step": step}
    optimizer.state = {} if step == 0 else {
        i: {**count, **{k: np.array(state[k][name]) for k in keys}} for i, name in _indexed_names(optimizer, model)}
