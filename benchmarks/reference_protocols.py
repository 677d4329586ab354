"""How far the metrics' defaults are from the reference scorers' protocols, on a trained masker.

For a masker checkpoint of ``masksal demo`` (the demo folder holds ``classifier/`` and the
masker), explains the built-in benchmark's test images and scores the same maps under each
protocol, printing a table and writing JSON (default ``runs/bench/reference_protocols.json``):

* LE / OM / F1 with ``geometry="inclusive"`` (default), ``"si"`` (the paper's scorer) and
  ``"casm"``, and CASM's whole scorer (``binarize="casm", geometry="casm"``);
* SM with either geometry, scored by the masker's own classifier or by the classifier the masker
  started from (``DEMO/classifier``: the paper's scorer uses the original classifier);
* deletion / insertion: the default (RISE's protocol) against RISE's tie order, the truncated
  Gaussian blur, tracking the label, 100 steps, and all three together (the earlier default).

Per-image differences are the largest absolute difference of a per-image score. Run:
``python benchmarks/reference_protocols.py runs/demo [--masker masker_ca] [--box-images 500]
[--di-images 32]``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import save_json

from masksal.checkpoint import load_classifier, read_meta
from masksal.classifiers import Classifier
from masksal.cli.specs import build_loader, load_method
from masksal.explainers.base import Explainer
from masksal.metrics import DeletionInsertion, LocalizationError, SaliencyMetric
from masksal.metrics.faithfulness import trapezoid_auc
from masksal.types import Batch

DI_SETTINGS: dict[str, dict[str, Any]] = {
    "default (RISE's protocol)": {},
    "ties=numpy (RISE's argsort)": {"ties": "numpy"},
    "blur=gaussian": {"blur": "gaussian"},
    "target=label": {"target": "label"},
    "steps=100": {"steps": 100},
    "earlier default (label, 100 steps, gaussian)": {"target": "label", "steps": 100, "blur": "gaussian"},
}


def batches(masker: Explainer, clf: Classifier, loader: Any, limit: int) -> Iterator[tuple[Batch, torch.Tensor,
                                                                                           torch.Tensor]]:
    """The first ``limit`` images: batch, maps ``(B, H, W)`` for the labels, top-1 predictions."""
    seen = 0
    for b in loader:
        if seen >= limit:
            return
        k = min(len(b), limit - seen)
        b = Batch(b.images[:k], b.labels[:k], b.boxes[:k], None if b.masks is None else b.masks[:k], list(b.ids[:k]))
        seen += k
        with torch.no_grad():
            maps = masker.explain(b.images, b.labels).detach()
            pred = clf(b.images).argmax(dim=1)
        yield b, maps, pred


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())


def one(b: Batch, i: int) -> Batch:
    return Batch(b.images[i:i + 1], b.labels[i:i + 1], b.boxes[i:i + 1])


def box_metrics(masker: Explainer, clf: Classifier, original: Classifier, loader: Any, n: int) -> dict[str, Any]:
    """LE / OM / F1 per geometry and SM per geometry and classifier, with per-image differences."""
    le = {g: LocalizationError(geometry=g) for g in ("inclusive", "si", "casm")}
    casm = LocalizationError(binarize="casm", geometry="casm")
    hits: dict[str, list[float]] = {g: [] for g in le}
    f1: dict[str, list[float]] = {g: [] for g in le}
    sm_setups = {"inclusive, own classifier": (clf, "inclusive"), "si, own classifier": (clf, "si"),
                 "inclusive, original classifier": (original, "inclusive"),
                 "si, original classifier": (original, "si")}
    sm: dict[str, list[float]] = {k: [] for k in sm_setups}
    for b, maps, pred in batches(masker, clf, loader, n):
        casm.update(maps, b, predictions=pred)
        for g, metric in le.items():
            metric.update(maps, b, predictions=pred)
            for i in range(len(b)):  # per image: which images change
                m = LocalizationError(geometry=g)
                m.update(maps[i:i + 1], one(b, i))
                hits[g].append(m.compute()["gt_known_loc"] / 100)
                f1[g].append(m.compute()["f1"])
        for key, (c, geometry) in sm_setups.items():
            for i in range(len(b)):
                s = SaliencyMetric(c, geometry=geometry)  # type: ignore[arg-type]
                s.update(maps[i:i + 1], one(b, i))
                sm[key].append(s.compute()["sm"])
    h, f, s = ({k: np.array(v) for k, v in d.items()} for d in (hits, f1, sm))
    return {
        "images": len(h["inclusive"]),
        "le_om_f1": {g: m.compute() for g, m in le.items()} | {"casm rule + casm geometry": casm.compute()},
        "images_whose_localization_differs_from_inclusive": {g: int((h[g] != h["inclusive"]).sum()) for g in h},
        "f1_per_image_max_abs_diff_from_inclusive": {g: float(np.abs(f[g] - f["inclusive"]).max()) for g in f},
        "sm_mean": {k: float(v.mean()) for k, v in s.items()},
        "sm_per_image_max_abs_diff": {
            "si vs inclusive (own classifier)": max_diff(s["si, own classifier"], s["inclusive, own classifier"]),
            "si vs inclusive (original classifier)": max_diff(s["si, original classifier"],
                                                              s["inclusive, original classifier"]),
            "original vs own classifier (si)": max_diff(s["si, original classifier"], s["si, own classifier"]),
        },
    }


def deletion_insertion(masker: Explainer, clf: Classifier, loader: Any, n: int) -> dict[str, Any]:
    """Mean AUCs per setting and the largest per-image difference from the default."""
    aucs: dict[str, list[torch.Tensor]] = {k: [] for k in DI_SETTINGS}
    misclassified = 0
    for b, maps, pred in batches(masker, clf, loader, n):
        misclassified += int((pred != b.labels).sum())
        for key, kw in DI_SETTINGS.items():
            d, i = DeletionInsertion(clf, **kw).scores(maps, b)
            aucs[key].append(torch.stack([trapezoid_auc(d), trapezoid_auc(i)], dim=1))
    a = {k: torch.cat(v).numpy() for k, v in aucs.items()}
    ref = a["default (RISE's protocol)"]
    return {
        "images": len(ref), "top1_differs_from_label": misclassified,
        "mean": {k: {"deletion": float(v[:, 0].mean()), "insertion": float(v[:, 1].mean())} for k, v in a.items()},
        "per_image_max_abs_diff_from_default": {
            k: {"deletion": float(np.abs(v[:, 0] - ref[:, 0]).max()),
                "insertion": float(np.abs(v[:, 1] - ref[:, 1]).max())} for k, v in a.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("demo", type=Path, help="a masksal demo folder (classifier/ and the masker)")
    p.add_argument("--masker", default="masker_ca")
    p.add_argument("--box-images", type=int, default=500)
    p.add_argument("--di-images", type=int, default=32)
    p.add_argument("--out", type=Path, default=Path("runs/bench/reference_protocols.json"))
    args = p.parse_args()
    torch.manual_seed(0)
    masker = load_method(f"masker:{args.demo / args.masker}", None)
    clf: Classifier = masker.classifier  # type: ignore[attr-defined]
    original = load_classifier(args.demo / "classifier")
    size = read_meta(args.demo / args.masker).image_size
    _, loader = build_loader("benchmark", "test", size, 2000, 64, reference=args.demo / args.masker)
    out = {"masker": str(args.demo / args.masker),
           "boxes": box_metrics(masker, clf, original, loader, args.box_images),
           "deletion_insertion": deletion_insertion(masker, clf, loader, args.di_images)}
    print(json.dumps(out, indent=1))
    save_json(args.out, out)


if __name__ == "__main__":
    main()
