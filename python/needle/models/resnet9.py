"""ResNet9 for 32x32 images (hw4): 431,946 parameters."""
from __future__ import annotations

from needle import nn


def ConvBN(a, b, k, s, device=None, dtype="float32"):
    """Conv(a -> b, kernel k, stride s), BatchNorm2d, ReLU."""
    return nn.Sequential(
        nn.Conv(a, b, k, stride=s, device=device, dtype=dtype),
        nn.BatchNorm2d(b, device=device, dtype=dtype),
        nn.ReLU(),
    )


class ResNet9(nn.Module):
    """(N, 3, 32, 32) -> logits (N, num_classes); spatial 32 -> 8 -> 4 -> 2 -> 1."""

    def __init__(self, device=None, dtype="float32", in_channels=3, num_classes=10):
        super().__init__()

        def cbn(a, b, k, s):
            return ConvBN(a, b, k, s, device=device, dtype=dtype)

        self.model = nn.Sequential(
            cbn(in_channels, 16, 7, 4),
            cbn(16, 32, 3, 2),
            nn.Residual(nn.Sequential(cbn(32, 32, 3, 1), cbn(32, 32, 3, 1))),
            cbn(32, 64, 3, 2),
            cbn(64, 128, 3, 2),
            nn.Residual(nn.Sequential(cbn(128, 128, 3, 1), cbn(128, 128, 3, 1))),
            nn.Flatten(),
            nn.Linear(128, 128, device=device, dtype=dtype),
            nn.ReLU(),
            nn.Linear(128, num_classes, device=device, dtype=dtype),
        )

    def forward(self, x):
        return self.model(x)
