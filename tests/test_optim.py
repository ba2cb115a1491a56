"""Optimisers and schedules (minivit/optim.py) against torch.optim, in float64 with tight
tolerances (rtol 1e-12: the same arithmetic up to operation order), plus state round trips,
gradient clipping and the learning-rate schedules."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

import kernels
from minivit import nn, optim

SHAPES = [(3, 4), (5,), (2, 2, 2)]
STEPS = 5
RTOL, ATOL = 1e-12, 1e-14


def _torch():
    return pytest.importorskip("torch", reason="torch.optim is the reference for these checks")


def _problem(seed=0, dtype=np.float64):
    """Initial parameter values and STEPS rounds of gradients."""
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(STEPS)]
    return init, grads


def _params(init):
    return [nn.Parameter(a.copy()) for a in init]


def _step(opt, params, grads):
    for p, g in zip(params, grads):
        p.grad = g.copy()
    opt.step()


def _run_ours(make, init, grads, groups=None):
    params = _params(init)
    opt = make(params if groups is None else groups(params))
    history = []
    for g in grads:
        _step(opt, params, g)
        history.append([p.data.copy() for p in params])
    return history


def _run_torch(make, init, grads, groups=None):
    torch = _torch()
    params = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt = make(params if groups is None else groups(params))
    history = []
    for g in grads:
        for p, gi in zip(params, g):
            p.grad = torch.tensor(gi.copy())
        opt.step()
        history.append([p.detach().numpy().copy() for p in params])
    return history


def _assert_same_trajectory(ours, theirs):
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for i, (x, y) in enumerate(zip(a, b)):
            np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL, err_msg=f"step {step + 1}, param {i}")


SGD_CASES = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.1, momentum=0.9),
    "momentum+dampening": dict(lr=0.05, momentum=0.8, dampening=0.3),
    "nesterov": dict(lr=0.1, momentum=0.9, nesterov=True),
    "weight_decay": dict(lr=0.1, weight_decay=0.01),
    "all": dict(lr=0.07, momentum=0.5, weight_decay=0.1, nesterov=True),
}


@pytest.mark.parametrize("case", sorted(SGD_CASES))
def test_sgd_matches_torch_over_five_steps(case):
    torch = _torch()
    kw = SGD_CASES[case]
    init, grads = _problem()
    _assert_same_trajectory(_run_ours(lambda p: optim.SGD(p, **kw), init, grads),
                            _run_torch(lambda p: torch.optim.SGD(p, **kw), init, grads))


ADAM_CASES = {
    "Adam": dict(lr=0.01),
    "Adam+L2": dict(lr=0.01, weight_decay=0.1),
    "Adam+betas+eps": dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05),
    "AdamW": dict(lr=0.01),
    "AdamW+wd": dict(lr=0.01, weight_decay=0.3),
    "AdamW+betas+eps": dict(lr=0.02, betas=(0.5, 0.9), eps=1e-4, weight_decay=0.05),
}


@pytest.mark.parametrize("case", sorted(ADAM_CASES))
def test_adam_and_adamw_match_torch_over_five_steps(case):
    torch = _torch()
    name, kw = case.split("+")[0], ADAM_CASES[case]
    init, grads = _problem(1)
    _assert_same_trajectory(_run_ours(lambda p: getattr(optim, name)(p, **kw), init, grads),
                            _run_torch(lambda p: getattr(torch.optim, name)(p, **kw), init, grads))


def test_adam_and_adamw_defaults_match_torch():
    torch = _torch()
    for name in ("Adam", "AdamW"):
        ours, theirs = getattr(optim, name)(_params([np.zeros(1)])), getattr(torch.optim, name)([torch.zeros(1)])
        for key in ("lr", "betas", "eps", "weight_decay"):
            assert tuple(np.atleast_1d(ours.defaults[key])) == tuple(np.atleast_1d(theirs.defaults[key])), (name, key)


def test_param_groups_with_different_lr_and_weight_decay_match_torch():
    torch = _torch()

    def groups(ps):
        return [{"params": ps[:1], "lr": 0.1, "weight_decay": 0.0}, {"params": ps[1:], "weight_decay": 0.5}]

    init, grads = _problem(2)
    for ours, theirs in ((optim.AdamW, torch.optim.AdamW), (optim.SGD, torch.optim.SGD)):
        _assert_same_trajectory(_run_ours(lambda g: ours(g, lr=0.01, momentum=0.9) if ours is optim.SGD
                                          else ours(g, lr=0.01), init, grads, groups),
                                _run_torch(lambda g: theirs(g, lr=0.01, momentum=0.9) if theirs is torch.optim.SGD
                                           else theirs(g, lr=0.01), init, grads, groups))


def test_parameters_without_a_gradient_are_left_alone():
    params = _params(_problem()[0])
    before = [p.data.copy() for p in params]
    opt = optim.AdamW(params, lr=0.1, weight_decay=0.5)
    params[0].grad = np.ones(SHAPES[0])
    opt.step()
    assert not np.array_equal(params[0].data, before[0])
    for p, b in zip(params[1:], before[1:]):
        np.testing.assert_array_equal(p.data, b)  # not even weight decay
    assert list(opt.state) == [0]


@pytest.mark.parametrize("make", [lambda p: optim.SGD(p, lr=0.1, momentum=0.9), lambda p: optim.AdamW(p, lr=0.1)])
def test_float32_parameters_and_state_stay_float32(make):
    init, grads = _problem(3, dtype=np.float32)
    params = _params(init)
    opt = make(params)
    for g in grads:
        _step(opt, params, g)
    assert all(p.dtype == np.float32 for p in params)
    assert all(v.dtype == np.float32 for s in opt.state.values() for v in s.values() if isinstance(v, np.ndarray))


def test_zero_grad_clears_gradients():
    params = _params(_problem()[0])
    opt = optim.SGD(params, lr=0.1)
    for p in params:
        p.grad = np.ones(p.shape)
    opt.zero_grad()
    assert all(p.grad is None for p in params)


@pytest.mark.parametrize("make", [
    lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    lambda p: optim.Adam(p, lr=0.01, weight_decay=0.1),
    lambda p: optim.AdamW(p, lr=0.01, weight_decay=0.1),
])
@pytest.mark.parametrize("via_json", [False, True])
def test_state_dict_round_trip_continues_identically(make, via_json):
    init, grads = _problem(4)
    a_params = _params(init)
    a = make(a_params)
    for g in grads[:3]:
        _step(a, a_params, g)
    saved = copy.deepcopy(a.state_dict())  # what a checkpoint would write now
    if via_json:
        saved = json.loads(json.dumps(saved, default=lambda x: x.tolist() if isinstance(x, np.ndarray) else x))
    b_params = [nn.Parameter(p.data.copy()) for p in a_params]
    b = make(b_params)  # a fresh optimizer on the same parameter values
    b.param_groups[0]["lr"] = 123.0  # overwritten by the load
    b.load_state_dict(saved)
    assert b.param_groups[0]["lr"] == a.param_groups[0]["lr"]
    for g in grads[3:]:
        _step(a, a_params, g)
        _step(b, b_params, g)
    for pa, pb in zip(a_params, b_params):
        np.testing.assert_array_equal(pa.data, pb.data)


def test_load_state_dict_rejects_state_for_other_group_sizes():
    opt = optim.AdamW(_params(_problem()[0]))
    other = optim.AdamW(_params(_problem()[0][:2]))
    with pytest.raises(ValueError, match=r"\[2\].*\[3\]"):
        opt.load_state_dict(other.state_dict())


def test_constructor_argument_errors_are_clear():
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(_params([np.zeros(2)]), lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        optim.AdamW(_params([np.zeros(2)]), betas=(0.9, 1.0))


@pytest.mark.parametrize("impl", [i.name for i in kernels.available("adamw_update", device="cpu")])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_adamw_with_every_registered_update_kernel_matches_the_reference(impl, dtype, rtol):
    init, grads = _problem(5, dtype=dtype)
    runs = {}
    for name in ("reference", impl):
        with kernels.use(adamw_update=name):
            runs[name] = _run_ours(lambda p: optim.AdamW(p, lr=0.01, weight_decay=0.1), init, grads)
    for a, b in zip(runs["reference"], runs[impl]):
        for x, y in zip(a, b):
            assert y.dtype == dtype
            np.testing.assert_allclose(y, x, rtol=rtol, atol=rtol * 1e-2)


def test_adamw_hands_a_foreach_kernel_one_list_per_argument_and_updates_exactly_as_one_by_one(monkeypatch):
    """The multi-tensor path (the GPU's one-launch AdamW) with a CPU stand-in: per-group learning
    rates and weight decays (the decay exemptions) reach each parameter's slot of the lists."""
    from kernels import registry

    ref = registry.find("adamw_update", "reference")
    calls = []

    def foreach(ps, gs, ms, vs, *, lr, beta1, beta2, eps, weight_decay, step):
        calls.append(len(ps))
        for i in range(len(ps)):
            ref.forward(ps[i], gs[i], ms[i], vs[i], lr=lr[i], beta1=beta1[i], beta2=beta2[i], eps=eps[i],
                        weight_decay=weight_decay[i], step=step[i])

    monkeypatch.setitem(registry._TABLE["adamw_update"], "test_foreach",
                        registry.Impl("adamw_update", "test_foreach", "cpu", ref.forward, None, "stand-in", foreach))
    init, grads = _problem(4)

    def make(params):
        params = list(params)
        return optim.AdamW([{"params": params[:1], "lr": 0.02, "weight_decay": 0.0},
                            {"params": params[1:]}], lr=0.01, weight_decay=0.1)

    with kernels.use(adamw_update="reference"):
        expected = _run_ours(make, init, grads)
    with kernels.use(adamw_update="test_foreach"):
        got = _run_ours(make, init, grads)
    assert calls and all(n == len(init) for n in calls)  # every parameter in one call, every step
    for a, b in zip(expected, got):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(y, x)


# ---- gradient clipping ----------------------------------------------------------------------

@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch_and_returns_the_pre_clip_norm(max_norm):
    torch = _torch()
    init, grads = _problem(6)
    params = _params(init)
    for p, g in zip(params, grads[0]):
        p.grad = g.copy()
    tparams = [torch.tensor(a, requires_grad=True) for a in init]
    for p, g in zip(tparams, grads[0]):
        p.grad = torch.tensor(g.copy())
    total = optim.clip_grad_norm_(params, max_norm)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, max_norm)
    expected = math.sqrt(sum(float((g**2).sum()) for g in grads[0]))
    assert type(total) is np.ndarray and total.shape == () and total.dtype == np.float64
    assert total == pytest.approx(expected, rel=1e-12) and total == pytest.approx(float(ttotal), rel=1e-12)
    for p, tp, g in zip(params, tparams, grads[0]):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-12)
        if max_norm > total:
            np.testing.assert_array_equal(p.grad, g)  # below the threshold: untouched
    new_norm = math.sqrt(sum(float((p.grad**2).sum()) for p in params))
    assert new_norm <= max_norm * (1 + 1e-9)


