"""How needle is distributed: the name on PyPI and the install hints of error messages.

The distribution is `needle-dl` (`needle` on PyPI is an unrelated project); the import name
and the command stay `needle`. Every error that asks for an optional package formats its
`pip install ...` with `install_hint`, which gives the command that works for the way this
needle was installed: from PyPI or a wheel (`pip install "needle-dl[onnx]"`), or from a clone
of the repository, editable or on PYTHONPATH (`pip install -e ".[onnx]"`, run in the clone).

Only the standard library is imported here: the lowest layers (the cuda device's loader)
use it too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

__all__ = ["DISTRIBUTION", "EXTRAS", "install_hint", "source_checkout"]

# the name pip knows needle by (pyproject.toml's [project] name)
DISTRIBUTION = "needle-dl"

# pyproject.toml's [project.optional-dependencies] for users (dev is the contributors')
EXTRAS = ("plot", "onnx", "cuda", "distributed", "docs", "dev")


def source_checkout() -> Optional[Path]:
    """The root of the clone this needle is imported from (editable install or PYTHONPATH=python),
    or None for an installed copy (site-packages, `pip install --target`).

    A clone keeps the package at ROOT/python/needle beside ROOT/pyproject.toml; an installed
    copy has no pyproject.toml two folders up.
    """
    package = Path(__file__).resolve().parent
    root = package.parent.parent
    if package.parent.name == "python" and (root / "pyproject.toml").is_file():
        return root
    return None


def install_hint(extra: Optional[str] = None, *, package: Optional[str] = None) -> str:
    """The pip command that installs what is missing, as error messages give it.

    `extra`: one of needle's extras (`"onnx"`, `"plot"`, `"cuda"`, `"distributed"`): gives
    `pip install "needle-dl[onnx]"`, or `pip install -e ".[onnx]"` when needle runs from a clone.
    `package`: a package that is no extra of needle's (e.g. `"torch"`): `pip install torch`.
    Exactly one of the two; ValueError for an unknown extra or for both or neither.
    """
    if (extra is None) == (package is None):
        raise ValueError("install_hint: give either extra or package")
    if package is not None:
        return f"pip install {package}"
    if extra not in EXTRAS:
        raise ValueError(f"install_hint: {extra!r} is not one of needle's extras {EXTRAS}")
    if source_checkout() is not None:
        return f'pip install -e ".[{extra}]"'
    return f'pip install "{DISTRIBUTION}[{extra}]"'
