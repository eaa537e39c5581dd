"""Train a small needle MLP on a 2-D toy dataset and draw what it learned.

    python examples/toy_classifier.py --dataset spiral --epochs 200 --out toy_out

writes, into --out,
    boundary.png  the decision boundary over the training points, beside the loss curves
    graph.gv      the computation graph of one small forward pass and its loss (after backward,
                  so every node shows its gradient's norm), as graphviz source
    graph.svg     that graph drawn by graphviz's `dot` program (skipped, with a note, without it)

Needs the plot extra: pip install -e ".[plot]" (or "needle-dl[plot]"); drawing the graph also needs `dot`
(apt-get install graphviz).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np

import needle as ndl
from needle import nn
from needle.data import DataLoader, NDArrayDataset
from needle.data.toy_datasets import TOY_DATASETS
from needle.models import MLP
from needle.train import classification_epoch
from needle.utils.cli import POSITIVE, SEED, ArgumentParser, check_out_dir, int_at_least
from needle.viz import graph, model_predictor, plot_decision_boundary, render_graph


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(TOY_DATASETS), default="spiral", help="toy dataset")
    parser.add_argument("--classes", type=int_at_least(2), default=2, help="number of spiral arms (spiral only)")
    parser.add_argument("--n", type=int_at_least(4), default=300, help="training points")
    parser.add_argument("--epochs", type=int_at_least(1), default=200, help="passes over the training set")
    parser.add_argument("--hidden", default="32,32", help="comma-separated hidden layer widths")
    parser.add_argument("--lr", type=POSITIVE, default=0.01, help="Adam learning rate")
    parser.add_argument("--batch-size", type=int_at_least(1), default=32, help="points per step")
    parser.add_argument("--seed", type=SEED, default=0, help="seed of the data and the weights")
    parser.add_argument("--out", default="toy_out", help="directory for boundary.png, graph.gv and graph.svg")
    parser.add_argument("--graph-format", choices=["svg", "png", "pdf"], default="svg",
                        help="file format of the computation graph (graph.<format>)")
    parser.add_argument("--graph-rankdir", choices=["TB", "LR"], default="TB",
                        help="layout of the computation graph: top-to-bottom or left-to-right")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    args = parser.parse_args(argv)
    try:
        hidden = [int(h) for h in args.hidden.split(",") if h.strip()]
    except ValueError:
        parser.error(f"--hidden must be comma-separated integers, got {args.hidden!r}")
    if any(h < 1 for h in hidden):
        parser.error(f"--hidden widths must all be >= 1, got {args.hidden!r}")
    args.hidden = hidden
    check_out_dir(parser, "--out", args.out)  # before training, not after it
    return args


def make_data(name: str, n: int, seed: int, classes: int):
    make = TOY_DATASETS[name]
    kwargs = {"classes": classes} if name == "spiral" else {}
    return make(n, seed=seed, **kwargs)


def run_epoch(model, loader, loss_fn, opt=None):
    """Mean loss and accuracy over one pass; trains when `opt` is given."""
    stats = classification_epoch(loader, model, loss_fn, opt)
    return stats.mean_loss, stats.accuracy


def draw_graph(model, loss_fn, X, y, path: str, fmt: str, rankdir: str = "TB") -> list:
    """The graph of loss_fn(model(X[:4]), y[:4]) after backward, with the parameters named:
    its graphviz source beside `path` (.gv), and `path` itself drawn when `dot` is installed.
    Returns the files written."""
    model.train()
    xb = ndl.Tensor(X[:4], dtype="float32", requires_grad=False)
    yb = ndl.Tensor(y[:4], dtype="float32", requires_grad=False)
    logits = model(xb)
    loss = loss_fn(logits, yb)
    loss.backward()
    names = {param: "layer" + name for name, param in model.named_parameters()}  # "layer0.weight"
    names.update({xb: "X (batch of 4)", logits: "logits", loss: "loss"})
    dot = graph(loss, names=names, rankdir=rankdir)
    source_path = os.path.splitext(path)[0] + ".gv"
    with open(source_path, "w", encoding="utf-8") as f:
        f.write(dot.source)
    if shutil.which("dot") is None:
        # the source is the whole graph; only the drawing needs the system program
        print(f"note: graphviz's dot is not installed, so {path} was not drawn "
              f"(apt-get install graphviz, then: dot -T{fmt} {source_path} -o {path})")
        return [source_path]
    render_graph(dot, path, format=fmt)
    return [source_path, path]


def main(argv=None) -> int:
    args = parse_args(argv)
    np.random.seed(args.seed)  # DataLoader shuffling and weight initialisation draw from it
    X, y = make_data(args.dataset, args.n, args.seed, args.classes)
    X_test, y_test = make_data(args.dataset, max(args.n // 2, 4), args.seed + 1, args.classes)
    classes = int(max(y.max(), y_test.max())) + 1

    model = MLP(2, args.hidden, classes)
    loss_fn = nn.SoftmaxLoss()
    opt = ndl.optim.Adam(model.parameters(), lr=args.lr)
    train_loader = DataLoader(NDArrayDataset(X, y), batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(NDArrayDataset(X_test, y_test), batch_size=256)

    history = []
    for epoch in range(1, args.epochs + 1):
        train_loss, train_acc = run_epoch(model, train_loader, loss_fn, opt)
        test_loss, test_acc = run_epoch(model, test_loader, loss_fn)
        history.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                        "test_loss": test_loss, "test_accuracy": test_acc})
        if not args.quiet and (epoch == 1 or epoch == args.epochs or epoch % max(args.epochs // 10, 1) == 0):
            print(f"epoch {epoch:4d}  train loss {train_loss:.4f} acc {train_acc:.3f}  "
                  f"test loss {test_loss:.4f} acc {test_acc:.3f}", flush=True)

    os.makedirs(args.out, exist_ok=True)
    boundary_path = os.path.join(args.out, "boundary.png")
    plot_decision_boundary(model_predictor(model), X, y, boundary_path, history=history,
                           title=f"needle MLP {args.hidden} on '{args.dataset}' ({args.epochs} epochs)")
    graph_path = os.path.join(args.out, f"graph.{args.graph_format}")
    written = [boundary_path] + draw_graph(model, loss_fn, X, y, graph_path, args.graph_format, args.graph_rankdir)
    print(f"wrote {', '.join(written[:-1])} and {written[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
