"""Helpers shared by the saliency methods: eval mode, targets, input checks, blur, size scaling."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from masksal.classifiers import Classifier
from masksal.classifiers import eval_mode as eval_mode  # re-exported for the explainers

REFERENCE_SIZE = 224
"""Image side (pixels) at which the papers state their pixel-sized settings (blur, steps...)."""


def check_images(images: Tensor) -> None:
    """Raise a one-line error unless ``images`` is a ``(B, 3, H, W)`` floating-point tensor."""
    if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"images must be a (B, 3, H, W) float tensor in [0, 1], got shape "
                         f"{tuple(images.shape)} and dtype {images.dtype}")


def resolve_targets(classifier: Classifier, images: Tensor, targets: Tensor | None) -> Tensor:
    """The class to explain per image: ``targets`` as ``(B,)`` int64, or the top-1 class if ``None``.

    Call it with the classifier already in eval mode (top-1 of the eval-mode model).
    """
    if targets is None:
        with torch.no_grad():
            return classifier(images).argmax(dim=1)
    t = torch.as_tensor(targets, device=images.device).long().reshape(-1)
    if t.shape[0] != images.shape[0]:
        raise ValueError(f"targets must hold one class per image: got {t.shape[0]} for "
                         f"{images.shape[0]} images")
    return t


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
