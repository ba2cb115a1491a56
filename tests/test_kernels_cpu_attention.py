"""Claims about the CPU attention kernels (kernels/cpu/attention.py and whatever else registers
CPU attention later): each equals the NumPy reference run in float64, in float32 and float64,
on hypothesis-drawn shapes (odd N, N not a multiple of any tile, one token, one head, hd = 1)
and scales, also where the logits reach 1e3 and a naive exp overflows; the flash version
(cpu_v3) keeps memory linear in N.

The implementations are read from the registry at collection time, so a version added later is
tested without touching this file. Inputs are cast to the dtype first; the float64 reference
gets those values cast up exactly. Both run through kernels/bench.py's harness (bench.run_pair,
as `python -m kernels.bench` does), which pairs up out, dq, dk, dv with the reference's; this
file judges each pair by its own, logit-dependent tolerance. For each output,
    max|got - want| <= REL[dtype] * (1 + max|S|) * max(max|want|, floor)
where S = scale * q @ k.T are the logits (float32 knows them only to 6e-8 * |S|, and softmax
passes that on) and floor is the size of the terms the output sums (max|v| for out, max|dO|
for dv, |scale| * max|dO| * max|v| * max|k or q| * sqrt(hd) for dq, dk), so that an output
that cancels to zero is judged against its terms:
    float32: REL 2e-6     float64: REL 1e-12   (so 1e-10 where |S| reaches 100)
"""
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernels import bench

pytest.importorskip("numba", reason="the CPU attention kernels are Numba")

REL = {"float32": 2e-6, "float64": 1e-12}
DTYPES = ("float32", "float64")
SETTINGS = settings(max_examples=25, deadline=None)
IMPLS = {i.name: i for i in kernels.available("attention", device="cpu")}
NUMBA_VERSIONS = ("cpu_v1", "cpu_v2", "cpu_v3", "cpu_v4", "cpu_v5", "cpu_blas")


def _warm_up():
    """Compile every version for both dtypes once (Numba caches on disk after the first run)."""
    rng = np.random.default_rng(0)
    for dtype in DTYPES:
        q, k, v, g = (rng.standard_normal((1, 1, 3, 2)).astype(dtype) for _ in range(4))
        for impl in IMPLS.values():
            impl.backward(g, impl.forward(q, k, v, 0.5)[1])


_warm_up()


def qkv(seed, B, Hh, N, hd, magnitude=1.0):
    rng = np.random.default_rng(seed)
    return [magnitude * rng.standard_normal((B, Hh, N, hd)) for _ in range(4)]  # q, k, v, dO


def assert_close(got, want, floor, tol, what):
    assert np.isfinite(got).all(), f"{what}: not finite at {np.argwhere(~np.isfinite(got))[:3].tolist()}"
    size = max(float(np.abs(want).max()), floor)
    err = np.abs(got.astype(np.float64) - want)
    if err.max() > tol * size:
        i = tuple(np.unravel_index(err.argmax(), err.shape))
        raise AssertionError(f"{what}: max abs err {err.max():.3g} > {tol:.2g} * {size:.3g}, "
                             f"at {i}: got {got[i]!r}, want {want[i]!r}")


def check_against_reference(name, dtype, q, k, v, dout, scale):
    """Forward and backward of implementation `name` on inputs cast to dtype vs the float64
    reference, run by kernels/bench.py's harness (bench.run_pair); judged by the formula above."""
    mine = bench.Inputs(tuple(np.asarray(a, dtype=dtype) for a in (q, k, v)), {"scale": scale})
    dout = np.asarray(dout, dtype=dtype)
    pairs = bench.run_pair("attention", name, mine, grad=dout)
    q64, k64, v64, d64 = (a.astype(np.float64) for a in (*mine.args, dout))

    logits = np.abs(np.matmul(q64, np.swapaxes(k64, -1, -2)) * scale).max()
    tol = REL[dtype] * (1.0 + logits)
    m = {x: float(np.abs(a).max()) for x, a in zip("qkvd", (q64, k64, v64, d64))}
    terms = abs(scale) * m["d"] * m["v"] * q64.shape[-1] ** 0.5
    floors = (m["v"], terms * m["k"], terms * m["q"], m["d"])
    assert [p[0] for p in pairs] == ["out", "grad[0]", "grad[1]", "grad[2]"]
    for what, (_, got, w), floor in zip(("out", "dq", "dk", "dv"), pairs, floors):
        assert got.dtype == np.dtype(dtype), f"{name} {what}: dtype {got.dtype}, inputs are {dtype}"
        assert got.shape == q.shape, f"{name} {what}: shape {got.shape} != {q.shape}"
        assert_close(got, w, floor, tol, f"{name} {dtype} {what}")
    return pairs[0][1], tuple(p[1] for p in pairs[1:])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(IMPLS))
