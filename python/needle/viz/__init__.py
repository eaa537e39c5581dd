"""Pictures: training curves (matplotlib, an optional extra)."""
from .curves import plot_history  # noqa: F401
