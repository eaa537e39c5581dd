# %% [markdown]
# # 3. A multilayer perceptron on MNIST with `needle.nn`
#
# Tutorial 2 wrote the model, the loss and the update by hand. Here the same job is done
# with needle's building blocks, which follow the course (and mostly PyTorch):
#
# * `needle.nn` modules hold parameters and compute the forward pass
#   ([`python/needle/nn/nn_basic.py`](../python/needle/nn/nn_basic.py): `Linear`, `ReLU`,
#   `Sequential`, `SoftmaxLoss`);
# * `needle.optim` optimizers update the parameters from their `.grad`
#   ([`python/needle/optim/optimizers.py`](../python/needle/optim/optimizers.py));
# * `needle.data` datasets and the `DataLoader` cut the data into shuffled batches
#   ([`python/needle/data/data_basic.py`](../python/needle/data/data_basic.py)).
#
# Data: the MNIST test split that ships with needle, first 8,000 images for training and
# the last 2,000 for testing (see tutorial 2). `NEEDLE_TUTORIAL_SMALL=1` trains less.

# %%
import os
import time

import numpy as np

import needle as ndl
from needle import nn, optim
from needle.data import DataLoader, MNISTDataset, Subset
from needle.data.datasets import shipped_path

SMALL = os.environ.get("NEEDLE_TUTORIAL_SMALL") == "1"
N_TRAIN = 3000 if SMALL else 8000
EPOCHS = 2 if SMALL else 5
HIDDEN = 64 if SMALL else 128
np.random.seed(0)

# %% [markdown]
# ## Datasets and the DataLoader
#
# `MNISTDataset` reads the IDX files; `dataset[i]` is an (image, label) pair. `Subset`
# picks indices out of a dataset, and the `DataLoader` yields batches as needle Tensors:
# images (100, 784) float32 and labels (100,) int64. With `shuffle=True` it draws a new
# order every epoch (from numpy's global random generator, so `np.random.seed` fixes it).

# %%
mnist = MNISTDataset(shipped_path("mnist/t10k-images-idx3-ubyte.gz"),
                     shipped_path("mnist/t10k-labels-idx1-ubyte.gz"))
train_set = Subset(mnist, range(N_TRAIN))
test_set = Subset(mnist, range(8000, 10000))
train_loader = DataLoader(train_set, batch_size=100, shuffle=True)
test_loader = DataLoader(test_set, batch_size=500)
images, labels = next(iter(train_loader))
print("one batch:", images.shape, images.dtype, labels.shape, labels.dtype)

# %% [markdown]
# ## The model
#
# Two `Linear` layers with a ReLU between them: 784 -> hidden -> 10. A course `Linear`
# stores its weight as (in_features, out_features) and computes $x W + b$ (PyTorch stores
# the transpose). Its weights start from Kaiming-uniform noise (`needle.init`), scaled so
# that the ReLU layer's outputs keep about the variance of its inputs.

# %%
def make_model():
    return nn.Sequential(nn.Linear(784, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))


model = make_model()
for name, p in model.named_parameters():
    print(f"  {name:10s} {tuple(p.shape)}")
print("parameters:", sum(int(np.prod(p.shape)) for p in model.parameters()))

# %% [markdown]
# ## One epoch
#
# The loop every training script has:
#
# 1. `opt.reset_grad()` clears the gradients of the last step;
# 2. the forward pass builds the graph, ending in the loss;
# 3. `loss.backward()` fills `p.grad` for every parameter;
# 4. `opt.step()` updates every parameter in place.
#
# `model.train()` / `model.eval()` switch layers such as Dropout and BatchNorm between
# their training and inference behaviour (this model has none, but the habit matters).
# Evaluation runs under `ndl.no_grad()`, which records no graph.

