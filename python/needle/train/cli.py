"""Command line: `python -m needle train [recipe] ...` (also installed as `needle`).

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
import importlib.util
import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..utils.cli import float_in as _float_in, int_at_least as _int_at_least, path as _path, write_problem
from .recipes import RECIPES
from .loop import CheckpointWriteFailed, NonFiniteLoss, TrainingInterrupted, check_resume, checkpoint_path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A bad argument, found before any work was done (exit status 2)."""


class _AgreedExit(Exception):
    """Every rank of a distributed run leaves with `status`; rank 0 prints `message` (None elsewhere)."""

    def __init__(self, status: int, message: Optional[str]):
        super().__init__(message)
        self.status, self.message = status, message


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
    parser = _Parser(prog="needle", description="needle: train models from the shell")
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
    train.add_argument("--epochs", type=_POSITIVE_INT, help=_per_recipe("epochs"))
    train.add_argument("--batch-size", type=_POSITIVE_INT, help=_per_recipe("batch_size"))
    train.add_argument("--optimizer", choices=["adam", "sgd"], help=_per_recipe("optimizer"))
    train.add_argument("--lr", type=_POSITIVE_FLOAT, help="learning rate; " + _per_recipe("lr"))
    train.add_argument("--lr-decay", type=_POSITIVE_FLOAT,
                       help="multiply the learning rate by this after every epoch; " + _per_recipe("lr_decay"))
    train.add_argument("--momentum", type=_float_in(0.0, 1.0), default=0.0, help="SGD momentum, in [0, 1)")
    train.add_argument("--weight-decay", type=_float_in(0.0), default=0.0,
                       help="L2 penalty added to the gradient, >= 0")
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
                            "needle train ... --distributed` (needs pip install -e \".[distributed]\"); "
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
    model.add_argument("--dropout", type=_float_in(0.0, 1.0), default=0.1, help="MLPResNet dropout, in [0, 1)")
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
                    help="characters/words to generate after training")
    export = sub.add_parser("export", help="write the model of a `needle train` checkpoint as ONNX",
                            description="Rebuild the model of a `needle train` checkpoint and write it as an ONNX "
                            "model (opset 17, dynamic batch); needs onnx: pip install -e \".[onnx]\". "
                            "Exit status 0 done, 2 bad arguments or checkpoint.")
    export.add_argument("checkpoint", metavar="CHECKPOINT", type=_path,
                        help="a checkpoint file, or the --checkpoint DIR of a run")
    export.add_argument("--out", metavar="PATH", type=_path, required=True, help="the .onnx file to write")
    return parser


# --- checks that need more than one flag, or the file system --------------------------------------

def resolve_defaults(args: argparse.Namespace) -> None:
    """Fill each recipe-dependent flag the user left out from the recipe's declaration."""
    recipe = RECIPES[args.recipe]
    for key, value in recipe.resolved_defaults(args.model).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if recipe.data_flag is not None:
        dest = recipe.data_flag.lstrip("-")
        if getattr(args, dest) is None:
            setattr(args, dest, recipe.default_data)


def _check_recipe_flags(args: argparse.Namespace) -> None:
    """A recipe-specific flag (see Recipe.flags) passed to a recipe that does not read it is refused:
    silently training without it would be a run other than the one asked for."""
    recipe = RECIPES[args.recipe]
    specific = frozenset().union(*(r.flags for r in RECIPES.values()))
    for flag in sorted((set(getattr(args, "given", ())) & specific) - recipe.flags):
        users = ", ".join(r.name for r in RECIPES.values() if flag in r.flags)
        raise UsageError(f"{flag} is only read by the {users} recipe(s), not by {args.recipe}")


def _check_data(args: argparse.Namespace) -> None:
    recipe = RECIPES[args.recipe]
    for flag in ("--data", "--text"):
        given = getattr(args, flag.lstrip("-"))
        if flag != recipe.data_flag:
            continue
        if not os.path.exists(given):
            if given == recipe.default_data:
                raise UsageError(f"the {recipe.name} recipe reads its data from {given}, which does not exist: "
                                 f"{recipe.data_hint}")
            raise UsageError(f"{flag} {given}: no such file or folder (the {recipe.name} recipe reads its data "
                             f"from it; point {flag} at an existing path)")
        if flag == "--text" and not os.path.isfile(given):
            raise UsageError(f"--text {given}: not a file")
        if flag == "--data" and not os.path.isdir(given):
            raise UsageError(f"--data {given}: not a folder")


def _check_writable(flag: str, value: str, folder: str) -> None:
    """UsageError naming `flag` unless a file can really be created in `folder`."""
    problem = write_problem(folder)
    if problem is not None:
        where = "the folder" if os.path.abspath(value) == os.path.abspath(folder) else f"its folder {folder}"
        raise UsageError(f"{flag} {value}: cannot write a file in {where}: {problem}")


