"""Small ports of well-known PyTorch programs, each written once and run on both frameworks.

Every module here holds a program's model and training step as ONE source text, a function
`build(torch, nn, F)` that uses only `torch.X`, `nn.X`, `F.X` and tensor methods the way the
original program does. `tests/test_ports.py` runs it with (torch, torch.nn,
torch.nn.functional) and with (needle, needle.nn, needle.nn.functional), loads the same
weights into both (needle.interop), and compares outputs, losses, gradients and parameters
after a few optimizer steps, in float64.

The programs (our own code after their published structure, not copies): nanoGPT (model.py,
train.py's step, sample.py's generate), makemore / "Zero to Hero" part 3 (the manual MLP with
batch norm), minGPT (NewGELU, configure_optimizers), and PyTorch's examples: MNIST, the word
language model, DCGAN and VAE.

Where needle needs other code than PyTorch, the line says so with a `# DIFF:` comment (the
README's "Coming from PyTorch" section lists them); `NEEDLE` (true on needle) picks the line.
"""
from types import ModuleType
from typing import Dict, Tuple

import numpy as np


def is_needle(torch: ModuleType) -> bool:
    """True when the port runs on needle (the module passed as `torch` is needle)."""
    return torch.__name__ == "needle"


def frameworks() -> Dict[str, Tuple[ModuleType, ModuleType, ModuleType]]:
    """{"torch": (torch, torch.nn, torch.nn.functional), "needle": (needle, needle.nn, needle.nn.functional)}."""
    import torch
    import torch.nn
    import torch.nn.functional

    import needle
    import needle.nn
    import needle.nn.functional

    return {"torch": (torch, torch.nn, torch.nn.functional),
            "needle": (needle, needle.nn, needle.nn.functional)}


def as_numpy(x) -> np.ndarray:
    """A torch or needle tensor's values (detached, on the host) as a numpy array."""
    return np.asarray(x.detach().cpu().numpy())


class With:
    """A framework module with some functions replaced: `With(torch, randn_like=lambda t: eps)`
    runs a port's own line `eps = torch.randn_like(std)` on noise the test chose, the same in
    both frameworks, without changing the port's code. Every other name is the module's."""

    def __init__(self, module: ModuleType, **overrides) -> None:
        self._module = module
        self._overrides = overrides

    def __getattr__(self, name: str):
        if name in self._overrides:
            return self._overrides[name]
        return getattr(self._module, name)
