"""Tests for needle.data: transforms, Dataset/DataLoader, MNIST, CIFAR-10 and PTB.

Expected values are computed here independently (numpy replays of the same
global-RNG draws, a separate IDX parser, hand-written loops), never copied from
needle's own output.
"""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest

import needle as ndl
import needle.data.datasets as datasets_module
from needle import backend_ndarray as nd

PUBLIC_NAMES = [
    "Dataset", "DataLoader", "Transform", "RandomFlipHorizontal", "RandomCrop",
    "MNISTDataset", "NDArrayDataset", "CIFAR10Dataset", "Dictionary", "Corpus",
    "batchify", "get_batch",
]


# --- independent reference helpers -------------------------------------------------

def ref_flip(img, p):
    """One np.random.rand() draw; flip along the width when it is < p."""
    r = np.random.rand()
    if r < p:
        out = np.empty_like(img)
        W = img.shape[1]
        for j in range(W):
            out[:, j] = img[:, W - 1 - j]
        return out
    return img.copy()


def ref_crop(img, padding):
    """One randint(-padding, padding+1, size=2) draw; output pixel (i, j) is input
    pixel (i + sx, j + sy) when inside the image, else 0."""
    sx, sy = np.random.randint(low=-padding, high=padding + 1, size=2)
    H, W = img.shape[:2]
    out = np.zeros_like(img)
    for i in range(H):
        for j in range(W):
            si, sj = i + sx, j + sy
            if 0 <= si < H and 0 <= sj < W:
                out[i, j] = img[si, sj]
    return out


