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
# **Goal.** Build reverse-mode automatic differentiation yourself, first on scalars and then on
# arrays, and derive by hand the backward passes of the ops a ViT is made of. The checks prove:
#
# 1. a scalar engine of a few dozen lines (add, mul, pow, exp, tanh and a `backward()` that
#    visits the graph in reverse topological order) gives the gradients of central differences
#    and of minivit, and trains a tiny MLP whose loss visibly falls;
# 2. minivit's `Tensor` is the same idea on arrays: the same MLP written with tensors gets the
#    same gradients, with broadcasting undone in the backward;
# 3. your backward passes of softmax, LayerNorm, GELU and attention, the ops of the encoder
#    (Sec. 3.1, Eq. 2-3; Appendix A), match central differences in float64 and minivit's own
#    backward, closely enough that a derivation with one term missing fails.
#
# Training a ViT (notebook 05) is gradient descent on the loss; the paper takes the gradients
# for granted. minivit writes every backward by hand next to its forward, and here you do too.
# Topics: the machinery under T3-T4 and T10. Time: a few seconds.

# %%
import contextlib
import math

import numpy as np
from scipy.special import erf

import kernels
import minivit
from minivit import Function, Tensor
from minivit import functional as F
from minivit.analysis.plots import Figure

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
# `Value` below (in the spirit of micrograd) holds one float. Addition and multiplication are
# written out, each with its backward right below its forward; subtraction and division are
# built from them (and from the power you write next).

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

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other))

        def backward():  # d(ab)/da = b, d(ab)/db = a
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = backward
        return out

    __radd__ = __add__
    __rmul__ = __mul__

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return other + (-self)

    def __truediv__(self, other):  # a / b = a * b^-1: needs the power (Exercise 1) when b is a Value
        return self * other**-1.0

    def __rtruediv__(self, other):
        return other * self**-1.0

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
# **Exercise 1.** Give `Value` three more operations: `value_pow(a, k)` for a constant Python
# number k, `value_exp(a)` and `value_tanh(a)`. Each computes its output's value, makes
# `out = Value(..., (a,))` and attaches a `backward` closure that *adds* d(out)/d(a) * out.grad
# to `a.grad`, as `__mul__` does. Derive each local derivative yourself (tanh's is neatest
# written with the forward's output).
#
# The check attaches your functions to `Value` and differentiates, for each op, an expression in
# which its input is also used elsewhere, so that a gradient that is assigned instead of added
# shows up. Then a neuron using every op is compared with central differences and with
# minivit's `Tensor`.

# %% tags=["solution"]
def value_pow(a, k):
    out = Value(a.data**k, (a,))

    def backward():
        a.grad += k * a.data ** (k - 1) * out.grad

    out._backward = backward
    return out


def value_exp(a):
    e = math.exp(a.data)
    out = Value(e, (a,))

    def backward():
        a.grad += e * out.grad

    out._backward = backward
    return out


def value_tanh(a):
    t = math.tanh(a.data)
    out = Value(t, (a,))

    def backward():
        a.grad += (1.0 - t * t) * out.grad

    out._backward = backward
    return out


# %%
Value.__pow__ = value_pow
Value.exp = value_exp
Value.tanh = value_tanh
eps = 1e-6
ops = {  # name: (on a Value, on a float)
    "a**3": (lambda v: v**3, lambda x: x**3),
    "a**-0.5": (lambda v: v**-0.5, lambda x: x**-0.5),
    "exp(a)": (lambda v: v.exp(), math.exp),
    "tanh(a)": (lambda v: v.tanh(), math.tanh),
}
for name, (on_value, on_float) in ops.items():
    a = Value(0.7)
    (on_value(a) * a + on_value(a)).backward()  # a feeds three operations: its gradient must add up

    def g(x):
        return on_float(x) * x + on_float(x)

    numeric = (g(0.7 + eps) - g(0.7 - eps)) / (2 * eps)
    print(f"d/da [{name} * a + {name}] at a = 0.7: engine {a.grad:+.8f}, central difference {numeric:+.8f}")
    assert abs(a.grad - numeric) < 1e-7, name

inputs = {"x1": 0.7, "x2": -1.3, "w1": 0.4, "w2": 0.9, "b": 0.1}


