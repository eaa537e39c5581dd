"""Optimizers (the course's SGD and Adam, PyTorch's AdamW) and learning-rate schedulers."""
from . import lr_scheduler
from .optimizers import SGD, Adam, AdamW, Optimizer

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]
