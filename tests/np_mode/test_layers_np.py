"""The PyTorch-style layers in numpy mode: the functional table of tests/test_layers_torch.py
(tests/layer_cases.py) against PyTorch, on numpy arrays through needle.backend_numpy, and
the modules on a small network."""
import os

import numpy as np
import pytest

import needle as ndl
import needle.nn as nn
from layer_cases import CASES, run_case

assert os.environ.get("NEEDLE_BACKEND") == "np", "run this folder with NEEDLE_BACKEND=np"

# numpy warns of the 0 / 0 of a mean over no targets (PyTorch's nan), on purpose
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_functional_matches_torch_np(case, dtype):
    run_case(case, dtype, ndl.cpu())


def test_small_network_trains_np():
    """Conv1d -> GELU -> MaxPool2d (as a 1-row image) -> AdaptiveAvgPool2d -> CrossEntropyLoss, one SGD step:
    numpy arrays all the way, and the loss goes down."""
    np.random.seed(0)
    conv, act, pool = nn.Conv1d(2, 4, 3, padding=1), nn.GELU(), nn.MaxPool2d((1, 2))
    head, loss_fn = nn.AdaptiveAvgPool2d(1), nn.CrossEntropyLoss(label_smoothing=0.1)
    x = ndl.Tensor(np.random.randn(5, 2, 8), dtype="float32")
    y = ndl.Tensor(np.array([0, 1, 2, 3, -100]), dtype="int64")

    def loss():
        h = pool(act(conv(x)).reshape((5, 4, 1, 8)))
        return loss_fn(head(h).reshape((5, 4)), y)

    first = loss()
    first.backward()
    assert isinstance(conv.weight.grad.realize_cached_data(), np.ndarray)
    for p in conv.parameters():
        p.data = p.data - 0.5 * p.grad.data
    assert float(loss().numpy()) < float(first.numpy())