def test_clip_grad_norm_skips_missing_grads_keeps_float32_and_returns_zero_without_grads():
    params = _params([np.zeros(3, dtype=np.float32), np.zeros(4, dtype=np.float32)])
    none = optim.clip_grad_norm_(params, 1.0)
    assert type(none) is np.ndarray and none.shape == () and none == 0.0
    params[1].grad = np.full(4, 3.0, dtype=np.float32)  # norm 6
    assert optim.clip_grad_norm_(iter(params), 1.5) == pytest.approx(6.0)
    assert params[0].grad is None
    assert params[1].grad.dtype == np.float32
    np.testing.assert_allclose(params[1].grad, np.full(4, 0.75), rtol=1e-5)


# ---- schedules ------------------------------------------------------------------------------

def test_warmup_is_linear_from_lr_over_warmup_up_to_lr():
    base, warmup = 0.4, 8
    lrs = [optim.lr_at(s, base, total_steps=100, warmup_steps=warmup) for s in range(warmup)]
    assert lrs[0] == pytest.approx(base / warmup)
    assert lrs[-1] == pytest.approx(base)
    np.testing.assert_allclose(np.diff(lrs), base / warmup, rtol=1e-12)


@pytest.mark.parametrize("warmup", [0, 10])
@pytest.mark.parametrize("min_lr", [0.0, 1e-3])
def test_cosine_starts_at_lr_decreases_monotonically_and_reaches_min_lr_at_total_steps(warmup, min_lr):
    base, total = 0.1, 60
    lrs = np.array([optim.lr_at(s, base, total, warmup, "cosine", min_lr) for s in range(warmup, total + 5)])
    assert lrs[0] == pytest.approx(base)
    assert np.all(np.diff(lrs) <= 1e-15)
    assert lrs[total - warmup] == pytest.approx(min_lr, abs=1e-15)
    np.testing.assert_allclose(lrs[total - warmup:], min_lr, atol=1e-15)  # and stays there
    mid = (warmup + total) / 2
    assert optim.lr_at(mid, base, total, warmup, "cosine", min_lr) == pytest.approx((base + min_lr) / 2)


