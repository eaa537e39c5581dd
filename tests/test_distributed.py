"""needle.distributed: data-parallel training over MPI (2 ranks started here with the venv's mpiexec),
DistributedSampler, gradient buckets, `needle train --distributed`, and what happens when a rank fails.

The MPI tests start `mpiexec -n 2` in subprocesses (tests/distributed_worker.py holds what the
ranks run); the others run in-process, with a stand-in communicator where one is needed.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import distributed_worker as worker
import needle as ndl
from needle import nn
from needle.data import DataLoader, DistributedSampler, NDArrayDataset
from needle.distributed import DistributedDataParallel
from needle.train import cli

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def mpiexec() -> str:
    """The mpiexec installed next to this Python (pip install -e ".[dev]" brings MPICH's)."""
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.fail('mpiexec is not installed next to this Python: pip install -e ".[dev]" installs mpi4py and mpich')
    return found


def run_mpi(*args, ranks=2, timeout=60, cwd=None):
    """`mpiexec -n ranks python ARGS` with one BLAS thread per rank (the machine has two cores)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(ROOT / "python"), str(TESTS)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    return subprocess.run([mpiexec(), "-n", str(ranks), sys.executable, *map(str, args)], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


# ================================================================= data-parallel training, 2 ranks

def single_process_reference():
    """The worker's MLP trained in one process on the global batches: rank 0's batch then rank 1's."""
    X, y = worker.dataset()
    model = worker.mlp(seed=0)  # rank 0's initial weights, which DDP hands to every rank
    opt = ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.SoftmaxLoss()
    shards = [DistributedSampler(worker.N, 2, r, seed=worker.SEED) for r in range(2)]
    for epoch in range(worker.EPOCHS):
        for s in shards:
            s.set_epoch(epoch)
        indices = [s.indices() for s in shards]
        for start in range(0, len(indices[0]), worker.BATCH):
            batch = np.concatenate([i[start:start + worker.BATCH] for i in indices])
            opt.reset_grad()
            loss_fn(model(ndl.Tensor(X[batch])), ndl.Tensor(y[batch], dtype="int64")).backward()
            opt.step()
    return {k: v.numpy() for k, v in model.state_dict().items()}


def test_two_ranks_equal_one_process_on_the_global_batches(tmp_path):
    proc = run_mpi(TESTS / "distributed_worker.py", "train", tmp_path)
    assert proc.returncode == 0, proc.stderr
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    assert int(ranks[0]["buckets"]) > 1  # the gradients travelled in several allreduces
    reference = single_process_reference()
    for name, expected in reference.items():
        got = ranks[0][f"eager/{name}"]
        assert np.linalg.norm(got - expected) <= 1e-6 * np.linalg.norm(expected), name
        # every rank holds the same model, and the compiled step computes what the eager one does
        np.testing.assert_array_equal(ranks[1][f"eager/{name}"], got)
        np.testing.assert_array_equal(ranks[0][f"compiled/{name}"], got)
        np.testing.assert_array_equal(ranks[1][f"compiled/{name}"], got)
        # an explicit sync_gradients() after the backward's own averaging changes nothing
        np.testing.assert_array_equal(ranks[0][f"explicit/{name}"], got)
        np.testing.assert_array_equal(ranks[1][f"explicit/{name}"], got)
    # BatchNorm: rank 1 started with other running statistics; parameters and buffers end up equal
    bn = [k for k in ranks[0].files if k.startswith("bn/")]
    assert any("running_mean" in k for k in bn)
    for key in bn:
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key])


@pytest.mark.parametrize("how", ["raise", "die"])
def test_a_failing_rank_ends_the_whole_job(tmp_path, how):
    # rank 0 is inside an allreduce that rank 1 will never join: without the abort it would wait forever
    proc = run_mpi(TESTS / "distributed_worker.py", how, tmp_path, timeout=30)
    assert proc.returncode != 0
    assert "rank 0 finished" not in proc.stdout
    if how == "raise":
        assert "RuntimeError: rank 1 fails on purpose" in proc.stderr
        assert "aborting all 2 ranks" in proc.stderr


# ================================================================= needle train --distributed

def cli_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def test_cli_trains_on_two_ranks_and_resumes_exactly(tmp_path):
    common = ["-m", "needle", "train", "--distributed", "--samples", "200", "--batch-size", "25", "--no-progress"]
    ckpt, summary = tmp_path / "ckpt", tmp_path / "summary.json"
    first = run_mpi(*common, "--epochs", "2", "--checkpoint", ckpt, "--summary", summary)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.strip().splitlines()
    # rank 0 alone prints: a header, one line per epoch, the summary
    assert len(lines) == 4, first.stdout
    assert "data-parallel on 2 ranks" in lines[0] and "4 batches per epoch" in lines[0]
    assert json.loads(summary.read_text())["epochs"] == 2
    assert os.listdir(ckpt) == ["last.safetensors"]

    # these two run eagerly (tracing and loading the fused kernels costs seconds a run); the
    # compiled step gives the eager step's numbers, so the resumed run still matches exactly
    resumed = run_mpi(*common, "--epochs", "3", "--checkpoint", ckpt, "--resume", "--no-compile")
    straight = run_mpi(*common, "--epochs", "3", "--no-compile")
    assert resumed.returncode == 0 and straight.returncode == 0, resumed.stderr + straight.stderr
    assert "resumed from" in resumed.stdout
    timing = {"train_seconds", "seconds"}
    strip = lambda s: {k: v for k, v in cli_json(s)["final"].items() if k not in timing}  # noqa: E731
    assert strip(resumed.stdout) == strip(straight.stdout)


