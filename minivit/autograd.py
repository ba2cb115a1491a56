"""Reverse-mode automatic differentiation on NumPy (or CuPy) arrays.

A `Tensor` wraps one array. Every operation is a `Function` whose `forward(ctx, *arrays)` and
`backward(ctx, grad)` sit side by side (as in micrograd and minitorch); `Function.apply` runs the
forward on raw arrays and, when a gradient is needed, records a `Node` (the backward, its context
and the inputs) so that `Tensor.backward()` can walk the graph in reverse topological order and
apply the chain rule:

    y = f(x1, x2)         ->  x1.grad += df/dx1^T . y.grad,  x2.grad += ...

Gradients accumulate into the `.grad` of leaf tensors (parameters); call `zero_grad()` between
steps. Broadcasting in the forward is undone in the backward by summing over broadcast axes
(`unbroadcast`). A Function may return several arrays (`unbind` splits q, k and v apart); its
backward then gets one gradient per output, None for an output no path reached.

The primitive ops live here; `KernelOp` runs an op from the `kernels` registry (the fused ops
in functional.py, and `@`), so swapping a kernel changes no model code.

Arrays may be NumPy (CPU) or CuPy (GPU) arrays: every op here is written against the array's own
module (`array_module`), and KernelOp fetches the kernel of the device its inputs are on. A
NumPy array given to a kernel op whose other inputs are on the GPU is copied there (a batch of
images meeting the model's weights); a parameter never moves by itself (minivit/device.py).
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

import kernels
from kernels.reference.dense import unbroadcast  # the backward of NumPy broadcasting: sum over broadcast axes
from kernels.views import stacked_view  # np.stack of views of one array, as a view (unbind's backward)

from . import device as _device
from .device import array_module, device_of, to_device, to_host  # numpy or cupy; "cpu" or "gpu"

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


def _is_array(a) -> bool:
    return isinstance(a, np.ndarray) or type(a).__module__.startswith("cupy")


class Context:
    """Scratch space a Function's forward leaves for its backward."""

    __slots__ = ("saved", "needs_input_grad", "__dict__")

    def save_for_backward(self, *values):
        self.saved = values


class Node:
    """One recorded application of a Function: what its backward needs. Every output tensor of
    the application points at the same Node (`tensor._node`), and at its own place in the
    outputs (`tensor._output`)."""

    __slots__ = ("backward", "ctx", "inputs", "num_outputs")

    def __init__(self, backward, ctx, inputs, num_outputs):
        self.backward, self.ctx, self.inputs, self.num_outputs = backward, ctx, inputs, num_outputs


class Function:
    """An operation with a hand-written backward. Subclasses define two static methods:

        forward(ctx, *arrays, **params) -> array (or a tuple of arrays)
        backward(ctx, grad) -> one gradient (or None) per array input
                              (backward(ctx, *grads) for a forward that returns a tuple)
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
        ctx.needs_input_grad = tuple(isinstance(x, Tensor) and x.requires_grad for x in inputs)
        out = cls.forward(ctx, *arrays, **params)
        outs = out if isinstance(out, tuple) else (out,)
        node = None
        if any(ctx.needs_input_grad) and is_grad_enabled():
            node = Node(cls.backward, ctx, inputs, len(outs))
        results = tuple(Tensor._from_function(o, node, i) for i, o in enumerate(outs))
        return results if isinstance(out, tuple) else results[0]


class KernelOp(Function):
    """A fused op whose forward and backward are the registry's current kernels for `op`:

        out, cache = kernel.forward(*arrays, **params);   grads = kernel.backward(grad, cache)
    """

    op: str = ""
    strided = False  # True where the GPU kernels of `op` read strided views themselves (attention's q, k, v)

    @classmethod
    def apply(cls, *inputs, **params):
        return super().apply(*_on_one_device(cls.op, inputs), **params)

    @classmethod
    def forward(cls, ctx, *arrays, **params):
        ctx.impl = kernels.get(cls.op, device_of(arrays[0]))
        # A strided op's GPU kernels, and the CPU kernels registered with strided=True (attention
        # cpu_v5), read the views where they lie; the other CPU kernels get C-contiguous copies
        # (Numba compiles their loops for dense arrays; kernels/cpu/attention.py has the story).
        ctx.strided = cls.strided and (ctx.impl.device == "gpu" or ctx.impl.strided)
        if not ctx.strided:
            arrays = [_contiguous(a) if a is not None and a.dtype.kind == "f" else a for a in arrays]
        out, ctx.cache = ctx.impl.forward(*arrays, **params)
        return out

    @staticmethod
    def backward(ctx, grad):
        return ctx.impl.backward(grad if ctx.strided else _contiguous(grad), ctx.cache)


def _on_one_device(op, inputs):
    """The inputs of a kernel op, all on one device: when one is on the GPU, NumPy arrays and
    tensors without a gradient are copied there; a parameter (or any tensor that needs a
    gradient) on the CPU is an error, since copying it would cut it off from its gradient."""
    if not any(device_of(x.data if isinstance(x, Tensor) else x) == "gpu" for x in inputs):
        return inputs
    moved = []
    for x in inputs:
        a = x.data if isinstance(x, Tensor) else x
        if not _is_array(a) or device_of(a) == "gpu":
            moved.append(x)
        elif isinstance(x, Tensor) and x.requires_grad:
            raise RuntimeError(f"{op}: an input of shape {tuple(a.shape)} that needs a gradient is on the CPU while "
                               "others are on the GPU; move the model with model.to('cuda') (or that tensor "
                               "with .to('cuda'), which keeps its gradient)")
        else:
            moved.append(to_device(a, "gpu"))
    return tuple(moved)


def _contiguous(a):
    """Kernels take C-contiguous arrays (Numba compiles one version per memory layout)."""
    if a.ndim == 0 or a.flags.c_contiguous:  # ascontiguousarray would turn 0-d into 1-d
        return a
    return array_module(a).ascontiguousarray(a)


class Tensor:
    """An array with a gradient. `data` is a NumPy (or CuPy) array; `grad` an array of the same
    shape once backward has reached this tensor; `_node` the Node that made it (None for a leaf)
    and `_output` which of that Node's outputs it is."""

    __slots__ = ("data", "grad", "requires_grad", "_node", "_output", "__weakref__")
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
        self._output = 0

    @classmethod
    def _from_function(cls, data, node, output):
        t = cls(data)
        if node is not None:
            t.requires_grad, t._node, t._output = True, node, output
        return t

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
        return to_host(self.data)

    def item(self):
        """The value of a one-element tensor as a Python number (a copy from the GPU if needed)."""
        return self.data.item()

    def to(self, device):
        """This tensor on `device` ("cpu", "cuda"): itself when already there, else a copy whose
        gradient flows back to this tensor's device."""
        if device_of(self.data) == _device.resolve(device):
            return self
        return ToDevice.apply(self, device=_device.require(device))

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
        if self._node is None:  # backward on a leaf: its gradient is the one given
            _accumulate(self, grad)
            return
        pending = {}  # id(node) -> list with the gradient of each of its outputs (None: none yet)
        _add_output_grad(pending, self, grad)
        for node in _topological_order(self._node):
            grads = pending.pop(id(node), None)
            if grads is None:  # no path from self reached this node's outputs
                continue
            if node.backward is None:
                raise RuntimeError("backward() through a graph that was already freed by an earlier "
                                   "backward(); recompute the forward pass")
            backward, ctx, inputs = node.backward, node.ctx, node.inputs
            node.backward, node.ctx, node.inputs = None, None, ()  # free the graph as we go
            in_grads = backward(ctx, *grads) if node.num_outputs > 1 else backward(ctx, grads[0])
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            for x, gx in zip(inputs, in_grads):
                if gx is None or not isinstance(x, Tensor) or not x.requires_grad:
                    continue
                if gx.shape != x.data.shape:
                    gx = unbroadcast(gx, x.data.shape)
                if gx.dtype != x.data.dtype:
                    gx = gx.astype(x.data.dtype)
                if x._node is None:
                    _accumulate(x, gx)
                else:
                    _add_output_grad(pending, x, gx)

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
        if isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        elif isinstance(index, Tensor):
            index = index.data
        return GetItem.apply(self, index=index)

    def unbind(self, axis=0):
        """The slices along `axis` as a tuple of tensors (views): q, k, v = qkv.unbind(0)."""
        return Unbind.apply(self, axis=axis)

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


