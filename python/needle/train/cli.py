"""Command line: `python -m needle train [recipe] ...` (also installed as `needle`).

This module parses; needle.train.checks checks the arguments, needle.train.run runs
the command.

Every argument is checked before any data is read or any model is built: a bad one
ends the run with a single line `needle: error: ...` naming the flag and the value,
exit status 2. Whatever could fail after training (the plot, the summary file, the
checkpoint folder) is checked before it starts too, so finished work is never lost.

Exit status: 0 done; 1 training stopped on a non-finite loss or a failed checkpoint
write, or the plot or the summary file could not be written after training (the
summary is printed all the same; each such line names the flag and the file);
2 bad arguments or data;
130 interrupted (Ctrl-C), the last checkpoint intact.

`--distributed` (under `mpiexec -n N`, see needle.distributed): every rank checks
its arguments and builds its data, and the ranks agree before any collective: if one
rank finds an error, rank 0 prints it and every rank exits 2. Only rank 0 prints
progress and writes checkpoints, summaries and plots. A rank that ends with any other
non-zero status aborts the whole job (MPI_Abort), so no rank is left waiting in an
allreduce for one that has gone.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from .._packaging import install_hint
from .._version import __version__
from ..utils.cli import float_in as _float_in
from ..utils.cli import int_at_least as _int_at_least
from ..utils.cli import path as _path
from .checks import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError  # noqa: F401  (also importable from here)
from .recipes import RECIPES
from .run import execute

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `needle: error: argument --epochs: ...`, status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"needle: error: {message}\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Shows `(default: X)` for flags with a fixed default; recipe-dependent ones say theirs in the help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


class _Given(argparse.Action):
    """The plain store action, noting in `args.given` which options were passed: a flag's
    value alone cannot tell a typed default from the same value left out."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        if option_string is not None:
            given = set(getattr(namespace, "given", ()))
            given.add(max(self.option_strings, key=len))  # the long name, however it was spelled
            namespace.given = given


