"""Where a method's PxAP is lost: the pooled pixel precision-recall curve of its maps on a split.

PxAP is the area under the precision-recall curve of all pixels of a split pooled (wsolevaluation's
definition, ``masksal.metrics.PixelAveragePrecision``). This script reads that curve at a few
points, on the same maps ``evaluate`` scores:

* ``all`` / ``digits`` / ``animals``: PxAP of every image, of the digit and of the animal images;
  the best pixel F1 over thresholds with its precision and recall; ``precision_at_recall``: the
  best precision reached at recall >= 10, 50, 75 and 90 % (how clean the brightest pixels are,
  and what covering the rest of the object costs);
* ``background_above_best_threshold_in_box``: of the background pixels at or above the best-F1
  threshold, the share inside the object's box (the same curve with the background outside the
  box ignored): spill around the object rather than elsewhere;
* references on the same images: ``pxap_box_filled`` (a map of 1 inside the object's box, 0
  outside) and ``pxap_blurred_gt`` (the object's own mask blurred by a Gaussian of 1-4 px);
* ``mask_mean``: the mean map value.

    python benchmarks/diagnose_pxap.py masker:runs/demo/masker_ca --split val --out runs/pxap/diag_val.json
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from _common import run_diagnosis
from scipy.ndimage import gaussian_filter

from masksal.cli.common import Inputs
from masksal.cli.specs import load_evaluated, loader_of
from masksal.metrics.pxap import PixelAveragePrecision
from masksal.types import Batch

SIGMAS = (1, 2, 3, 4)


def curve_summary(metric: PixelAveragePrecision) -> dict[str, Any]:
    """PxAP, the best pixel F1 with its precision, recall and threshold, and the best precision
    reached at recall >= 10, 50, 75 and 90 % (all in %)."""
    p, r = metric.precision_recall()
    f1 = np.nan_to_num(2 * p * r / np.maximum(p + r, 1e-12))
    b = int(np.argmax(f1))
    at = {str(x): round(100 * float(p[(r >= x) & ~np.isnan(p)].max()), 1) for x in (0.1, 0.5, 0.75, 0.9)}
    edges = metric.edges[::-1]
    return {"pxap": round(metric.compute()["pxap"], 2), "best_pixel_f1": round(100 * float(f1[b]), 1),
            "precision": round(100 * float(p[b]), 1), "recall": round(100 * float(r[b]), 1),
            "threshold": round(float(edges[b + 1]), 3) if b + 1 < len(edges) else None,
            "precision_at_recall": at}


def diagnose(method: str, classifier: str | None, split: str, n: int) -> dict[str, Any]:
    ev = load_evaluated(method, classifier, torch.device("cpu"), Inputs(split=split, n=n))
    curves = {k: PixelAveragePrecision() for k in ("all", "digits", "animals")}
    blurred = {s: PixelAveragePrecision() for s in SIGMAS}
    boxmap, inbox = PixelAveragePrecision(), PixelAveragePrecision()
    means = []
    with torch.no_grad():
        for batch in loader_of(ev.dataset, 64):
            maps = ev.explainer.explain(batch.images, batch.labels)
            curves["all"].update(maps, batch)
            means.append(maps.mean(dim=(1, 2)))
            digit = batch.labels < 10  # the benchmark's first ten classes are the digits
            for name, keep in (("digits", digit), ("animals", ~digit)):
                if keep.any():
                    curves[name].update(maps[keep], Batch(images=batch.images[keep], labels=batch.labels[keep],
                                                          boxes=[batch.boxes[i] for i in keep.nonzero().flatten()],
                                                          masks=batch.masks[keep]))
            box = torch.zeros_like(maps)
            for k, boxes in enumerate(batch.boxes):
                for x0, y0, x1, y1 in boxes.round().long().tolist():
                    box[k, y0:y1 + 1, x0:x1 + 1] = 1
            boxmap.update(box, batch)
            outside = batch.masks.clone()
            outside[(box == 0) & (batch.masks == 0)] = 255  # background outside the box: ignored
            inbox.update(maps, Batch(images=batch.images, labels=batch.labels, boxes=batch.boxes, masks=outside))
            gt = (batch.masks == 1).float().numpy()
            for s in SIGMAS:
                blurred[s].update(torch.from_numpy(np.stack([gaussian_filter(g, s) for g in gt])), batch)
    out: dict[str, Any] = {"method": method, "split": split, "images": len(ev.dataset)}
    out.update({k: curve_summary(v) for k, v in curves.items()})
    i = int(round(out["all"]["threshold"] / inbox.threshold_step))
    in_box = inbox.state_dict()["hist_background"][i:].sum()
    everywhere = curves["all"].state_dict()["hist_background"][i:].sum()
    out["background_above_best_threshold_in_box"] = round(100 * float(in_box / everywhere), 1)
    out["pxap_box_filled"] = round(boxmap.compute()["pxap"], 2)
    out["pxap_blurred_gt"] = {str(s): round(blurred[s].compute()["pxap"], 2) for s in SIGMAS}
    out["mask_mean"] = round(float(torch.cat(means).mean()), 4)
    return out


def main() -> None:
    run_diagnosis(__doc__.splitlines()[0], diagnose, split="val", n=2000,
                  n_help="images of the built-in benchmark per split")


if __name__ == "__main__":
    main()
