"""Paths of the data files that ship inside the needle package (``needle/data/``).

The package carries a little real data so that the tutorials and ``needle train`` run on a
fresh install with no download: the MNIST test split (``mnist/``) and tiny shakespeare
(``text/``). Each folder has a README with the source and licence.
"""
from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import List

__all__ = ["shipped_path", "shipped_files"]

# needle/data, the folder above this module's package
DATA_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DATA_SUFFIXES = (".gz", ".txt")


def shipped_files() -> List[str]:
    """The names (relative, with ``/``) of every data file shipped in the package, sorted:
    e.g. ``["mnist/t10k-images-idx3-ubyte.gz", ..., "text/tinyshakespeare.txt", ...]``."""
    found = []
    for folder, _dirs, files in os.walk(DATA_ROOT):
        for name in files:
            if name.endswith(_DATA_SUFFIXES):
                rel = os.path.relpath(os.path.join(folder, name), DATA_ROOT)
                found.append(PurePosixPath(*rel.split(os.sep)).as_posix())
    return sorted(found)


def shipped_path(name: str) -> str:
    """The absolute path of the shipped data file ``name``, relative to ``needle/data`` with
    ``/`` separators: ``shipped_path("mnist/t10k-images-idx3-ubyte.gz")``.

    A needle convention (PyTorch's datasets download instead). Raises TypeError when ``name``
    is not a str, ValueError for an absolute name or one that climbs out with ``..``, and
    FileNotFoundError (listing the files that do ship) when there is no such file.
    """
    if not isinstance(name, str):
        raise TypeError(f"shipped_path: name must be a str such as 'mnist/t10k-images-idx3-ubyte.gz', "
                        f"got {type(name).__name__}")
    parts = PurePosixPath(name).parts
    if not parts or PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name:
        raise ValueError(f"shipped_path: name must be a relative path inside needle/data with '/' separators "
                         f"and no '..', got {name!r}")
    path = os.path.join(DATA_ROOT, *parts)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"shipped_path: needle ships no data file {name!r}; the shipped files are "
                                f"{', '.join(shipped_files())}")
    return path
