"""The course's needle-based training functions: hw1 (MNIST softmax / two-layer net on
Tensors) and hw4 (CIFAR-10 and Penn Treebank loops; these return accuracies)."""
import os
import sys

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

import numpy as np  # noqa: E402

import needle as ndl  # noqa: E402
import needle.nn as nn  # noqa: E402
from apps.models import *  # noqa: E402,F401,F403
from needle.data.datasets.mnist_dataset import parse_mnist  # noqa: E402,F401
from needle.train import classification_epoch, language_model_epoch  # noqa: E402

device = ndl.cpu()


# --- hw1 ----------------------------------------------------------------------------

def softmax_loss(Z, y_one_hot):
    """Mean over the batch of log(sum(exp(Z))) - Z[label]; Z (B, k), y_one_hot (B, k) Tensors."""
    return ndl.summation(ndl.logsumexp(Z, axes=(1,)) - ndl.summation(Z * y_one_hot, axes=(1,))) / Z.shape[0]


def _one_hot(y, k, like):
    return ndl.Tensor(np.eye(k)[np.asarray(y, dtype=np.int64)], device=like.device, dtype=like.dtype,
                      requires_grad=False)


def nn_epoch(X, y, W1, W2, lr=0.1, batch=100):
    """One SGD pass of logits = relu(X W1) W2 over consecutive minibatches; returns new (W1, W2)."""
    k = W2.shape[1]
    for start in range(0, X.shape[0], batch):
        Xb = ndl.Tensor(X[start : start + batch], device=W1.device, dtype=W1.dtype, requires_grad=False)
        Yb = _one_hot(y[start : start + batch], k, W1)
        loss = softmax_loss(ndl.relu(Xb @ W1) @ W2, Yb)
        loss.backward()
        W1 = ndl.Tensor(W1.numpy() - lr * W1.grad.numpy(), device=W1.device, dtype=W1.dtype)
        W2 = ndl.Tensor(W2.numpy() - lr * W2.grad.numpy(), device=W2.device, dtype=W2.dtype)
    return W1, W2


def loss_err(h, y):
    """(softmax loss, error rate) of logits Tensor h against labels y (numpy)."""
    Y = _one_hot(y, h.shape[1], h)
    return softmax_loss(h, Y).numpy(), np.mean(h.numpy().argmax(axis=1) != y)


# --- hw4: CIFAR-10 ------------------------------------------------------------------------

def epoch_general_cifar10(dataloader, model, loss_fn=nn.SoftmaxLoss(), opt=None):
    """One pass (training if `opt` is given): returns (accuracy, mean loss), sample-weighted."""
    np.random.seed(4)
    stats = classification_epoch(dataloader, model, loss_fn, opt)
    return stats.accuracy, stats.mean_loss


def train_cifar10(model, dataloader, n_epochs=1, optimizer=ndl.optim.Adam, lr=0.001, weight_decay=0.001,
                  loss_fn=nn.SoftmaxLoss):
    """`n_epochs` training passes; returns the last (accuracy, loss). `loss_fn` is a class."""
    np.random.seed(4)
    opt = optimizer(model.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(n_epochs):
        acc, loss = epoch_general_cifar10(dataloader, model, loss_fn(), opt)
    return acc, loss


def evaluate_cifar10(model, dataloader, loss_fn=nn.SoftmaxLoss):
    np.random.seed(4)
    return epoch_general_cifar10(dataloader, model, loss_fn())


# --- hw4: Penn Treebank ---------------------------------------------------------------------

def epoch_general_ptb(data, model, seq_len=40, loss_fn=nn.SoftmaxLoss(), opt=None, clip=None, device=None,
                      dtype="float32"):
    """One pass over batchified data (truncated BPTT): returns (accuracy, mean loss per token)."""
    np.random.seed(4)
    stats = language_model_epoch(data, model, seq_len, loss_fn, opt, clip, device, dtype)
    return stats.accuracy, stats.mean_loss


def train_ptb(model, data, seq_len=40, n_epochs=1, optimizer=ndl.optim.SGD, lr=4.0, weight_decay=0.0,
              loss_fn=nn.SoftmaxLoss, clip=None, device=None, dtype="float32"):
    np.random.seed(4)
    opt = optimizer(model.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(n_epochs):
        acc, loss = epoch_general_ptb(data, model, seq_len, loss_fn(), opt, clip, device, dtype)
    return acc, loss


def evaluate_ptb(model, data, seq_len=40, loss_fn=nn.SoftmaxLoss, device=None, dtype="float32"):
    np.random.seed(4)
    return epoch_general_ptb(data, model, seq_len, loss_fn(), device=device, dtype=dtype)
