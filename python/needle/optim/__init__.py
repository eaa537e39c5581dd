"""Optimizers (the course's SGD and Adam; PyTorch's AdamW, RMSprop, Adagrad, Adadelta) and
learning-rate schedulers."""
from . import lr_scheduler
from .optimizers import SGD, Adadelta, Adagrad, Adam, AdamW, Optimizer, RMSprop

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "lr_scheduler"]
