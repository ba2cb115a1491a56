"""Parameters are C-contiguous (row-major) after every load and move, whatever the layout of the
arrays they came from, and so is the optimizer state made from them.

Why it matters: the fused AdamW kernels on the GPU (kernels/gpu/optim.py, optim.cu) pair element
i of a parameter's flat memory with element i of its gradient's and its moments'. interop's
transposed kernels (`x.T`: Fortran order) used to stay Fortran-ordered through load_state_dict,
`minivit convert` saved them so (.npz keeps the order) and Module.to copied them so onto the
GPU: the multi-tensor default then refused the step, and the one-array version gave each weight
another weight's gradient. `_adamw_on_flat_memory` below is that GPU kernel's memory access
written in NumPy, so the CPU shows what the GPU would have done.
"""
from __future__ import annotations

import numpy as np
import pytest

import kernels
from kernels import registry
from kernels.reference import optim as reference_optim
from minivit import functional as F
from minivit import device, nn, npz, optim
from minivit.interop import convert, save_vit_jax
from minivit.train.finetune import init_from_checkpoint
from minivit.vit import ViT, ViTConfig

TINY = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=5)
ATOL = 1e-7


def _model():
    return ViT(config=ViTConfig(**TINY), dtype=np.float32)


def _c_state(seed=0):
    """A random state dict of the tiny ViT, every array C-contiguous."""
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0, 0.5, v.shape).astype(v.dtype) for k, v in _model().state_dict().items()}


def _fortran(state):
    return {k: np.asfortranarray(v) for k, v in state.items()}


def _transposed(state):
    """Each array as a transpose of a C-contiguous one, as interop makes them (the (out, in)
    weights are `kernel.T`, the patch weight `kernel.transpose(3, 2, 0, 1)`: neither C nor F)."""
    out = {}
    for k, v in state.items():
        axes = tuple(range(v.ndim))[::-1] if v.ndim != 4 else (3, 2, 0, 1)
        inverse = tuple(np.argsort(axes))
        out[k] = np.ascontiguousarray(v.transpose(inverse)).transpose(axes)
    return out


LAYOUTS = {"fortran": _fortran, "transposed": _transposed}


def _not_c(arrays):
    return sorted(k for k, a in arrays.items() if not a.flags.c_contiguous)


def _assert_c_contiguous(model, what):
    bad = [k for k, p in model.named_parameters() if not p.data.flags.c_contiguous]
    assert not bad, f"{what}: parameters not C-contiguous: {bad}"
    bad = [k for k, p in model.named_parameters() if p.grad is not None and not p.grad.flags.c_contiguous]
    assert not bad, f"{what}: gradients not C-contiguous: {bad}"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_load_state_dict_gives_c_contiguous_parameters_with_the_same_values(layout):
    state = _c_state()
    odd = LAYOUTS[layout](state)
    assert len(_not_c(odd)) >= 9, "the test needs weights that are not C-contiguous"  # 4 per block + head
    model = _model()
    model.load_state_dict(odd)
    _assert_c_contiguous(model, "after load_state_dict")
    for k, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, state[k], err_msg=k)
    model.to("cpu")
    _assert_c_contiguous(model, 'after to("cpu")')
    assert not _not_c(model.state_dict())


def test_to_makes_parameters_and_gradients_assigned_fortran_ordered_c_contiguous():
    """Module.to is a boundary too: an array put into p.data directly (not through a load) comes
    out row-major, also when it is on the device already; a C-contiguous one is not copied."""
    model = _model()
    state = _c_state(1)
    kept = model.blocks[0].norm1.weight.data  # 1-d: C-contiguous whatever the source
    for k, p in model.named_parameters():
        if p.data.ndim > 1:
            p.data = np.asfortranarray(state[k])
            p.grad = np.asfortranarray(state[k] * 2)
    assert _not_c(model.state_dict())
    model.to("cpu")
    _assert_c_contiguous(model, 'after to("cpu")')
    assert model.blocks[0].norm1.weight.data is kept
    for k, p in model.named_parameters():
        if p.data.ndim > 1:
            np.testing.assert_array_equal(p.data, state[k], err_msg=k)
            np.testing.assert_array_equal(p.grad, state[k] * 2, err_msg=k)


def test_parameter_and_astype_give_c_contiguous_arrays():
    a = np.asfortranarray(np.arange(12.0, dtype=np.float32).reshape(3, 4))
    p = nn.Parameter(a)
    assert p.data.flags.c_contiguous
    np.testing.assert_array_equal(p.data, a)
    model = _model()
    for k, q in model.named_parameters():
        q.data = np.asfortranarray(q.data)
    model.astype(np.float64)
    _assert_c_contiguous(model, "after astype")
    assert all(q.dtype == np.float64 for q in model.parameters())