def neuron(x1, x2, w1, w2, b):  # Values or minivit Tensors
    return ((w1 * x1 + w2 * x2 + b).tanh() * x1 + (w2 * x2).exp()) / (b**2 + 1.0)


def neuron_float(x1, x2, w1, w2, b):
    return (math.tanh(w1 * x1 + w2 * x2 + b) * x1 + math.exp(w2 * x2)) / (b**2 + 1.0)


vals = {k: Value(v) for k, v in inputs.items()}
y = neuron(**vals)
y.backward()
tensors = {k: Tensor(np.float64(v), requires_grad=True) for k, v in inputs.items()}
neuron(**tensors).backward()
assert abs(y.data - neuron_float(**inputs)) < 1e-15
for k in inputs:
    up, down = dict(inputs), dict(inputs)
    up[k] += eps
    down[k] -= eps
    numeric = (neuron_float(**up) - neuron_float(**down)) / (2 * eps)
    print(f"d y / d {k:2s}: engine {vals[k].grad:+.8f}  central difference {numeric:+.8f}  "
          f"minivit {float(tensors[k].grad):+.8f}")
    assert abs(vals[k].grad - numeric) < 1e-8
    assert abs(float(tensors[k].grad) - vals[k].grad) < 1e-12

# %% [markdown]
# ## A tiny MLP, trained with the engine
#
# A neuron is tanh(w . x + b); a layer is a list of neurons; an MLP is a list of layers. Every
# weight is a `Value`, so one call of `backward()` on the loss fills every weight's gradient,
# and a step of gradient descent is `w.data -= lr * w.grad` for every weight, after which the
# gradients are set back to zero (they would otherwise add up over steps).
#
# The toy problem: 12 points in the plane, labelled by the sign of x1 * x2 (the XOR pattern of
# the four quadrants), which no single linear neuron can separate. The loss is the sum of
# squared errors against the labels -1 and +1.
#
# **Predict, then run.** The MLP below has one hidden layer of 5 tanh neurons. Before running
# the next cell, predict: how does the loss move over 100 steps (smoothly down, or in jumps),
# and how many of the 12 points end on the right side of zero?

# %%
class Neuron:
    def __init__(self, n_in, nonlinear=True):
        self.w = [Value(rng.uniform(-1, 1)) for _ in range(n_in)]
        self.b = Value(0.0)
        self.nonlinear = nonlinear

    def __call__(self, x):
        act = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
        return act.tanh() if self.nonlinear else act

    def parameters(self):
        return self.w + [self.b]


class MLP:
    """Layers of neurons: sizes (2, 5, 1) is 2 inputs, 5 tanh neurons, 1 linear output."""

    def __init__(self, sizes):
        self.layers = [[Neuron(n_in, nonlinear=i < len(sizes) - 2) for _ in range(n_out)]
                       for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]))]

    def __call__(self, x):
        for layer in self.layers:
            x = [neuron(x) for neuron in layer]
        return x[0]

    def parameters(self):
        return [p for layer in self.layers for neuron in layer for p in neuron.parameters()]


points = rng.uniform(-1, 1, size=(12, 2))
points += 0.2 * np.sign(points)  # keep the points away from the axes
labels = np.sign(points[:, 0] * points[:, 1])  # +1 in two quadrants, -1 in the other two
mlp = MLP((2, 5, 1))
start_weights = [p.data for p in mlp.parameters()]  # kept for the tensor version below


def mlp_loss(mlp):
    return sum(((mlp(list(x)) - t) ** 2 for x, t in zip(points, labels)), Value(0.0))


losses = []
for step in range(100):
    loss = mlp_loss(mlp)
    for p in mlp.parameters():
        p.grad = 0.0
    loss.backward()
    for p in mlp.parameters():
        p.data -= 0.03 * p.grad
    losses.append(loss.data)
right = sum((mlp(list(x)).data > 0) == (t > 0) for x, t in zip(points, labels))
print(f"{len(mlp.parameters())} weights; loss {losses[0]:.2f} -> {losses[-1]:.3f}; "
      f"{right} of {len(points)} points right")
