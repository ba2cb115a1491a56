"""The GPU plumbing, proven on a machine without a GPU: device names; the errors when CuPy or a GPU
is missing (one line from every command); Module.to; the GPU versions written as CuPy array code
(run here with NumPy) against the float64 reference; the index arithmetic the CUDA kernels rely on
(matmul's batch strides, the multi-tensor chunk table, the dropout hash); the data loader's
hand-off to the device; and, on a fake GPU (NumPy arrays that minivit takes for CuPy arrays), a
whole training run: parameters, optimizer state and batches stay on the device, checkpoints hold
host arrays and load onto either device, and a training step copies one array to the host.
tests/test_gpu.py runs the same claims, and the CUDA C kernels, on a real GPU.

The fake GPU (the first section below): `FakeDeviceArray` is a NumPy array that minivit takes
for a GPU array (its type's module starts with "cupy"): arithmetic on it stays "on the device",
mixing it with a NumPy array raises as CuPy does, and every copy to the host (get, item, tolist,
float(), int(), bool()) is recorded with the minivit function that caused it. `install` puts a
fake `cupy` (NumPy's functions, returning device arrays) and `cupyx.scipy.special.erf` in
sys.modules, so code written against the array's module (the autograd, the CuPy-array kernel
versions, the optimizer, the trainer) runs its GPU path for real, on the CPU; the CUDA C kernels
cannot. `FakeCopies` replaces minivit.device.CudaCopies (streams, events, pinned memory, async
copies): a copy runs only when something waits for it, as late as a GPU may run it, so a buffer
reused before its copy ran shows up as a wrong batch.
"""
from __future__ import annotations

import sys
import traceback
import types

import numpy as np
import pytest

import kernels
import minivit
from kernels import bench
from kernels.gpu import dense as gpu_dense
from kernels.gpu import dropout as gpu_dropout
from kernels.gpu import optim as gpu_optim
from kernels.gpu import runtime
from minivit import device
from minivit.cli import main
from minivit.data import DataLoader, load_dataset

XP_VERSIONS = [  # GPU versions written as CuPy array code: with NumPy arrays they run here
    ("matmul", "gpu_cublas"), ("linear", "gpu_cublas"), ("patch_embed", "gpu_cublas"), ("layernorm", "gpu_v1"),
    ("gelu", "gpu_v1"), ("softmax", "gpu_v1"), ("attention", "gpu_v1"), ("softmax_cross_entropy", "gpu_v1"),
    ("adamw_update", "gpu_v1"), ("conv2d", "gpu_v1"), ("weight_standardize", "gpu_v1"), ("groupnorm", "gpu_v1"),
    ("max_pool2d", "gpu_v1")]
ON_FAKE_GPU = dict(matmul="gpu_cublas", linear="gpu_cublas", patch_embed="gpu_cublas", layernorm="gpu_v1",
                   gelu="gpu_v1", softmax="gpu_v1", attention="gpu_v1", softmax_cross_entropy="gpu_v1",
                   adamw_update="gpu_v1")


# ---------------------------------------------------------------- a fake GPU
class FakeDeviceArray(np.ndarray):
    copies: list = []  # one call site ("file:function") per copy to the host

    @property
    def __array_namespace__(self):  # CuPy's ndarray has none (NumPy's does)
        raise AttributeError("__array_namespace__")

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _refuse_host(inputs)
        if out is not None:
            kwargs["out"] = tuple(_raw(o) for o in out)
        result = getattr(ufunc, method)(*(_raw(x) for x in inputs), **kwargs)
        return (out[0] if len(out) == 1 else out) if out is not None else _wrap(result)

    def __array_function__(self, func, types_, args, kwargs):
        _refuse_host(args)
        return _wrap(func(*_raw_tree(args), **_raw_tree(kwargs)))

    def get(self):
        _count()
        return np.array(_raw(self))

    def item(self):
        _count()
        return _raw(self).item()

    def tolist(self):
        _count()
        return _raw(self).tolist()

    def __float__(self):
        _count()
        return float(_raw(self))

    def __int__(self):
        _count()
        return int(_raw(self))

    def __bool__(self):
        _count()
        return bool(_raw(self))

    def __index__(self):
        _count()
        return _raw(self).__index__()


