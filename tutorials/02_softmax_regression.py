# %% [markdown]
# # 2. Softmax regression on MNIST
#
# The simplest classifier that learns: one matrix $W$ (784 x 10) maps a flattened 28x28
# image $x$ to ten scores (*logits*) $z = x W$, one per digit. The softmax turns scores
# into probabilities, and training lowers the cross-entropy between those probabilities
# and the true label. This is homework 0/1 of the course, written with needle tensors.
#
# **Data.** needle ships the MNIST *test* split (10,000 images, in
# `python/needle/data/mnist/`, CC BY-SA 3.0, see the README there), so this runs with no
# download. We train on its first 8,000 images and test on the last 2,000. (The real MNIST
# training set has 60,000 images; accuracy here is a little lower than with all of them.)
#
# `NEEDLE_TUTORIAL_SMALL=1` trains on fewer images for fewer epochs (for the tests).

# %%
import os
import time

import numpy as np

import needle as ndl
from needle.data.datasets import parse_mnist, shipped_path

SMALL = os.environ.get("NEEDLE_TUTORIAL_SMALL") == "1"
N_TRAIN = 2000 if SMALL else 8000
EPOCHS = 2 if SMALL else 10
BATCH = 100
LR = 0.2
np.random.seed(0)

# %% [markdown]
# ## Loading the images
#
# `parse_mnist` reads the IDX files (a big-endian header, then raw bytes) and returns
# images as float32 rows scaled to [0, 1] and labels as uint8. `shipped_path` finds a data
# file inside the installed package. The loader is in
# [`python/needle/data/datasets/mnist_dataset.py`](../python/needle/data/datasets/mnist_dataset.py).

# %%
X_all, y_all = parse_mnist(shipped_path("mnist/t10k-images-idx3-ubyte.gz"),
                           shipped_path("mnist/t10k-labels-idx1-ubyte.gz"))
X_train, y_train = X_all[:N_TRAIN], y_all[:N_TRAIN]
X_test, y_test = X_all[8000:], y_all[8000:]
print("train:", X_train.shape, "test:", X_test.shape, "pixel range:", X_all.min(), "to", X_all.max())
print("label counts in the training part:", np.bincount(y_train, minlength=10))

# %% [markdown]
# ## The loss
#
# For logits $z$ and the label's one-hot vector $e_y$, the softmax cross-entropy is
#
# $$\ell(z, y) = -\log \frac{e^{z_y}}{\sum_j e^{z_j}} = \log \sum_j e^{z_j} - z_y .$$
#
# `ndl.logsumexp` computes the first term stably (it subtracts the largest logit before
# exponentiating, see `LogSumExp` in
# [`python/needle/ops/reduction.py`](../python/needle/ops/reduction.py)), and
# $z_y = \sum_j z_j (e_y)_j$ is a product with the one-hot matrix.

# %%
def softmax_loss(Z, Y_onehot):
    """Mean softmax cross-entropy of logits Z (n, k) against one-hot labels (n, k)."""
    n = Z.shape[0]
    return (ndl.logsumexp(Z, axes=(1,)) - (Z * Y_onehot).sum(axes=(1,))).sum() / n


def one_hot(labels, k=10):
    return ndl.Tensor(np.eye(k, dtype=np.float32)[labels])


# %% [markdown]
# ## The gradient, two ways
#
# By hand, the gradient of the mean loss with respect to $W$ is
# $\frac{1}{n} X^T (\mathrm{softmax}(XW) - E_y)$. needle's autograd should find the same
# matrix by walking back through `logsumexp`, the product and the matrix multiply.

# %%
W = ndl.Tensor(np.random.randn(784, 10).astype(np.float32) * 0.01, requires_grad=True)
Xb, yb = X_train[:BATCH], y_train[:BATCH]
loss = softmax_loss(ndl.Tensor(Xb) @ W, one_hot(yb))
loss.backward()

Z = Xb.astype(np.float64) @ W.numpy().astype(np.float64)
P = np.exp(Z - Z.max(axis=1, keepdims=True))
P /= P.sum(axis=1, keepdims=True)
by_hand = Xb.T.astype(np.float64) @ (P - np.eye(10)[yb]) / BATCH
print("initial loss:", float(loss.numpy()), "(log 10 =", round(np.log(10), 4), "for uniform guesses)")
print("largest |autograd - by hand| gradient entry:", np.abs(W.grad.numpy() - by_hand).max())
assert np.allclose(W.grad.numpy(), by_hand, atol=1e-5)

# %% [markdown]
# ## Training with minibatch SGD
#
# One epoch visits the training images in batches of 100. For each batch: compute the
# loss, `backward()`, then move $W$ a step against its gradient. The update writes
# `W.data`, which replaces the values without recording anything in the graph (the
# gradient step is not part of the function we differentiate).

# %%
def error_rate(W, X, y):
    logits = (ndl.Tensor(X) @ W).numpy()
    return float((logits.argmax(axis=1) != y).mean())


W = ndl.Tensor(np.zeros((784, 10), dtype=np.float32), requires_grad=True)
history = []
print("epoch | train loss | train err | test err | seconds")
for epoch in range(EPOCHS):
    start = time.time()
    order = np.random.permutation(N_TRAIN)
    losses = []
    for i in range(0, N_TRAIN, BATCH):
        idx = order[i:i + BATCH]
        loss = softmax_loss(ndl.Tensor(X_train[idx]) @ W, one_hot(y_train[idx]))
        loss.backward()
        W.data = W.data - LR * W.grad.data
        losses.append(float(loss.numpy()))
    history.append(np.mean(losses))
    test_err = error_rate(W, X_test, y_test)
    print(f"{epoch:5d} | {history[-1]:10.4f} | {error_rate(W, X_train, y_train):9.4f} | {test_err:8.4f} | "
          f"{time.time() - start:.1f}")

# %% [markdown]
# Test error ends near 7% with the default sizes. A linear model cannot do much better on
# MNIST (about 7-8% with all 60,000 training images); tutorial 3 adds a hidden layer.
#
# ## What the weights look like
#
# Each column of $W$ is a 28x28 template: pixels that vote for that digit are positive.
# Printed coarsely (every other pixel), the template for "0" shows a ring of `#`.

# %%
template = W.numpy()[:, 0].reshape(28, 28)[::2, ::2]
for row in template[1:13]:
    print("".join("#" if v > 0.05 else ("." if v < -0.05 else " ") for v in row))

# %% [markdown]
# ## Sanity checks
#
# These make the tutorial fail loudly if something breaks: the training loss must fall,
# and the test accuracy must be far above chance (10%).

# %%
accuracy = 1 - error_rate(W, X_test, y_test)
print(f"test accuracy: {accuracy:.3f} (chance: 0.100)")
assert history[-1] < history[0], history
assert accuracy > (0.7 if SMALL else 0.85), accuracy
print("tutorial 02 done")
