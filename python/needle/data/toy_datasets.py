"""Small 2-D classification sets generated in code (MiniTorch's simple, diag, split,
xor, circle and spiral). Each returns X (N, 2) float32 and y (N,) int64 labels and
draws from its own RandomState(seed), never from numpy's global RNG."""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import numpy as np

Arrays = Tuple[np.ndarray, np.ndarray]


def _points(n: int, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).rand(n, 2).astype(np.float32)


def simple(n: int = 100, seed: int = 0) -> Arrays:
    """Label 1 left of the vertical line x0 = 0.5."""
    X = _points(n, seed)
    return X, (X[:, 0] < 0.5).astype(np.int64)


def diag(n: int = 100, seed: int = 0) -> Arrays:
    """Label 1 below the anti-diagonal x0 + x1 = 0.5."""
    X = _points(n, seed)
    return X, (X[:, 0] + X[:, 1] < 0.5).astype(np.int64)


def split(n: int = 100, seed: int = 0) -> Arrays:
    """Label 1 in the two outer bands x0 < 0.2 or x0 > 0.8."""
    X = _points(n, seed)
    return X, ((X[:, 0] < 0.2) | (X[:, 0] > 0.8)).astype(np.int64)


def xor(n: int = 100, seed: int = 0) -> Arrays:
    """Label 1 in the top-left and bottom-right quadrants."""
    X = _points(n, seed)
    left, top = X[:, 0] < 0.5, X[:, 1] > 0.5
    return X, (left ^ top).astype(np.int64)


def circle(n: int = 100, seed: int = 0) -> Arrays:
    """Label 1 outside the circle of radius sqrt(0.1) around (0.5, 0.5)."""
    X = _points(n, seed)
    return X, (((X - 0.5) ** 2).sum(axis=1) > 0.1).astype(np.int64)


def spiral(n: int = 100, seed: int = 0, classes: int = 2) -> Arrays:
    """`classes` interleaved noisy spiral arms around (0.5, 0.5), n points in all."""
    rng = np.random.RandomState(seed)
    sizes = [n // classes + (1 if c < n % classes else 0) for c in range(classes)]
    xs, ys = [], []
    for c, size in enumerate(sizes):
        r = np.linspace(0.05, 0.5, size)
        t = np.linspace(0.0, 3 * np.pi, size) + 2 * np.pi * c / classes + rng.randn(size) * 0.15
        xs.append(np.stack([0.5 + r * np.cos(t), 0.5 + r * np.sin(t)], axis=1))
        ys.append(np.full(size, c, dtype=np.int64))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


TOY_DATASETS: Dict[str, Callable[..., Arrays]] = {
    "simple": simple, "diag": diag, "split": split, "xor": xor, "circle": circle, "spiral": spiral,
}
