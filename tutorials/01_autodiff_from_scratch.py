# %% [markdown]
# # 1. Automatic differentiation from scratch
#
# Every deep learning framework is, at heart, a machine for computing gradients. This
# tutorial builds one in thirty lines (for single numbers), then looks at how needle
# does the same thing for whole tensors.
#
# Run it as a script (`python tutorials/01_autodiff_from_scratch.py`) or open it as a
# notebook (`jupytext --to notebook tutorials/01_autodiff_from_scratch.py`). With
# `NEEDLE_TUTORIAL_SMALL=1` it checks fewer points (the tests run it that way).
#
# The idea: while a program computes `f(x)`, record every elementary operation as a node
# of a graph: its inputs, and how to turn the gradient of its output into gradients of
# its inputs (the chain rule, one step). Then walk the graph backwards from the output.
# That is *reverse-mode* automatic differentiation; one backward pass gives the gradient
# with respect to every input, at about the cost of the forward pass.

# %%
import math
import os

import numpy as np

import needle as ndl
from needle.autograd import TensorOp, array_api, find_topo_sort

SMALL = os.environ.get("NEEDLE_TUTORIAL_SMALL") == "1"
np.random.seed(0)

# %% [markdown]
# ## A scalar engine
#
# `Scalar` holds a number, the nodes it was computed from (`parents`) and one function per
# parent that gives the *local derivative* (d output / d parent). Operators build new
# nodes; nothing else is needed to record the graph.

# %%
class Scalar:
    def __init__(self, value, parents=(), local_grads=(), name=""):
        self.value = float(value)
        self.parents = parents          # the nodes this one was computed from
        self.local_grads = local_grads  # d self / d parent, one per parent
        self.grad = 0.0
        self.name = name

    def __add__(self, other):
        other = other if isinstance(other, Scalar) else Scalar(other)
        return Scalar(self.value + other.value, (self, other), (1.0, 1.0))

    __radd__ = __add__

    def __mul__(self, other):
        other = other if isinstance(other, Scalar) else Scalar(other)
        return Scalar(self.value * other.value, (self, other), (other.value, self.value))

    __rmul__ = __mul__

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-other)

    def tanh(self):
        t = math.tanh(self.value)
        return Scalar(t, (self,), (1.0 - t * t,))

    def exp(self):
        e = math.exp(self.value)
        return Scalar(e, (self,), (e,))

    def __repr__(self):
        return f"Scalar({self.value:.4f}, grad={self.grad:.4f})"


# %% [markdown]
# ### Topological order
#
# The backward pass must handle a node only once every node that *uses* it has passed its
# gradient down. A depth-first search that appends a node after all its parents gives an
# order in which every node comes after its inputs (a topological order); walking it in
# reverse gives exactly the order we need.

# %%
def topological_order(output):
    order, seen = [], set()

    def visit(node):
        if id(node) in seen:
            return
        seen.add(id(node))
        for parent in node.parents:
            visit(parent)
        order.append(node)

    visit(output)
    return order


def backward(output):
    for node in topological_order(output):
        node.grad = 0.0
    output.grad = 1.0  # d output / d output
    for node in reversed(topological_order(output)):
        for parent, local in zip(node.parents, node.local_grads):
            # the chain rule; "+=" because a node used twice collects both contributions
            parent.grad += node.grad * local


# %% [markdown]
# A function that uses `x` twice (so gradients must be summed) and mixes the operations:
#
# $$f(x, y) = \tanh(x y + x) \cdot e^{y} - x$$

# %%
def f(x, y):
    return (x * y + x).tanh() * y.exp() - x


x, y = Scalar(0.5, name="x"), Scalar(-1.2, name="y")
out = f(x, y)
backward(out)
print("f(x, y) =", round(out.value, 6))
print("graph has", len(topological_order(out)), "nodes")
print("df/dx =", round(x.grad, 6), " df/dy =", round(y.grad, 6))

# %% [markdown]
# ### Checking against finite differences
#
# A gradient can be checked without calculus: the central difference
# $(f(x + h) - f(x - h)) / 2h$ approaches $\partial f / \partial x$ with an error of
# order $h^2$. Every autodiff engine should pass this test.

# %%
def central_difference(fn, args, i, h=1e-6):
    up = list(args)
    down = list(args)
    up[i] += h
    down[i] -= h
    return (fn(*up) - fn(*down)) / (2 * h)


def f_float(a, b):
    return f(Scalar(a), Scalar(b)).value


points = np.random.uniform(-2, 2, size=(3 if SMALL else 20, 2))
worst = 0.0
for a, b in points:
    xs, ys = Scalar(a), Scalar(b)
    backward(f(xs, ys))
    for i, analytic in enumerate((xs.grad, ys.grad)):
        numeric = central_difference(f_float, (a, b), i)
        worst = max(worst, abs(analytic - numeric))
print(f"scalar engine: largest |autodiff - finite difference| over {len(points)} points: {worst:.2e}")
assert worst < 1e-6

# %% [markdown]
# ## The same with needle
#
# needle does exactly this, with two differences:
#
# * nodes hold **tensors** (n-dimensional arrays), so one node stands for a whole matrix
#   product or a sum over an axis;
# * each operation is an `Op` class with a `compute` method (on arrays) and a `gradient`
#   method. `gradient` is written *with needle's own ops*, so gradients are themselves
#   graphs and can be differentiated again.
#
# The graph lives in [`python/needle/autograd.py`](../python/needle/autograd.py): a
# `Tensor` records `op` and `inputs`; `find_topo_sort` is the depth-first search above;
# `backward()` walks it in reverse and sums the partial gradients of each node
# (`compute_gradient_of_variables`). The ops are in
# [`python/needle/ops/`](../python/needle/ops/) (e.g. `EWiseMul` and `Tanh` in
# `ops/elementwise.py`, `MatMul` in `ops/matmul.py`).

