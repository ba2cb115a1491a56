"""On an NVIDIA GPU (skipped with the reason elsewhere): every GPU kernel version of every op
matches the float64 NumPy reference, at the bench's presets and at awkward sizes; the model on the
GPU computes what it computes on the CPU; a training step copies one array (loss and number
correct) to the host (labels are checked on the host before the loader copies them), counted both by wrapping CuPy's copies
and, where CUPTI works, by the CUDA profiler; dropout masks, gradient clipping and the
multi-tensor AdamW on the device agree with their host versions; the data loader's hand-off,
checkpoints across devices, exact resume, and every command with --device cuda work.

scripts/gpu_check.sh runs this file first on the GPU machine.
"""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import kernels
from kernels import bench
from kernels.gpu import runtime

def _why_no_gpu():
    try:
        runtime.cupy()
    except runtime.DeviceUnavailable as e:
        return str(e)
    return None


NO_GPU = _why_no_gpu()
pytestmark = pytest.mark.skipif(NO_GPU is not None, reason=f"needs a GPU: {NO_GPU}")

if NO_GPU is None:
    import cupy as cp

    from kernels.gpu import timing

GPU_IMPLS = [(op, i.name) for op in kernels.OPS for i in kernels.available(op, device="gpu")]
SMALL = {  # small instances of every op (the bench checks every version at the full presets too)
    "matmul": dict(L=3, M=40, Din=24, Dout=33), "linear": dict(B=2, N=9, Din=24, Dout=40),
    "patch_embed": dict(B=2, C=3, H=32, W=32, P=4, D=48), "layernorm": dict(B=2, N=9, D=48),
    "gelu": dict(B=2, N=9, D=48), "softmax": dict(B=2, Hh=3, N=17), "attention": dict(B=2, Hh=3, N=70, hd=64),
    "softmax_cross_entropy": dict(B=16, K=10, smoothing=0.1), "adamw_update": dict(n=1000),
    "conv2d": dict(B=2, C=8, H=9, O=6, k=3, s=2, p=1), "weight_standardize": dict(O=8, I=4, k=3),
    "groupnorm": dict(B=2, C=8, H=5, G=4), "max_pool2d": dict(B=2, C=3, H=9, p=1)}
AWKWARD = {  # sizes that are no multiple of any tile, and the edges (1 row, 1 key)
    "matmul": [dict(L=3, M=129, Din=17, Dout=65), dict(L=1, M=1, Din=300, Dout=1)],
    "linear": [dict(B=3, N=7, Din=13, Dout=130)],
    "layernorm": [dict(B=2, N=3, D=1), dict(B=5, N=7, D=1025)],
    "gelu": [dict(B=1, N=1, D=3), dict(B=3, N=1000, D=77)],
    "softmax": [dict(B=2, Hh=1, N=1), dict(B=2, Hh=3, N=1000)],
    "attention": [dict(B=2, Hh=3, N=1, hd=64), dict(B=2, Hh=2, N=63, hd=16), dict(B=1, Hh=2, N=130, hd=24),
                  dict(B=2, Hh=1, N=65, hd=80), dict(B=1, Hh=2, N=200, hd=128)],
    "softmax_cross_entropy": [dict(B=3, K=1, smoothing=0.0), dict(B=33, K=1000, smoothing=0.2)],
    "adamw_update": [dict(n=1), dict(n=3 * 65536 + 5)],
}


def _check(op, name, dims, dtype):
    inputs = bench.SPECS[op].make(dims, np.dtype(dtype), np.random.default_rng(0))
    result = bench.check(op, timing.on_device(kernels.find(op, name)), inputs)
    assert result.ok, "\n".join(result.lines)


@pytest.mark.parametrize("op, name", GPU_IMPLS, ids=[f"{o}-{n}" for o, n in GPU_IMPLS])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_gpu_version_matches_the_float64_reference(op, name, dtype):
    spec = bench.SPECS[op]
    _check(op, name, {**spec.presets[spec.default[0]], **SMALL[op]}, dtype)


