"""Why a request on the two-object split (``benchmark:pairs``) is or is not localized.

``class_sensitivity``'s ``class_loc`` asks two things of a map: that it is about the requested
object (not the other), and that its LE box (threshold at the map's mean, largest 4-connected
component, tight box) has IoU > 0.5 with that object's box. This script separates the two, per
request, on the same maps ``evaluate`` scores:

* ``class_loc``: the metric itself (mean threshold), to check it matches ``evaluate``;
* ``class_loc_best_threshold``: the share localized with the one threshold of the min-max
  normalized maps that localizes most requests (an oracle: the most any single threshold gets
  from these maps), and that threshold;
* ``miss_box_larger`` / ``miss_box_smaller``: requests not localized whose box is larger /
  not larger than the requested object's box; ``miss_iou_03_05``: misses whose box still
  overlaps the requested object with IoU in (0.3, 0.5];
* ``object_box_share``: the requested object's box as a share of the image (median);
* for a conditional masker, ``mask_area_requested`` and ``mask_area_absent``: the mean mask
  value (%) for the requested class and for one class absent from the image (drawn uniformly,
  seeded), the rule that an absent class gets a near-empty mask.

All numbers in % of the requests (each pair image is asked once per object).

    python benchmarks/diagnose_pairs.py masker:runs/targets/demo_cond --split test --n 500 \\
        --out runs/targets/eval/diag_demo_cond_test.json
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from _common import run_diagnosis

from masksal.cli.common import Inputs
from masksal.cli.specs import load_evaluated, loader_of
from masksal.metrics.boxes import box_iou, clip_boxes, largest_component_boxes
from masksal.types import Batch

THRESHOLDS = np.linspace(0.0, 1.0, 51)[1:-1]


def _area(box: np.ndarray) -> float:
    return float((box[2] - box[0] + 1) * (box[3] - box[1] + 1))


def _localized(box: np.ndarray, boxes: np.ndarray, req: int, other: int) -> bool:
    if box[0] < 0:  # an empty binarization localizes nothing
        return False
    iou = box_iou(box[None], boxes)[0]
    return bool(iou[req] > 0.5 and iou[other] <= 0.5)


def absent_targets(batch: Batch, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """``(B, 2)``: each request's class, then one class absent from its image (uniform, from ``gen``)."""
    assert batch.object_labels is not None
    rows = []
    for i, objects in enumerate(batch.object_labels):
        absent = sorted(set(range(num_classes)) - set(objects.tolist()))
        rows.append([int(batch.labels[i]), absent[int(torch.randint(len(absent), (1,), generator=gen))]])
    return torch.tensor(rows)


def diagnose(method: str, classifier: str | None, split: str, n: int) -> dict[str, Any]:
    """The numbers of the module docstring for ``method`` on ``n`` pair images of ``split``."""
    explainer, clf, ds, _, _ = load_evaluated(method, classifier, torch.device("cpu"),
                                              Inputs(data="benchmark:pairs", split=split, n=n))
    loader = loader_of(ds, 64)
    conditional = bool(getattr(explainer, "class_specific", False)) and hasattr(explainer, "explain_targets")
    gen = torch.Generator().manual_seed(0)
    hits = np.zeros(len(THRESHOLDS))
    loc, larger, smaller, near, share, areas = [], [], [], [], [], []
    for b in loader:
        maps = explainer.explain(b.images, b.labels).detach().double().cpu().numpy()
        flat = maps.reshape(len(maps), -1)
        lo, hi = flat.min(1)[:, None, None], flat.max(1)[:, None, None]
        unit = (maps - lo) / np.maximum(hi - lo, 1e-12)
        if conditional:
            two = explainer.explain_targets(b.images, absent_targets(b, clf.num_classes, gen))  # type: ignore[attr-defined]
            areas.append(two.flatten(2).mean(2).cpu().numpy())
        assert b.object_labels is not None and b.object_boxes is not None
        for i in range(len(maps)):
            labels = b.object_labels[i].numpy()
            req = int(np.flatnonzero(labels == int(b.labels[i]))[0])
            other = int(np.flatnonzero(labels != int(b.labels[i]))[0])
            boxes, _ = clip_boxes(b.object_boxes[i].double().numpy().reshape(-1, 4), *maps.shape[1:])
            box = largest_component_boxes((maps[i] > maps[i].mean())[None])[0]
            ok = _localized(box, boxes, req, other)
            iou_req = float(box_iou(box[None], boxes)[0][req]) if box[0] >= 0 else 0.0
            loc.append(ok)
            larger.append(not ok and box[0] >= 0 and _area(box) > _area(boxes[req]))
            smaller.append(not ok and not larger[-1])
            near.append(not ok and 0.3 < iou_req <= 0.5)
            share.append(_area(boxes[req]) / maps.shape[1] / maps.shape[2])
            for k, t in enumerate(THRESHOLDS):
                hits[k] += _localized(largest_component_boxes((unit[i] >= t)[None])[0], boxes, req, other)
    count = len(loc)
    out: dict[str, Any] = {
        "method": method, "split": split, "requests": count,
        "class_loc": 100 * float(np.mean(loc)),
        "class_loc_best_threshold": 100 * float(hits.max()) / count,
        "best_threshold": float(THRESHOLDS[int(hits.argmax())]),
        "miss_box_larger": 100 * float(np.mean(larger)),
        "miss_box_smaller": 100 * float(np.mean(smaller)),
        "miss_iou_03_05": 100 * float(np.mean(near)),
        "object_box_share": 100 * float(np.median(share)),
    }
    if areas:
        both = np.concatenate(areas)
        out["mask_area_requested"] = 100 * float(both[:, 0].mean())
        out["mask_area_absent"] = 100 * float(both[:, 1].mean())
    return out


def main() -> None:
    run_diagnosis(__doc__.splitlines()[0], diagnose, split="test", n=500,
                  n_help="pair images (each asked about both objects)")


if __name__ == "__main__":
    main()
