"""Make the figures of the documentation: `python docs/figures.py` (from the repository root).

Each figure under docs/img is written by one function here, and the page that shows it names
this command beside it. Needs graphviz (`pip install -e ".[plot]"` and the `dot` program).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

import needle as ndl  # noqa: E402
from needle.viz import render_graph  # noqa: E402

IMG = ROOT / "docs" / "img"


def autodiff_graph() -> Path:
    """docs/guides/autodiff.md: the graph of (a * b + a).sum() after backward."""
    a = ndl.Tensor([2.0, 3.0], dtype="float64")
    b = ndl.Tensor([5.0, 7.0], dtype="float64")
    loss = (a * b + a).sum()
    loss.backward()
    path = IMG / "autodiff_graph.png"
    render_graph(loss, str(path), names={a: "a", b: "b", loss: "loss"}, dpi=110)
    return path


def main() -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    for make in (autodiff_graph,):
        print(make())


if __name__ == "__main__":
    main()
