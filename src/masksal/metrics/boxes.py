"""Box geometry shared by the box metrics: binarization, largest component, inclusive IoU.

Boxes are ``(x0, y0, x1, y1)`` with the last row and column inclusive (area
``(x1 - x0 + 1) * (y1 - y0 + 1)``), as in :mod:`masksal.types`.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

BinarizeRule = Literal["mean", "casm"] | float
Geometry = Literal["inclusive", "si", "casm"]
GEOMETRIES = ("inclusive", "si", "casm")
MapNormalization = Literal["auto", "minmax", "none"]

EMPTY_BOX = np.array([-1, -1, -1, -1], dtype=np.int64)


def check_binarize_rule(rule: BinarizeRule) -> BinarizeRule:
    """Validate a binarization rule (``"mean"``, ``"casm"`` or a fraction in (0, 1])."""
    if isinstance(rule, str):
        if rule not in ("mean", "casm"):
            raise ValueError(f"binarize must be 'mean', 'casm' or a fraction in (0, 1], got {rule!r}")
        return rule
    f = float(rule)
    if not 0.0 < f <= 1.0:
        raise ValueError(f"binarize as a fixed fraction must lie in (0, 1], got {rule!r}")
    return f


def normalize_for_masks(maps: np.ndarray, mode: MapNormalization) -> np.ndarray:
    """Bring maps to [0, 1] for the metrics that read the continuous map (F1, CASM's rule).

    Args:
        maps: ``(B, H, W)`` float64, finite.
        mode: ``"none"``: unchanged; ``"minmax"``: every map min-max normalized (constant -> 0);
            ``"auto"``: a map already within [0, 1] (a masker's sigmoid output, as in the paper) is
            kept, any other map is min-max normalized.

    Returns:
        ``(B, H, W)`` float64.
    """
    if mode == "none":
        return maps
    out = maps.copy()
    for i, m in enumerate(maps):
        lo, hi = float(m.min()), float(m.max())
        if mode == "auto" and lo >= 0.0 and hi <= 1.0:
            continue
        out[i] = (m - lo) / (hi - lo) if hi > lo else 0.0
    return out


def check_geometry(geometry: str) -> Geometry:
    """Validate a box geometry (``"inclusive"``, ``"si"`` or ``"casm"``)."""
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be 'inclusive', 'si' or 'casm', got {geometry!r}")
    return geometry  # type: ignore[return-value]


def binarize(maps: np.ndarray, rule: BinarizeRule = "mean", *, float32: bool = False) -> np.ndarray:
    """Binarize each map.

    Args:
        maps: ``(B, H, W)`` float64.
        rule: ``"mean"``: ``m > mean(m)`` (the paper / SI). ``"casm"``: CASM's rule, which keeps
            about the ``N * mean(m)`` largest pixels: threshold ``th`` = the k-th smallest value
            with ``k = 1 + floor((N - 1) * (1 - mean(m)) + 0.5)``, ``th`` clamped to
            ``[1e-6, 1 - 1e-6]``, foreground ``m > th`` (meant for maps in [0, 1]). A float ``f``
            in (0, 1]: the ``ceil(f * N)`` largest pixels (every pixel tied with the last one
            included).
        float32: do the ``"mean"`` and ``"casm"`` rules as the reference scorers do, in float32
            with torch (SI: ``mask.view(B, -1).mean(1)``; CASM: ``avg_pool2d`` for the mean,
            ``kthvalue`` and the clamp in float32). Only a map with pixels at (or within float32
            rounding of) its mean binarizes differently: a constant map is empty in float64 but,
            when its float32 mean is not exact (0.3 at 224 x 224), entirely foreground in float32.

    Returns:
        ``(B, H, W)`` bool.
    """
    rule = check_binarize_rule(rule)
    if float32 and rule in ("mean", "casm"):
        return _binarize_float32(maps, rule)
    if rule == "mean":
        return maps > maps.mean(axis=(1, 2), keepdims=True)
    b = maps.shape[0]
    flat = maps.reshape(b, -1)
    n = flat.shape[1]
    out = np.zeros(flat.shape, dtype=bool)
    for i in range(b):
        if rule == "casm":
            k = 1 + int(math.floor((n - 1) * (1.0 - float(flat[i].mean())) + 0.5))
            k = min(max(k, 1), n)
            th = float(np.partition(flat[i], k - 1)[k - 1])
            th = min(max(th, 1e-6), 1.0 - 1e-6)
            out[i] = flat[i] > th
        else:
            k = min(max(math.ceil(float(rule) * n), 1), n)
            th = float(np.partition(flat[i], n - k)[n - k])
            out[i] = flat[i] >= th
    return out.reshape(maps.shape)


def _binarize_float32(maps: np.ndarray, rule: Literal["mean", "casm"]) -> np.ndarray:
    """The reference scorers' float32 torch arithmetic (see :func:`binarize`)."""
    b, h, w = maps.shape
    m = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).view(b, 1, h, w)
    flat = m.view(b, -1)
    if rule == "mean":
        return (flat > flat.mean(dim=1, keepdim=True)).view(b, h, w).numpy()
    avg = F.avg_pool2d(m, (h, w), stride=1).view(b)
    out = torch.zeros(b, h * w, dtype=torch.bool)
    for i in range(b):
        k = 1 + int((h * w - 1) * (1 - avg[i].item()) + 0.5)
        k = min(max(k, 1), h * w)
        th = torch.kthvalue(flat[i], k).values.clamp(1e-6, 1 - 1e-6)
        out[i] = flat[i] > th
    return out.view(b, h, w).numpy()


def largest_component_boxes(binary: np.ndarray) -> np.ndarray:
    """Tight inclusive box of the largest 4-connected component of each binary map.

    Components are found with ``scipy.ndimage.label`` (its default structure: 4-connectivity in
    2-D); the largest is the one with the most pixels, ties going to the first in raster order,
    as in SI / CASM.

    Args:
        binary: ``(B, H, W)`` bool.

    Returns:
        ``(B, 4)`` int64 inclusive boxes; an empty map gives ``[-1, -1, -1, -1]`` (no box).
    """
    out = np.tile(EMPTY_BOX, (binary.shape[0], 1))
    for i, m in enumerate(binary):
        labels, n = ndimage.label(m)
        if n == 0:
            continue
        counts = np.bincount(labels.ravel(), minlength=n + 1)
        counts[0] = 0
        k = int(np.argmax(counts))
        sy, sx = ndimage.find_objects(labels, max_label=k)[k - 1]
        out[i] = (sx.start, sy.start, sx.stop - 1, sy.stop - 1)
    return out


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip inclusive boxes to the image.

    Args:
        boxes: ``(K, 4)`` float64 inclusive boxes.
        height, width: image size.

    Returns:
        ``(clipped (K, 4), inside (K,) bool)``; ``inside`` is False for a box that does not
        overlap the image at all (its clipped coordinates are meaningless).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    inside = (b[:, 0] <= width - 1) & (b[:, 2] >= 0) & (b[:, 1] <= height - 1) & (b[:, 3] >= 0)
    c = b.copy()
    c[:, [0, 2]] = np.clip(c[:, [0, 2]], 0, width - 1)
    c[:, [1, 3]] = np.clip(c[:, [1, 3]], 0, height - 1)
    return c, inside


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every pair of inclusive boxes.

    Areas and intersections count pixels inclusively: ``(x1 - x0 + 1) * (y1 - y0 + 1)``. A pair
    whose union is not positive (degenerate boxes) has IoU 0, as in wsolevaluation.

    Args:
        a: ``(N, 4)`` boxes. b: ``(K, 4)`` boxes.

    Returns:
        ``(N, K)`` float64 IoU.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(1, -1, 4)
    iw = np.maximum(0.0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    ih = np.maximum(0.0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - inter
    ok = union > 0
    return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


def box_pixel_slices(box: np.ndarray, height: int, width: int) -> tuple[slice, slice]:
    """Row and column slices of the pixels an inclusive (possibly fractional) box covers.

    Pixel ``(y, x)`` is covered when ``x0 <= x <= x1`` and ``y0 <= y <= y1``; the box is clipped
    to the image. An empty region gives empty slices.
    """
    x0 = max(math.ceil(box[0]), 0)
    y0 = max(math.ceil(box[1]), 0)
    x1 = min(math.floor(box[2]), width - 1)
    y1 = min(math.floor(box[3]), height - 1)
    return slice(y0, max(y1 + 1, y0)), slice(x0, max(x1 + 1, x0))
