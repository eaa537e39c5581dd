"""Final losses of the course's hw2 optimizer tests (1024 x 64 synthetic problem,
32 batches of 32), with the golden values published in the course's test suite.

They pin the exact semantics the course requires: Linear's initialisation and
draw order, SGD's (1 - momentum) damping, Adam's bias correction and L2 weight
decay, BatchNorm's biased variance, LayerNorm, SoftmaxLoss.
"""
import numpy as np
import pytest

import needle as ndl
import needle.nn as nn


def _tensor(*shape, entropy=1):
    np.random.seed(np.prod(shape) * len(shape) * entropy)
    return ndl.Tensor(np.random.randint(0, 100, size=shape) / 20, dtype="float32")


def _int_tensor(*shape, low=0, high=10, entropy=1):
    np.random.seed(np.prod(shape) * len(shape) * entropy)
    return ndl.Tensor(np.random.randint(low, high, size=shape))


def _learn(make_model, optimizer, **kwargs):
    """One epoch over the course's synthetic problem; returns the last batch's loss."""
    np.random.seed(42)
    model = make_model()
    X = _tensor(1024, 64).numpy()
    y = _int_tensor(1024, low=0, high=16).numpy().astype(np.uint8)
    opt = optimizer(model.parameters(), **kwargs)
    loss_fn = nn.SoftmaxLoss()
    for X0, y0 in zip(np.array_split(X, 32), np.array_split(y, 32)):
        opt.reset_grad()
        loss = loss_fn(model(ndl.Tensor(X0, dtype="float32")), ndl.Tensor(y0))
        loss.backward()
        opt.step()
    return float(loss.numpy())


def _mlp(middle=()):
    return lambda: nn.Sequential(nn.Linear(64, 32), nn.ReLU(), *[m() for m in middle], nn.Linear(32, 16))


CASES = {
    "sgd": (_mlp(), ndl.optim.SGD, dict(lr=0.01, momentum=0.0), 3.207009),
    "sgd_momentum": (_mlp(), ndl.optim.SGD, dict(lr=0.01, momentum=0.9), 3.311805),
    "adam": (_mlp(), ndl.optim.Adam, dict(lr=0.001), 3.703999),
    "adam_batchnorm": (_mlp([lambda: nn.BatchNorm1d(32)]), ndl.optim.Adam, dict(lr=0.001, weight_decay=0.001),
                       3.296256),
    "adam_layernorm": (_mlp([lambda: nn.LayerNorm1d(32)]), ndl.optim.Adam, dict(lr=0.01, weight_decay=0.01),
                       2.82192),
}


@pytest.mark.parametrize("name", list(CASES))
def test_final_loss_matches_the_course_golden(name):
    make_model, optimizer, kwargs, golden = CASES[name]
    np.testing.assert_allclose(_learn(make_model, optimizer, **kwargs), golden, rtol=1e-5, atol=1e-5)