def test_linear_decay_falls_by_equal_steps_to_min_lr():
    base, total, warmup, min_lr = 0.2, 50, 10, 0.02
    lrs = np.array([optim.lr_at(s, base, total, warmup, "linear", min_lr) for s in range(warmup, total + 1)])
    assert lrs[0] == pytest.approx(base) and lrs[-1] == pytest.approx(min_lr)
    np.testing.assert_allclose(np.diff(lrs), (min_lr - base) / (total - warmup), rtol=1e-9)


def test_constant_schedule_holds_lr_after_warmup():
    assert [optim.lr_at(s, 0.3, 10, 2, "constant") for s in range(5)] == pytest.approx([0.15, 0.3, 0.3, 0.3, 0.3])


def test_unknown_schedule_name_raises_naming_it():
    with pytest.raises(ValueError, match="'cosinus'"):
        optim.lr_at(20, 0.1, 100, warmup_steps=5, schedule="cosinus")


def test_unknown_schedule_name_raises_even_during_warmup():
    with pytest.raises(ValueError, match="'cosinus'"):
        optim.lr_at(0, 0.1, 100, warmup_steps=5, schedule="cosinus")


def test_warmup_schedule_rejects_an_unknown_schedule_at_construction():
    opt = optim.SGD(_params([np.zeros(2)]), lr=0.1)
    with pytest.raises(ValueError, match="'cosinus'"):
        optim.WarmupSchedule(opt, total_steps=100, warmup_steps=5, schedule="cosinus")


