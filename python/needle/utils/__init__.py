"""Utilities around training: gradient checkpointing (`checkpoint`); `needle.utils.data` is
`needle.data` under PyTorch's path (`torch.utils.data`)."""
from . import data
from .gradient_checkpoint import Checkpoint, checkpoint

__all__ = ["checkpoint", "Checkpoint", "data"]
