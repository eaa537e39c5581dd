"""The course's residual MLP (hw2). Modules are created in forward order: that fixes the RNG draws."""
from __future__ import annotations

from needle import nn


def ResidualBlock(dim, hidden_dim, norm=nn.BatchNorm1d, drop_prob=0.1, device=None, dtype="float32"):
    """ReLU(x + norm(Linear(Dropout(ReLU(norm(Linear(x))))))); x (B, dim)."""
    return nn.Sequential(
        nn.Residual(
            nn.Sequential(
                nn.Linear(dim, hidden_dim, device=device, dtype=dtype),
                norm(hidden_dim, device=device, dtype=dtype),
                nn.ReLU(),
                nn.Dropout(drop_prob),
                nn.Linear(hidden_dim, dim, device=device, dtype=dtype),
                norm(dim, device=device, dtype=dtype),
            )
        ),
        nn.ReLU(),
    )


def MLPResNet(dim, hidden_dim=100, num_blocks=3, num_classes=10, norm=nn.BatchNorm1d, drop_prob=0.1,
              device=None, dtype="float32"):
    """Linear(dim, hidden), ReLU, num_blocks residual blocks (inner width hidden//2), Linear(hidden, classes)."""
    return nn.Sequential(
        nn.Linear(dim, hidden_dim, device=device, dtype=dtype),
        nn.ReLU(),
        *[ResidualBlock(hidden_dim, hidden_dim // 2, norm, drop_prob, device=device, dtype=dtype)
          for _ in range(num_blocks)],
        nn.Linear(hidden_dim, num_classes, device=device, dtype=dtype),
    )