@SETTINGS
@given(B=st.integers(1, 3), Hh=st.integers(1, 3), N=st.integers(1, 70), hd=st.integers(1, 33),
       scale_factor=st.sampled_from([1.0, 4.0, 16.0]), magnitude=st.sampled_from([0.3, 1.0, 2.0]),
       seed=st.integers(0, 2**32 - 1))
def test_attention_forward_and_backward_match_float64_reference(name, dtype, B, Hh, N, hd, scale_factor,
                                                                magnitude, seed):
    scale = scale_factor / hd**0.5  # the usual 1/sqrt(hd), and sharper
    check_against_reference(name, dtype, *qkv(seed, B, Hh, N, hd, magnitude), scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(IMPLS))
@pytest.mark.parametrize("N", [1, 65, 300])
def test_attention_with_logits_of_1e3_is_finite_and_matches_reference(name, dtype, N):
    """exp(1e3) overflows float32 and float64 alike: only the max shift keeps these finite."""
    q, k, v, dout = qkv(N, 1, 2, N, 16)
    scale = 16**-0.5
    q *= 1e3 / np.abs(np.matmul(q, np.swapaxes(k, -1, -2)) * scale).max()  # max |S| = 1e3
    check_against_reference(name, dtype, q, k, v, dout, scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(IMPLS))
@pytest.mark.parametrize("N", [300])
@pytest.mark.parametrize("order", ["random", "max_in_last_keys"])
def test_attention_over_several_query_and_key_tiles_matches_reference(name, dtype, N, order):
    """Long enough for several of v3's tiles (about 64 queries x 128 keys); with the row max in
    the last keys the online softmax must rescale what earlier key tiles summed."""
    q, k, v, dout = qkv(N, 1, 1, N, 17)
    if order == "max_in_last_keys":
        q = np.abs(q)
        k = np.abs(k) * np.linspace(0.1, 3.0, N)[:, None]  # logits grow along the keys
    check_against_reference(name, dtype, q, k, v, dout, 17**-0.5)


@pytest.mark.parametrize("name", list(IMPLS))
def test_attention_accepts_strided_views_and_leaves_inputs_unchanged(name):
    """q, k, v as the model makes them: views into one (B, N, 3, Hh, hd) qkv array."""
    B, N, Hh, hd = 2, 33, 3, 8
    rng = np.random.default_rng(1)
    qkv_ = rng.standard_normal((B, N, 3, Hh, hd)).astype(np.float32)
    q, k, v = np.transpose(qkv_, (2, 0, 3, 1, 4))  # each (B, Hh, N, hd), not contiguous
    dout = np.swapaxes(rng.standard_normal((B, Hh, hd, N)).astype(np.float32), -1, -2)
    before = qkv_.copy(), dout.copy()
    out, grads = check_against_reference(name, "float32", q, k, v, dout, hd**-0.5)
    np.testing.assert_array_equal(qkv_, before[0])
    np.testing.assert_array_equal(dout, before[1])