assert losses[-1] < 0.1 * losses[0]
assert right == len(points)

fig = Figure(figsize=(5, 3))
ax = fig.add_subplot()
ax.plot(losses)
ax.set(xlabel="step", ylabel="sum of squared errors", yscale="log", title="a 2-5-1 MLP of Values learns XOR")
fig

# %% [markdown]
# ## Numerical gradients
#
# Central differences, (f(x + eps) - f(x - eps)) / (2 eps), have an error that shrinks like
# eps^2 (the eps^1 terms of the two Taylor expansions cancel), until rounding error, which grows
# like 1/eps, takes over. In float64, eps = 1e-6 leaves an error of a few 1e-9 at most: that is
# the ruler every array gradient below is measured with.
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


def f(x):  # every element's gradient depends on all the others, through the sum
    return float(np.sum(np.sin(x) * x) + np.sum(x) ** 2 / 10)


exact = np.cos(x) * x + np.sin(x) + np.sum(x) / 5
errors = {}
for e in (1e-2, 1e-3, 1e-6):
    x_given = x.copy()
    errors[e] = np.abs(numerical_grad(f, x_given, e) - exact).max()
    assert np.array_equal(x_given, x)  # every element put back
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
# The MLP of Values, written with tensors: the 12 points are one (12, 2) array, each layer one
# matrix and one bias vector, and every scalar operation of the engine becomes an array
# operation. The bias of shape (5,) is added to a (12, 5) array, so it is used 12 times: its
# gradient is the sum of the 12 rows of the upstream gradient. `Tensor.backward` undoes
# broadcasting that way for every op. Starting from the same weights as the engine's MLP, the
# two must agree on the loss and on every gradient.

# %%
engine = MLP((2, 5, 1))
for p, w in zip(engine.parameters(), start_weights):
    p.data = w
loss = mlp_loss(engine)
loss.backward()
(hidden, out_layer) = engine.layers
W1 = Tensor(np.array([[n.w[j].data for n in hidden] for j in range(2)]), requires_grad=True)  # (2, 5)
b1 = Tensor(np.array([n.b.data for n in hidden]), requires_grad=True)  # (5,)
W2 = Tensor(np.array([[w.data] for w in out_layer[0].w]), requires_grad=True)  # (5, 1)
b2 = Tensor(np.array([out_layer[0].b.data]), requires_grad=True)  # (1,)
pred = (Tensor(points) @ W1 + b1).tanh() @ W2 + b2  # (12, 1)
tensor_loss = ((pred - Tensor(labels[:, None])) ** 2).sum()
tensor_loss.backward()
assert abs(tensor_loss.item() - loss.data) < 1e-12
assert np.allclose(W1.grad, [[n.w[j].grad for n in hidden] for j in range(2)], atol=1e-12)
assert b1.grad.shape == (5,) and np.allclose(b1.grad, [n.b.grad for n in hidden], atol=1e-12)
assert np.allclose(W2.grad[:, 0], [w.grad for w in out_layer[0].w], atol=1e-12)
print("the MLP as tensors: the same loss and the same gradients as the engine of Values")

# %% [markdown]
# The other rule of the engine holds for tensors too: **gradients accumulate**. A tensor used
# twice gets the sum of both contributions, and a second `backward()` adds to `.grad` until you
# reset it (`zero_grad()` in a training loop).

# %%
u = Tensor(np.array([1.5, -2.0]), requires_grad=True)
(u * u).sum().backward()  # u used twice: d(u^2)/du = 2u
assert np.allclose(u.grad, 2 * u.data)
(u * 3.0).sum().backward()  # a second backward adds
assert np.allclose(u.grad, 2 * u.data + 3.0)
print("repeated uses and repeated backward passes accumulate")

# %% [markdown]
# ## Deriving the backward passes of a ViT's ops
#
# A ViT needs few fused ops: linear, LayerNorm, softmax, GELU and attention (plus the patch
# embedding of notebook 01 and the loss of notebook 05). Composing each from elementwise tensor
# operations would work, but would record and keep many intermediate arrays; minivit gives each
# its own hand-derived backward instead. You derive four of them now.
#
# Each op is given by its forward on float64 NumPy arrays. Your backward receives the upstream
# gradient `g` = dL/d(output), of the output's shape, plus what it needs of the forward, and returns
# dL/d(input) for every input. The checks use L = sum(output * R) for a random R (so that
# dL/d(output) = R), compare your gradients with `numerical_grad` for every input, and with
# minivit's backward of the same op. `relative_errors` does the first part.

