"""DataLoader(num_workers > 0): worker processes (spawned) fetch the samples; the batches, their
order and the course's shuffle draw are those of num_workers=0.

The datasets live at module level: the spawned workers import this module to rebuild them.
"""
import os
import random
import time

import numpy as np
import pytest

import needle as ndl
from needle.data import DataLoader, Dataset, NDArrayDataset, TensorDataset, get_worker_info

_INIT = {}


def remember_worker(worker_id):
    """worker_init_fn: noted in the worker, read back through the samples."""
    _INIT["id"] = worker_id
    _INIT["info"] = get_worker_info().id


class Noisy(Dataset):
    """Per-sample, with random draws inside __getitem__ (as a random transform makes)."""

    def __init__(self, n=10):
        super().__init__()
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"x": np.array([i, np.random.rand(), random.random()]), "y": i}


class WhoFetched(Dataset):
    """Each sample says which process and worker fetched it."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        info = get_worker_info()
        return (np.int64(os.getpid()), np.int64(info.id), np.int64(info.num_workers), np.int64(_INIT.get("id", -1)),
                np.int64(i))


class Failing(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        if i == 5:
            raise KeyError(f"no sample {i}")
        return np.float32(i)


class Dying(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 2:
            os._exit(3)
        return np.float32(i)


class Slow(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 1:
            time.sleep(60)
        return np.float32(i)


def batches(loader):
    """Every batch as nested plain lists (Tensors read out)."""
    def plain(b):
        if isinstance(b, dict):
            return {k: plain(v) for k, v in b.items()}
        if isinstance(b, (tuple, list)):
            return [plain(v) for v in b]
        return (b.dtype, b.numpy().tolist())
    return [plain(b) for b in loader]


def datasets():
    r = np.random.RandomState(0)
    x, y = r.rand(11, 3).astype(np.float32), r.randint(0, 4, 11)
    return {
        "batched": NDArrayDataset(x, y),
        "tensors": TensorDataset(ndl.Tensor(x, dtype="float64"), ndl.Tensor(y, dtype="int64")),
        "per-sample": [(x[i], int(y[i])) for i in range(11)],
    }


@pytest.mark.parametrize("kind", ["batched", "tensors", "per-sample"])
def test_workers_give_the_batches_and_order_of_num_workers_0(kind):
    data = datasets()[kind]
    got = {}
    for workers in (0, 2):
        np.random.seed(6)
        loader = DataLoader(data, batch_size=3, shuffle=True, num_workers=workers)
        got[workers] = batches(loader)
        assert len(loader) == 4
    assert got[2] == got[0]
    np.random.seed(6)
    perm = np.random.permutation(11)  # the course's single draw, made in the main process
    assert np.concatenate([b[1][1] for b in got[2]]).tolist() == datasets()["batched"][perm][1].tolist()


def test_random_draws_in_workers_are_reproducible_whatever_the_number_of_workers():
    data = Noisy(10)
    runs = {}
    for workers in (1, 3):
        np.random.seed(0)
        loader = DataLoader(data, batch_size=3, num_workers=workers, prefetch_factor=1)
        runs[workers] = (batches(loader), batches(loader))
    assert runs[1] == runs[3]
    first, second = runs[1]
    assert first != second  # every epoch draws anew
    assert [b["y"][1] for b in first] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    np.random.seed(1)
    assert batches(DataLoader(data, batch_size=3, num_workers=2)) != first


def test_workers_know_who_they_are_and_persistent_ones_stay():
    assert get_worker_info() is None  # in the main process
    loader = DataLoader(WhoFetched(), batch_size=2, num_workers=2, persistent_workers=True,
                        worker_init_fn=remember_worker)
    epochs = [[b for b in loader] for _ in range(2)]
    pids = []
    for epoch in epochs:
        rows = [r for batch in epoch for r in np.stack([t.numpy() for t in batch], axis=1).tolist()]
        assert [r[4] for r in rows] == list(range(8))
        for pid, worker, count, init, index in rows:
            assert worker == (index // 2) % 2 and count == 2 and init == worker  # batch k: worker k % 2
            assert pid != os.getpid()
        pids.append({r[0] for r in rows})
    assert len(pids[0]) == 2 and pids[0] == pids[1]
    fresh = DataLoader(WhoFetched(), batch_size=2, num_workers=2)
    one, two = [{int(p) for b in fresh for p in b[0].numpy()} for _ in range(2)]
    assert one.isdisjoint(two)  # not persistent: new processes every epoch


def test_iterators_sharing_persistent_workers_and_an_abandoned_epoch():
    data = datasets()["batched"]
    loader = DataLoader(data, batch_size=4, num_workers=2, persistent_workers=True)
    pairs = list(zip(loader, loader))
    assert len(pairs) == 3
    for a, b in pairs:
        np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    it = iter(loader)
    next(it)
    del it  # abandoned with batches in flight
    assert [b[1].numpy().tolist() for b in loader] == [data.arrays[1][i:i + 4].tolist() for i in (0, 4, 8)]


def test_an_exception_in_a_worker_is_raised_again_with_the_workers_traceback():
    loader = DataLoader(Failing(), batch_size=2, num_workers=2)
    with pytest.raises(KeyError, match="no sample 5") as caught:
        list(loader)
    cause = caught.value.__cause__
    assert isinstance(cause, RuntimeError)
    assert "batch 2 (indices [4, 5])" in str(cause) and "__getitem__" in str(cause)
    with pytest.raises(KeyError):  # a new epoch starts new workers and fails the same way
        list(loader)


def test_a_dead_worker_is_reported_instead_of_waited_for():
    with pytest.raises(RuntimeError, match=r"DataLoader worker \d \(pid \d+\) exited unexpectedly with exit code 3"):
        list(DataLoader(Dying(), batch_size=1, num_workers=2))


def test_timeout_bounds_the_wait_for_a_batch():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="timed out after 4.0 seconds waiting for batch 1"):
        list(DataLoader(Slow(), batch_size=1, num_workers=2, timeout=4))  # batch 0 has time for the start
    assert time.monotonic() - start < 50  # the worker sleeping 60 s was terminated, not waited for


def test_a_dataset_that_cannot_be_pickled_is_a_clear_error():
    class Local(Dataset):  # a local class: the workers could not import it
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return np.float32(i)

    loader = DataLoader(Local(), batch_size=1, num_workers=1)
    with pytest.raises(TypeError, match="sent to the worker processes with pickle, and this failed"):
        iter(loader)
    lam = DataLoader(datasets()["per-sample"], num_workers=1, worker_init_fn=lambda w: None)
    with pytest.raises(TypeError, match="not lambdas or local classes"):
        iter(lam)


def test_collate_fn_runs_in_the_main_process():
    loader = DataLoader(list(range(6)), batch_size=4, num_workers=2, collate_fn=lambda s: (os.getpid(), list(s)))
    assert list(loader) == [(os.getpid(), [0, 1, 2, 3]), (os.getpid(), [4, 5])]
