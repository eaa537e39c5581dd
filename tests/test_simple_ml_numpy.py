"""hw0 (numpy-only) simple_ml: apps/simple_ml_numpy.py, apps/simple_ml_ext.py, src/ shims.

Expected values come from independent computations in this file (a separate IDX
reader, log-sum-exp, numdifftools gradients) or from published facts about MNIST.
"""
import gzip
import importlib.util
import math
import os
import subprocess
import sys
import textwrap

import numdifftools as nd
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# training runs read the first 500 test images (all of the sample), so they take the same
# time on the full file
TRAIN_LIMIT = 500


def _load(name, filename):
    """Import an apps/ module by path under a private name (same names as the src/ shims)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "apps", filename))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


sm = _load("_needle_hw0_simple_ml_numpy", "simple_ml_numpy.py")
ext = _load("_needle_hw0_simple_ml_ext", "simple_ml_ext.py")


# ----------------------------------------------------------------------------- helpers

def _independent_idx(path):
    """Parse an IDX file without the code under test: header via '>u4' words."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = np.frombuffer(raw, dtype=">u4", count=1)[0]
    ndim = int(magic & 0xFF)
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(tuple(dims))


@pytest.fixture(scope="module")
def mnist_test(data):
    return sm.parse_mnist(data.mnist_images, data.mnist_labels)


@pytest.fixture(scope="module")
def mnist_first(mnist_test):
    X, y = mnist_test
    assert len(y) >= TRAIN_LIMIT
    return X[:TRAIN_LIMIT], y[:TRAIN_LIMIT]


def _lse_loss(Z, y):
    """Reference softmax loss via numpy's logaddexp reduction (float64)."""
    Z = np.asarray(Z, dtype=np.float64)
    return np.mean([np.logaddexp.reduce(Z[i]) - Z[i, y[i]] for i in range(Z.shape[0])])


def _random_problem(m=50, n=5, k=3, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(m, n).astype(np.float32)
    y = rng.randint(k, size=(m,)).astype(np.uint8)
    return X, y


def _write_idx(path, magic, shape, data, gz=True):
    header = int(magic).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in shape)
    payload = header + bytes(data)
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(payload)


# ----------------------------------------------------------------------------- add

def test_add():
    assert sm.add(5, 6) == 11
    r = sm.add(3.2, 1.0)
    assert isinstance(r, float) and r == pytest.approx(4.2)
    np.testing.assert_array_equal(sm.add(np.array([1, 2]), np.array([3, 4])), [4, 6])


# ----------------------------------------------------------------------------- parse_mnist

def test_parse_mnist_test_split(mnist_test, data):
    X, y = mnist_test
    images = _independent_idx(data.mnist_images)
    labels = _independent_idx(data.mnist_labels)
    n = labels.shape[0]
    assert X.dtype == np.float32 and y.dtype == np.uint8
    assert X.shape == (n, 784) and y.shape == (n,) and images.shape == (n, 28, 28)
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_allclose(X, images.reshape(n, 784) / 255.0, rtol=1e-6, atol=0)
    # the first ten labels of the MNIST test set (well known)
    np.testing.assert_array_equal(y[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    assert X.flags.c_contiguous and y.flags.writeable


def test_parse_mnist_small_files(tmp_path):
    pixels = np.arange(2 * 3 * 4, dtype=np.uint8) * 10  # values 0..230
    _write_idx(tmp_path / "img.gz", 2051, (2, 3, 4), pixels)
    _write_idx(tmp_path / "lab.gz", 2049, (2,), [3, 9])
    X, y = sm.parse_mnist(str(tmp_path / "img.gz"), tmp_path / "lab.gz")
    assert X.shape == (2, 12) and X.dtype == np.float32
    np.testing.assert_allclose(X.ravel(), pixels / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, [3, 9])
    # uncompressed IDX files are read too
    _write_idx(tmp_path / "img", 2051, (2, 3, 4), pixels, gz=False)
    _write_idx(tmp_path / "lab", 2049, (2,), [3, 9], gz=False)
    X2, y2 = sm.parse_mnist(tmp_path / "img", tmp_path / "lab")
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)


def test_parse_mnist_errors(tmp_path):
    good_img, good_lab = tmp_path / "img.gz", tmp_path / "lab.gz"
    _write_idx(good_img, 2051, (2, 2, 2), range(8))
    _write_idx(good_lab, 2049, (2,), [0, 1])

    missing = tmp_path / "nope-images.gz"
    with pytest.raises(FileNotFoundError, match="nope-images"):
        sm.parse_mnist(missing, good_lab)

    swapped = tmp_path / "swapped.gz"  # a label file where an image file is expected
    _write_idx(swapped, 2049, (2,), [0, 1])
    with pytest.raises(ValueError, match="swapped"):
        sm.parse_mnist(swapped, good_lab)
    with pytest.raises(ValueError, match="img.gz"):
        sm.parse_mnist(good_img, good_img)

    truncated = tmp_path / "short.gz"
    _write_idx(truncated, 2051, (2, 2, 2), range(5))
    with pytest.raises(ValueError, match="short"):
        sm.parse_mnist(truncated, good_lab)

    tiny = tmp_path / "tiny.gz"  # not even a full header
    _write_idx(tiny, 2051, (), [])
    with pytest.raises(ValueError, match="tiny"):
        sm.parse_mnist(tiny, good_lab)

    broken = tmp_path / "broken.gz"  # gzip stream cut in half
    data = gzip.compress(good_img.read_bytes() * 50)
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="broken"):
        sm.parse_mnist(broken, good_lab)

    three = tmp_path / "three.gz"  # count mismatch between the two files
    _write_idx(three, 2049, (3,), [0, 1, 2])
    with pytest.raises(ValueError, match="three"):
        sm.parse_mnist(good_img, three)


