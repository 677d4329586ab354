"""What the report pages say about each map: colour scaling, the box from the map and its IoU,
the classifier's prediction, and for which class a method's map is made."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from masksal.metrics.boxes import box_iou, clip_boxes
from masksal.types import Batch

Scaling = Literal["shared", "per-image"]
SCALINGS: tuple[str, ...] = ("shared", "per-image")

# One colour map for every map panel and overlay, so one colour bar explains them all: inferno
# is perceptually uniform and dark at zero, so a weak map darkens the image instead of tinting it.
CMAP = "inferno"
GT_COLOUR = (0, 255, 0)
MAP_BOX_COLOUR = (0, 200, 255)
GT_NAME, MAP_BOX_NAME = "green", "cyan"


def check_scaling(scaling: str) -> Scaling:
    """``"shared"`` or ``"per-image"`` (``"per_image"`` accepted); anything else is a ValueError."""
    s = scaling.replace("_", "-")
    if s not in SCALINGS:
        raise ValueError(f"scaling must be 'shared' or 'per-image', got {scaling!r}")
    return s  # type: ignore[return-value]


def map_ranges(maps: np.ndarray, scaling: Scaling, unit: bool = False) -> list[tuple[float, float] | None]:
    """The colour range of each of ``maps`` ``(N, H, W)``: ``None`` means the map's own min-max.

    ``"per-image"``: every map stretched from its minimum to its maximum (shows the shape of a map
    whatever its strength, so a nearly empty mask looks as strong as a full one). ``"shared"``:
    one range for all ``maps`` (they come from one method): ``(0, 1)`` when ``unit`` (a masker's
    mask, whose values mean something on their own), else the lowest and highest value over them.
    """
    if scaling == "per-image":
        return [None] * len(maps)
    if unit:
        return [(0.0, 1.0)] * len(maps)
    finite = maps[np.isfinite(maps)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return [(lo, hi)] * len(maps)


def gt_boxes(batch: Batch) -> list[np.ndarray]:
    """Each image's ground-truth boxes as ``(K, 4)`` float64 (``K = 0`` when it has none)."""
    return [b.detach().cpu().numpy().astype(np.float64).reshape(-1, 4) for b in batch.boxes]


def has_boxes(batch: Batch) -> bool:
    """True when every image of ``batch`` has at least one ground-truth box."""
    return len(batch) > 0 and all(int(b.shape[0]) > 0 for b in batch.boxes)


def boxes_from_maps(maps: np.ndarray, batch: Batch) -> np.ndarray:
    """The box each map gives under the LE metric's rule (mean threshold, largest component):
    ``(N, 4)`` int64 inclusive, ``-1`` rows where the binarization is empty."""
    from masksal.metrics.localization import LocalizationError

    return LocalizationError().predicted_boxes(torch.as_tensor(maps), batch)


def best_iou(box: np.ndarray, gts: np.ndarray, height: int, width: int) -> float:
    """IoU of ``box`` with the best-matching ground-truth box (clipped to the image, as LE does);
    0 for an empty box (``-1`` row) and ``nan`` when there is no ground truth."""
    if gts.shape[0] == 0:
        return float("nan")
    if box[0] < 0:
        return 0.0
    clipped, inside = clip_boxes(gts, height, width)
    if not inside.any():
        return 0.0
    return float(box_iou(box[None].astype(np.float64), clipped[inside]).max())


@dataclass
class Prediction:
    """The classifier's top-1 class and its softmax probability for one image."""

    label: int
    score: float


def predict(classifier: Any, images: torch.Tensor) -> list[Prediction] | None:
    """Top-1 class and softmax probability per image, or ``None`` without a classifier."""
    if classifier is None:
        return None
    was = classifier.training
    classifier.eval()
    with torch.no_grad():
        probs = torch.softmax(classifier(images).float(), dim=1)
    classifier.train(was)
    score, label = probs.max(dim=1)
    return [Prediction(int(c), float(s)) for c, s in zip(label.cpu(), score.cpu(), strict=True)]


def class_name(names: Sequence[str] | None, label: int) -> str:
    """The class's name, or ``class N`` when the dataset has no names."""
    if names and 0 <= label < len(names):
        return str(names[label])
    return f"class {label}"


@dataclass
class Target:
    """For which class a method's map is made: a short tag (column header) and a sentence."""

    tag: str
    sentence: str


def explained_class(explainer: Any) -> Target:
    """What a method's map on the side-by-side page stands for (maps are requested for the true
    class, as the evaluation does; a class-agnostic method ignores that request)."""
    from masksal.explainers.baselines import CentreBaseline, RandomBaseline
    from masksal.masker import Masker

    if isinstance(explainer, Masker):
        return Target("class-agnostic: the classifier's own decision",
                      "class-agnostic: one mask per image, the evidence for the class the classifier predicts "
                      "(whatever class is asked for)")
    if isinstance(explainer, CentreBaseline):
        return Target("baseline: same map for every image",
                      "a baseline that looks at neither the image nor the class (the same centred map everywhere)")
    if isinstance(explainer, RandomBaseline):
        return Target("baseline: random",
                      "a baseline of random values, which knows nothing of the image or the class")
    return Target("map for the true class", "the map of the true class (as the evaluation scores it)")


def find_classifier(explainers: Sequence[Any]) -> Any:
    """The classifier the first of ``explainers`` that holds one was built with, else ``None``."""
    for e in explainers:
        clf = getattr(e, "classifier", None)
        if isinstance(clf, torch.nn.Module):
            return clf
    return None
