"""The training front end: `needle train` (python -m needle) and the loops behind it.

* `epoch`       one pass over the data (classification, language modelling); the course's apps use it
* `loop`        fit(): the epoch loop: progress, history, checkpoints after every epoch, bit-exact resume
* `checkpoint`  model + optimizer + RNG state in one checksummed safetensors file
* `recipes`     what `needle train` can train, each declared once with its defaults
* `cli`         the command line, which checks every argument before any work
"""
from .epoch import EpochStats, classification_epoch, language_model_epoch
from .loop import NonFiniteLoss, TrainingInterrupted, TrainingStopped, fit
from .recipes import RECIPES, Recipe

__all__ = ["EpochStats", "classification_epoch", "language_model_epoch", "fit", "TrainingStopped",
           "TrainingInterrupted", "NonFiniteLoss", "RECIPES", "Recipe", "main"]


def main(argv=None) -> int:
    """`needle train ...` in-process; returns the exit status (see needle.train.cli)."""
    from .cli import main as cli_main

    return cli_main(argv)
