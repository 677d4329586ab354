"""The pointing game (Zhang et al. 2016, Excitation Backprop): is the map's maximum on the object?"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy.ndimage import distance_transform_edt
from torch import Tensor

from masksal.metrics.base import Metric, check_maps, check_masks, zeros
from masksal.metrics.boxes import box_pixel_slices
from masksal.types import Batch

Region = Literal["auto", "mask", "box"]
Ties = Literal["fraction", "first"]

# TorchRay's benchmark: 15 px of tolerance at 224 px.
DEFAULT_TOLERANCE = 15 / 224


class PointingGame(Metric):
    r"""Pointing game accuracy: hits / (hits + misses), in %.

    Per image, the object region :math:`O` is the set of object pixels: the union of the
    ground-truth boxes (inclusive pixel coordinates, clipped to the image) or the pixel mask's
    object pixels (value 1; ignore pixels, 255, are not object). A point :math:`p` *hits* when it
    lies within the tolerance :math:`r` of the object,

    .. math:: \min_{o \in O} \lVert p - o \rVert_2 < r

    (pixel centres; strictly less, as TorchRay; with :math:`r = 0` the point must be on the
    object). The point is the map's maximum. When several pixels share the maximum value
    exactly (``ties``):

    * ``"fraction"`` (default): the image scores the fraction of its maxima that hit, i.e. the
      expected hit of a maximum drawn at random. A constant map thus scores the fraction of the
      image near the object, not a free hit.
    * ``"first"``: the first maximum in raster order (row by row), as ``argmax`` picks it
      (TorchRay's examples).

    .. math:: \text{pointing game} = 100 \cdot \frac{\sum_i h_i}{\sum_i h_i + \sum_i (1 - h_i)}

    over the scored images; an image without any object pixel (no box and no mask, or a mask
    without object) is skipped and counted in ``pointing_game_skipped``.

    Args:
        tolerance: :math:`r` as a fraction of the shorter image side; the default 15/224 is
            TorchRay's 15 px at 224 px (4.29 px at 64 px).
        tolerance_px: :math:`r` in pixels instead (overrides ``tolerance``).
        region: ``"auto"`` (the pixel masks when the batch has them, else the boxes), ``"mask"``
            or ``"box"``.
        ties: ``"fraction"`` or ``"first"`` (see above).

    ``update(maps, batch)``: ``maps`` ``(B, H, W)`` float (finite), larger = more salient.
    ``compute()`` keys: ``pointing_game`` (in %, NaN when nothing was scored) and
    ``pointing_game_skipped`` (a count).

    Example:
        >>> import torch
        >>> from masksal.types import Batch
        >>> m = torch.zeros(1, 64, 64); m[0, 30, 24] = 1  # 4 px left of the box
        >>> b = Batch(torch.rand(1, 3, 64, 64), torch.tensor([0]), [torch.tensor([[28., 20., 40., 40.]])])
        >>> pg = PointingGame(); pg.update(m, b); pg.compute()["pointing_game"]
        100.0
    """

    name = "pointing_game"

    def __init__(self, *, tolerance: float = DEFAULT_TOLERANCE, tolerance_px: float | None = None,
                 region: Region = "auto", ties: Ties = "fraction") -> None:
        for label, value in (("tolerance", tolerance), ("tolerance_px", tolerance_px)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"pointing_game: {label} must be a finite number >= 0, got {value}")
        if region not in ("auto", "mask", "box"):
            raise ValueError(f"pointing_game: region must be 'auto', 'mask' or 'box', got {region!r}")
        if ties not in ("fraction", "first"):
            raise ValueError(f"pointing_game: ties must be 'fraction' or 'first', got {ties!r}")
        self.tolerance = float(tolerance)
        self.tolerance_px = None if tolerance_px is None else float(tolerance_px)
        self.region: Region = region
        self.ties: Ties = ties
        super().__init__()

    def _config(self) -> tuple[object, ...]:
        return (self.tolerance, self.tolerance_px, self.region, self.ties)

    def _empty_state(self) -> dict[str, np.ndarray]:
        return {"count": zeros(), "hits": zeros(), "misses": zeros(), "skipped": zeros()}

    def radius(self, height: int, width: int) -> float:
        """The tolerance in pixels for an image of this size."""
        return self.tolerance_px if self.tolerance_px is not None else self.tolerance * min(height, width)

    def object_regions(self, batch: Batch) -> np.ndarray:
        """The object pixels of each image: ``(B, H, W)`` bool (all False: nothing to point at)."""
        b, h, w = len(batch), int(batch.images.shape[-2]), int(batch.images.shape[-1])
        use_masks = self.region == "mask" or (self.region == "auto" and batch.masks is not None)
        if use_masks:
            return check_masks(batch, self.name) == 1
        if len(batch.boxes) != b:
            raise ValueError(f"{self.name}: the batch has {b} images but {len(batch.boxes)} box tensors")
        out = np.zeros((b, h, w), dtype=bool)
        for i, boxes in enumerate(batch.boxes):
            arr = boxes.detach().cpu().double().numpy().reshape(-1, 4)
            if not np.isfinite(arr).all() or (arr[:, 2] < arr[:, 0]).any() or (arr[:, 3] < arr[:, 1]).any():
                raise ValueError(f"{self.name}: image {i} has an invalid box {arr.tolist()}: expected inclusive "
                                 "(x0, y0, x1, y1) with x0 <= x1 and y0 <= y1")
            for box in arr:
                rows, cols = box_pixel_slices(box, h, w)
                out[i, rows, cols] = True
        return out

    def hits(self, maps: Tensor, batch: Batch) -> np.ndarray:
        """Per-image hit scores: ``(B,)`` float64 in [0, 1] (fractional under ``ties="fraction"``),
        NaN for a skipped image."""
        arr = check_maps(maps, batch, metric=self.name)
        regions = self.object_regions(batch)
        h, w = arr.shape[1:]
        r = self.radius(h, w)
        out = np.full(arr.shape[0], np.nan)
        for i, (m, obj) in enumerate(zip(arr, regions, strict=True)):
            if not obj.any():
                continue
            # Exact Euclidean distance from every pixel to the nearest object pixel (0 on it).
            dist = distance_transform_edt(~obj)
            near = dist < r if r > 0 else dist == 0
            if self.ties == "first":
                out[i] = float(near.reshape(-1)[int(np.argmax(m))])
            else:
                out[i] = float(near[m == m.max()].mean())
        return out

    def update(self, maps: Tensor, batch: Batch) -> None:
        """Accumulate a batch (see the class docstring for shapes)."""
        h = self.hits(maps, batch)
        scored = h[~np.isnan(h)]
        st = self._state
        st["hits"] += float(scored.sum())
        st["misses"] += float((1.0 - scored).sum())
        st["skipped"] += float(h.size - scored.size)
        st["count"] += float(h.size)

    def compute(self) -> dict[str, float]:
        """``pointing_game`` in % (NaN when no image was scored) and ``pointing_game_skipped``."""
        hits, misses = float(self._state["hits"][0]), float(self._state["misses"][0])
        total = hits + misses
        return {"pointing_game": 100.0 * hits / total if total > 0 else math.nan,
                "pointing_game_skipped": float(self._state["skipped"][0])}
