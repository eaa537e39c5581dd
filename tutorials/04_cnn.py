# %% [markdown]
# # 4. A small convolutional network on MNIST
#
# An MLP treats an image as 784 unrelated numbers: shift a digit by one pixel and it sees
# a different input. A convolution slides one small filter over every position of the
# image, so a stroke detector learned in one place works everywhere, with a handful of
# weights. This tutorial looks at needle's convolution, then trains a two-layer conv net.
#
# Data: the shipped MNIST test split, first 8,000 images for training and the last 2,000
# for testing (see tutorial 2). `NEEDLE_TUTORIAL_SMALL=1` trains on fewer images.

# %%
import os
import time

import numpy as np

import needle as ndl
from needle import nn, optim
from needle.data.datasets import parse_mnist, shipped_path

SMALL = os.environ.get("NEEDLE_TUTORIAL_SMALL") == "1"
N_TRAIN = 3000 if SMALL else 8000
EPOCHS = 1 if SMALL else 3
BATCH = 100
np.random.seed(0)

# %% [markdown]
# ## Images as NCHW tensors
#
# `parse_mnist` gives flat rows of 784 pixels. Convolution layers want the image shape
# back. `nn.Conv`, like PyTorch's `Conv2d`, takes **NCHW**: (batch, channels, height,
# width), here (N, 1, 28, 28) since MNIST is grayscale.

# %%
X_flat, y_all = parse_mnist(shipped_path("mnist/t10k-images-idx3-ubyte.gz"),
                            shipped_path("mnist/t10k-labels-idx1-ubyte.gz"))
X_all = X_flat.reshape(-1, 1, 28, 28)
y_all = y_all.astype(np.int64)
X_train, y_train = X_all[:N_TRAIN], y_all[:N_TRAIN]
X_test, y_test = X_all[8000:], y_all[8000:]
print("train", X_train.shape, "test", X_test.shape)

# %% [markdown]
# ## Inside the convolution: NHWC and one matrix multiply
#
# The op underneath, `ops.conv`
# ([`python/needle/ops/conv.py`](../python/needle/ops/conv.py)), is the course's: it
# works on **NHWC** input (channels last) with a kernel of shape (k, k, C_in, C_out).
# `nn.Conv` ([`python/needle/nn/nn_conv.py`](../python/needle/nn/nn_conv.py)) transposes
# NCHW to NHWC, calls the op, and transposes back.
#
# Channels last makes the computation one matrix multiply ("im2col"): gather every k x k
# window of the padded input as a row of k*k*C_in numbers (a strided *view* of the input,
# `window_view` in [`ops/_windows.py`](../python/needle/ops/_windows.py), made compact by one
# copy), and multiply by the kernel
# reshaped to (k*k*C_in, C_out). Let's check the op against the definition, written as
# plain loops:
#
# $$\text{out}[n, i, j, o] = \sum_{u, v, c} x_\text{pad}[n, i s + u, j s + v, c]\, w[u, v, c, o]$$

# %%
def conv_by_loops(x, w, stride, padding):
    n, h, wd, _ = x.shape
    k, _, _, c_out = w.shape
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ho = (h + 2 * padding - k) // stride + 1
    wo = (wd + 2 * padding - k) // stride + 1
    out = np.zeros((n, ho, wo, c_out))
    for i in range(ho):
        for j in range(wo):
            window = xp[:, i * stride:i * stride + k, j * stride:j * stride + k, :]  # (n, k, k, c_in)
            out[:, i, j, :] = np.tensordot(window, w, axes=([1, 2, 3], [0, 1, 2]))
    return out


x_nhwc = X_train[:4].transpose(0, 2, 3, 1).astype(np.float64)  # (4, 28, 28, 1)
w = np.random.randn(3, 3, 1, 5)
ours = ndl.ops.conv(ndl.Tensor(x_nhwc, dtype="float64"), ndl.Tensor(w, dtype="float64"), stride=2, padding=1)
loops = conv_by_loops(x_nhwc, w, stride=2, padding=1)
print("conv output", ours.shape, "largest difference from the loops:", np.abs(ours.numpy() - loops).max())
assert np.allclose(ours.numpy(), loops)

# %% [markdown]
# The gradients of the convolution are convolutions too (`ConvInputGrad` and
# `ConvWeightGrad` in `ops/conv.py`): the input's gradient correlates the output gradient
# with the flipped kernel, the kernel's gradient correlates the input with the output
# gradient. A quick finite-difference check on one kernel entry:

