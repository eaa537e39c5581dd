"""Random image augmentations on numpy ``H x W x C`` arrays.

Each transform draws a fixed number of values from numpy's global generator
per call (tests replay the draws after ``np.random.seed``):
RandomFlipHorizontal one ``np.random.rand()``, RandomCrop one
``np.random.randint(low=-padding, high=padding + 1, size=2)``.
"""
from __future__ import annotations

import numbers

import numpy as np


class Transform:
    """Base class: ``__call__(img)`` returns the transformed image."""

    def __call__(self, x):
        raise NotImplementedError


def _check_image(img, name: str) -> np.ndarray:
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{name} expects a numpy array of shape (H, W, C), got {type(img).__name__}")
    if img.ndim not in (2, 3):
        raise ValueError(f"{name} expects an image of shape (H, W, C) or (H, W), got shape {img.shape}")
    return img


class RandomFlipHorizontal(Transform):
    """Flip the image left-right (along the width axis, axis 1) with probability ``p``."""

    def __init__(self, p: float = 0.5):
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomFlipHorizontal p must be a probability in [0, 1], got {p!r}")
        self.p: float = p

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """
        Args:
            img: H x W x C numpy array
        Returns:
            the image flipped along the width axis if the one uniform draw is < p,
            otherwise the image unchanged.
        """
        img = _check_image(img, "RandomFlipHorizontal")
        flip_img = np.random.rand() < self.p  # exactly one draw, whatever p is
        if flip_img:
            return np.flip(img, axis=1)
        return img


class RandomCrop(Transform):
    """Zero-pad the image by ``padding`` on each side of H and W, then crop an
    ``H x W`` window shifted by a random ``(shift_x, shift_y)`` in
    ``[-padding, padding]`` (shift_x along the height, shift_y along the width)."""

    def __init__(self, padding: int = 3):
        if isinstance(padding, bool) or not isinstance(padding, numbers.Integral):
            raise TypeError(f"RandomCrop padding must be an integer, got {padding!r}")
        if padding < 0:
            raise ValueError(f"RandomCrop padding must be >= 0, got {padding}")
        self.padding: int = int(padding)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """
        Args:
            img: H x W x C numpy array
        Returns:
            H x W x C numpy array of the same dtype
        """
        img = _check_image(img, "RandomCrop")
        p = self.padding
        shift_x, shift_y = np.random.randint(low=-p, high=p + 1, size=2)
        H, W = img.shape[0], img.shape[1]
        pad_width = [(p, p), (p, p)] + [(0, 0)] * (img.ndim - 2)
        img_pad = np.pad(img, pad_width, mode="constant")
        return img_pad[p + shift_x: p + shift_x + H, p + shift_y: p + shift_y + W, ...]
