"""DataLoader habits from PyTorch: independent iterators, per-sample (map-style) datasets
collated like torch.utils.data.default_collate, collate_fn, drop_last, and the errors.

The collated batches are compared with real torch DataLoaders over the same samples
(values, shapes and dtypes; needle stores float32/float64/int64/bool, so torch's uint8
and int32 correspond to int64, and torch's float64 to needle's float32 unless the loader
is given dtype="float64" -- the documented difference).
"""
import collections

import numpy as np
import pytest

import needle as ndl

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader as TorchLoader  # noqa: E402
from torch.utils.data import default_collate as torch_collate  # noqa: E402

DataLoader = ndl.data.DataLoader


def column(batches):
    """The first component of every batch as a list of Python lists."""
    return [batch[0].numpy().tolist() for batch in batches]


def ndarray_loader(n=10, batch_size=3, **kw):
    X = np.arange(n, dtype=np.float32).reshape(n, 1)
    return DataLoader(ndl.data.NDArrayDataset(X, np.arange(n)), batch_size=batch_size, **kw)


# --- independent iterators -----------------------------------------------------------

def test_zip_of_a_loader_with_itself_gives_pairs_of_the_same_batch():
    loader = ndarray_loader(10, 3)
    pairs = list(zip(loader, loader))
    assert len(pairs) == len(loader) == 4
    for k, ((xa, ya), (xb, yb)) in enumerate(pairs):
        expected = list(range(3 * k, min(3 * k + 3, 10)))
        assert ya.numpy().tolist() == expected and yb.numpy().tolist() == expected
        np.testing.assert_array_equal(xa.numpy(), xb.numpy())


def test_nested_loops_over_one_loader_see_every_pair():
    loader = ndarray_loader(7, 2)
    pairs = [(x[:, 0].numpy().tolist(), z[:, 0].numpy().tolist()) for x, _ in loader for z, _ in loader]
    batches = [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0]]
    assert len(pairs) == len(loader) ** 2 == 16
    assert pairs == [(a, b) for a in batches for b in batches]


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_peek_does_not_disturb_the_epoch_in_progress(shuffle):
    n, bs = 20, 6
    loader = ndarray_loader(n, bs, shuffle=shuffle)
    np.random.seed(3)
    it = iter(loader)
    first = next(it)[1].numpy().tolist()
    peek = next(iter(loader))[1].numpy().tolist()
    rest = [y.numpy().tolist() for _, y in it]
    np.random.seed(3)
    epoch = np.random.permutation(n) if shuffle else np.arange(n)
    peeked = np.random.permutation(n) if shuffle else np.arange(n)
    assert [first] + rest == [epoch[s:s + bs].tolist() for s in range(0, n, bs)]
    assert peek == peeked[:bs].tolist()


def test_each_iter_draws_exactly_one_permutation_and_keeps_it():
    n, bs = 30, 8
    loader = ndarray_loader(n, bs, shuffle=True)
    np.random.seed(5)
    it1, it2 = iter(loader), iter(loader)
    assert it1 is not it2 and len(it1) == len(it2) == len(loader) == 4
    got1, got2 = [], []
    for (_, y1), (_, y2) in zip(it1, it2):  # interleaved
        got1.append(y1.numpy())
        got2.append(y2.numpy())
    after = np.random.get_state()[1].copy()
    np.random.seed(5)
    p1, p2 = np.random.permutation(n), np.random.permutation(n)
    np.testing.assert_array_equal(np.concatenate(got1), p1)
    np.testing.assert_array_equal(np.concatenate(got2), p2)
    np.testing.assert_array_equal(np.random.get_state()[1], after)  # nothing else was drawn
    # loader.ordering is the latest iter()'s order
    np.testing.assert_array_equal(np.concatenate(loader.ordering), p2)


def test_next_on_the_loader_continues_the_latest_iterator_or_starts_one():
    loader = ndarray_loader(10, 4, shuffle=True)
    np.random.seed(1)
    first = next(loader)[1].numpy().tolist()  # no iter() yet: starts one, drawing a permutation
    second = next(loader)[1].numpy().tolist()
    np.random.seed(1)
    perm = np.random.permutation(10)
    assert first == perm[:4].tolist() and second == perm[4:8].tolist()
    np.testing.assert_array_equal(np.concatenate(loader.ordering), perm)

    it = iter(loader)
    a = next(it)[1].numpy().tolist()
    b = next(loader)[1].numpy().tolist()  # continues `it`
    c = next(it)[1].numpy().tolist()
    order = np.concatenate(loader.ordering).tolist()
    assert a + b + c[:2] == order
    with pytest.raises(StopIteration):
        next(loader)