class _GivenSwitch(argparse._StoreTrueAction):
    """store_true that also notes itself in `args.given` (a recipe-specific switch can be refused)."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        namespace.given = set(getattr(namespace, "given", ())) | {max(self.option_strings, key=len)}


_POSITIVE_INT = _int_at_least(1)
_POSITIVE_FLOAT = _float_in(0.0, low_open=True)
_SEED = _int_at_least(0)


def _device_names() -> List[str]:
    from ..backend_selection import registered_devices

    return registered_devices()


def _per_recipe(key: str, skip=(0,)) -> str:
    """'toy 20, mlp 5, ...': the recipes' defaults for `key`, read from their declarations."""
    parts = []
    for recipe in RECIPES.values():
        if recipe.model_defaults and any(key in d for d in recipe.model_defaults.values()):
            values = ", ".join(f"{m} {d[key]}" for m, d in recipe.model_defaults.items())
            parts.append(f"{recipe.name} ({values})")
        elif recipe.defaults.get(key) not in skip:
            parts.append(f"{recipe.name} {recipe.defaults[key]}")
    return "default: " + ", ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    """The `needle` parser: the `train` and `export` subcommands with every flag and its help."""
    parser = _Parser(prog="needle", description="needle: train models from the shell")
    parser.add_argument("--version", action="version", version=f"needle {__version__}",
                        help="print needle's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    recipes = "; ".join(f"{r.name}: {r.help}" for r in RECIPES.values())
    train = sub.add_parser("train", help="train a model (default: an MLP on a generated spiral)",
                           formatter_class=_HelpFormatter, description="Train a model; exit status 0 done, "
                           "1 stopped on a non-finite loss or a failed write after training, 2 bad arguments, "
                           "130 interrupted.")
    train.register("action", None, _Given)  # every plain option notes itself in args.given
    train.set_defaults(given=frozenset())
    train.add_argument("recipe", nargs="?", default="toy", choices=list(RECIPES),
                       help=f"what to train (default: toy). {recipes}")
    train.add_argument("--epochs", type=_POSITIVE_INT,
                       help=_per_recipe("epochs", skip=(0, None)) + " (gpt counts --iters instead)")
    train.add_argument("--batch-size", type=_POSITIVE_INT, help=_per_recipe("batch_size"))
    train.add_argument("--optimizer", choices=["adam", "sgd"],
                       help=_per_recipe("optimizer") + " (gpt: AdamW in nanoGPT's two groups, not a choice)")
    train.add_argument("--lr", type=_POSITIVE_FLOAT, help="learning rate; " + _per_recipe("lr"))
    train.add_argument("--lr-decay", type=_POSITIVE_FLOAT,
                       help="multiply the learning rate by this after every epoch; " + _per_recipe("lr_decay"))
    train.add_argument("--momentum", type=_float_in(0.0, 1.0), default=0.0, help="SGD momentum, in [0, 1)")
    train.add_argument("--weight-decay", type=_float_in(0.0),
                       help="L2 penalty added to the gradient (gpt: AdamW's decoupled decay of the matrices), >= 0; "
                            "default: gpt 0.1, the others 0")
    train.add_argument("--seed", type=_SEED, default=0, help="seeds numpy's RNG: same seed, same numbers")
    train.add_argument("--device", choices=_device_names(), default="cpu", help="where the model computes")
    train.add_argument("--checkpoint", metavar="DIR", type=_path,
                       help="save model, optimizer and RNG state to DIR/last.safetensors after each epoch")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint DIR")
    train.add_argument("--overwrite", action="store_true",
                       help="start again from scratch even if --checkpoint DIR holds a checkpoint")
    train.add_argument("--summary", metavar="PATH", type=_path,
                       help="also write the JSON summary, with the history, here")
    train.add_argument("--plot", metavar="PNG", type=_path, help="write loss/accuracy curves here (needs matplotlib)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument("--no-compile", action="store_true",
                       help="run every step eagerly instead of replaying it through ndl.compile")
    train.add_argument("--limit", type=_POSITIVE_INT,
                       help="use only the first N training and test samples (characters for lm; not read by toy)")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel training over the ranks of an MPI job: run as `mpiexec -n N python -m "
                            f"needle train ... --distributed` (needs {install_hint('distributed')}); "
                            "--batch-size is per rank; classification recipes only")
    toy = train.add_argument_group("toy")
    toy.add_argument("--dataset", default="spiral", choices=["simple", "diag", "split", "xor", "circle", "spiral"],
                     help="the generated 2-D set")
    toy.add_argument("--samples", type=_int_at_least(4), default=1200,
                     help="training points (the test set has a quarter as many)")
    toy.add_argument("--classes", type=_int_at_least(2), default=3, help="spiral arms")
    model = train.add_argument_group("models")
    model.add_argument("--hidden", type=_POSITIVE_INT, help="hidden width; " + _per_recipe("hidden"))
    model.add_argument("--blocks", type=_POSITIVE_INT, default=3, help="MLPResNet residual blocks")
    model.add_argument("--dropout", type=_float_in(0.0, 1.0), help="dropout (mlp, gpt), in [0, 1); "
                       + _per_recipe("dropout", skip=(None,)))
    data_recipes = ", ".join(r.name for r in RECIPES.values() if r.data_flag == "--data")
    model.add_argument("--data", metavar="DIR", type=_path,
                       help=f"MNIST-format or cifar-10-batches-py folder for {data_recipes} "
                            f"(default: {RECIPES['mlp'].default_data})")
    lm = train.add_argument_group("lm")
    lm.add_argument("--text", metavar="PATH", type=_path,
                    help="text file (default: the first 2,000 lines of tiny shakespeare, shipped with needle)")
    lm.add_argument("--level", choices=["char", "word"], default="char", help="tokens are characters or words")
    lm.add_argument("--model", choices=list(RECIPES["lm"].model_defaults), default="lstm",
                    help="the sequence model")
    lm.add_argument("--embedding", type=_POSITIVE_INT, default=64, help="embedding width")
    lm.add_argument("--layers", type=_POSITIVE_INT, default=1, help="stacked sequence-model layers")
    lm.add_argument("--seq-len", type=_POSITIVE_INT, default=64, help="tokens per training window (BPTT length)")
    lm.add_argument("--clip", type=_POSITIVE_FLOAT, help="clip the gradient norm to this (default: no clipping)")
    lm.add_argument("--sample", type=_int_at_least(0), default=200,
                    help="characters/words to generate after training (lm, gpt)")
    gpt = train.add_argument_group("gpt (nanoGPT's flags; the defaults are its shakespeare_char CPU run)")
    gpt.add_argument("--block-size", type=_POSITIVE_INT, default=64, help="context length in characters")
    gpt.add_argument("--n-layer", type=_POSITIVE_INT, default=4, help="transformer blocks")
    gpt.add_argument("--n-head", type=_POSITIVE_INT, default=4, help="attention heads (must divide --n-embd)")
    gpt.add_argument("--n-embd", type=_POSITIVE_INT, default=128, help="embedding width")
    gpt.add_argument("--bias", action=_GivenSwitch, help="biases in the Linears and LayerNorms (nanoGPT: off)")
    gpt.add_argument("--iters", type=_POSITIVE_INT, default=2000, help="optimizer steps in all (resumed ones included)")
    gpt.add_argument("--min-lr", type=_float_in(0.0), default=1e-4, help="the rate the cosine decays to")
    gpt.add_argument("--warmup-iters", type=_int_at_least(0), default=100, help="steps of linear warm-up")
    gpt.add_argument("--lr-decay-iters", type=_POSITIVE_INT, default=2000,
                     help="the step where the cosine reaches --min-lr")
    gpt.add_argument("--beta2", type=_float_in(0.0, 1.0), default=0.99, help="AdamW's beta2 (beta1 is 0.9)")
    gpt.add_argument("--grad-clip", type=_float_in(0.0), default=1.0,
                     help="clip the gradients' global norm to this (0: no clipping)")
    gpt.add_argument("--eval-interval", type=_POSITIVE_INT, default=250,
                     help="steps between loss estimates (and checkpoints)")
    gpt.add_argument("--eval-iters", type=_POSITIVE_INT, default=20, help="batches per loss estimate and split")
    export = sub.add_parser("export", help="write the model of a `needle train` checkpoint as ONNX",
                            description="Rebuild the model of a `needle train` checkpoint and write it as an ONNX "
                            f"model (opset 17, dynamic batch); needs onnx: {install_hint('onnx')}. "
                            "Exit status 0 done, 2 bad arguments or checkpoint.")
    export.add_argument("checkpoint", metavar="CHECKPOINT", type=_path,
                        help="a checkpoint file, or the --checkpoint DIR of a run")
    export.add_argument("--out", metavar="PATH", type=_path, required=True, help="the .onnx file to write")
    sample = sub.add_parser("sample", help="generate text from a checkpoint (gpt, lm, or nanoGPT's ckpt.pt)",
                            description="Print text generated by the model of a checkpoint: a `needle train gpt` or "
                            "`needle train lm` checkpoint (file or --checkpoint DIR), or nanoGPT's ckpt.pt with "
                            "its meta.pkl beside (reading that needs torch). Exit status 0 done, 2 bad arguments or "
                            "checkpoint.")
    sample.add_argument("checkpoint", metavar="CHECKPOINT", type=_path,
                        help="a checkpoint file, or the --checkpoint DIR of a run")
    sample.add_argument("--prompt", default="\n", help="text to continue (default: a new line)")
    sample.add_argument("--tokens", type=_int_at_least(0), default=500, help="characters (or words) to generate")
    sample.add_argument("--temperature", type=_POSITIVE_FLOAT, default=0.8,
                        help="divides the logits: below 1 surer, above 1 more varied")
    sample.add_argument("--top-k", type=_POSITIVE_INT, default=200, help="sample among the k likeliest tokens only")
    sample.add_argument("--seed", type=_SEED, default=1337, help="the same seed gives the same text")
    return parser



def main(argv: Optional[List[str]] = None) -> int:
    """The `needle` command (also `python -m needle`): parse `argv` (default: sys.argv[1:]) and
    run the command; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a parse error already reported in one line
        return int(done.code or 0)
    try:
        return execute(args)
    except BrokenPipeError:  # `needle train | head`: the reader left; stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush does not raise again
        return EXIT_BROKEN_PIPE


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool whose reader closed the pipe