def _grads(model, seed=0):
    """Forward and backward of one batch through `model` (its own gradients: the layout they
    come in is the autograd's)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    labels = np.array([0, 3, 4])
    model.zero_grad()
    F.cross_entropy(model(x), labels).backward()


def _one_step(state, **choice):
    model = _model()
    model.load_state_dict(state)
    opt = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    _grads(model)
    with kernels.use(**choice):
        opt.step()
    return model, opt


def _assert_same_parameters(model, reference, what):
    for (k, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=0, atol=ATOL, err_msg=f"{what}: {k}")


@pytest.mark.parametrize("impl", ["default", "reference"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_one_adamw_step_from_odd_layouts_equals_the_c_ordered_run(layout, impl):
    choice = {} if impl == "default" else {"adamw_update": impl}
    c_model, _ = _one_step(_c_state(), **choice)
    model, opt = _one_step(LAYOUTS[layout](_c_state()), **choice)
    _assert_c_contiguous(model, "after the step")
    for i, s in opt.state.items():
        assert s["exp_avg"].flags.c_contiguous and s["exp_avg_sq"].flags.c_contiguous, i
    _assert_same_parameters(model, c_model, f"{layout} load, adamw_update {impl}")


# ---- the GPU kernel's memory access, on the CPU ---------------------------------------------------
def _flat_memory(a):
    """The a.size elements of a's buffer in memory order, as a view: what a CUDA kernel given
    a's data pointer and size reads and writes (kernels/gpu/optim.py adamw_v2 checks nothing)."""
    span = sum((n - 1) * s for n, s in zip(a.shape, a.strides)) + a.itemsize
    if min(a.strides, default=1) <= 0 or span != a.nbytes:
        raise ValueError("not a dense array: a kernel would read beyond it")
    return np.lib.stride_tricks.as_strided(a, (a.size,), (a.itemsize,))


def _adamw_on_flat_memory(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    reference_optim.adamw_update(*(_flat_memory(a) for a in (p, g, m, v)), lr, beta1, beta2, eps,
                                 weight_decay, step)
    return None, None


@pytest.fixture
def flat_memory_kernel(monkeypatch):
    """'flat_memory', a CPU adamw_update registered for one test only."""
    kernels.available("adamw_update")  # load the table before adding to it
    impl = registry.Impl("adamw_update", "flat_memory", "cpu", _adamw_on_flat_memory, None,
                         "test: optim.cu adamw_v2's flat-memory walk in NumPy")
    monkeypatch.setitem(registry._TABLE["adamw_update"], "flat_memory", impl)
    return "flat_memory"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_flat_memory_adamw_after_an_odd_layout_load_equals_the_c_ordered_run(layout, flat_memory_kernel):
    """Failed before parameters were made C-contiguous: Fortran-ordered p, m and v against the
    autograd's row-major gradient paired each weight with another weight's gradient."""
    c_model, _ = _one_step(_c_state())  # the default kernel on C-ordered parameters
    model, _ = _one_step(LAYOUTS[layout](_c_state()), adamw_update=flat_memory_kernel)
    _assert_same_parameters(model, c_model, f"{layout} load, flat-memory AdamW")


def test_flat_memory_kernel_is_wrong_on_a_fortran_parameter(flat_memory_kernel):
    """Control: the emulation does reproduce the failure when a parameter is Fortran-ordered and
    its gradient is not (so the test above can fail)."""
    p = nn.Parameter(np.zeros((3, 4), np.float32))
    p.data = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))  # behind nn's back
    q = nn.Parameter(np.arange(12, dtype=np.float32).reshape(3, 4))
    g = np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5
    for param in (p, q):
        param.grad = g.copy()
        opt = optim.AdamW([param], lr=0.1, weight_decay=0.0)
        with kernels.use(adamw_update=flat_memory_kernel):
            opt.step()
    assert not np.allclose(p.data, q.data, atol=1e-3)


# ---- optimizer state ---------------------------------------------------------------------------
def test_optimizer_state_is_c_contiguous_when_made_and_when_loaded():
    model = _model()
    model.load_state_dict(_fortran(_c_state()))
    opt = optim.AdamW(model.parameters(), lr=1e-3)
    _grads(model)
    opt.step()
    saved = opt.state_dict()
    odd = {"param_groups": saved["param_groups"],
           "state": {i: {k: np.asfortranarray(v) if np.ndim(v) else v for k, v in s.items()}
                     for i, s in saved["state"].items()}}
    assert any(not v.flags.c_contiguous for s in odd["state"].values() for v in s.values() if np.ndim(v))
    fresh = optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(odd)
    for i, s in fresh.state.items():
        for key in ("exp_avg", "exp_avg_sq"):
            assert s[key].flags.c_contiguous, (i, key)
            np.testing.assert_array_equal(s[key], saved["state"][i][key])


