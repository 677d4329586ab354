"""The one protocol every saliency method in masksal implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Explainer(Protocol):
    """A saliency method.

    ``explain(images, targets)`` takes ``images``: ``(B, 3, H, W)`` float in [0, 1] (pixel space;
    the classifier wrapper normalizes) and ``targets``: ``(B,)`` int64 class indices or ``None``
    for the classifier's top-1 class, and returns ``(B, H, W)`` float maps on the images' device,
    larger = more salient. Every method, ours and the rivals, is evaluated and timed through this
    call, so tables compare like with like.
    """

    name: str

    def explain(self, images: Tensor, targets: Tensor | None = None) -> Tensor: ...
