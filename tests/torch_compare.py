"""Helpers of the tests that compare needle with PyTorch in float64 (test_layers_torch.py,
test_pytorch_layers.py): random data, the two frameworks' tensors of it, and the comparison."""
import numpy as np
import torch

import needle as ndl


def rand(*shape, seed=0, scale=1.0):
    """Standard normal values of `shape` (times `scale`) from default_rng(seed), float64."""
    return np.random.default_rng(seed).standard_normal(shape) * scale


def nd(a, dtype="float64", requires_grad=True):
    return ndl.Tensor(np.asarray(a), dtype=dtype, requires_grad=requires_grad)


def th(a, requires_grad=True):
    return torch.tensor(np.asarray(a), requires_grad=requires_grad)


def close(actual, expected, rtol=1e-10, atol=1e-12):
    """Same shape and values within rtol/atol; either side a needle tensor, a torch tensor or an array."""
    if isinstance(actual, ndl.Tensor):
        actual = actual.numpy()
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    if isinstance(expected, ndl.Tensor):
        expected = expected.numpy()
    assert np.shape(actual) == np.shape(expected), (np.shape(actual), np.shape(expected))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)
