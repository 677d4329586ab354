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
* :class:`ClassSensitivity`: localization of the requested object on images of several objects.
* :class:`ClassificationAccuracy`: the classifier's top-1 accuracy.

:func:`bootstrap` gives confidence intervals over images of any of them (accumulators updated with
``keep_per_image = True``), :func:`bootstrap_runs` over images and training seeds.

Definitions, conventions and where the literature differs: docs/metrics.md.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

# name -> module; imported on first use so that `import masksal.metrics.base` (what the training
# loop needs) does not pull in SciPy and OpenCV.
_LAZY = {
    "Accumulator": "base", "Metric": "base", "binarize": "boxes", "box_iou": "boxes",
    "largest_component_boxes": "boxes", "ClassificationAccuracy": "classification",
    "ClassSensitivity": "class_sensitivity",
    "DeletionInsertion": "faithfulness", "LocalizationError": "localization", "MaxBoxAccuracy": "maxboxacc",
    "resize_maps": "maxboxacc", "PointingGame": "pointing_game", "PixelAveragePrecision": "pxap",
    "RemoveAndDebias": "road", "blur_maps": "road", "noisy_linear_imputation": "road",
    "SaliencyMetric": "saliency_metric", "bootstrap": "resampling", "bootstrap_runs": "resampling",
    "separated_best": "resampling",
}
__all__ = [
    "Accumulator",
    "ClassSensitivity",
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
    "bootstrap",
    "bootstrap_runs",
    "box_iou",
    "largest_component_boxes",
    "noisy_linear_imputation",
    "resize_maps",
    "separated_best",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f"masksal.metrics.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'masksal.metrics' has no attribute {name!r}")


if TYPE_CHECKING:
    from masksal.metrics.base import Accumulator, Metric
    from masksal.metrics.boxes import binarize, box_iou, largest_component_boxes
    from masksal.metrics.class_sensitivity import ClassSensitivity
    from masksal.metrics.classification import ClassificationAccuracy
    from masksal.metrics.faithfulness import DeletionInsertion
    from masksal.metrics.localization import LocalizationError
    from masksal.metrics.maxboxacc import MaxBoxAccuracy, resize_maps
    from masksal.metrics.pointing_game import PointingGame
    from masksal.metrics.pxap import PixelAveragePrecision
    from masksal.metrics.resampling import bootstrap, bootstrap_runs, separated_best
    from masksal.metrics.road import RemoveAndDebias, blur_maps, noisy_linear_imputation
    from masksal.metrics.saliency_metric import SaliencyMetric
