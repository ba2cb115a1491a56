# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Autograd from scratch
#
# **Goal.** Understand how minivit computes gradients, by building a tiny reverse-mode autograd
# engine on scalars, then reading minivit's `Tensor` as the same idea on arrays, and prove with
# checks that the gradients of the ops a ViT is made of (linear, LayerNorm, softmax, GELU,
# attention) match central finite differences.
#
# Training a ViT (notebook 05) is gradient descent on the loss; the paper takes the gradients
# for granted. minivit writes every backward by hand, right beside its forward, so the checks
# below are what makes the rest trustworthy.
# Topics: the machinery under T3-T4 and T10. Time: a few seconds.

# %%
import contextlib
import math

import numpy as np

import kernels
import minivit
from minivit import Function, Tensor
from minivit import functional as F

rng = np.random.default_rng(0)

# %% [markdown]
# ## A scalar engine
#
# Reverse mode in one sentence: run the computation forward, remembering for every result the
# values it was made from and how to push a gradient back to them; then, starting from the
# output with gradient 1, visit the results in reverse topological order and apply the chain
# rule, `parent.grad += d(result)/d(parent) * result.grad`. The `+=` matters: a value used
# twice receives a gradient from each use.
#
# `Value` below (in the spirit of micrograd) holds one float. Addition is written out; its
# backward sits right below its forward.

# %%
class Value:
    """A scalar with a gradient: `data`, `grad`, the values it was made from (`parents`) and
    `_backward`, which pushes this value's grad into its parents' grads."""

    def __init__(self, data, parents=()):
        self.data, self.grad = float(data), 0.0
        self.parents = parents
        self._backward = lambda: None

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other))

        def backward():  # d(a + b)/da = d(a + b)/db = 1
            self.grad += out.grad
            other.grad += out.grad

        out._backward = backward
        return out

    __radd__ = __add__

    def backward(self):
        """Fill .grad of every value this one depends on with d(self)/d(value)."""
        order, seen = [], set()

        def visit(v):  # depth-first: a value lands in `order` after everything it was made from
            if id(v) not in seen:
                seen.add(id(v))
                for p in v.parents:
                    visit(p)
                order.append(v)

        visit(self)
        self.grad = 1.0
        for v in reversed(order):  # reverse topological order: every user before what it uses
            v._backward()

    def __repr__(self):
        return f"Value({self.data:.4f}, grad={self.grad:.4f})"


# %% [markdown]
# **Exercise 1.** Give `Value` multiplication and tanh: write `value_mul(a, b)` and
# `value_tanh(a)`, each building its output and its `backward` closure, as `__add__` does.
# d(ab)/da = b, d(ab)/db = a; d tanh(a)/da = 1 - tanh(a)^2.
#
# The check that follows: a neuron, y = tanh(w1 x1 + w2 x2 + b) * x1, with x1 used twice. Its
# gradients from our engine must match central differences of the same formula in plain Python,
# and minivit's `Tensor` (float64) must give the same numbers.

# %% tags=["solution"]
def value_mul(a, b):
    b = b if isinstance(b, Value) else Value(b)
    out = Value(a.data * b.data, (a, b))

    def backward():
        a.grad += b.data * out.grad
        b.grad += a.data * out.grad

    out._backward = backward
    return out


def value_tanh(a):
    t = math.tanh(a.data)
    out = Value(t, (a,))

    def backward():
        a.grad += (1.0 - t * t) * out.grad

    out._backward = backward
    return out


Value.__mul__ = Value.__rmul__ = value_mul
Value.tanh = value_tanh

# %%
inputs = {"x1": 0.7, "x2": -1.3, "w1": 0.4, "w2": 0.9, "b": 0.1}


def neuron(x1, x2, w1, w2, b):
    return (w1 * x1 + w2 * x2 + b).tanh() * x1


vals = {k: Value(v) for k, v in inputs.items()}
y = neuron(**vals)
y.backward()


def neuron_float(**kw):
    return math.tanh(kw["w1"] * kw["x1"] + kw["w2"] * kw["x2"] + kw["b"]) * kw["x1"]


