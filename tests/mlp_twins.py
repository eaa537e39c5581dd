"""A small float64 needle MLP and its PyTorch twin with the same weights, their data and losses:
the optimizer comparisons of test_pytorch_rules.py and test_optim_pytorch.py run on them (float64,
so the comparison does not depend on the CPU's float32 kernels)."""
import numpy as np
import torch

import needle as ndl
from needle import nn


def as_torch(array, like):
    """A needle parameter's (or its state's) values in the layout of the torch parameter `like`:
    Linear weights are (in, out) in needle, (out, in) in torch; biases (1, out) and (out,)."""
    return array.T if like.ndim == 2 else array.reshape(like.shape)


def make_pair(seed=0):
    """A float64 needle MLP 5-7-3 (tanh) and its PyTorch twin with the same weights."""
    np.random.seed(seed)
    model = nn.Sequential(nn.Linear(5, 7, dtype="float64"), nn.Tanh(), nn.Linear(7, 3, dtype="float64"))
    twin = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()
    with torch.no_grad():
        for p, q in zip(model.parameters(), twin.parameters()):
            q.copy_(torch.tensor(as_torch(p.numpy(), q)))
    return model, twin


def data(seed):
    """A batch (x (6, 5), y (6, 3)) drawn from RandomState(seed)."""
    r = np.random.RandomState(seed)
    return r.randn(6, 5), r.randn(6, 3)


def needle_loss(model, x, y):
    out = model(ndl.Tensor(x, dtype="float64", requires_grad=False))
    return ((out - ndl.Tensor(y, dtype="float64", requires_grad=False)) ** 2).sum() / 6


def torch_loss(twin, x, y):
    return ((twin(torch.tensor(x)) - torch.tensor(y)) ** 2).sum() / 6