def test_unshuffled_loader_draws_nothing_and_ordering_is_set_before_iterating():
    loader = ndarray_loader(5, 2)
    state = np.random.get_state()[1].copy()
    assert [o.tolist() for o in loader.ordering] == [[0, 1], [2, 3], [4]]
    its = [iter(loader) for _ in range(3)]
    assert [next(it)[0].numpy().tolist() for it in its] == [[[0.0], [1.0]]] * 3  # each starts at batch 0
    assert [o.tolist() for o in loader.ordering] == [[0, 1], [2, 3], [4]]
    np.testing.assert_array_equal(np.random.get_state()[1], state)


# --- per-sample (map-style) datasets against torch ----------------------------------

TORCH_TO_NEEDLE = {torch.float32: "float32", torch.float64: "float32", torch.int64: "int64",
                   torch.int32: "int64", torch.uint8: "int64", torch.bool: "bool"}


def assert_same_batch(ours, theirs, where="batch", float64=False):
    """Our collated batch against torch's, recursively: containers, shapes, values, dtypes."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and list(ours) == list(theirs), where
        for key in theirs:
            assert_same_batch(ours[key], theirs[key], f"{where}[{key!r}]", float64)
    elif isinstance(theirs, (list, tuple)):
        assert isinstance(ours, (list, tuple)) and len(ours) == len(theirs), where
        for k, (a, b) in enumerate(zip(ours, theirs)):
            assert_same_batch(a, b, f"{where}[{k}]", float64)
    else:
        assert isinstance(theirs, torch.Tensor), where
        assert isinstance(ours, ndl.Tensor), (where, type(ours))
        assert tuple(ours.shape) == tuple(theirs.shape), where
        expected = TORCH_TO_NEEDLE[theirs.dtype]
        if float64 and theirs.dtype == torch.float64:
            expected = "float64"
        assert ours.dtype == expected, (where, ours.dtype, theirs.dtype)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6, err_msg=where)


def compare_with_torch(dataset, batch_size, drop_last=False):
    ours = list(DataLoader(dataset, batch_size=batch_size, drop_last=drop_last))
    theirs = list(TorchLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=drop_last))
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert_same_batch(a, b)
    return ours


class PairDataset:
    """PyTorch's habit: a plain class, dataset[i] -> (float32 image, int label)."""

    def __init__(self, n=11):
        rng = np.random.RandomState(0)
        self.x = rng.rand(n, 2, 3).astype(np.float32)
        self.y = rng.randint(0, 10, size=n)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_tuple_samples_of_array_and_int_label_match_torch():
    ds = PairDataset(11)
    ours = compare_with_torch(ds, 4)
    assert isinstance(ours[0], tuple)  # the course's format: X, y = batch
    X, y = ours[0]
    assert X.shape == (4, 2, 3) and y.shape == (4,) and y.dtype == "int64"
    np.testing.assert_array_equal(y.numpy(), ds.y[:4])


class DictDataset:
    def __init__(self, n=9):
        rng = np.random.RandomState(1)
        self.images = rng.rand(n, 4)  # float64: torch keeps it, needle makes float32
        self.masks = rng.rand(n, 4) > 0.5
        self.ids = rng.randint(0, 255, size=n).astype(np.uint8)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "mask": self.masks[i], "id": self.ids[i],
                "meta": {"weight": 0.5 * i, "flag": i % 3 == 0, "pair": [i, 2 * i]}}


def test_dict_samples_with_nesting_match_torch():
    ours = compare_with_torch(DictDataset(9), 4)
    b = ours[0]
    assert b["image"].dtype == "float32" and b["mask"].dtype == "bool" and b["id"].dtype == "int64"
    assert isinstance(b["meta"]["pair"], list) and b["meta"]["pair"][1].numpy().tolist() == [0, 2, 4, 6]
    assert b["meta"]["flag"].numpy().tolist() == [True, False, False, True]


def test_dtype_keyword_applies_to_float_data_only():
    ds = DictDataset(5)
    (ours,) = DataLoader(ds, batch_size=5, dtype="float64")
    (theirs,) = TorchLoader(ds, batch_size=5)
    assert_same_batch(ours, theirs, float64=True)
    assert ours["image"].dtype == "float64" and ours["meta"]["weight"].dtype == "float64"
    assert ours["id"].dtype == "int64" and ours["mask"].dtype == "bool"


