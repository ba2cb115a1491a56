"""The convolutional ops (kernels/reference/conv.py, kernels/cpu/conv.py, minivit.functional):
conv2d, weight_standardize, groupnorm (with and without its fused ReLU) and max_pool2d.

Three kinds of claims, as for the ViT's ops:
- every registered CPU implementation equals the NumPy reference run in float64, forward and
  backward, on hypothesis-drawn shapes (odd sizes, strides that skip pixels, asymmetric padding,
  single channels), through kernels/bench.py's run_pair/compare harness and its tolerances;
- the autograd ops' gradients equal float64 central differences (reference kernels pinned);
- the ops equal PyTorch's (conv2d, the batch_norm trick of timm's StdConv2d, group_norm + relu,
  max_pool2d with -inf padding and BiT's zero-padded pool), forward and backward, where PyTorch
  is installed.

Shape letters: B batch, C channels, O output channels, H/W size, kh/kw kernel, G groups.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import kernels
from kernels import bench
from minivit import Tensor
from minivit import functional as F
from strategies import SETTINGS, check_backward, reference_kernels, seeds

DTYPES = ("float32", "float64")
RTOL = {"float32": 1e-3, "float64": 1e-8}
ATOL = {"float32": 1e-4, "float64": 1e-10}
FLOOR = {"float32": 1e-5, "float64": 1e-13}
OPS = ("conv2d", "weight_standardize", "groupnorm", "max_pool2d")


def impls(op):
    """Every registered CPU implementation of op but the reference (the oracle)."""
    return [pytest.param(i.name, id=i.name) for i in kernels.available(op, device="cpu") if i.name != "reference"]


def normal(seed, shape, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


def assert_matches_reference(op, name, dtype, args, params, seed=0):
    pairs = bench.run_pair(op, name, bench.Inputs(args, params).astype(dtype), seed=seed)
    result = bench.compare_all(pairs, dtype, (RTOL[dtype], ATOL[dtype], FLOOR[dtype]))
    assert result.ok, f"{op}/{name} {dtype}:\n" + "\n".join(result.lines)


def test_this_file_judges_with_the_bench_tolerance():
    assert bench.TOLERANCE == {d: (RTOL[d], ATOL[d], FLOOR[d]) for d in DTYPES}


def test_every_op_has_a_reference_a_default_and_a_bench_spec():
    for op in OPS:
        assert op in kernels.OPS and "reference" in {i.name for i in kernels.available(op)}
        assert kernels.find(op, kernels.DEFAULTS["cpu"][op]).device == "cpu"
        assert op in bench.SPECS


# ---------------------------------------------------------------- implementations vs the reference
@st.composite
def conv_cases(draw):
    """(x shape, w shape, stride, padding) with at least one output position."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pad = tuple(draw(st.integers(0, 2)) for _ in range(4))  # (top, bottom, left, right)
    H = draw(st.integers(max(1, kh - pad[0] - pad[1]), 9))
    W = draw(st.integers(max(1, kw - pad[2] - pad[3]), 9))
    B, C, O = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 5))
    return (B, C, H, W), (O, C, kh, kw), (sh, sw), pad