FakeDeviceArray.__module__ = "cupy._fake"


def _count():
    """Record the innermost minivit (or kernels) function outside minivit/device.py that asked."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        path = frame.filename.replace("\\", "/")
        if ("/minivit/" in path or "/kernels/" in path) and not path.endswith("minivit/device.py"):
            FakeDeviceArray.copies.append(f"{path.rsplit('/', 1)[-1]}:{frame.name}")
            return
    FakeDeviceArray.copies.append("elsewhere")


def _raw(x):
    return x.view(np.ndarray) if isinstance(x, FakeDeviceArray) else x


def _raw_tree(x):
    if isinstance(x, (list, tuple)):
        return type(x)(_raw_tree(i) for i in x)
    if isinstance(x, dict):
        return {k: _raw_tree(v) for k, v in x.items()}
    return _raw(x)


def _wrap(r):
    if isinstance(r, FakeDeviceArray):
        return r
    if isinstance(r, np.ndarray):
        return r.view(FakeDeviceArray)
    if isinstance(r, np.generic):
        return np.asarray(r).view(FakeDeviceArray)
    if isinstance(r, (list, tuple)):
        return type(r)(_wrap(i) for i in r)
    return r


def _refuse_host(args):
    for x in args:
        if isinstance(x, (list, tuple)):
            _refuse_host(x)
        elif isinstance(x, np.ndarray) and not isinstance(x, FakeDeviceArray):
            raise TypeError("Unsupported type <class 'numpy.ndarray'> (a host array mixed with device arrays)")


class FakeCupy(types.ModuleType):
    """NumPy's namespace whose functions return device arrays; asarray/array copy host arrays."""

    ndarray = FakeDeviceArray

    def __init__(self):
        super().__init__("cupy")
        self.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1, getDevice=lambda: 0))

    def __getattr__(self, name):
        attr = getattr(np, name)
        if isinstance(attr, type) or not callable(attr):
            return attr
        return lambda *args, **kwargs: _wrap(attr(*_raw_tree(args), **_raw_tree(kwargs)))

    @staticmethod
    def asarray(a, dtype=None):
        if isinstance(a, FakeDeviceArray):
            return a if dtype is None or a.dtype == np.dtype(dtype) else a.astype(dtype)
        return np.array(a, dtype=dtype, copy=True).view(FakeDeviceArray)  # a host-to-device copy

    @staticmethod
    def array(a, dtype=None, copy=True):
        return np.array(_raw(a), dtype=dtype, copy=True).view(FakeDeviceArray)


