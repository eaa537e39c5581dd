#!/usr/bin/env python
"""Train needle's scalar (MiniTorch module 1) network on a 2-D toy set, printing one
loss/accuracy line per epoch.

    python examples/scalar_train.py --dataset xor --epochs 500
"""
from __future__ import annotations

import argparse
import math
import sys
import time

from needle.data.toy_datasets import TOY_DATASETS
from needle.scalar import train_scalar_network
from needle.utils.cli import POSITIVE, SEED, ArgumentParser, int_at_least


class _Diverged(ArithmeticError):
    """The loss of an epoch was inf or nan."""


def main(argv=None) -> int:
    parser = ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default="xor", choices=sorted(TOY_DATASETS), help="toy set to fit")
    parser.add_argument("--hidden", type=int_at_least(1), default=10, help="hidden units")
    parser.add_argument("--epochs", type=int_at_least(1), default=500, help="full-batch gradient steps")
    parser.add_argument("--lr", type=POSITIVE, default=0.5, help="SGD learning rate")
    parser.add_argument("--n", type=int_at_least(1), default=50, help="number of points")
    parser.add_argument("--seed", type=SEED, default=0, help="seed of the points and the initial weights")
    parser.add_argument("--log-every", type=int_at_least(1), default=1, metavar="K", help="print every K-th "
                        "epoch (and the last)")
    args = parser.parse_args(argv)

    done = 0  # epochs finished with a finite loss

    def report(epoch: int, loss: float, accuracy: float) -> None:
        nonlocal done
        if not math.isfinite(loss):
            raise _Diverged(f"the loss became {loss}")
        done = epoch
        if epoch % args.log_every == 0 or epoch == args.epochs:
            print(f"epoch {epoch:4d}  loss {loss:.4f}  accuracy {accuracy:.3f}", flush=True)

    start = time.perf_counter()
    try:
        result = train_scalar_network(args.dataset, hidden=args.hidden, lr=args.lr, epochs=args.epochs,
                                      n=args.n, seed=args.seed, on_epoch=report)
    except (_Diverged, ValueError, OverflowError, ZeroDivisionError) as err:
        # the arguments were checked above, so this is the arithmetic of a diverged run:
        # a sigmoid saturated to exactly 0 (log 0), or weights overflowing
        what = err if isinstance(err, _Diverged) else f"the loss became undefined ({err})"
        print(f"error: training diverged at epoch {done + 1}: {what}; lower --lr (got {args.lr})",
              file=sys.stderr)
        return 1
    print(f"final accuracy {result.accuracy:.3f} on {args.n} '{args.dataset}' points "
          f"({time.perf_counter() - start:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
