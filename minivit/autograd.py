"""Reverse-mode automatic differentiation on NumPy (or CuPy) arrays.

A `Tensor` wraps one array. Every operation is a `Function` whose `forward(ctx, *arrays)` and
`backward(ctx, grad)` sit side by side (as in micrograd and minitorch); `Function.apply` runs the
forward on raw arrays and, when a gradient is needed, records the inputs so that
`Tensor.backward()` can walk the graph in reverse topological order and apply the chain rule:

    y = f(x1, x2)         ->  x1.grad += df/dx1^T . y.grad,  x2.grad += ...

Gradients accumulate into the `.grad` of leaf tensors (parameters); call `zero_grad()` between
steps. Broadcasting in the forward is undone in the backward by summing over broadcast axes.
The primitive ops live here; the fused ones (linear, attention, layernorm, ...) in functional.py.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def _grad_mode(enabled: bool):
    previous = is_grad_enabled()
    _state.grad_enabled = enabled
    try:
        yield
    finally:
        _state.grad_enabled = previous


def no_grad():
    """`with no_grad():` runs forward passes without recording a graph (evaluation, inference)."""
    return _grad_mode(False)


def enable_grad():
    return _grad_mode(True)


def array_module(a):
    """numpy, or cupy for CuPy arrays (imported only when one shows up)."""
    return np if isinstance(a, np.ndarray) or type(a).__module__ == "numpy" else __import__("cupy")


def _is_array(a) -> bool:
    return isinstance(a, np.ndarray) or type(a).__module__.startswith("cupy")


def device_of(a) -> str:
    return "cpu" if array_module(a) is np else "gpu"


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`: the backward of NumPy broadcasting."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        extra + i for i, size in enumerate(shape) if size == 1 and grad.shape[extra + i] != 1
    )
    grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


class Context:
    """Scratch space a Function's forward leaves for its backward."""

    __slots__ = ("saved", "needs_input_grad", "__dict__")

    def save_for_backward(self, *values):
        self.saved = values


class Function:
    """An operation with a hand-written backward. Subclasses define two static methods:

        forward(ctx, *arrays, **params) -> array
        backward(ctx, grad) -> one gradient (or None) per array input
    """

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        arrays = [x.data if isinstance(x, Tensor) else x for x in inputs]
        ctx = Context()
        needs = tuple(isinstance(x, Tensor) and x.requires_grad for x in inputs)
        ctx.needs_input_grad = needs
        out = cls.forward(ctx, *arrays, **params)
        result = Tensor(out)
        if any(needs) and is_grad_enabled():
            result.requires_grad = True
            result._node = (cls.backward, ctx, inputs)
        return result


