"""Train the scalar `Network` on a 2-D toy set with binary cross-entropy (MiniTorch's
module-1 "scalar" training run).

Each epoch is one full-batch gradient step: the mean cross-entropy over all n points is
built as one Scalar graph, back-propagated once, and SGD moves every weight.

The cross-entropy is computed from the logit z, never from a rounded probability:
-log P(y | x) = -log(sigmoid(z)) for y = 1 and -log(sigmoid(-z)) for y = 0. The stable
sigmoid keeps both positive for |z| up to ~745, so `log` (which has no epsilon guard)
stays defined even when the model is very confident; 1 - sigmoid(z) would round to 0
already at z ~ 37.
"""
from __future__ import annotations

import numbers
from typing import Callable, List, NamedTuple, Optional

from needle.data.toy_datasets import TOY_DATASETS

from .module import Network
from .optim import SGD
from .scalar import Scalar

__all__ = ["ScalarTrainResult", "train_scalar_network", "load_points"]

EpochCallback = Callable[[int, float, float], None]


class ScalarTrainResult(NamedTuple):
    losses: List[float]   # mean cross-entropy of each epoch, before that epoch's step
    accuracy: float       # accuracy of the trained network on the training points


def load_points(dataset_name: str, n: int, seed: int):
    """The toy set `dataset_name` as lists of ([x0, x1] floats, 0/1 label)."""
    if dataset_name not in TOY_DATASETS:
        raise ValueError(f"unknown dataset {dataset_name!r}; choose one of {sorted(TOY_DATASETS)}")
    X, y = TOY_DATASETS[dataset_name](n=n, seed=seed)
    labels = [int(v) for v in y]
    if any(v not in (0, 1) for v in labels):
        raise ValueError(f"dataset {dataset_name!r} is not binary: labels {sorted(set(labels))}")
    return [[float(a), float(b)] for a, b in X], labels


def _check_positive(value, what: str, kind=numbers.Real) -> None:
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        raise ValueError(f"{what} must be positive, got {value!r}")


def train_scalar_network(dataset_name: str, hidden: int = 10, lr: float = 0.5, epochs: int = 500,
                         n: int = 50, seed: int = 0, on_epoch: Optional[EpochCallback] = None,
                         network: Optional[Network] = None) -> ScalarTrainResult:
    """Train a 2 -> hidden -> 1 scalar Network on `n` points of the toy set `dataset_name`.

    The network sees each point as 2 x - 1 (centred on [-1, 1]^2). `seed` draws both the
    points and the initial weights. `on_epoch(epoch, loss, accuracy)`
    (epochs counted from 1) is called after each epoch with the epoch's mean loss and
    accuracy, both measured in the forward pass before the step. Pass `network` to train
    (and keep) your own instance (`hidden` is then unused); it is left in eval mode.
    Returns the per-epoch losses and the final accuracy.
    """
    _check_positive(hidden, "hidden", numbers.Integral)
    _check_positive(lr, "lr")
    _check_positive(epochs, "epochs", numbers.Integral)
    _check_positive(n, "n", numbers.Integral)
    coords, labels = load_points(dataset_name, n, seed)
    # the sets live in [0, 1]^2: centring them on [-1, 1]^2 lets the relu units split the
    # plane anywhere from the start (xor needs ~3x fewer epochs than on raw coordinates)
    points = [[Scalar(2.0 * c - 1.0, requires_grad=False) for c in x] for x in coords]
    model = network if network is not None else Network(hidden, rng=seed)
    optimizer = SGD(model.parameters(), lr=lr)

    losses: List[float] = []
    for epoch in range(1, epochs + 1):
        model.train()
        optimizer.zero_grad()
        total = Scalar(0.0, requires_grad=False)
        correct = 0
        for x, y in zip(points, labels):
            z = model.logit(x)
            correct += (z.data > 0) == (y == 1)
            total = total - (z if y == 1 else -z).sigmoid().log()
        loss = total / len(points)
        loss.backward()
        optimizer.step()
        losses.append(loss.data)
        if on_epoch is not None:
            on_epoch(epoch, loss.data, correct / len(points))

    model.eval()
    correct = sum((model.logit(x).data > 0) == (y == 1) for x, y in zip(points, labels))
    return ScalarTrainResult(losses, correct / len(points))
