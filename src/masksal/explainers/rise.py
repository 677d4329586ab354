"""RISE: saliency as the class probability averaged over random masks."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masksal.classifiers import Classifier
from masksal.explainers.base import ClassifierExplainer, Explanation


class RISE(ClassifierExplainer):
    """Randomized Input Sampling for Explanation.

    Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
    Models", BMVC 2018.

    ``S(u) = sum_i p_c(x * M_i) M_i(u) / (N p)`` over ``N`` random masks ``M_i``: binary
    ``grid_size x grid_size`` grids (cells kept with probability ``p``), upsampled bilinearly to
    ``(grid_size + 1) * C`` pixels (``C = ceil(H / grid_size)``, the cell size) and cropped to
    ``H x W`` at a random shift in ``[0, C)``. Removed pixels take the classifier's mean colour
    (zero after its normalization). ``p_c`` is the softmax probability of the target class.

    The grids and shifts are drawn once per image size from ``seed`` (so maps are
    deterministic and the same masks serve every image); the full-resolution masks are
    rebuilt chunk by chunk, which keeps memory at ``batch_size`` masks instead of ``n_masks``.

    Args:
        classifier: the model to explain (a ``Classifier`` or an ``nn.Module``).
        n_masks: number of masks ``N`` (the paper uses 4000 for ResNet-50).
        grid_size: cells per side of the low-resolution grid (the paper's ``s = 7``).
        p: probability that a cell is kept.
        batch_size: masked images per forward pass.
        seed: seed of the masks.

    Maps are ``(B, H, W)`` float32 ``>= 0`` (about the mean target probability where the pixel
    does not matter).

    Example:
        >>> import torch, torchvision
        >>> rise = RISE(torchvision.models.resnet18(num_classes=3), n_masks=64)
        >>> rise
        RISE(n_masks=64, grid_size=7, p=0.5, batch_size=128, seed=0)
        >>> rise.explain(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 32, 32])
    """

    name = "rise"
    TUNING_GRID: ClassVar[dict[str, list[Any]]] = {"grid_size": [4, 7, 10], "p": [0.25, 0.5]}
    """Settings :func:`masksal.evaluation.tune` tries: the cell size (``grid_size`` cells a side) and the
    share of cells kept. The mask count stays the authors' 4000: more masks only lower the Monte
    Carlo noise of the same estimate, at a proportional cost."""

    n_masks: int
    grid_size: int
    p: float
    batch_size: int
    seed: int

    def __init__(
        self,
        classifier: Classifier | nn.Module,
        n_masks: int = 4000,
        grid_size: int = 7,
        p: float = 0.5,
        batch_size: int = 128,
        seed: int = 0,
    ) -> None:
        if n_masks < 1 or grid_size < 1 or batch_size < 1:
            raise ValueError("n_masks, grid_size and batch_size must be >= 1")
        if not 0.0 < p <= 1.0:
            raise ValueError(f"p must be in (0, 1], got {p}")
        super().__init__(classifier)
        self._keep_options(locals())
        self._draws: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}

    def _random_draws(self, height: int, width: int) -> tuple[Tensor, Tensor]:
        """Binary grids ``(N, 1, s, s)`` and shifts ``(N, 2)`` (rows, cols), drawn once per size."""
        key = (height, width)
        if key not in self._draws:
            s = self.grid_size
            g = torch.Generator().manual_seed(self.seed)
            grids = (torch.rand(self.n_masks, 1, s, s, generator=g) < self.p).float()
            cell_h, cell_w = math.ceil(height / s), math.ceil(width / s)
            shifts = torch.stack([torch.randint(0, cell_h, (self.n_masks,), generator=g),
                                  torch.randint(0, cell_w, (self.n_masks,), generator=g)], dim=1)
            self._draws[key] = (grids, shifts)
        return self._draws[key]

    def masks(self, start: int, stop: int, height: int, width: int,
              device: torch.device | str = "cpu") -> Tensor:
        """Masks ``start..stop-1`` as a ``(stop - start, height, width)`` float tensor in [0, 1]."""
        grids, shifts = self._random_draws(height, width)
        grids, shifts = grids[start:stop].to(device), shifts[start:stop].to(device)
        s = self.grid_size
        up_h, up_w = (s + 1) * math.ceil(height / s), (s + 1) * math.ceil(width / s)
        up = F.interpolate(grids, size=(up_h, up_w), mode="bilinear", align_corners=False)[:, 0]
        rows = shifts[:, :1] + torch.arange(height, device=device)
        cols = shifts[:, 1:] + torch.arange(width, device=device)
        index = torch.arange(len(up), device=device)[:, None, None]
        return up[index, rows[:, :, None], cols[:, None, :]].clamp_(0, 1)

    def _maps(self, images: Tensor, targets: Tensor | None) -> Explanation:
        b, _, h, w = images.shape
        dev = images.device
        t, logits = self.resolve_targets(images, targets)
        fill = torch.tensor(self.classifier.spec.mean, device=dev, dtype=images.dtype).view(1, 1, 3, 1, 1)
        per_image_chunk = min(b, self.batch_size)
        masks_per_pass = max(1, self.batch_size // per_image_chunk)
        saliency = torch.zeros(b, h * w, device=dev)
        for m0 in range(0, self.n_masks, masks_per_pass):
            masks = self.masks(m0, min(m0 + masks_per_pass, self.n_masks), h, w, dev).to(images.dtype)
            k = masks.shape[0]
            for i0 in range(0, b, per_image_chunk):
                x = images[i0:i0 + per_image_chunk, None]
                masked = fill + (x - fill) * masks[None, :, None]
                out = self.classifier(masked.reshape(-1, 3, h, w))
                probs = out.softmax(dim=1).gather(1, t[i0:i0 + per_image_chunk].repeat_interleave(k)[:, None])
                saliency[i0:i0 + per_image_chunk] += probs.reshape(-1, k).float() @ masks.reshape(k, h * w).float()
        return Explanation((saliency / (self.n_masks * self.p)).reshape(b, h, w), logits)