@st.composite
def pointwise_cases(draw):
    """1x1 convs without padding: the shape cpu_v2 computes without im2col."""
    B, C, O = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 5))
    s = draw(st.integers(1, 3))
    return (B, C, draw(st.integers(1, 9)), draw(st.integers(1, 9))), (O, C, 1, 1), (s, s), (0, 0, 0, 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", impls("conv2d"))
@SETTINGS
@given(case=st.one_of(conv_cases(), pointwise_cases()), bias=st.booleans(), seed=seeds)
def test_conv2d_forward_and_backward_match_float64_reference(name, dtype, case, bias, seed):
    xs, ws, stride, padding = case
    x, w = normal(seed, xs), normal(seed + 1, ws, 1 / math.sqrt(np.prod(ws[1:])))
    b = normal(seed + 2, ws[:1]) if bias else None
    assert_matches_reference("conv2d", name, dtype, (x, w, b), {"stride": stride, "padding": padding}, seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", impls("groupnorm"))
@SETTINGS
@given(B=st.integers(1, 3), G=st.integers(1, 4), per_group=st.integers(1, 4), H=st.integers(1, 7),
       W=st.integers(1, 7), relu=st.booleans(), scale=st.sampled_from([0.1, 1.0, 10.0]), shift=st.floats(-5, 5),
       seed=seeds)
def test_groupnorm_forward_and_backward_match_float64_reference(name, dtype, B, G, per_group, H, W, relu, scale,
                                                                 shift, seed):
    C = G * per_group
    x = normal(seed, (B, C, H, W), scale) + shift
    w, b = 1.0 + normal(seed + 1, (C,), 0.3), normal(seed + 2, (C,), 0.3)
    assert_matches_reference("groupnorm", name, dtype, (x, w, b), {"groups": G, "eps": 1e-5, "relu": relu}, seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", impls("max_pool2d"))
@SETTINGS
@given(B=st.integers(1, 3), C=st.integers(1, 3), H=st.integers(1, 9), W=st.integers(1, 9), k=st.integers(1, 3),
       s=st.integers(1, 3), pad=st.integers(0, 1), pad_value=st.sampled_from([-math.inf, 0.0]), seed=seeds)
def test_max_pool2d_forward_and_backward_match_float64_reference(name, dtype, B, C, H, W, k, s, pad, pad_value,
                                                                  seed):
    pad = min(pad, k - 1)  # a window never lies wholly in the padding
    if H + 2 * pad < k or W + 2 * pad < k:
        H, W = max(H, k), max(W, k)
    params = {"kernel": (k, k), "stride": (s, s), "padding": (pad,) * 4, "pad_value": pad_value}
    assert_matches_reference("max_pool2d", name, dtype, (normal(seed, (B, C, H, W)),), params, seed)


def test_max_pool2d_sends_the_gradient_to_the_first_of_tied_maxima_like_the_reference():
    x = np.zeros((1, 1, 3, 3))  # every window is a tie; PyTorch and np.argmax pick the first
    for impl in kernels.available("max_pool2d", device="cpu"):
        out, cache = impl.forward(x, (2, 2), (1, 1), (0, 0, 0, 0), -math.inf)
        (dx,) = impl.backward(np.ones_like(out), cache)
        np.testing.assert_array_equal(dx[0, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]], err_msg=impl.name)


# ---------------------------------------------------------------- gradients vs central differences
@SETTINGS
@given(case=conv_cases(), seed=seeds)
def test_conv2d_backward_matches_central_differences(case, seed):
    xs, ws, stride, padding = case
    arrays = [normal(seed, xs), normal(seed + 1, ws), normal(seed + 2, ws[:1])]
    with reference_kernels():
        check_backward(lambda x, w, b: F.conv2d(x, w, b, stride, padding), arrays, seed)


@SETTINGS
@given(O=st.integers(1, 4), C=st.integers(1, 3), k=st.integers(1, 3), seed=seeds)
def test_weight_standardize_backward_matches_central_differences(O, C, k, seed):
    with reference_kernels():
        check_backward(lambda w: F.weight_standardize(w, 1e-8), [normal(seed, (O, C, k, k))], seed)


@SETTINGS
@given(B=st.integers(1, 2), G=st.integers(1, 3), per_group=st.integers(1, 3), H=st.integers(1, 4), relu=st.booleans(),
       seed=seeds)
def test_group_norm_backward_matches_central_differences(B, G, per_group, H, relu, seed):
    C = G * per_group
    arrays = [normal(seed, (B, C, H, H + 1)), 1 + normal(seed + 1, (C,), 0.3), normal(seed + 2, (C,), 0.3)]
    if relu:  # central differences across ReLU's kink are wrong: keep every value off it
        y, _ = kernels.find("groupnorm", "reference").forward(*arrays, groups=G)
        assume(np.abs(y).min() > 1e-3)
    with reference_kernels():
        check_backward(lambda x, w, b: F.group_norm(x, w, b, G, 1e-5, relu=relu), arrays, seed)


@SETTINGS
@given(H=st.integers(3, 7), pad=st.sampled_from([0, 1, "same"]), seed=seeds)
def test_max_pool2d_backward_matches_central_differences(H, pad, seed):
    with reference_kernels():
        check_backward(lambda x: F.max_pool2d(x, 3, 2, padding=pad), [normal(seed, (2, 2, H, H + 2))], seed)


# ---------------------------------------------------------------- padding rules
@given(n=st.integers(1, 64), k=st.integers(1, 7), s=st.integers(1, 4))
def test_same_padding_gives_tensorflows_output_size_with_the_odd_pixel_at_the_end(n, k, s):
    top, bottom, left, right = F.conv_padding("same", (n, n), (k, k), (s, s))
    assert (top, bottom) == (left, right) and bottom - top in (0, 1)
    assert (n + top + bottom - k) // s + 1 == -(-n // s)  # ceil(n / s) outputs, TF's "SAME"


@pytest.mark.parametrize("padding, expected", [(1, (1, 1, 1, 1)), ((1, 2), (1, 1, 2, 2)), ((0, 1, 2, 3), (0, 1, 2, 3))])
def test_padding_can_be_an_int_a_pair_or_four_sides(padding, expected):
    assert F.conv_padding(padding, (5, 5), (3, 3), (1, 1)) == expected


@pytest.mark.parametrize("bad", ["valid", -1, (1, 2, 3)])
def test_bad_padding_raises_a_value_error(bad):
    with pytest.raises(ValueError, match="padding"):
        F.conv_padding(bad, (5, 5), (3, 3), (1, 1))


def test_conv2d_names_the_shapes_it_expects():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        F.conv2d(Tensor(np.zeros((1, 3, 4, 4))), Tensor(np.zeros((2, 4, 3, 3))))


def test_group_norm_refuses_channels_that_do_not_split_into_the_groups():
    with pytest.raises(ValueError, match="6 channels do not split into 4 groups"):
        F.group_norm(Tensor(np.zeros((1, 6, 2, 2))), Tensor(np.ones(6)), Tensor(np.zeros(6)), 4)


def test_weight_standardized_rows_have_zero_mean_and_unit_variance():
    w = normal(0, (5, 3, 3, 3), 0.2) + 0.4
    out = F.weight_standardize(Tensor(w), 1e-8).data.reshape(5, -1)
    np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=1), 1, rtol=1e-6)