def _check_output_file(flag: str, path: str) -> None:
    """The folder of `path` exists (or is made now) and a file can be written there; `path` is not a folder."""
    if not path:  # the parser refuses it; a caller building its own namespace may not
        raise UsageError(f"{flag}: expected a path, got an empty string ''")
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot create its folder {folder}: {err.strerror}") from None
    _check_writable(flag, path, folder)


def _check_checkpoint(args: argparse.Namespace, config: Dict[str, Any]) -> None:
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other: pick one")
    if args.checkpoint is None:
        if args.resume:
            raise UsageError("--resume needs --checkpoint DIR")
        if args.overwrite:
            raise UsageError("--overwrite needs --checkpoint DIR")
        return
    folder = args.checkpoint
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f"--checkpoint {folder}: is an existing file; give a folder")
    path = checkpoint_path(folder)
    if args.resume:
        if not os.path.exists(path):
            raise UsageError(f"--resume: there is no checkpoint in {folder} (no {path})")
        done = check_resume(path, config)["epoch"]  # ValueError (settings, corruption): like a usage error
        if args.epochs < done:
            # --epochs counts every epoch, the resumed ones included: a checkpoint cannot go back
            raise UsageError(f"--epochs {args.epochs}: the checkpoint in {folder} already has {done} epochs, "
                             f"more than --epochs asks for in all; pass --epochs {done + 1} or more to train on")
        _check_writable("--checkpoint", folder, folder)  # it is rewritten after every epoch
        return
    if os.path.exists(path) and not args.overwrite:
        raise UsageError(f"--checkpoint {folder} already holds a checkpoint ({path}): pass --resume to continue "
                         "it, or --overwrite to start again from scratch")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--checkpoint {folder}: cannot create it: {err.strerror}") from None
    _check_writable("--checkpoint", folder, folder)


def check_distributed(args: argparse.Namespace) -> None:
    """--distributed needs mpi4py, an MPI launcher around this process, and a classification recipe."""
    from ..distributed import comm

    if not args.distributed:
        return
    if args.recipe == "lm":
        raise UsageError("--distributed trains the classification recipes (toy, mlp, cnn, resnet9), not lm")
    if not comm.mpi_available():
        raise UsageError(f"--distributed: {comm.MISSING_MPI}")
    if not comm.launched_by_mpi():
        raise UsageError("--distributed: this process was not started by an MPI launcher; run it as "
                         "`mpiexec -n 2 python -m needle train ... --distributed`")


def validate(args: argparse.Namespace, world_size: Optional[int] = None, writer: bool = True) -> Dict[str, Any]:
    """Check every argument (after the parser's own checks); returns the run's config.

    `world_size`: the number of ranks of a distributed run (part of the config, so a
    checkpoint resumes only with as many). `writer` False (ranks other than 0) skips the
    checks of what only rank 0 reads or writes: the checkpoint, the summary, the plot.
    Raises UsageError (or ValueError / FileNotFoundError from reading a checkpoint to resume).
    """
    from ..backend_selection import get_device

    resolve_defaults(args)
    device = get_device(args.device)
    if not device.enabled():
        raise UsageError(f"--device {args.device}: this device is not available on this machine")
    _check_recipe_flags(args)
    _check_data(args)
    if args.plot is not None and writer:
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError(f"--plot {args.plot}: drawing needs matplotlib: pip install -e \".[plot]\"")
        _check_output_file("--plot", args.plot)
    if args.summary is not None and writer:
        _check_output_file("--summary", args.summary)
    config = {k: v for k, v in vars(args).items() if k not in ("command", "given")}
    if world_size is not None:
        config["world_size"] = world_size
    if writer:
        _check_checkpoint(args, config)
    return config


def _agreed(comm, work: Callable[[], Any]) -> Any:
    """work() on every rank; if it fails with a usage error on any rank, every rank leaves with
    status 2 (rank 0 printing the first rank's message) before anyone starts a collective that
    a failed rank would never join. Without MPI (comm None), just work()."""
    if comm is None:
        return work()
    result, error = None, None
    try:
        result = work()
    except (UsageError, FileNotFoundError, ValueError) as err:
        error = str(err)
    errors = comm.allgather_object(error)
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if failed:
        where, message = failed[0]
        raise _AgreedExit(EXIT_USAGE, (message if where == 0 else f"rank {where}: {message}")
                          if comm.rank == 0 else None)
    return result


# --- the run -------------------------------------------------------------------------------------------

def _print_summary(summary: Dict[str, Any], path: Optional[str]) -> bool:
    """Print the summary (without the history), then write all of it to `path`; False, after
    one line naming --summary and `path`, when that write fails (the printed summary stays)."""
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}), flush=True)
    if path is None:
        return True
    from ..serialization import WriteError, atomic_write_bytes

    try:
        atomic_write_bytes(path, (json.dumps(summary, indent=2) + "\n").encode())
    except WriteError as err:
        print(f"needle: error: --summary {path}: the summary could not be written: {err.strerror}", file=sys.stderr)
        return False
    return True


def _quiet(line: str) -> None:
    """The log of ranks other than 0: they train in silence."""


