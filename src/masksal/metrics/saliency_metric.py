"""SM, the saliency metric of Dabkowski & Gal (2017), with the box rule of Phang et al. (2020)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torch import Tensor

from masksal.classifiers import Classifier
from masksal.classifiers import eval_mode as eval_mode  # re-exported for the metrics
from masksal.devices import module_device
from masksal.metrics.base import Metric, check_maps, zeros
from masksal.metrics.boxes import (
    BinarizeRule,
    Geometry,
    MapNormalization,
    binarize,
    check_binarize_rule,
    largest_component_boxes,
    normalize_for_masks,
)
from masksal.types import Batch


class SaliencyMetric(Metric):
    r"""SM: how small a box can be while the classifier still recognizes its crop. Lower is better.

    Per image the predicted box is found as for LE (binarize, largest 4-connected component,
    tight box); the box is cropped from the image, resized to the input size with bicubic
    interpolation (``cv2.INTER_CUBIC``, not clipped) and classified:

    .. math:: SM = \log(\max(a, 0.05)) - \log p(y \mid \text{crop})

    where ``a`` is the box area over the image area and ``y`` the true class. An empty
    binarization gives an empty box (``a = 0``, floored at 0.05) whose "crop" is a plain image of
    the classifier's mean colour (zero after normalization, as SI feeds zeros). ``log p`` is
    taken from ``log_softmax`` (finite even when ``p`` underflows).

    The classifier that scores the crops is the one given here, whatever produced the maps. The
    paper's scorer (zphang/saliency_investigation) always uses the *original* pretrained
    classifier, also for a masker trained with the classifier alongside (CA), whose own
    classifier has drifted: to reproduce it, pass the classifier the masker started from and
    ``geometry="si"``.

    Args:
        classifier: a :class:`~masksal.classifiers.Classifier` (images in [0, 1]) that scores the
            crops; used in eval mode, gradients off.
        binarize: the box rule, as for :class:`~masksal.metrics.LocalizationError`.
        geometry: ``"inclusive"`` (default: crop rows and columns ``y0..y1``, ``x0..x1``; area
            ``(x1 - x0 + 1)(y1 - y0 + 1)``) or ``"si"`` (the paper's scorer: binarization in
            float32, and its lossy box: the last row and column are dropped from the crop and
            the area, so a one-pixel-wide component has area 0 and is scored as an empty box).
        normalize: map normalization for the CASM rule (see LocalizationError).
        area_floor: the area fraction floor (0.05 in the literature).
        batch_size: crops per classifier forward.

    ``update(maps, batch)``: ``maps`` ``(B, H, W)`` float, ``batch.images`` ``(B, 3, H, W)`` in
    [0, 1], ``batch.labels`` ``(B,)``. ``compute()`` keys: ``sm``, ``sm_area_term`` (mean
    ``log max(a, floor)``), ``sm_log_prob`` (mean ``log p``), ``sm_crop_top1`` (% of crops
    classified correctly).
    """

    name = "sm"

    def __init__(self, classifier: Classifier, *, binarize: BinarizeRule = "mean", geometry: Geometry = "inclusive",
                 normalize: MapNormalization = "auto", area_floor: float = 0.05, batch_size: int = 64) -> None:
        if geometry not in ("inclusive", "si"):
            raise ValueError(f"geometry must be 'inclusive' or 'si' for SM, got {geometry!r}")
        if not 0.0 < area_floor <= 1.0:
            raise ValueError(f"area_floor must lie in (0, 1], got {area_floor}")
        self.classifier = classifier
        self.binarize = check_binarize_rule(binarize)
        self.geometry: Geometry = geometry
        self.normalize: MapNormalization = normalize
        self.area_floor = float(area_floor)
        self.batch_size = int(batch_size)
        super().__init__()

    def _config(self) -> tuple[object, ...]:
        return (self.binarize, self.geometry, self.normalize, self.area_floor)

    def _empty_state(self) -> dict[str, np.ndarray]:
        return {k: zeros() for k in ("count", "sm_sum", "area_term_sum", "log_prob_sum", "crop_correct")}

    def crops(self, maps: Tensor, batch: Batch) -> tuple[Tensor, np.ndarray]:
        """The resized crops ``(B, 3, H, W)`` float32 (CPU) and the box area fractions ``(B,)``."""
        arr = normalize_for_masks(check_maps(maps, batch, metric=self.name), self.normalize)
        boxes = largest_component_boxes(binarize(arr, self.binarize, float32=self.geometry == "si"))
        images = batch.images.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).numpy()
        b, h, w = arr.shape
        mean = self.classifier.mean.detach().to("cpu", torch.float32).reshape(3).numpy()
        out = np.empty((b, h, w, 3), dtype=np.float32)
        areas = np.zeros(b)
        for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
            if x0 >= 0 and self.geometry == "si":
                x1, y1 = x1 - 1, y1 - 1  # SI uses the inclusive last index as an exclusive end
            area = (x1 - x0 + 1) * (y1 - y0 + 1) if x0 >= 0 else 0
            if area > 0:
                crop = np.ascontiguousarray(images[i, y0:y1 + 1, x0:x1 + 1])
                out[i] = cv2.resize(crop, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, 3)
            else:
                out[i] = mean
            areas[i] = area / (h * w)
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), areas

    def update(self, maps: Tensor, batch: Batch) -> None:
        """Accumulate a batch (see the class docstring for shapes)."""
        crops, areas = self.crops(maps, batch)
        labels = batch.labels.detach().cpu().reshape(-1)
        device = module_device(self.classifier)
        log_probs, preds = [], []
        with torch.no_grad(), eval_mode(self.classifier):
            for s in range(0, len(crops), self.batch_size):
                logits = self.classifier(crops[s:s + self.batch_size].to(device)).float()
                lp = torch.log_softmax(logits, dim=1).cpu()
                log_probs.append(lp[torch.arange(len(lp)), labels[s:s + self.batch_size]])
                preds.append(lp.argmax(dim=1))
        log_p = torch.cat(log_probs).double().numpy()
        area_term = np.log(np.maximum(areas, self.area_floor))
        st = self._state
        st["sm_sum"] += float((area_term - log_p).sum())
        st["area_term_sum"] += float(area_term.sum())
        st["log_prob_sum"] += float(log_p.sum())
        st["crop_correct"] += float((torch.cat(preds) == labels).sum())
        st["count"] += len(crops)

    def compute(self) -> dict[str, float]:
        """Mean SM and its two terms; NaN before any update."""
        s = self._state
        n = float(s["count"][0])
        if n == 0:
            return {"sm": math.nan}
        return {"sm": float(s["sm_sum"][0]) / n, "sm_area_term": float(s["area_term_sum"][0]) / n,
                "sm_log_prob": float(s["log_prob_sum"][0]) / n,
                "sm_crop_top1": 100.0 * float(s["crop_correct"][0]) / n}