class NumberDataset:
    def __len__(self):
        return 7

    def __getitem__(self, i):
        return i, 0.25 * i, i % 2 == 0, np.float32(i) / 2, np.int32(-i)


def test_number_samples_match_torch():
    ours = compare_with_torch(NumberDataset(), 3)
    assert [t.dtype for t in ours[0]] == ["int64", "float32", "bool", "float32", "int64"]
    assert all(t.shape == (3,) for t in ours[0])


class TensorDataset:
    """Samples that are needle Tensors (and torch's twin with torch tensors)."""

    def __init__(self, make, n=6):
        rng = np.random.RandomState(2)
        self.x = rng.rand(n, 3).astype(np.float32)
        self.make = make

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.make(self.x[i]), self.make(np.array([i, i + 1], dtype=np.int64))


def test_tensor_samples_are_stacked_keeping_dtype_like_torch():
    ours = list(DataLoader(TensorDataset(lambda a: ndl.Tensor(a, dtype=str(a.dtype))), batch_size=4))
    theirs = list(TorchLoader(TensorDataset(torch.from_numpy), batch_size=4))
    for a, b in zip(ours, theirs):
        assert_same_batch(a, b)
    assert ours[0][1].dtype == "int64" and ours[0][1].shape == (4, 2)


def test_tensor_samples_keep_float64_and_move_to_the_loader_device():
    ds = TensorDataset(lambda a: ndl.Tensor(a, dtype="float64" if a.dtype.kind == "f" else "int64"))
    X, idx = next(iter(DataLoader(ds, batch_size=3, device=ndl.cpu_numpy(), dtype="float32")))
    assert X.dtype == "float64" and idx.dtype == "int64"  # Tensors keep their dtype
    assert X.device == ndl.cpu_numpy() and idx.device == ndl.cpu_numpy()
    np.testing.assert_allclose(X.numpy(), ds.x[:3])


def test_single_array_samples_give_one_tensor_per_batch():
    arr = np.random.RandomState(3).rand(10, 4).astype(np.float32)
    ours = compare_with_torch(arr, 4)  # a numpy array is itself a map-style dataset
    assert isinstance(ours[0], ndl.Tensor) and ours[0].shape == (4, 4)
    ours = compare_with_torch([float(v) for v in arr[:, 0]], 3)  # a list of numbers
    assert ours[-1].shape == (1,)


def test_list_samples_are_collated_position_by_position_like_torch():
    data = [[k, 10 * k, np.full(2, k, np.float32)] for k in range(5)]
    ours = compare_with_torch(data, 2)
    assert isinstance(ours[0], list) and ours[0][1].numpy().tolist() == [0, 10]


def test_namedtuple_samples_stay_namedtuples():
    Point = collections.namedtuple("Point", "x label")
    data = [Point(np.full(3, k, np.float32), k) for k in range(4)]
    ours = compare_with_torch(data, 4)
    assert isinstance(ours[0], Point) and ours[0].label.numpy().tolist() == [0, 1, 2, 3]


def test_shuffled_per_sample_loader_follows_one_permutation_per_epoch():
    ds = PairDataset(13)
    loader = DataLoader(ds, batch_size=5, shuffle=True)
    np.random.seed(9)
    epochs = [[(X.numpy(), y.numpy()) for X, y in loader] for _ in range(2)]
    np.random.seed(9)
    for epoch in epochs:
        perm = np.random.permutation(13)
        np.testing.assert_allclose(np.concatenate([X for X, _ in epoch]), ds.x[perm], rtol=1e-6)
        np.testing.assert_array_equal(np.concatenate([y for _, y in epoch]), ds.y[perm])


# --- which datasets are fetched with index arrays -----------------------------------

class NamedNDArrayDataset(ndl.data.NDArrayDataset):
    """Only __init__ changes: still a batched dataset."""

    def __init__(self, name, *arrays):
        super().__init__(*arrays)
        self.name = name


class SampleSubclass(ndl.data.NDArrayDataset):
    """PyTorch's habit on top of a batched dataset: dataset[i] returns one sample, with a
    per-sample normalisation that would silently differ on a whole batch."""

    def __getitem__(self, i):
        x, y = self.arrays[0][i], self.arrays[1][i]
        return (x - x.mean()) / x.std(), int(y)


class RecordingDataset(ndl.data.Dataset):
    """A needle Dataset subclass written PyTorch-style (no batched declaration)."""

    def __init__(self, n):
        super().__init__()
        self.n, self.requests = n, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.requests.append(i)
        return np.full((2, 2), i, np.float32), i


