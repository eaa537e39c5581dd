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


def test_new_pytorch_layers_train_np():
    """Embedding(padding_idx) -> GRU (batch_first, dropout) -> LayerNorm -> attention -> ConvTranspose2d
    -> ReLU(inplace) -> NLLLoss + BCEWithLogitsLoss, one SGD step on numpy arrays: the loss goes down."""
    import needle.nn.functional as F

    np.random.seed(0)
    emb, gru = nn.Embedding(7, 4, padding_idx=0), nn.GRU(4, 6, 2, batch_first=True, dropout=0.2)
    norm, up, relu = nn.LayerNorm(6), nn.ConvTranspose2d(2, 1, 3, stride=2, padding=1, output_padding=1), nn.ReLU(True)
    nll, bce = nn.NLLLoss(), nn.BCEWithLogitsLoss()
    params = emb.parameters() + gru.parameters() + norm.parameters() + up.parameters()
    ids = ndl.Tensor(np.random.randint(0, 7, (2, 5)), dtype="int64")
    target = ndl.Tensor(np.array([1, 4]), dtype="int64")
    flags = ndl.Tensor((np.random.rand(2, 6) < 0.5) * 1.0, dtype="float32", requires_grad=False)

    def loss():
        np.random.seed(1)  # the same dropout masks in both passes
        h = norm(gru(emb(ids))[0])
        heads = h.reshape((2, 5, 2, 3)).transpose((1, 2))
        img = relu(up(F.scaled_dot_product_attention(heads, heads, heads, is_causal=True)))  # (2, 1, 10, 6)
        logits = F.pad(img, (0, 1, 0, 0), mode="replicate").sum(axes=(1, 2))  # (2, 7)
        return nll(F.log_softmax(logits, dim=1), target) + bce(h[:, -1, :], flags)

    first = loss()
    first.backward()
    assert isinstance(gru.gru_cells[1].W_ih.grad.realize_cached_data(), np.ndarray)
    for p in params:
        p.data = p.data - 0.01 * p.grad.data
    assert float(loss().numpy()) < float(first.numpy())
