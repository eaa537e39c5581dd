"""What each rank runs in tests/test_distributed.py: `mpiexec -n 2 python distributed_worker.py SCENARIO OUT_DIR`.

Scenarios:
  train   data-parallel training of an MLP with a PyTorch-style loop (no explicit sync: the
          backward averages), eagerly and through ndl.compile, and with an explicit
          sync_gradients() call too; plus a BatchNorm model; each rank writes its final
          state to OUT_DIR/rank<r>.npz
  raise   rank 1 raises in its third step while rank 0 goes on into the allreduce
  die     rank 1 exits (os._exit) in its third step, without a word to the others
"""
import os
import sys

import numpy as np

import needle as ndl
from needle import distributed as dist
from needle import nn

# the data and the schedule the test's single-process reference uses too
N, FEATURES, CLASSES, BATCH, EPOCHS, SEED = 37, 6, 3, 4, 2, 5


def dataset():
    rng = np.random.RandomState(1)
    return rng.randn(N, FEATURES).astype(np.float32), rng.randint(0, CLASSES, N).astype(np.int64)


def mlp(seed):
    np.random.seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, CLASSES))


def make_step(ddp, model, opt, explicit_sync):
    loss_fn = nn.SoftmaxLoss()

    def step(X, y):  # a PyTorch-style loop: backward() averages the gradients itself
        opt.reset_grad()
        loss = loss_fn(ddp(X), y)
        loss.backward()
        opt.step()
        return loss

    def step_with_sync(X, y):  # needle's earlier style: the explicit call must not average twice
        opt.reset_grad()
        loss = loss_fn(ddp(X), y)
        loss.backward()
        ddp.sync_gradients()
        opt.step()
        return loss

    return step_with_sync if explicit_sync else step


def train(model, compiled, comm, fail=None, explicit_sync=False):
    """EPOCHS epochs over this rank's shard; returns the model's state as numpy arrays and
    the number of buckets. `fail`: called on rank 1 before its third step."""
    X, y = dataset()
    # bucket_mb small enough that the gradients travel in several buckets
    ddp = dist.DistributedDataParallel(model, bucket_mb=0.001, comm=comm)
    opt = ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sampler = dist.DistributedSampler(N, seed=SEED)
    loader = ndl.data.DataLoader(ndl.data.NDArrayDataset(X, y), BATCH, sampler=sampler)
    step = make_step(ddp, model, opt, explicit_sync)
    if compiled:
        step = ndl.compile(step, fuse=False)
    steps = 0
    for epoch in range(EPOCHS):
        sampler.set_epoch(epoch)
        for xb, yb in loader:
            steps += 1
            if fail is not None and steps == 3 and comm.rank == 1:
                fail()
            step(xb, yb)
    return {k: v.numpy() for k, v in model.state_dict().items()}, ddp.buckets


def scenario_train(out_dir):
    comm = dist.init()
    # every rank starts from other weights: the wrapper must hand out rank 0's
    eager, buckets = train(mlp(seed=comm.rank), compiled=False, comm=comm)
    compiled, _ = train(mlp(seed=comm.rank), compiled=True, comm=comm)
    explicit, _ = train(mlp(seed=comm.rank), compiled=False, comm=comm, explicit_sync=True)

    # BatchNorm: rank 1's running statistics start off elsewhere; the broadcasts bring them back
    np.random.seed(comm.rank)
    bn_model = nn.Sequential(nn.Linear(FEATURES, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, CLASSES))
    bn_model.modules[1].running_mean.copy_(ndl.Tensor(np.full(8, 10.0 * comm.rank, np.float32)))
    bn, _ = train(bn_model, compiled=True, comm=comm)

    arrays = {f"eager/{k}": v for k, v in eager.items()}
    arrays.update({f"compiled/{k}": v for k, v in compiled.items()})
    arrays.update({f"explicit/{k}": v for k, v in explicit.items()})
    arrays.update({f"bn/{k}": v for k, v in bn.items()})
    arrays["buckets"] = np.array(buckets)
    np.savez(os.path.join(out_dir, f"rank{comm.rank}.npz"), **arrays)


def scenario_fail(out_dir, how):
    comm = dist.init()

    def fail():
        if how == "raise":
            raise RuntimeError("rank 1 fails on purpose")
        sys.stdout.flush()
        os._exit(7)

    train(mlp(seed=0), compiled=False, comm=comm, fail=fail)
    print(f"rank {comm.rank} finished", flush=True)  # rank 0 must not get here: it waits for rank 1


if __name__ == "__main__":
    scenario, out = sys.argv[1], sys.argv[2]
    if scenario == "train":
        scenario_train(out)
    else:
        scenario_fail(out, scenario)
