"""Checks of command-line flags, shared by `needle train` and the example scripts: each
failure is one `error:` line naming the flag and its value (exit status 2), before any work starts.

    from needle.utils.cli import POSITIVE, SEED, ArgumentParser, check_out_dir, int_at_least
    parser = ArgumentParser(...)                                    # errors: one line, no usage block
    parser.add_argument("--steps", type=int_at_least(1), default=100)
    parser.add_argument("--lr", type=POSITIVE, default=0.01)        # finite and > 0
    parser.add_argument("--seed", type=SEED, default=0)
    args = parser.parse_args()
    check_out_dir(parser, "--out", args.out)                        # created, and a file can be written there
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
from typing import Callable, Optional


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (`prog: error: argument --steps: ...`, exit status 2),
    as `needle train` prints them: no usage block above the line that matters (--help has it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def int_at_least(low: int, high: Optional[int] = None) -> Callable[[str], int]:
    """An argparse type: an integer >= low (and <= high, when given)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"at least {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


SEED = int_at_least(0, 2 ** 32 - 1)  # what numpy's seeding accepts


def float_in(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = True,
             ) -> Callable[[str], float]:
    """An argparse type: a finite float in the interval from low to high, each end open or closed."""
    shown = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        inside = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not math.isfinite(value) or not inside:
            bound = "a positive finite number" if (low, low_open, high) == (0, True, math.inf) else f"in {shown}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


POSITIVE = float_in(0, low_open=True)  # learning rates and the like


def path(text: str) -> str:
    """An argparse type: a file or folder name, anything but the empty string (which names no file)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty string ''")
    return text


path.__name__ = "path"


def write_problem(folder: str) -> Optional[str]:
    """None when a file can be created in the existing `folder`, else the reason. Proven by
    creating (and removing) one: os.access says yes to root everywhere, and to anyone for
    /sys and /proc, where no file can be made."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".needle-probe-")
    except OSError as err:
        return err.strerror or str(err)
    os.close(fd)
    os.unlink(probe)
    return None


def out_dir_problem(path: str) -> Optional[str]:
    """None when folder `path` exists or can be created and a file can be written in it;
    otherwise why not. The folder is created; the check really writes (and deletes) a
    temporary file, since os.access says yes to root even on a read-only mount."""
    if os.path.exists(path) and not os.path.isdir(path):
        return "exists and is not a folder"
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        return f"cannot create the folder ({err.strerror or err})"
    problem = write_problem(path)
    return None if problem is None else f"cannot write in the folder ({problem})"


def check_out_dir(parser: argparse.ArgumentParser, flag: str, path: str) -> None:
    """parser.error naming `flag` and `path` unless a file can be written in folder `path`
    (created if missing)."""
    problem = out_dir_problem(path)
    if problem:
        parser.error(f"{flag} {path}: {problem}")