def test_cli_refuses_more_ranks_than_training_samples(tmp_path, data):
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    for kind, src in (("images-idx3", data.mnist_images), ("labels-idx1", data.mnist_labels)):
        for split in ("train", "t10k"):
            os.symlink(src, mnist / f"{split}-{kind}-ubyte.gz")
    proc = run_mpi("-m", "needle", "train", "mlp", "--data", mnist, "--limit", "1", "--distributed", "--no-progress")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "needle: error: DistributedSampler: 2 ranks but only 1 sample(s) to share: every rank needs at least one; "
        "use at most 1 rank(s), or more data"]


def test_cli_distributed_without_a_launcher_is_a_usage_error(capsys, monkeypatch):
    for name in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["train", "--distributed", "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == ["needle: error: --distributed: this process was not started by an MPI launcher; "
                                "run it as `mpiexec -n 2 python -m needle train ... --distributed`"]


def test_cli_distributed_without_mpi4py_is_a_usage_error(capsys, monkeypatch):
    from needle.distributed import comm

    monkeypatch.setattr(comm, "mpi_available", lambda: False)
    monkeypatch.setenv("PMI_SIZE", "2")
    assert cli.main(["train", "--distributed"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith("needle: error: --distributed: needle.distributed needs mpi4py")
    assert 'pip install -e ".[distributed]"' in err


def test_cli_distributed_lm_is_a_usage_error(capsys):
    assert cli.main(["train", "lm", "--distributed"]) == 2
    assert "not lm" in capsys.readouterr().err


def test_init_without_mpi4py_names_the_extra(monkeypatch):
    from needle.distributed import comm

    monkeypatch.setattr(comm, "_COMM", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now raises ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[distributed\]"'):
        comm.init()
    with pytest.raises(RuntimeError, match="init"):
        comm.rank()


# ================================================================= DistributedSampler and DataLoader

@pytest.mark.parametrize("n, world", [(10, 2), (11, 2), (7, 3), (2, 2), (5, 4)])
def test_sampler_shards_are_disjoint_equal_and_padded_with_the_first_indices(n, world):
    shards = [DistributedSampler(n, world, r, seed=3) for r in range(world)]
    per_rank = -(-n // world)
    assert all(len(s) == per_rank and len(s.indices()) == per_rank for s in shards)
    # rank r holds positions r, r + world, ... of one ordering, the same on every rank
    merged = np.empty(per_rank * world, np.int64)
    for r, s in enumerate(shards):
        merged[r::world] = s.indices()
    order = np.random.RandomState(3).permutation(n)
    np.testing.assert_array_equal(merged[:n], order)
    np.testing.assert_array_equal(merged[n:], np.resize(order, per_rank * world - n))  # PyTorch's padding
    assert set(merged) == set(range(n))


def test_sampler_drop_last_and_without_shuffle():
    shards = [DistributedSampler(11, 2, r, shuffle=False, drop_last=True) for r in range(2)]
    assert [s.indices().tolist() for s in shards] == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]


def test_sampler_order_depends_on_seed_and_epoch_only():
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    a, b = DistributedSampler(50, 2, 0, seed=1), DistributedSampler(50, 2, 0, seed=1)
    first = a.indices()
    a.set_epoch(1)
    assert not np.array_equal(first, a.indices())
    b.set_epoch(1)
    np.testing.assert_array_equal(a.indices(), b.indices())
    assert not np.array_equal(DistributedSampler(50, 2, 0, seed=2).indices(), first)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # numpy's global RNG untouched


def test_sampler_refuses_more_ranks_than_samples():
    with pytest.raises(ValueError, match="3 ranks but only 2 sample"):
        DistributedSampler(2, 3, 0)
    with pytest.raises(ValueError, match="rank 2 is outside"):
        DistributedSampler(10, 2, 2)


def test_distributed_sampler_reads_world_size_and_rank_from_the_job(monkeypatch):
    """needle.data's sampler is told its rank; needle.distributed's defaults to the job's."""
    from needle import distributed as dist
    from needle.distributed import comm

    class Job:  # what init() would hold: rank 1 of 3
        rank, size = 1, 3

    with pytest.raises(TypeError):
        DistributedSampler(10)  # the data layer knows nothing of MPI
    monkeypatch.setattr(comm, "_COMM", None)
    with pytest.raises(RuntimeError, match="init"):
        dist.DistributedSampler(10)
    monkeypatch.setattr(comm, "_COMM", Job())
    sampler = dist.DistributedSampler(10, seed=5, drop_last=True)
    assert isinstance(sampler, DistributedSampler)
    assert (sampler.num_replicas, sampler.rank, len(sampler)) == (3, 1, 3)
    # rank 1's share of one seeded ordering: positions 1, 4, 7 of it (the tail of 10 = 3 * 3 + 1 dropped)
    np.testing.assert_array_equal(sampler.indices(), np.random.RandomState(5).permutation(10)[1:9:3])
    assert dist.DistributedSampler(10, 2, 0).num_replicas == 2  # given values win


def test_dataloader_follows_its_sampler():
    X = np.arange(22, dtype=np.float32).reshape(11, 2)
    sampler = DistributedSampler(11, 2, 1, seed=4)
    loader = DataLoader(NDArrayDataset(X, np.arange(11)), batch_size=4, sampler=sampler)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        got = np.concatenate([y.numpy() for _, y in loader])
        np.testing.assert_array_equal(got, sampler.indices())
    assert len(loader) == 2  # 6 samples per rank in batches of 4
    with pytest.raises(ValueError, match="not both"):
        DataLoader(NDArrayDataset(X, np.arange(11)), batch_size=4, shuffle=True, sampler=sampler)


# ================================================================= gradient buckets, with a stand-in communicator

class TwoRanks:
    """Rank 0 of two; the other rank's gradients are `other` times this rank's. Counts calls."""

    def __init__(self, other=3.0):
        self.rank, self.size, self.other = 0, 2, other
        self.allreduced, self.broadcast = [], 0

    def allreduce_sum_(self, buffer):
        self.allreduced.append(buffer.size)
        buffer *= 1 + self.other

    def broadcast_(self, buffer, root=0):
        self.broadcast += 1


def small_model():
    np.random.seed(0)
    return nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 30), nn.BatchNorm1d(30), nn.Linear(30, 5))


def grads_after_step(ddp, model, x):
    """This rank's own gradients (the backward does not average them inside no_sync)."""
    for p in model.parameters():
        p.grad = None
    with ddp.no_sync():
        (ddp(x) * ddp(x)).sum().backward()
    return [p.grad.numpy() for p in model.parameters()]


def test_one_allreduce_per_bucket_not_per_parameter():
    model = small_model()
    comm = TwoRanks()
    sizes = [int(np.prod(p.shape)) for p in model.parameters()]
    whole = DistributedDataParallel(model, comm=comm)
    assert whole.buckets == 1
    x = ndl.Tensor(np.random.randn(8, 20).astype(np.float32))
    plain = grads_after_step(whole, model, x)
    whole.sync_gradients()
    assert comm.allreduced == [sum(sizes)]
    # the mean of this rank's g and the other rank's 3 g is 2 g
    for g, p in zip(plain, model.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), 2 * g, rtol=1e-6)
    # buckets of at most 4 KiB: the 600-float weights travel alone, small ones together
    comm = TwoRanks()
    split = DistributedDataParallel(model, comm=comm, bucket_mb=4096 / 2 ** 20)
    grads_after_step(split, model, x)
    split.sync_gradients()
    assert sum(comm.allreduced) == sum(sizes)
    assert 1 < len(comm.allreduced) == split.buckets < len(sizes)
    assert all(n * 4 <= 4096 or n in sizes for n in comm.allreduced)


