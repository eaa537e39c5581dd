"""A generative adversarial network that learns a 2-D Gaussian (the GAN lectures of CMU 10-414/714).

The real data are x = z A + mu with z ~ N(0, I): a Gaussian with mean mu and covariance
A^T A (correlated, not axis-aligned). A generator G (a linear layer, which can represent
exactly such a distribution) maps noise to points; a discriminator D (a small MLP) scores
points as real or generated. Each step alternates the lecture's two updates:

1. D: minimise  BCE(D(x_real), 1) + BCE(D(G(z)), 0)       (G held fixed: its output detached)
2. G: minimise  BCE(D(G(z)), 1)                            (the non-saturating generator loss)

with BCE on logits computed stably as logsumexp([0, t]) - y t. At the end the mean and
covariance of generated samples are printed next to the target's, and a picture of real
vs generated samples is saved.

    python examples/gan.py --steps 3000 --out runs/gan
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import needle as ndl
from needle import nn
from needle.utils.cli import POSITIVE, SEED, ArgumentParser, check_out_dir, int_at_least

TARGET_MEAN = np.array([1.0, 2.0], dtype=np.float32)
TARGET_A = np.array([[1.0, 2.0], [-0.2, 0.5]], dtype=np.float32)  # covariance A^T A: strongly correlated


def target_covariance() -> np.ndarray:
    return TARGET_A.T @ TARGET_A


def sample_real(n: int, rng: np.random.RandomState) -> np.ndarray:
    return (rng.normal(0, 1, (n, 2)) @ TARGET_A + TARGET_MEAN).astype(np.float32)


def bce_with_logits(logits: ndl.Tensor, target: float) -> ndl.Tensor:
    """Mean binary cross-entropy of (N, 1) logits against a constant label 0 or 1."""
    n = logits.shape[0]
    zeros = ndl.init.zeros(n, 1, device=logits.device)
    pair = ndl.ops.stack([zeros, logits], axis=1).reshape((n, 2))  # log(1 + e^t) = logsumexp([0, t])
    return (ndl.ops.logsumexp(pair, axes=(1,)) - logits.reshape((n,)) * target).sum() / n


class GAN:
    """The generator, the discriminator and their two optimizers."""

    def __init__(self, hidden: int = 64, lr: float = 0.002, device=None):
        self.generator = nn.Sequential(nn.Linear(2, 2, device=device))
        self.discriminator = nn.Sequential(nn.Linear(2, hidden, device=device), nn.ReLU(),
                                           nn.Linear(hidden, hidden, device=device), nn.ReLU(),
                                           nn.Linear(hidden, 1, device=device))
        self.opt_g = ndl.optim.Adam(self.generator.parameters(), lr=lr)
        self.opt_d = ndl.optim.Adam(self.discriminator.parameters(), lr=lr)
        self.device = device

        # both updates run through ndl.compile: traced once, then replayed as flat programs
        self._step_d = ndl.compile(self._update_discriminator)
        self._step_g = ndl.compile(self._update_generator)

    def noise(self, n: int, rng: np.random.RandomState) -> ndl.Tensor:
        return ndl.Tensor(rng.normal(0, 1, (n, 2)).astype(np.float32), device=self.device, requires_grad=False)

    def _update_discriminator(self, real: ndl.Tensor, noise: ndl.Tensor) -> ndl.Tensor:
        fake = self.generator(noise).detach()
        self.opt_d.reset_grad()
        loss = bce_with_logits(self.discriminator(real), 1.0) + bce_with_logits(self.discriminator(fake), 0.0)
        loss.backward()
        self.opt_d.step()
        return loss

    def _update_generator(self, noise: ndl.Tensor) -> ndl.Tensor:
        self.opt_g.reset_grad()
        loss = bce_with_logits(self.discriminator(self.generator(noise)), 1.0)
        loss.backward()
        self.opt_g.step()
        return loss

    def step(self, real: np.ndarray, rng: np.random.RandomState):
        """One discriminator update, then one generator update; returns (D loss, G loss)."""
        n = real.shape[0]
        x = ndl.Tensor(real, device=self.device, requires_grad=False)
        loss_d = self._step_d(x, self.noise(n, rng))
        loss_g = self._step_g(self.noise(n, rng))
        return float(loss_d.numpy()), float(loss_g.numpy())

    def sample(self, n: int, rng: np.random.RandomState) -> np.ndarray:
        with ndl.no_grad():
            return self.generator(self.noise(n, rng)).numpy()


def train(steps: int, batch: int, seed: int, lr: float, hidden: int, every: int = 0, log=print) -> GAN:
    np.random.seed(seed)
    rng = np.random.RandomState(seed)
    gan = GAN(hidden=hidden, lr=lr)
    for i in range(steps):
        loss_d, loss_g = gan.step(sample_real(batch, rng), rng)
        if every and (i % every == 0 or i == steps - 1):
            log(f"step {i:5d}  D loss {loss_d:.4f}  G loss {loss_g:.4f}")
    return gan


def save_picture(real: np.ndarray, fake: np.ndarray, path: str) -> None:
    from needle.viz.curves import _pyplot, save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(real[:, 0], real[:, 1], s=6, alpha=0.5, label="real", color="tab:blue")
    ax.scatter(fake[:, 0], fake[:, 1], s=6, alpha=0.5, label="generated", color="tab:orange")
    ax.set_aspect("equal")
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, path, "GAN on a 2-D Gaussian")


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", type=int_at_least(1), default=3000, help="alternating D/G updates")
    parser.add_argument("--batch", type=int_at_least(2), default=256, help="real and generated samples per update")
    parser.add_argument("--lr", type=POSITIVE, default=0.002, help="Adam learning rate of both networks")
    parser.add_argument("--hidden", type=int_at_least(1), default=64, help="discriminator width")
    parser.add_argument("--seed", type=SEED, default=0, help="seed of the samples, the noise and the weights")
    parser.add_argument("--every", type=int_at_least(0), default=500, help="print the losses every this many "
                        "steps (0: never)")
    parser.add_argument("--out", default="runs/gan", help="folder for the picture (real vs generated)")
    args = parser.parse_args(argv)
    check_out_dir(parser, "--out", args.out)  # before training, not after it
    gan = train(args.steps, args.batch, args.seed, args.lr, args.hidden, args.every)
    rng = np.random.RandomState(args.seed + 1)
    fake, real = gan.sample(2000, rng), sample_real(2000, rng)
    np.set_printoptions(precision=3, suppress=True)
    print("target mean", TARGET_MEAN, " generated mean", fake.mean(axis=0))
    print("target covariance\n", target_covariance(), "\ngenerated covariance\n", np.cov(fake, rowvar=False))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "gan_gaussian.png")
    save_picture(real, fake, path)
    print("picture:", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