def _join(args: argparse.Namespace):
    """The MPI communicator of a --distributed run (None otherwise), after checking that one can be had."""
    if not args.distributed:
        return None
    check_distributed(args)
    from .. import distributed

    return distributed.init()


def _build(recipe, args: argparse.Namespace, comm):
    """(the recipe's task, this rank's DistributedSampler or None); ValueError when the training
    set has fewer samples than ranks."""
    task = recipe.build(args)
    if comm is None:
        return task, None
    from .distributed import shard_sampler

    return task, shard_sampler(task, comm, args.seed)


def train(args: argparse.Namespace) -> int:
    """Run `needle train` with parsed arguments; returns the exit status."""
    import needle as ndl

    from .loop import fit

    comm = _join(args)
    main_rank = comm is None or comm.rank == 0
    config = _agreed(comm, lambda: validate(args, None if comm is None else comm.size, writer=main_rank))
    recipe = RECIPES[args.recipe]
    args.device = ndl.get_device(args.device)
    np.random.seed(args.seed)  # every rank alike: same initial weights, same dropout draws
    task, sampler = _agreed(comm, lambda: _build(recipe, args, comm))
    if comm is not None:
        from .distributed import DistributedTask

        task = DistributedTask(task, sampler, comm)  # a collective: every rank now holds rank 0's weights
    task.compiled = not args.no_compile
    params = task.model.parameters()
    if args.optimizer == "adam":
        opt = ndl.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    else:
        opt = ndl.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    if main_rank:
        print(f"{task.description}: {sum(int(np.prod(p.shape)) for p in params):,} parameters, "
              f"{task.train_batches} batches per epoch", flush=True)
    try:
        # an overflow shows up as a non-finite loss, reported in one line, not as numpy warnings
        with np.errstate(all="ignore"):
            summary = fit(task, opt, args.epochs, config=config, checkpoint_dir=args.checkpoint,
                          resume=args.resume, progress=main_rank and not args.no_progress, lr_decay=args.lr_decay,
                          log=None if main_rank else _quiet)
    except NonFiniteLoss as stop:
        if main_rank:
            summary = {**stop.summary, "recipe": args.recipe, "seed": args.seed, "stopped": str(stop)}
            _print_summary(summary, args.summary)
        print(f"needle: error: {stop}", file=sys.stderr)
        return EXIT_FAILED
    except CheckpointWriteFailed as stop:  # checked writable before training; the disk may fill up since
        summary = {**stop.summary, "recipe": args.recipe, "seed": args.seed, "stopped": str(stop)}
        _print_summary(summary, args.summary)
        print(f"needle: error: --checkpoint {args.checkpoint}: {stop}", file=sys.stderr)
        return EXIT_FAILED
    if not main_rank:
        return EXIT_OK
    summary["recipe"] = args.recipe
    summary["seed"] = args.seed
    if args.recipe == "lm" and args.sample:
        summary["sample"] = task.sample(args.sample, seed=args.seed)
        print("sample:", summary["sample"])
    if args.plot:
        summary["plot"] = args.plot
    # the summary goes out before the plot is drawn: a failing plot cannot take it along
    written = _print_summary(summary, args.summary)
    if args.plot:
        from ..viz import plot_history

        try:
            plot_history(summary["history"], args.plot, title=task.description)
        except Exception as err:  # noqa: BLE001 -- any failure of matplotlib ends in one line
            print(f"needle: error: --plot {args.plot}: the curves could not be drawn: {err}", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_OK if written else EXIT_FAILED


def export(args: argparse.Namespace) -> int:
    """Run `needle export` (the work is in needle.train.export); returns the exit status."""
    from ..serialization import WriteError

    _check_output_file("--out", args.out)
    try:
        from .export import export_checkpoint

        summary = export_checkpoint(args.checkpoint, args.out)
    except ImportError as err:  # no onnx: one line naming the extra to install
        raise UsageError(str(err)) from None
    except WriteError as err:  # checked writable before; the disk may have filled up since
        raise UsageError(f"--out {args.out}: the model could not be written: {err.strerror}") from None
    print(json.dumps(summary), flush=True)
    return EXIT_OK


def main(argv: Optional[List[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a parse error already reported in one line
        return int(done.code or 0)
    try:
        status = _run(args)
    except _AgreedExit as stop:  # every rank leaves alike: nothing to abort
        if stop.message is not None:
            print(f"needle: error: {stop.message}", file=sys.stderr)
        return stop.status
    if status != EXIT_OK and getattr(args, "distributed", False):
        from ..distributed import comm

        if comm.is_initialized() and comm.world_size() > 1:
            comm.abort(status)  # the other ranks may be waiting in a collective for this one
    return status


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "train":
            return train(args)
        if args.command == "export":
            return export(args)
    except TrainingInterrupted as stop:
        print(f"needle: {stop}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("needle: interrupted before training started; nothing was trained", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, FileNotFoundError, ValueError) as err:
        print(f"needle: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
