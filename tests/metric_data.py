"""Synthetic maps and annotations for the metric tests (imported by tests/test_metrics_*.py)."""

from __future__ import annotations

import torch

from masksal.types import Batch


def random_batch(n: int, size: int, seed: int = 0, ignore_band: bool = False,
                 id_prefix: str = "") -> tuple[torch.Tensor, Batch]:
    """Smooth random maps ``(n, size, size)``, 1-2 random boxes per image and masks of the boxes.

    ``ignore_band``: a one-pixel band of 255 (wsolevaluation's "ignore") around each box's mask.
    Ids are ``f"{id_prefix}{i}"``. The same ``seed`` draws the same maps, boxes and images.
    """
    g = torch.Generator().manual_seed(seed)
    maps = torch.nn.functional.interpolate(torch.rand(n, 1, 4, 4, generator=g), size=(size, size),
                                           mode="bicubic", align_corners=False)[:, 0]
    boxes, masks = [], torch.zeros(n, size, size, dtype=torch.uint8)
    for i in range(n):
        k = 1 + i % 2
        x0 = torch.randint(0, size // 2, (k,), generator=g)
        y0 = torch.randint(0, size // 2, (k,), generator=g)
        w = torch.randint(3, size // 2, (k,), generator=g)
        b = torch.stack([x0, y0, x0 + w, y0 + w], 1).float()
        boxes.append(b)
        for x_0, y_0, x_1, y_1 in b.long().tolist():
            if ignore_band:
                masks[i, y_0 - 1 if y_0 else 0:y_1 + 2, x_0 - 1 if x_0 else 0:x_1 + 2] = 255
            masks[i, y_0:y_1 + 1, x_0:x_1 + 1] = 1
    images = torch.rand(n, 3, size, size, generator=g)
    return maps, Batch(images=images, labels=torch.randint(0, 3, (n,), generator=g), boxes=boxes, masks=masks,
                       ids=[f"{id_prefix}{i}" for i in range(n)])