# ----------------------------------------------------------------------------- softmax_loss

def test_softmax_loss_zero_logits():
    y = np.array([0, 3, 9, 5], dtype=np.uint8)
    assert sm.softmax_loss(np.zeros((4, 10)), y) == pytest.approx(math.log(10), rel=1e-12)


def test_softmax_loss_matches_logsumexp():
    Z = np.random.randn(40, 7) * 3
    y = np.random.randint(7, size=40)
    np.testing.assert_allclose(sm.softmax_loss(Z, y), _lse_loss(Z, y), rtol=1e-12)
    # float32 logits with uint8 labels
    Z32, y8 = Z.astype(np.float32), y.astype(np.uint8)
    np.testing.assert_allclose(sm.softmax_loss(Z32, y8), _lse_loss(Z32, y8), rtol=1e-5)
    # huge logits do not overflow
    np.testing.assert_allclose(sm.softmax_loss(Z + 1000.0, y), _lse_loss(Z, y), rtol=1e-9)


def test_softmax_loss_course_golden_on_training_labels(data):
    # Golden value of the course's hw0 test_softmax_loss (seed 0, randn logits, MNIST
    # training labels), which are available here even though the training images are not.
    y = _independent_idx(data.mnist_train_labels)
    assert y.shape == (60000,)  # the golden is over all of them (the sample ships the whole file)
    np.random.seed(0)
    assert sm.softmax_loss(np.zeros((y.shape[0], 10)), y) == pytest.approx(2.3025850, rel=1e-7)
    Z = np.random.randn(y.shape[0], 10)
    np.testing.assert_allclose(sm.softmax_loss(Z, y), 2.7291998, rtol=1e-6)


def test_loss_err():
    h = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [4.0, 0.0, 0.0]])
    y = np.array([0, 2, 2, 1], dtype=np.uint8)
    loss, err = sm.loss_err(h, y)
    np.testing.assert_allclose(loss, _lse_loss(h, y), rtol=1e-12)
    assert err == pytest.approx(0.5)


# ----------------------------------------------------------------------------- softmax regression

