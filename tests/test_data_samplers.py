"""PyTorch's samplers, dataset helpers and DataLoader arguments in needle.data.

Deterministic outputs are compared with torch.utils.data itself: sequential orders,
BatchSampler groupings and lengths, random_split sizes, TensorDataset / Subset /
ConcatDataset samples and the batches a loader makes of them. Random orders come from
numpy (the global RNG or a given generator), not from torch's generator, so they are checked
against the numpy draw they are documented to be, and structurally or statistically
(permutations, coverage, frequencies). Worker processes: tests/test_dataloader_workers.py.
"""
import warnings

import numpy as np
import pytest

import needle as ndl
from needle.data import (
    BatchSampler,
    ConcatDataset,
    DataLoader,
    NDArrayDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    Subset,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
    random_split,
)

torch = pytest.importorskip("torch")
import torch.utils.data as tud  # noqa: E402


def column(batches, k=1):
    return [b[k].numpy().tolist() for b in batches]


def same_state(a, b):
    return all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(a, b))


# --- sequential and batch samplers against torch ------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 7])
def test_sequential_sampler_matches_torch(n):
    data = list(range(n))
    assert list(SequentialSampler(data)) == list(tud.SequentialSampler(data))
    assert len(SequentialSampler(data)) == n


@pytest.mark.parametrize("n, bs, drop_last", [(10, 3, False), (10, 3, True), (9, 3, True), (2, 5, False),
                                              (2, 5, True), (0, 2, False)])
def test_batch_sampler_groups_and_counts_like_torch(n, bs, drop_last):
    ours = BatchSampler(SequentialSampler(range(n)), bs, drop_last)
    theirs = tud.BatchSampler(tud.SequentialSampler(range(n)), bs, drop_last)
    assert list(ours) == list(theirs)
    assert len(ours) == len(theirs)
    order = [4, 0, 3, 1, 2, 6, 5]  # any iterable of indices works as the sampler, in its order
    assert list(BatchSampler(order, bs, drop_last)) == list(tud.BatchSampler(order, bs, drop_last))


@pytest.mark.parametrize("bs, drop_last", [(0, False), (True, False), (2.0, False), (-1, False), (2, "yes"),
                                           (2, None)])
def test_batch_sampler_bad_arguments_are_value_errors_like_torch(bs, drop_last):
    with pytest.raises(ValueError) as theirs:
        tud.BatchSampler(range(4), bs, drop_last)
    with pytest.raises(ValueError, match="batch_size must be a positive integer|drop_last must be True or False"):
        BatchSampler(range(4), bs, drop_last)
    assert theirs.type is ValueError
    with pytest.raises(TypeError, match="iterable of indices"):
        BatchSampler(5, 2, False)


# --- random samplers -------------------------------------------------------------------------------

def test_random_sampler_draws_one_global_permutation_per_iter():
    data = list(range(12))
    sampler = RandomSampler(data)
    np.random.seed(4)
    first, second = list(sampler), list(sampler)
    np.random.seed(4)
    assert first == np.random.permutation(12).tolist()  # the documented draw, the shuffle's own
    assert second == np.random.permutation(12).tolist()
    assert first != second and sorted(first) == data and len(sampler) == 12


def test_random_sampler_draws_nothing_until_iterated():
    np.random.seed(1)
    before = np.random.get_state()
    sampler = RandomSampler(range(10))
    loader = DataLoader(NDArrayDataset(np.arange(10.0), np.arange(10)), batch_size=4, sampler=sampler)
    assert len(loader) == 3
    assert same_state(before, np.random.get_state())


@pytest.mark.parametrize("num_samples", [5, 12, 25])
def test_random_sampler_without_replacement_covers_evenly(num_samples):
    n = 12
    np.random.seed(0)
    drawn = list(RandomSampler(range(n), num_samples=num_samples))
    assert len(drawn) == num_samples
    counts = np.bincount(drawn, minlength=n)
    assert counts.max() - counts.min() <= 1 and counts.min() == num_samples // n  # whole permutations first
    if num_samples < n:
        assert len(set(drawn)) == num_samples


