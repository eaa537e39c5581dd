"""Decision boundaries of 2-D classifiers (with an optional loss curve), as a PNG."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from .curves import _pyplot, save_figure

History = Union[Sequence[Dict[str, float]], Sequence[float]]

# class colours (matplotlib's tab10, reordered so 0/1 are blue/orange as usual)
_CLASS_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _class_colors(k: int) -> List[str]:
    if k <= len(_CLASS_COLORS):
        return _CLASS_COLORS[:k]
    import matplotlib

    cmap = matplotlib.colormaps["hsv"]
    return [matplotlib.colors.to_hex(cmap(i / k)) for i in range(k)]


def predicted_classes(scores) -> np.ndarray:
    """Class indices from `predict`'s output.

    (M, k) with k >= 2: argmax. (M,) or (M, 1): integer labels are taken as they are;
    floats in [0, 1] are the probability of class 1 (threshold 0.5), other floats are a
    score or logit of class 1 (threshold 0).
    """
    scores = np.asarray(scores)
    if scores.ndim == 2 and scores.shape[1] >= 2:
        return scores.argmax(axis=1)
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim != 1:
        raise ValueError(f"predict must return scores of shape (M, k) or (M,), got {scores.shape}")
    if scores.dtype.kind in "iub":
        return scores.astype(np.int64)
    threshold = 0.5 if scores.size and scores.min() >= 0.0 and scores.max() <= 1.0 else 0.0
    return (scores > threshold).astype(np.int64)


def _margins(scores: np.ndarray, k: int) -> Optional[np.ndarray]:
    """(M, k) margins score_c - max_{j != c} score_j (positive exactly where c is predicted), whose zero
    contours are the smooth class boundaries; None for integer labels, which have no margins."""
    scores = np.asarray(scores)
    if scores.dtype.kind in "iub":
        return None
    scores = scores.astype(np.float64)
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim == 1:
        threshold = 0.5 if scores.size and scores.min() >= 0.0 and scores.max() <= 1.0 else 0.0
        m = scores - threshold
        scores = np.stack([-m, m], axis=1)
    if scores.shape[1] < k:  # labels beyond the model's outputs: those classes are never predicted
        scores = np.concatenate([scores, np.full((len(scores), k - scores.shape[1]), -np.inf)], axis=1)
    margins = np.empty_like(scores)
    for c in range(k):
        others = np.delete(scores, c, axis=1).max(axis=1)
        margins[:, c] = scores[:, c] - others
    margins[~np.isfinite(margins)] = -1e30
    return margins


def _losses(history: History):
    """(x values, {label: values}) of the loss curves in `history`."""
    rows: List[Any] = list(history)  # numbers, or dicts
    if not rows:
        raise ValueError("plot_decision_boundary: history is empty")
    if not isinstance(rows[0], dict):
        values = [float(v) for v in rows]
        return list(range(1, len(values) + 1)), {"train": values}
    xs = [row.get("epoch", i + 1) for i, row in enumerate(rows)]
    curves = {}
    for split in ("train", "test"):
        key = f"{split}_loss"
        if key in rows[0]:
            curves[split] = [float(row[key]) for row in rows]
    if not curves:
        raise ValueError(f"plot_decision_boundary: history rows need 'train_loss', got keys {sorted(rows[0])}")
    return xs, curves


def plot_decision_boundary(
    predict: Callable[[np.ndarray], np.ndarray],
    X,
    y,
    path: str,
    *,
    history: Optional[History] = None,
    title: str = "",
    resolution: int = 200,
) -> str:
    """Filled regions of the predicted class over the range of X (N, 2), the points coloured by
    their label y (N,), and, when `history` is given, the loss curve beside it. Written atomically
    as a PNG to `path`, which is returned.

    `predict` maps a float32 (M, 2) array to class scores/probabilities (M, k) or a class-1
    score/probability (M,) (see `predicted_classes`); `model_predictor` makes one from a module.
    `history` is a list of floats (a loss per epoch) or of dicts with "train_loss" and optionally
    "test_loss" and "epoch" (as from `needle.train.loop.fit`).
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"plot_decision_boundary needs 2-D points X of shape (N, 2), got {X.shape}")
    if len(y) != len(X):
        raise ValueError(f"plot_decision_boundary: {len(y)} labels for {len(X)} points")
    if len(X) == 0:
        raise ValueError("plot_decision_boundary: no points")
    if int(resolution) < 2:
        raise ValueError(f"resolution must be at least 2, got {resolution}")
    resolution = int(resolution)
    curves = _losses(history) if history is not None else None

    lo, hi = X.min(axis=0), X.max(axis=0)
    pad = np.maximum((hi - lo) * 0.08, 1e-3)
    lo, hi = lo - pad, hi + pad
    xs = np.linspace(lo[0], hi[0], resolution, dtype=np.float32)
    ys = np.linspace(lo[1], hi[1], resolution, dtype=np.float32)
    xx, yy = np.meshgrid(xs, ys)
    grid = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)
    scores = np.asarray(predict(grid))
    if len(scores) != len(grid):
        raise ValueError(f"predict returned {len(scores)} rows for {len(grid)} points")
    zz = predicted_classes(scores).reshape(xx.shape)
    accuracy = float((predicted_classes(np.asarray(predict(X))) == y).mean())
    n_out = scores.shape[1] if scores.ndim == 2 and scores.shape[1] >= 2 else 2
    k = max(n_out, int(y.max()) + 1, int(zz.max()) + 1, 2)

    plt = _pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D

    colors = _class_colors(k)
    cmap = ListedColormap(colors)
    if curves is not None:
        fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [1, 1.1]})
    else:
        fig, ax = plt.subplots(figsize=(5.6, 5))
        ax_loss = None

    margins = _margins(scores, k)
    if margins is None:  # integer class labels: regions straight from the label grid
        levels = np.arange(k + 1) - 0.5
        ax.contourf(xx, yy, zz, levels=levels, cmap=cmap, alpha=0.28)
        ax.contour(xx, yy, zz, levels=levels[1:-1], colors="#333333", linewidths=0.8, alpha=0.6)
    else:  # each class where its margin is positive: boundaries interpolated between grid points
        for c in range(k):
            m = margins[:, c].reshape(xx.shape)
            if (m > 0).any():
                ax.contourf(xx, yy, m, levels=[0.0, np.inf], colors=[colors[c]], alpha=0.28)
                if (m < 0).any():
                    ax.contour(xx, yy, m, levels=[0.0], colors="#333333", linewidths=0.8, alpha=0.6)
    ax.scatter(X[:, 0], X[:, 1], c=[colors[c] for c in y], s=22, edgecolors="white", linewidths=0.6, zorder=3)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_xlabel("$x_0$")
    ax.set_ylabel("$x_1$")
    ax.set_title(f"decision boundary (accuracy {accuracy:.1%})", fontsize=11)
    present = sorted(set(y.tolist()))
    handles = [Line2D([], [], marker="o", linestyle="", markerfacecolor=colors[c], markeredgecolor="white",
                      markersize=7, label=f"class {c}") for c in present]
    # below the axes, where it cannot hide points or regions
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=min(len(handles), 5),
              fontsize=9, frameon=False, handletextpad=0.2, columnspacing=1.2)

    if ax_loss is not None and curves is not None:  # (both or neither)
        epochs, losses = curves
        for (split, values), style in zip(losses.items(), ("-", "--")):
            ax_loss.plot(epochs, values, style, linewidth=1.6, label=split,
                         marker="o" if len(values) <= 30 else None, markersize=3)
        positive = [v for values in losses.values() for v in values if v > 0]
        if positive and max(positive) / min(positive) > 50:
            ax_loss.set_yscale("log")
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("loss")
        ax_loss.set_title("loss", fontsize=11)
        ax_loss.grid(alpha=0.3)
        ax_loss.legend()
    save_figure(fig, path, title)
    return path


def model_predictor(model, device=None, *, batch_size: int = 8192) -> Callable[[np.ndarray], np.ndarray]:
    """A `predict` for `plot_decision_boundary`: numpy (M, 2) -> the module's outputs (M, k) as numpy,
    computed in eval mode without recording a graph (the module's train/eval mode is restored)."""
    from ..autograd import Tensor, no_grad

    def predict(points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float32)
        was_training = getattr(model, "training", False)
        model.eval()
        try:
            outputs = []
            with no_grad():
                for start in range(0, len(points), batch_size):
                    x = Tensor(points[start:start + batch_size], device=device, dtype="float32", requires_grad=False)
                    outputs.append(model(x).numpy())
        finally:
            if was_training:
                model.train()
        return np.concatenate(outputs) if outputs else np.zeros((0,), dtype=np.float32)

    return predict