def _accumulate(leaf, grad):
    """leaf.grad += grad, the first time as a private copy (grad may be a view, or shared)."""
    leaf.grad = grad.copy() if leaf.grad is None else leaf.grad + grad


def _add_output_grad(pending, t, grad):
    """Add `grad` to the gradient collected so far for output `t._output` of `t._node`."""
    grads = pending.setdefault(id(t._node), [None] * t._node.num_outputs)
    i = t._output
    grads[i] = grad if grads[i] is None else grads[i] + grad


def _topological_order(root):
    """Nodes reachable from root, each after every node that uses its outputs (iterative DFS)."""
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
        for x in node.inputs:
            if isinstance(x, Tensor) and x._node is not None and id(x._node) not in visited:
                stack.append((x._node, False))
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


class MatMul(KernelOp):
    """a @ b with NumPy's broadcasting and 1-D rules: the registry's `matmul` kernel."""

    op = "matmul"


class Unbind(Function):
    """a -> (a[0], a[1], ...) along `axis`, as views. Backward writes the gradients into one
    array laid out in memory like `a` (often a transposed view, such as the heads of a qkv
    projection), so that undoing the transpose and reshape before it needs no copy."""

    @staticmethod
    def forward(ctx, a, axis=0):
        axis = axis % a.ndim
        ctx.shape, ctx.dtype, ctx.axis = a.shape, a.dtype, axis
        ctx.memory_order = np.argsort([-abs(s) for s in a.strides], kind="stable")  # outermost axis first
        return tuple(a[(slice(None),) * axis + (i,)] for i in range(a.shape[axis]))

    @staticmethod
    def backward(ctx, *grads):
        xp = array_module(next(g for g in grads if g is not None))
        stacked = _slices_of_one_array(grads, ctx.shape, ctx.axis, ctx.dtype)
        if stacked is not None:  # a kernel already wrote them side by side (attention cpu_v5's dq, dk, dv)
            return stacked
        order = ctx.memory_order
        out = xp.empty([ctx.shape[i] for i in order], dtype=ctx.dtype).transpose(np.argsort(order))
        for i, g in enumerate(grads):
            out[(slice(None),) * ctx.axis + (i,)] = 0 if g is None else g
        return out


def _slices_of_one_array(grads, shape, axis, dtype):
    """The array of `shape` and `dtype` whose slices along `axis` are exactly `grads`, as a view
    (kernels.views.stacked_view), or None."""
    stacked = stacked_view(grads, axis)
    return stacked if stacked is not None and stacked.dtype == dtype and stacked.shape == tuple(shape) else None


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


class ToDevice(Function):
    @staticmethod
    def forward(ctx, a, device):
        ctx.device = device_of(a)
        return to_device(a, device)

    @staticmethod
    def backward(ctx, grad):
        return to_device(grad, ctx.device)


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
