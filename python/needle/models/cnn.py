"""A small convolutional classifier for 28x28 grayscale images (MNIST, Fashion-MNIST)."""
from __future__ import annotations

from needle import nn

from .resnet9 import ConvBN


def SmallCNN(in_channels=1, num_classes=10, image_size=28, device=None, dtype="float32"):
    """Four 3x3 ConvBN blocks (16, 32, 32, 64 channels; strides 1, 2, 1, 2), then a 128-unit MLP head.

    (N, in_channels, S, S) -> logits (N, num_classes); S must be divisible by 4.
    """
    if image_size % 4:
        raise ValueError(f"SmallCNN needs an image size divisible by 4, got {image_size}")

    def cbn(a, b, s):
        return ConvBN(a, b, 3, s, device=device, dtype=dtype)

    side = image_size // 4
    return nn.Sequential(
        cbn(in_channels, 16, 1),
        cbn(16, 32, 2),
        cbn(32, 32, 1),
        cbn(32, 64, 2),
        nn.Flatten(),
        nn.Linear(64 * side * side, 128, device=device, dtype=dtype),
        nn.ReLU(),
        nn.Linear(128, num_classes, device=device, dtype=dtype),
    )