# ---------------------------------------------------------------- against PyTorch
def _torch():
    return pytest.importorskip("torch", reason="PyTorch is the independent reference for these checks")


def _both(ours, theirs, arrays, dtype, seed=0):
    """Forward and backward (random upstream gradient) of our op and torch's; returns both."""
    torch = _torch()
    arrays = [np.asarray(a, dtype=dtype) for a in arrays]
    mine = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = ours(*mine)
    up = np.random.default_rng(seed).standard_normal(out.shape).astype(dtype)
    out.backward(up)
    tt = [torch.tensor(a, requires_grad=True) for a in arrays]
    tout = theirs(*tt)
    tout.backward(torch.tensor(up))
    return [out.data] + [t.grad for t in mine], [tout.detach().numpy()] + [t.grad.numpy() for t in tt]


TORCH_TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def _assert_both(ours, theirs, arrays, dtype):
    got, want = _both(ours, theirs, arrays, dtype)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, w, rtol=TORCH_TOL[dtype]["rtol"],
                                   atol=TORCH_TOL[dtype]["atol"] * max(1.0, np.abs(w).max()), err_msg=f"output {i}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1), ((2, 1), (0, 2, 1, 0)), (2, "same"), (3, "same")])
def test_conv2d_matches_torch_with_padding_and_stride(dtype, stride, padding):
    torch = _torch()
    x, w, b = normal(0, (2, 3, 11, 10)), normal(1, (4, 3, 3, 5), 0.3), normal(2, (4,))
    pad = F.conv_padding(padding, (11, 10), (3, 5), F._pair(stride))

    def theirs(x, w, b):
        return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (pad[2], pad[3], pad[0], pad[1])), w, b, stride)

    _assert_both(lambda x, w, b: F.conv2d(x, w, b, stride, padding), theirs, [x, w, b], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_standardize_is_timms_stdconv2d_batch_norm_trick(dtype):
    torch = _torch()
    w = normal(3, (6, 4, 3, 3), 0.1)

    def theirs(w):
        return torch.nn.functional.batch_norm(w.reshape(1, 6, -1), None, None, training=True, momentum=0.0,
                                              eps=1e-8).reshape_as(w)

    _assert_both(lambda w: F.weight_standardize(w, 1e-8), theirs, [w], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
def test_group_norm_matches_torch_group_norm_then_relu(dtype, relu):
    torch = _torch()
    x, w, b = normal(4, (3, 8, 5, 6), 2.0) + 1, 1 + normal(5, (8,), 0.3), normal(6, (8,), 0.3)

    def theirs(x, w, b):
        y = torch.nn.functional.group_norm(x, 4, w, b, 1e-5)
        return torch.relu(y) if relu else y

    _assert_both(lambda x, w, b: F.group_norm(x, w, b, 4, 1e-5, relu=relu), theirs, [x, w, b], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pad_value", [-math.inf, 0.0])
def test_max_pool2d_matches_torch_padded_pool_and_bits_zero_padded_pool(dtype, pad_value):
    torch = _torch()
    x = normal(7, (2, 3, 9, 8)) - 0.5  # negative values, so a zero pad sometimes wins

    def theirs(x):
        if pad_value == 0.0:  # BiT's stem: ConstantPad2d(1, 0), then MaxPool2d(3, 2)
            return torch.nn.functional.max_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1)), 3, 2)
        return torch.nn.functional.max_pool2d(x, 3, 2, padding=1)

    _assert_both(lambda x: F.max_pool2d(x, 3, 2, padding=1, pad_value=pad_value), theirs, [x], dtype)
