"""PxAP against scikit-learn's ``average_precision_score`` on the pooled pixels of a split.

wsolevaluation's PxAP bins the min-max normalized map values at the thresholds
``arange(0, 1, 0.001)``; on maps whose values already lie on those thresholds the bins lose
nothing and PxAP is exactly the (non-interpolated) average precision of all object / background
pixels of the split pooled together, ignore pixels (255) left out.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from masksal.metrics import PixelAveragePrecision
from masksal.types import Batch

GRID = np.arange(0, 1, 0.001)


def split(seed: int, n: int = 6, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Maps that peak on smooth objects (with noise and ties) and masks with ignore pixels and one empty mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    maps, masks = [], []
    for i in range(n):
        cy, cx, r = rng.uniform(8, 24), rng.uniform(8, 24), rng.uniform(4, 10)
        d = np.hypot(yy - cy, xx - cx)
        mask = (d < r).astype(np.uint8)
        mask[(d >= r) & (d < r + 1.5)] = 255  # an uncertain rim, ignored
        if i == n - 1:
            mask[mask == 1] = 0  # an image without object pixels
        maps.append(np.exp(-d / r) + 0.3 * rng.random((size, size)))
        masks.append(mask)
    return np.stack(maps), np.stack(masks)


def batch_of(masks: np.ndarray) -> Batch:
    n, h, w = masks.shape
    return Batch(images=torch.zeros(n, 3, h, w), labels=torch.zeros(n, dtype=torch.long),
                 boxes=[torch.zeros(0, 4)] * n, masks=torch.from_numpy(masks))


def sklearn_pxap(maps: np.ndarray, masks: np.ndarray) -> float:
    keep = masks != 255
    return 100 * float(average_precision_score(masks[keep] == 1, maps[keep]))


def pxap(maps: np.ndarray, masks: np.ndarray, batches: int = 2) -> float:
    metric = PixelAveragePrecision()
    for part in np.array_split(np.arange(len(maps)), batches):
        metric.update(torch.from_numpy(maps[part]), batch_of(masks[part]))
    return metric.compute()["pxap"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quantized_maps_give_sklearns_average_precision(seed: int) -> None:
    maps, masks = split(seed)
    levels = np.digitize(maps / maps.max(), GRID) - 1  # some values collide: ties
    quantized = GRID[levels]
    quantized[:, 0, 0], quantized[:, 0, 1] = 0.0, 1.0  # each map spans [0, 1]: min-max is the identity
    assert pxap(quantized, masks) == pytest.approx(sklearn_pxap(quantized, masks), abs=1e-10)


def test_any_map_gives_the_average_precision_of_its_binned_values() -> None:
    maps, masks = split(3)
    lo, hi = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
    normalized = (maps - lo) / (hi - lo)
    binned = np.where(normalized >= 1.0, 1.0, GRID[np.clip(np.digitize(normalized, GRID) - 1, 0, len(GRID) - 1)])
    assert pxap(maps, masks) == pytest.approx(sklearn_pxap(binned, masks), abs=1e-10)
    # The binning is not a detail: the raw values rank the pixels differently.
    assert pxap(maps, masks) != pytest.approx(sklearn_pxap(normalized, masks), abs=1e-6)
