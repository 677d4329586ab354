"""Saliency-map metrics, all streaming accumulators: ``update`` / ``compute`` / ``reset`` /
``merge`` / ``all_reduce``.

* :class:`LocalizationError`: LE, OM, F1 (Phang et al. 2020); GT-known and Top-1 localization.
* :class:`MaxBoxAccuracy`: MaxBoxAcc and MaxBoxAccV2 (Choe et al. 2020, wsolevaluation).
* :class:`PixelAveragePrecision`: PxAP (same source).
* :class:`SaliencyMetric`: SM (Dabkowski & Gal 2017).
* :class:`DeletionInsertion`: deletion and insertion AUC (Petsiuk et al. 2018).
* :class:`RemoveAndDebias`: ROAD, MoRF / LeRF with noisy linear imputation (Rong et al. 2022),
  with the blurred-map control (Song et al.).
* :class:`PointingGame`: the pointing game (Zhang et al. 2016).
* :class:`ClassificationAccuracy`: the classifier's top-1 accuracy.

Definitions, conventions and where the literature differs: docs/metrics.md.
"""

from masksal.metrics.base import Accumulator, Metric
from masksal.metrics.boxes import binarize, box_iou, largest_component_boxes
from masksal.metrics.classification import ClassificationAccuracy
from masksal.metrics.faithfulness import DeletionInsertion
from masksal.metrics.localization import LocalizationError
from masksal.metrics.maxboxacc import MaxBoxAccuracy, resize_maps
from masksal.metrics.pointing_game import PointingGame
from masksal.metrics.pxap import PixelAveragePrecision
from masksal.metrics.road import RemoveAndDebias, blur_maps, noisy_linear_imputation
from masksal.metrics.saliency_metric import SaliencyMetric

__all__ = [
    "Accumulator",
    "ClassificationAccuracy",
    "DeletionInsertion",
    "LocalizationError",
    "MaxBoxAccuracy",
    "Metric",
    "PixelAveragePrecision",
    "PointingGame",
    "RemoveAndDebias",
    "SaliencyMetric",
    "binarize",
    "blur_maps",
    "box_iou",
    "largest_component_boxes",
    "noisy_linear_imputation",
    "resize_maps",
]
