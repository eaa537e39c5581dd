"""Checks of command-line flags for the example scripts: each failure is one
`parser.error` line naming the flag and its value (exit status 2), before any work starts.

    from needle.utils.cli import ArgumentParser, check_int, check_float, check_out_dir, check_seed
    parser = ArgumentParser(...)                         # errors: one line, no usage block
    check_int(parser, "--steps", args.steps, minimum=1)
    check_float(parser, "--lr", args.lr)                 # finite and > 0
    check_out_dir(parser, "--out", args.out)             # created, and a file can be written there
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
from typing import Optional


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (`prog: error: argument --steps: ...`, exit status 2),
    as `needle train` prints them: no usage block above the line that matters (--help has it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def check_int(parser: argparse.ArgumentParser, flag: str, value: int, minimum: int = 1,
              why: str = "") -> None:
    """parser.error unless `value` >= `minimum`."""
    if value < minimum:
        parser.error(f"{flag} must be >= {minimum}{why}, got {value}")


def check_seed(parser: argparse.ArgumentParser, flag: str, value: int) -> None:
    """parser.error unless `value` is a numpy seed (0 <= value < 2**32)."""
    if not 0 <= value < 2 ** 32:
        parser.error(f"{flag} must be between 0 and 2**32 - 1, got {value}")


def check_float(parser: argparse.ArgumentParser, flag: str, value: Optional[float], *,
                positive: bool = True, allow_none: bool = False) -> None:
    """parser.error unless `value` is finite and > 0 (or >= 0 with positive=False)."""
    if value is None and allow_none:
        return
    if value is None or not math.isfinite(value):
        parser.error(f"{flag} must be a finite number, got {value}")
    if positive and not value > 0:
        parser.error(f"{flag} must be > 0, got {value}")
    if not positive and value < 0:
        parser.error(f"{flag} must be >= 0, got {value}")


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
    try:
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".write-check-")
    except OSError as err:
        return f"cannot write in the folder ({err.strerror or err})"
    os.close(fd)
    os.unlink(tmp)
    return None


def check_out_dir(parser: argparse.ArgumentParser, flag: str, path: str) -> None:
    """parser.error naming `flag` and `path` unless a file can be written in folder `path`
    (created if missing)."""
    problem = out_dir_problem(path)
    if problem:
        parser.error(f"{flag} {path}: {problem}")