# %%
def relative_errors(loss, inputs, grads):
    """For each input array: max |grad - central difference| / max |central difference|, the
    central differences taken of the scalar loss(*inputs) with respect to that input."""
    errors = []
    for i, (x, g) in enumerate(zip(inputs, grads)):
        def loss_i(xi, i=i):
            return loss(*[xi if j == i else a for j, a in enumerate(inputs)])

        numeric = numerical_grad(loss_i, x.copy())
        errors.append(np.abs(g - numeric).max() / np.abs(numeric).max())
    return errors


def softmax_forward(x):
    """Softmax over the last axis, (..., N) -> (..., N); its output is all the backward needs."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# %% [markdown]
# ### Softmax
#
# **Exercise 3.** For one row, y_i = exp(x_i) / sum_k exp(x_k). Start from the partial
# derivatives dy_i/dx_j (the cases i = j and i != j differ), then contract them with the upstream
# gradient: dx_j = sum_i g_i dy_i/dx_j. Simplify until no N x N matrix is left, and write
# `softmax_backward(y, g)` for arrays of shape (..., N), all rows at once.
#
# **Predict, then run.** Adding the same number to every logit of a row leaves its softmax
# unchanged. What must then be true of each row of dx? The check tests your prediction.

# %% tags=["solution"]
def softmax_backward(y, g):
    return y * (g - (g * y).sum(axis=-1, keepdims=True))


# %%
x = 2.0 * rng.normal(size=(3, 6))
R = rng.normal(size=(3, 6))
dx = softmax_backward(softmax_forward(x), R)
(err,) = relative_errors(lambda x: float(np.sum(softmax_forward(x) * R)), [x], [dx])
t = Tensor(x.copy(), requires_grad=True)
F.softmax(t).backward(R)
print(f"softmax backward: relative error {err:.1e}; sums of the rows of dx {np.abs(dx.sum(axis=-1)).max():.1e}")
assert err < 1e-6
assert np.allclose(dx, t.grad, rtol=1e-10, atol=1e-12)  # minivit's backward
assert np.allclose(dx.sum(axis=-1), 0.0, atol=1e-12)  # shifting a row changes nothing: dx sums to 0

# %% [markdown]
# ### LayerNorm
#
# LayerNorm (before every attention and MLP sub-block, Eq. 2-3) normalises each token over its
# D features, then scales and shifts with learned w and b of shape (D,):

# %%
def layernorm_forward(x, w, b, eps=1e-6):
    """x (..., D), w (D,), b (D,) -> y (..., D), and what the backward needs."""
    mu = x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + eps)  # (..., 1)
    xhat = (x - mu) * rstd
    return xhat * w + b, (xhat, rstd)


# %% [markdown]
# **Exercise 4.** Write `layernorm_backward(g, xhat, rstd, w)`, returning `(dx, dw, db)`.
#
# * y = w * xhat + b acts on xhat elementwise, so dL/dxhat is easy; w and b are shared by every
#   token of the batch, so their gradients collect a contribution from every row.
# * For dx, write one row as xhat_j = (x_j - mu) * r, with mu = mean_k x_k and
#   r = (mean_k (x_k - mu)^2 + eps)^(-1/2): both mu and r depend on *every* x_k of the row.
#   Derive dmu/dx_k and dr/dx_k, then dxhat_j/dx_k, contract with dL/dxhat, and simplify the
#   result into row means of expressions in xhat, r and dL/dxhat.
#
# **Predict, then run.** A row's output does not change if you add a constant to that row of x,
# and changes very little if you multiply the row by a positive number (only through eps).
# Predict two sums over each row of dx that must (nearly) vanish.

# %% tags=["solution"]
def layernorm_backward(g, xhat, rstd, w):
    gh = g * w  # dL/dxhat
    dx = rstd * (gh - gh.mean(axis=-1, keepdims=True) - xhat * (gh * xhat).mean(axis=-1, keepdims=True))
    rows = g.reshape(-1, g.shape[-1])
    return dx, (rows * xhat.reshape(rows.shape)).sum(axis=0), rows.sum(axis=0)


# %%
x = 1.5 * rng.normal(size=(2, 3, 8)) + 0.5  # (B, N, D)
w, b = 1.0 + 0.3 * rng.normal(size=8), 0.3 * rng.normal(size=8)
R = rng.normal(size=(2, 3, 8))
xhat, rstd = layernorm_forward(x, w, b)[1]
grads = layernorm_backward(R, xhat, rstd, w)
errs = relative_errors(lambda x, w, b: float(np.sum(layernorm_forward(x, w, b)[0] * R)), [x, w, b], grads)
ts = [Tensor(a.copy(), requires_grad=True) for a in (x, w, b)]
F.layer_norm(*ts).backward(R)
print("LayerNorm backward, relative errors of dx, dw, db:", ", ".join(f"{e:.1e}" for e in errs))
assert max(errs) < 1e-6
for mine, theirs in zip(grads, ts):
    assert mine.shape == theirs.grad.shape and np.allclose(mine, theirs.grad, rtol=1e-8, atol=1e-10)
dx = grads[0]
assert np.allclose(dx.sum(axis=-1), 0.0, atol=1e-10)  # shifting a row changes nothing
assert np.allclose((dx * xhat).sum(axis=-1), 0.0, atol=1e-5)  # scaling it changes nothing but through eps

# %% [markdown]
# ### GELU
#
# The MLP of every block is two linear layers with a GELU between them (Sec. 3.1). minivit uses
# the exact GELU, as timm does, rather than its tanh approximation: GELU(x) = x Phi(x), with Phi
# the standard normal CDF, Phi(x) = (1 + erf(x / sqrt 2)) / 2.

# %%
def gelu_forward(x):
    return x * 0.5 * (1.0 + erf(x / math.sqrt(2.0)))


# %% [markdown]
# **Exercise 5.** Write `gelu_backward(g, x)`. You need one fact besides the rules of calculus:
# d erf(z)/dz = (2 / sqrt(pi)) exp(-z^2).
#
# **Predict, then run.** GELU is close to 0 for very negative x and close to x for very
# positive x. Is its slope ever negative? Is it ever above 1? The check measures both on your
# backward.

# %% tags=["solution"]
def gelu_backward(g, x):
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)  # Phi'(x)
    return g * (0.5 * (1.0 + erf(x / math.sqrt(2.0))) + x * pdf)


# %%
x = 2.0 * rng.normal(size=(3, 7))
R = rng.normal(size=(3, 7))
dx = gelu_backward(R, x)
(err,) = relative_errors(lambda x: float(np.sum(gelu_forward(x) * R)), [x], [dx])
t = Tensor(x.copy(), requires_grad=True)
F.gelu(t).backward(R)
assert err < 1e-6
assert np.allclose(dx, t.grad, rtol=1e-10, atol=1e-12)
grid = np.linspace(-4, 4, 801)
slope = gelu_backward(np.ones_like(grid), grid)
print(f"GELU backward: relative error {err:.1e}; slope from {slope.min():.3f} (at x = {grid[slope.argmin()]:.2f}) "
      f"to {slope.max():.3f} (at x = {grid[slope.argmax()]:.2f})")
assert slope.min() < -0.1 and slope.max() > 1.1  # it dips below 0 and overshoots 1

# %% [markdown]
# ### Attention
#
# Scaled dot-product attention (Appendix A, Eq. 5-7; notebook 03 takes it apart) maps q, k, v of
# shape (..., N, hd) to O = softmax(q k^T / sqrt(hd)) v, the softmax over the last axis. minivit's
# `F.scaled_dot_product_attention` computes it, and the check uses it as the forward.
#
# **Exercise 6.** Write `attention_backward(g, q, k, v)`, returning `(dq, dk, dv)`. Write the
# forward as three lines, S = q k^T / sqrt(hd), P = softmax(S), O = P v, recompute what you need
# of it (your `softmax_forward`), and go back one line at a time: from dO = g to dP and dv, then
# to dS, then to dq and dk. For the two products, derive once what dL/dA and dL/dB are for
# C = A B from C_ij = sum_k A_ik B_kj (that is the backward of every matmul); for the softmax,
# use your Exercise 3.

# %% tags=["solution"]
def attention_backward(g, q, k, v):
    scale = 1.0 / math.sqrt(q.shape[-1])
    p = softmax_forward(q @ np.swapaxes(k, -1, -2) * scale)  # (..., N, N)
    dv = np.swapaxes(p, -1, -2) @ g  # (..., N, hd)
    dp = g @ np.swapaxes(v, -1, -2)  # (..., N, N)
    ds = softmax_backward(p, dp) * scale
    return ds @ k, np.swapaxes(ds, -1, -2) @ q, dv


# %%
def minivit_attention(q, k, v):
    with minivit.no_grad():
        return F.scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v)).numpy()


q, k, v = (rng.normal(size=(2, 2, 5, 4)) for _ in range(3))  # (B, Hh, N, hd)
R = rng.normal(size=(2, 2, 5, 4))
grads = attention_backward(R, q, k, v)
errs = relative_errors(lambda q, k, v: float(np.sum(minivit_attention(q, k, v) * R)), [q, k, v], grads)
ts = [Tensor(a.copy(), requires_grad=True) for a in (q, k, v)]
F.scaled_dot_product_attention(*ts).backward(R)
print("attention backward, relative errors of dq, dk, dv:", ", ".join(f"{e:.1e}" for e in errs))
assert max(errs) < 1e-6
for mine, theirs in zip(grads, ts):
    assert np.allclose(mine, theirs.grad, rtol=1e-8, atol=1e-10)

# %% [markdown]
# ## minivit's kernels pass the same test
#
# In minivit each of these ops runs a kernel from a registry (kernels/registry.py): by default a
# CPU version from kernels/cpu/ (Numba, or BLAS for the products), or its plain NumPy
# reference inside `kernels.use("reference")`. The default attention kernel is flash-style: it
# never forms the N x N matrix P, and its backward recomputes P from one saved number per row.
# Here every op, under both selections, against central differences, the linear layer included.

# %%
OPS = {  # name: (function of tensors, input shapes, the registry op whose kernel runs)
    "linear": (F.linear, [(3, 4, 6), (5, 6), (5,)], "linear"),  # x (B, N, Din), weight (Dout, Din), bias
    "layernorm": (lambda x, w, b: F.layer_norm(x, w, b), [(3, 4, 6), (6,), (6,)], "layernorm"),
    "softmax": (F.softmax, [(3, 4, 6)], "softmax"),
    "gelu": (F.gelu, [(3, 4, 6)], "gelu"),
    "attention": (F.scaled_dot_product_attention, [(2, 2, 5, 4)] * 3, "attention"),  # q, k, v (B, Hh, N, hd)
}


def kernel_errors(fn, shapes):
    arrays = [rng.normal(size=s) for s in shapes]
    ts = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*ts)
    R = rng.normal(size=out.shape)
    out.backward(R)

    def loss(*arrays):
        with minivit.no_grad():
            return float(np.sum(fn(*[Tensor(a) for a in arrays]).data * R))

    return max(relative_errors(loss, arrays, [t.grad for t in ts]))


results = {}
for mode in ["default", "reference"]:
    # kernels.use(...) applies its choice when called and restores the previous one on exit
    with kernels.use("reference") if mode == "reference" else contextlib.nullcontext():
        for name, (fn, shapes, op) in OPS.items():
            results[name, mode] = kernel_errors(fn, shapes)
            print(f"{name:10s} {mode:9s} ({kernels.selection()[op]:9s}) max relative error {results[name, mode]:.1e}")
assert all(err < 1e-7 for err in results.values())

# %% [markdown]
# Every gradient agrees with central differences to about 1e-9 or better, for the Numba kernels
# and their NumPy references alike. Checks like these, in float64 where central differences are
# accurate, are what the test suite runs for every kernel (tests/test_functional.py,
# tests/test_kernels_cpu*.py); training itself runs in float32.
#
# Next: **03 · attention**, the op whose backward you just derived, taken apart.