class Tensor:
    """An array with a gradient. `data` is a NumPy (or CuPy) array; `grad` an array of the same
    shape once backward has reached this tensor; `_node` the (backward, ctx, inputs) that made it."""

    __slots__ = ("data", "grad", "requires_grad", "_node", "__weakref__")
    __array_priority__ = 1000  # so that `ndarray + Tensor` calls Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        if dtype is not None:
            data = data.astype(dtype) if _is_array(data) else np.asarray(data, dtype=dtype)
        elif isinstance(data, np.generic):  # a NumPy scalar (0-d result) keeps its dtype
            data = np.asarray(data)
        elif not _is_array(data):
            data = np.asarray(data)
            if data.dtype == np.float64:  # Python floats default to float32, as in PyTorch
                data = data.astype(np.float32)
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad
        self._node = None

    # ---- array-like surface -------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    device = property(lambda self: device_of(self.data))

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad})"

    def numpy(self):
        """The value as a NumPy array (copied from the GPU if needed)."""
        return self.data if isinstance(self.data, np.ndarray) else self.data.get()

    def item(self):
        return self.data.item()

    def detach(self):
        return Tensor(self.data)

    def astype(self, dtype):
        """A differentiable cast: the gradient flows back cast to this tensor's dtype."""
        return Cast.apply(self, dtype=np.dtype(dtype))

    # ---- backward -------------------------------------------------------------------------
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) into every leaf's .grad (self must be a scalar unless
        `grad` is given). The graph is freed as it is consumed."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(was it computed under no_grad(), or from arrays without parameters?)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() needs a grad argument for a non-scalar tensor of shape {self.shape}")
            grad = array_module(self.data).ones_like(self.data)
        grads = {id(self): grad}
        for node in _topological_order(self):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._node is None:  # a leaf: accumulate
                if node.grad is None:  # a private copy: g may be a view or shared with a sibling
                    node.grad = g.copy()
                else:
                    node.grad = node.grad + g
                continue
            if node._node is _FREED:
                raise RuntimeError("backward() through a graph that was already freed by an earlier "
                                   "backward(); recompute the forward pass")
            backward, ctx, inputs = node._node
            node._node = _FREED  # free the graph (and its saved arrays) as we go
            in_grads = backward(ctx, g)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            for x, gx in zip(inputs, in_grads):
                if gx is None or not isinstance(x, Tensor) or not x.requires_grad:
                    continue
                if gx.shape != x.data.shape:
                    gx = unbroadcast(gx, x.data.shape)
                if gx.dtype != x.data.dtype:
                    gx = gx.astype(x.data.dtype)
                key = id(x)
                grads[key] = grads[key] + gx if key in grads else gx

    # ---- operators ------------------------------------------------------------------------
    def __add__(self, other):
        return Add.apply(self, other)

    def __radd__(self, other):
        return Add.apply(other, self)

    def __sub__(self, other):
        return Sub.apply(self, other)

    def __rsub__(self, other):
        return Sub.apply(other, self)

    def __mul__(self, other):
        return Mul.apply(self, other)

    def __rmul__(self, other):
        return Mul.apply(other, self)

    def __truediv__(self, other):
        return Div.apply(self, other)

    def __rtruediv__(self, other):
        return Div.apply(other, self)

    def __neg__(self):
        return Neg.apply(self)

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            raise TypeError("Tensor ** Tensor is not supported; use exp(y * log(x))")
        return Pow.apply(self, exponent=float(exponent))

    def __matmul__(self, other):
        return MatMul.apply(self, other)

    def __rmatmul__(self, other):
        return MatMul.apply(other, self)

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.data
        return GetItem.apply(self, index=index)

    def exp(self):
        return Exp.apply(self)

    def log(self):
        return Log.apply(self)

    def tanh(self):
        return Tanh.apply(self)

    def sum(self, axis=None, keepdims=False):
        return Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        n = self.data.size if axis is None else int(np.prod([self.shape[a] for a in np.atleast_1d(axis)]))
        return Sum.apply(self, axis=axis, keepdims=keepdims) * (1.0 / n)

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return Reshape.apply(self, shape=tuple(shape))

    def transpose(self, *axes):
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return Transpose.apply(self, axes=tuple(axes) if axes else None)

    permute = transpose

    @property
    def T(self):
        return self.transpose()


_FREED = (None, None, ())  # the node of a tensor whose graph backward() has consumed


def _topological_order(root):
    """Tensors reachable from root, each after every tensor that depends on it (iterative DFS)."""
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node._node is not None:
            for x in node._node[2]:
                if isinstance(x, Tensor) and x.requires_grad and id(x) not in visited:
                    stack.append((x, False))
    return reversed(order)


def tensor(data, requires_grad=False, dtype=None) -> Tensor:
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def as_array(x):
    return x.data if isinstance(x, Tensor) else x


# ---- elementwise primitives ------------------------------------------------------------------
# Each backward returns the gradient at the *broadcast* shape; Tensor.backward unbroadcasts it.

class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, grad):
        return grad, grad


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, grad):
        return grad, -grad


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        return (grad * b if ctx.needs_input_grad[0] else None,
                grad * a if ctx.needs_input_grad[1] else None)


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        ga = grad / b
        return ga, (-ga * a / b if ctx.needs_input_grad[1] else None)


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, grad):
        return -grad


