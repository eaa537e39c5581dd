#!/usr/bin/env python
"""The A0 demo: a linear layer backpropagated by hand, checked against autograd.

    Y = X @ W          X: (B, H, D), W: (D, E), Y: (B, H, E)
    loss = sum(Y ** 2)

The upstream gradient is G = dloss/dY = 2 Y, and ManualLinear.backward gives
    dloss/dX = G @ W^T                         (B, H, D)
    dloss/dW = X_flat^T @ G_flat               (D, E), X_flat (B*H, D), G_flat (B*H, E)
These are compared with needle's autograd and, when it is installed, PyTorch's.
The exit code is 0 when every gradient is approximately equal, 1 otherwise.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import needle as ndl
from needle.manual import ManualLinear, compare_table
from needle.utils.cli import SEED, ArgumentParser, float_in, int_at_least


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--B", type=int_at_least(1), default=4, help="batch size")
    p.add_argument("--H", type=int_at_least(1), default=8, help="sequence length")
    p.add_argument("--D", type=int_at_least(1), default=16, help="input features")
    p.add_argument("--E", type=int_at_least(1), default=12, help="output features")
    p.add_argument("--seed", type=SEED, default=0, help="numpy seed for X and W")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="dtype of X, W and the gradients")
    p.add_argument("--bias", action="store_true", help="Y = X @ W + b instead")
    p.add_argument("--atol", type=float_in(0), default=None, help="absolute tolerance (None: chosen by dtype)")
    p.add_argument("--rtol", type=float_in(0), default=None, help="relative tolerance (None: chosen by dtype)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    args = p.parse_args(argv)
    return args


def torch_gradients(X: np.ndarray, W: np.ndarray, b, dtype: str):
    """(loss, X, W, b) from PyTorch autograd, or None when torch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    tdtype = getattr(torch, dtype)
    Xt = torch.tensor(X, dtype=tdtype, requires_grad=True)
    Wt = torch.tensor(W, dtype=tdtype, requires_grad=True)
    bt = None if b is None else torch.tensor(b, dtype=tdtype, requires_grad=True)
    Y = Xt @ Wt if bt is None else Xt @ Wt + bt
    loss = (Y ** 2).sum()
    loss.backward()
    return loss.item(), Xt, Wt, bt


def main(argv=None) -> int:
    args = parse_args(argv)
    np.random.seed(args.seed)
    X = np.random.randn(args.B, args.H, args.D)
    layer = ManualLinear(args.D, args.E, bias=args.bias, dtype=args.dtype)
    if args.bias:  # a non-zero bias, so a bias bug cannot hide behind zeros
        layer.b = ndl.Tensor(np.random.randn(args.E) * 0.1, dtype=args.dtype, requires_grad=False)
    W = layer.W.numpy()
    b = None if layer.b is None else layer.b.numpy()

    # manual: forward, the loss's own gradient 2Y, then the layer's backward
    Y = layer.forward(X)
    loss_manual = float((Y ** 2).sum().numpy())
    dX = layer.backward(2 * Y)

    # needle autograd on the same numbers
    Xn = ndl.Tensor(X, dtype=args.dtype)
    Wn = ndl.Tensor(W, dtype=args.dtype)
    bn = None if b is None else ndl.Tensor(b, dtype=args.dtype)
    Yn = Xn @ Wn if bn is None else Xn @ Wn + bn
    loss_needle = (Yn ** 2).sum()
    loss_needle.backward()

    rows = [("dX  manual vs needle", dX, Xn), ("dW  manual vs needle", layer.W_grad, Wn)]
    if bn is not None:
        rows.append(("db  manual vs needle", layer.b_grad, bn))
    print(f"Y = X @ W{' + b' if args.bias else ''}: X {X.shape}, W {W.shape}, loss = sum(Y**2), dtype {args.dtype}")
    print(f"loss: manual {loss_manual:.6g}, needle {float(loss_needle.numpy()):.6g}", end="")

    ref = None if args.no_torch else torch_gradients(X, W, b, args.dtype)
    if ref is not None:
        loss_torch, Xt, Wt, bt = ref
        print(f", torch {loss_torch:.6g}")
        rows += [("dX  manual vs torch", dX, Xt), ("dW  manual vs torch", layer.W_grad, Wt)]
        if bt is not None:
            rows.append(("db  manual vs torch", layer.b_grad, bt))
    else:
        print("\nPyTorch comparison skipped" + ("" if args.no_torch else " (torch is not installed)"))
    print()
    results = compare_table(rows, atol=args.atol, rtol=args.rtol)
    ok = all(r.approximate for r in results)
    print("\nall gradients approximately equal" if ok else "\nMISMATCH: some gradients differ")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
