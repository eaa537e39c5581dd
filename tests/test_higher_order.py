"""Gradients of gradients, against torch.autograd.grad(..., create_graph=True), and
the topological order of the graph walk."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import needle as ndl
import needle.nn.functional as NF
from needle import ops

DEVICES = [pytest.param(ndl.cpu(), id="cpu"), pytest.param(ndl.cpu_numpy(), id="cpu_numpy")]
TOL = dict(rtol=1e-9, atol=1e-9)


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def positive(*shape, seed=0):
    return np.random.default_rng(seed).uniform(0.5, 2.0, size=shape)


def const(a, device):
    return ndl.Tensor(a, device=device, dtype="float64", requires_grad=False)


def check_second_order(fn, tfn, arrays, device):
    """First derivative of sum(f * W), then the gradient of sum(grad_i * V_i)."""
    xs = [ndl.Tensor(a, device=device, dtype="float64") for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*xs)
    tout = tfn(*ts)
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), **TOL)
    w = randn(*out.shape, seed=1)
    (out * const(w, device)).sum().backward()
    grads = [x.grad for x in xs]  # saved: the next backward overwrites .grad
    tgrads = torch.autograd.grad((tout * torch.tensor(w)).sum(), ts, create_graph=True)
    for g, tg, x in zip(grads, tgrads, xs):
        assert g.shape == x.shape
        assert g.requires_grad  # the gradient is itself a differentiable graph
        np.testing.assert_allclose(g.numpy(), tg.detach().numpy(), **TOL)

    vs = [randn(*a.shape, seed=10 + i) for i, a in enumerate(arrays)]
    loss2 = None
    for g, v in zip(grads, vs):
        term = (g * const(v, device)).sum()
        loss2 = term if loss2 is None else loss2 + term
    loss2.backward()
    tloss2 = sum((tg * torch.tensor(v)).sum() for tg, v in zip(tgrads, vs))
    second = torch.autograd.grad(tloss2, ts, allow_unused=True)
    for x, s in zip(xs, second):
        assert x.grad is not None and x.grad.shape == x.shape
        expected = np.zeros(x.shape) if s is None else s.numpy()
        np.testing.assert_allclose(x.grad.numpy(), expected, **TOL)
    return xs


CASES = {
    "mul": (lambda a, b: a * b, lambda a, b: a * b, lambda: [randn(3, 4, seed=2), randn(3, 4, seed=3)]),
    "mul_self": (lambda a: a * a * a, lambda a: a * a * a, lambda: [randn(3, 4, seed=2)]),
    "mul_broadcast": (lambda a, b: a * b * a, lambda a, b: a * b * a, lambda: [randn(3, 1, seed=2), randn(1, 4, seed=3)]),
    "tanh": (ops.tanh, torch.tanh, lambda: [randn(3, 4, seed=2)]),
    "exp": (ops.exp, torch.exp, lambda: [randn(3, 4, seed=2)]),
    "log": (ops.log, torch.log, lambda: [positive(3, 4, seed=2)]),
    "sigmoid": (ops.sigmoid, torch.sigmoid, lambda: [randn(3, 4, seed=2)]),
    "divide": (lambda a, b: a / b, lambda a, b: a / b, lambda: [randn(3, 4, seed=2), positive(3, 4, seed=3)]),
    "power": (lambda a, b: a ** b, lambda a, b: a ** b, lambda: [positive(3, 4, seed=2), randn(3, 4, seed=3)]),
    "power_scalar_3": (lambda a: ops.power_scalar(a, 3), lambda a: a ** 3, lambda: [randn(3, 4, seed=2)]),
    "power_scalar_frac": (lambda a: ops.power_scalar(a, -1.5), lambda a: a ** -1.5, lambda: [positive(3, 4, seed=2)]),
    "sqrt": (ops.sqrt, torch.sqrt, lambda: [positive(3, 4, seed=2)]),
    "matmul": (ops.matmul, torch.matmul, lambda: [randn(3, 4, seed=2), randn(4, 5, seed=3)]),
    "matmul_batched_broadcast": (ops.matmul, torch.matmul, lambda: [randn(2, 3, 4, seed=2), randn(4, 2, seed=3)]),
    "matmul_tanh": (lambda a, b: ops.tanh(a @ b), lambda a, b: torch.tanh(a @ b), lambda: [randn(3, 4, seed=2), randn(4, 2, seed=3)]),
    "logsumexp": (lambda a: ops.logsumexp(a, (1,)), lambda a: torch.logsumexp(a, dim=1), lambda: [randn(3, 4, seed=2)]),
    "logsumexp_all": (lambda a: ops.logsumexp(a), lambda a: torch.logsumexp(a, dim=(0, 1)), lambda: [randn(3, 4, seed=2)]),
    "logsumexp_axes": (lambda a: ops.logsumexp(a, (0, 2)), lambda a: torch.logsumexp(a, dim=(0, 2)), lambda: [randn(2, 3, 4, seed=2)]),
    "logsoftmax": (ops.logsoftmax, lambda a: torch.log_softmax(a, -1), lambda: [randn(3, 4, seed=2)]),
    "summation_broadcast": (lambda a: ops.broadcast_to(ops.summation(a * a, 1, keepdims=True), (3, 4)) * a,
                            lambda a: (a * a).sum(1, keepdim=True) * a, lambda: [randn(3, 4, seed=2)]),
    "getitem": (lambda a: a[np.array([0, 2, 2])] ** 2 * a[1], lambda a: a[[0, 2, 2]] ** 2 * a[1], lambda: [randn(3, 4, seed=2)]),
    "max": (lambda a: ops.max(a * a, 1) * ops.summation(a, 1), lambda a: torch.amax(a * a, 1) * a.sum(1),
            lambda: [np.random.default_rng(2).permutation(12).reshape(3, 4) * 0.1 + 0.05]),
    "stack_split": (lambda a, b: ops.stack([a * b, ops.exp(a)], 1),
                    lambda a, b: torch.stack([a * b, torch.exp(a)], 1), lambda: [randn(2, 3, seed=2), randn(2, 3, seed=3)]),
    # the PyTorch-style layers (NCHW / NCL): pooling's gradients are Col2Im / Im2Col, each the other's adjoint
    "max_pool2d": (lambda a: NF.max_pool2d(a * a, 3, 2, 1), lambda a: F.max_pool2d(a * a, 3, 2, 1),
                   lambda: [randn(2, 2, 7, 6, seed=2)]),
    "avg_pool2d": (lambda a: NF.avg_pool2d(a * a, (3, 2), (2, 1), 1, count_include_pad=False),
                   lambda a: F.avg_pool2d(a * a, (3, 2), (2, 1), 1, count_include_pad=False),
                   lambda: [randn(1, 2, 6, 5, seed=2)]),
    "adaptive_avg_pool2d": (lambda a: NF.adaptive_avg_pool2d(a * a, (3, 2)),
                            lambda a: F.adaptive_avg_pool2d(a * a, (3, 2)), lambda: [randn(1, 2, 7, 5, seed=2)]),
    "conv1d": (lambda a, w: NF.conv1d(a, w, stride=2, padding=1) ** 2,
               lambda a, w: F.conv1d(a, w, stride=2, padding=1) ** 2,
               lambda: [randn(2, 3, 9, seed=2), randn(4, 3, 3, seed=3)]),
    "gelu": (NF.gelu, F.gelu, lambda: [randn(3, 4, seed=2)]),
    "erf": (ops.erf, torch.erf, lambda: [randn(3, 4, seed=2)]),
    "binary_cross_entropy": (lambda x, t: NF.binary_cross_entropy(x, t, reduction="none"),
                             lambda x, t: F.binary_cross_entropy(x, t, reduction="none"),
                             lambda: [np.random.default_rng(2).uniform(0.1, 0.9, (3, 4)),
                                      np.random.default_rng(3).uniform(0, 1, (3, 4))]),
    "binary_cross_entropy_with_logits": (
        lambda z, t: NF.binary_cross_entropy_with_logits(z, t, reduction="none", pos_weight=const(positive(4), z.device)),
        lambda z, t: F.binary_cross_entropy_with_logits(z, t, reduction="none", pos_weight=torch.tensor(positive(4))),
        lambda: [randn(3, 4, seed=2) * 3, np.random.default_rng(3).uniform(0, 1, (3, 4))]),
    "conv_transpose2d": (lambda a, w: NF.conv_transpose2d(a, w, stride=2, padding=1, output_padding=1, groups=2) ** 2,
                         lambda a, w: F.conv_transpose2d(a, w, stride=2, padding=1, output_padding=1, groups=2) ** 2,
                         lambda: [randn(1, 4, 3, 4, seed=2), randn(4, 1, 3, 3, seed=3)]),
    "scaled_dot_product_attention": (lambda q, k, v: NF.scaled_dot_product_attention(q, k, v, is_causal=True),
                                     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                                     lambda: [randn(2, 4, 3, seed=2), randn(2, 5, 3, seed=3), randn(2, 5, 2, seed=4)]),
    "pad_reflect": (lambda a: NF.pad(a * a, (2, 1, 1, 2), mode="reflect") * NF.pad(a, (2, 1, 1, 2), value=1.5),
                    lambda a: F.pad(a * a, (2, 1, 1, 2), mode="reflect") * F.pad(a, (2, 1, 1, 2), value=1.5),
                    lambda: [randn(2, 4, 5, seed=2)]),
    "cross_entropy": (lambda z: NF.cross_entropy(z, ndl.Tensor(np.array([0, 2, -100, 1]), dtype="int64",
                                                                device=z.device), label_smoothing=0.2),
                      lambda z: F.cross_entropy(z, torch.tensor([0, 2, -100, 1]), label_smoothing=0.2),
                      lambda: [randn(4, 3, seed=2)]),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(CASES))
def test_second_order(name, device):
    fn, tfn, make = CASES[name]
    check_second_order(fn, tfn, make(), device)


def _torch_conv(stride, padding):
    def f(x, w):
        return F.conv2d(x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1), stride=stride, padding=padding).permute(0, 2, 3, 1)
    return f


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,k,stride,padding", [
    ((1, 5, 5, 2), 3, 1, 1),
    ((2, 4, 5, 1), 2, 1, 0),
    ((1, 6, 6, 2), 3, 2, 1),   # (6 + 2 - 3) % 2 = 1
    ((1, 7, 5, 1), 3, 2, 0),   # H != W, (7 - 3) % 2 = 0
    ((1, 8, 7, 1), 2, 3, 1),   # (8 + 2 - 2) % 3 = 2
], ids=str)
def test_second_order_conv(shape, k, stride, padding, device):
    arrays = [randn(*shape, seed=4), randn(k, k, shape[3], 2, seed=5)]
    # the product makes the output nonlinear in each input separately as well
    check_second_order(
        lambda a, b: ops.conv(a, b, stride=stride, padding=padding) ** 2,
        lambda a, b: _torch_conv(stride, padding)(a, b) ** 2,
        arrays, device)
    check_second_order(
        lambda a, b: ops.conv(a, b, stride=stride, padding=padding),
        _torch_conv(stride, padding), arrays, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fn,tfn", [(ops.tanh, torch.tanh), (ops.exp, torch.exp), (ops.sigmoid, torch.sigmoid),
                                     (lambda a: a * a * a * a, lambda a: a ** 4)], ids=["tanh", "exp", "sigmoid", "pow4"])
def test_third_order_elementwise(fn, tfn, device):
    """Repeated backward of the elementwise derivative: f', f'', f'''."""
    a = randn(5, seed=6)
    x = ndl.Tensor(a, device=device, dtype="float64")
    t = torch.tensor(a, requires_grad=True)
    y, ty = fn(x), tfn(t)
    for _ in range(3):
        y.sum().backward()
        y = x.grad
        (ty,) = torch.autograd.grad(ty.sum(), t, create_graph=True)
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), **TOL)


@pytest.mark.parametrize("device", DEVICES)
def test_course_gradient_of_gradient(device):
    """y = x2*x2 + x2*x3; y.backward(); x2.grad.backward() gives d2y/dx2^2 and d2y/dx2dx3."""
    a2, a3 = randn(3, seed=7), randn(3, seed=8)
    x2 = ndl.Tensor(a2, device=device, dtype="float64")
    x3 = ndl.Tensor(a3, device=device, dtype="float64")
    y = x2 * x2 + x2 * x3
    y.backward()
    grad_x2 = x2.grad
    grad_x3 = x3.grad
    t2, t3 = torch.tensor(a2, requires_grad=True), torch.tensor(a3, requires_grad=True)
    ty = t2 * t2 + t2 * t3
    g2, g3 = torch.autograd.grad(ty.sum(), (t2, t3), create_graph=True)
    np.testing.assert_allclose(grad_x2.numpy(), g2.detach().numpy())
    np.testing.assert_allclose(grad_x3.numpy(), g3.detach().numpy())
    grad_x2.backward()
    s2, s3 = torch.autograd.grad(g2.sum(), (t2, t3))
    np.testing.assert_allclose(x2.grad.numpy(), s2.numpy())
    np.testing.assert_allclose(x3.grad.numpy(), s3.numpy())


@pytest.mark.parametrize("device", DEVICES)
def test_hessian_of_small_mlp(device):
    """Full Hessian of a tiny scalar function, row by row, against torch.autograd.functional.hessian."""
    a = randn(4, seed=9)
    m = randn(4, 4, seed=10)
    mat = const(m, device)

    def f(x):
        h = ops.tanh(ops.reshape(x, (1, 4)) @ mat)
        return ops.logsumexp(h * h, (1,)).sum()

    x = ndl.Tensor(a, device=device, dtype="float64")
    f(x).backward()
    g = x.grad
    rows = []
    for i in range(4):
        e = np.zeros(4)
        e[i] = 1.0
        (g * const(e, device)).sum().backward()
        rows.append(x.grad.numpy())
    hess = torch.autograd.functional.hessian(
        lambda t: torch.logsumexp(torch.tanh(t.reshape(1, 4) @ torch.tensor(m)) ** 2, 1).sum(), torch.tensor(a))
    np.testing.assert_allclose(np.stack(rows), hess.numpy(), **TOL)


# --- topological sort ----------------------------------------------------------------

def test_topo_sort_spec_example():
    """For 3*a*a + 4*b*a - a the order is a, 3a, (3a)a, b, 4b, (4b)a, sum, -a, result."""
    a = ndl.Tensor(np.asarray([[0.9, 0.3]]), dtype="float64")
    b = ndl.Tensor(np.asarray([[0.2, 0.5]]), dtype="float64")
    a3 = 3 * a
    a3a = a3 * a
    b4 = 4 * b
    b4a = b4 * a
    s = a3a + b4a
    result = s - a
    neg = result.inputs[1]
    order = ndl.autograd.find_topo_sort([result])
    expected = [a, a3, a3a, b, b4, b4a, s, neg, result]
    assert len(order) == 9
    assert all(x is y for x, y in zip(order, expected))
    assert isinstance(a3.op, ops.MulScalar) and isinstance(a3a.op, ops.EWiseMul)
    assert isinstance(s.op, ops.EWiseAdd) and isinstance(result.op, ops.EWiseAdd)
    assert isinstance(neg.op, ops.Negate) and neg.inputs[0] is a
    # and the gradient: d/da = 6a + 4b - 1, d/db = 4a
    result.backward()
    np.testing.assert_allclose(a.grad.numpy(), 6 * a.numpy() + 4 * b.numpy() - 1)
    np.testing.assert_allclose(b.grad.numpy(), 4 * a.numpy())


def test_topo_sort_properties_on_shared_subgraphs():
    """Each node exactly once, after all of its inputs; several roots keep their order."""
    x = ndl.Tensor(randn(2, 2, seed=11))
    y = ndl.Tensor(randn(2, 2, seed=12))
    h = ops.tanh(x @ y)
    u = h * h + ops.exp(h)
    v = (u @ x).sum() + h.sum()
    order = ndl.autograd.find_topo_sort([v, u])
    ids = [id(n) for n in order]
    assert len(ids) == len(set(ids))
    pos = {id(n): i for i, n in enumerate(order)}
    for n in order:
        for inp in n.inputs:
            assert pos[id(inp)] < pos[id(n)]
    assert order[-1] is v
    assert set(ids) >= {id(x), id(y), id(h), id(u), id(v)}
    # depth-first, inputs left to right: x is reached first
    assert order[0] is x and order[1] is y


def test_topo_sort_matches_reference_dfs():
    """Compare with a straightforward recursive post-order DFS on a deeper graph."""
    def reference(roots):
        seen, out = set(), []

        def visit(n):
            if id(n) in seen:
                return
            seen.add(id(n))
            for i in n.inputs:
                visit(i)
            out.append(n)

        for r in roots:
            visit(r)
        return out

    x = ndl.Tensor(randn(3, seed=13))
    y = ndl.Tensor(randn(3, seed=14))
    z = x
    for k in range(30):
        z = z * y + x if k % 3 else ops.tanh(z) - y
    order = ndl.autograd.find_topo_sort([z])
    assert [id(n) for n in order] == [id(n) for n in reference([z])]
