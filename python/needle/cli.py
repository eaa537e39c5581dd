"""Command line: `python -m needle train [recipe] ...` (also installed as `needle`)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

import numpy as np


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="needle", description="needle: train models from the shell")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a model (default: an MLP on a generated spiral)",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("recipe", nargs="?", default="toy", choices=["toy", "mlp", "cnn", "resnet9", "lm"],
                       help="toy: generated 2-D data; mlp: MLPResNet on MNIST-format data; cnn: a small CNN "
                            "on MNIST-format data; resnet9: ResNet9 on CIFAR-10 or MNIST-format data; "
                            "lm: language model on text")
    train.add_argument("--epochs", type=int, default=None, help="default: toy 20, mlp/cnn/resnet9 5, lm 2")
    train.add_argument("--batch-size", type=int, default=None, help="default: 32 (lm), 100 (others)")
    train.add_argument("--optimizer", choices=["adam", "sgd"], default=None, help="default: sgd for lm, else adam")
    train.add_argument("--lr", type=float, default=None, help="default: adam 0.001 (toy 0.01, mlp 0.002), sgd 4.0 (lm)")
    train.add_argument("--lr-decay", type=float, default=None,
                       help="multiply the learning rate by this after every epoch (default: mlp/cnn 0.6, else 1)")
    train.add_argument("--momentum", type=float, default=0.0)
    train.add_argument("--weight-decay", type=float, default=0.0, help="L2 penalty added to the gradient")
    train.add_argument("--seed", type=int, default=0, help="seeds numpy's RNG: same seed, same numbers")
    train.add_argument("--device", choices=["cpu", "cpu_numpy"], default="cpu")
    train.add_argument("--checkpoint", metavar="DIR", help="save model/optimizer/RNG after each epoch")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint DIR")
    train.add_argument("--summary", metavar="PATH", help="also write the JSON summary to this file")
    train.add_argument("--plot", metavar="PNG", help="write loss/accuracy curves (needs matplotlib)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument("--limit", type=int, default=None,
                       help="use only the first N training and test samples (characters for lm)")
    toy = train.add_argument_group("toy")
    toy.add_argument("--dataset", default="spiral", choices=["simple", "diag", "split", "xor", "circle", "spiral"])
    toy.add_argument("--samples", type=int, default=1200)
    toy.add_argument("--classes", type=int, default=3, help="spiral arms")
    model = train.add_argument_group("models")
    model.add_argument("--hidden", type=int, default=None, help="hidden width (toy 64, mlp 256, lm 128)")
    model.add_argument("--blocks", type=int, default=3, help="MLPResNet residual blocks")
    model.add_argument("--dropout", type=float, default=0.1, help="MLPResNet dropout")
    model.add_argument("--data", metavar="DIR", help="MNIST-format folder or cifar-10-batches-py folder "
                                                     "(default: /usr/share/datasets/fashion-mnist)")
    lm = train.add_argument_group("lm")
    lm.add_argument("--text", metavar="PATH", help="text file (default: the first 2,000 lines of tiny shakespeare, shipped with needle)")
    lm.add_argument("--level", choices=["char", "word"], default="char")
    lm.add_argument("--model", choices=["lstm", "rnn", "transformer"], default="lstm")
    lm.add_argument("--embedding", type=int, default=64)
    lm.add_argument("--layers", type=int, default=1)
    lm.add_argument("--seq-len", type=int, default=64)
    lm.add_argument("--clip", type=float, default=None, help="clip the gradient norm")
    lm.add_argument("--sample", type=int, default=200, help="characters/words to generate after training")
    return parser


_DEFAULTS = {
    "toy": dict(epochs=20, batch_size=100, optimizer="adam", lr=0.01, hidden=64, lr_decay=1.0),
    "mlp": dict(epochs=5, batch_size=100, optimizer="adam", lr=0.002, hidden=256, lr_decay=0.6),
    "cnn": dict(epochs=5, batch_size=100, optimizer="adam", lr=0.001, hidden=0, lr_decay=0.6),
    "resnet9": dict(epochs=5, batch_size=100, optimizer="adam", lr=0.001, hidden=0, lr_decay=0.6),
    "lm": dict(epochs=2, batch_size=32, optimizer="sgd", lr=4.0, hidden=128, lr_decay=1.0),
}


def _resolve(args) -> None:
    for key, value in _DEFAULTS[args.recipe].items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def train(args) -> dict:
    import needle as ndl

    from .recipes import RECIPES
    from .trainer import fit

    _resolve(args)
    config = {k: v for k, v in vars(args).items() if k not in ("command",)}
    args.device = getattr(ndl, args.device)()
    np.random.seed(args.seed)
    task = RECIPES[args.recipe](args)
    params = task.model.parameters()
    if args.optimizer == "adam":
        opt = ndl.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    else:
        opt = ndl.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    print(f"{task.description}: {sum(int(np.prod(p.shape)) for p in params):,} parameters, "
          f"{task.train_batches} batches per epoch", flush=True)
    summary = fit(task, opt, args.epochs, config=config, checkpoint_dir=args.checkpoint, resume=args.resume,
                  progress=not args.no_progress, lr_decay=args.lr_decay)
    summary["recipe"] = args.recipe
    summary["seed"] = args.seed
    if args.recipe == "lm" and args.sample:
        summary["sample"] = task.sample(args.sample, seed=args.seed)
        print("sample:", summary["sample"])
    if args.plot:
        from .viz import plot_history

        plot_history(summary["history"], args.plot, title=task.description)
        summary["plot"] = args.plot
    if args.summary:
        from .serialization import atomic_write_bytes

        atomic_write_bytes(args.summary, (json.dumps(summary, indent=2) + "\n").encode())
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            train(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"needle: error: {err}", file=sys.stderr)
        return 2
    return 0
