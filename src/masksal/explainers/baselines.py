"""Trivial baselines that ignore the model: a centred prior and uniform noise.

A saliency method worth its cost should beat both on every metric; the centre prior is a
strong baseline on object-centric datasets (ImageNet, CUB). Both may be built without a
classifier (``classifier=None``): ``explain_with_logits`` then returns ``logits=None``; given
one, they hand back its logits like every other method (one forward pass for that alone).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from masksal.classifiers import Classifier
from masksal.explainers.base import Explainer


class CentreBaseline(Explainer):
    """The same centred map for every image: a Gaussian bump or a box.

    The centre prior of saliency benchmarks, e.g. Judd, Ehinger, Durand & Torralba, "Learning to
    Predict Where Humans Look", ICCV 2009.

    Args:
        classifier: ``None``, or the model whose logits ``explain_with_logits`` hands back (the
            map ignores it).
        kind: ``"gaussian"``: ``exp(-(dy^2 / (2 (sigma H)^2) + dx^2 / (2 (sigma W)^2)))``;
            ``"box"``: 1 inside the centred box of ``box_fraction`` of each side, 0 outside.
        sigma: Gaussian standard deviation as a fraction of the image side.
        box_fraction: side of the box as a fraction of the image side.

    Example:
        >>> import torch
        >>> centre = CentreBaseline(kind="box")
        >>> centre
        CentreBaseline(kind='box', sigma=0.25, box_fraction=0.5)
        >>> centre.explain(torch.rand(2, 3, 4, 4))[0]
        tensor([[0., 0., 0., 0.],
                [0., 1., 1., 0.],
                [0., 1., 1., 0.],
                [0., 0., 0., 0.]])
    """

    name = "centre"
    TUNING_GRID: ClassVar[dict[str, list[Any]]] = {"sigma": [0.15, 0.25, 0.35]}
    """Settings :func:`masksal.evaluation.tune` tries: the width of the Gaussian."""
    requires_classifier = False
    class_specific = False

    def __init__(
        self,
        classifier: Classifier | nn.Module | None = None,
        kind: Literal["gaussian", "box"] = "gaussian",
        sigma: float = 0.25,
        box_fraction: float = 0.5,
    ) -> None:
        if kind not in ("gaussian", "box"):
            raise ValueError(f"kind must be 'gaussian' or 'box', got {kind!r}")
        if sigma <= 0 or not 0 < box_fraction <= 1:
            raise ValueError("sigma must be > 0 and box_fraction in (0, 1]")
        super().__init__(classifier)
        self.kind: Literal["gaussian", "box"] = kind
        self.sigma = sigma
        self.box_fraction = box_fraction

    def map(self, height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
        """The ``(height, width)`` float32 map, peak value 1."""
        if self.kind == "gaussian":
            y = torch.arange(height, device=device, dtype=torch.float32) - (height - 1) / 2
            x = torch.arange(width, device=device, dtype=torch.float32) - (width - 1) / 2
            gy = torch.exp(-(y**2) / (2 * (self.sigma * height) ** 2))
            gx = torch.exp(-(x**2) / (2 * (self.sigma * width) ** 2))
            return gy[:, None] * gx[None, :]
        out = torch.zeros(height, width, device=device)
        bh, bw = max(1, round(self.box_fraction * height)), max(1, round(self.box_fraction * width))
        top, left = (height - bh) // 2, (width - bw) // 2
        out[top:top + bh, left:left + bw] = 1
        return out

    def _maps(self, images: Tensor, targets: Tensor | None) -> Tensor:
        """``(B, H, W)`` float32 centred maps in [0, 1]; ``targets`` is ignored."""
        b, _, h, w = images.shape
        return self.map(h, w, images.device).expand(b, h, w).clone()


class RandomBaseline(Explainer):
    """Uniform random maps in [0, 1), from a seeded stream.

    The chance level: any metric's value for maps that know nothing of the image or the model.

    Maps are drawn on the CPU from a generator seeded once at construction, one ``(H, W)`` map
    per image in order, so explaining a batch gives the same maps as explaining its images one
    by one with a fresh explainer, and any device gives the same maps.

    Args:
        classifier: ``None``, or the model whose logits ``explain_with_logits`` hands back (the
            maps ignore it).
        seed: seed of the stream.

    Example:
        >>> import torch
        >>> RandomBaseline(seed=1).explain(torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 8, 8])
    """

    name = "random"
    requires_classifier = False
    class_specific = False

    def __init__(self, classifier: Classifier | nn.Module | None = None, seed: int = 0) -> None:
        super().__init__(classifier)
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    def _maps(self, images: Tensor, targets: Tensor | None) -> Tensor:
        """``(B, H, W)`` float32 maps in [0, 1); ``targets`` is ignored."""
        b, _, h, w = images.shape
        return torch.rand(b, h, w, generator=self._generator).to(images.device)