def test_random_sampler_with_replacement_is_uniform():
    np.random.seed(0)
    drawn = np.array(list(RandomSampler(range(5), replacement=True, num_samples=20000)))
    assert drawn.min() >= 0 and drawn.max() <= 4
    counts = np.bincount(drawn, minlength=5)
    chi2 = ((counts - 4000) ** 2 / 4000).sum()
    assert chi2 < 20.5  # 4 degrees of freedom: p < 0.0004 for a uniform sampler


def test_random_sampler_with_replacement_repeats_indices():
    np.random.seed(3)
    drawn = list(RandomSampler(range(20), replacement=True))
    assert len(drawn) == 20 and len(set(drawn)) < 20  # P(no repeat in 20 of 20) = 20!/20^20


class Holder:
    """Stands for a needle Generator: an object with a numpy generator inside."""

    def __init__(self, seed):
        self._rng = np.random.default_rng(seed)

    def manual_seed(self, seed):
        self._rng = np.random.default_rng(seed)
        return self


@pytest.mark.parametrize("make, reference", [
    (lambda: np.random.default_rng(7), lambda: np.random.default_rng(7)),
    (lambda: np.random.RandomState(7), lambda: np.random.RandomState(7)),
    (lambda: Holder(7), lambda: np.random.default_rng(7)),
], ids=["Generator", "RandomState", "holder"])
def test_a_generator_gives_its_own_reproducible_draws_and_leaves_the_global_rng_alone(make, reference):
    np.random.seed(0)
    before = np.random.get_state()
    ref = reference()
    gen = make()
    sampler = RandomSampler(range(9), generator=gen)
    assert list(sampler) == ref.permutation(9).tolist()
    assert list(SubsetRandomSampler([10, 20, 30, 40], generator=gen)) == [[10, 20, 30, 40][i] for i in
                                                                          ref.permutation(4)]
    loader = DataLoader(NDArrayDataset(np.arange(6.0), np.arange(6)), batch_size=4, shuffle=True, generator=gen)
    assert np.concatenate(column(loader)).tolist() == ref.permutation(6).tolist()
    assert same_state(before, np.random.get_state())


def test_a_holder_reseeded_by_replacing_its_generator_is_followed():
    holder = Holder(1)
    sampler = RandomSampler(range(8), generator=holder)
    first = list(sampler)
    holder.manual_seed(1)
    assert list(sampler) == first


def test_subset_random_sampler_permutes_the_given_indices():
    indices = [3, 8, 1, 9, 4]
    sampler = SubsetRandomSampler(indices)
    np.random.seed(2)
    drawn = list(sampler)
    np.random.seed(2)
    assert drawn == [indices[i] for i in np.random.permutation(5)]
    assert sorted(drawn) == sorted(indices) and len(sampler) == 5
    firsts = {tuple(sampler)[0] for _ in range(60)}
    assert firsts == set(indices)  # every index comes first sometimes (P(miss) < 5 * 0.8^60)


def test_weighted_random_sampler_follows_the_weights():
    np.random.seed(0)
    weights = [0.0, 1.0, 3.0, 0.0, 4.0]
    drawn = np.array(list(WeightedRandomSampler(weights, 16000)))
    counts = np.bincount(drawn, minlength=5)
    assert counts[0] == counts[3] == 0
    expected = np.array([1.0, 3.0, 4.0]) / 8 * 16000
    assert (((counts[[1, 2, 4]] - expected) ** 2) / expected).sum() < 18.4  # 2 dof: p < 1e-4
    once = list(WeightedRandomSampler(weights, 3, replacement=False))
    assert sorted(once) == [1, 2, 4]
    assert len(WeightedRandomSampler(weights, 7)) == 7


