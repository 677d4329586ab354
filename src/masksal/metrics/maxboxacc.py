"""MaxBoxAcc and MaxBoxAccV2 (Choe et al. 2020), with the pixel conventions of clovaai/wsolevaluation.

Per image the map is min-max normalized (a constant or NaN map becomes all zeros), converted to
uint8 by truncation (``uint8(m * 255)``) and, for every threshold ``t`` of the grid
``arange(0, 1, step)``, binarized as ``u8 > int(t * 255)`` (strictly). The boxes are the
bounding rectangles of the ``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)`` contours,
``(x, y, x + w, y + h)`` clipped to the image and then read as inclusive (one pixel larger than
the object unless clipped); no contour gives the box ``[0, 0, 0, 0]``, which is still scored.
v1 keeps the contour of largest polygon area (``cv2.contourArea``; first one on ties) and counts
a hit at IoU >= 0.5 with any ground-truth box; v2 keeps every contour (hole contours included)
and counts a hit when the best (box, ground truth) pair has IoU >= delta, for delta in
{0.3, 0.5, 0.7}, then averages over delta. The accuracy is taken at the ONE threshold per delta
that is best over the whole split (not per image): an oracle on the evaluated split. For a
threshold chosen without that leakage, compute :meth:`MaxBoxAccuracy.best_thresholds` on a
validation split and :meth:`MaxBoxAccuracy.compute_at` on the test split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import cv2
import numpy as np
import torch
from torch import Tensor

from masksal.metrics._levelboxes import compiled_level_ious, contour_boxes
from masksal.metrics.base import (
    Backend,
    Metric,
    NanPolicy,
    check_boxes,
    check_histogram_options,
    check_maps,
    minmax_normalize,
    zeros,
)
from masksal.metrics.boxes import box_iou, clip_boxes
from masksal.types import Batch

NUM_LEVELS = 256

BoxBackend = Backend


def _iou_key(delta: float) -> str:
    return f"iou{round(delta * 100):d}"


def threshold_levels(thresholds: np.ndarray) -> np.ndarray:
    """The uint8 level each threshold binarizes at: ``int(t * 255)``, as wsolevaluation computes it.

    Args:
        thresholds: float64 thresholds in [0, 1].

    Returns:
        int64 levels in [0, 255]; the foreground at threshold ``t`` is ``uint8_map > level``.
    """
    return (np.asarray(thresholds, dtype=np.float64) * 255.0).astype(np.int64)


def resize_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize maps bicubically with OpenCV (``cv2.INTER_CUBIC``), as wsolevaluation resizes CAMs.

    Args:
        maps: ``(B, h, w)`` float maps (e.g. low-resolution CAMs).
        size: ``(H, W)`` target size, usually the images'.

    Returns:
        ``(B, H, W)`` float64 maps on the input's device. Resizing to the same size is the identity.
    """
    arr = maps.detach().to("cpu", torch.float64).numpy()
    h, w = int(size[0]), int(size[1])
    out = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_CUBIC) for m in arr]) if len(arr) \
        else np.zeros((0, h, w))
    return torch.from_numpy(out).to(maps.device)


