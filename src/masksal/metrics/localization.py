"""LE, OM and F1: the weakly-supervised localization metrics of Phang et al. (2020).

GT-known localization (the box alone): LE is its error, ``GT-known Loc = 100 - LE``.
Top-1 localization (box and class): OM is its error, ``Top-1 Loc = 100 - OM``.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from masksal.metrics.base import Metric, check_boxes, check_maps, zeros
from masksal.metrics.boxes import (
    BinarizeRule,
    Geometry,
    MapNormalization,
    binarize,
    box_iou,
    box_pixel_slices,
    check_binarize_rule,
    clip_boxes,
    largest_component_boxes,
    normalize_for_masks,
)
from masksal.types import Batch


class LocalizationError(Metric):
    r"""Localization error (LE), official metric (OM) and mask F1, accumulated over a split.

    Per image: the map is binarized (``binarize``), the largest 4-connected component kept, and
    its tight box is the predicted box (an empty binarization gives no box, which localizes
    nothing). The image is *localized* when the box has IoU > ``iou_threshold`` (strictly) with
    at least one ground-truth box.

    .. math::
        LE = 100\,(1 - \tfrac{1}{N}\textstyle\sum_i loc_i), \quad
        OM = 100\,(1 - \tfrac{1}{N}\textstyle\sum_i loc_i \cdot [\hat y_i = y_i])

    F1 uses the continuous map ``m`` against each ground-truth box region ``G``:
    ``P = sum(m G) / sum(m)``, ``R = sum(m G) / |G|``, ``F1 = 2PR / (P + R)``; per image the
    best box, then the mean over images (in %).

    Args:
        binarize: ``"mean"`` (``m > mean(m)``, the paper), ``"casm"`` (CASM: about the top
            ``N * mean(m)`` pixels) or a fixed fraction ``f`` in (0, 1] (the ``ceil(f N)``
            largest pixels). See :func:`masksal.metrics.boxes.binarize`.
        geometry: ``"inclusive"`` (default: inclusive boxes, ground truth clipped to the image)
            or ``"si"``, reproducing the scorer of zphang/saliency_investigation: predicted boxes
            lose their last row and column, ground-truth coordinates are truncated to integers
            and their ``x1, y1`` used as exclusive ends, IoU and recall use the unclipped
            ground-truth area, and ``1e-6`` guards the divisions. Use it only to compare with
            numbers produced by that code.
        normalize: how the continuous map is brought to [0, 1] for F1 and CASM's rule:
            ``"auto"`` (maps already in [0, 1] kept, others min-max normalized), ``"minmax"``
            or ``"none"``. The mean and fixed-fraction rules do not depend on it.
        iou_threshold: a box localizes when IoU > this (strictly), 0.5 in the literature.

    ``update(maps, batch, predictions=None)``: ``maps`` ``(B, H, W)`` float (finite; NaN or inf
    raises ValueError), ``batch.boxes`` one ``(K_i >= 1, 4)`` inclusive tensor per image,
    ``predictions`` ``(B,)`` int64 top-1 classes of the classifier (needed for OM).

    ``compute()`` keys: ``le``, ``gt_known_loc``, ``f1`` and, when every update had
    predictions, ``om``, ``top1_loc`` (all in %), plus ``mask_mean`` (mean map value after
    normalization) and ``mask_area`` (mean binarized fraction), in [0, 1].

    Example:
        >>> import torch
        >>> from masksal.types import Batch
        >>> m = torch.zeros(1, 8, 8); m[0, 2:6, 2:6] = 1
        >>> b = Batch(torch.rand(1, 3, 8, 8), torch.tensor([0]), [torch.tensor([[2., 2., 5., 5.]])])
        >>> le = LocalizationError(); le.update(m, b, predictions=torch.tensor([0]))
        >>> le.compute()["le"], le.compute()["om"]
        (0.0, 0.0)
    """

    name = "le_om_f1"

    takes_predictions = True  # evaluate passes the classifier's top-1 class (for OM / Top-1 Loc)

    def __init__(
        self,
        binarize: BinarizeRule = "mean",
        geometry: Geometry = "inclusive",
        normalize: MapNormalization = "auto",
        iou_threshold: float = 0.5,
    ) -> None:
        if geometry not in ("inclusive", "si"):
            raise ValueError(f"geometry must be 'inclusive' or 'si', got {geometry!r}")
        if normalize not in ("auto", "minmax", "none"):
            raise ValueError(f"normalize must be 'auto', 'minmax' or 'none', got {normalize!r}")
        self.binarize = check_binarize_rule(binarize)
        self.geometry: Geometry = geometry
        self.normalize: MapNormalization = normalize
        self.iou_threshold = float(iou_threshold)
        super().__init__()

    def _config(self) -> tuple[object, ...]:
        return (self.binarize, self.geometry, self.normalize, self.iou_threshold)

    def _empty_state(self) -> dict[str, np.ndarray]:
        return {k: zeros() for k in ("count", "localized", "with_predictions", "top1_localized", "f1_sum",
                                     "mask_mean_sum", "mask_area_sum")}

    def predicted_boxes(self, maps: Tensor, batch: Batch) -> np.ndarray:
        """The predicted inclusive boxes ``(B, 4)`` int64 (``-1`` rows: empty binarization)."""
        arr = normalize_for_masks(check_maps(maps, batch, metric=self.name), self.normalize)
        return largest_component_boxes(binarize(arr, self.binarize))

    def update(self, maps: Tensor, batch: Batch, predictions: Tensor | None = None) -> None:
        """Accumulate a batch (see the class docstring for shapes)."""
        arr = normalize_for_masks(check_maps(maps, batch, metric=self.name), self.normalize)
        gts = check_boxes(batch, self.name)
        correct = None
        if predictions is not None:
            pred = predictions.detach().cpu().reshape(-1)
            if pred.numel() != len(batch):
                raise ValueError(f"{self.name}: {pred.numel()} predictions for {len(batch)} images")
            correct = (pred == batch.labels.detach().cpu().reshape(-1)).numpy()
        binary = binarize(arr, self.binarize)
        boxes = largest_component_boxes(binary)
        h, w = arr.shape[1:]
        s = self._state
        for i in range(arr.shape[0]):
            score = _score_inclusive if self.geometry == "inclusive" else _score_si
            hit, f1 = score(arr[i], boxes[i], gts[i], h, w, self.iou_threshold)
            s["localized"] += float(hit)
            s["f1_sum"] += f1
            if correct is not None:
                s["top1_localized"] += float(hit and bool(correct[i]))
        n = arr.shape[0]
        s["count"] += n
        if correct is not None:
            s["with_predictions"] += n
        s["mask_mean_sum"] += float(arr.mean(axis=(1, 2)).sum())
        s["mask_area_sum"] += float(binary.mean(axis=(1, 2)).sum())

    def compute(self) -> dict[str, float]:
        """LE, GT-known Loc, F1 (and OM, Top-1 Loc with predictions) in %; NaN before any update."""
        s = self._state
        n = float(s["count"][0])
        if n == 0:
            return {"le": float("nan"), "gt_known_loc": float("nan"), "f1": float("nan")}
        loc = 100.0 * float(s["localized"][0]) / n
        out = {"le": 100.0 - loc, "gt_known_loc": loc, "f1": 100.0 * float(s["f1_sum"][0]) / n}
        with_pred = float(s["with_predictions"][0])
        if with_pred == n:
            top1_loc = 100.0 * float(s["top1_localized"][0]) / n
            out.update(om=100.0 - top1_loc, top1_loc=top1_loc)
        elif with_pred > 0:
            raise ValueError(f"{self.name}: predictions were given for {int(with_pred)} of {int(n)} images; "
                             "OM needs them for all or none")
        out.update(mask_mean=float(s["mask_mean_sum"][0]) / n, mask_area=float(s["mask_area_sum"][0]) / n)
        return out


def _f1(inside: float, mask_sum: float, gt_area: float) -> float:
    p = inside / mask_sum if mask_sum > 0 else 0.0
    r = inside / gt_area if gt_area > 0 else 0.0
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _score_inclusive(m: np.ndarray, box: np.ndarray, gts: np.ndarray, h: int, w: int,
                     iou_threshold: float) -> tuple[bool, float]:
    """(localized, best F1) with inclusive geometry; ground truth clipped to the image."""
    clipped, inside = clip_boxes(gts, h, w)
    hit = False
    if box[0] >= 0:
        ious = box_iou(box[None], clipped)[0]
        hit = bool((ious[inside] > iou_threshold).any())
    mask_sum = float(m.sum())
    best = 0.0
    for g, ok in zip(clipped, inside, strict=True):
        if not ok:
            continue
        ys, xs = box_pixel_slices(g, h, w)
        area = (ys.stop - ys.start) * (xs.stop - xs.start)
        best = max(best, _f1(float(m[ys, xs].sum()), mask_sum, float(area)))
    return hit, best


def _score_si(m: np.ndarray, box: np.ndarray, gts: np.ndarray, h: int, w: int,
              iou_threshold: float) -> tuple[bool, float]:
    """(localized, best F1) as zphang/saliency_investigation's scorer computes them.

    Its predicted box region is ``[x0, x1) x [y0, y1)`` with the inclusive last index used as an
    exclusive end; ground truth is ``int()``-truncated, ``x1, y1`` exclusive, clamped for the
    region but not for its area; F1 and IoU carry its ``1e-6`` terms. An empty binarization (where
    SI reads an uninitialized buffer) is taken as an empty box.
    """
    best_f1, hit = 0.0, False
    mask_sum = float(m.sum())
    px0, py0, px1, py1 = (int(v) for v in box)
    rect_area = (px1 - px0) * (py1 - py0)
    for g in np.trunc(gts).astype(np.int64):
        gx0, gy0, gx1, gy1 = (int(v) for v in g)
        gt_area = (gx1 - gx0) * (gy1 - gy0)
        if gt_area == 0:
            continue  # SI scores such a box 0 for F1 and IoU
        cx0, cx1 = min(max(gx0, 0), w), min(max(gx1, 0), w)
        cy0, cy1 = min(max(gy0, 0), h), min(max(gy1, 0), h)
        inside = float(m[cy0:cy1, cx0:cx1].sum())
        p = inside / (mask_sum + 1e-6)
        r = inside / gt_area
        best_f1 = max(best_f1, 2 * p * r / (p + r + 1e-6))
        if box[0] >= 0:
            inter = max(0, min(px1, cx1) - max(px0, cx0)) * max(0, min(py1, cy1) - max(py0, cy0))
            denom = rect_area + gt_area - inter
            iou = inter / denom if denom != 0 else 0.0
            hit = hit or iou > iou_threshold
    return hit, best_f1