def test_v3_cache_holds_no_n_by_n_array_and_grows_linearly_in_n():
    """Flash attention keeps out and the row log-sum-exp, never the (N, N) probabilities: the
    cache's bytes and the traced peak of forward + backward double when N doubles (the
    reference's quadruple). Numba's own scratch is not traced; v3 sizes it by tiles, not N."""
    B, Hh, hd = 1, 2, 16
    cache_bytes, peak = {}, {}
    for name in ("cpu_v3", "reference"):
        for N in (256, 512, 1024):
            q, k, v, dout = (a.astype(np.float32) for a in qkv(N, B, Hh, N, hd))
            tracemalloc.start()
            out, cache = IMPLS[name].forward(q, k, v, hd**-0.5)
            IMPLS[name].backward(dout, cache)
            peak[name, N] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            arrays = [a for a in cache if isinstance(a, np.ndarray)]
            cache_bytes[name, N] = sum(a.nbytes for a in arrays)
            if name == "cpu_v3":
                assert all(a.size <= B * Hh * N * hd for a in arrays), [a.shape for a in arrays]
    for N in (512, 1024):
        assert cache_bytes["cpu_v3", N] == 2 * cache_bytes["cpu_v3", N // 2]
        assert peak["cpu_v3", N] <= 2.2 * peak["cpu_v3", N // 2], peak
        assert peak["reference", N] >= 3.5 * peak["reference", N // 2], peak  # the contrast: N^2


def test_every_numba_version_is_registered_and_the_cpu_default_is_one_of_them():
    assert set(NUMBA_VERSIONS) <= set(IMPLS), sorted(IMPLS)
    assert all(IMPLS[n].description for n in NUMBA_VERSIONS)
    assert kernels.get("attention", device="cpu").name in NUMBA_VERSIONS


@pytest.mark.parametrize("device, strided", [("cpu", False), ("cpu", True), ("gpu", False)])
def test_unbinds_views_reach_strided_kernels_as_views_and_the_others_as_dense_copies(device, strided, monkeypatch):
    """autograd copies q, k, v to dense arrays for the CPU kernels registered without strided=True
    (Numba compiles their loops for dense arrays); a GPU kernel of attention, and a CPU kernel
    registered with strided=True (cpu_v5), read the strided views themselves (a stand-in
    implementation sees what the real ones would)."""
    from minivit import functional as F
    from minivit.autograd import Tensor

    seen, real = {}, kernels.get("attention")

    class Spy:
        def __init__(self):
            self.device, self.strided = device, strided

        def forward(self, q, k, v, **params):
            seen["qkv"] = (q, k, v)
            return real.forward(*(np.ascontiguousarray(a) for a in (q, k, v)), **params)

        def backward(self, grad, cache):
            return real.backward(np.ascontiguousarray(grad), cache)

    monkeypatch.setattr(kernels, "get", lambda op, device="cpu": Spy() if op == "attention" else real)
    qkv = np.random.default_rng(0).standard_normal((2, 5, 3, 2, 4)).astype(np.float32)  # (B, N, 3, Hh, hd)
    q, k, v = (Tensor(a, requires_grad=True) for a in qkv.transpose(2, 0, 3, 1, 4))  # (B, Hh, N, hd) views
    F.scaled_dot_product_attention(q, k, v).sum().backward()
    views = device == "gpu" or strided
    assert all(np.shares_memory(a, qkv) == views for a in seen["qkv"])
    assert all(a.flags.c_contiguous != views for a in seen["qkv"])


def test_v5_writes_out_with_heads_side_by_side_and_the_gradients_as_one_qkv_array():
    """cpu_v5's out is a (B, Hh, N, hd) view whose transpose to (B, N, Hh, hd) is C-contiguous, and
    its dq, dk, dv are the three slices of one (B, N, 3, Hh, hd) array: the layouts that let the
    model's transpose, reshape and unbind pass through without copies."""
    B, N, Hh, hd = 2, 9, 3, 4
    rng = np.random.default_rng(2)
    qkv_ = rng.standard_normal((B, N, 3, Hh, hd)).astype(np.float32)
    q, k, v = np.transpose(qkv_, (2, 0, 3, 1, 4))
    out, cache = IMPLS["cpu_v5"].forward(q, k, v, hd**-0.5)
    assert out.shape == (B, Hh, N, hd) and out.transpose(0, 2, 1, 3).flags.c_contiguous
    assert cache[0] == "v5" and cache[1][0] is not qkv_ and np.shares_memory(cache[1][0], qkv_)  # read in place
    dense = [np.ascontiguousarray(a) for a in (q, k, v)]  # not slices of one array: copied into a new one
    assert not np.shares_memory(IMPLS["cpu_v5"].forward(*dense, hd**-0.5)[1][1][0], dense[0])
    dq, dk, dv = IMPLS["cpu_v5"].backward(np.ones_like(out), cache)
    base = dq.base
    assert base is not None and base.shape == (B, N, 3, Hh, hd) and dk.base is base and dv.base is base
    for i, g in enumerate((dq, dk, dv)):
        assert np.shares_memory(g, base[:, :, i]) and np.array_equal(g, base[:, :, i].transpose(0, 2, 1, 3))


def test_model_attention_through_v5_gives_qkv_gradient_without_stacking_copies():
    """The model's path (projection -> reshape -> transpose -> unbind -> attention -> transpose ->
    reshape) run with cpu_v5 equals the same with cpu_v4, and unbind's backward hands back the
    kernel's own gradient array (a view, no copy); with gradients that are not slices of one
    array it still stacks them."""
    from minivit import functional as F
    from minivit.autograd import Tensor, _slices_of_one_array

    B, N, Hh, hd = 3, 10, 2, 8
    D = Hh * hd
    rng = np.random.default_rng(3)
    x0, w = rng.standard_normal((B, N, 3 * D)).astype(np.float32), rng.standard_normal((B, N, D)).astype(np.float32)
    results = {}
    for name in ("cpu_v4", "cpu_v5"):
        with kernels.use(attention=name):
            x = Tensor(x0, requires_grad=True)
            q, k, v = x.reshape(B, N, 3, Hh, hd).transpose(2, 0, 3, 1, 4).unbind(0)
            y = F.scaled_dot_product_attention(q, k, v).transpose(0, 2, 1, 3).reshape(B, N, D)
            (y * Tensor(w)).sum().backward()
            results[name] = y.data, x.grad
    np.testing.assert_allclose(results["cpu_v5"][0], results["cpu_v4"][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results["cpu_v5"][1], results["cpu_v4"][1], rtol=1e-5, atol=1e-6)

    grads = np.empty((B, N, 3, Hh, hd), np.float32)
    grads[...] = rng.standard_normal(grads.shape)
    views = tuple(grads[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    stacked = _slices_of_one_array(views, (3, B, Hh, N, hd), 0, np.dtype(np.float32))
    assert stacked is not None and np.shares_memory(stacked, grads)
    assert stacked.transpose(1, 3, 0, 2, 4).flags.c_contiguous
    np.testing.assert_array_equal(stacked, np.stack(views))
    apart = tuple(np.ascontiguousarray(g) for g in views)  # three arrays: must be copied together
    assert _slices_of_one_array(apart, (3, B, Hh, N, hd), 0, np.dtype(np.float32)) is None
    unequal = (views[0], views[2], views[1])  # one base, but not at equal steps
    assert _slices_of_one_array(unequal, (3, B, Hh, N, hd), 0, np.dtype(np.float32)) is None
    assert _slices_of_one_array(views, (3, B, Hh, N, hd), 0, np.dtype(np.float64)) is None


def test_v4_keeps_p_for_short_sequences_and_runs_flash_tiles_past_its_memory_bound(monkeypatch):
    """cpu_v4 keeps the (B, Hh, N, N) probabilities while they fit V4_MAX_P_BYTES, and above it runs
    v3's tiles (memory linear in N); both give the reference's result."""
    from kernels.cpu import attention

    q, k, v, dout = (a.astype(np.float32) for a in qkv(7, 2, 2, 40, 8))
    kinds = {}
    for bound in (2 * 2 * 40 * 40 * 4, 2 * 2 * 40 * 40 * 4 - 1):  # exactly P's bytes, one byte less
        monkeypatch.setattr(attention, "V4_MAX_P_BYTES", bound)
        _, cache = IMPLS["cpu_v4"].forward(q, k, v, 8**-0.5)
        kinds[bound] = (cache[0], [a.shape for a in cache[1] if isinstance(a, np.ndarray)])
        check_against_reference("cpu_v4", "float32", q, k, v, dout, 8**-0.5)
    assert kinds[2 * 2 * 40 * 40 * 4] == ("v4", [(2, 2, 40, 8)] * 3 + [(2, 2, 40, 40)])
    assert kinds[2 * 2 * 40 * 40 * 4 - 1][0] == "v3"
    assert (2, 2, 40, 40) not in kinds[2 * 2 * 40 * 40 * 4 - 1][1]


def test_v5_keeps_p_for_short_sequences_and_runs_flash_tiles_past_its_memory_bound(monkeypatch):
    """cpu_v5 shares v4's bound (V4_MAX_P_BYTES): at it P is kept, one byte less runs v3's tiles."""
    from kernels.cpu import attention

    q, k, v, dout = (a.astype(np.float32) for a in qkv(8, 2, 2, 40, 8))
    kinds = {}
    for bound in (2 * 2 * 40 * 40 * 4, 2 * 2 * 40 * 40 * 4 - 1):
        monkeypatch.setattr(attention, "V4_MAX_P_BYTES", bound)
        kinds[bound] = IMPLS["cpu_v5"].forward(q, k, v, 8**-0.5)[1][0]
        check_against_reference("cpu_v5", "float32", q, k, v, dout, 8**-0.5)
    assert kinds == {2 * 2 * 40 * 40 * 4: "v5", 2 * 2 * 40 * 40 * 4 - 1: "v3"}
