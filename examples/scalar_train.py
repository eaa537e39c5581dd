#!/usr/bin/env python
"""Train needle's scalar (MiniTorch module 1) network on a 2-D toy set, printing one
loss/accuracy line per epoch.

    python examples/scalar_train.py --dataset xor --epochs 500
"""
from __future__ import annotations

import argparse
import sys
import time

from needle.data.toy_datasets import TOY_DATASETS
from needle.scalar import train_scalar_network


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default="xor", choices=sorted(TOY_DATASETS), help="toy set to fit")
    parser.add_argument("--hidden", type=int, default=10, help="hidden units")
    parser.add_argument("--epochs", type=int, default=500, help="full-batch gradient steps")
    parser.add_argument("--lr", type=float, default=0.5, help="SGD learning rate")
    parser.add_argument("--n", type=int, default=50, help="number of points")
    parser.add_argument("--seed", type=int, default=0, help="seed of the points and the initial weights")
    parser.add_argument("--log-every", type=int, default=1, metavar="K", help="print every K-th epoch (and the last)")
    args = parser.parse_args(argv)
    for name in ("hidden", "epochs", "n", "log_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not args.lr > 0:
        parser.error(f"--lr must be positive, got {args.lr}")

    def report(epoch: int, loss: float, accuracy: float) -> None:
        if epoch % args.log_every == 0 or epoch == args.epochs:
            print(f"epoch {epoch:4d}  loss {loss:.4f}  accuracy {accuracy:.3f}", flush=True)

    start = time.perf_counter()
    result = train_scalar_network(args.dataset, hidden=args.hidden, lr=args.lr, epochs=args.epochs,
                                  n=args.n, seed=args.seed, on_epoch=report)
    print(f"final accuracy {result.accuracy:.3f} on {args.n} '{args.dataset}' points "
          f"({time.perf_counter() - start:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
