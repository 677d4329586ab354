"""Compose masked-in and masked-out images, with the infill strategies of the paper.

With a mask ``m`` in [0, 1] (1 = keep) and an infill image ``G``:

* masked-in  = ``x * m + G * (1 - m)``  (only the salient region is kept)
* masked-out = ``x * (1 - m) + G * m``  (the salient region is removed)

The paper masks in the classifier's normalized space (``z * m``), which is the same as filling
the removed pixels with the normalization mean colour: that is the ``"mean"`` infill, the default.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

INFILLS = ("mean", "zero", "image_mean", "blur", "noise")


def infill(images: Tensor, kind: str, mean: Tensor, std: Tensor, blur_sigma: float | None = None,
           generator: torch.Generator | None = None) -> Tensor:
    """The fill image ``G`` for ``images`` ``(B, 3, H, W)`` in [0, 1].

    Args:
        kind: ``"mean"`` (the classifier's normalization mean colour, the paper's default),
            ``"zero"`` (black), ``"image_mean"`` (each image's own mean colour), ``"blur"``
            (Gaussian blur, sigma 20 px at 224 px scaled with the image, as in the paper),
            ``"noise"`` (Gaussian noise with the normalization's mean and std, clipped to [0, 1]).
        mean, std: ``(1, 3, 1, 1)`` normalization statistics of the classifier.
        blur_sigma: blur sigma in pixels; default ``20 * H / 224``.
        generator: where the noise infill draws from (on the images' device).
    """
    if kind == "mean":
        return mean.expand_as(images)
    if kind == "zero":
        return torch.zeros_like(images)
    if kind == "image_mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    if kind == "blur":
        h = images.shape[-2]
        sigma = blur_sigma if blur_sigma is not None else 20.0 * h / 224.0
        k = min(2 * math.ceil(3 * sigma) + 1, 2 * (min(images.shape[-2:]) // 2) - 1)
        return gaussian_blur(images, kernel_size=[k, k], sigma=[sigma, sigma])
    if kind == "noise":
        noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        return (mean + std * noise).clamp(0, 1)
    raise ValueError(f"unknown infill {kind!r}; choose one of {', '.join(INFILLS)}")


def compose(images: Tensor, masks: Tensor, fill: Tensor) -> tuple[Tensor, Tensor]:
    """``(masked_in, masked_out)`` for ``images`` ``(B, 3, H, W)``, ``masks`` ``(B, 1, H, W)``."""
    if masks.dim() == 3:
        masks = masks.unsqueeze(1)
    masked_in = images * masks + fill * (1 - masks)
    masked_out = images * (1 - masks) + fill * masks
    return masked_in, masked_out
