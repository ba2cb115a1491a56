"""The autograd core (minivit/autograd.py): every primitive's backward against float64 central
differences on hypothesis-drawn shapes, broadcasting undone, accumulation, no_grad, dtypes."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minivit import Tensor, enable_grad, is_grad_enabled, no_grad, tensor
from minivit.autograd import broadcast_to, concatenate, stack
from strategies import (
    SETTINGS,
    away_from_zero,
    broadcastable_shapes,
    check_backward,
    normal,
    positive,
    seeds,
    shapes,
)

# Property tests keep results at least 1-D: 0-d float64 results are rounded to float32 (see
# test_float64_ops_with_a_0d_result_stay_float64), which would swamp the central differences.


def nonscalar(shapes_):
    return any(len(s) for s in shapes_)


# ---- elementwise binary ops, with broadcasting ------------------------------------------------

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}


@pytest.mark.parametrize("op", sorted(BINARY))
@SETTINGS
@given(pair=broadcastable_shapes().filter(nonscalar), seed=seeds)
def test_binary_op_backward_matches_central_differences_under_broadcasting(op, pair, seed):
    rng = np.random.default_rng(seed)
    a = normal(rng, pair[0])
    b = away_from_zero(rng, pair[1]) if op == "div" else normal(rng, pair[1])
    check_backward(BINARY[op], [a, b], seed)


@pytest.mark.parametrize("op", sorted(BINARY))
@SETTINGS
@given(shape=shapes(min_dims=1), seed=seeds, scalar=st.sampled_from([-1.5, 0.5, 2.0, 3]))
def test_binary_op_with_a_python_scalar_on_either_side_matches_central_differences(op, shape, seed, scalar):
    rng = np.random.default_rng(seed)
    x = away_from_zero(rng, shape)
    check_backward(lambda t: BINARY[op](t, scalar), [x], seed)
    check_backward(lambda t: BINARY[op](scalar, t), [x], seed)


@pytest.mark.parametrize("op", sorted(BINARY))
def test_ndarray_on_the_left_dispatches_to_the_tensor_and_keeps_the_graph(op):
    rng = np.random.default_rng(0)
    a, b = away_from_zero(rng, (2, 3)), away_from_zero(rng, (2, 3))
    x = Tensor(b, requires_grad=True)
    out = BINARY[op](a, x)
    assert isinstance(out, Tensor) and out.requires_grad
    np.testing.assert_allclose(out.data, BINARY[op](a, b), rtol=1e-15)
    check_backward(lambda t: BINARY[op](a, t), [b], 0)


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [((3, 1, 4), (4,)), ((3, 1, 4), (1, 5, 1)), ((2, 3), ()), ((1,), (2, 2)), ((4, 1), (1, 4))],
)
def test_broadcasting_is_undone_so_each_grad_has_its_input_shape(a_shape, b_shape):
    rng = np.random.default_rng(1)
    a = Tensor(normal(rng, a_shape), requires_grad=True)
    b = Tensor(normal(rng, b_shape), requires_grad=True)
    out = a * b + b
    out.backward(np.ones(out.shape))
    assert a.grad.shape == a_shape
    assert b.grad.shape == b_shape
    # d/db of sum(a * b + b) is the sum of (a + 1) over every position b was broadcast to
    expected_b = np.broadcast_to(a.data + 1.0, out.shape)
    extra = out.ndim - len(b_shape)
    expected_b = expected_b.sum(axis=tuple(range(extra)))
    expected_b = expected_b.sum(axis=tuple(i for i, s in enumerate(b_shape) if s == 1), keepdims=True)
    np.testing.assert_allclose(b.grad, expected_b.reshape(b_shape), rtol=1e-12)


# ---- elementwise unary ops ------------------------------------------------------------------

@SETTINGS
@given(shape=shapes(min_dims=1), seed=seeds)
def test_neg_exp_tanh_backward_match_central_differences(shape, seed):
    x = normal(np.random.default_rng(seed), shape)
    check_backward(lambda t: -t, [x], seed)
    check_backward(lambda t: t.exp(), [x], seed)
    check_backward(lambda t: t.tanh(), [x], seed)


@SETTINGS
@given(shape=shapes(min_dims=1), seed=seeds)
def test_log_backward_matches_central_differences(shape, seed):
    check_backward(lambda t: t.log(), [positive(np.random.default_rng(seed), shape)], seed)


@SETTINGS
@given(shape=shapes(min_dims=1), seed=seeds, exponent=st.sampled_from([2, 3, -1, 0.5, -1.5, 2.5, 1]))
def test_pow_backward_matches_central_differences(shape, seed, exponent):
    rng = np.random.default_rng(seed)
    # fractional powers need a positive base; integer powers take either sign
    x = positive(rng, shape) if float(exponent) != int(exponent) else away_from_zero(rng, shape)
    check_backward(lambda t: t**exponent, [x], seed)


def test_tensor_to_the_power_of_a_tensor_raises_a_clear_type_error():
    x = Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(TypeError, match="exp"):
        x**x


# ---- reductions -----------------------------------------------------------------------------

@st.composite
def shape_and_axis(draw):
    shape = draw(shapes(min_dims=1))
    ndim = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        axis = None
    elif kind == "int":
        axis = draw(st.integers(-ndim, ndim - 1))
    else:
        picked = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
        axis = tuple(a - ndim if draw(st.booleans()) else a for a in picked)  # mix negative axes in
    keepdims = draw(st.booleans())
    if np.zeros(shape).sum(axis=axis, keepdims=keepdims).ndim == 0:
        keepdims = True  # a 0-d result: see nonscalar() above
    return shape, axis, keepdims


@SETTINGS
@given(case=shape_and_axis(), seed=seeds)
def test_sum_backward_matches_central_differences_for_any_axis_and_keepdims(case, seed):
    shape, axis, keepdims = case
    x = normal(np.random.default_rng(seed), shape)
    out, _ = check_backward(lambda t: t.sum(axis=axis, keepdims=keepdims), [x], seed)
    np.testing.assert_allclose(out.data, x.sum(axis=axis, keepdims=keepdims), rtol=1e-12)


@SETTINGS
@given(case=shape_and_axis(), seed=seeds)
def test_mean_matches_numpy_and_its_backward_matches_central_differences(case, seed):
    shape, axis, keepdims = case
    x = normal(np.random.default_rng(seed), shape)
    out, _ = check_backward(lambda t: t.mean(axis=axis, keepdims=keepdims), [x], seed)
    np.testing.assert_allclose(out.data, x.mean(axis=axis, keepdims=keepdims), rtol=1e-12, atol=1e-15)


# ---- shape ops ------------------------------------------------------------------------------

@SETTINGS
@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_reshape_backward_matches_central_differences(shape, seed, data):
    x = normal(np.random.default_rng(seed), shape)
    target = data.draw(st.sampled_from([(-1,), tuple(reversed(shape)), (1,) + shape + (1,), (x.size, 1)]))
    out, _ = check_backward(lambda t: t.reshape(target), [x], seed)
    assert out.shape == x.reshape(target).shape
    check_backward(lambda t: t.reshape(*target), [x], seed)  # varargs form


@SETTINGS
@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_transpose_and_permute_backward_match_central_differences(shape, seed, data):
    x = normal(np.random.default_rng(seed), shape)
    axes = tuple(data.draw(st.permutations(range(len(shape)))))
    out, _ = check_backward(lambda t: t.transpose(axes), [x], seed)
    np.testing.assert_array_equal(out.data, x.transpose(axes))
    check_backward(lambda t: t.permute(*axes), [x], seed)
    check_backward(lambda t: t.T, [x], seed)
    check_backward(lambda t: t.transpose(), [x], seed)


def test_transpose_with_negative_axes_backward_matches_central_differences():
    x = normal(np.random.default_rng(0), (2, 3, 4))
    check_backward(lambda t: t.transpose(0, -1, -2), [x], 0)


@st.composite
def basic_index(draw, shape):
    """A tuple of ints, slices (with steps, negative too), None and Ellipsis valid for shape."""
    items = []
    for side in shape:
        kind = draw(st.sampled_from(["int", "slice", "full"]))
        if kind == "int":
            items.append(draw(st.integers(-side, side - 1)))
        elif kind == "slice":
            start = draw(st.none() | st.integers(-side, side))
            stop = draw(st.none() | st.integers(-side, side))
            step = draw(st.sampled_from([None, 1, 2, -1, -2]))
            items.append(slice(start, stop, step))
        else:
            items.append(slice(None))
    if items and draw(st.booleans()):
        items = items[: draw(st.integers(1, len(items)))] + [Ellipsis]
    if draw(st.booleans()):
        items.insert(draw(st.integers(0, len(items))), None)
    return tuple(items)


@SETTINGS
@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_getitem_with_ints_and_slices_backward_matches_central_differences(shape, seed, data):
    x = normal(np.random.default_rng(seed), shape)
    index = data.draw(basic_index(shape).filter(lambda i: np.ndim(np.zeros(shape)[i]) > 0))
    out, _ = check_backward(lambda t: t[index], [x], seed)
    np.testing.assert_array_equal(out.data, x[index])


@SETTINGS
@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_getitem_with_fancy_indices_accumulates_repeated_indices(shape, seed, data):
    x = normal(np.random.default_rng(seed), shape)
    n = shape[0]
    picks = data.draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=6))  # repeats allowed
    as_array = data.draw(st.booleans())
    index = np.array(picks) if as_array else picks
    out, grads = check_backward(lambda t: t[index], [x], seed)
    np.testing.assert_array_equal(out.data, x[np.array(picks)])
    # a row picked k times gets k upstream rows: count the multiplicity directly
    ones = Tensor(np.ones(shape), requires_grad=True)
    ones[index].backward(np.ones(out.shape))
    counts = np.bincount(np.array(picks) % n, minlength=n).astype(float)
    np.testing.assert_array_equal(ones.grad, np.broadcast_to(counts.reshape((n,) + (1,) * (len(shape) - 1)), shape))


def test_getitem_with_mixed_fancy_and_slice_and_boolean_and_tensor_indices_matches_central_differences():
    x = normal(np.random.default_rng(2), (3, 4, 2))
    check_backward(lambda t: t[:, [0, 0, 3, 1]], [x], 0)
    check_backward(lambda t: t[[2, 2], 1:, [1, 0]], [x], 1)
    check_backward(lambda t: t[np.int64(1), :, np.int64(0)], [x], 2)
    check_backward(lambda t: t[x > 0], [x], 3)
    check_backward(lambda t: t[Tensor(np.array([1, 1, 0]))], [x], 4)


@st.composite
def concat_case(draw):
    base = list(draw(shapes(min_dims=1)))
    axis = draw(st.integers(-len(base), len(base) - 1))
    sizes = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    shapes_ = []
    for s in sizes:
        shp = list(base)
        shp[axis] = s
        shapes_.append(tuple(shp))
    return shapes_, axis


@SETTINGS
@given(case=concat_case(), seed=seeds)
def test_concatenate_backward_splits_the_gradient_back_to_each_input(case, seed):
    shapes_, axis = case
    rng = np.random.default_rng(seed)
    arrays = [normal(rng, s) for s in shapes_]
    out, _ = check_backward(lambda *ts: concatenate(list(ts), axis=axis), arrays, seed)
    np.testing.assert_array_equal(out.data, np.concatenate(arrays, axis=axis))


@SETTINGS
@given(shape=shapes(), seed=seeds, count=st.integers(1, 3), data=st.data())
def test_stack_backward_matches_central_differences(shape, seed, count, data):
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    rng = np.random.default_rng(seed)
    arrays = [normal(rng, shape) for _ in range(count)]
    out, _ = check_backward(lambda *ts: stack(list(ts), axis=axis), arrays, seed)
    np.testing.assert_array_equal(out.data, np.stack(arrays, axis=axis))


@SETTINGS
@given(pair=broadcastable_shapes(), seed=seeds)
def test_broadcast_to_backward_sums_over_the_broadcast_axes(pair, seed):
    target = np.broadcast_shapes(*pair)
    x = normal(np.random.default_rng(seed), pair[0])
    out, grads = check_backward(lambda t: broadcast_to(t, target), [x], seed)
    assert out.shape == target and grads[0].shape == x.shape


# ---- matmul ---------------------------------------------------------------------------------

@st.composite
def matmul_shapes(draw):
    """(a_shape, b_shape) for a @ b: batched with broadcast batch dims, and the 1-D cases."""
    m, k, n = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    batch_a, batch_b = draw(broadcastable_shapes(max_dims=2))
    a_shape = (k,) if draw(st.integers(0, 4)) == 0 else batch_a + (m, k)
    b_shape = (k,) if draw(st.integers(0, 4)) == 0 else batch_b + (k, n)
    if len(a_shape) == len(b_shape) == 1:
        b_shape = (k, n)  # the 0-d vector . vector result is covered by its own tests
    return a_shape, b_shape


@SETTINGS
@given(case=matmul_shapes(), seed=seeds)
def test_matmul_backward_matches_central_differences_incl_batched_and_1d(case, seed):
    rng = np.random.default_rng(seed)
    a, b = normal(rng, case[0]), normal(rng, case[1])
    out, _ = check_backward(lambda x, y: x @ y, [a, b], seed)
    np.testing.assert_allclose(out.data, a @ b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [((3,), (3, 2)), ((2, 3), (3,)), ((4, 2, 3), (3,)), ((3,), (4, 3, 2)),
     ((2, 1, 2, 3), (5, 3, 2)), ((2, 3), (4, 3, 2)), ((4, 2, 3), (3, 2))],
)
def test_matmul_backward_handles_each_vector_and_broadcast_case(a_shape, b_shape):
    rng = np.random.default_rng(3)
    check_backward(lambda x, y: x @ y, [normal(rng, a_shape), normal(rng, b_shape)], 3)
    b = normal(rng, b_shape)
    check_backward(lambda x: x @ b, [normal(rng, a_shape)], 4)  # constant right operand
    a = normal(rng, a_shape)
    check_backward(lambda y: a @ y, [normal(rng, b_shape)], 5)  # ndarray @ Tensor (rmatmul)


def test_vector_dot_product_backward_gives_each_vector_the_other():
    a, b = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True), Tensor(np.array([-1.0, 0.5, 4.0]), requires_grad=True)
    (a @ b).backward()
    np.testing.assert_array_equal(a.grad, b.data)
    np.testing.assert_array_equal(b.grad, a.data)


def test_full_reductions_backward_give_ones_and_one_over_n():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    x.sum().backward()
    np.testing.assert_array_equal(x.grad, np.ones((2, 3)))
    x.grad = None
    x.mean().backward()
    np.testing.assert_allclose(x.grad, np.full((2, 3), 1 / 6))


# ---- graph semantics ------------------------------------------------------------------------

def test_gradients_accumulate_across_two_backward_calls():
    x = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data)
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 3.0)


def test_a_tensor_used_twice_gets_the_sum_of_both_paths():
    x = Tensor(np.array([0.5, -1.0]), requires_grad=True)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 1)
    # an intermediate used on two paths (diamond): a = 2x; y = a*a + a -> dy/dx = 2*(2a + 1)
    x.grad = None
    a = x * 2.0
    (a * a + a).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * (2 * a.data + 1))


def test_sibling_leaves_get_private_grad_arrays_that_can_be_modified_in_place():
    x = Tensor(np.ones(3), requires_grad=True)
    y = Tensor(np.ones(3), requires_grad=True)
    (x + y).backward(np.full(3, 2.0))
    x.grad *= 10.0  # would also change y.grad if the two shared the upstream array
    np.testing.assert_array_equal(y.grad, np.full(3, 2.0))
    z = Tensor(np.ones((2, 3)), requires_grad=True)
    z.sum().backward()  # Sum's backward is a read-only broadcast view
    z.grad *= 0.5
    np.testing.assert_array_equal(z.grad, np.full((2, 3), 0.5))


def test_backward_through_a_long_chain_does_not_hit_the_recursion_limit():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1.0
    y.backward(np.ones(1))
    assert x.grad[0] == 1.0


def test_no_grad_records_no_graph_and_backward_on_its_result_raises():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        assert not is_grad_enabled()
        y = (x * 2.0).sum()
    assert is_grad_enabled()
    assert y.requires_grad is False and y._node is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()
    assert x.grad is None


def test_enable_grad_inside_no_grad_records_again_and_modes_restore_after_an_exception():
    x = Tensor(np.ones(2), requires_grad=True)
    with no_grad():
        with enable_grad():
            y = (x * 3.0).sum()
        assert not is_grad_enabled()
    y.backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert is_grad_enabled()


def test_backward_on_a_non_scalar_without_grad_raises_naming_the_shape():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"\(2, 3\)"):
        (x * 2.0).backward()
    (x * 2.0).backward(np.ones((2, 3)))  # with an explicit upstream gradient it works
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 2.0))


def test_backward_on_constants_only_raises():
    with pytest.raises(RuntimeError):
        (Tensor(np.ones(2)) * 2.0).sum().backward()


def test_second_backward_through_a_freed_graph_raises():
    x = Tensor(np.ones(2), requires_grad=True)
    y = (x * 2.0).sum()
    y.backward()
    with pytest.raises(RuntimeError):
        y.backward()


def test_inputs_without_requires_grad_get_no_gradient():
    x = Tensor(np.ones(2), requires_grad=True)
    c = Tensor(np.full(2, 5.0))
    (x * c).sum().backward()
    assert c.grad is None
    np.testing.assert_array_equal(x.grad, [5.0, 5.0])


def test_astype_passes_gradients_back_to_the_original_tensor():
    x = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    (x.astype(np.float64) * 2.0).sum().backward()
    assert x.grad is not None and x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])


# ---- dtypes ---------------------------------------------------------------------------------

SCALAR_OPS = {
    "t + 1.5": lambda t: t + 1.5, "1.5 + t": lambda t: 1.5 + t, "t - 2": lambda t: t - 2,
    "2 - t": lambda t: 2 - t, "t * 0.1": lambda t: t * 0.1, "0.1 * t": lambda t: 0.1 * t,
    "t / 3.0": lambda t: t / 3.0, "3.0 / t": lambda t: 3.0 / t, "t ** 2": lambda t: t**2,
    "t ** 0.5": lambda t: t**0.5, "-t": lambda t: -t, "exp": lambda t: t.exp(), "log": lambda t: t.log(),
    "tanh": lambda t: t.tanh(), "mean": lambda t: t.mean(axis=0), "sum": lambda t: t.sum(axis=1),
    "reshape": lambda t: t.reshape(-1), "T": lambda t: t.T, "getitem": lambda t: t[[0, 0]],
    "matmul": lambda t: t @ t.T, "stack": lambda t: stack([t, t]), "broadcast": lambda t: broadcast_to(t, (2, 2, 3)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(SCALAR_OPS))
def test_ops_with_python_scalars_keep_the_tensor_dtype_in_forward_and_backward(name, dtype):
    x = Tensor(np.linspace(0.5, 2.0, 6).reshape(2, 3).astype(dtype), requires_grad=True)
    out = SCALAR_OPS[name](x)
    assert out.dtype == dtype, f"{name}: {x.dtype} -> {out.dtype}"
    out.backward(np.ones(out.shape, dtype=dtype))
    assert x.grad.dtype == dtype


def test_python_floats_and_lists_become_float32_tensors_like_torch():
    assert Tensor(1.5).dtype == np.float32
    assert tensor([1.0, 2.0]).dtype == np.float32
    assert tensor([1, 2]).dtype.kind == "i"  # integers stay integers
    assert tensor([1.0], dtype=np.float64).dtype == np.float64
    assert Tensor(np.ones(2, dtype=np.float64)).dtype == np.float64  # arrays keep their dtype


def test_float64_ops_with_a_0d_result_stay_float64():
    x = Tensor(np.array([[1.0, 1e-10, 0.0], [0.0, 0.0, 0.0]]), requires_grad=True)
    v = Tensor(np.ones(3))
    results = {
        "x.sum()": x.sum(), "x.mean()": x.mean(), "x[0, 1]": x[0, 1], "v @ v": v @ v,
        "0-d * 0-d": Tensor(np.array(2.0)) * Tensor(np.array(3.0)), "exp(0-d)": Tensor(np.array(0.1)).exp(),
    }
    wrong = {name: str(r.dtype) for name, r in results.items() if r.dtype != np.float64}
    assert not wrong, f"float64 inputs gave {wrong}"
    assert x.sum().item() == 1.0 + 1e-10  # float32 rounds this to 1.0


def test_grad_of_a_float32_input_mixed_with_float64_comes_back_float32():
    x = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    y = Tensor(np.ones(3, dtype=np.float64), requires_grad=True)
    out = x * y
    assert out.dtype == np.float64  # NumPy promotion in the forward
    out.backward(np.ones(3))
    assert x.grad.dtype == np.float32 and y.grad.dtype == np.float64


@SETTINGS
@given(shape=shapes(min_dims=2, max_dims=2), seed=seeds)
def test_float32_backward_agrees_with_float64_backward(shape, seed):
    rng = np.random.default_rng(seed)
    a, b = positive(rng, shape), normal(rng, shape)

    def f(x, y):
        return ((x * y).tanh() + x.log() / (y * y + 1.0)).exp().mean(axis=-1)

    grads = []
    for dtype in (np.float32, np.float64):
        x, y = Tensor(a.astype(dtype), requires_grad=True), Tensor(b.astype(dtype), requires_grad=True)
        out = f(x, y)  # (rows,), not summed to 0-d: see test_float64_ops_with_a_0d_result_stay_float64
        assert out.dtype == dtype
        out.backward(np.ones(out.shape, dtype=dtype))
        grads.append((x.grad, y.grad))
    for g32, g64 in zip(*grads):
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-5)


def test_a_tensor_inside_a_tuple_index_is_used_as_its_array():
    x = Tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    rows = Tensor(np.array([2, 0]))
    y = x[rows, 1:3]  # (2, 2): rows 2 and 0, columns 1 and 2
    np.testing.assert_array_equal(y.data, [[9.0, 10.0], [1.0, 2.0]])
    y.sum().backward()
    expected = np.zeros((3, 4))
    expected[[2, 0], 1:3] = 1.0
    np.testing.assert_array_equal(x.grad, expected)


def test_a_function_with_several_outputs_gets_one_gradient_per_output_and_none_for_unused_ones():
    from minivit.autograd import Function

    seen = []

    class SplitTwo(Function):
        @staticmethod
        def forward(ctx, a):
            return a[:2].copy(), a[2:].copy()

        @staticmethod
        def backward(ctx, ga, gb):
            seen.append((ga, gb))
            return np.concatenate([ga, np.zeros(1) if gb is None else gb])

    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    first, second = SplitTwo.apply(x)
    (first * 3.0).sum().backward()
    assert len(seen) == 1 and seen[0][1] is None
    np.testing.assert_array_equal(x.grad, [3.0, 3.0, 0.0])
    x.grad = None
    first, second = SplitTwo.apply(x)
    (first.sum() + 2.0 * second.sum() + first[0]).backward()  # both outputs, one used twice
    assert len(seen) == 2
    np.testing.assert_array_equal(x.grad, [2.0, 1.0, 2.0])