class BatchedRecordingDataset(RecordingDataset):
    batched_indexing = True

    def __getitem__(self, idx):
        self.requests.append(np.asarray(idx).tolist())
        return np.repeat(np.asarray(idx, np.float32)[:, None], 3, axis=1), np.asarray(idx)


def test_the_batched_declaration_and_its_inheritance():
    uses = ndl.data.uses_batched_indexing
    X = np.random.rand(6, 3)
    assert uses(ndl.data.NDArrayDataset(X))
    assert uses(NamedNDArrayDataset("x", X))  # inherits __getitem__ and its declaration
    assert not uses(SampleSubclass(X, np.arange(6)))  # overrides __getitem__ without declaring
    assert not uses(RecordingDataset(3)) and not uses(ndl.data.Dataset())
    assert uses(BatchedRecordingDataset(3))
    assert not uses([1, 2, 3]) and not uses(X) and not uses(PairDataset())
    assert ndl.data.MNISTDataset.batched_indexing and ndl.data.CIFAR10Dataset.batched_indexing


def test_needle_subclass_returning_one_sample_is_fetched_per_sample():
    ds = RecordingDataset(5)
    batches = list(DataLoader(ds, batch_size=2))
    assert ds.requests == [0, 1, 2, 3, 4] and all(type(i) is int for i in ds.requests)
    assert [b[0].shape for b in batches] == [(2, 2, 2), (2, 2, 2), (1, 2, 2)]
    assert batches[1][1].numpy().tolist() == [2, 3]


def test_subclass_overriding_getitem_is_not_handed_index_arrays():
    X = np.random.RandomState(4).rand(6, 5).astype(np.float32)
    ds = SampleSubclass(X, np.arange(6))
    ours = compare_with_torch(ds, 4)
    expected = (X - X.mean(axis=1, keepdims=True)) / X.std(axis=1, keepdims=True)
    np.testing.assert_allclose(np.concatenate([b[0].numpy() for b in ours]), expected, rtol=1e-5)


def test_batched_dataset_gets_one_index_array_per_batch():
    ds = BatchedRecordingDataset(7)
    np.random.seed(2)
    batches = list(DataLoader(ds, batch_size=3, shuffle=True))
    np.random.seed(2)
    perm = np.random.permutation(7)
    assert ds.requests == [perm[0:3].tolist(), perm[3:6].tolist(), perm[6:].tolist()]
    assert isinstance(batches[0], tuple) and batches[0][0].shape == (3, 3)


# --- collate_fn and drop_last ---------------------------------------------------------

def test_custom_collate_fn_gets_the_samples_in_order_and_its_result_is_the_batch():
    seen = []

    def collate(samples):
        seen.append(samples)
        return "batch", len(samples)

    X = np.arange(10.0).reshape(5, 2)
    loader = DataLoader(ndl.data.NDArrayDataset(X, np.arange(5)), batch_size=2, collate_fn=collate)
    assert list(loader) == [("batch", 2), ("batch", 2), ("batch", 1)]
    # a batched dataset is fetched sample by sample too, as in PyTorch
    assert [len(s) for s in seen] == [2, 2, 1]
    first = seen[0][0]
    assert isinstance(first, tuple) and first[0].shape == (2,) and first[1] == 0
    np.testing.assert_array_equal(seen[2][0][0], X[4])


def test_default_collate_passed_explicitly_applies_the_loader_options():
    X = np.random.rand(4, 2)
    loader = DataLoader(ndl.data.NDArrayDataset(X, np.arange(4)), batch_size=4,
                        collate_fn=ndl.data.default_collate, dtype="float64")
    xb, yb = next(iter(loader))
    assert xb.dtype == "float64" and yb.dtype == "int64"
    np.testing.assert_array_equal(xb.numpy(), X)


def test_default_collate_matches_torch_directly():
    samples = [(np.full((2,), k, np.float32), k, {"w": k / 4}) for k in range(3)]
    assert_same_batch(ndl.data.default_collate(samples), torch_collate(samples))
    assert isinstance(ndl.data.default_collate(samples), tuple)


