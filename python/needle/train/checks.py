"""The checks of `needle train` / `needle export` arguments that need more than the parser:
several flags together, the recipe's defaults, the file system, MPI. They run before any
data is read or any model is built, and raise UsageError with one line naming the flag
and the value (exit status 2).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
from typing import Any, Dict, Optional, cast

from .._packaging import install_hint
from ..utils.cli import write_problem
from .loop import check_resume, checkpoint_path
from .recipes import RECIPES

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED", "UsageError", "resolve_defaults",
           "check_output_file", "check_distributed", "validate"]

# the exit statuses of the command line (see needle.train.cli)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A bad argument, found before any work was done (exit status 2)."""


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


def _check_gpt(args: argparse.Namespace) -> None:
    """The gpt recipe's flags together; it counts --iters, so its epochs are the eval intervals."""
    given = set(getattr(args, "given", ()))
    for flag, why in (("--epochs", "it counts optimizer steps: use --iters"),
                      ("--optimizer", "it trains with AdamW in nanoGPT's two parameter groups"),
                      ("--lr-decay", "its rate follows nanoGPT's warm-up and cosine (--warmup-iters, "
                                     "--lr-decay-iters, --min-lr)"),
                      ("--momentum", "AdamW has no momentum flag (--beta2 sets its second moment)")):
        if flag in given:
            raise UsageError(f"{flag} is not read by the gpt recipe: {why}")
    if args.n_embd % args.n_head:
        raise UsageError(f"--n-embd {args.n_embd} is not divisible by --n-head {args.n_head}: each head gets "
                         "n_embd / n_head channels")
    if args.min_lr > args.lr:
        raise UsageError(f"--min-lr {args.min_lr:g} is above --lr {args.lr:g}: the cosine decays from --lr down to it")
    args.epochs = -(-args.iters // args.eval_interval)


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


def check_output_file(flag: str, path: str) -> None:
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
    path = cast(str, checkpoint_path(folder))  # not None: the parser refuses an empty folder name
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
    if args.recipe in ("lm", "gpt"):
        raise UsageError(f"--distributed trains the classification recipes (toy, mlp, cnn, resnet9), not {args.recipe}")
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
    if args.recipe == "gpt":
        _check_gpt(args)
    _check_data(args)
    if args.plot is not None and writer:
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError(f"--plot {args.plot}: drawing needs matplotlib: {install_hint('plot')}")
        check_output_file("--plot", args.plot)
    if args.summary is not None and writer:
        check_output_file("--summary", args.summary)
    config = {k: v for k, v in vars(args).items() if k not in ("command", "given")}
    if world_size is not None:
        config["world_size"] = world_size
    if writer:
        _check_checkpoint(args, config)
    return config