def _two_group_optimizer():
    ps = _params([np.zeros(2), np.zeros(3)])
    return optim.AdamW([{"params": ps[:1], "lr": 0.1}, {"params": ps[1:], "lr": 0.01}])


def test_warmup_schedule_sets_every_group_lr_from_lr_at_with_proportional_min_lr():
    opt = _two_group_optimizer()
    sched = optim.WarmupSchedule(opt, total_steps=20, warmup_steps=4, schedule="cosine", min_lr=1e-3)
    for step in range(25):
        expected = [optim.lr_at(step, 0.1, 20, 4, "cosine", 1e-3), optim.lr_at(step, 0.01, 20, 4, "cosine", 1e-4)]
        assert sched.get_last_lr() == pytest.approx(expected, rel=1e-12)
        assert [g["lr"] for g in opt.param_groups] == sched.get_last_lr()
        sched.step()
    assert sched.get_last_lr() == pytest.approx([1e-3, 1e-4])


def test_warmup_schedule_state_round_trips_and_continues_identically():
    a_opt, b_opt = _two_group_optimizer(), _two_group_optimizer()
    a = optim.WarmupSchedule(a_opt, total_steps=30, warmup_steps=5, schedule="linear", min_lr=1e-4)
    for _ in range(7):
        a.step()
    state = json.loads(json.dumps(a.state_dict()))
    b = optim.WarmupSchedule(b_opt, total_steps=30, warmup_steps=5, schedule="linear", min_lr=1e-4)
    b.load_state_dict(state)
    assert b.get_last_lr() == a.get_last_lr()
    for _ in range(5):
        a.step()
        b.step()
        assert b.get_last_lr() == a.get_last_lr()