# %%
xt = ndl.Tensor([0.5], dtype="float64", requires_grad=True)
yt = ndl.Tensor([-1.2], dtype="float64", requires_grad=True)
out_t = ndl.tanh(xt * yt + xt) * ndl.exp(yt) - xt
out_t.backward()

print("needle:  f =", out_t.numpy()[0].round(6), " df/dx =", xt.grad.numpy()[0].round(6),
      " df/dy =", yt.grad.numpy()[0].round(6))
assert np.allclose(xt.grad.numpy(), x.grad) and np.allclose(yt.grad.numpy(), y.grad)

# %% [markdown]
# The recorded graph, in the order `backward` reverses. Leaves (`op` is None) are the
# inputs; every other node names the op that made it.

# %%
for node in find_topo_sort([out_t]):
    kind = "leaf" if node.op is None else type(node.op).__name__
    print(f"  {kind:12s} shape={tuple(node.shape)} inputs={len(node.inputs)}")

# %% [markdown]
# ### Tensors: a tiny network's gradient, checked numerically
#
# A one-hidden-layer network with a softmax cross-entropy loss. We compute the loss, call
# `backward()`, and compare every entry of the weight gradients against central
# differences. In float64 the two agree to about 1e-9.

# %%
n, d_in, d_hidden, k = (4, 3, 5, 3) if SMALL else (8, 6, 10, 4)
X = ndl.Tensor(np.random.randn(n, d_in), dtype="float64")
labels = np.random.randint(0, k, size=n)
Y = ndl.Tensor(np.eye(k)[labels], dtype="float64")
W1 = ndl.Tensor(np.random.randn(d_in, d_hidden) * 0.5, dtype="float64", requires_grad=True)
W2 = ndl.Tensor(np.random.randn(d_hidden, k) * 0.5, dtype="float64", requires_grad=True)


def loss_fn(W1, W2):
    logits = ndl.relu(X @ W1) @ W2
    # softmax cross-entropy: log(sum(exp(z))) - z[label], averaged over the batch
    return (ndl.logsumexp(logits, axes=(1,)) - (logits * Y).sum(axes=(1,))).sum() / n


loss = loss_fn(W1, W2)
loss.backward()
print("loss:", float(loss.numpy()))


def numeric_grad(W, which, h=1e-6):
    base = W.numpy().copy()
    grad = np.zeros_like(base)
    for idx in np.ndindex(*base.shape):
        vals = []
        for step in (h, -h):
            moved = base.copy()
            moved[idx] += step
            args = [W1, W2]
            args[which] = ndl.Tensor(moved, dtype="float64")
            vals.append(float(loss_fn(*args).numpy()))
        grad[idx] = (vals[0] - vals[1]) / (2 * h)
    return grad


for name, W, which in (("W1", W1, 0), ("W2", W2, 1)):
    err = np.abs(W.grad.numpy() - numeric_grad(W, which)).max()
    print(f"  {name}: largest |autodiff - finite difference| = {err:.2e}")
    assert err < 1e-6, (name, err)

# %% [markdown]
# ### Writing an op of your own
#
# A new operation is a `TensorOp` subclass: `compute` works on the raw arrays (through
# `array_api`, the array layer), `gradient` gets the gradient of the output (`out_grad`)
# and the node, and returns one gradient per input, built from needle ops. Here is
# $x^3$ (needle has `ndl.power_scalar`; this is for illustration).

# %%
class Cube(TensorOp):
    def compute(self, a):
        return array_api.multiply(array_api.multiply(a, a), a)

    def gradient(self, out_grad, node):
        (a,) = node.inputs
        return out_grad * 3.0 * a * a


def cube(a):
    return Cube()(a)


z = ndl.Tensor(np.random.randn(5), dtype="float64", requires_grad=True)
cube(z).sum().backward()
print("d/dz sum(z^3) =", z.grad.numpy().round(4), " (3 z^2 =", (3 * z.numpy() ** 2).round(4), ")")
assert np.allclose(z.grad.numpy(), 3 * z.numpy() ** 2)

# %% [markdown]
# Because `Cube.gradient` is made of needle ops, the gradient has a graph of its own and
# can be differentiated again: the second derivative of $z^3$ is $6z$.

# %%
w = ndl.Tensor(np.random.randn(4), dtype="float64", requires_grad=True)
cube(w).sum().backward()
first = w.grad                 # 3 w^2, still a graph that depends on w
first.sum().backward()         # backward() overwrites .grad (the course's convention)
print("second derivative:", w.grad.numpy().round(4), " (6 w =", (6 * w.numpy()).round(4), ")")
assert np.allclose(w.grad.numpy(), 6 * w.numpy())

# %% [markdown]
# ## What to read next
#
# * `python/needle/autograd.py`: `Tensor`, `find_topo_sort`, `compute_gradient_of_variables`.
# * `python/needle/ops/elementwise.py`, `ops/matmul.py`, `ops/reduction.py`: each op's
#   `compute` and `gradient` side by side.
# * Tutorial 2 uses these pieces to train a softmax regression on MNIST.

# %%
print("tutorial 01 done: gradients match finite differences")