eps = 1e-6
tensors = {k: Tensor(np.float64(v), requires_grad=True) for k, v in inputs.items()}
neuron(**tensors).backward()
for k in inputs:
    up, down = dict(inputs), dict(inputs)
    up[k] += eps
    down[k] -= eps
    numeric = (neuron_float(**up) - neuron_float(**down)) / (2 * eps)
    print(f"d y / d {k:2s}: engine {vals[k].grad:+.8f}  central difference {numeric:+.8f}  "
          f"minivit {float(tensors[k].grad):+.8f}")
    assert abs(vals[k].grad - numeric) < 1e-8
    assert abs(float(tensors[k].grad) - vals[k].grad) < 1e-12
assert abs(y.data - neuron_float(**inputs)) < 1e-15

# %% [markdown]
# ## Numerical gradients
#
# Central differences, (f(x + eps) - f(x - eps)) / (2 eps), have an error that shrinks like
# eps^2 (the eps^1 terms of the two Taylor expansions cancel), until rounding error, which grows
# like 1/eps, takes over. In float64 eps = 1e-6 leaves an error of about 1e-9 or less: that is
# the ruler every gradient below is measured with.
#
# **Exercise 2.** Write `numerical_grad(f, x, eps)`: the gradient of the scalar function
# `f(x)` with respect to every element of the array `x`, by central differences. Change one
# element at a time in place, and put it back afterwards.

# %% tags=["solution"]
def numerical_grad(f, x, eps=1e-6):
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f(x)
        x[i] = old - eps
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


# %%
x = rng.normal(size=(3, 4))


def f(x):
    return float(np.sum(np.sin(x) * x))


exact = np.cos(x) * x + np.sin(x)  # d/dx (x sin x)
errors = {e: np.abs(numerical_grad(f, x.copy(), e) - exact).max() for e in (1e-2, 1e-3, 1e-6)}
print({e: f"{err:.1e}" for e, err in errors.items()})
assert errors[1e-2] / errors[1e-3] > 50  # ten times smaller eps, about a hundred times smaller error
assert errors[1e-6] < 1e-8

# %% [markdown]
# ## minivit's Tensor: the same idea on arrays
#
# `minivit.Tensor` wraps one NumPy array; every operation is a `Function` whose
# `forward(ctx, *arrays)` and `backward(ctx, grad)` sit side by side (minivit/autograd.py).
# `Function.apply` runs the forward and records a node (the backward, its `ctx`, the inputs);
# `Tensor.backward()` visits the nodes in reverse topological order, exactly like
# `Value.backward`, but each gradient is an array. Here is a new op written the way every
# minivit op is: the logistic sigmoid, whose backward reuses the saved output.

# %%
class Sigmoid(Function):
    @staticmethod
    def forward(ctx, a):
        out = 1.0 / (1.0 + np.exp(-a))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved
        return grad * out * (1.0 - out)  # d sigmoid = sigmoid (1 - sigmoid)


a = rng.normal(size=(2, 5))
R = rng.normal(size=(2, 5))  # a fixed upstream gradient: L = sum(sigmoid(a) * R)
t = Tensor(a.copy(), requires_grad=True)
(Sigmoid.apply(t) * R).sum().backward()
numeric = numerical_grad(lambda a: float(np.sum(Sigmoid.apply(Tensor(a)).data * R)), a.copy())
assert np.allclose(t.grad, numeric, atol=1e-9)
print("Sigmoid backward matches central differences")

# %% [markdown]
# Two details every array autograd needs, both visible in `Tensor.backward`:
#
# * **Broadcasting is undone.** A bias of shape (D,) added to tokens (B, N, D) is used B*N
#   times; its gradient is the sum of the B*N upstream gradients, reduced back to (D,).
# * **Gradients accumulate.** A tensor used twice gets the sum of both contributions, and a
#   second `backward()` adds to `.grad` until you reset it (`zero_grad()` in a training loop).

