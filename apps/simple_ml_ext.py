"""hw0 extension: ``softmax_regression_epoch_cpp`` compiled with numba.

The course writes this function in C++ with pybind11; here the same algorithm
is an ``@numba.njit`` kernel behind a validating Python wrapper. It updates a
float32, C-contiguous ``theta`` in place, exactly like
``simple_ml_numpy.softmax_regression_epoch`` (to float32 precision).
"""
import math
import numbers

import numba
import numpy as np

__all__ = ["softmax_regression_epoch_cpp"]


@numba.njit(cache=True)
def _softmax_regression_epoch_kernel(X, y, theta, lr, batch):
    m, n = X.shape
    k = theta.shape[1]
    rows = min(batch, m)
    G = np.empty((rows, k), dtype=np.float64)  # softmax(Xb @ theta) - onehot(yb)
    grad = np.empty((n, k), dtype=np.float64)
    for start in range(0, m, batch):
        stop = min(start + batch, m)
        b = stop - start
        # logits of the whole minibatch, all from the same (not yet updated) theta
        for i in range(b):
            for j in range(k):
                G[i, j] = 0.0
            for p in range(n):
                x = np.float64(X[start + i, p])
                if x != 0.0:
                    for j in range(k):
                        G[i, j] += x * theta[p, j]
            mx = G[i, 0]
            for j in range(1, k):
                if G[i, j] > mx:
                    mx = G[i, j]
            total = 0.0
            for j in range(k):
                G[i, j] = math.exp(G[i, j] - mx)
                total += G[i, j]
            for j in range(k):
                G[i, j] /= total
            G[i, y[start + i]] -= 1.0
        # grad = Xb.T @ G / b, then the in-place step
        for p in range(n):
            for j in range(k):
                grad[p, j] = 0.0
        for i in range(b):
            for p in range(n):
                x = np.float64(X[start + i, p])
                if x != 0.0:
                    for j in range(k):
                        grad[p, j] += x * G[i, j]
        scale = lr / b
        for p in range(n):
            for j in range(k):
                theta[p, j] = np.float32(theta[p, j] - scale * grad[p, j])


def _check_array(name, a, dtype, ndim):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {a.shape}")


def softmax_regression_epoch_cpp(X, y, theta, lr=0.1, batch=100):
    """One epoch of minibatch softmax-regression SGD, updating ``theta`` in place.

    Same algorithm as ``softmax_regression_epoch``: consecutive minibatches
    ``X[s:s+batch]``; for each,
    ``theta -= lr * Xb.T @ (softmax(Xb @ theta) - onehot(yb)) / len(Xb)``.

    Args:
        X: float32 array (num_examples, input_dim) (any memory layout).
        y: integer labels (num_examples,), each in ``[0, num_classes)``
           (uint8 in the course).
        theta: float32, C-contiguous, writeable array (input_dim, num_classes);
           updated in place.
        lr: step size (finite real number).
        batch: minibatch size (positive integer).
    Returns:
        None
    Raises:
        TypeError for wrong types/dtypes, ValueError for wrong shapes, layout,
        label range, or parameter values.
    """
    _check_array("X", X, np.float32, 2)
    if not isinstance(y, np.ndarray):
        raise TypeError(f"y must be a numpy.ndarray, got {type(y).__name__}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"y must have an integer dtype (uint8 in the course), got {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"y must be 1-dimensional, got shape {y.shape}")
    _check_array("theta", theta, np.float32, 2)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"y has {y.shape[0]} labels but X has {X.shape[0]} rows")
    if theta.shape[0] != X.shape[1]:
        raise ValueError(
            f"theta has shape {theta.shape} but X has {X.shape[1]} columns; "
            f"theta must be (input_dim, num_classes)"
        )
    if not theta.flags.c_contiguous:
        raise ValueError("theta must be C-contiguous (it is updated in place)")
    if not theta.flags.writeable:
        raise ValueError("theta must be writeable (it is updated in place)")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"lr must be a real number, got {type(lr).__name__}")
    if not math.isfinite(lr):
        raise ValueError(f"lr must be finite, got {lr!r}")
    if isinstance(batch, bool) or not isinstance(batch, numbers.Integral):
        raise TypeError(f"batch must be an integer, got {type(batch).__name__}")
    if batch < 1:
        raise ValueError(f"batch must be positive, got {batch}")
    k = theta.shape[1]
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(
            f"labels in y must lie in [0, {k}) for theta with {k} columns, "
            f"got range [{y.min()}, {y.max()}]"
        )
    if X.shape[0] == 0 or k == 0:
        return None
    _softmax_regression_epoch_kernel(
        np.ascontiguousarray(X), y.astype(np.int64), theta, float(lr), int(batch)
    )
    return None
