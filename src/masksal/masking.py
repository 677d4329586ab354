"""Compose masked-in and masked-out images, with the infill strategies of the paper.

With a mask ``m`` in [0, 1] (1 = keep) and an infill image ``G``:

* masked-in  = ``x * m + G * (1 - m)``  (only the salient region is kept)
* masked-out = ``x * (1 - m) + G * m``  (the salient region is removed)

The paper masks in the classifier's normalized space (``z * m``), which is the same as filling
the removed pixels with the normalization mean colour: that is the ``"mean"`` infill, the default.

The ``"learned"`` infill asks an inpainting network (:mod:`masksal.inpainting`) for ``G``; its fill
depends on which pixels are missing, so the masked-in and masked-out images get one fill each
(:func:`learned_fills`), and :func:`compose` takes the pair.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchvision.transforms.functional import gaussian_blur

INFILLS = ("mean", "zero", "image_mean", "blur", "noise", "learned")


def infill(images: Tensor, kind: str, mean: Tensor, std: Tensor, blur_sigma: float | None = None, *,
           holes: Tensor | None = None, inpainter: nn.Module | None = None,
           generator: torch.Generator | None = None) -> Tensor:
    """The fill image ``G`` for ``images`` ``(B, 3, H, W)`` in [0, 1].

    Args:
        kind: ``"mean"`` (the classifier's normalization mean colour, the paper's default),
            ``"zero"`` (black), ``"image_mean"`` (each image's own mean colour), ``"blur"``
            (Gaussian blur, sigma 20 px at 224 px scaled with the image, as in the paper),
            ``"noise"`` (Gaussian noise with the normalization's mean and std, clipped to [0, 1]),
            ``"learned"`` (``inpainter(images, holes)``, frozen: no gradient flows through it).
        mean, std: ``(1, 3, 1, 1)`` normalization statistics of the classifier.
        blur_sigma: blur sigma in pixels; default ``20 * H / 224``.
        holes: ``(B, 1, H, W)`` in [0, 1], 1 = the pixels the fill replaces (``"learned"`` only).
        inpainter: a network ``(images, holes) -> (B, 3, H, W)`` in [0, 1], e.g.
            :func:`masksal.inpainting.load_inpainter` (``"learned"`` only).
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
    if kind == "learned":
        if inpainter is None or holes is None:
            raise ValueError("infill 'learned' needs inpainter= (masksal.inpainting.load_inpainter) and holes= "
                             "(the pixels to fill)")
        return _inpaint(images, holes, inpainter)
    raise ValueError(f"unknown infill {kind!r}; choose one of {', '.join(INFILLS)}")


def learned_fills(images: Tensor, masks: Tensor, inpainter: nn.Module) -> tuple[Tensor, Tensor]:
    """The learned infill for both sides: ``(fill of the masked-in image, fill of the masked-out
    image)``; the masked-in image misses ``1 - m``, the masked-out image misses ``m``.

    Shapes as :func:`compose`; two inpainter forward passes, without gradients.
    """
    if masks.dim() == 3:
        masks = masks.unsqueeze(1)
    return _inpaint(images, 1 - masks, inpainter), _inpaint(images, masks, inpainter)


def _inpaint(images: Tensor, holes: Tensor, inpainter: nn.Module) -> Tensor:
    with torch.no_grad():  # a frozen inpainter, as in the paper's infill ablation and in FIDO
        return inpainter(images.detach(), holes.detach())


def compose(images: Tensor, masks: Tensor, fill: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """``(masked_in, masked_out)`` for ``images`` ``(B, 3, H, W)``, ``masks`` ``(B, 1, H, W)``.

    ``fill``: one fill for both sides, or ``(fill_in, fill_out)`` (see :func:`learned_fills`).
    """
    if masks.dim() == 3:
        masks = masks.unsqueeze(1)
    fill_in, fill_out = fill if isinstance(fill, tuple) else (fill, fill)
    masked_in = images * masks + fill_in * (1 - masks)
    masked_out = images * (1 - masks) + fill_out * masks
    return masked_in, masked_out