# %%
def run_epoch(model, loader, loss_fn, opt=None, step=None):
    """Mean loss and accuracy over one pass of `loader`; trains when `opt` (or `step`) is given."""
    model.train() if (opt or step) else model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        if step is not None:
            loss = step(x, y)
            logits = None
        elif opt is not None:
            opt.reset_grad()
            logits = model(x)
            loss = loss_fn(logits, y)
            loss.backward()
            opt.step()
        else:
            with ndl.no_grad():
                logits = model(x)
                loss = loss_fn(logits, y)
        n = x.shape[0]
        total_loss += float(loss.numpy()) * n
        if logits is not None:
            correct += int((logits.numpy().argmax(axis=1) == y.numpy()).sum())
        seen += n
    return total_loss / seen, correct / seen


def fit(model, opt, epochs, step=None):
    loss_fn = nn.SoftmaxLoss()
    losses = []
    for epoch in range(epochs):
        start = time.time()
        train_loss, _ = run_epoch(model, train_loader, loss_fn, opt=opt, step=step)
        test_loss, test_acc = run_epoch(model, test_loader, loss_fn)
        losses.append(train_loss)
        print(f"  epoch {epoch}: train loss {train_loss:.4f}  test loss {test_loss:.4f}  "
              f"test acc {test_acc:.4f}  ({time.time() - start:.1f} s)")
    return losses, test_acc


# %% [markdown]
# ## SGD with momentum
#
# needle's `optim.SGD` is the course's: with `momentum` it keeps a moving average
# $u \leftarrow \beta u + (1 - \beta) g$ of the gradient and steps $\theta \leftarrow
# \theta - \eta u$. (PyTorch's SGD sums instead, $u \leftarrow \beta u + g$; pass
# `dampening=0` to get PyTorch's rule.) Because the average is scaled down by
# $1 - \beta$, the course's SGD wants a larger learning rate than PyTorch's.

# %%
print("SGD, lr 0.5, momentum 0.9:")
np.random.seed(1)
sgd_model = make_model()
sgd_losses, sgd_acc = fit(sgd_model, optim.SGD(sgd_model.parameters(), lr=0.5, momentum=0.9), EPOCHS)

# %% [markdown]
# ## Adam, and a compiled step
#
# Adam scales each parameter's step by a running estimate of its gradient's size, so one
# learning rate suits every layer. (needle's default lr is the course's 0.01; PyTorch's is
# 0.001.)
#
# This time the training step is wrapped in `ndl.compile`
# ([`python/needle/compile/`](../python/needle/compile/__init__.py)): the first call runs
# normally, the second records every kernel the step runs, and later calls replay that
# recording as a flat program, without building Tensor objects or walking the graph.
# Chains of elementwise kernels are fused into generated kernels (compiled once and cached
# on disk, so the very first run of this cell pays a few seconds of compilation). The
# results are the same as the eager step's.

# %%
print("Adam, lr 0.001, compiled step:")
np.random.seed(1)
adam_model = make_model()
adam = optim.Adam(adam_model.parameters(), lr=0.001)
loss_fn = nn.SoftmaxLoss()


@ndl.compile
def train_step(x, y):
    adam.reset_grad()
    loss = loss_fn(adam_model(x), y)
    loss.backward()
    adam.step()
    return loss


adam_losses, adam_acc = fit(adam_model, None, EPOCHS, step=train_step)

# %% [markdown]
# ## Results
#
# One hidden layer cuts the error of the linear model of tutorial 2 (about 7%) to about
# 5% with the default sizes; with the full 60,000 training images and a few more epochs a
# network like this gets to about 2%.

# %%
print(f"test accuracy: SGD {sgd_acc:.4f}, Adam {adam_acc:.4f} (chance 0.1)")
assert sgd_losses[-1] < sgd_losses[0] and adam_losses[-1] < adam_losses[0]
assert min(sgd_acc, adam_acc) > (0.75 if SMALL else 0.92), (sgd_acc, adam_acc)
print("tutorial 03 done")
