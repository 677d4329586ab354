"""Class sensitivity: does a map show the object of the class it was asked about, on images that
hold objects of several classes (the benchmark's two-object split, ``benchmark:pairs``)?

A class-agnostic method gives one map per image whatever class is requested, so on images of two
objects it can localize at most one of the two requests: about 50 % by construction.
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from masksal.metrics.base import Metric, check_maps, zeros
from masksal.metrics.boxes import (
    BinarizeRule,
    MapNormalization,
    binarize,
    box_iou,
    check_binarize_rule,
    clip_boxes,
    largest_component_boxes,
    normalize_for_masks,
)
from masksal.metrics.pointing_game import DEFAULT_TOLERANCE, PointingGame
from masksal.types import Batch

_KEYS = ("count", "skipped", "localized", "other_localized", "pointing", "pointing_other", "mass", "mass_other")


class ClassSensitivity(Metric):
    r"""Localization of the *requested* object on images of several objects, against the others.

    For each (image, requested class ``y = batch.labels[i]``) the requested object is the one of
    ``batch.object_labels[i]`` equal to ``y``; the other objects are the rest. From the map:

    * the predicted box, as LE makes it (``binarize``, largest 4-connected component, its tight
      box): the request is *localized* when the box has IoU > ``iou_threshold`` with the
      requested object's box **and** IoU <= ``iou_threshold`` with every other object's box;
      ``class_other_loc`` counts the requests whose box matches another object instead;
    * the pointing game on the requested object's pixel mask (the map's maximum on the object,
      within ``tolerance`` as :class:`~masksal.metrics.PointingGame`), and the same on the other
      objects' masks (``class_pointing_other``);
    * the map's mass on each: ``sum(m * M) / sum(m)`` for the requested object's mask ``M`` and
      for the union of the others' (``m`` the map brought to [0, 1] by ``normalize``; a map
      without mass puts none anywhere).

    .. math::
        \text{class\_loc} = \tfrac{100}{N}\textstyle\sum_i [IoU(\hat b_i, b_i^{req}) > t]
        \,[\max_o IoU(\hat b_i, b_i^{o}) \le t]

    Args:
        binarize: the box rule of :class:`~masksal.metrics.LocalizationError` (``"mean"``).
        normalize: ``"auto"`` (maps in [0, 1] kept, others min-max normalized), ``"minmax"`` or
            ``"none"``; for the mass terms and CASM's rule.
        iou_threshold: IoU strictly above this localizes (0.5).
        tolerance, tolerance_px: the pointing game's tolerance (TorchRay's 15 px at 224 px).

    ``update(maps, batch)``: ``maps`` ``(B, H, W)`` float, finite; ``batch.object_labels``,
    ``object_boxes`` and ``object_masks`` (:class:`~masksal.types.Batch`) list each image's
    objects; an image without them is skipped and counted (``class_skipped``).

    ``compute()`` keys, in %: ``class_loc``, ``class_other_loc``, ``class_pointing``,
    ``class_pointing_other``, ``class_mass``, ``class_mass_other`` (NaN before any scored
    request), and ``class_requests`` (scored) and ``class_skipped`` (counts).

    Raises:
        ValueError: the requested class is none of the image's objects, or inputs of the wrong
            shape.

    Example:
        >>> import torch
        >>> from masksal.types import Batch
        >>> m = torch.zeros(1, 8, 8); m[0, 0:3, 0:3] = 1            # on the requested object
        >>> masks = torch.zeros(2, 8, 8, dtype=torch.uint8); masks[0, 0:3, 0:3] = 1; masks[1, 5:8, 5:8] = 1
        >>> b = Batch(torch.rand(1, 3, 8, 8), torch.tensor([4]), [torch.tensor([[0., 0., 2., 2.]])],
        ...           object_labels=[torch.tensor([4, 9])], object_masks=[masks],
        ...           object_boxes=[torch.tensor([[0., 0., 2., 2.], [5., 5., 7., 7.]])])
        >>> cs = ClassSensitivity(tolerance=0.0); cs.update(m, b); cs.compute()["class_loc"]
        100.0
    """

    name = "class_sensitivity"

    def __init__(self, binarize: BinarizeRule = "mean", normalize: MapNormalization = "auto",
                 iou_threshold: float = 0.5, tolerance: float = DEFAULT_TOLERANCE,
                 tolerance_px: float | None = None) -> None:
        if normalize not in ("auto", "minmax", "none"):
            raise ValueError(f"{self.name}: normalize must be 'auto', 'minmax' or 'none', got {normalize!r}")
        if not (math.isfinite(iou_threshold) and 0.0 <= iou_threshold < 1.0):
            raise ValueError(f"{self.name}: iou_threshold must be in [0, 1), got {iou_threshold}")
        self.binarize = check_binarize_rule(binarize)
        self.normalize: MapNormalization = normalize
        self.iou_threshold = float(iou_threshold)
        self._pointing = PointingGame(tolerance=tolerance, tolerance_px=tolerance_px, region="mask")
        super().__init__()

    def _config(self) -> tuple[object, ...]:
        return (self.binarize, self.normalize, self.iou_threshold, self._pointing._config())

    def _empty_state(self) -> dict[str, np.ndarray]:
        return {k: zeros() for k in _KEYS}

    def update(self, maps: Tensor, batch: Batch) -> None:
        """Accumulate a batch (see the class docstring for shapes)."""
        arr = check_maps(maps, batch, metric=self.name)
        s = self._state
        s["count"] += arr.shape[0]
        if batch.object_labels is None or batch.object_boxes is None or batch.object_masks is None:
            s["skipped"] += arr.shape[0]
            return
        unit = normalize_for_masks(arr, self.normalize)
        boxes = largest_component_boxes(binarize(unit, self.binarize))
        h, w = arr.shape[1:]
        requested = np.zeros(arr.shape, dtype=np.uint8)
        others = np.zeros(arr.shape, dtype=np.uint8)
        for i in range(arr.shape[0]):
            req, rest = self._split(batch, i)
            obj_boxes = batch.object_boxes[i].detach().cpu().double().numpy().reshape(-1, 4)
            obj_masks = batch.object_masks[i].detach().cpu().numpy()
            if obj_masks.shape[-2:] != (h, w):
                raise ValueError(f"{self.name}: object masks of shape {obj_masks.shape} for images of {h} x {w}")
            requested[i] = obj_masks[req] == 1
            others[i] = (obj_masks[rest] == 1).any(axis=0) if rest.size else 0
            if boxes[i][0] >= 0:  # an empty binarization localizes nothing
                clipped, _ = clip_boxes(obj_boxes, h, w)
                ious = box_iou(boxes[i][None], clipped)[0]
                other_max = float(ious[rest].max()) if rest.size else 0.0
                s["localized"] += float(ious[req] > self.iou_threshold and other_max <= self.iou_threshold)
                s["other_localized"] += float(other_max > self.iou_threshold and ious[req] <= self.iou_threshold)
            total = float(unit[i].sum())
            if total > 0:
                s["mass"] += float((unit[i] * requested[i]).sum()) / total
                s["mass_other"] += float((unit[i] * others[i]).sum()) / total
        s["pointing"] += float(np.nansum(self._point(maps, batch, requested)))
        s["pointing_other"] += float(np.nansum(self._point(maps, batch, others)))

    def _split(self, batch: Batch, i: int) -> tuple[int, np.ndarray]:
        """Index of the requested object of image ``i`` and indices of the others."""
        assert batch.object_labels is not None
        labels = batch.object_labels[i].detach().cpu().numpy().reshape(-1)
        y = int(batch.labels[i])
        where = np.flatnonzero(labels == y)
        if where.size == 0:
            raise ValueError(f"{self.name}: image {batch.ids[i] if i < len(batch.ids) else i} is asked about class "
                             f"{y}, which is none of its objects' classes {labels.tolist()}")
        return int(where[0]), np.flatnonzero(labels != y)

    def _point(self, maps: Tensor, batch: Batch, region: np.ndarray) -> np.ndarray:
        """Pointing-game hit per image on ``region`` ``(B, H, W)`` (NaN where it is empty)."""
        import torch

        probe = Batch(images=batch.images, labels=batch.labels, boxes=batch.boxes,
                      masks=torch.from_numpy(region.astype(np.uint8)))
        return self._pointing.hits(maps, probe)

    @property
    def num_images(self) -> int:
        return int(self._state["count"][0] - self._state["skipped"][0])

    def compute(self) -> dict[str, float]:
        """The keys of the class docstring."""
        s = {k: float(v[0]) for k, v in self._state.items()}
        n = s["count"] - s["skipped"]
        out = {"class_requests": n, "class_skipped": s["skipped"]}
        for key, name in (("localized", "class_loc"), ("other_localized", "class_other_loc"),
                          ("pointing", "class_pointing"), ("pointing_other", "class_pointing_other"),
                          ("mass", "class_mass"), ("mass_other", "class_mass_other")):
            out[name] = 100.0 * s[key] / n if n > 0 else math.nan
        return out