@pytest.mark.parametrize("op, name", [(o, n) for o, n in GPU_IMPLS if o in AWKWARD],
                         ids=[f"{o}-{n}" for o, n in GPU_IMPLS if o in AWKWARD])
def test_every_gpu_version_matches_the_reference_at_awkward_sizes(op, name):
    for dims in AWKWARD[op]:
        dims = {**bench.SPECS[op].presets[bench.SPECS[op].default[0]], **dims}
        _check(op, name, dims, "float32")


def test_flash_attention_refuses_a_head_wider_than_its_templates_naming_the_alternatives():
    q = cp.zeros((1, 1, 8, 136), cp.float32)
    with pytest.raises(ValueError, match="gpu_v2"):
        kernels.find("attention", "gpu_v3").forward(q, q, q, scale=0.1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_flash_attention_with_an_l4s_tiles_matches_the_reference(dtype, monkeypatch):
    """This card run as if it allowed a block only an L4's 99 KiB: v3 then takes the L4's tiles
    (64, 32 and 16 rows: float64 hd 128 backward at 16), which must compute what the reference
    does. One more compile of attention.cu, with the L4's set."""
    from kernels.gpu import attention as gatt

    l4 = min(101376, runtime.max_shared_bytes())
    monkeypatch.setattr(runtime, "max_shared_bytes", lambda: l4)
    for hd in (16, 64, 80, 128):
        assert all(gatt.v3_tile(n, dtype, hd, l4) for n in gatt.V3_KERNELS)
        _check("attention", "gpu_v3", dict(B=2, Hh=2, N=70, hd=hd), dtype)
    assert gatt.v3_tile("flash_bwd_dkdv_v3", "float64", 128, l4) == 16


@pytest.mark.parametrize("name", ["gpu_v1", "gpu_v2", "gpu_v3"])
def test_attention_reads_unbinds_views_in_place_and_matches_the_reference(name):
    """q, k, v as views of one (B, N, 3, Hh, hd) projection and dO as a transpose's view, as the
    model makes them: v2 and v3 read them through their strides (and keep the views, not copies)."""
    from kernels.reference import attention as ref

    rng = np.random.default_rng(0)
    B, N, Hh, hd = 2, 70, 3, 32
    qkv, g = rng.standard_normal((B, N, 3, Hh, hd)), rng.standard_normal((B, N, Hh, hd))
    q, k, v = cp.asarray(qkv, cp.float32).transpose(2, 0, 3, 1, 4)
    gd = cp.asarray(g, cp.float32).transpose(0, 2, 1, 3)
    impl = kernels.find("attention", name)
    out, cache = impl.forward(q, k, v, scale=hd**-0.5)
    grads = impl.backward(gd, cache)
    if name != "gpu_v1":
        assert all(c is x for c, x in zip(cache[:3], (q, k, v)))
    want, rcache = ref.attention_forward(*qkv.transpose(2, 0, 3, 1, 4), hd**-0.5)
    np.testing.assert_allclose(cp.asnumpy(out), want, rtol=1e-4, atol=1e-5)
    for got, exp in zip(grads, ref.attention_backward(g.transpose(0, 2, 1, 3), rcache)):
        np.testing.assert_allclose(cp.asnumpy(got), exp, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("D, dtype", [(192, "float32"), (384, "float64"), (768, "float32"), (1280, "float64")])
def test_layernorm_backward_at_the_block_size_this_card_chooses_matches_the_reference(D, dtype):
    """kernels.gpu.normact.layernorm_bwd_launch's choices here (up to 32-warp blocks, opted in to
    more than 48 KiB of shared memory)."""
    _check("layernorm", "gpu_v2", dict(B=4, N=65, D=D), dtype)


# ---------------------------------------------------------------- the model on the GPU
@pytest.mark.parametrize("kwargs", [{}, {"pos_embed": "sincos"}, {"pos_embed": "relative_bias_2d"},
                                    {"pos_embed": "relative_1d"},
                                    {"global_pool": "avg", "class_token": False}], ids=str)
def test_the_model_on_the_gpu_computes_the_cpu_logits_and_gradients(kwargs):
    import minivit
    from minivit import functional as F

    minivit.manual_seed(0)
    cpu = minivit.create_model("vit_testing", **kwargs)
    for p in cpu.parameters():  # a non-zero head, so that every parameter gets a gradient
        p.data = p.data + minivit.nn.trunc_normal(p.shape, 0.02)
    gpu = minivit.create_model("vit_testing", **kwargs)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, 4)
    with kernels.use("reference"):  # the CPU side in plain NumPy: no Numba compile on a fresh GPU machine
        F.cross_entropy(cpu(x), y).backward()
        want = cpu(x).numpy()
    xd = minivit.Tensor(cp.asarray(x))  # a CuPy batch enters as a Tensor (see ViT._check_input)
    F.cross_entropy(gpu(xd), cp.asarray(y)).backward()
    np.testing.assert_allclose(gpu(xd).numpy(), want, rtol=2e-4, atol=2e-5)
    for (name, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        got, want = cp.asnumpy(q.grad), p.grad  # float32 sums in other orders: within 1e-3 of the largest
        assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max() + 1e-6, name


def test_module_to_and_back_keeps_every_value_and_the_parameters_themselves():
    import minivit

    model = minivit.create_model("vit_testing", pos_embed="sincos")
    params, before = model.parameters(), {k: v.copy() for k, v in model.state_dict().items()}
    model.to("cuda")
    assert all(type(p.data).__module__.startswith("cupy") for p in model.parameters())
    assert type(model.posemb.fixed).__module__.startswith("cupy")
    model.to("cpu")
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


# ---------------------------------------------------------------- copies to the host
class _CopyCounter:
    """Counts device-to-host copies by call site, by wrapping every read path of an array class
    (default: cupy.ndarray) that copies to the host: get, tolist, item, the scalar conversions,
    __array__, and the text and pickle forms. Only the methods the class really has are wrapped
    (CuPy 13.6-14.2 define no ndarray.__index__, for one), so the counter works on every CuPy
    and, given a stand-in class, without CuPy (tests/test_gpu_check_script.py tests it so).
    A read path that calls another (tolist calling get, say) counts once, at its outermost call."""

    METHODS = ("get", "item", "tolist", "__float__", "__int__", "__index__", "__bool__", "__complex__",
               "__array__", "__repr__", "__str__", "__format__", "__reduce__")

    def __init__(self, monkeypatch, cls=None):
        import traceback

        if cls is None:
            import cupy

            cls = cupy.ndarray
        self.sites, self.depth = [], threading.local()
        # only what the class (or a base other than object) defines: object's own __repr__,
        # __format__, __reduce__ and the like read no device memory
        self.wrapped = tuple(name for name in self.METHODS
                             if getattr(cls, name, None) is not None
                             and getattr(cls, name) is not getattr(object, name, None))
        for name in self.wrapped:
            original = getattr(cls, name)

            def wrapped(a, *args, _original=original, **kwargs):
                depth = getattr(self.depth, "n", 0)
                if depth == 0:
                    frames = [f for f in traceback.extract_stack()[:-1] if "/minivit/" in f.filename
                              and not f.filename.endswith("device.py")]
                    self.sites.append(f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].name}" if frames
                                      else "elsewhere")
                self.depth.n = depth + 1
                try:
                    return _original(a, *args, **kwargs)
                finally:
                    self.depth.n = depth

            monkeypatch.setattr(cls, name, wrapped)


