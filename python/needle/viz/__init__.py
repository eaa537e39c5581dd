"""Pictures: training curves, decision boundaries (matplotlib) and computation graphs (graphviz).

Both libraries are an optional extra (`pip install "needle-dl[plot]"`, or `pip install -e ".[plot]"`
in a clone) and are imported only when a function that draws is called.
"""
from .boundary import model_predictor, plot_decision_boundary  # noqa: F401
from .curves import plot_history  # noqa: F401
from .graph import graph, render_graph  # noqa: F401

__all__ = ["plot_history", "plot_decision_boundary", "model_predictor", "graph", "render_graph"]