class MaxBoxAccuracy(Metric):
    """MaxBoxAcc (v1) and MaxBoxAccV2 over a split, numbers as clovaai/wsolevaluation's.

    Args:
        iou_thresholds: the IoU deltas of v2 (a hit is IoU >= delta); v1 is reported at 0.5
            when 0.5 is among them.
        threshold_step: spacing of the threshold grid ``arange(0, 1, step)`` (1.0 excluded).
        nan_maps: ``"raise"`` (default): a map with NaN raises ValueError; ``"zero"``: it is
            scored as an all-zero map (fallback box ``[0, 0, 0, 0]`` at every threshold), as the
            reference does. Infinite values always raise.
        backend: how the boxes of all levels are found, with identical results: ``"numba"``
            (compiled union-find sweeps; needs ``pip install 'masksal[fast]'``), ``"numpy"``
            (vectorized pass), or ``"auto"`` (default: numba when importable, see
            :data:`NUMBA_AVAILABLE`). The one in use is :attr:`backend` and shows in ``repr``.

    ``update(maps, batch)``: ``maps`` ``(B, H, W)`` float at the image resolution (resize CAMs
    first, e.g. with :func:`resize_maps`), ``batch.boxes`` one ``(K_i >= 1, 4)`` inclusive tensor
    per image (clipped to the image; a no-op for wsolevaluation's boxes, which lie inside it).

    ``compute()`` keys (in %, thresholds in [0, 1]): ``maxboxacc`` (v1) and
    ``maxboxacc_threshold``; ``maxboxacc_v2`` (mean over deltas), and per delta
    ``maxboxacc_v2_iou30``, ``maxboxacc_v2_threshold_iou30``, ...

    Example:
        >>> import torch
        >>> from masksal.types import Batch
        >>> m = torch.zeros(1, 16, 16); m[0, 4:10, 4:10] = 1
        >>> b = Batch(torch.rand(1, 3, 16, 16), torch.tensor([0]), [torch.tensor([[4., 4., 10., 10.]])])
        >>> acc = MaxBoxAccuracy(); acc.update(m, b); acc.compute()["maxboxacc"]
        100.0
    """

    name = "maxboxacc"

    def __init__(self, iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7), threshold_step: float = 0.001,
                 nan_maps: NanPolicy = "raise", backend: BoxBackend = "auto") -> None:
        if not iou_thresholds or any(not 0.0 < float(d) <= 1.0 for d in iou_thresholds):
            raise ValueError(f"iou_thresholds must be a non-empty list of values in (0, 1], got {iou_thresholds}")
        self.backend: Literal["numba", "numpy"] = check_histogram_options(threshold_step, nan_maps, backend)
        self.iou_thresholds = tuple(float(d) for d in iou_thresholds)
        self.threshold_step = float(threshold_step)
        self.nan_maps: NanPolicy = nan_maps
        self.thresholds = np.arange(0, 1, self.threshold_step)
        # The map is truncated to uint8 before thresholding, so the ~1000 thresholds collapse onto
        # at most 256 levels: the state counts hits per level, the grid reads them back.
        self.levels = threshold_levels(self.thresholds)
        self._used_levels = np.unique(self.levels)
        super().__init__()

    def _config(self) -> tuple[object, ...]:
        return (self.iou_thresholds, self.threshold_step, self.nan_maps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(images={self.num_images}, backend={self.backend!r})"

    def _empty_state(self) -> dict[str, np.ndarray]:
        nd = len(self.iou_thresholds)
        return {"count": zeros(), "hits_v1": np.zeros((nd, NUM_LEVELS)), "hits_v2": np.zeros((nd, NUM_LEVELS))}

    def update(self, maps: Tensor, batch: Batch) -> None:
        """Accumulate a batch (see the class docstring for shapes)."""
        # The compiled path reads float32 maps as they are, widening each value to float64 exactly
        # (no float64 copy of the batch), and normalizes each map itself (the same bits).
        arr = check_maps(maps, batch, nan=self.nan_maps, metric=self.name, keep_float32=self.backend == "numba")
        if self.backend == "numpy":
            arr = minmax_normalize(arr)
        gts = check_boxes(batch, self.name)
        deltas = np.asarray(self.iou_thresholds)[:, None]
        used = self._used_levels
        # Small maps go through the NumPy pass a few at a time (stacked, sharing the per-call
        # work); larger stacks cost more in per-level work than they save.
        chunk = max(1, min(5, (1 << 16) // max(1, arr.shape[1] * arr.shape[2]))) if self.backend == "numpy" \
            else max(1, len(arr))
        for s in range(0, len(arr), chunk):
            best_v1, best_v2 = self._best_iou_per_level_batch(arr[s:s + chunk], gts[s:s + chunk])
            self._state["hits_v1"][:, used] += ((best_v1[:, None, used] >= deltas[None]).sum(axis=0))
            self._state["hits_v2"][:, used] += ((best_v2[:, None, used] >= deltas[None]).sum(axis=0))
        self._state["count"] += arr.shape[0]

    def _best_iou_per_level(self, m: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best IoU at each uint8 level for the largest contour (v1) and over all contours (v2).

        Args:
            m: ``(H, W)`` float64 map in [0, 1] (normalized). gt: ``(K, 4)`` inclusive boxes.

        Returns:
            two ``(256,)`` float64 arrays (entries for levels the grid never uses are 0).
        """
        v1, v2 = self._best_iou_per_level_batch(m[None], [gt])
        return v1[0], v2[0]

    def _best_iou_per_level_batch(self, maps: np.ndarray, gts: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_best_iou_per_level` for ``(B, H, W)`` maps, ``(B, 256)`` arrays each (with the
        numba backend, the maps may also be raw: each is min-max normalized on the way).

        All levels of all maps in one pass (:func:`masksal.metrics._levelboxes.contour_boxes` or,
        with numba, :func:`~masksal.metrics._levelboxes.compiled_level_ious`); the same numbers
        as one ``cv2.findContours`` per level (:func:`_best_iou_per_level_opencv`).
        """
        nm, h, w = maps.shape
        used = self._used_levels
        v1, v2 = np.zeros((nm, NUM_LEVELS)), np.zeros((nm, NUM_LEVELS))
        if nm == 0:
            return v1, v2
        # All maps' boxes clipped at once, then split by map (boxes off the image dropped).
        gt_c, inside = clip_boxes(np.concatenate([np.asarray(g, dtype=np.float64).reshape(-1, 4) for g in gts]), h, w)
        owner = np.repeat(np.arange(nm), [len(np.asarray(g).reshape(-1, 4)) for g in gts])[inside]
        gt_c = gt_c[inside]
        clipped = np.split(gt_c, np.cumsum(np.bincount(owner, minlength=nm))[:-1])
        # Levels without foreground (at or above the map's largest uint8 value) have no
        # contour: the reference scores the fallback box [0, 0, 0, 0] (IoU 0 without a box).
        fallback = np.zeros(nm)
        np.maximum.at(fallback, owner, box_iou(np.zeros((1, 4)), gt_c)[0])
        v1[:, used] = v2[:, used] = fallback[:, None]
        if self.backend == "numba":  # boxes and IoUs compiled, the whole batch in one call
            use = np.zeros(NUM_LEVELS, dtype=bool)
            use[used] = True
            r1, r2 = compiled_level_ious(maps, clipped, use)
            has = r1 >= 0  # used levels with a contour, of maps with a box
            v1[has], v2[has] = r1[has], r2[has]
            return v1, v2
        top = int(np.uint8(maps.max() * 255)) if maps.size else 0
        levels = used[used < top]
        if len(levels) == 0:
            return v1, v2
        boxes = contour_boxes(maps, levels)
        bounds = np.searchsorted(boxes.v2_map, np.arange(nm + 1))
        for i, gt_c in enumerate(clipped):
            if len(gt_c) == 0:  # nothing to hit: every IoU is 0, as the fallback's
                continue
            lo, hi = bounds[i], bounds[i + 1]
            if hi > lo:
                best = box_iou(boxes.v2_box[lo:hi], gt_c).max(axis=1)
                lv = boxes.v2_level[lo:hi]
                first = np.flatnonzero(np.append(True, lv[1:] != lv[:-1]))
                v2[i, levels[lv[first]]] = np.maximum.reduceat(best, first)
            fg = boxes.has_fg[i]
            v1[i, levels[fg]] = box_iou(boxes.v1_box[i, fg], gt_c).max(axis=1)
        return v1, v2

    def _accuracy(self, version: int) -> np.ndarray:
        """``(n_deltas, n_thresholds)`` accuracy in % over the grid."""
        hits = self._state["hits_v1" if version == 1 else "hits_v2"]
        n = float(self._state["count"][0])
        if n == 0:
            return np.full((len(self.iou_thresholds), len(self.thresholds)), np.nan)
        return 100.0 * hits[:, self.levels] / n

    def accuracy_curve(self, version: int = 2, iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """Box accuracy (%) at every threshold of the grid, for plots.

        Returns:
            ``(thresholds (T,), accuracy (T,))`` float64.
        """
        return self.thresholds.copy(), self._accuracy(version)[self._delta_index(iou_threshold)]

    def _delta_index(self, delta: float) -> int:
        for i, d in enumerate(self.iou_thresholds):
            if abs(d - delta) < 1e-9:
                return i
        raise ValueError(f"IoU threshold {delta} is not among {self.iou_thresholds}")

    def compute(self) -> dict[str, float]:
        """Best-over-thresholds accuracies (oracle on this split) and the thresholds reaching them."""
        out: dict[str, float] = {}
        acc1, acc2 = self._accuracy(1), self._accuracy(2)
        empty = self.num_images == 0
        if 0.5 in self.iou_thresholds:
            i = self._delta_index(0.5)
            out["maxboxacc"] = float(acc1[i].max())
            out["maxboxacc_threshold"] = float("nan") if empty else float(self.thresholds[acc1[i].argmax()])
        out["maxboxacc_v2"] = float(acc2.max(axis=1).mean())
        for i, d in enumerate(self.iou_thresholds):
            out[f"maxboxacc_v2_{_iou_key(d)}"] = float(acc2[i].max())
        for i, d in enumerate(self.iou_thresholds):
            out[f"maxboxacc_v2_threshold_{_iou_key(d)}"] = (
                float("nan") if empty else float(self.thresholds[acc2[i].argmax()]))
        return out

    def best_thresholds(self) -> dict[str, float]:
        """The best grid threshold per version and delta: ``{"v1_iou50": t, "v2_iou30": t, ...}``.

        The first (smallest) threshold reaching the maximum is taken. Pass the result to
        another accumulator's :meth:`compute_at` to evaluate without threshold leakage.

        Raises:
            ValueError: nothing accumulated.
        """
        if self.num_images == 0:
            raise ValueError("best_thresholds: no image accumulated")
        out = {}
        for version in (1, 2):
            acc = self._accuracy(version)
            for i, d in enumerate(self.iou_thresholds):
                out[f"v{version}_{_iou_key(d)}"] = float(self.thresholds[acc[i].argmax()])
        return out

    def compute_at(self, thresholds: float | Mapping[str, float]) -> dict[str, float]:
        """Box accuracy at given thresholds (e.g. chosen on a validation split).

        Args:
            thresholds: one threshold in [0, 1] for everything, or a mapping as returned by
                :meth:`best_thresholds` (``"v1_iou50"``, ``"v2_iou30"``, ...).

        Returns:
            ``boxacc`` (v1 at IoU 0.5), ``boxacc_v2`` (mean over deltas) and
            ``boxacc_v2_iou30``, ... in %.
        """
        def level(key: str) -> int:
            t = float(thresholds) if not isinstance(thresholds, Mapping) else float(thresholds[key])
            if not 0.0 <= t <= 1.0:
                raise ValueError(f"compute_at: threshold {t} for {key} is outside [0, 1]")
            return int(threshold_levels(np.array([t]))[0])

        n = float(self._state["count"][0])
        out: dict[str, float] = {}
        if 0.5 in self.iou_thresholds:
            i = self._delta_index(0.5)
            out["boxacc"] = 100.0 * float(self._state["hits_v1"][i, level("v1_iou50")]) / n if n else float("nan")
        per = []
        for i, d in enumerate(self.iou_thresholds):
            key = f"v2_{_iou_key(d)}"
            acc = 100.0 * float(self._state["hits_v2"][i, level(key)]) / n if n else float("nan")
            out[f"boxacc_v2_{_iou_key(d)}"] = acc
            per.append(acc)
        out["boxacc_v2"] = float(np.mean(per))
        return out


def _best_iou_per_level_opencv(m: np.ndarray, gt: np.ndarray, used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The per-level OpenCV procedure: one ``cv2.findContours`` per distinct level of the map.

    Kept as the reference the one-pass :meth:`MaxBoxAccuracy._best_iou_per_level` is tested and
    benchmarked against (it returns the same arrays). ``used``: the levels the grid reads.
    """
    h, w = m.shape
    gt_c, inside = clip_boxes(gt, h, w)
    gt_c = gt_c[inside]
    u8 = (m * 255).astype(np.uint8)
    values = np.unique(u8)
    # {u8 > L} only changes when L crosses a value present in the map: segment j >= 1 covers
    # levels values[j-1] <= L < values[j] (foreground u8 > values[j-1]); segment 0 is
    # L < values[0] (every pixel), segment len(values) is L >= max (empty).
    seg_of_level = np.searchsorted(values, np.arange(NUM_LEVELS), side="right")
    segs = np.unique(seg_of_level[used])
    contours: list[np.ndarray] = []
    n_per_seg = np.zeros(len(segs), dtype=np.int64)
    for s, j in enumerate(segs):
        if j == len(values):
            continue  # empty foreground: no contour
        fg = u8 > values[j - 1] if j > 0 else np.ones_like(u8, dtype=bool)
        found = cv2.findContours(fg.view(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
        contours.extend(found)
        n_per_seg[s] = len(found)
    # A level without contour scores the reference's fallback box [0, 0, 0, 0].
    fallback = float(box_iou(np.zeros((1, 4)), gt_c).max()) if len(gt_c) else 0.0
    v1_seg, v2_seg = np.full(len(segs), fallback), np.full(len(segs), fallback)
    if contours:
        boxes, area2 = _contour_geometry(contours, h, w)
        best = box_iou(boxes, gt_c).max(axis=1) if len(gt_c) else np.zeros(len(boxes))
        has = n_per_seg > 0
        starts = np.zeros(int(has.sum()), dtype=np.int64)
        starts[1:] = np.cumsum(n_per_seg[has])[:-1]
        v2_seg[has] = np.maximum.reduceat(best, starts)
        # v1: the first contour of largest area within each level (max(..., key=contourArea)).
        seg_id = np.repeat(np.arange(len(starts)), n_per_seg[has])
        tops = np.flatnonzero(area2 == np.maximum.reduceat(area2, starts)[seg_id])
        _, first = np.unique(seg_id[tops], return_index=True)
        v1_seg[has] = best[tops[first]]
    pos = np.clip(np.searchsorted(segs, seg_of_level), 0, len(segs) - 1)
    v1, v2 = np.zeros(NUM_LEVELS), np.zeros(NUM_LEVELS)
    v1[used] = v1_seg[pos[used]]
    v2[used] = v2_seg[pos[used]]
    return v1, v2


def _contour_geometry(contours: list[np.ndarray], h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and twice the polygon areas of cv2 contours, vectorized over the contours.

    Args:
        contours: ``cv2.findContours`` output, arrays ``(n_i, 1, 2)`` of int32 ``(x, y)`` points.
        h, w: image size.

    Returns:
        ``(boxes (N, 4) int64, area2 (N,) int64)``: ``(x, y, x + w, y + h)`` of each contour's
        bounding rectangle clipped to the image, and ``2 * cv2.contourArea``.
    """
    lens = np.fromiter((len(c) for c in contours), dtype=np.int64, count=len(contours))
    pts = np.concatenate(contours).reshape(-1, 2).astype(np.int64)
    starts = np.zeros(len(lens), dtype=np.int64)
    starts[1:] = np.cumsum(lens)[:-1]
    # boundingRect of a point set is (min, min, max - min + 1, max - min + 1).
    lo = np.minimum.reduceat(pts, starts, axis=0)
    hi = np.maximum.reduceat(pts, starts, axis=0)
    boxes = np.stack([lo[:, 0], lo[:, 1], np.minimum(hi[:, 0] + 1, w - 1), np.minimum(hi[:, 1] + 1, h - 1)], 1)
    # The shoelace sum cv2.contourArea evaluates, exact in integers, so ties (resolved to the first
    # contour) match max(contours, key=cv2.contourArea).
    nxt = np.arange(1, len(pts) + 1)
    nxt[starts + lens - 1] = starts
    x, y = pts[:, 0], pts[:, 1]
    area2 = np.abs(np.add.reduceat(x * y[nxt] - x[nxt] * y, starts))
    return boxes, area2
