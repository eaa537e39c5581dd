"""Shared helpers for dataset file access: clear errors for missing paths."""
from __future__ import annotations

import os


def _existing(path, what: str) -> str:
    """``path`` as a string; TypeError or FileNotFoundError naming it if it is not an existing path."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"{what} must be a path (str or os.PathLike), got {type(path).__name__}") from None
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: {path!r} does not exist")
    return path


def check_file(path, what: str) -> str:
    """``path`` as a string; FileNotFoundError/IsADirectoryError naming it if it is not a file."""
    path = _existing(path, what)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} {path!r} is a directory, expected a file")
    return path


def check_dir(path, what: str) -> str:
    """``path`` as a string; FileNotFoundError/NotADirectoryError naming it if it is not a directory."""
    path = _existing(path, what)
    if not os.path.isdir(path):
        raise NotADirectoryError(f"{what} {path!r} is not a directory")
    return path