def _trainer(tmp_path, **overrides):
    from minivit.train import TrainConfig, Trainer

    values = dict(model="vit_testing", dataset="procedural", num_samples=512, val_size=0, epochs=1, batch_size=64,
                  out_dir=str(tmp_path / "run"), device="cuda", progress=False, grad_clip=1.0, eval_test="never")
    return Trainer(TrainConfig(**{**values, **overrides}))


def test_a_training_step_copies_one_array_to_the_host(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, model_kwargs={"drop_rate": 0.1, "drop_path_rate": 0.1})
    batches = list(zip(trainer.train_loader.epoch(0), range(4)))
    trainer.train_step(*batches[0][0])  # compiles the kernels
    counter = _CopyCounter(monkeypatch)
    for batch, _ in batches[1:]:
        trainer.train_step(*batch)
    steps = len(batches) - 1
    assert counter.sites == ["trainer.py:train_step"] * steps, counter.sites


def test_the_cuda_profiler_sees_no_more_device_to_host_copies_than_counted(tmp_path):
    torch = pytest.importorskip("torch")
    from torch.profiler import ProfilerActivity, profile

    trainer = _trainer(tmp_path)
    batches = list(zip(trainer.train_loader.epoch(0), range(4)))
    trainer.train_step(*batches[0][0])
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for batch, _ in batches[1:]:
                trainer.train_step(*batch)
            torch.cuda.synchronize()
        events = prof.events()
    except Exception as e:  # CUPTI unavailable (e.g. a sandboxed runtime)
        pytest.skip(f"the CUDA profiler does not run here: {e}")
    on_gpu = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    if not on_gpu:
        pytest.skip("the CUDA profiler recorded no GPU activity here (CUPTI not available)")
    d2h = [e for e in on_gpu if "DtoH" in e.name or "Device -> Pageable" in e.name or "Device -> Pinned" in e.name]
    steps = len(batches) - 1
    assert len(d2h) == steps, [e.name for e in d2h]  # the pack (loss and number correct) only


