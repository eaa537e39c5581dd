"""The training front end: `needle train` (python -m needle) and the loops behind it.

* `epoch`       one pass over the data (classification, language modelling); the course's apps use it
* `loop`        fit(): the epoch loop: progress, history, checkpoints after every epoch, bit-exact resume
* `checkpoint`  model + optimizer + RNG state in one checksummed safetensors file
* `recipes`     what `needle train` can train, each declared once with its defaults
* `cli`         the command line (`needle`, `python -m needle`): the parser and main()
* `checks`      every argument checked before any work (UsageError, exit status 2)
* `run`         running a parsed `needle train` / `needle export` command
* `distributed` `needle train --distributed`: a recipe's task trained data-parallel over MPI
* `export`      `needle export`: a checkpoint's model rebuilt and written as ONNX
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
