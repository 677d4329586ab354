"""Compiled (numba) scoring of the boxes of :mod:`masksal.metrics._levelboxes_jit`: a map's uint8
levels as wsolevaluation computes them, and the best IoU with the ground truth at every level.

Both repeat NumPy's float64 operations in the same order (no fast-math), so the results are the
same bits as :func:`masksal.metrics.base.minmax_normalize` followed by ``uint8(m * 255)``, and as
:func:`masksal.metrics.boxes.box_iou`.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.types import Array, Tuple, boolean, float32, float64, int32, int64, uint8  # type: ignore[attr-defined]

from masksal.metrics._levelboxes_jit import filled_v1_boxes, map_level_boxes

# numba caches a compiled function with the code of the compiled functions it calls from other
# modules, but keys that cache by this file alone: an edit of one of those modules would leave
# stale code running from the cache. Their SHA-256 is written here (a test compares it with the
# files), so that editing them means editing this file too, which invalidates the cache.
CALLEES_SHA256 = {
    "_levelboxes_jit.py": "1fbe72eeb48b0f11ba1dc2f9427db81c3e7b753486c8c73731ddbf0db562f7d5",
    "_levelsort_jit.py": "7cde4620c65dfe7c9c30396e25caed093a23424f0f635293db7e14d3ef8091b8",
}

NUM_LEVELS = 256
_I32, _I32_2D, _I64, _BOOL = Array(int32, 1, "C"), Array(int32, 2, "C"), Array(int64, 1, "C"), Array(boolean, 1, "C")
_F64, _F64_2D, _F32_2D = Array(float64, 1, "C"), Array(float64, 2, "C"), Array(float32, 2, "C")


@njit([Array(uint8, 2, "C")(_F64_2D), Array(uint8, 2, "C")(_F32_2D)], cache=True, nogil=True)
def normalized_uint8(m: np.ndarray) -> np.ndarray:
    """``uint8(minmax_normalize(m) * 255)`` of one ``(H, W)`` float64 or float32 map (float32
    values widened to float64, exactly, before any arithmetic): all zeros when the map is
    constant or has NaN. ``max(m - lo)`` is computed as ``max(m) - lo``, the same number
    (rounding is monotonic)."""
    h, w = m.shape
    out = np.zeros((h, w), np.uint8)
    if m.size == 0:
        return out
    lo, hi = float64(m[0, 0]), float64(m[0, 0])
    for y in range(h):
        for x in range(w):
            v = float64(m[y, x])
            if np.isnan(v):
                return out
            lo = min(lo, v)
            hi = max(hi, v)
    if lo == hi:
        return out
    span = hi - lo
    for y in range(h):
        for x in range(w):
            out[y, x] = np.uint8(((float64(m[y, x]) - lo) / span) * 255.0)
    return out


@njit(float64(_I32_2D, int64, _F64_2D), cache=True, nogil=True, inline="always")
def _best_iou(box: np.ndarray, i: int, gt: np.ndarray) -> float:
    """The largest IoU of ``box[i]`` with a ground-truth box: the same float64 operations, in
    the same order, as :func:`masksal.metrics.boxes.box_iou` (so the same bits)."""
    a0, a1, a2, a3 = float(box[i, 0]), float(box[i, 1]), float(box[i, 2]), float(box[i, 3])
    area_a = (a2 - a0 + 1) * (a3 - a1 + 1)
    best = 0.0
    for k in range(gt.shape[0]):
        iw = max(0.0, min(a2, gt[k, 2]) - max(a0, gt[k, 0]) + 1)
        ih = max(0.0, min(a3, gt[k, 3]) - max(a1, gt[k, 1]) + 1)
        inter = iw * ih
        union = area_a + (gt[k, 2] - gt[k, 0] + 1) * (gt[k, 3] - gt[k, 1] + 1) - inter
        iou = inter / union if union > 0 else 0.0
        best = max(best, iou)
    return best


@njit(Tuple((_F64, _F64))(_I32, _I32_2D, _I32_2D, int64, _F64_2D), cache=True, nogil=True)
def level_ious(level: np.ndarray, box: np.ndarray, v1_box: np.ndarray, top: int,
               gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best IoU with the ground truth ``gt`` (``(K >= 1, 4)`` float64 inclusive boxes) at each
    level below ``top``: of the largest contour's box (v1) and of any contour's box (v2),
    ``(256,)`` float64 each, -1 at levels ``>= top`` (no contour)."""
    v1 = np.full(NUM_LEVELS, -1.0)
    v2 = np.full(NUM_LEVELS, -1.0)
    for i in range(level.size):
        v2[level[i]] = max(v2[level[i]], _best_iou(box, i, gt))
    for lv in range(top):
        v1[lv] = _best_iou(v1_box, lv, gt)
    return v1, v2


@njit([Tuple((_F64_2D, _F64_2D, Array(boolean, 2, "C")))(Array(dtype, 3, "C"), _F64_2D, _I64, _BOOL, int64)
       for dtype in (float64, float32)], cache=True, nogil=True)
def batch_level_ious(maps: np.ndarray, gts: np.ndarray, gt_start: np.ndarray, used: np.ndarray,
                     refill_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`level_ious` of a batch, from the raw maps (one compiled call: no per-map overhead).

    Args:
        maps: ``(B, H, W)`` float64 or float32 maps, raw or normalized. gts: ``(sum K_i, 4)`` float64 boxes,
            those of map ``i`` at rows ``gt_start[i]:gt_start[i + 1]`` (maps without box skipped).
        used: ``(256,)`` bool levels. refill_max: see ``pending``.

    Returns:
        ``(v1 (B, 256), v2 (B, 256), pending (B, 256) bool)``: -1 at levels without contour or
        unused. Where a map has at most ``refill_max`` levels whose largest contour needs the
        hole-filled areas, those levels are ``pending`` (their v1 is to be redone by the caller,
        with OpenCV); beyond, the third sweep redoes them here.
    """
    nm, h, w = maps.shape
    v1 = np.full((nm, NUM_LEVELS), -1.0)
    v2 = np.full((nm, NUM_LEVELS), -1.0)
    pending = np.zeros((nm, NUM_LEVELS), np.bool_)
    for i in range(nm):
        if gt_start[i + 1] == gt_start[i]:
            continue
        gt = np.ascontiguousarray(gts[gt_start[i]:gt_start[i + 1]])
        u8 = normalized_uint8(maps[i])
        level, box, v1_box, refill, gamma = map_level_boxes(u8, used)
        if refill.sum() > refill_max:
            v1_box = filled_v1_boxes(gamma.reshape(h, w), refill, v1_box)
        else:
            pending[i] = refill
        r1, r2 = level_ious(level, box, v1_box, int(u8.max()), gt)
        for lv in range(NUM_LEVELS):
            if used[lv]:
                v1[i, lv] = r1[lv]
                v2[i, lv] = r2[lv]
    return v1, v2, pending
