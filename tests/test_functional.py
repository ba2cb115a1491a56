"""The fused ops of minivit.functional: backward against float64 central differences (NumPy
reference kernels pinned), forward and backward against PyTorch in float32 and float64, the
composed attention paths, cross-entropy's label checks, dropout and drop-path.

Tolerances against PyTorch: float64 rtol 1e-10 (both sides are exact up to summation order);
float32 rtol 1e-4 / atol 1e-5 (a few ulps of float32 accumulated over short reductions).
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kernels
import minivit
from minivit import Tensor
from minivit import functional as F
from strategies import SETTINGS, check_backward, numerical_grad, normal, seeds, shapes, reference_kernels

TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True, scope="module")
def _pin_reference_kernels():
    with reference_kernels():
        yield


def _torch():
    return pytest.importorskip("torch", reason="PyTorch is the independent reference for these checks")


def _run_both(ours, theirs, arrays, upstream, dtype):
    """Forward and backward (with upstream gradient R) of our op and torch's on the same arrays;
    returns (our out, our grads, torch out, torch grads) as NumPy."""
    torch = _torch()
    arrays = [None if a is None else np.asarray(a, dtype=dtype) for a in arrays]
    ts = [None if a is None else Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = ours(*ts)
    assert out.dtype == dtype, f"{out.dtype} != {dtype}"
    out.backward(np.asarray(upstream, dtype=dtype))
    tt = [None if a is None else torch.tensor(a, requires_grad=True) for a in arrays]
    tout = theirs(*tt)
    tout.backward(torch.tensor(np.asarray(upstream, dtype=dtype)))
    grads = [None if t is None else t.grad for t in ts]
    tgrads = [None if t is None else t.grad.numpy() for t in tt]
    return out.data, grads, tout.detach().numpy(), tgrads


def _assert_matches_torch(ours, theirs, arrays, seed, dtype):
    """Our op and torch's agree in dtype to TOL, or, where the inputs are ill-conditioned (a
    LayerNorm row whose variance is near eps amplifies float32 rounding by 1/std), ours is at most
    twice as far from torch's float64 result as torch's own float32 result is."""
    rng = np.random.default_rng(seed)
    with minivit.no_grad():
        shape = ours(*[None if a is None else Tensor(np.asarray(a, dtype=dtype)) for a in arrays]).shape
    upstream = rng.standard_normal(shape)
    out, grads, tout, tgrads = _run_both(ours, theirs, arrays, upstream, dtype)
    exact = _run_both(ours, theirs, arrays, upstream, np.float64)[2:] if dtype != np.float64 else None

    def close(mine, torch_value, which, name):
        tol = TOL[dtype]["atol"] + TOL[dtype]["rtol"] * np.abs(torch_value)
        if exact is not None:
            truth = exact[0] if which is None else exact[1][which]
            tol = np.maximum(tol, 2.0 * np.abs(torch_value - truth))
            err = np.abs(mine.astype(np.float64) - truth)
        else:
            err = np.abs(mine - torch_value)
        assert (err <= tol).all(), f"{name}: max error {err.max():.3g}, allowed {tol.flat[np.argmax(err - tol)]:.3g}"

    close(out, tout, None, "forward")
    for i, (g, tg) in enumerate(zip(grads, tgrads)):
        if tg is None:
            continue
        assert g is not None and g.dtype == dtype, f"input {i}"
        close(g, tg, i, f"gradient of input {i}")


# ---- linear ---------------------------------------------------------------------------------

@st.composite
def linear_case(draw):
    lead = draw(shapes(min_dims=0, max_dims=2, max_side=3))
    din, dout = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return lead + (din,), (dout, din), draw(st.booleans())


@SETTINGS
@given(case=linear_case(), seed=seeds)
def test_linear_backward_matches_central_differences(case, seed):
    x_shape, w_shape, has_bias = case
    rng = np.random.default_rng(seed)
    arrays = [normal(rng, x_shape), normal(rng, w_shape)] + ([normal(rng, w_shape[:1])] if has_bias else [])
    check_backward(lambda x, w, b=None: F.linear(x, w, b), arrays, seed)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(case=linear_case(), seed=seeds)
def test_linear_matches_torch_forward_and_backward(dtype, case, seed):
    torch = _torch()
    x_shape, w_shape, has_bias = case
    rng = np.random.default_rng(seed)
    arrays = [normal(rng, x_shape), normal(rng, w_shape), normal(rng, w_shape[:1]) if has_bias else None]
    _assert_matches_torch(F.linear, torch.nn.functional.linear, arrays, seed, dtype)


# ---- patch embedding ------------------------------------------------------------------------

@st.composite
def patch_case(draw):
    b, c, p = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    gh, gw, d = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    return (b, c, gh * p, gw * p), (d, c, p, p)


@SETTINGS
@given(case=patch_case(), seed=seeds)
def test_patch_embed_backward_matches_central_differences(case, seed):
    rng = np.random.default_rng(seed)
    x_shape, w_shape = case
    check_backward(F.patch_embed, [normal(rng, x_shape), normal(rng, w_shape), normal(rng, w_shape[:1])], seed)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(case=patch_case(), seed=seeds)
def test_patch_embed_equals_a_stride_p_conv_flattened_to_tokens_like_torch(dtype, case, seed):
    torch = _torch()
    x_shape, w_shape = case
    p = w_shape[-1]

    def conv_tokens(x, w, b):  # timm's PatchEmbed: conv, then (B, D, gh, gw) -> (B, Np, D)
        return torch.nn.functional.conv2d(x, w, b, stride=p).flatten(2).transpose(1, 2)

    rng = np.random.default_rng(seed)
    arrays = [normal(rng, x_shape), normal(rng, w_shape), normal(rng, w_shape[:1])]
    _assert_matches_torch(F.patch_embed, conv_tokens, arrays, seed, dtype)


# ---- layer norm, gelu, softmax --------------------------------------------------------------

@st.composite
def layernorm_case(draw):
    lead = draw(shapes(min_dims=0, max_dims=2, max_side=3))
    return lead + (draw(st.integers(2, 5)),), draw(st.sampled_from([1e-6, 1e-5, 1e-2]))


@SETTINGS
@given(case=layernorm_case(), seed=seeds)
def test_layer_norm_backward_matches_central_differences(case, seed):
    shape, eps = case
    rng = np.random.default_rng(seed)
    arrays = [normal(rng, shape), normal(rng, shape[-1:]), normal(rng, shape[-1:])]
    check_backward(lambda x, w, b: F.layer_norm(x, w, b, eps=eps), arrays, seed, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(case=layernorm_case(), seed=seeds)
def test_layer_norm_matches_torch_with_the_same_eps(dtype, case, seed):
    torch = _torch()
    shape, eps = case
    rng = np.random.default_rng(seed)
    arrays = [normal(rng, shape), normal(rng, shape[-1:]), normal(rng, shape[-1:])]
    # Rows of nearly equal values make dx a float32 difference of terms 1/std times larger than
    # itself, where any two float32 algorithms differ; the kernel tests cover those against float64.
    arrays[0] = 0.3 * arrays[0] + np.linspace(-1.0, 1.0, shape[-1])
    _assert_matches_torch(lambda x, w, b: F.layer_norm(x, w, b, eps=eps),
                          lambda x, w, b: torch.nn.functional.layer_norm(x, shape[-1:], w, b, eps=eps),
                          arrays, seed, dtype)


def test_layer_norm_default_eps_is_vits_1e_6():
    # a row with tiny variance: the output depends visibly on eps
    x = np.array([[0.0, 1e-3]])
    out = F.layer_norm(Tensor(x), Tensor(np.ones(2)), Tensor(np.zeros(2))).data
    expected = (x - x.mean()) / np.sqrt(x.var() + 1e-6)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


@SETTINGS
@given(shape=shapes(min_dims=1), seed=seeds)
def test_gelu_backward_matches_central_differences(shape, seed):
    check_backward(F.gelu, [3 * normal(np.random.default_rng(seed), shape)], seed)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(shape=shapes(min_dims=1), seed=seeds)
def test_gelu_is_the_exact_erf_form_like_torch_approximate_none(dtype, shape, seed):
    torch = _torch()
    x = 3 * normal(np.random.default_rng(seed), shape)
    _assert_matches_torch(F.gelu, lambda t: torch.nn.functional.gelu(t, approximate="none"), [x], seed, dtype)


@st.composite
def softmax_case(draw):
    shape = draw(shapes(min_dims=1))
    return shape, draw(st.integers(-len(shape), len(shape) - 1))


@SETTINGS
@given(case=softmax_case(), seed=seeds)
def test_softmax_backward_matches_central_differences_on_any_axis(case, seed):
    shape, axis = case
    x = 2 * normal(np.random.default_rng(seed), shape)
    out, _ = check_backward(lambda t: F.softmax(t, axis=axis), [x], seed)
    np.testing.assert_allclose(out.data.sum(axis=axis), 1.0, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(case=softmax_case(), seed=seeds)
def test_softmax_matches_torch_on_any_axis(dtype, case, seed):
    torch = _torch()
    shape, axis = case
    x = 2 * normal(np.random.default_rng(seed), shape)
    _assert_matches_torch(lambda t: F.softmax(t, axis=axis), lambda t: torch.softmax(t, dim=axis), [x], seed, dtype)


def test_softmax_is_stable_for_large_logits():
    out = F.softmax(Tensor(np.array([[1000.0, 1000.0, -1000.0]]))).data
    np.testing.assert_allclose(out, [[0.5, 0.5, 0.0]], atol=1e-300)


# ---- attention ------------------------------------------------------------------------------

@st.composite
def attention_case(draw):
    b, h, n, hd = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 4)),
                   draw(st.integers(1, 3)))
    scale = draw(st.none() | st.sampled_from([0.1, 0.5, 1.3]))
    return (b, h, n, hd), scale


def _qkv(seed, shape):
    rng = np.random.default_rng(seed)
    return [normal(rng, shape) for _ in range(3)]


@SETTINGS
@given(case=attention_case(), seed=seeds)
def test_fused_attention_backward_matches_central_differences(case, seed):
    shape, scale = case
    check_backward(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale), _qkv(seed, shape), seed)


def _attention_module(heads, hd, seed, attn_drop=0.0, dtype=np.float64):
    """vit.Attention with random weights (its output projection too)."""
    from minivit.vit import Attention, ViTConfig

    minivit.manual_seed(seed)
    cfg = ViTConfig(img_size=4, patch_size=2, embed_dim=heads * hd, num_heads=heads, depth=1,
                    attn_drop_rate=attn_drop)
    attn = Attention(cfg, dtype)
    rng = np.random.default_rng(seed)
    for param in attn.parameters():
        param.data[...] = rng.standard_normal(param.shape)
    return attn


@st.composite
def module_case(draw):
    return draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 4))


@SETTINGS
@given(case=module_case(), seed=seeds, per_batch=st.booleans())
def test_attention_with_additive_bias_backward_matches_central_differences_for_bias_too(case, seed, per_batch):
    heads, hd, b, n = case
    attn = _attention_module(heads, hd, seed)
    rng = np.random.default_rng(seed + 1)
    x = normal(rng, (b, n, heads * hd))
    bias = normal(rng, (b, heads, n, n) if per_batch else (heads, n, n))
    check_backward(lambda x, bias: attn(x, bias), [x, bias], seed)


@pytest.mark.parametrize("impl", [i.name for i in kernels.available("attention", "cpu")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_composed_for_its_weights_equals_the_fused_kernel_forward_and_backward(impl, dtype):
    attn = _attention_module(3, 5, seed=3, dtype=dtype)
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal((2, 9, 15)).astype(dtype)
    upstream = rng.standard_normal((2, 9, 15)).astype(dtype)
    results = []
    with kernels.use(attention=impl):
        for out in (None, {}):  # asking for the weights takes the composed path
            attn.zero_grad()
            x = Tensor(x0.copy(), requires_grad=True)
            y = attn(x, out=out)
            y.backward(upstream)
            assert y.dtype == dtype and x.grad.dtype == dtype
            results.append([y.data, x.grad] + [p.grad for p in attn.parameters()])
            if out is not None:
                weights = out["attention"][0]
                assert weights.shape == (2, 3, 9, 9)
                np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    for a, b in zip(*results):  # judged against each array's scale: some gradients cancel to ~0 (k's bias)
        np.testing.assert_allclose(a, b, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["rtol"] * np.abs(b).max())


@SETTINGS
@given(case=module_case(), seed=seeds)
def test_attention_weights_are_the_softmax_of_the_scaled_head_logits(case, seed):
    heads, hd, b, n = case
    attn = _attention_module(heads, hd, seed)
    x = normal(np.random.default_rng(seed), (b, n, heads * hd))
    out = {}
    attn(Tensor(x), out=out)
    qkv = (x @ attn.qkv.weight.data.T + attn.qkv.bias.data).reshape(b, n, 3, heads, hd).transpose(2, 0, 3, 1, 4)
    s = qkv[0] @ np.swapaxes(qkv[1], -1, -2) / np.sqrt(hd)  # (B, Hh, N, N)
    p = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(out["attention"][0], p / p.sum(-1, keepdims=True), rtol=1e-12)


@SETTINGS
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
       axis=st.integers(-4, 3), seed=seeds, transposed=st.booleans())
def test_unbind_backward_matches_central_differences_and_only_some_slices_may_be_used(shape, axis, seed, transposed):
    a = normal(np.random.default_rng(seed), shape)
    if transposed:
        a = a.transpose(2, 0, 3, 1)  # a strided input, as the heads of a qkv projection

    def f(x):
        parts = x.unbind(axis)
        return parts[0] * 2.0 + (parts[-1] if len(parts) > 2 else 0.0)  # a middle slice gets no gradient

    check_backward(f, [a], seed)


def test_unbind_gradient_is_laid_out_like_the_input_so_the_reshape_before_it_stays_a_view():
    qkv = Tensor(np.zeros((2, 5, 3 * 2 * 4)), requires_grad=True)  # (B, N, 3D) with 2 heads of 4
    heads = qkv.reshape(2, 5, 3, 2, 4).transpose(2, 0, 3, 1, 4)  # (3, B, Hh, N, hd), strided
    q, k, v = heads.unbind(0)
    (q.sum() + 2.0 * k.sum() + 3.0 * v.sum()).backward()
    expected = np.broadcast_to(np.array([1.0, 2.0, 3.0])[None, None, :, None, None], (2, 5, 3, 2, 4))
    np.testing.assert_array_equal(qkv.grad.reshape(2, 5, 3, 2, 4), expected)
    from minivit.autograd import Unbind, Context

    ctx = Context()
    parts = Unbind.forward(ctx, heads.data, axis=0)
    g = Unbind.backward(ctx, *[np.ones_like(part) for part in parts])
    assert g.transpose(1, 3, 0, 2, 4).flags.c_contiguous  # the (B, N, 3, Hh, hd) order, no copy needed


def test_attention_matches_torch_with_an_additive_bias(dtype=np.float64):
    torch = _torch()
    heads, hd, B, N = 2, 3, 2, 5
    attn = _attention_module(heads, hd, seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((B, N, heads * hd)), attn.qkv.weight.data, attn.qkv.bias.data,
              attn.proj.weight.data, attn.proj.bias.data, rng.standard_normal((heads, N, N))]

    def ours(x, w, b, wp, bp, bias):
        attn.qkv.weight, attn.qkv.bias, attn.proj.weight, attn.proj.bias = w, b, wp, bp
        return attn(x, bias)

    def theirs(x, w, b, wp, bp, bias):
        qkv = (x @ w.T + b).reshape(B, N, 3, heads, hd).permute(2, 0, 3, 1, 4)
        y = torch.nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bias)
        return y.transpose(1, 2).reshape(B, N, heads * hd) @ wp.T + bp

    for dt in DTYPES:
        attn.astype(dt)
        _assert_matches_torch(ours, theirs, arrays, 0, dt)


def _attention_with_dropout(attn, seed):
    def f(x):
        minivit.manual_seed(seed)  # the same mask on every call
        return attn(x)
    return f


@SETTINGS
@given(case=module_case(), seed=seeds)
def test_attention_dropout_backward_matches_central_differences_with_a_fixed_seed(case, seed):
    heads, hd, b, n = case
    attn = _attention_module(heads, hd, seed, attn_drop=0.4)
    check_backward(_attention_with_dropout(attn, seed), [normal(np.random.default_rng(seed), (b, n, heads * hd))],
                   seed)


def test_attention_dropout_is_reproducible_after_manual_seed_and_off_in_eval():
    attn = _attention_module(2, 3, seed=0, attn_drop=0.5)
    x = Tensor(normal(np.random.default_rng(0), (2, 5, 6)))
    f = _attention_with_dropout(attn, 11)
    a, b = f(x).data, f(x).data
    np.testing.assert_array_equal(a, b)
    minivit.manual_seed(12)
    assert not np.allclose(a, attn(x).data)
    attn.eval()
    plain = attn(x).data
    np.testing.assert_array_equal(attn(x).data, plain)
    assert not np.allclose(a, plain)


def test_attention_dropout_preserves_the_output_in_expectation():
    attn = _attention_module(1, 2, seed=1, attn_drop=0.3)
    x = Tensor(normal(np.random.default_rng(1), (1, 4, 2)))
    plain = attn.eval()(x).data
    attn.train()
    minivit.manual_seed(0)
    draws = np.stack([attn(x).data for _ in range(4000)])
    # per entry the mean of 4000 draws has a standard error of about 1% of the output's scale
    np.testing.assert_allclose(draws.mean(0), plain, atol=0.06 * np.abs(plain).max())


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(case=attention_case(), seed=seeds)
def test_fused_attention_matches_torch_scaled_dot_product_attention(dtype, case, seed):
    torch = _torch()
    shape, scale = case

    def theirs(q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)

    _assert_matches_torch(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale), theirs,
                          _qkv(seed, shape), seed, dtype)


def test_fused_attention_names_the_shapes_it_expects():
    with pytest.raises(ValueError, match=r"\(B, Hh, N, hd\), got \(2, 5, 9\)"):
        F.scaled_dot_product_attention(Tensor(np.zeros((2, 5, 9))), Tensor(np.zeros((2, 5, 9))),
                                       Tensor(np.zeros((2, 5, 9))))


# ---- cross-entropy --------------------------------------------------------------------------

@st.composite
def ce_case(draw):
    b, k = draw(st.integers(1, 4)), draw(st.integers(2, 5))
    labels = draw(st.lists(st.integers(0, k - 1), min_size=b, max_size=b))
    return (b, k), np.array(labels), draw(st.sampled_from([0.0, 0.1, 0.25, 1.0]))


@SETTINGS
@given(case=ce_case(), seed=seeds)
def test_cross_entropy_backward_matches_central_differences_with_label_smoothing(case, seed):
    shape, labels, smoothing = case
    logits = 2 * normal(np.random.default_rng(seed), shape)
    check_backward(lambda z: F.cross_entropy(z, labels, label_smoothing=smoothing), [logits], seed)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(case=ce_case(), seed=seeds)
def test_cross_entropy_matches_torch_with_label_smoothing(dtype, case, seed):
    torch = _torch()
    shape, labels, smoothing = case
    logits = 2 * normal(np.random.default_rng(seed), shape)
    _assert_matches_torch(
        lambda z: F.cross_entropy(z, labels, label_smoothing=smoothing),
        lambda z: torch.nn.functional.cross_entropy(z, torch.tensor(labels), label_smoothing=smoothing),
        [logits], seed, dtype)


def test_cross_entropy_accepts_labels_as_a_list_or_a_tensor():
    logits = Tensor(normal(np.random.default_rng(0), (3, 4)))
    expected = F.cross_entropy(logits, np.array([0, 3, 1])).item()
    assert F.cross_entropy(logits, [0, 3, 1]).item() == expected
    assert F.cross_entropy(logits, Tensor(np.array([0, 3, 1]))).item() == expected


@pytest.mark.parametrize("labels, pattern", [
    ([0, 4, 1], r"\[0, 3\].*4 classes.*\[0, 4\]"),
    ([-1, 0, 1], r"\[0, 3\].*\[-1, 1\]"),
])
def test_cross_entropy_rejects_out_of_range_labels_naming_the_range(labels, pattern):
    with pytest.raises(ValueError, match=pattern):
        F.cross_entropy(Tensor(np.zeros((3, 4))), np.array(labels))


@pytest.mark.parametrize("labels", [np.zeros((3, 1), dtype=int), np.zeros(4, dtype=int), np.zeros(2, dtype=int)])
def test_cross_entropy_rejects_labels_of_the_wrong_shape_naming_both_shapes(labels):
    with pytest.raises(ValueError, match=r"\(3,\).*\(3, 4\).*" + re.escape(str(labels.shape))):
        F.cross_entropy(Tensor(np.zeros((3, 4))), labels)


@pytest.mark.parametrize("smoothing", [-0.1, 1.5])
def test_cross_entropy_rejects_label_smoothing_outside_0_1(smoothing):
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(Tensor(np.zeros((2, 3))), np.array([0, 1]), label_smoothing=smoothing)


def test_cross_entropy_rejects_fractional_labels():
    with pytest.raises(ValueError):
        F.cross_entropy(Tensor(np.zeros((2, 3))), np.array([0.7, 1.2]))


# ---- dropout and drop-path ------------------------------------------------------------------

def test_dropout_is_the_identity_when_p_is_zero_or_in_eval_mode():
    x = Tensor(normal(np.random.default_rng(0), (4, 5)), requires_grad=True)
    assert F.dropout(x, 0.0, training=True) is x
    assert F.dropout(x, 0.7, training=False) is x
    assert F.drop_path(x, 0.0, training=True) is x
    assert F.drop_path(x, 0.7, training=False) is x


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_zeroes_about_p_and_scales_survivors_by_1_over_1_minus_p(p):
    n = 200_000
    minivit.manual_seed(0)
    x = Tensor(np.ones(n))
    out = F.dropout(x, p, training=True).data
    dropped = out == 0
    assert abs(dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(out[~dropped], 1.0 / (1.0 - p), rtol=1e-12)
    assert abs(out.mean() - 1.0) < 5 * np.sqrt(p / (1 - p) / n)  # expected value preserved


def test_dropout_mask_is_reproducible_after_manual_seed_and_its_backward_is_the_mask():
    x = normal(np.random.default_rng(1), (3, 7))
    minivit.manual_seed(5)
    first = F.dropout(Tensor(x), 0.5).data
    minivit.manual_seed(5)
    t = Tensor(x, requires_grad=True)
    second = F.dropout(t, 0.5)
    np.testing.assert_array_equal(first, second.data)
    assert not np.array_equal(first, F.dropout(Tensor(x), 0.5).data)  # the stream moved on
    second.backward(np.ones(x.shape))
    np.testing.assert_allclose(t.grad, np.where(first == 0, 0.0, 2.0), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_and_drop_path_keep_the_dtype(dtype):
    x = Tensor(np.ones((4, 3), dtype=dtype), requires_grad=True)
    out = F.dropout(x, 0.3) + F.drop_path(x, 0.3)
    assert out.dtype == dtype
    out.backward(np.ones((4, 3), dtype=dtype))
    assert x.grad.dtype == dtype


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_p_outside_0_1_in_training(p):
    with pytest.raises(ValueError, match=str(p)):
        F.dropout(Tensor(np.ones(3)), p, training=True)


@SETTINGS
@given(shape=shapes(min_dims=1), seed=seeds)
def test_dropout_and_drop_path_backward_match_central_differences_with_a_fixed_seed(shape, seed):
    x = normal(np.random.default_rng(seed), shape)

    def reseeded(op):
        def f(t):
            minivit.manual_seed(seed)
            return op(t, 0.4, training=True)
        return f

    check_backward(reseeded(F.dropout), [x], seed)
    check_backward(reseeded(F.drop_path), [x], seed)


def test_drop_path_drops_whole_samples_and_preserves_the_expected_value():
    b, p = 20_000, 0.25
    minivit.manual_seed(3)
    x = np.broadcast_to(np.arange(1.0, 7.0).reshape(1, 2, 3), (b, 2, 3)).copy()
    out = F.drop_path(Tensor(x), p).data
    kept = np.all(out != 0, axis=(1, 2))
    dropped = np.all(out == 0, axis=(1, 2))
    assert np.all(kept | dropped), "a sample was partly dropped"
    np.testing.assert_allclose(out[kept], x[kept] / (1 - p), rtol=1e-12)
    assert abs(dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / b)
    np.testing.assert_allclose(out.mean(0), x[0], rtol=5 * np.sqrt(p / (1 - p) / b))


@pytest.mark.parametrize("p", [-0.5, 1.0, 1.5, float("nan"), "0.1", True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("op", [F.dropout, F.drop_path])
def test_dropout_and_drop_path_reject_the_same_bad_probabilities_in_training_and_in_eval(op, training, p):
    with pytest.raises(ValueError, match=r"probability must be a number in \[0, 1\), got " + re.escape(repr(p))):
        op(Tensor(np.ones((4, 2))), p, training=training)


def test_cross_entropy_accepts_plain_lists_of_logits_and_labels():
    logits = [[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]]
    expected = F.cross_entropy(Tensor(np.array(logits, dtype=np.float32)), np.array([0, 2])).item()
    assert F.cross_entropy(logits, [0, 2]).item() == pytest.approx(expected)


# ---- kernel dispatch ------------------------------------------------------------------------

def test_backward_uses_the_kernel_that_ran_the_forward_even_if_the_selection_changed():
    others = [i.name for i in kernels.available("attention", device="cpu") if i.name != "reference"]
    if not others:
        pytest.skip("only the reference attention kernel is registered")
    q, k, v = _qkv(4, (1, 2, 5, 3))
    upstream = normal(np.random.default_rng(5), (1, 2, 5, 3))
    tq, tk, tv = (Tensor(a.copy(), requires_grad=True) for a in (q, k, v))
    out = F.scaled_dot_product_attention(tq, tk, tv)  # reference (pinned by the module fixture)
    with kernels.use(attention=others[0]):
        out.backward(upstream)

    def loss(q, k, v):
        return float((F.scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v)).data * upstream).sum())

    for g, n in zip((tq.grad, tk.grad, tv.grad), numerical_grad(loss, [q, k, v])):
        np.testing.assert_allclose(g, n, rtol=1e-5, atol=1e-7)
