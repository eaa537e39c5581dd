"""numpy mode: the optimizers' fused updates (array_api.sgd_step, adam_step, ..., numpy's op
sequence) give the bits of the op-by-op update (fused=False)."""
import os

import numpy as np
import pytest

import needle as ndl
import needle.nn as nn
import needle.optim as optim

assert os.environ.get("NEEDLE_BACKEND") == "np", "run this folder with NEEDLE_BACKEND=np"


def trained(cls, kw, fused, dtype):
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(5, 7, dtype=dtype), nn.ReLU(), nn.Linear(7, 3, dtype=dtype))
    opt = cls(model.parameters(), fused=fused, **kw)
    rng = np.random.RandomState(1)
    x = ndl.Tensor(rng.randn(12, 5), dtype=dtype, requires_grad=False)
    y = ndl.Tensor(rng.randint(0, 3, size=12), dtype="int64", requires_grad=False)
    for _ in range(4):
        opt.reset_grad()
        nn.SoftmaxLoss()(model(x), y).backward()
        opt.step()
    state = [getattr(opt, n)[p].numpy() for n in type(opt)._per_param_state for p in opt.params
             if p in getattr(opt, n)]
    return [p.numpy() for p in model.parameters()] + state


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls, kw", [
    (optim.SGD, dict(lr=0.1)), (optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)), (optim.SGD, dict(lr=0.1, dampening=0.0)),
    (optim.Adam, dict(lr=0.01, weight_decay=0.1)), (optim.AdamW, dict(lr=0.01)),
    (optim.RMSprop, dict(lr=0.01, momentum=0.5, weight_decay=0.1, centered=True)), (optim.RMSprop, dict(lr=0.01)),
    (optim.Adagrad, dict(lr=0.05, lr_decay=0.1, weight_decay=0.1, initial_accumulator_value=0.5)),
    (optim.Adadelta, dict(weight_decay=0.1)),
], ids=["sgd", "sgd-momentum-wd", "sgd-nesterov", "sgd-torch", "adam-wd", "adamw", "rmsprop-centered-momentum-wd",
        "rmsprop", "adagrad", "adadelta"])
def test_fused_update_gives_the_op_by_op_bits(cls, kw, dtype):
    fused, ref = trained(cls, kw, None, dtype), trained(cls, kw, False, dtype)
    assert len(fused) == len(ref) >= 4
    for a, b in zip(fused, ref):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))