# ---------------------------------------------------------------- device versions of host code
def test_dropout_masks_drawn_on_the_gpu_are_the_numpy_hash_bit_for_bit():
    from kernels.gpu.dropout import keep_mask, keep_mask_numpy

    for dtype in (np.float32, np.float64):
        got = cp.asnumpy(keep_mask((37, 129), 0.3, dtype, seed=2**62 + 11))
        np.testing.assert_array_equal(got, keep_mask_numpy((37, 129), 0.3, dtype, seed=2**62 + 11))


def test_gradient_clipping_on_the_gpu_matches_the_cpu_without_a_copy(monkeypatch):
    import minivit

    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(s).astype(np.float32) for s in ((192,), (3, 65537), (5, 7))]
    for max_norm in (0.5, 1e6):
        cpu = [minivit.nn.Parameter(np.zeros_like(g)) for g in grads]
        gpu = [minivit.nn.Parameter(cp.zeros(g.shape, cp.float32)) for g in grads]
        for p, q, g in zip(cpu, gpu, grads):
            p.grad, q.grad = g.copy(), cp.asarray(g)
        counter = _CopyCounter(monkeypatch)
        norm = minivit.optim.clip_grad_norm_(gpu, max_norm)
        assert counter.sites == [] and type(norm) is cp.ndarray and norm.shape == () and norm.dtype == cp.float64
        monkeypatch.undo()
        np.testing.assert_allclose(float(norm), minivit.optim.clip_grad_norm_(cpu, max_norm), rtol=1e-6)
        for p, q in zip(cpu, gpu):
            np.testing.assert_allclose(cp.asnumpy(q.grad), p.grad, rtol=1e-6)