def test_softmax_regression_epoch_full_batch_is_gradient_step():
    X, y = _random_problem()
    theta = np.zeros((5, 3), dtype=np.float32)
    expected = -nd.Gradient(lambda th: sm.softmax_loss(X @ th.reshape(5, 3), y))(theta)
    same = theta
    assert sm.softmax_regression_epoch(X, y, theta, lr=1.0, batch=50) is None
    assert theta is same and theta.dtype == np.float32
    np.testing.assert_allclose(theta, expected.reshape(5, 3), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch", [15, 50, 64])
def test_softmax_regression_epoch_consecutive_minibatches(batch):
    X, y = _random_problem(m=50, n=4, k=4, seed=1)
    theta0 = np.random.randn(4, 4).astype(np.float32) * 0.1
    lr = 0.7
    # reference: one numerical-gradient step per consecutive slice (last one may be short)
    ref = theta0.astype(np.float64)
    for s in range(0, 50, batch):
        Xb, yb = X[s:s + batch], y[s:s + batch]
        g = nd.Gradient(lambda th: sm.softmax_loss(Xb @ th.reshape(4, 4), yb))(ref)
        ref = ref - lr * g.reshape(4, 4)
    theta = theta0.copy()
    sm.softmax_regression_epoch(X, y, theta, lr=lr, batch=batch)
    np.testing.assert_allclose(theta, ref, rtol=1e-4, atol=1e-5)


def test_softmax_regression_reduces_loss_on_mnist(mnist_first):
    X, y = mnist_first
    theta = np.zeros((784, 10), dtype=np.float32)
    losses = [sm.loss_err(X @ theta, y)]
    for _ in range(3):
        sm.softmax_regression_epoch(X, y, theta, lr=0.5, batch=25)
        losses.append(sm.loss_err(X @ theta, y))
    assert losses[0][0] == pytest.approx(math.log(10), rel=1e-6)
    assert all(a[0] > b[0] for a, b in zip(losses, losses[1:]))
    assert losses[-1][0] < 0.5 and losses[-1][1] < 0.15
    assert theta.dtype == np.float32 and np.isfinite(theta).all()


# ----------------------------------------------------------------------------- two-layer net

def test_nn_epoch_full_batch_matches_numdifftools():
    X, y = _random_problem()
    rng = np.random.RandomState(17)
    W1 = (rng.randn(5, 10) / np.sqrt(10)).astype(np.float32)
    W2 = (rng.randn(10, 3) / np.sqrt(3)).astype(np.float32)
    # keep the finite differences away from the ReLU kink
    assert np.abs(X @ W1).min() > 2e-3
    dW1 = nd.Gradient(lambda w: sm.softmax_loss(np.maximum(X @ w.reshape(5, 10), 0) @ W2, y))(W1)
    dW2 = nd.Gradient(lambda w: sm.softmax_loss(np.maximum(X @ W1, 0) @ w.reshape(10, 3), y))(W2)
    W1_0, W2_0 = W1.copy(), W2.copy()
    ids = (id(W1), id(W2))
    assert sm.nn_epoch(X, y, W1, W2, lr=1.0, batch=50) is None
    assert (id(W1), id(W2)) == ids and W1.dtype == W2.dtype == np.float32
    # both steps use gradients taken at the initial weights
    np.testing.assert_allclose(W1_0 - W1, dW1.reshape(5, 10), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(W2_0 - W2, dW2.reshape(10, 3), rtol=1e-4, atol=1e-5)


def test_nn_epoch_consecutive_minibatches():
    X, y = _random_problem(m=30, n=4, k=3, seed=2)
    W1 = (np.random.randn(4, 6) / np.sqrt(6)).astype(np.float32)
    W2 = (np.random.randn(6, 3) / np.sqrt(3)).astype(np.float32)
    lr, batch = 0.5, 12

    def loss(w, Xb, yb):
        A, B = w[:24].reshape(4, 6), w[24:].reshape(6, 3)
        return sm.softmax_loss(np.maximum(Xb @ A, 0) @ B, yb)

    w = np.concatenate([W1.ravel(), W2.ravel()]).astype(np.float64)
    for s in range(0, 30, batch):
        w = w - lr * nd.Gradient(lambda v: loss(v, X[s:s + batch], y[s:s + batch]))(w)
    sm.nn_epoch(X, y, W1, W2, lr=lr, batch=batch)
    np.testing.assert_allclose(W1, w[:24].reshape(4, 6), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(W2, w[24:].reshape(6, 3), rtol=1e-4, atol=1e-5)


def test_nn_epoch_reduces_loss_on_mnist(mnist_first):
    X, y = mnist_first
    np.random.seed(0)
    W1 = np.random.randn(784, 100).astype(np.float32) / np.float32(10.0)
    W2 = np.random.randn(100, 10).astype(np.float32) / np.float32(np.sqrt(10))

    def evaluate():
        return sm.loss_err(np.maximum(X @ W1, 0) @ W2, y)

    before = evaluate()
    sm.nn_epoch(X, y, W1, W2, lr=0.5, batch=25)
    middle = evaluate()
    sm.nn_epoch(X, y, W1, W2, lr=0.5, batch=25)
    after = evaluate()
    assert before[0] > middle[0] > after[0]
    assert after[0] < 0.5 and after[1] < 0.15


# ----------------------------------------------------------------------------- drivers

def test_train_softmax_prints_table_and_cpp_agrees(mnist_first, capsys):
    X, y = mnist_first
    Xtr, ytr, Xte, yte = X[:400], y[:400], X[400:], y[400:]
    theta = sm.train_softmax(Xtr, ytr, Xte, yte, epochs=2, lr=0.2, batch=100)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split("|")[1].strip() == "Epoch" and len(lines) == 3
    last = [float(c) for c in lines[-1].strip("| ").split("|")]
    loss, err = sm.loss_err(Xte @ theta, yte)
    assert last[0] == 1 and last[3] == pytest.approx(loss, abs=1e-5)
    assert last[4] == pytest.approx(err, abs=1e-5)
    theta_cpp = sm.train_softmax(Xtr, ytr, Xte, yte, epochs=2, lr=0.2, batch=100, cpp=True)
    np.testing.assert_allclose(theta_cpp, theta, rtol=1e-5, atol=1e-6)


def test_train_nn_initialisation_and_table(mnist_first, capsys):
    X, y = mnist_first
    Xtr, ytr, Xte, yte = X[:300], y[:300], X[300:], y[300:]
    W1, W2 = sm.train_nn(Xtr, ytr, Xte, yte, hidden_dim=20, epochs=0)
    np.random.seed(0)
    np.testing.assert_allclose(W1, np.random.randn(784, 20) / np.sqrt(20), rtol=1e-6)
    np.testing.assert_allclose(W2, np.random.randn(20, 10) / np.sqrt(10), rtol=1e-6)
    assert W1.dtype == W2.dtype == np.float32
    np.random.seed(123)  # train_nn reseeds, so the outcome does not depend on this
    V1, V2 = sm.train_nn(Xtr, ytr, Xte, yte, hidden_dim=20, epochs=2, lr=0.2)
    sm.nn_epoch(Xtr, ytr, W1, W2, lr=0.2, batch=100)
    sm.nn_epoch(Xtr, ytr, W1, W2, lr=0.2, batch=100)
    np.testing.assert_array_equal(V1, W1)
    np.testing.assert_array_equal(V2, W2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 + 0 + 1 + 2  # two headers, two epoch rows


# ----------------------------------------------------------------------------- numba extension

@pytest.mark.parametrize("m,n,k,batch,lr", [
    (50, 5, 3, 50, 1.0), (50, 5, 3, 7, 0.5), (37, 12, 4, 10, 0.1), (20, 3, 2, 100, 0.3),
    (64, 8, 10, 1, 0.05),
])
def test_cpp_matches_numpy_random(m, n, k, batch, lr):
    X, y = _random_problem(m, n, k, seed=m + n + k)
    theta0 = (np.random.randn(n, k) * 0.1).astype(np.float32)
    a, b = theta0.copy(), theta0.copy()
    sm.softmax_regression_epoch(X, y, a, lr=lr, batch=batch)
    same = b
    assert ext.softmax_regression_epoch_cpp(X, y, b, lr=lr, batch=batch) is None
    assert b is same and b.dtype == np.float32
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_cpp_full_batch_is_gradient_step():
    X, y = _random_problem()
    theta = np.zeros((5, 3), dtype=np.float32)
    expected = -nd.Gradient(lambda th: sm.softmax_loss(X @ th.reshape(5, 3), y))(theta)
    ext.softmax_regression_epoch_cpp(X, y, theta, lr=1.0, batch=50)
    np.testing.assert_allclose(theta, expected.reshape(5, 3), rtol=1e-4, atol=1e-4)


def test_cpp_matches_numpy_on_mnist(mnist_first):
    X, y = mnist_first
    a = np.zeros((784, 10), dtype=np.float32)
    b = np.zeros((784, 10), dtype=np.float32)
    for _ in range(2):
        sm.softmax_regression_epoch(X, y, a, lr=0.2, batch=100)
        ext.softmax_regression_epoch_cpp(X, y, b, lr=0.2, batch=100)
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    c = np.zeros((784, 10), dtype=np.float32)  # the course's short run shape
    d = np.zeros((784, 10), dtype=np.float32)
    sm.softmax_regression_epoch(X[:100], y[:100], c, lr=0.1, batch=10)
    ext.softmax_regression_epoch_cpp(X[:100], y[:100], d, lr=0.1, batch=10)
    np.testing.assert_allclose(d, c, rtol=1e-5, atol=1e-6)


def test_cpp_accepts_noncontiguous_x_and_int_labels():
    X, y = _random_problem(40, 6, 3, seed=5)
    wide = np.zeros((40, 12), dtype=np.float32)
    wide[:, ::2] = X
    a = np.zeros((6, 3), dtype=np.float32)
    b = np.zeros((6, 3), dtype=np.float32)
    ext.softmax_regression_epoch_cpp(X, y, a, lr=0.5, batch=8)
    ext.softmax_regression_epoch_cpp(wide[:, ::2], y.astype(np.int64), b, lr=0.5, batch=8)
    np.testing.assert_array_equal(a, b)


def _bad(kind):
    X, y = _random_problem(10, 4, 3)
    theta = np.zeros((4, 3), dtype=np.float32)
    kw = dict(lr=0.1, batch=5)
    if kind == "X list":
        X = X.tolist()
    elif kind == "X float64":
        X = X.astype(np.float64)
    elif kind == "X 1-D":
        X = X.ravel()
    elif kind == "y float":
        y = y.astype(np.float32)
    elif kind == "y 2-D":
        y = y[:, None]
    elif kind == "y length":
        y = y[:-1]
    elif kind == "y range":
        y = y.copy()
        y[3] = 3
    elif kind == "y negative":
        y = y.astype(np.int64)
        y[0] = -1
    elif kind == "theta float64":
        theta = theta.astype(np.float64)
    elif kind == "theta shape":
        theta = np.zeros((5, 3), dtype=np.float32)
    elif kind == "theta fortran":
        theta = np.asfortranarray(np.zeros((4, 3), dtype=np.float32))
    elif kind == "theta readonly":
        theta.flags.writeable = False
    elif kind == "lr str":
        kw["lr"] = "0.1"
    elif kind == "lr nan":
        kw["lr"] = float("nan")
    elif kind == "batch float":
        kw["batch"] = 2.5
    elif kind == "batch zero":
        kw["batch"] = 0
    return X, y, theta, kw


@pytest.mark.parametrize("kind,exc,word", [
    ("X list", TypeError, "X"), ("X float64", TypeError, "X"), ("X 1-D", ValueError, "X"),
    ("y float", TypeError, "y"), ("y 2-D", ValueError, "y"), ("y length", ValueError, "y"),
    ("y range", ValueError, "labels"), ("y negative", ValueError, "labels"),
    ("theta float64", TypeError, "theta"), ("theta shape", ValueError, "theta"),
    ("theta fortran", ValueError, "C-contiguous"), ("theta readonly", ValueError, "writeable"),
    ("lr str", TypeError, "lr"), ("lr nan", ValueError, "lr"),
    ("batch float", TypeError, "batch"), ("batch zero", ValueError, "batch"),
])
def test_cpp_rejects_bad_input(kind, exc, word):
    X, y, theta, kw = _bad(kind)
    before = np.array(theta, copy=True)
    with pytest.raises(exc, match=word):
        ext.softmax_regression_epoch_cpp(X, y, theta, **kw)
    np.testing.assert_array_equal(theta, before)


def test_numpy_epochs_reject_nonpositive_batch():
    X, y = _random_problem()
    with pytest.raises(ValueError, match="batch"):
        sm.softmax_regression_epoch(X, y, np.zeros((5, 3), np.float32), batch=0)
    with pytest.raises(ValueError, match="batch"):
        sm.nn_epoch(X, y, np.zeros((5, 4), np.float32), np.zeros((4, 3), np.float32), batch=0)


# ----------------------------------------------------------------------------- src/ shims

def test_src_modules_import_like_the_course(tmp_path):
    """The course's hw0 tests put ./src on sys.path and star-import both modules."""
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {os.path.join(REPO, "src")!r})
        import numpy as np
        from simple_ml import *
        try:
            from simple_ml_ext import *
        except ImportError:
            raise SystemExit("simple_ml_ext not importable")
        import simple_ml, simple_ml_ext
        assert os.path.dirname(simple_ml.__file__) == {os.path.join(REPO, "src")!r}
        assert "needle" not in sys.modules
        for name in ["add", "parse_mnist", "softmax_loss", "softmax_regression_epoch",
                     "nn_epoch", "loss_err", "train_softmax", "train_nn",
                     "softmax_regression_epoch_cpp"]:
            assert callable(globals()[name]), name
        assert add(5, 6) == 11
        X = np.random.RandomState(0).randn(20, 4).astype(np.float32)
        y = (np.arange(20) % 3).astype(np.uint8)
        a = np.zeros((4, 3), dtype=np.float32)
        b = np.zeros((4, 3), dtype=np.float32)
        softmax_regression_epoch(X, y, a, lr=0.5, batch=6)
        softmax_regression_epoch_cpp(X, y, b, lr=0.5, batch=6)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert abs(softmax_loss(np.zeros((3, 10)), y[:3]) - np.log(10)) < 1e-12
        print("hw0-ok")
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "hw0-ok"
