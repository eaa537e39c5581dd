"""Loss and accuracy curves of a training run, as a PNG."""
from __future__ import annotations

import io
import os
from typing import Dict, List

from .._packaging import install_hint
from ..serialization import atomic_write_bytes


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(f"plotting needs matplotlib: {install_hint('plot')}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: List[Dict[str, float]], path: str, title: str = "") -> None:
    """Two panels (loss, accuracy) of train/test values per epoch; written atomically to `path`."""
    if not history:
        raise ValueError("plot_history: no epochs to plot")
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        for split, style in (("train", "o-"), ("test", "s--")):
            key = f"{split}_{metric}"
            if key in history[0]:
                ax.plot(epochs, [row[key] for row in history], style, label=split)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path, title)


def save_figure(fig, path: str, title: str = "") -> None:
    """Title, lay out and write a matplotlib figure as a PNG, atomically; closes the figure."""
    plt = _pyplot()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
