"""hw0: softmax regression and a two-layer network in plain numpy.

This is the numpy-only warm-up of the course (spec §9.1). It does not import
needle. The course's hw0 tests import it as ``simple_ml`` through the thin
re-export module ``src/simple_ml.py``; the compiled variant of
``softmax_regression_epoch`` lives in ``apps/simple_ml_ext.py``.
"""
import gzip
import os

import numpy as np

__all__ = [
    "add",
    "parse_mnist",
    "softmax_loss",
    "softmax_regression_epoch",
    "nn_epoch",
    "loss_err",
    "train_softmax",
    "train_nn",
]

_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


def add(x, y):
    """Return ``x + y`` (works for numbers and numpy arrays alike)."""
    return x + y


def _read_idx(filename, magic, ndim):
    """Read an IDX file (gzipped or raw) holding unsigned bytes.

    Returns the array with the shape recorded in its header. Raises
    FileNotFoundError when the file is missing and ValueError (naming the
    file) when its contents are not a well-formed IDX file of that kind.
    """
    filename = os.fspath(filename)
    if not os.path.exists(filename):
        raise FileNotFoundError(f"MNIST file not found: {filename!r}")
    with open(filename, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip signature
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{filename!r} is not a readable gzip file: {e}") from None
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(
            f"{filename!r} is truncated: {len(raw)} bytes, "
            f"an IDX header needs {header_len}"
        )
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(
            f"{filename!r} has magic number {found:#010x}, expected {magic:#010x}"
        )
    shape = tuple(
        int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)
    )
    expected = int(np.prod(shape, dtype=np.int64))
    payload = len(raw) - header_len
    if payload != expected:
        kind = "truncated" if payload < expected else "too long"
        raise ValueError(
            f"{filename!r} is {kind}: header says shape {shape} "
            f"({expected} bytes of data), file holds {payload}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)


def parse_mnist(image_filename, label_filename):
    """Read an MNIST image file and label file in IDX format (optionally gzipped).

    Returns:
        X: float32 array of shape (N, rows*cols) (for MNIST (N, 784)) with
           pixel values scaled to [0, 1] (divided by 255).
        y: uint8 array of shape (N,) with the labels.
    """
    images = _read_idx(image_filename, _IMAGES_MAGIC, 3)
    labels = _read_idx(label_filename, _LABELS_MAGIC, 1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{os.fspath(image_filename)!r} holds {images.shape[0]} images but "
            f"{os.fspath(label_filename)!r} holds {labels.shape[0]} labels"
        )
    X = images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255.0)
    y = labels.copy()  # writeable, owns its memory
    return X, y


def _log_softmax_parts(Z):
    """Row-wise log-sum-exp of Z, computed stably."""
    Z = np.asarray(Z)
    m = Z.max(axis=1, keepdims=True)
    return np.log(np.exp(Z - m).sum(axis=1)) + m[:, 0]


def softmax_loss(Z, y):
    """Average softmax (cross-entropy) loss.

    Args:
        Z: logits of shape (batch_size, num_classes).
        y: integer labels of shape (batch_size,).
    Returns:
        mean over the batch of ``log(sum_j exp(Z[i, j])) - Z[i, y[i]]``.
    """
    Z = np.asarray(Z)
    y = np.asarray(y)
    rows = np.arange(Z.shape[0])
    return np.mean(_log_softmax_parts(Z) - Z[rows, y])


def _softmax_minus_onehot(logits, y):
    """``softmax(logits) - onehot(y)``, row-wise, in the dtype of ``logits``."""
    S = np.exp(logits - logits.max(axis=1, keepdims=True))
    S /= S.sum(axis=1, keepdims=True)
    S[np.arange(S.shape[0]), y] -= 1
    return S


def softmax_regression_epoch(X, y, theta, lr=0.1, batch=100):
    """One epoch of minibatch SGD for softmax regression, updating ``theta`` in place.

    Minibatches are the consecutive slices ``X[s:s+batch]`` (no shuffling);
    for each, ``theta -= lr * Xb.T @ (softmax(Xb @ theta) - onehot(yb)) / len(Xb)``.

    Args:
        X: inputs of shape (num_examples, input_dim).
        y: integer labels of shape (num_examples,).
        theta: parameters of shape (input_dim, num_classes), modified in place.
        lr: step size.
        batch: minibatch size.
    Returns:
        None
    """
    if batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    for start in range(0, X.shape[0], batch):
        Xb = X[start:start + batch]
        yb = y[start:start + batch]
        G = _softmax_minus_onehot(Xb @ theta, yb)
        theta -= lr * (Xb.T @ G) / Xb.shape[0]