def test_compiled_step_repeats_the_allreduce_on_every_replay():
    model = small_model()
    comm = TwoRanks(other=1.0)  # the other rank has the same gradients: the mean changes nothing
    ddp = DistributedDataParallel(model, comm=comm)
    opt = ndl.optim.SGD(model.parameters(), lr=0.01)

    def step(x):
        opt.reset_grad()
        loss = (ddp(x) * ddp(x)).mean()
        loss.backward()
        ddp.sync_gradients()
        opt.step()
        return loss

    compiled = ndl.compile(step, fuse=False)
    np.random.seed(1)
    batches = [ndl.Tensor(np.random.randn(8, 20).astype(np.float32)) for _ in range(5)]
    for x in batches:
        compiled(x)
    # eager, trace, then three replays: one gradient allreduce and one buffer broadcast each
    assert len(comm.allreduced) == 5 and comm.broadcast == 5 + 1  # + the broadcast at construction
    compiled_params = [p.numpy() for p in model.parameters()]
    model2 = small_model()
    ddp2 = DistributedDataParallel(model2, comm=TwoRanks(other=1.0))
    opt2 = ndl.optim.SGD(model2.parameters(), lr=0.01)
    for x in batches:
        opt2.reset_grad()
        loss = (ddp2(x) * ddp2(x)).mean()
        loss.backward()
        ddp2.sync_gradients()
        opt2.step()
    for p, q in zip(compiled_params, model2.parameters()):
        np.testing.assert_array_equal(p, q.numpy())