def test_moments_of_a_parameter_assigned_fortran_ordered_are_still_c_contiguous():
    """zeros_like would copy a Fortran layout into the moments; they are made row-major."""
    p = nn.Parameter(np.zeros((3, 4), np.float32))
    p.data = np.asfortranarray(np.ones((3, 4), np.float32))
    p.grad = np.ones((3, 4), np.float32)
    opt = optim.AdamW([p], lr=1e-3)
    opt.step()
    assert opt.state[0]["exp_avg"].flags.c_contiguous and opt.state[0]["exp_avg_sq"].flags.c_contiguous


# ---- minivit convert and --init-from ----------------------------------------------------------------
def test_convert_writes_c_ordered_arrays_and_init_from_an_old_fortran_checkpoint_gives_c_parameters(tmp_path):
    source = _model()
    source.load_state_dict(_c_state(2))
    official = save_vit_jax(source, tmp_path / "official.npz")
    convert(official, tmp_path / "ck.npz")
    saved = npz.read(tmp_path / "ck.npz")
    assert not _not_c({k: v for k, v in saved.items() if k.startswith("model/")})  # npz keeps F order
    # a checkpoint written before the fix: its transposed weights Fortran-ordered in the file
    old = {k: np.asfortranarray(v) if k.startswith("model/") else v for k, v in saved.items()}
    npz.write(tmp_path / "old.npz", old)
    assert _not_c(npz.read(tmp_path / "old.npz"))
    model = _model()
    init_from_checkpoint(model, tmp_path / "old.npz")
    _assert_c_contiguous(model, "after init_from_checkpoint")
    for k, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, source.state_dict()[k], err_msg=k)


# ---- the same boundaries on test_device_cpu's fake GPU (NumPy arrays posing as CuPy's) ----------
@pytest.fixture
def fake_cuda(monkeypatch, restore_kernel_choices):
    from test_device_cpu import ON_FAKE_GPU, install

    install(monkeypatch)  # its FakeCupy.array copies in 'K' order, as cupy.array and cupy.asarray do
    with kernels.use(**ON_FAKE_GPU):
        yield


@pytest.fixture
def flat_memory_gpu_kernel(monkeypatch):
    """'flat_memory_gpu': _adamw_on_flat_memory registered as a GPU adamw_update, for one test."""
    from test_device_cpu import _raw

    kernels.available("adamw_update")
    forward = lambda p, g, m, v, **hyper: _adamw_on_flat_memory(*(_raw(a) for a in (p, g, m, v)), **hyper)  # noqa: E731
    impl = registry.Impl("adamw_update", "flat_memory_gpu", "gpu", forward, None, "test: optim.cu adamw_v2's walk")
    monkeypatch.setitem(registry._TABLE["adamw_update"], "flat_memory_gpu", impl)
    return "flat_memory_gpu"


def _gpu_step(state, kernel):
    model = _model().to("cuda")
    model.load_state_dict(state)  # host arrays into GPU parameters
    opt = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    _grads(model)
    with kernels.use(adamw_update=kernel):
        opt.step()
    return model, opt


def test_on_a_fake_gpu_moves_and_loads_give_c_contiguous_parameters_and_the_flat_step_is_right(
        fake_cuda, flat_memory_gpu_kernel):
    from test_device_cpu import _raw

    state = _c_state(3)
    moved = _model()
    for k, p in moved.named_parameters():
        p.data = np.asfortranarray(state[k])  # behind load_state_dict's back: Module.to must fix it
    moved.to("cuda")
    assert all(device.device_of(p.data) == "gpu" for p in moved.parameters())
    _assert_c_contiguous(moved, 'after to("cuda")')
    for layout, make in LAYOUTS.items():
        c_model, _ = _gpu_step(state, flat_memory_gpu_kernel)
        model, opt = _gpu_step(make(state), flat_memory_gpu_kernel)
        _assert_c_contiguous(model, f"{layout} load onto the GPU")
        assert all(s[k].flags.c_contiguous for s in opt.state.values() for k in ("exp_avg", "exp_avg_sq"))
        for (k, p), (_, q) in zip(model.named_parameters(), c_model.named_parameters()):
            np.testing.assert_allclose(_raw(p.data), _raw(q.data), rtol=0, atol=ATOL, err_msg=f"{layout}: {k}")