def nn_epoch(X, y, W1, W2, lr=0.1, batch=100):
    """One epoch of minibatch SGD for ``logits = relu(X @ W1) @ W2``, in place.

    Both gradients of each minibatch are computed before either weight is
    updated.

    Args:
        X: inputs of shape (num_examples, input_dim).
        y: integer labels of shape (num_examples,).
        W1: first-layer weights (input_dim, hidden_dim), modified in place.
        W2: second-layer weights (hidden_dim, num_classes), modified in place.
        lr: step size.
        batch: minibatch size.
    Returns:
        None
    """
    if batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    for start in range(0, X.shape[0], batch):
        Xb = X[start:start + batch]
        yb = y[start:start + batch]
        Bb = Xb.shape[0]
        Z1 = np.maximum(Xb @ W1, 0)
        G2 = _softmax_minus_onehot(Z1 @ W2, yb)
        G1 = (Z1 > 0) * (G2 @ W2.T)
        grad_W1 = Xb.T @ G1 / Bb
        grad_W2 = Z1.T @ G2 / Bb
        W1 -= lr * grad_W1
        W2 -= lr * grad_W2


def loss_err(h, y):
    """Return ``(softmax loss, classification error)`` of logits ``h`` for labels ``y``."""
    return softmax_loss(h, y), np.mean(np.argmax(h, axis=1) != y)


def _load_ext():
    """The compiled ``softmax_regression_epoch_cpp`` from apps/simple_ml_ext.py."""
    import importlib.util
    import sys

    name = "_needle_hw0_simple_ml_ext"
    module = sys.modules.get(name)
    if module is None:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "simple_ml_ext.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return module.softmax_regression_epoch_cpp


_HEADER = "| Epoch | Train Loss | Train Err | Test Loss | Test Err |"
_ROW = "|  {:>4} |    {:.5f} |   {:.5f} |   {:.5f} |  {:.5f} |"


def train_softmax(X_tr, y_tr, X_te, y_te, epochs=10, lr=0.5, batch=100, cpp=False):
    """Train softmax regression from zero weights, printing a per-epoch table.

    Returns the trained ``theta``.
    """
    theta = np.zeros((X_tr.shape[1], int(y_tr.max()) + 1), dtype=np.float32)
    epoch_fn = _load_ext() if cpp else softmax_regression_epoch
    print(_HEADER)
    for epoch in range(epochs):
        epoch_fn(X_tr, y_tr, theta, lr=lr, batch=batch)
        train_loss, train_err = loss_err(X_tr @ theta, y_tr)
        test_loss, test_err = loss_err(X_te @ theta, y_te)
        print(_ROW.format(epoch, train_loss, train_err, test_loss, test_err))
    return theta


def train_nn(X_tr, y_tr, X_te, y_te, hidden_dim=500, epochs=10, lr=0.5, batch=100):
    """Train the two-layer ReLU network, printing a per-epoch table.

    Seeds numpy's global RNG with 0 and draws
    ``W1 = randn(n, hidden_dim) / sqrt(hidden_dim)`` then
    ``W2 = randn(hidden_dim, k) / sqrt(k)`` (float32). Returns ``(W1, W2)``.
    """
    n, k = X_tr.shape[1], int(y_tr.max()) + 1
    np.random.seed(0)
    # float32 divisors keep the weights float32 under numpy 2's scalar promotion rules
    W1 = np.random.randn(n, hidden_dim).astype(np.float32) / np.float32(np.sqrt(hidden_dim))
    W2 = np.random.randn(hidden_dim, k).astype(np.float32) / np.float32(np.sqrt(k))
    print(_HEADER)
    for epoch in range(epochs):
        nn_epoch(X_tr, y_tr, W1, W2, lr=lr, batch=batch)
        train_loss, train_err = loss_err(np.maximum(X_tr @ W1, 0) @ W2, y_tr)
        test_loss, test_err = loss_err(np.maximum(X_te @ W1, 0) @ W2, y_te)
        print(_ROW.format(epoch, train_loss, train_err, test_loss, test_err))
    return W1, W2


if __name__ == "__main__":  # pragma: no cover - illustrative driver
    data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
    X_tr, y_tr = parse_mnist(os.path.join(data, "train-images-idx3-ubyte.gz"),
                             os.path.join(data, "train-labels-idx1-ubyte.gz"))
    X_te, y_te = parse_mnist(os.path.join(data, "t10k-images-idx3-ubyte.gz"),
                             os.path.join(data, "t10k-labels-idx1-ubyte.gz"))
    print("Training softmax regression")
    train_softmax(X_tr, y_tr, X_te, y_te, epochs=10, lr=0.2, batch=100)
    print("\nTraining two layer neural network w/ 100 hidden units")
    train_nn(X_tr, y_tr, X_te, y_te, hidden_dim=100, epochs=20, lr=0.2)
