"""Every op, forward and backward, on cuda against the cpu device on the same inputs.

A case is an op applied to tensors of given shapes (values drawn from a fixed seed, positive
where the op needs it); the forward values and the gradients of sum(out * w), w a fixed random
weight, must match the cpu device's. Ops that give no gradient (comparisons, argmax) compare
values only.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import numpy as np
import pytest

import needle as ndl
from needle import nn, ops

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

CPU, CUDA = ndl.cpu(), ndl.cuda()
TOL = {"float32": dict(rtol=1e-4, atol=1e-5), "float64": dict(rtol=1e-10, atol=1e-12)}


class Case(NamedTuple):
    id: str
    fn: Callable
    shapes: tuple  # one shape per float input
    positive: bool = False  # inputs in [0.5, 2) (log, sqrt, pow, div)
    dtype: str = "float32"
    extra: Optional[Callable] = None  # rng -> numpy arrays appended to the inputs (labels, masks)


def _split_mix(x):
    parts = ops.split(x, 1)
    return parts[0] * 2 + parts[2] - parts[1]


def _softmax_loss(z, y):
    return nn.SoftmaxLoss()(z, y)


def _labels(rng):
    return [rng.integers(0, 5, size=(4,)).astype(np.int64)]


def _mask(rng):
    return [rng.random((3, 5)) < 0.5]


CASES = [
    # elementwise (broadcasting, scalars, reversed scalars)
    Case("add", lambda x, y: x + y, ((3, 5), (5,))),
    Case("sub", lambda x, y: x - y, ((2, 3, 4), (3, 1))),
    Case("mul", lambda x, y: x * y, ((3, 5), (3, 5))),
    Case("div", lambda x, y: x / y, ((3, 5), (1, 5)), positive=True),
    Case("pow", lambda x, y: x ** y, ((3, 5), (3, 5)), positive=True),
    Case("scalars", lambda x: (x + 1.5) * 3 / 4 - 0.25, ((17,),)),
    Case("reversed scalars", lambda x: 2 / x + (1 - x) + 3 ** x, ((17,),), positive=True),
    Case("power_scalar", lambda x: x ** 3 + x ** 0.5 + x ** -0.5 + x ** 2, ((3, 5),), positive=True),
    Case("exp", ops.exp, ((3, 5),)),
    Case("log", ops.log, ((3, 5),), positive=True),
    Case("tanh", ops.tanh, ((3, 5),)),
    Case("sigmoid", ops.sigmoid, ((3, 5),)),
    Case("relu", ops.relu, ((3, 5),)),
    Case("sqrt", ops.sqrt, ((3, 5),), positive=True),
    Case("negate", ops.negate, ((3, 5),)),
    Case("maximum", ops.maximum, ((3, 5), (3, 5))),
    Case("maximum scalar", lambda x: ops.maximum(x, 0.1), ((3, 5),)),
    Case("where", lambda x, y, c: ops.where(c, x, y), ((3, 5), (3, 5)), extra=_mask),
    Case("cast", lambda x: ops.cast(x, "float64") * 2, ((3, 5),)),
    Case("float64 chain", lambda x, y: ops.tanh(x * y + 1) / (1 + ops.exp(-y)), ((3, 5), (3, 5)), dtype="float64"),
    # matmul
    Case("matmul", lambda x, y: x @ y, ((5, 3), (3, 4))),
    Case("matmul batched", lambda x, y: x @ y, ((2, 3, 5, 4), (4, 3))),
    Case("matmul broadcast batch", lambda x, y: x @ y, ((2, 1, 3, 4), (3, 4, 5))),
    Case("matmul vector", lambda x, y: x @ y, ((4,), (4, 3))),
    Case("matmul float64", lambda x, y: x @ y, ((3, 5, 17), (3, 17, 2)), dtype="float64"),
    # reductions
    Case("summation", lambda x: ops.summation(x), ((3, 5),)),
    Case("summation axes", lambda x: ops.summation(x, (0, 2)), ((2, 3, 4),)),
    Case("mean", lambda x: ops.mean(x, (1,)), ((3, 5),)),
    Case("max", lambda x: ops.max(x, (1,)), ((3, 5),)),
    Case("max all", lambda x: ops.max(x), ((2, 3, 4),)),
    Case("logsumexp", lambda x: ops.logsumexp(x, (1,)), ((3, 5),)),
    Case("logsumexp all", lambda x: ops.logsumexp(x), ((2, 3, 4),)),
    Case("logsoftmax", lambda x: ops.logsoftmax(x, -1), ((3, 5),)),
    Case("softmax", lambda x: ops.softmax(x, 0), ((3, 5),)),
    Case("softmax loss", _softmax_loss, ((4, 5),), extra=_labels),
    # shapes and indexing
    Case("transpose", lambda x: ops.transpose(x) * 1, ((2, 3, 4),)),
    Case("permute", lambda x: ops.permute(x, (2, 0, 1)) * 1, ((2, 3, 4),)),
    Case("reshape", lambda x: ops.reshape(x.transpose(), (4, 6)), ((2, 3, 4),)),
    Case("broadcast_to", lambda x: ops.broadcast_to(x, (3, 2, 5)), ((2, 1),)),
    Case("stack", lambda x, y: ops.stack([x, y, x], 1), ((3, 5), (3, 5))),
    Case("split", _split_mix, ((2, 3, 4),)),
    Case("flip", lambda x: ops.flip(x, (0, 2)), ((2, 3, 4),)),
    Case("dilate", lambda x: ops.dilate(x, (0, 1), 2), ((3, 5),)),
    Case("undilate", lambda x: ops.undilate(x, (1,), 2), ((3, 6),)),
    Case("getitem slices", lambda x: x[1:3, ::2], ((4, 5),)),
    Case("getitem int array", lambda x: x[np.array([2, 0, 2, -1])], ((4, 5),)),
    Case("getitem columns", lambda x: x[:, [1, 3, 1]], ((4, 5),)),
    Case("getitem mask", lambda x, c: x[c], ((3, 5),), extra=_mask),
    # convolution (im2col views + compact + matmul) and batch norm
    Case("conv", lambda x, w: ops.conv(x, w, stride=1, padding=1), ((2, 5, 5, 3), (3, 3, 3, 4))),
    Case("conv strided", lambda x, w: ops.conv(x, w, stride=2, padding=0), ((1, 7, 6, 2), (3, 3, 2, 3))),
    Case("conv grouped dilated uneven", lambda x, w: ops.conv(x, w, stride=(2, 1), padding=((1, 2), (0, 1)),
                                                             dilation=(1, 2), groups=2), ((2, 7, 6, 4), (3, 2, 2, 6))),
    Case("batch_norm", lambda x, w, b: ops.batch_norm(x, w, b, eps=1e-5)[0], ((6, 4), (4,), (4,))),
]

NO_GRAD = [
    ("comparisons", lambda x, y: ops.less(x, y) + ops.equal(x, x) * 1 + ops.greater_equal(x, 0.0) * 1),
    ("argmax", lambda x, y: ops.argmax(x, 1)),
]


def _inputs(case: Case, seed: int):
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(0.5, 2.0, size=s) if case.positive else rng.standard_normal(s) for s in case.shapes]
    arrays = [a.astype(case.dtype) for a in arrays]
    return arrays, (case.extra(rng) if case.extra else [])


def _run(case: Case, device, arrays, extra):
    xs = [ndl.Tensor(a, device=device, dtype=case.dtype) for a in arrays]
    extras = [ndl.Tensor(e, device=device, dtype=e.dtype.name, requires_grad=False) for e in extra]
    out = case.fn(*xs, *extras)
    w = np.random.default_rng(99).standard_normal(out.shape).astype(ndl.array_api.dtype_name(out.dtype))
    (out * ndl.Tensor(w, device=device, dtype=w.dtype.name)).sum().backward()
    return out, xs


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_op_forward_and_backward_match_the_cpu_device(case):
    arrays, extra = _inputs(case, seed=len(case.id))
    want, want_in = _run(case, CPU, arrays, extra)
    got, got_in = _run(case, CUDA, arrays, extra)
    assert got.device == CUDA and got.dtype == want.dtype and got.shape == want.shape
    tol = TOL[ndl.array_api.dtype_name(want.dtype)]
    np.testing.assert_allclose(got.numpy(), want.numpy(), err_msg="forward", **tol)
    for k, (g, w) in enumerate(zip(got_in, want_in)):
        assert g.grad.device == CUDA
        np.testing.assert_allclose(g.grad.numpy(), w.grad.numpy(), err_msg=f"gradient {k}", **TOL[case.dtype])


@pytest.mark.parametrize("name, fn", NO_GRAD, ids=[n for n, _ in NO_GRAD])
def test_ops_without_gradients_match_the_cpu_device(name, fn):
    rng = np.random.default_rng(5)
    x, y = rng.integers(-2, 3, size=(3, 5)).astype("float32"), rng.integers(-2, 3, size=(3, 5)).astype("float32")
    outs = [fn(ndl.Tensor(x, device=d), ndl.Tensor(y, device=d)) for d in (CPU, CUDA)]
    assert outs[1].dtype == outs[0].dtype
    np.testing.assert_array_equal(outs[1].numpy(), outs[0].numpy())
