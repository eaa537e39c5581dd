"""Running a parsed `needle train` / `needle export` command (needle.train.cli parses it).

`execute(args)` returns the exit status and prints every error as one line
`needle: error: ...` on stderr (see needle.train.cli for the statuses). A distributed
run (`--distributed`, under mpiexec) joins the MPI job first; the ranks agree on every
check before the first collective, and only rank 0 prints and writes files.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Dict, Optional

import numpy as np

from .checks import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    check_distributed,
    check_output_file,
    validate,
)
from .loop import CheckpointWriteFailed, NonFiniteLoss, TrainingInterrupted
from .recipes import RECIPES

__all__ = ["execute", "train", "export", "sample"]


class _AgreedExit(Exception):
    """Every rank of a distributed run leaves with `status`; rank 0 prints `message` (None elsewhere)."""

    def __init__(self, status: int, message: Optional[str]):
        super().__init__(message)
        self.status, self.message = status, message


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
    opt: ndl.optim.Optimizer
    if args.recipe == "gpt":
        opt = task.model.configure_optimizers(args.weight_decay, args.lr, (0.9, args.beta2))
    elif args.optimizer == "adam":
        opt = ndl.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    else:
        opt = ndl.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    if main_rank:
        per = "" if args.recipe == "gpt" else f", {task.train_batches} batches per epoch"
        print(f"{task.description}: {sum(int(np.prod(p.shape)) for p in params):,} parameters{per}", flush=True)
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
    if args.recipe == "gpt":
        summary.update(_gpt_summary(task, summary))
    if args.recipe in ("lm", "gpt") and args.sample:
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


def _gpt_summary(task, summary: Dict[str, Any]) -> Dict[str, Any]:
    """nanoGPT's figures of a run: final train and val loss estimates, iterations, time, tokens/s."""
    last = summary["history"][-1] if summary["history"] else {}
    return {"iters": task.iteration, "train_loss": last.get("train_estimate"), "val_loss": last.get("val_loss"),
            "train_seconds": round(sum(row["train_seconds"] for row in summary["history"]), 3),
            "tokens_per_second": last.get("tokens_per_second")}


def sample(args: argparse.Namespace) -> int:
    """Run `needle sample` (the work is in needle.train.sample); returns the exit status."""
    from .sample import sample_checkpoint

    print(sample_checkpoint(args.checkpoint, prompt=args.prompt, tokens=args.tokens,
                            temperature=args.temperature, top_k=args.top_k, seed=args.seed), flush=True)
    return EXIT_OK


def export(args: argparse.Namespace) -> int:
    """Run `needle export` (the work is in needle.train.export); returns the exit status."""
    from ..serialization import WriteError

    check_output_file("--out", args.out)
    try:
        from .export import export_checkpoint

        summary = export_checkpoint(args.checkpoint, args.out)
    except ImportError as err:  # no onnx: one line naming the extra to install
        raise UsageError(str(err)) from None
    except WriteError as err:  # checked writable before; the disk may have filled up since
        raise UsageError(f"--out {args.out}: the model could not be written: {err.strerror}") from None
    print(json.dumps(summary), flush=True)
    return EXIT_OK


def execute(args: argparse.Namespace) -> int:
    """Run a parsed command; returns the exit status. A distributed run that fails on one
    rank with anything but an agreed exit aborts the whole MPI job."""
    try:
        status = _dispatch(args)
    except _AgreedExit as stop:  # every rank leaves alike: nothing to abort
        if stop.message is not None:
            print(f"needle: error: {stop.message}", file=sys.stderr)
        return stop.status
    if status != EXIT_OK and getattr(args, "distributed", False):
        from ..distributed import comm

        if comm.is_initialized() and comm.world_size() > 1:
            comm.abort(status)  # the other ranks may be waiting in a collective for this one
    return status


def _dispatch(args: argparse.Namespace) -> int:
    try:
        if args.command == "train":
            return train(args)
        if args.command == "export":
            return export(args)
        if args.command == "sample":
            return sample(args)
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