# %%
x_t = ndl.Tensor(x_nhwc, dtype="float64")
w_t = ndl.Tensor(w, dtype="float64", requires_grad=True)
(ndl.ops.conv(x_t, w_t, stride=2, padding=1) ** 2).sum().backward()
h = 1e-6
w_up, w_down = w.copy(), w.copy()
w_up[1, 2, 0, 3] += h
w_down[1, 2, 0, 3] -= h
numeric = ((conv_by_loops(x_nhwc, w_up, 2, 1) ** 2).sum() - (conv_by_loops(x_nhwc, w_down, 2, 1) ** 2).sum()) / (2 * h)
print("d loss / d w[1,2,0,3]: autograd", round(float(w_t.grad.numpy()[1, 2, 0, 3]), 6), " finite difference",
      round(numeric, 6))
assert abs(w_t.grad.numpy()[1, 2, 0, 3] - numeric) < 1e-5 * max(1.0, abs(numeric))

# %% [markdown]
# ## The network
#
# Two 3x3 convolutions with stride 2 halve the image twice (28 -> 14 -> 7) while the
# channels grow (1 -> 16 -> 32). Each is followed by batch normalization (which keeps the
# activations' scale steady during training, `nn.BatchNorm2d` in
# [`nn_basic.py`](../python/needle/nn/nn_basic.py)) and a ReLU. A `Linear` layer reads the
# 32 x 7 x 7 feature maps and scores the ten digits. (needle's `models.ResNet9` is the
# course's bigger version of this pattern, for CIFAR-10.)

# %%
model = nn.Sequential(
    nn.Conv(1, 16, 3, stride=2), nn.BatchNorm2d(16), nn.ReLU(),    # (N, 16, 14, 14)
    nn.Conv(16, 32, 3, stride=2), nn.BatchNorm2d(32), nn.ReLU(),   # (N, 32, 7, 7)
    nn.Flatten(),                                                  # (N, 1568)
    nn.Linear(32 * 7 * 7, 10),
)
print("parameters:", sum(int(np.prod(p.shape)) for p in model.parameters()),
      "(the MLP of tutorial 3 had 101,770)")

# %% [markdown]
# ## Training
#
# The same loop as tutorial 3, with Adam. `model.train()` makes BatchNorm normalise with
# each batch's statistics (and update its running averages); `model.eval()` makes it use
# the running averages, so a prediction does not depend on the other images in the batch.

# %%
def accuracy(model, X, y):
    model.eval()
    with ndl.no_grad():
        preds = np.concatenate([model(ndl.Tensor(X[i:i + 500])).numpy().argmax(axis=1)
                                for i in range(0, len(X), 500)])
    return float((preds == y).mean())


opt = optim.Adam(model.parameters(), lr=0.002)
loss_fn = nn.SoftmaxLoss()
epoch_losses = []
for epoch in range(EPOCHS):
    model.train()
    start = time.time()
    order = np.random.permutation(N_TRAIN)
    losses = []
    for i in range(0, N_TRAIN, BATCH):
        idx = order[i:i + BATCH]
        opt.reset_grad()
        loss = loss_fn(model(ndl.Tensor(X_train[idx])), ndl.Tensor(y_train[idx]))
        loss.backward()
        opt.step()
        losses.append(float(loss.numpy()))
        if len(losses) % 20 == 0:
            print(f"  epoch {epoch} batch {len(losses):3d}: loss {np.mean(losses[-20:]):.4f}")
    epoch_losses.append(losses)
    print(f"epoch {epoch}: mean loss {np.mean(losses):.4f}, test accuracy {accuracy(model, X_test, y_test):.4f} "
          f"({time.time() - start:.1f} s)")

# %% [markdown]
# ## What the first layer learned
#
# Each of the 16 first-layer filters is a 3x3 pattern over the grayscale image. Printed
# with `+` for positive and `-` for negative weights (`.` near zero), some look like
# edge or stroke detectors: one side positive, the other negative.

# %%
filters = model[0].weight.numpy()  # (3, 3, 1, 16): needle's (k, k, C_in, C_out) layout
for o in range(4):
    rows = ["".join("+" if v > 0.1 else ("-" if v < -0.1 else ".") for v in filters[r, :, 0, o]) for r in range(3)]
    print(f"filter {o}: " + " / ".join(rows))

# %% [markdown]
# ## Sanity checks

# %%
test_acc = accuracy(model, X_test, y_test)
first, last = np.mean(epoch_losses[0][:10]), np.mean(epoch_losses[-1][-10:])
print(f"loss: first 10 batches {first:.3f}, last 10 batches {last:.3f}; test accuracy {test_acc:.4f}")
assert last < first
assert test_acc > (0.7 if SMALL else 0.95), test_acc
print("tutorial 04 done")