def test_the_multi_tensor_adamw_updates_many_arrays_as_the_reference_does_one_by_one():
    from kernels.gpu.optim import adamw_foreach
    from kernels.reference.optim import adamw_update

    rng = np.random.default_rng(0)
    shapes = [(192,), (0,), (576, 192), (70000,), (1,)]
    host = [[rng.standard_normal(s) for _ in range(3)] + [np.abs(rng.standard_normal(s))] for s in shapes]
    dev = [[cp.asarray(a.astype(np.float32)) for a in arrays] for arrays in host]
    lrs, wds, steps = [1e-3, 2e-3, 1e-3, 5e-4, 1e-2], [0.05, 0.0, 0.05, 0.1, 0.0], [1, 2, 3, 10, 100]
    adamw_foreach(*[[d[i] for d in dev] for i in range(4)], lr=lrs, beta1=0.9, beta2=0.999, eps=1e-8,
                  weight_decay=wds, step=steps)
    for (p, g, m, v), d, lr, wd, step in zip(host, dev, lrs, wds, steps):
        adamw_update(p, g, m, v, lr, 0.9, 0.999, 1e-8, wd, step)
        for want, got in ((p, d[0]), (m, d[2]), (v, d[3])):
            np.testing.assert_allclose(cp.asnumpy(got), want, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_the_loader_hands_the_gpu_the_batches_the_host_builds(prefetch):
    from minivit.data import DataLoader, load_dataset

    ds = load_dataset("procedural", split="train", num_samples=300, seed=0)
    host = list(DataLoader(ds, 64, seed=1, drop_last=False, prefetch=prefetch).epoch(2))
    dev = list(DataLoader(ds, 64, seed=1, drop_last=False, prefetch=prefetch, device="cuda").epoch(2))
    assert len(dev) == len(host) == 5
    for (x, y), (hx, hy) in zip(dev, host):
        assert type(x).__module__.startswith("cupy") and type(y).__module__.startswith("cupy")
        np.testing.assert_array_equal(cp.asnumpy(x), hx)
        np.testing.assert_array_equal(cp.asnumpy(y), hy)


# ---------------------------------------------------------------- runs, checkpoints, commands
def test_a_resumed_gpu_run_continues_the_uninterrupted_loss_trajectory(tmp_path):
    whole = _trainer(tmp_path / "a", epochs=2, model_kwargs={"drop_rate": 0.1})
    whole.fit()
    half = _trainer(tmp_path / "b", epochs=2, max_steps=10, model_kwargs={"drop_rate": 0.1})
    half.fit()
    from minivit.train import TrainConfig, Trainer

    resumed = Trainer(TrainConfig(**{**half.cfg.__dict__, "max_steps": None}), resume=True)
    resumed.fit()
    read = lambda t: [json.loads(line) for line in (t.out / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert [r.get("train_loss") for r in read(whole)] == [r.get("train_loss") for r in read(resumed)]


def test_every_command_runs_with_device_cuda(tmp_path, capsys):
    from PIL import Image

    from minivit.cli import main
    from minivit.train.checkpoint import load_checkpoint

    run = tmp_path / "run"
    assert main(["train", "--model", "vit_testing", "--dataset", "procedural", "--num-samples", "512",
                 "--val-size", "0", "--epochs", "1", "--batch-size", "64", "--device", "cuda", "--no-progress",
                 "--out", str(run)]) == 0
    ckpt = load_checkpoint(run / "best.npz")
    assert ckpt["meta"]["device"] == "gpu" and all(type(a) is np.ndarray for a in ckpt["model"].values())
    best = str(run / "best.npz")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "black.png")
    for command in (["eval", best], ["predict", best, str(tmp_path / "black.png")],
                    ["analyze", best, "--out", str(tmp_path / "analysis"), "--images", "16"],
                    ["fewshot", best, "--shots", "1", "--seeds", "1", "--test-images", "100"]):
        assert main([*command, "--device", "cuda"]) == 0, (command, capsys.readouterr().err)
    assert (tmp_path / "analysis" / "analysis.json").exists()
    assert main(["demo", "--epochs", "1", "--num-samples", "256", "--out", str(tmp_path / "demo"),
                 "--no-progress", "--device", "cuda"]) == 0