@pytest.mark.parametrize("make, error, message", [
    (lambda: RandomSampler(range(3), replacement=1), TypeError, "replacement must be True or False"),
    (lambda: RandomSampler(range(3), num_samples=0), ValueError, "num_samples must be a positive integer"),
    (lambda: RandomSampler([]), ValueError, r"num_samples must be a positive integer, got 0 \(the data source is empty"),
    (lambda: RandomSampler(5), TypeError, "needs a data_source with __len__"),
    (lambda: RandomSampler(range(3), generator=torch.Generator()), TypeError, "generator must be None"),
    (lambda: RandomSampler(range(3), generator=42), TypeError, "generator must be None"),
    (lambda: SubsetRandomSampler(5), TypeError, "indices must be a sequence"),
    (lambda: WeightedRandomSampler([1.0, -1.0], 2), ValueError, "non-negative"),
    (lambda: WeightedRandomSampler([[1.0, 2.0]], 2), ValueError, "1-D"),
    (lambda: WeightedRandomSampler([1.0, 2.0], 0), ValueError, "num_samples must be a positive integer"),
    (lambda: WeightedRandomSampler([1.0, 2.0], 2, replacement=1), ValueError, "replacement must be True or False"),
    (lambda: WeightedRandomSampler([1.0, 0.0], 2, replacement=False), ValueError, "only 1 weights are non-zero"),
    (lambda: SequentialSampler(5), TypeError, "needs a data_source with __len__"),
])
def test_bad_sampler_arguments_are_refused(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_torch_raises_the_same_error_types():
    with pytest.raises(TypeError):
        tud.RandomSampler(range(3), replacement=1)
    with pytest.raises(ValueError):
        tud.RandomSampler(range(3), num_samples=0)
    with pytest.raises(ValueError):
        tud.WeightedRandomSampler([1.0, 2.0], 2, replacement=1)


def test_sampler_base_class_is_abstract_and_custom_samplers_drive_the_loader():
    class Reversed(Sampler):
        def __init__(self, n):
            self.n = n

        def __iter__(self):
            return iter(range(self.n - 1, -1, -1))

        def __len__(self):
            return self.n

    with pytest.raises(NotImplementedError):
        iter(Sampler())
    loader = DataLoader(NDArrayDataset(np.arange(5.0), np.arange(5)), batch_size=2, sampler=Reversed(5))
    assert column(loader) == [[4, 3], [2, 1], [0]]


# --- the loader with samplers and batch samplers, against torch ---------------------------------------

class Pairs:
    """A PyTorch-style map dataset: dataset[i] -> (float32 features, int label)."""

    def __init__(self, n=10):
        self.x = np.random.RandomState(0).rand(n, 3).astype(np.float32)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(i) * 2


def assert_batches_equal(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert x.dtype == str(y.dtype).replace("torch.", "")
            np.testing.assert_array_equal(x.numpy(), y.numpy())


@pytest.mark.parametrize("bs, drop_last", [(3, False), (3, True), (4, False)])
def test_batch_sampler_loader_matches_torch(bs, drop_last):
    data = Pairs(10)
    ours = DataLoader(data, batch_sampler=BatchSampler(SequentialSampler(data), bs, drop_last))
    theirs = tud.DataLoader(data, batch_sampler=tud.BatchSampler(tud.SequentialSampler(data), bs, drop_last))
    assert len(ours) == len(theirs) and ours.batch_size is None and theirs.batch_size is None
    assert_batches_equal(list(ours), list(theirs))
    custom = [[9, 0], [4], [1, 2, 3]]  # any iterable of index lists
    assert_batches_equal(list(DataLoader(data, batch_sampler=custom)), list(tud.DataLoader(data, batch_sampler=custom)))


@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_loader_lengths_and_batches_match_torch(drop_last):
    data = Pairs(11)
    order = [10, 2, 5, 7, 1, 0, 3, 9, 8, 4, 6]
    ours = DataLoader(data, batch_size=3, sampler=order, drop_last=drop_last)
    theirs = tud.DataLoader(data, batch_size=3, sampler=order, drop_last=drop_last)
    assert len(ours) == len(theirs)
    assert_batches_equal(list(ours), list(theirs))


def test_a_random_sampler_loader_under_the_global_seed_equals_shuffle():
    data = NDArrayDataset(np.arange(13.0), np.arange(13))
    np.random.seed(5)
    shuffled = column(DataLoader(data, batch_size=4, shuffle=True))
    np.random.seed(5)
    sampled = column(DataLoader(data, batch_size=4, sampler=RandomSampler(data)))
    assert sampled == shuffled


@pytest.mark.parametrize("kw", [dict(batch_size=2), dict(shuffle=True), dict(sampler=[0, 1]), dict(drop_last=True)])
def test_batch_sampler_excludes_the_other_batching_arguments_like_torch(kw):
    with pytest.raises(ValueError, match="mutually exclusive"):
        tud.DataLoader(Pairs(), batch_sampler=[[0]], **kw)
    with pytest.raises(ValueError, match="mutually exclusive"):
        DataLoader(Pairs(), batch_sampler=[[0]], **kw)


@pytest.mark.parametrize("kw, error, message", [
    (dict(prefetch_factor=2), ValueError, "prefetch_factor only applies with worker processes"),
    (dict(persistent_workers=True), ValueError, "persistent_workers needs num_workers > 0"),
    (dict(num_workers=-1), ValueError, "num_workers must be >= 0"),
    (dict(timeout=-1), ValueError, "timeout must be >= 0"),
])
def test_worker_arguments_without_workers_are_refused_like_torch(kw, error, message):
    with pytest.raises(error):
        tud.DataLoader(Pairs(), **kw)
    with pytest.raises(error, match=message):
        DataLoader(Pairs(), **kw)


@pytest.mark.parametrize("kw, error, message", [
    (dict(num_workers=1.5), TypeError, "num_workers must be an integer"),
    (dict(num_workers=1, prefetch_factor=0), ValueError, "prefetch_factor must be at least 1"),
    (dict(pin_memory="yes"), TypeError, "pin_memory must be True or False"),
    (dict(worker_init_fn=3), TypeError, "worker_init_fn must be callable"),
    (dict(sampler=5), TypeError, "sampler must be an iterable"),
    (dict(batch_sampler=5), TypeError, "batch_sampler must be an iterable"),
    (dict(generator=123), TypeError, "DataLoader: generator must be None"),
    (dict(num_workers=1, multiprocessing_context="threads"), ValueError, "multiprocessing_context must be one of"),
    (dict(num_workers=1, multiprocessing_context=3), TypeError, "multiprocessing_context must be None"),
])
def test_bad_loader_arguments_are_refused(kw, error, message):
    with pytest.raises(error, match=message):
        DataLoader(Pairs(), **kw)


def test_bad_indices_from_samplers_are_reported_when_iterating():
    with pytest.raises(TypeError, match="the sampler must yield integer indices, got 'a'"):
        list(DataLoader(Pairs(), sampler=["a"]))
    with pytest.raises(TypeError, match="the batch_sampler must yield lists of integer indices"):
        list(DataLoader(Pairs(), batch_sampler=[[0, 1.5]]))


def test_len_of_a_loader_needs_the_samplers_len():
    class NoLen:
        def __iter__(self):
            return iter([2, 0, 1])

    loader = DataLoader(Pairs(), batch_size=2, sampler=NoLen())
    assert column(loader) == [[4, 0], [2]]
    with pytest.raises(TypeError, match="has no len"):
        len(loader)


def test_pin_memory_and_the_other_accepted_options_change_nothing():
    data = Pairs(7)
    plain = list(DataLoader(data, batch_size=3))
    pinned = list(DataLoader(data, batch_size=3, pin_memory=True, pin_memory_device="", in_order=True, timeout=0))
    assert_batches_equal(pinned, [tuple(torch.tensor(x.numpy()) for x in b) for b in plain])


def test_shuffle_without_a_generator_keeps_the_courses_single_permutation_draw():
    data = NDArrayDataset(np.arange(10.0), np.arange(10))
    np.random.seed(8)
    got = column(DataLoader(data, batch_size=3, shuffle=True))
    np.random.seed(8)
    perm = np.random.permutation(10)
    assert np.concatenate(got).tolist() == perm.tolist()
    np.random.seed(8)
    list(DataLoader(data, batch_size=3, shuffle=True))
    assert np.random.rand() == _after_one_permutation(8)  # the epoch drew exactly that permutation


def _after_one_permutation(seed):
    r = np.random.RandomState(seed)
    r.permutation(10)
    return r.rand()


# --- TensorDataset, Subset, ConcatDataset, random_split ------------------------------------------------

def tensors_both():
    r = np.random.RandomState(0)
    x32, x64, y = r.rand(9, 2, 3).astype(np.float32), r.rand(9, 4), r.randint(0, 5, 9)
    ours = TensorDataset(ndl.Tensor(x32, dtype="float32"), ndl.Tensor(x64, dtype="float64"),
                         ndl.Tensor(y, dtype="int64"))
    theirs = tud.TensorDataset(torch.tensor(x32), torch.tensor(x64), torch.tensor(y))
    return ours, theirs


def test_tensor_dataset_samples_match_torch():
    ours, theirs = tensors_both()
    assert len(ours) == len(theirs) == 9
    for i in (0, 4, 8, -1):
        a, b = ours[i], theirs[i]
        assert isinstance(a, tuple) and len(a) == 3
        for x, y in zip(a, b):
            assert isinstance(x, ndl.Tensor) and tuple(x.shape) == tuple(y.shape)
            assert x.dtype == str(y.dtype).replace("torch.", "")
            np.testing.assert_array_equal(x.numpy(), y.numpy())


@pytest.mark.parametrize("bs, drop_last", [(4, False), (4, True), (1, False), (20, False)])
def test_tensor_dataset_batches_match_torchs_loader(bs, drop_last):
    ours, theirs = tensors_both()
    assert_batches_equal(list(DataLoader(ours, batch_size=bs, drop_last=drop_last)),
                         list(tud.DataLoader(theirs, batch_size=bs, drop_last=drop_last)))
    # a collate_fn gets the samples one by one; default_collate stacks them into the same batch
    collated = list(DataLoader(ours, batch_size=bs, drop_last=drop_last, collate_fn=ndl.data.default_collate))
    assert_batches_equal(collated, list(tud.DataLoader(theirs, batch_size=bs, drop_last=drop_last)))


def test_tensor_dataset_is_refused_for_bad_tensors():
    with pytest.raises(ValueError, match=r"first dimensions differ \(size mismatch\): \[3, 4\]"):
        TensorDataset(ndl.Tensor(np.zeros(3)), ndl.Tensor(np.zeros(4)))
    with pytest.raises(TypeError, match="argument 1 is a ndarray, not a needle Tensor; for numpy arrays use"):
        TensorDataset(ndl.Tensor(np.zeros(3)), np.zeros(3))
    with pytest.raises(ValueError, match="at least one tensor"):
        TensorDataset()
    with pytest.raises(ValueError, match="0-d"):
        TensorDataset(ndl.Tensor(np.float32(1.0)))


def test_subset_indexes_like_torch():
    data = list(range(100, 110))
    indices = [7, 2, 9, 2]
    ours, theirs = Subset(data, indices), tud.Subset(data, indices)
    assert len(ours) == len(theirs) == 4
    assert [ours[i] for i in range(4)] == [theirs[i] for i in range(4)]
    arr = np.arange(20) * 3
    assert Subset(arr, [1, 5])[[0, 1]].tolist() == tud.Subset(arr, [1, 5])[[0, 1]].tolist()


def test_subset_of_a_batched_dataset_loads_like_torch():
    x = np.random.RandomState(1).rand(10, 3).astype(np.float32)
    ours = Subset(NDArrayDataset(x, np.arange(10)), [8, 1, 5, 3, 0])
    theirs = tud.Subset(tud.TensorDataset(torch.tensor(x), torch.arange(10)), [8, 1, 5, 3, 0])
    assert_batches_equal(list(DataLoader(ours, batch_size=2)), list(tud.DataLoader(theirs, batch_size=2)))


def test_concat_dataset_indexes_and_loads_like_torch():
    parts = [list(range(0, 3)), list(range(10, 15)), [], list(range(20, 22))]
    ours, theirs = ConcatDataset(parts), tud.ConcatDataset(parts)
    assert len(ours) == len(theirs) == 10 and ours.cumulative_sizes == theirs.cumulative_sizes
    assert [ours[i] for i in range(-10, 10)] == [theirs[i] for i in range(-10, 10)]
    a = NDArrayDataset(np.arange(4.0), np.arange(4))
    b = NDArrayDataset(np.arange(4.0, 7.0), np.arange(4, 7))
    both = a + b
    assert isinstance(both, ConcatDataset) and len(both) == 7
    assert column(DataLoader(both, batch_size=3)) == [[0, 1, 2], [3, 4, 5], [6]]


def test_concat_dataset_errors():
    with pytest.raises(ValueError, match="empty iterable"):
        ConcatDataset([])
    with pytest.raises(IndexError, match="index 5 is out of range for 5 samples"):
        ConcatDataset([[1, 2], [3, 4, 5]])[5]
    with pytest.raises(IndexError, match="out of range"):
        ConcatDataset([[1, 2], [3, 4, 5]])[-6]
    with pytest.raises(TypeError, match="has no __len__"):
        ConcatDataset([[1], 5])


@pytest.mark.parametrize("n, lengths", [(10, [0.8, 0.2]), (7, [0.3, 0.3, 0.4]), (5, [0.5, 0.5]), (10, [3, 7]),
                                        (11, [0.1, 0.2, 0.7]), (3, [0.25, 0.25, 0.25, 0.25]), (6, [6, 0])])
def test_random_split_sizes_match_torch_and_the_subsets_partition_the_dataset(n, lengths):
    data = list(range(n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an empty split warns, in both
        ours = random_split(data, lengths)
        theirs = tud.random_split(data, lengths, generator=torch.Generator().manual_seed(0))
    assert [len(s) for s in ours] == [len(s) for s in theirs]
    assert all(isinstance(s, Subset) and s.dataset is data for s in ours)
    together = [i for s in ours for i in s.indices]
    assert sorted(together) == data  # disjoint and covering
    assert [s[j] for s in ours for j in range(len(s))] == together


def test_random_split_draws_one_permutation_of_its_generator():
    ours = random_split(range(8), [5, 3], generator=np.random.default_rng(3))
    perm = np.random.default_rng(3).permutation(8).tolist()
    assert [list(s.indices) for s in ours] == [perm[:5], perm[5:]]
    np.random.seed(3)
    ours = random_split(range(8), [0.5, 0.5])
    np.random.seed(3)
    perm = np.random.permutation(8).tolist()
    assert [list(s.indices) for s in ours] == [perm[:4], perm[4:]]


def test_random_split_errors_and_warnings():
    with pytest.raises(ValueError):
        tud.random_split(range(5), [2, 2])
    with pytest.raises(ValueError, match="the lengths add up to 4, but the dataset has 5 samples"):
        random_split(range(5), [2, 2])
    with pytest.raises(ValueError, match="non-negative integers or fractions that sum to 1"):
        random_split(range(5), [0.5, 0.7])
    with pytest.raises(ValueError, match="non-negative integers"):
        random_split(range(5), [6, -1])
    with pytest.raises(TypeError, match=r"lengths\[1\] must be a number"):
        random_split(range(5), [2, "3"])
    with pytest.warns(UserWarning, match="split at index 1 is empty"):
        random_split(range(2), [0.9, 0.1])
    with pytest.raises(TypeError, match="generator must be None"):
        random_split(range(5), [2, 3], generator=torch.Generator())
