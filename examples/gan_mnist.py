"""A small GAN on MNIST digits: an MLP generator and discriminator, trained adversarially.

The same alternating updates as examples/gan.py (the GAN lectures of CMU 10-414/714), on
28x28 images scaled to [0, 1]: G maps 64-dimensional noise through Linear-ReLU-Linear to
784 pixels (a sigmoid keeps them in [0, 1]); D scores an image with Linear-ReLU-Linear.
Adam with beta1 = 0.5, the usual choice for GANs. Both training steps run through
`ndl.compile`. At the end a grid of generated digits is saved as a PNG.

Data: the MNIST test split, from --data DIR (MNIST-format files), else $NEEDLE_DATA/mnist,
else the 500-image sample shipped in tests/data/mnist.

    python examples/gan_mnist.py --epochs 30 --out runs/gan_mnist
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

import needle as ndl
from needle import nn
from needle.utils.cli import POSITIVE, SEED, ArgumentParser, check_out_dir, int_at_least

ROOT = Path(__file__).resolve().parents[1]
NOISE = 64


def default_data() -> str:
    env = os.environ.get("NEEDLE_DATA")
    if env and os.path.exists(os.path.join(env, "mnist", "t10k-images-idx3-ubyte.gz")):
        return os.path.join(env, "mnist")
    return str(ROOT / "tests" / "data" / "mnist")


def bce_with_logits(logits: ndl.Tensor, target: float) -> ndl.Tensor:
    """Mean binary cross-entropy of (N, 1) logits against a constant label: logsumexp([0, t]) - y t."""
    n = logits.shape[0]
    pair = ndl.ops.stack([ndl.init.zeros(n, 1, device=logits.device), logits], axis=1).reshape((n, 2))
    return (ndl.ops.logsumexp(pair, axes=(1,)) - logits.reshape((n,)) * target).sum() / n


def build(hidden: int, lr: float):
    generator = nn.Sequential(nn.Linear(NOISE, hidden), nn.ReLU(), nn.Linear(hidden, 784), nn.Sigmoid())
    discriminator = nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    opt_g = ndl.optim.Adam(generator.parameters(), lr=lr, beta1=0.5)
    opt_d = ndl.optim.Adam(discriminator.parameters(), lr=lr, beta1=0.5)

    def step_d(real, noise):
        opt_d.reset_grad()
        fake = generator(noise).detach()
        loss = bce_with_logits(discriminator(real), 1.0) + bce_with_logits(discriminator(fake), 0.0)
        loss.backward()
        opt_d.step()
        return loss

    def step_g(noise):
        opt_g.reset_grad()
        loss = bce_with_logits(discriminator(generator(noise)), 1.0)
        loss.backward()
        opt_g.step()
        return loss

    return generator, ndl.compile(step_d), ndl.compile(step_g)


def save_grid(images: np.ndarray, path: str, columns: int = 8) -> None:
    """(n, 784) images in [0, 1] as one PNG grid."""
    from needle.viz.curves import _pyplot, save_figure

    plt = _pyplot()
    rows = int(np.ceil(len(images) / columns))
    grid = np.ones((rows * 29 + 1, columns * 29 + 1))
    for k, img in enumerate(images):
        r, c = divmod(k, columns)
        grid[1 + r * 29: 1 + r * 29 + 28, 1 + c * 29: 1 + c * 29 + 28] = img.reshape(28, 28)
    fig, ax = plt.subplots(figsize=(columns, rows))
    ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1)
    ax.axis("off")
    save_figure(fig, path, "GAN samples (MNIST)")


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default once: not for flags whose help already says it (default None)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=_Defaults)
    parser.add_argument("--data", default=None, help="folder with t10k-images-idx3-ubyte.gz "
                                                     "[default: $NEEDLE_DATA/mnist, else the shipped sample]")
    parser.add_argument("--epochs", type=int_at_least(1), default=30, help="passes over the images")
    parser.add_argument("--batch", type=int_at_least(2), default=64, help="real and generated images per update")
    parser.add_argument("--hidden", type=int_at_least(1), default=256, help="hidden width of both networks")
    parser.add_argument("--lr", type=POSITIVE, default=2e-4, help="Adam learning rate of both networks")
    parser.add_argument("--seed", type=SEED, default=0, help="seed of shuffles, noise and weights")
    parser.add_argument("--out", default="runs/gan_mnist", help="folder for the grid of samples")
    args = parser.parse_args(argv)
    data = args.data or default_data()
    images = os.path.join(data, "t10k-images-idx3-ubyte.gz")
    if not os.path.exists(images):
        parser.error(f"--data {data}: no t10k-images-idx3-ubyte.gz there")
    X = ndl.data.MNISTDataset(images, os.path.join(data, "t10k-labels-idx1-ubyte.gz")).X
    np.random.seed(args.seed)
    rng = np.random.RandomState(args.seed)
    generator, step_d, step_g = build(args.hidden, args.lr)
    batches = len(X) // args.batch
    if batches == 0:
        parser.error(f"--batch must be at most the {len(X)} images in {data}, got {args.batch}")
    check_out_dir(parser, "--out", args.out)  # before training, not after it
    print(f"{len(X)} images from {data}, {batches} batches of {args.batch} per epoch", flush=True)
    for epoch in range(args.epochs):
        order = rng.permutation(len(X))
        loss_d = loss_g = 0.0
        for b in range(batches):
            real = ndl.Tensor(X[order[b * args.batch:(b + 1) * args.batch]], requires_grad=False)
            noise = ndl.Tensor(rng.normal(0, 1, (args.batch, NOISE)).astype(np.float32), requires_grad=False)
            loss_d += float(step_d(real, noise).numpy())
            noise = ndl.Tensor(rng.normal(0, 1, (args.batch, NOISE)).astype(np.float32), requires_grad=False)
            loss_g += float(step_g(noise).numpy())
        print(f"epoch {epoch + 1:3d}  D loss {loss_d / batches:.4f}  G loss {loss_g / batches:.4f}", flush=True)
    with ndl.no_grad():
        noise = ndl.Tensor(rng.normal(0, 1, (64, NOISE)).astype(np.float32), requires_grad=False)
        samples = generator(noise).numpy()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "gan_mnist.png")
    save_grid(samples, path)
    print("samples:", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
