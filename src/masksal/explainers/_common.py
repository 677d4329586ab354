"""Helpers shared by the perturbation methods: Gaussian blur, and pixel sizes scaled to the image."""

from __future__ import annotations

import math

from torch import Tensor
from torchvision.transforms.v2 import functional as TF

REFERENCE_SIZE = 224
"""Image side (pixels) at which the papers state their pixel-sized settings (blur, steps...)."""


def at_resolution(value_at_reference: float, size: int) -> float:
    """Scale a pixel length stated for 224-pixel images to images of side ``size``."""
    return value_at_reference * size / REFERENCE_SIZE


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Gaussian blur with reflected borders, differentiable; ``sigma <= 0`` returns the input.

    Args:
        images: ``(..., C, H, W)`` float tensor.
        sigma: standard deviation in pixels; the kernel spans 3 sigma each side, capped by
            the image size (reflection padding must stay inside the image).

    Returns:
        Tensor of the same shape.
    """
    if sigma <= 0:
        return images
    h, w = images.shape[-2:]
    radius = max(1, min(math.ceil(3 * sigma), h - 1, w - 1))
    size = 2 * radius + 1
    return TF.gaussian_blur(images, [size, size], [float(sigma), float(sigma)])