def parse_idx_gz(path):
    """A separate IDX parser: uint8 array shaped by the header."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[0:4], "big")
    ndim = raw[3]
    assert magic in (2049, 2051)
    dims = [int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim)]
    return np.frombuffer(raw[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def idx_bytes(magic, dims, payload):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + bytes(payload)


def write_gz(path, content):
    with gzip.open(path, "wb") as f:
        f.write(content)
    return path


# --- import surface ----------------------------------------------------------------

def test_public_names_reachable_both_ways():
    for name in PUBLIC_NAMES:
        assert getattr(ndl.data, name) is getattr(datasets_module, name), name
    assert ndl.data.datasets is datasets_module


# --- transforms ----------------------------------------------------------------------

def test_flip_small_example_by_hand():
    img = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32).reshape(2, 3, 1)
    out = ndl.data.RandomFlipHorizontal(p=1.0)(img)
    np.testing.assert_array_equal(out[..., 0], [[3, 2, 1], [6, 5, 4]])
    np.testing.assert_array_equal(ndl.data.RandomFlipHorizontal(p=0.0)(img), img)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("seed", [0, 7])
def test_flip_matches_numpy_replay(p, seed):
    img = np.random.RandomState(123).rand(6, 5, 3)
    tform = ndl.data.RandomFlipHorizontal(p)
    np.random.seed(seed)
    got = [tform(img) for _ in range(8)]
    after = np.random.rand()
    np.random.seed(seed)
    expected = [ref_flip(img, p) for _ in range(8)]
    expected_after = np.random.rand()
    for g, e in zip(got, expected):
        assert g.shape == img.shape
        np.testing.assert_array_equal(g, e)
    assert after == expected_after  # exactly one draw per call, even for p = 0 or 1


def test_flip_default_probability_is_half():
    assert ndl.data.RandomFlipHorizontal().p == 0.5


@pytest.mark.parametrize("padding", [0, 1, 3, 12])
@pytest.mark.parametrize("seed", [0, 5])
def test_crop_matches_numpy_replay(padding, seed):
    img = np.random.RandomState(1).randint(1, 256, size=(9, 7, 2)).astype(np.uint8)
    tform = ndl.data.RandomCrop(padding)
    np.random.seed(seed)
    got = [tform(img) for _ in range(6)]
    after = np.random.rand()
    np.random.seed(seed)
    expected = [ref_crop(img, padding) for _ in range(6)]
    expected_after = np.random.rand()
    for g, e in zip(got, expected):
        assert g.shape == img.shape and g.dtype == img.dtype
        np.testing.assert_array_equal(g, e)
    assert after == expected_after


def test_crop_default_padding_and_known_shift():
    assert ndl.data.RandomCrop().padding == 3
    img = np.arange(1, 10, dtype=np.float64).reshape(3, 3, 1)
    np.random.seed(0)
    sx, sy = np.random.randint(low=-1, high=2, size=2)
    np.random.seed(0)
    out = ndl.data.RandomCrop(1)(img)[..., 0]
    # the pixel at (i, j) comes from (i + sx, j + sy)
    for i in range(3):
        for j in range(3):
            si, sj = i + sx, j + sy
            want = img[si, sj, 0] if 0 <= si < 3 and 0 <= sj < 3 else 0
            assert out[i, j] == want


def test_transform_input_is_not_modified():
    img = np.random.rand(4, 4, 1)
    keep = img.copy()
    ndl.data.RandomCrop(2)(img)
    ndl.data.RandomFlipHorizontal(1.0)(img)
    np.testing.assert_array_equal(img, keep)


def test_transform_base_is_abstract():
    with pytest.raises(NotImplementedError):
        ndl.data.Transform()(np.zeros((2, 2, 1)))


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((2, 2, 2, 2))])
def test_transforms_reject_non_images(bad):
    with pytest.raises(ValueError, match="shape"):
        ndl.data.RandomCrop(1)(bad)
    with pytest.raises(ValueError, match="shape"):
        ndl.data.RandomFlipHorizontal()(bad)
    with pytest.raises(TypeError):
        ndl.data.RandomCrop(1)([[1, 2], [3, 4]])


def test_transform_bad_parameters():
    with pytest.raises(ValueError, match="padding"):
        ndl.data.RandomCrop(-1)
    with pytest.raises(TypeError, match="padding"):
        ndl.data.RandomCrop(1.5)
    with pytest.raises(ValueError, match="p"):
        ndl.data.RandomFlipHorizontal(1.5)


def test_apply_transforms_in_list_order():
    ds = ndl.data.Dataset(transforms=[lambda x: x + 1, lambda x: x * 2])
    assert ds.apply_transforms(np.array([1.0, 3.0])).tolist() == [4.0, 8.0]
    assert ndl.data.Dataset().transforms is None
    assert ndl.data.Dataset().apply_transforms(5) == 5
    with pytest.raises(NotImplementedError):
        len(ndl.data.Dataset())
    with pytest.raises(TypeError, match="callable"):
        ndl.data.Dataset(transforms=[3])


# --- NDArrayDataset and DataLoader ---------------------------------------------------

def batches_as_numpy(loader):
    return [tuple(t.numpy() for t in batch) for batch in loader]


def test_ndarray_dataset_indexing():
    a = np.random.rand(10, 3)
    b = np.arange(10)
    ds = ndl.data.NDArrayDataset(a, b)
    assert len(ds) == 10
    x, y = ds[4]
    np.testing.assert_array_equal(x, a[4])
    assert y == 4
    x, y = ds[2:5]
    assert x.shape == (3, 3) and y.tolist() == [2, 3, 4]
    x, y = ds[np.array([7, 1])]
    assert y.tolist() == [7, 1]


def test_ndarray_dataset_bad_input():
    with pytest.raises(ValueError, match="same length"):
        ndl.data.NDArrayDataset(np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="at least one"):
        ndl.data.NDArrayDataset()
    with pytest.raises(TypeError, match="length"):
        ndl.data.NDArrayDataset(3)


@pytest.mark.parametrize("batch_size", [1, 10, 30, 100, 150])
def test_dataloader_consecutive_batches(batch_size):
    arr = np.random.rand(100, 10, 10)
    state = np.random.get_state()[1].copy()
    loader = ndl.data.DataLoader(ndl.data.NDArrayDataset(arr), batch_size=batch_size)
    assert loader.batch_size == batch_size and loader.shuffle is False
    batches = list(loader)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # no RNG used
    sizes = [len(range(s, min(s + batch_size, 100))) for s in range(0, 100, batch_size)]
    assert [b[0].shape for b in batches] == [(n, 10, 10) for n in sizes]
    assert len(loader) == len(sizes) == len(loader.ordering)
    for k, (X,) in enumerate(batches):
        assert isinstance(X, ndl.Tensor)
        assert isinstance(X.cached_data, nd.NDArray)
        assert X.dtype == "float32"
        start = k * batch_size
        np.testing.assert_allclose(X.numpy(), arr[start:start + batch_size], rtol=1e-6)
    # ordering holds index arrays; a second epoch gives the same batches
    np.testing.assert_array_equal(np.concatenate(loader.ordering), np.arange(100))
    again = batches_as_numpy(loader)
    for (x1,), (x2,) in zip(batches_as_numpy(loader), again):
        np.testing.assert_array_equal(x1, x2)


def test_dataloader_last_short_batch_sizes():
    ds = ndl.data.NDArrayDataset(np.arange(23, dtype=np.float32).reshape(23, 1))
    got = [X.numpy()[:, 0].tolist() for (X,) in ndl.data.DataLoader(ds, batch_size=5)]
    assert got == [list(range(s, min(s + 5, 23))) for s in range(0, 23, 5)]
    assert [len(g) for g in got] == [5, 5, 5, 5, 3]


@pytest.mark.parametrize("seed", [0, 11])
@pytest.mark.parametrize("batch_size", [1, 7, 10])
def test_dataloader_shuffle_replays_permutations(seed, batch_size):
    n = 100
    X = np.random.rand(n, 4)
    y = np.arange(n, dtype=np.float32)
    np.random.seed(seed)
    loader = ndl.data.DataLoader(ndl.data.NDArrayDataset(X, y), batch_size=batch_size, shuffle=True)
    epochs = [batches_as_numpy(loader) for _ in range(3)]
    np.random.seed(seed)  # construction draws nothing, each epoch draws one permutation
    perms = [np.random.permutation(n) for _ in range(3)]
    for epoch, perm in zip(epochs, perms):
        assert len(epoch) == -(-n // batch_size)
        for k, (xb, yb) in enumerate(epoch):
            idx = perm[k * batch_size:(k + 1) * batch_size]
            np.testing.assert_array_equal(yb, idx.astype(np.float32))
            np.testing.assert_allclose(xb, X[idx], rtol=1e-6)
    order = [np.concatenate([yb for _, yb in e]) for e in epochs]
    assert not np.array_equal(order[0], order[1])  # a new permutation per epoch


def test_dataloader_shuffle_batch_1_then_10_from_continuing_stream():
    arr = np.random.rand(100, 10, 10)
    ds = ndl.data.NDArrayDataset(arr)
    np.random.seed(0)
    b1 = [X.numpy() for (X,) in ndl.data.DataLoader(ds, batch_size=1, shuffle=True)]
    b10 = [X.numpy() for (X,) in ndl.data.DataLoader(ds, batch_size=10, shuffle=True)]
    np.random.seed(0)
    p1 = np.random.permutation(100)
    p10 = np.random.permutation(100)
    assert [b.shape for b in b1] == [(1, 10, 10)] * 100
    assert [b.shape for b in b10] == [(10, 10, 10)] * 10
    for k in range(100):
        np.testing.assert_allclose(b1[k], arr[p1[k:k + 1]], rtol=1e-6)
    for k in range(10):
        np.testing.assert_allclose(b10[k], arr[p10[10 * k:10 * k + 10]], rtol=1e-6)


def test_dataloader_manual_next_and_stop():
    ds = ndl.data.NDArrayDataset(np.zeros((3, 2)))
    it = iter(ndl.data.DataLoader(ds, batch_size=2))
    assert next(it)[0].shape == (2, 2)
    assert next(it)[0].shape == (1, 2)
    with pytest.raises(StopIteration):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_dataloader_device_and_dtype_keywords():
    ds = ndl.data.NDArrayDataset(np.random.rand(6, 3))
    (X,) = next(iter(ndl.data.DataLoader(ds, batch_size=4, device=ndl.cpu_numpy(), dtype="float32")))
    assert X.device == ndl.cpu_numpy()
    assert X.dtype == "float32" and X.shape == (4, 3)
    (X,) = next(iter(ndl.data.DataLoader(ds, batch_size=4)))
    assert X.device == ndl.default_device()


def test_dataloader_empty_dataset_has_no_batches():
    loader = ndl.data.DataLoader(ndl.data.NDArrayDataset(np.zeros((0, 3))), batch_size=4, shuffle=True)
    assert list(loader) == []


@pytest.mark.parametrize("bad", [0, -3])
def test_dataloader_rejects_bad_batch_size(bad):
    ds = ndl.data.NDArrayDataset(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="batch_size"):
        ndl.data.DataLoader(ds, batch_size=bad)


def test_dataloader_rejects_non_integer_batch_size_and_non_dataset():
    ds = ndl.data.NDArrayDataset(np.zeros((5, 2)))
    with pytest.raises(TypeError, match="batch_size"):
        ndl.data.DataLoader(ds, batch_size=2.5)
    with pytest.raises(TypeError, match="batch_size"):
        ndl.data.DataLoader(ds, batch_size=None)
    with pytest.raises(TypeError, match="dataset"):
        ndl.data.DataLoader(42, batch_size=2)


# --- MNIST on the real test split (the sample's first 500 images, or all 10,000) ------------

@pytest.fixture(scope="module")
def mnist_raw(data):
    images = parse_idx_gz(data.mnist_images)
    labels = parse_idx_gz(data.mnist_labels)
    return images, labels


@pytest.fixture(scope="module")
def mnist_dataset(data):
    return ndl.data.MNISTDataset(str(data.mnist_images), str(data.mnist_labels))


def test_mnist_test_split_matches_independent_parse(mnist_dataset, mnist_raw):
    images, labels = mnist_raw
    n = labels.shape[0]
    assert n >= 500 and images.shape == (n, 28, 28)
    ds = mnist_dataset
    assert len(ds) == n
    assert ds.X.shape == (n, 784) and ds.X.dtype == np.float32
    assert ds.y.shape == (n,) and ds.y.dtype == np.uint8
    np.testing.assert_allclose(ds.X, images.reshape(n, 784) / 255.0, rtol=1e-6, atol=0)
    assert ds.X.min() == 0.0 and ds.X.max() == 1.0
    np.testing.assert_array_equal(ds.y, labels)


def test_mnist_getitem_shapes(mnist_dataset, mnist_raw):
    images, labels = mnist_raw
    x, y = mnist_dataset[17]
    assert x.shape == (784,) and y == labels[17]
    np.testing.assert_allclose(x, images[17].ravel() / 255.0, rtol=1e-6)
    x, y = mnist_dataset[10:15]
    assert x.shape == (5, 784) and y.tolist() == labels[10:15].tolist()
    last = len(labels) - 1
    x, y = mnist_dataset[np.array([9, 2, last])]
    assert x.shape == (3, 784) and y.tolist() == labels[[9, 2, last]].tolist()
    np.testing.assert_allclose(x[2], images[last].ravel() / 255.0, rtol=1e-6)


def test_mnist_accepts_pathlike(data, mnist_raw):
    ds = ndl.data.MNISTDataset(data.mnist_images, data.mnist_labels)
    assert len(ds) == len(mnist_raw[1])
    np.testing.assert_array_equal(ds.y, mnist_raw[1])


def test_mnist_with_transforms_matches_replay(data, mnist_raw):
    images, _ = mnist_raw
    n = len(images)
    transforms = [ndl.data.RandomCrop(12), ndl.data.RandomFlipHorizontal(0.4)]
    ds = ndl.data.MNISTDataset(str(data.mnist_images), str(data.mnist_labels), transforms=transforms)
    # spread over the whole file, the last image included
    indices = [1, 42] + [int(f * n) for f in (0.1, 0.2, 0.3, 0.4, 0.5)] + [int(0.5 * n) + 5, n - 1]
    np.random.seed(0)
    got = [ds[i][0] for i in indices]
    batch = ds[np.array(indices)][0]
    np.random.seed(0)
    expected = []
    for i in indices:
        img = (images[i] / np.float32(255)).astype(np.float32).reshape(28, 28, 1)
        img = ref_crop(img, 12)
        img = ref_flip(img, 0.4)
        expected.append(img.reshape(784))
    expected_batch = []
    for i in indices:  # the batch continues the same RNG stream, image by image
        img = (images[i] / np.float32(255)).astype(np.float32).reshape(28, 28, 1)
        expected_batch.append(ref_flip(ref_crop(img, 12), 0.4).reshape(784))
    for g, e in zip(got, expected):
        assert g.shape == (784,) and g.dtype == np.float32
        np.testing.assert_allclose(g, e, rtol=1e-6)
    assert batch.shape == (len(indices), 784)
    np.testing.assert_allclose(batch, np.stack(expected_batch), rtol=1e-6)
    # the stored data is untouched by the transforms
    np.testing.assert_allclose(ds.X[42], images[42].ravel() / 255.0, rtol=1e-6)


def test_mnist_dataloader_batches(mnist_dataset, mnist_raw):
    images, labels = mnist_raw
    loader = ndl.data.DataLoader(mnist_dataset, batch_size=5)
    for k, (X, y) in zip(range(3), loader):
        assert X.shape == (5, 784) and y.shape == (5,)
        assert isinstance(X.cached_data, nd.NDArray) and X.dtype == "float32"
        assert isinstance(y.cached_data, nd.NDArray)
        np.testing.assert_allclose(X.numpy(), images[5 * k:5 * k + 5].reshape(5, 784) / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(y.numpy(), labels[5 * k:5 * k + 5])
    np.random.seed(3)
    X, y = next(iter(ndl.data.DataLoader(mnist_dataset, batch_size=64, shuffle=True)))
    np.random.seed(3)
    idx = np.random.permutation(len(labels))[:64]
    assert X.shape == (64, 784)
    np.testing.assert_array_equal(y.numpy(), labels[idx])


# --- MNIST bad input (small files written here) ----------------------------------------

@pytest.fixture
def small_mnist(tmp_path):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(5, 28, 28)).astype(np.uint8)
    labels = rng.randint(0, 10, size=5).astype(np.uint8)
    img_path = write_gz(tmp_path / "img.gz", idx_bytes(2051, (5, 28, 28), images.tobytes()))
    lbl_path = write_gz(tmp_path / "lbl.gz", idx_bytes(2049, (5,), labels.tobytes()))
    return tmp_path, images, labels, img_path, lbl_path


def test_mnist_small_generated_files(small_mnist):
    _, images, labels, img_path, lbl_path = small_mnist
    ds = ndl.data.MNISTDataset(str(img_path), str(lbl_path))
    assert len(ds) == 5
    np.testing.assert_allclose(ds.X, images.reshape(5, 784) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y, labels)


def test_mnist_uncompressed_idx_is_accepted(small_mnist):
    tmp, images, labels, _, lbl_path = small_mnist
    raw = tmp / "img.idx"
    raw.write_bytes(idx_bytes(2051, (5, 28, 28), images.tobytes()))
    ds = ndl.data.MNISTDataset(str(raw), str(lbl_path))
    np.testing.assert_allclose(ds.X, images.reshape(5, 784) / 255.0, rtol=1e-6)


def test_mnist_missing_file(small_mnist):
    tmp, _, _, img_path, lbl_path = small_mnist
    missing = str(tmp / "nope-images.gz")
    with pytest.raises(FileNotFoundError, match="nope-images.gz"):
        ndl.data.MNISTDataset(missing, str(lbl_path))
    with pytest.raises(FileNotFoundError, match="nope-images.gz"):
        ndl.data.MNISTDataset(str(img_path), missing)


def test_mnist_bad_magic_number(small_mnist):
    _, _, _, img_path, lbl_path = small_mnist
    with pytest.raises(ValueError, match=r"(?s)lbl\.gz.*magic"):
        ndl.data.MNISTDataset(str(lbl_path), str(lbl_path))  # a label file given as images
    with pytest.raises(ValueError, match=r"(?s)img\.gz.*magic"):
        ndl.data.MNISTDataset(str(img_path), str(img_path))


def test_mnist_header_count_mismatch(small_mnist):
    tmp, images, _, _, lbl_path = small_mnist
    bad = write_gz(tmp / "short.gz", idx_bytes(2051, (6, 28, 28), images.tobytes()))
    with pytest.raises(ValueError, match=r"(?s)short\.gz.*header"):
        ndl.data.MNISTDataset(str(bad), str(lbl_path))
    extra = write_gz(tmp / "long.gz", idx_bytes(2049, (4,), b"\x01" * 5))
    with pytest.raises(ValueError, match=r"long\.gz"):
        ndl.data.MNISTDataset(str(tmp / "img.gz"), str(extra))


def test_mnist_truncated_header(small_mnist):
    tmp, _, _, _, lbl_path = small_mnist
    tiny = write_gz(tmp / "tiny.gz", struct.pack(">I", 2051) + b"\x00\x00")
    with pytest.raises(ValueError, match=r"tiny\.gz"):
        ndl.data.MNISTDataset(str(tiny), str(lbl_path))
    empty = write_gz(tmp / "empty.gz", b"")
    with pytest.raises(ValueError, match=r"empty\.gz"):
        ndl.data.MNISTDataset(str(empty), str(lbl_path))


def test_mnist_truncated_gzip(small_mnist):
    tmp, _, _, img_path, lbl_path = small_mnist
    data = img_path.read_bytes()
    cut = tmp / "cut.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"(?s)cut\.gz.*gzip"):
        ndl.data.MNISTDataset(str(cut), str(lbl_path))
    garbled = tmp / "garbled.gz"
    garbled.write_bytes(data[:10] + bytes(b ^ 0xFF for b in data[10:]))
    with pytest.raises(ValueError, match=r"garbled\.gz"):
        ndl.data.MNISTDataset(str(garbled), str(lbl_path))


def test_mnist_image_label_count_mismatch(small_mnist):
    tmp, _, labels, img_path, _ = small_mnist
    four = write_gz(tmp / "four.gz", idx_bytes(2049, (4,), labels[:4].tobytes()))
    with pytest.raises(ValueError, match=r"(?s)5 images.*4 labels"):
        ndl.data.MNISTDataset(str(img_path), str(four))


def test_mnist_directory_instead_of_file(small_mnist):
    tmp, _, _, _, lbl_path = small_mnist
    with pytest.raises(IsADirectoryError, match="directory"):
        ndl.data.MNISTDataset(str(tmp), str(lbl_path))


# --- CIFAR-10 on generated pickle batches ---------------------------------------------

CIFAR_TRAIN_SIZES = [4, 3, 2, 5, 1]
CIFAR_TEST_SIZE = 6


def write_cifar_batch(path, data, labels):
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"generated", b"labels": list(labels), b"data": data,
                     b"filenames": [b"x.png"] * len(labels)}, f)


@pytest.fixture
def cifar_dir(tmp_path):
    rng = np.random.RandomState(42)
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    train_data, train_labels = [], []
    for k, n in enumerate(CIFAR_TRAIN_SIZES, start=1):
        data = rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)
        labels = [int(v) for v in rng.randint(0, 10, size=n)]
        write_cifar_batch(base / f"data_batch_{k}", data, labels)
        train_data.append(data)
        train_labels += labels
    test_data = rng.randint(0, 256, size=(CIFAR_TEST_SIZE, 3072)).astype(np.uint8)
    test_labels = [int(v) for v in rng.randint(0, 10, size=CIFAR_TEST_SIZE)]
    write_cifar_batch(base / "test_batch", test_data, test_labels)
    return base, np.concatenate(train_data), train_labels, test_data, test_labels


def cifar_expected_images(data):
    """Row = 1024 red, 1024 green, 1024 blue, each plane row-major 32 x 32."""
    n = data.shape[0]
    out = np.empty((n, 3, 32, 32), dtype=np.float64)
    for c in range(3):
        for r in range(32):
            out[:, c, r, :] = data[:, c * 1024 + r * 32: c * 1024 + r * 32 + 32]
    return out / 255.0


def test_cifar_train_and_test(cifar_dir):
    base, train_data, train_labels, test_data, test_labels = cifar_dir
    train = ndl.data.CIFAR10Dataset(str(base), train=True)
    test = ndl.data.CIFAR10Dataset(str(base), train=False)
    assert len(train) == sum(CIFAR_TRAIN_SIZES) and len(test) == CIFAR_TEST_SIZE
    assert train.X.shape == (15, 3, 32, 32) and train.X.dtype == np.float32
    np.testing.assert_allclose(train.X, cifar_expected_images(train_data), rtol=1e-6)
    np.testing.assert_allclose(test.X, cifar_expected_images(test_data), rtol=1e-6)
    assert list(train.y) == train_labels and list(test.y) == test_labels
    # spot check of the channel/row layout: pixel (row 2, col 5) of the green plane
    assert train.X[0, 1, 2, 5] == pytest.approx(train_data[0, 1024 + 2 * 32 + 5] / 255.0)


def test_cifar_getitem(cifar_dir):
    base, train_data, train_labels, _, _ = cifar_dir
    ds = ndl.data.CIFAR10Dataset(base, train=True)
    x, y = ds[7]
    assert isinstance(x, np.ndarray) and x.shape == (3, 32, 32)
    assert y == train_labels[7]
    np.testing.assert_allclose(x, cifar_expected_images(train_data[7:8])[0], rtol=1e-6)
    x, y = ds[np.array([3, 0])]
    assert x.shape == (2, 3, 32, 32) and list(y) == [train_labels[3], train_labels[0]]


def test_cifar_dataloader(cifar_dir):
    base, train_data, train_labels, _, _ = cifar_dir
    ds = ndl.data.CIFAR10Dataset(str(base), train=True)
    batches = list(ndl.data.DataLoader(ds, batch_size=4))
    assert [b[0].shape for b in batches] == [(4, 3, 32, 32)] * 3 + [(3, 3, 32, 32)]
    for X, y in batches:
        assert isinstance(X.cached_data, nd.NDArray) and X.dtype == "float32"
        assert isinstance(y.cached_data, nd.NDArray)
    np.testing.assert_allclose(batches[1][0].numpy(), cifar_expected_images(train_data[4:8]), rtol=1e-6)
    np.testing.assert_array_equal(batches[1][1].numpy(), train_labels[4:8])
    np.random.seed(2)
    X, y = next(iter(ndl.data.DataLoader(ds, batch_size=6, shuffle=True)))
    np.random.seed(2)
    idx = np.random.permutation(15)[:6]
    assert X.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(y.numpy(), np.array(train_labels)[idx])


def test_cifar_transforms_see_hwc_images(cifar_dir):
    base, train_data, _, _, _ = cifar_dir
    ds = ndl.data.CIFAR10Dataset(str(base), train=True,
                                 transforms=[ndl.data.RandomCrop(4), ndl.data.RandomFlipHorizontal(0.5)])
    indices = [0, 5, 9, 14]
    np.random.seed(1)
    got = [ds[i][0] for i in indices]
    np.random.seed(1)
    want = []
    for i in indices:
        chw = cifar_expected_images(train_data[i:i + 1])[0].astype(np.float32)
        hwc = ref_flip(ref_crop(chw.transpose(1, 2, 0), 4), 0.5)
        want.append(hwc.transpose(2, 0, 1))
    for g, w in zip(got, want):
        assert g.shape == (3, 32, 32) and g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_cifar_missing_folder_and_file(cifar_dir, tmp_path):
    base = cifar_dir[0]
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        ndl.data.CIFAR10Dataset(str(tmp_path / "no-such-dir"), train=True)
    os.remove(base / "data_batch_3")
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        ndl.data.CIFAR10Dataset(str(base), train=True)
    assert len(ndl.data.CIFAR10Dataset(str(base), train=False)) == CIFAR_TEST_SIZE


def test_cifar_truncated_or_corrupt_pickle(cifar_dir):
    base = cifar_dir[0]
    path = base / "test_batch"
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match="test_batch"):
        ndl.data.CIFAR10Dataset(str(base), train=False)
    path.write_bytes(b"this is not a pickle at all")
    with pytest.raises(ValueError, match="test_batch"):
        ndl.data.CIFAR10Dataset(str(base), train=False)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="test_batch"):
        ndl.data.CIFAR10Dataset(str(base), train=False)


@pytest.mark.parametrize("missing", [b"data", b"labels"])
def test_cifar_missing_keys(cifar_dir, missing):
    base = cifar_dir[0]
    d = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}
    del d[missing]
    with open(base / "data_batch_2", "wb") as f:
        pickle.dump(d, f)
    with pytest.raises(ValueError, match=r"(?s)data_batch_2.*" + missing.decode()):
        ndl.data.CIFAR10Dataset(str(base), train=True)


def test_cifar_bad_contents(cifar_dir):
    base = cifar_dir[0]
    path = base / "test_batch"
    cases = [
        ["not", "a", "dict"],
        {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]},  # str keys, not bytes
        {b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]},
        {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1, 2]},
        {b"data": np.zeros((2, 3072), np.float32) + 0.5, b"labels": [0, 1]},
    ]
    for content in cases:
        with open(path, "wb") as f:
            pickle.dump(content, f)
        with pytest.raises(ValueError, match="test_batch"):
            ndl.data.CIFAR10Dataset(str(base), train=False)


# --- Penn Treebank style corpus -----------------------------------------------------------

@pytest.fixture
def ptb_dir(tmp_path, data):
    with open(data.shakespeare, encoding="utf-8") as f:
        lines = [next(f) for _ in range(60)]
    train_lines, test_lines = lines[:40], lines[40:]
    (tmp_path / "train.txt").write_text("".join(train_lines), encoding="utf-8")
    (tmp_path / "test.txt").write_text("".join(test_lines), encoding="utf-8")
    return tmp_path, train_lines, test_lines


def ref_tokenize(lines, vocab):
    ids = []
    for line in lines:
        for w in line.split() + ["<eos>"]:
            if w not in vocab:
                vocab[w] = len(vocab)
            ids.append(vocab[w])
    return ids


def test_dictionary():
    d = ndl.data.Dictionary()
    assert len(d) == 0
    assert [d.add_word(w) for w in ["a", "b", "a", "c", "b"]] == [0, 1, 0, 2, 1]
    assert d.idx2word == ["a", "b", "c"]
    assert d.word2idx == {"a": 0, "b": 1, "c": 2}
    assert len(d) == 3


def test_corpus_tokenization(ptb_dir):
    base, train_lines, test_lines = ptb_dir
    assert any(not line.strip() for line in train_lines)  # blank lines give a lone <eos>
    vocab = {}
    want_train = ref_tokenize(train_lines, vocab)
    want_test = ref_tokenize(test_lines, vocab)
    corpus = ndl.data.Corpus(str(base))
    assert corpus.train == want_train
    assert corpus.test == want_test
    assert corpus.dictionary.word2idx == vocab
    assert corpus.dictionary.idx2word == sorted(vocab, key=vocab.get)
    assert len(corpus.dictionary) == len(vocab)
    assert corpus.dictionary.idx2word[corpus.train[0]] == "First"


@pytest.mark.parametrize("max_lines", [0, 1, 7, 1000])
def test_corpus_max_lines(ptb_dir, max_lines):
    base, train_lines, test_lines = ptb_dir
    vocab = {}
    want_train = ref_tokenize(train_lines[:max_lines], vocab)
    want_test = ref_tokenize(test_lines[:max_lines], vocab)
    corpus = ndl.data.Corpus(base, max_lines=max_lines)
    assert corpus.train == want_train and corpus.test == want_test
    assert len(corpus.dictionary) == len(vocab)


def test_batchify_layout_by_hand():
    got = ndl.data.batchify(list(range(11)), 3, ndl.cpu(), "float32")
    assert isinstance(got, np.ndarray)
    # nbatch = 11 // 3 = 3; column j is data[3j : 3j + 3]; token 9 and 10 dropped
    assert got.tolist() == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]


def test_batchify_on_corpus(ptb_dir):
    corpus = ndl.data.Corpus(str(ptb_dir[0]))
    data = corpus.train
    bs = 6
    batches = ndl.data.batchify(data, bs, device=ndl.cpu(), dtype="float32")
    nbatch = len(data) // bs
    assert batches.shape == (nbatch, bs)
    for j in range(bs):
        assert batches[:, j].tolist() == data[j * nbatch:(j + 1) * nbatch]


def test_get_batch(ptb_dir):
    corpus = ndl.data.Corpus(str(ptb_dir[0]))
    bs, bptt = 4, 5
    batches = ndl.data.batchify(corpus.train, bs, ndl.cpu(), "float32")
    nbatch = batches.shape[0]
    for device in [ndl.cpu(), ndl.cpu_numpy()]:
        X, target = ndl.data.get_batch(batches, 0, bptt, device=device, dtype="float32")
        assert X.shape == (bptt, bs) and target.shape == (bptt * bs,)
        assert X.device == device and target.device == device
        assert X.dtype == "float32" and target.dtype == "float32"
        assert isinstance(X.cached_data, nd.NDArray) and isinstance(target.cached_data, nd.NDArray)
        np.testing.assert_array_equal(X.numpy(), batches[0:bptt])
        want_target = [batches[r, c] for r in range(1, bptt + 1) for c in range(bs)]  # row-major
        np.testing.assert_array_equal(target.numpy(), want_target)
    # near the end the sequence is shorter: L = nbatch - 1 - i
    i = nbatch - 3
    X, target = ndl.data.get_batch(batches, i, bptt)
    assert X.shape == (2, bs) and target.shape == (2 * bs,)
    np.testing.assert_array_equal(X.numpy(), batches[i:i + 2])
    np.testing.assert_array_equal(target.numpy(), batches[i + 1:i + 3].reshape(-1))
    assert X.device == ndl.default_device()


def test_ptb_missing_paths(ptb_dir, tmp_path):
    base = ptb_dir[0]
    with pytest.raises(FileNotFoundError, match="no-ptb-here"):
        ndl.data.Corpus(str(tmp_path / "no-ptb-here"))
    os.remove(base / "test.txt")
    with pytest.raises(FileNotFoundError, match="test.txt"):
        ndl.data.Corpus(str(base))
    with pytest.raises(NotADirectoryError, match="train.txt"):
        ndl.data.Corpus(str(base / "train.txt"))


def test_ptb_bad_text_and_arguments(ptb_dir):
    base = ptb_dir[0]
    with pytest.raises(ValueError, match="max_lines"):
        ndl.data.Corpus(str(base), max_lines=-1)
    (base / "test.txt").write_bytes(b"ok line\n\xff\xfe broken \x80\n")
    with pytest.raises(ValueError, match="test.txt"):
        ndl.data.Corpus(str(base))


def test_batchify_and_get_batch_bad_input():
    with pytest.raises(ValueError, match="batch_size"):
        ndl.data.batchify([1, 2, 3], 0, None, None)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        ndl.data.batchify([1, 2, 3], 4, None, None)
    batches = ndl.data.batchify(list(range(20)), 2, None, None)  # 10 rows
    with pytest.raises(ValueError, match="bptt"):
        ndl.data.get_batch(batches, 0, 0)
    with pytest.raises(ValueError, match="out of range"):
        ndl.data.get_batch(batches, 9, 3)
    with pytest.raises(ValueError, match="out of range"):
        ndl.data.get_batch(batches, -1, 3)
    with pytest.raises(ValueError, match="2-D"):
        ndl.data.get_batch(np.arange(10), 0, 3)
