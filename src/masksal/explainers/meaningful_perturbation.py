"""Meaningful Perturbation: the smallest blurred region that deletes the class, found per image."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masksal.classifiers import Classifier
from masksal.explainers._common import at_resolution, gaussian_blur
from masksal.explainers.base import ClassifierExplainer, Explanation


class MeaningfulPerturbation(ClassifierExplainer):
    """Meaningful Perturbation (the deletion game), optimized for all images of a batch at once.

    Fong & Vedaldi, "Interpretable Explanations of Black Boxes by Meaningful Perturbation",
    ICCV 2017.

    Per image, a mask ``m`` in [0, 1] (1 = keep) of ``h x w`` cells, ``1 / mask_scale`` of the
    input resolution, minimizes

        ``p_c(x * M + blur(x) * (1 - M)) + l1_coeff * mean|1 - m| + tv_coeff * mean|grad m|^beta``

    where ``M`` is ``m`` upsampled bilinearly and blurred, ``p_c`` the softmax probability of the
    target class, and ``grad m`` the finite differences of ``m`` per unit image side (cell
    differences times ``h`` or ``w``), so that both terms keep their balance at any resolution.
    Adam, projected onto [0, 1] after each step; the image is shifted by a random offset below
    ``jitter`` pixels at each iteration. The map is ``1 - M`` (the deleted region is salient).

    Defaults follow the authors' code (github.com/ruthcfong/perturb_explanations): 300 Adam steps
    with learning rate 0.1, a 28x28 mask at 224 px (``mask_scale = 8``), ``beta = 3``, blur sigma
    10, mask blur sigma 5, jitter 4 pixels, random initial mask, and ``lambda1 = 1e-4``,
    ``lambda2 = 1e-2`` as weights of sums over the 28x28 cells, which equal ``l1_coeff = 784e-4``
    and ``tv_coeff = 1e-2 / 28`` in the per-cell means above. Pixel sizes scale with the image
    (stated for 224 px). The initial mask and the jitter offsets come from ``seed`` and are shared
    by all images, and each image's loss depends only on its own mask (Adam is elementwise), so an
    image's map does not depend on its batch.

    Maps are ``(B, H, W)`` float32 in [0, 1] (1 = deleted = salient). The classifier's
    ``.grad`` fields stay untouched (gradients are taken with ``torch.autograd.grad``).

    Args:
        classifier: the model to explain (a ``Classifier`` or an ``nn.Module``).
        iterations: optimization steps.
        lr: Adam learning rate.
        l1_coeff: weight of the mean deletion area ``mean|1 - m|``.
        tv_coeff: weight of the mean of ``|grad m|^beta``.
        tv_beta: exponent of the total variation.
        mask_scale: input pixels per mask cell.
        blur_sigma: blur of the infill image in pixels (default 10 at 224 px).
        mask_blur_sigma: blur of the upsampled mask in pixels (default 5 at 224 px).
        jitter: maximum random shift in pixels (default 4 at 224 px; 0 or 1 disables it).
        seed: seed of the initial mask and of the jitter offsets.

    Example:
        >>> import torch, torchvision
        >>> mp = MeaningfulPerturbation(torchvision.models.resnet18(num_classes=3), iterations=5)
        >>> mp.explain(torch.rand(2, 3, 32, 32), targets=0).shape
        torch.Size([2, 32, 32])
    """

    name = "meaningful_perturbation"
    TUNING_GRID: ClassVar[dict[str, list[Any]]] = {"l1_coeff": [784e-4, 4 * 784e-4], "blur_sigma": [None, 6.0, 12.0]}
    """Settings :func:`masksal.evaluation.tune` tries: the area weight (the authors' and 4 times it) and
    the infill blur in pixels (None: the authors' 10 px at 224 px, scaled; 6 and 12 px are for
    images of about 64 px, where the scaled blur is under 3 px)."""
    needs_grad = True

    iterations: int
    lr: float
    l1_coeff: float
    tv_coeff: float
    tv_beta: float
    mask_scale: int
    blur_sigma: float | None
    mask_blur_sigma: float | None
    jitter: int | None
    seed: int

    def __init__(
        self,
        classifier: Classifier | nn.Module,
        iterations: int = 300,
        lr: float = 0.1,
        l1_coeff: float = 784e-4,
        tv_coeff: float = 1e-2 / 28,
        tv_beta: float = 3.0,
        mask_scale: int = 8,
        blur_sigma: float | None = None,
        mask_blur_sigma: float | None = None,
        jitter: int | None = None,
        seed: int = 0,
    ) -> None:
        if iterations < 0 or mask_scale < 1:
            raise ValueError("iterations must be >= 0 and mask_scale >= 1")
        super().__init__(classifier)
        self._keep_options(locals())

    def _upsample(self, m: Tensor, size: tuple[int, int], mask_blur: float) -> Tensor:
        return gaussian_blur(F.interpolate(m, size=size, mode="bilinear", align_corners=False), mask_blur)

    def _total_variation(self, m: Tensor) -> Tensor:
        """Per-image mean over cells of ``|grad m|^beta``, the gradient taken per image side
        (differences times cells per side; 0 past the last row and column)."""
        h, w = m.shape[-2:]
        dy = F.pad(m[:, :, 1:] - m[:, :, :-1], (0, 0, 0, 1)) * h
        dx = F.pad(m[:, :, :, 1:] - m[:, :, :, :-1], (0, 1, 0, 0)) * w
        return (dy.square() + dx.square()).pow(self.tv_beta / 2).mean(dim=(1, 2, 3))

    def _maps(self, images: Tensor, targets: Tensor | None) -> Explanation:
        b, _, h, w = images.shape
        t, logits = self.resolve_targets(images, targets)
        size = min(h, w)
        blur = self.blur_sigma if self.blur_sigma is not None else at_resolution(10.0, size)
        mask_blur = self.mask_blur_sigma if self.mask_blur_sigma is not None else at_resolution(5.0, size)
        jitter = self.jitter if self.jitter is not None else round(at_resolution(4.0, size))
        g = torch.Generator().manual_seed(self.seed)
        mh, mw = math.ceil(h / self.mask_scale), math.ceil(w / self.mask_scale)
        init = torch.rand(1, 1, mh, mw, generator=g).to(device=images.device, dtype=images.dtype)
        m = init.expand(b, 1, mh, mw).clone().requires_grad_()
        opt = torch.optim.Adam([m], lr=self.lr)
        x = images.detach()
        infill = gaussian_blur(x, blur)
        if jitter > 1:  # reflected margin so that every shift stays inside the picture
            x = F.pad(x, (0, jitter - 1, 0, jitter - 1), mode="reflect")
            infill = F.pad(infill, (0, jitter - 1, 0, jitter - 1), mode="reflect")
        for _ in range(self.iterations):
            oy, ox = (torch.randint(0, jitter, (2,), generator=g).tolist() if jitter > 1 else (0, 0))
            xs, fs = x[:, :, oy:oy + h, ox:ox + w], infill[:, :, oy:oy + h, ox:ox + w]
            mask = self._upsample(m, (h, w), mask_blur)
            perturbed = xs * mask + fs * (1 - mask)
            prob = self.classifier(perturbed).softmax(dim=1).gather(1, t[:, None])[:, 0]
            loss = (prob + self.l1_coeff * (1 - m).abs().mean(dim=(1, 2, 3))
                    + self.tv_coeff * self._total_variation(m)).sum()
            # autograd.grad, not backward: the classifier's .grad fields stay untouched.
            (m.grad,) = torch.autograd.grad(loss, [m])
            opt.step()
            with torch.no_grad():
                m.clamp_(0, 1)
        with torch.no_grad():
            maps = (1 - self._upsample(m, (h, w), mask_blur))[:, 0].clamp(0, 1)
        return Explanation(maps, logits)
