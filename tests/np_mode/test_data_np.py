"""needle.data under NEEDLE_BACKEND=np (the mode the hw2 data tests run in)."""
import numpy as np

import needle as ndl


def test_np_mode_batches_are_numpy_with_int64_labels():
    assert ndl.BACKEND == "np"
    X = np.random.rand(12, 3).astype(np.float32)
    y = np.arange(12, dtype=np.uint8)
    np.random.seed(4)
    batches = list(ndl.data.DataLoader(ndl.data.NDArrayDataset(X, y), batch_size=5, shuffle=True))
    np.random.seed(4)
    perm = np.random.permutation(12)
    assert [b[0].shape for b in batches] == [(5, 3), (5, 3), (2, 3)]
    for k, (xb, yb) in enumerate(batches):
        assert isinstance(xb.cached_data, np.ndarray) and xb.dtype == np.float32
        assert isinstance(yb.cached_data, np.ndarray) and yb.dtype == np.int64  # labels: int64, as in nd mode
        idx = perm[5 * k:5 * k + 5]
        np.testing.assert_array_equal(xb.cached_data, X[idx])
        np.testing.assert_array_equal(yb.cached_data, y[idx])


def test_np_mode_mnist_loader(data):
    ds = ndl.data.MNISTDataset(str(data.mnist_images), str(data.mnist_labels))
    X, y = next(iter(ndl.data.DataLoader(ds, batch_size=8)))
    assert X.shape == (8, 784) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(X.cached_data, ds.X[:8])
    np.testing.assert_array_equal(y.cached_data, ds.y[:8])


def test_np_mode_per_sample_dataset_is_collated_and_iterators_are_independent():
    X = np.random.rand(7, 3)  # float64 samples: collated batches are float32 unless dtype= says otherwise
    samples = [(X[i], i, {"w": ndl.Tensor(X[i], dtype="float64")}) for i in range(7)]
    loader = ndl.data.DataLoader(samples, batch_size=3)
    pairs = list(zip(loader, loader))
    assert len(pairs) == 3
    for k, ((xa, ya, da), (xb, _yb, db)) in enumerate(pairs):
        idx = np.arange(3 * k, min(3 * k + 3, 7))
        assert isinstance(xa.cached_data, np.ndarray) and xa.dtype == np.float32 and ya.dtype == np.int64
        assert da["w"].dtype == np.float64  # Tensors keep their dtype
        np.testing.assert_allclose(xa.cached_data, X[idx], rtol=1e-6)
        np.testing.assert_array_equal(ya.cached_data, idx)
        np.testing.assert_array_equal(xb.cached_data, xa.cached_data)
        np.testing.assert_array_equal(db["w"].cached_data, X[idx])


def test_np_mode_workers_give_the_batches_of_num_workers_0():
    X = np.random.RandomState(2).rand(7, 3)
    samples = [(X[i], i, {"w": ndl.Tensor(X[i], dtype="float64")}) for i in range(7)]  # Tensors travel too
    tensors = ndl.data.TensorDataset(ndl.Tensor(X, dtype="float64"), ndl.Tensor(np.arange(7), dtype="int64"))
    for data in (samples, tensors):
        runs = []
        for workers in (0, 2):
            np.random.seed(1)
            loader = ndl.data.DataLoader(data, batch_size=3, shuffle=True, num_workers=workers)
            runs.append([[(p.dtype, p.cached_data) for p in (*b[:2], *[d["w"] for d in b[2:]])] for b in loader])
        for one, two in zip(*runs):
            for (dtype_a, a), (dtype_b, b) in zip(one, two):
                assert isinstance(b, np.ndarray) and dtype_a == dtype_b
                np.testing.assert_array_equal(a, b)