class Pow(Function):
    @staticmethod
    def forward(ctx, a, exponent):
        ctx.save_for_backward(a)
        ctx.exponent = exponent
        return a**exponent

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved
        return grad * ctx.exponent * a ** (ctx.exponent - 1)


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        out = array_module(a).exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved[0]


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return array_module(a).log(a)

    @staticmethod
    def backward(ctx, grad):
        return grad / ctx.saved[0]


class Tanh(Function):
    @staticmethod
    def forward(ctx, a):
        out = array_module(a).tanh(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved
        return grad * (1 - out * out)


# ---- reductions and shape ops ----------------------------------------------------------------

class Sum(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        return a.sum(axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        xp = array_module(grad)
        if ctx.axis is not None and not ctx.keepdims:
            axes = tuple(a % len(ctx.shape) for a in np.atleast_1d(ctx.axis))
            grad = xp.expand_dims(grad, axes)
        elif ctx.axis is None and not ctx.keepdims:
            grad = grad.reshape((1,) * len(ctx.shape))
        return xp.broadcast_to(grad, ctx.shape)


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.shape)


class Transpose(Function):
    @staticmethod
    def forward(ctx, a, axes=None):
        ctx.axes = None if axes is None else tuple(ax % a.ndim for ax in axes)  # argsort needs them >= 0
        return a.transpose(ctx.axes)

    @staticmethod
    def backward(ctx, grad):
        if ctx.axes is None:
            return grad.transpose()
        return grad.transpose(np.argsort(ctx.axes))


class GetItem(Function):
    @staticmethod
    def forward(ctx, a, index):
        ctx.shape, ctx.dtype, ctx.index = a.shape, a.dtype, index
        return a[index]

    @staticmethod
    def backward(ctx, grad):
        xp = array_module(grad)
        out = xp.zeros(ctx.shape, dtype=grad.dtype)
        if _is_basic_index(ctx.index):
            out[ctx.index] = grad  # slices and integers never repeat an element
        else:
            xp.add.at(out, ctx.index, grad)  # fancy indices may repeat: accumulate
        return out


def _is_basic_index(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items)


class MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        xp = array_module(grad)
        if a.ndim == 1 or b.ndim == 1:  # vector cases: promote, reuse the matrix rule, squeeze back
            a2 = a[None, :] if a.ndim == 1 else a
            b2 = b[:, None] if b.ndim == 1 else b
            g2 = xp.expand_dims(grad, -1 if b.ndim == 1 else -2)
            if a.ndim == 1 and b.ndim == 1:
                g2 = grad.reshape(1, 1)
            da = unbroadcast(g2 @ xp.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
            db = unbroadcast(xp.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape)
            return da, db
        return grad @ xp.swapaxes(b, -1, -2), xp.swapaxes(a, -1, -2) @ grad


class Concatenate(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        ctx.sizes = [a.shape[axis] for a in arrays]
        ctx.broadcast_shapes = [a.shape for a in arrays]
        return array_module(arrays[0]).concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        bounds = np.cumsum(ctx.sizes)[:-1]
        return tuple(array_module(grad).split(grad, bounds, axis=ctx.axis))


def concatenate(tensors, axis=0) -> Tensor:
    return Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis=0) -> Tensor:
    expanded = [Reshape.apply(t, shape=_insert_axis(as_array(t).shape, axis)) for t in tensors]
    return Concatenate.apply(*expanded, axis=axis)


def _insert_axis(shape, axis):
    axis = axis % (len(shape) + 1)
    return tuple(shape[:axis]) + (1,) + tuple(shape[axis:])


class Cast(Function):
    @staticmethod
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad.astype(ctx.dtype)


class BroadcastTo(Function):
    @staticmethod
    def forward(ctx, a, shape):
        return array_module(a).broadcast_to(a, shape)

    @staticmethod
    def backward(ctx, grad):
        return grad  # Tensor.backward unbroadcasts to the input's shape


def broadcast_to(x, shape) -> Tensor:
    return BroadcastTo.apply(x, shape=tuple(shape))