# %%
tokens = Tensor(rng.normal(size=(2, 3, 4)), requires_grad=True)  # (B, N, D)
bias = Tensor(rng.normal(size=(4,)), requires_grad=True)  # (D,)
upstream = rng.normal(size=(2, 3, 4))
((tokens + bias) * upstream).sum().backward()
assert bias.grad.shape == (4,) and np.allclose(bias.grad, upstream.sum(axis=(0, 1)))

u = Tensor(np.array([1.5, -2.0]), requires_grad=True)
(u * u).sum().backward()  # u used twice: d(u^2)/du = 2u
assert np.allclose(u.grad, 2 * u.data)
(u * 3.0).sum().backward()  # a second backward adds
assert np.allclose(u.grad, 2 * u.data + 3.0)
print("broadcast gradients reduced, repeated uses accumulated")

# %% [markdown]
# ## Gradient checks of the ViT's ops
#
# A ViT needs few fused ops: linear, LayerNorm, softmax, GELU and attention (plus the patch
# embedding of notebook 01 and the loss of notebook 05). Each runs a kernel from minivit's
# registry (kernels/registry.py): by default a CPU version from kernels/cpu/ (Numba, or BLAS
# for the products), or its plain NumPy reference inside `kernels.use("reference")`. For each
# op and for both, we take float64 inputs, a random upstream gradient R, and compare the
# backward's gradient of L = sum(op * R) for every input with central differences. Attention is
# checked twice: the fused kernel (`F.scaled_dot_product_attention`; the flash-style default
# never forms the N x N matrix) and the same formula composed from primitives,
# softmax(q k^T / sqrt(hd)) v.

# %%
def composed_attention(q, k, v):
    scale = 1.0 / math.sqrt(q.shape[-1])
    return F.softmax((q @ k.transpose(0, 1, 3, 2)) * scale) @ v


OPS = {  # name: (function of tensors, input shapes, the registry op whose kernel runs)
    "linear": (F.linear, [(3, 4, 6), (5, 6), (5,)], "linear"),  # x (B, N, Din), weight (Dout, Din), bias
    "layernorm": (lambda x, w, b: F.layer_norm(x, w, b), [(3, 4, 6), (6,), (6,)], "layernorm"),
    "softmax": (F.softmax, [(3, 4, 6)], "softmax"),
    "gelu": (F.gelu, [(3, 4, 6)], "gelu"),
    "attention (fused)": (F.scaled_dot_product_attention, [(2, 2, 5, 4)] * 3, "attention"),  # q, k, v (B, Hh, N, hd)
    "attention (composed)": (composed_attention, [(2, 2, 5, 4)] * 3, "softmax"),  # and matmul
}


def max_relative_error(fn, shapes):
    arrays = [rng.normal(size=s) for s in shapes]
    ts = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*ts)
    R = rng.normal(size=out.shape)
    out.backward(R)
    worst = 0.0
    for i, a in enumerate(arrays):
        def loss(ai, i=i):
            with minivit.no_grad():
                return float(np.sum(fn(*[Tensor(ai if j == i else b) for j, b in enumerate(arrays)]).data * R))

        numeric = numerical_grad(loss, a.copy())
        worst = max(worst, np.abs(ts[i].grad - numeric).max() / (np.abs(numeric).max() + 1e-12))
    return worst


results = {}
for mode in ["default", "reference"]:
    # kernels.use(...) applies its choice when called and restores the previous one on exit
    with kernels.use("reference") if mode == "reference" else contextlib.nullcontext():
        for name, (fn, shapes, op) in OPS.items():
            results[name, mode] = max_relative_error(fn, shapes)
            print(f"{name:22s} {mode:9s} ({kernels.selection()[op]:9s}) max relative error "
                  f"{results[name, mode]:.1e}")
assert all(err < 1e-7 for err in results.values())

# %% [markdown]
# Every gradient agrees with finite differences to about 1e-9 or better, for the Numba kernels
# and their NumPy references alike. Checks like these, in float64 where finite differences are
# accurate, are what the test suite runs for every kernel (tests/test_functional.py,
# tests/test_kernels_cpu*.py); training itself runs in float32.
#
# Next: **03 · attention**, the op whose gradient we just checked, taken apart.