@pytest.mark.parametrize("n, bs", [(10, 3), (9, 3), (2, 5)])
def test_drop_last_matches_torch(n, bs):
    ds = PairDataset(n)
    ours = compare_with_torch(ds, bs, drop_last=True)
    theirs = list(TorchLoader(ds, batch_size=bs, drop_last=True))
    assert len(ours) == len(DataLoader(ds, batch_size=bs, drop_last=True)) == len(theirs) == n // bs
    batched = DataLoader(ndl.data.NDArrayDataset(ds.x, ds.y), batch_size=bs, drop_last=True, shuffle=True)
    assert len(batched) == n // bs and all(y.shape == (bs,) for _, y in batched)


# --- errors -----------------------------------------------------------------------------

def first_batch(dataset, **kw):
    return next(iter(DataLoader(dataset, batch_size=kw.pop("batch_size", 3), **kw)))


def test_strings_are_refused_naming_the_position():
    data = [{"text": "hello", "x": 1.0}, {"text": "world", "x": 2.0}]
    with pytest.raises(TypeError, match=r"dataset\[0\] has a string at \['text'\].*collate_fn"):
        first_batch(data)
    with pytest.raises(TypeError, match="string"):
        ndl.data.default_collate(["a", "b"])
    with pytest.raises(TypeError, match=r"dataset\[0\] has a string at \[1\]"):
        first_batch([(k, np.str_("label")) for k in range(3)])
    with pytest.raises(TypeError, match="dtype <U1"):
        first_batch([np.array(["a", "b"])] * 3)


def test_structure_differing_from_the_first_sample_is_refused():
    with pytest.raises(ValueError, match=r"dataset\[2\] has a tuple of length 1 .*dataset\[0\] has one of length 2"):
        first_batch([(1, 2), (3, 4), (5,)])
    with pytest.raises(ValueError, match=r"dataset\[1\]'s dict .*missing \['b'\], extra \['c'\]"):
        first_batch([{"a": 1, "b": 2}, {"a": 1, "c": 2}])
    with pytest.raises(TypeError, match=r"dataset\[1\] has a dict at \[0\] where dataset\[0\] has a numpy array"):
        first_batch([(np.zeros(2), 1), ({"a": 1}, 2)])


def test_unequal_shapes_name_the_key_and_both_shapes():
    data = [{"img": np.zeros((2, 3)), "y": 0}, {"img": np.zeros((2, 3)), "y": 1}, {"img": np.zeros((3, 3)), "y": 2}]
    with pytest.raises(ValueError, match=r"\['img'\]: dataset\[0\] has shape \(2, 3\) but dataset\[2\] has "
                                         r"shape \(3, 3\)"):
        first_batch(data)
    with pytest.raises(ValueError, match=r"sample 1 has shape \(3,\)"):
        ndl.data.default_collate([ndl.Tensor(np.zeros(2)), ndl.Tensor(np.zeros(3))])


def test_other_bad_leaves_and_arguments():
    with pytest.raises(TypeError, match=r"has None at \[1\]"):
        first_batch([(1, None), (2, None)])
    with pytest.raises(TypeError, match="dtype complex"):
        first_batch([np.zeros(2, complex), np.zeros(2, complex)])
    with pytest.raises(TypeError, match="float32 tensor .* int64 one"):
        ndl.data.default_collate([ndl.Tensor(np.zeros(2)), ndl.Tensor(np.zeros(2), dtype="int64")])
    with pytest.raises(ValueError, match="no samples"):
        ndl.data.default_collate([])
    with pytest.raises(TypeError, match="collate_fn must be callable"):
        DataLoader([1, 2], batch_size=1, collate_fn="stack")
    with pytest.raises(TypeError, match="batch_size=None.*not supported"):
        DataLoader([1, 2], batch_size=None)


class BadBatched(ndl.data.Dataset):
    batched_indexing = True

    def __init__(self, result):
        super().__init__()
        self.result = result

    def __len__(self):
        return 4

    def __getitem__(self, idx):
        return self.result(np.asarray(idx))


def test_a_batched_declaration_that_does_not_hold_is_reported():
    with pytest.raises(TypeError, match="BadBatched declares batched_indexing.*returned ndarray"):
        first_batch(BadBatched(lambda idx: np.zeros((len(idx), 2))), batch_size=2)
    with pytest.raises(ValueError, match=r"for 2 indices part 1 has shape \(\)"):
        first_batch(BadBatched(lambda idx: (np.zeros((len(idx), 2)), 7)), batch_size=2)
    with pytest.raises(ValueError, match=r"for 1 indices part 0 has shape \(28, 28\)"):
        first_batch(BadBatched(lambda idx: (np.zeros((1, 784))[0].reshape(28, 28),)), batch_size=1)