def install(monkeypatch):
    """Fake cupy and cupyx.scipy.special in sys.modules, and kernels.gpu.runtime using them."""
    from scipy.special import erf

    fake = FakeCupy()
    special = types.ModuleType("cupyx.scipy.special")
    special.erf = lambda x: _wrap(erf(_raw(x)))
    scipy_ = types.ModuleType("cupyx.scipy")
    scipy_.special = special
    cupyx = types.ModuleType("cupyx")
    cupyx.scipy = scipy_
    for name, module in (("cupy", fake), ("cupyx", cupyx), ("cupyx.scipy", scipy_), ("cupyx.scipy.special", special)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(runtime, "_cupy", None)
    FakeDeviceArray.copies = []
    return fake


# ---------------------------------------------------------------- the loader's CUDA calls
class FakeStream:
    def __init__(self, name):
        self.name, self.queue, self.done = name, [], 0

    def run(self, upto):
        while self.done < upto:
            self.queue[self.done]()
            self.done += 1


class FakeEvent:
    def __init__(self, stream):
        self.stream, self.upto = stream, len(stream.queue)

    def synchronize(self):
        self.stream.run(self.upto)


class FakeCopies:
    """minivit.device.CudaCopies' interface. eager=False: the compute stream, too, only queues
    its waits, so copies run when the test (or a pinned-buffer refill) synchronises."""

    def __init__(self, empty=None, eager=True):
        self.compute, self.eager, self.log = FakeStream("compute"), eager, []
        self._empty = empty or (lambda shape, dtype: np.full(shape, -7, dtype))

    def pinned_empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def new_stream(self):
        return FakeStream("side")

    def current_stream(self):
        return self.compute

    def empty(self, shape, dtype):
        return self._empty(shape, dtype)

    def copy_async(self, dst, src, stream):
        self.log.append(("copy", stream.name))
        stream.queue.append(lambda: np.copyto(_raw(dst), src))

    def record(self, stream):
        return FakeEvent(stream)

    def wait(self, stream, event):
        self.log.append(("wait", stream.name, event.stream.name))
        if stream is self.compute and self.eager:
            event.synchronize()
        else:
            stream.queue.append(event.synchronize)

    def finish(self):
        self.compute.run(len(self.compute.queue))


@pytest.fixture
def no_cupy(monkeypatch):
    """As if CuPy were not installed (also on a machine that has it)."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(runtime, "_cupy", None)


def _fake_cupy_raising(monkeypatch, error=None, count=1):
    fake = types.ModuleType("cupy")

    def get_count():
        if error:
            raise error
        return count

    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_count))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(runtime, "_cupy", None)


class CUDARuntimeError(RuntimeError):
    pass


# ---------------------------------------------------------------- names and errors
def test_device_names_resolve_to_cpu_or_gpu_and_unknown_names_are_refused():
    assert [device.resolve(n) for n in ("cpu", "cuda", "CUDA", "cuda:0", "gpu")] == ["cpu", "gpu", "gpu", "gpu", "gpu"]
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        device.resolve("tpu")
    with pytest.raises(ValueError, match="one GPU"):
        device.resolve("cuda:1")
    from minivit.train import TrainConfig

    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="metal")


def test_asking_for_cuda_without_cupy_says_so_and_how_to_install_the_gpu_extra(no_cupy):
    with pytest.raises(device.DeviceUnavailable) as info:
        device.require("cuda")
    message = str(info.value)
    assert message.startswith("cuda requested but CuPy is not installed")
    assert "pip install -e '.[gpu]'" in message and "cupy-cuda13x" in message
    assert not device.gpu_available() and device.require("cpu") == "cpu"


@pytest.mark.parametrize("error, count, says", [
    (CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected"), 1, "finds no CUDA GPU"),
    (CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient"), 1,
     "NVIDIA driver is missing or older"),
    (None, 0, "sees no CUDA GPU")])
def test_asking_for_cuda_with_cupy_but_no_usable_gpu_says_which(monkeypatch, error, count, says):
    _fake_cupy_raising(monkeypatch, error, count)
    with pytest.raises(device.DeviceUnavailable, match="^cuda requested but .*" + says):
        device.require("cuda")


@pytest.mark.parametrize("command", [
    ["train", "--dataset", "procedural", "--num-samples", "256", "--epochs", "1"], ["demo"],
    ["eval", "missing.npz"], ["predict", "missing.npz", "a.png"], ["analyze", "missing.npz", "--out", "x"],
    ["fewshot", "missing.npz"]], ids=lambda c: c[0])
def test_every_command_asked_for_cuda_without_cupy_prints_one_line_and_exits_2(command, no_cupy, tmp_path, capsys,
                                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--device", "cuda"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cuda requested but CuPy is not installed"), captured.err
    assert "Traceback" not in captured.err and not (tmp_path / "runs").exists()


def test_kernels_bench_on_cuda_without_cupy_exits_2_with_one_line(no_cupy, capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(["gelu", "--device", "cuda"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().startswith("error: cuda requested but CuPy is not installed")


def test_module_to_cpu_moves_nothing_and_to_cuda_without_a_gpu_moves_nothing_either(no_cupy):
    model = minivit.create_model("vit_testing", pos_embed="sincos")
    before = [p.data for p in model.parameters()] + [model.posemb.fixed]
    assert model.to("cpu") is model
    assert all(a is b for a, b in zip(before, [p.data for p in model.parameters()] + [model.posemb.fixed]))
    with pytest.raises(device.DeviceUnavailable):
        model.to("cuda")
    assert all(a is b for a, b in zip(before, [p.data for p in model.parameters()] + [model.posemb.fixed]))
    t = minivit.Tensor(np.ones(3, np.float32))
    assert t.to("cpu") is t


# ---------------------------------------------------------------- GPU versions that are array code
@pytest.mark.parametrize("op, name", XP_VERSIONS, ids=lambda v: v if isinstance(v, str) else None)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_array_versions_run_with_numpy_and_match_the_float64_reference(op, name, dtype):
    impl = kernels.find(op, name)
    assert impl.device == "gpu"
    spec = bench.SPECS[op]
    small = {"matmul": dict(L=3, M=5, Din=7, Dout=4), "linear": dict(B=2, N=5, Din=6, Dout=7),
             "patch_embed": dict(B=2, C=3, H=8, W=8, P=4, D=5), "attention": dict(B=2, Hh=2, N=9, hd=4),
             "softmax": dict(B=2, Hh=2, N=7), "adamw_update": dict(n=50), "softmax_cross_entropy": dict(B=6, K=5,
             smoothing=0.1), "conv2d": dict(B=2, C=3, H=7, O=4, k=3, s=2, p=1), "groupnorm": dict(B=2, C=4, H=5, G=2),
             "max_pool2d": dict(B=2, C=2, H=7, p=1), "weight_standardize": dict(O=4, I=3, k=3)}
    small.update(layernorm=dict(B=2, N=3, D=8), gelu=dict(B=2, N=3, D=8))
    dims = {**spec.presets[spec.default[0]], **small[op]}  # the preset's other keys (e.g. relu) kept
    result = bench.check(op, impl, spec.make(dims, np.dtype(dtype), np.random.default_rng(1)))
    assert result.ok, result.lines


@pytest.mark.parametrize("a_shape, b_shape", [((5,), (5,)), ((5,), (2, 5, 3)), ((2, 3, 4, 5), (5,)),
                                              ((2, 1, 4, 5), (3, 5, 6)), ((4, 5), (2, 3, 5, 6))])
def test_cublas_matmul_follows_numpys_rules_for_1d_and_broadcast_operands(a_shape, b_shape):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    impl, ref = kernels.find("matmul", "gpu_cublas"), kernels.find("matmul", "reference")
    out, cache = impl.forward(a, b)
    np.testing.assert_allclose(out, np.matmul(a, b), rtol=1e-12)
    g = rng.standard_normal(out.shape)
    for got, want in zip(impl.backward(g, cache), ref.backward(g, ref.forward(a, b)[1])):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, batch", [((3, 4, 5), (3,)), ((4, 5), (2, 3)), ((1, 4, 5), (6,)),
                                          ((2, 1, 4, 5), (2, 3)), ((2, 3, 4, 5), (2, 3))])
@pytest.mark.parametrize("transposed", [False, True])
def test_matmul_kernel_batch_strides_address_every_matrix_as_numpy_broadcasts_it(shape, batch, transposed):
    """The CUDA matmuls read operand l's element (m, k) at l*sab + m*sam + k*sak: replay that
    addressing here over _batch_stride's result and compare with NumPy's broadcast."""
    x = np.random.default_rng(0).standard_normal(shape)
    if transposed:
        x = np.swapaxes(np.ascontiguousarray(np.swapaxes(x, -1, -2)), -1, -2)  # column-major matrices
    arr, sb = gpu_dense._batch_stride(x, batch)
    L, (M, K) = int(np.prod(batch)), x.shape[-2:]
    item = arr.itemsize
    view = np.lib.stride_tricks.as_strided(arr, (L, M, K), (sb * item, arr.strides[-2], arr.strides[-1]))
    np.testing.assert_array_equal(view, np.broadcast_to(x, tuple(batch) + (M, K)).reshape(L, M, K))


def test_the_multi_tensor_chunk_table_covers_every_element_of_every_array_once():
    sizes = [192, 0, 65536, 65537, 3, 200000]
    arrays = [types.SimpleNamespace(data=types.SimpleNamespace(ptr=1000 + i)) for i in range(len(sizes))]
    table, chunks = gpu_optim.chunk_table([arrays, arrays], sizes, chunk=65536)
    n = len(sizes)
    assert list(table[:2 * n]) == [1000 + i for i in range(n)] * 2 and list(table[2 * n:3 * n]) == sizes
    tensor, start = table[3 * n:3 * n + chunks], table[3 * n + chunks:]
    seen = [np.zeros(s, int) for s in sizes]
    for t, s in zip(tensor, start):  # what block c of adamw_multi_v3 / sumsq_multi / scale_multi visits
        seen[t][s:min(s + 65536, sizes[t])] += 1
    assert all((v == 1).all() for v in seen)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_the_device_dropout_hash_keeps_a_fraction_1_minus_p_scaled_and_depends_on_the_seed(p):
    a = gpu_dropout.keep_mask_numpy((400, 500), p, np.float32, seed=123)
    assert set(np.unique(a)) == {0.0, np.float32(1 / (1 - p))} and a.dtype == np.float32
    assert abs((a > 0).mean() - (1 - p)) < 0.005
    np.testing.assert_array_equal(a, gpu_dropout.keep_mask_numpy((400, 500), p, np.float32, seed=123))
    assert (a != gpu_dropout.keep_mask_numpy((400, 500), p, np.float32, seed=124)).mean() > 0.1


# ---------------------------------------------------------------- the loader's hand-off
def _procedural(n=200):
    return load_dataset("procedural", split="train", num_samples=n, seed=0)


@pytest.mark.parametrize("prefetch", [0, 1, 2])
def test_the_loader_hands_every_batch_to_the_device_through_pinned_buffers_on_a_side_stream(prefetch):
    ds = _procedural()
    host = DataLoader(ds, 32, seed=3, drop_last=False, prefetch=prefetch)
    copies = FakeCopies(eager=False)  # copies run only when something waits for them
    loader = DataLoader(ds, 32, seed=3, drop_last=False, prefetch=prefetch, copies=copies)
    got = list(loader.epoch(1))
    copies.finish()  # the compute stream runs: every batch's copy is waited for
    want = list(host.epoch(1))
    assert len(got) == len(want) == 7
    for (x, y), (hx, hy) in zip(got, want):
        np.testing.assert_array_equal(x, hx)
        np.testing.assert_array_equal(y, hy)
    log = copies.log
    copy_at = [i for i, e in enumerate(log) if e[0] == "copy"]
    assert len(copy_at) == 2 * 7  # x and y of each batch
    for i in copy_at[::2]:  # before writing, the side stream waited for the compute stream's work
        assert log[i - 1] == ("wait", "side", "compute")
    assert log.count(("wait", "compute", "side")) == 7  # the compute stream waits for each copy


def test_the_fake_streams_catch_a_pinned_buffer_refilled_before_its_copy_ran(monkeypatch):
    """Proof that the test above can fail: without the wait for the last copy, batches go wrong."""
    from minivit.data import loader as loader_module

    def sloppy_fill(self, batch):
        self.copied = [None] * self.size  # forget the copies: refill at once
        return fill(self, batch)

    fill = loader_module.PinnedRing.fill
    monkeypatch.setattr(loader_module.PinnedRing, "fill", sloppy_fill)
    ds = _procedural()
    copies = FakeCopies(eager=False)
    got = [x for x, _ in DataLoader(ds, 32, seed=3, prefetch=0, copies=copies).epoch(0)]
    copies.finish()
    want = [x for x, _ in DataLoader(ds, 32, seed=3, prefetch=0).epoch(0)]
    assert any(not np.array_equal(g, w) for g, w in zip(got, want))


def test_leaving_a_device_epoch_early_stops_the_prefetch_thread():
    import threading

    loader = DataLoader(_procedural(), 16, seed=0, prefetch=2, copies=FakeCopies())
    for i, _ in enumerate(loader.epoch(0)):
        if i == 2:
            break
    assert not any(t.name == "minivit-prefetch" and t.is_alive() for t in threading.enumerate())


# ---------------------------------------------------------------- a whole run on a fake GPU
@pytest.fixture
def fake_cuda(monkeypatch, restore_kernel_choices):
    fake = install(monkeypatch)
    monkeypatch.setattr(device, "CudaCopies", lambda: FakeCopies(empty=lambda s, d: fake.empty(s, d)))
    with kernels.use(**ON_FAKE_GPU):
        yield fake


def _on_device(a):
    return device.device_of(a) == "gpu"


def test_a_run_on_the_gpu_keeps_everything_there_and_copies_one_array_per_step_to_the_host(fake_cuda, tmp_path):
    from minivit.train import TrainConfig, Trainer
    from minivit.train.checkpoint import load_checkpoint

    cfg = TrainConfig(model="vit_testing", dataset="procedural", num_samples=256, val_size=64, epochs=1,
                      batch_size=32, out_dir=str(tmp_path / "run"), device="cuda", progress=False, grad_clip=None,
                      kernels=",".join(f"{k}={v}" for k, v in ON_FAKE_GPU.items()))
    trainer = Trainer(cfg)
    assert trainer.device == "gpu" and all(_on_device(p.data) for p in trainer.model.parameters())
    x, y = next(iter(trainer.train_loader.epoch(0)))
    assert _on_device(x) and _on_device(y)
    FakeDeviceArray.copies.clear()
    losses = [trainer.train_step(*batch)[0] for batch, _ in zip(trainer.train_loader.epoch(0), range(3))]
    sites = FakeDeviceArray.copies
    # one per step, loss and number correct together; the labels were checked on the host (check_labels)
    assert sites == ["trainer.py:train_step"] * 3, sites
    assert all(np.isfinite(losses))
    state = trainer.optimizer.state[0]
    assert _on_device(state["exp_avg"]) and _on_device(state["exp_avg_sq"])
    assert all(_on_device(p.data) for p in trainer.model.parameters())
    final = trainer.fit()
    assert 0.0 <= final["test_acc"] <= 1.0
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    assert all(type(a) is np.ndarray for a in ckpt["model"].values())
    assert all(type(a) is np.ndarray for s in ckpt["optim"].values() for a in s.values())
    assert ckpt["meta"]["device"] == "gpu"


def test_a_checkpoint_saved_on_the_gpu_resumes_on_the_cpu_and_back(fake_cuda, tmp_path):
    from minivit.train import TrainConfig, Trainer

    common = dict(model="vit_testing", dataset="procedural", num_samples=128, val_size=0, epochs=2, batch_size=32,
                  out_dir=str(tmp_path / "run"), progress=False, eval_test="never", grad_clip=None,
                  kernels=",".join(f"{k}={v}" for k, v in ON_FAKE_GPU.items()))
    Trainer(TrainConfig(**common, device="cuda", max_steps=2)).fit()
    on_cpu = Trainer(TrainConfig(**common, device="cpu"), resume=True)
    assert on_cpu.step == 2 and not any(_on_device(p.data) for p in on_cpu.model.parameters())
    assert not any(_on_device(a) for s in on_cpu.optimizer.state.values() for a in s.values() if np.ndim(a))
    on_cpu.cfg.max_steps = 3
    on_cpu.fit()
    back = Trainer(TrainConfig(**common, device="cuda"), resume=True)
    assert back.step == 3 and all(_on_device(p.data) for p in back.model.parameters())
    assert all(_on_device(a) for s in back.optimizer.state.values() for a in s.values() if np.ndim(a))


def test_an_optimizer_made_before_the_model_moved_takes_its_state_along(fake_cuda):
    model = minivit.create_model("vit_testing")
    opt = minivit.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32), np.array([1, 2])
    minivit.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert not _on_device(opt.state[0]["exp_avg"])
    model.to("cuda")
    opt.zero_grad()
    minivit.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert _on_device(opt.state[0]["exp_avg"]) and _on_device(model.head.weight.data)


def test_images_go_to_the_weights_device_but_a_parameter_never_moves_by_itself(fake_cuda):
    model = minivit.create_model("vit_testing").to("cuda")
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with minivit.no_grad():
        logits = model(x)  # NumPy images meet GPU weights: copied to the GPU by the first op
    assert _on_device(logits.data)
    model.head.weight.data = device.to_host(model.head.weight.data)
    with pytest.raises(RuntimeError, match="model.to"):
        model(x)
    cpu_model = minivit.create_model("vit_testing")
    with pytest.raises(RuntimeError, match="needs a gradient is on the CPU"):
        cpu_model(minivit.Tensor(device.to_device(x, "cuda")))


def test_tensor_to_moves_the_value_and_its_gradient_comes_back(fake_cuda):
    t = minivit.Tensor(np.arange(3.0, dtype=np.float32), requires_grad=True)
    on_gpu = t.to("cuda")
    assert _on_device(on_gpu.data) and not _on_device(t.data)
    (on_gpu * on_gpu).sum().backward()
    assert not _on_device(t.grad)
    np.testing.assert_allclose(t.grad, 2 * np.arange(3.0))
