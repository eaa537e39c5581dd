"""Utilities around training: gradient checkpointing (`checkpoint`)."""
from .gradient_checkpoint import Checkpoint, checkpoint

__all__ = ["checkpoint", "Checkpoint"]
