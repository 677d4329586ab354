"""``masksal demo``: the whole chain on the built-in benchmark, with a report.

generate data -> train the classifier -> train the masker (paper's final objectives) ->
explain the test split -> evaluate (masker and a centre-box baseline) -> report.html and
metrics.json. Each stage is cached in the output folder: a second run reuses what the first
finished, and an interrupted stage resumes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from masksal.checkpoint import is_checkpoint, load_masker, write_json
from masksal.config import ExperimentConfig, with_overrides
from masksal.precision import RunOptions
from masksal.rundir import check_same_recipe, stage_done
from masksal.training import build_dataset, train_classifier, train_masker
from masksal.types import collate


@dataclass
class DemoPlan:
    """Sizes of a demo run."""

    n_train: int
    n_test: int
    classifier_epochs: int
    masker_steps: int
    overrides: dict[str, Any] = field(default_factory=dict)
    """Typed config changes applied last (``{"section.key": value}``)."""


FULL = DemoPlan(n_train=40000, n_test=2000, classifier_epochs=8, masker_steps=1300)
QUICK = DemoPlan(n_train=12000, n_test=500, classifier_epochs=6, masker_steps=200)

# The masker's decoder, chosen on the validation split against the paper's (layer3 + layer4,
# concatenated): docs/reproduce.md, "Choosing the decoder". configs/final.yaml holds the same.
DECODER: dict[str, Any] = {"classifier.taps": ["layer1", "layer2", "layer3", "layer4"], "masker.decoder": "fpn",
                           "masker.hidden": 16}


def demo_config(plan: DemoPlan, mode: str, out: Path) -> ExperimentConfig:
    """The demo's experiment: the paper's final objectives, calibrated for 64 px images, and the
    masker's decoder :data:`DECODER`."""
    return with_overrides(ExperimentConfig(), {
        "name": "demo",
        "data.n_train": plan.n_train,
        "data.n_test": plan.n_test,
        "data.cache_dir": str(out / "cache"),
        "classifier.kwargs": {"width": 16},
        "classifier_train.epochs": plan.classifier_epochs,
        "masker_train.mode": mode,
        "masker_train.steps": plan.masker_steps,
        # Gated area weight and TV calibrated for 64 px (README, "Results of the demo"); with the
        # classifier trained alongside, 1.5 times the FIX weight, the paper's ratio (15 vs 10).
        "objectives.area_out_weight": 30 if mode == "fix" else 45,
        "objectives.tv_weight": 0.01,
        **DECODER,
        **plan.overrides,
    }, "demo")


def run_demo(out: str | Path = "runs/demo", quick: bool = False, mode: str = "ca", progress: bool = True,
             log: Any = print, plan: DemoPlan | None = None, device: str = "auto",
             scaling: str = "shared") -> dict[str, Any]:
    """Run (or finish) the demo in ``out``; returns the metrics written to ``metrics.json``.

    ``plan`` overrides the sizes of the full (or ``quick``) demo.
    """
    from masksal.devices import resolve_device
    from masksal.evaluation import evaluate
    from masksal.explainers import create_explainer

    out = Path(out)
    plan = plan or (QUICK if quick else FULL)
    cfg = demo_config(plan, mode, out)
    dev = resolve_device(device)
    run = RunOptions(device=str(dev))
    t0 = time.time()
    timings: dict[str, float] = {}

    clf_dir = out / "classifier"
    _stage(clf_dir, cfg, "classifier", None, "[1/4]", f"{plan.classifier_epochs} epochs on {plan.n_train} images",
           train_classifier, timings, log, progress, run)
    clf_acc = float(json.loads((clf_dir / "metrics.json").read_text())["test_accuracy"])
    log(f"      classifier test accuracy: {clf_acc:.1f}%")

    masker_dir = out / f"masker_{mode}"
    cfg = with_overrides(cfg, {"classifier.weights": str(clf_dir)}, "demo")
    _stage(masker_dir, cfg, "masker", plan.masker_steps, "[2/4]", f"{mode.upper()}, {plan.masker_steps} steps",
           train_masker, timings, log, progress, run)

    log("[3/4] explaining and evaluating the test split")
    t = time.time()
    masker = load_masker(masker_dir, device=dev)
    clf = masker.classifier
    test_ds = build_dataset(cfg, "test")
    loader = DataLoader(test_ds, batch_size=128, collate_fn=collate)
    results: dict[str, Any] = {}
    for name, explainer in (("masker", masker), ("centre", create_explainer("centre", clf))):
        results[name] = evaluate(explainer, clf, loader, metrics=("le_om_f1", "maxboxacc", "pxap"),
                                 progress=progress)
    timings["evaluate_seconds"] = time.time() - t

    log("[4/4] writing the report")
    metrics = {
        "classifier_test_accuracy": clf_acc,
        "mode": mode,
        "quick": quick,
        "plan": {"n_train": plan.n_train, "n_test": plan.n_test, "classifier_epochs": plan.classifier_epochs,
                 "masker_steps": plan.masker_steps},
        "masker": results["masker"],
        "centre_baseline": results["centre"],
        "masker_LE": results["masker"]["le"],
        "centre_LE": results["centre"]["le"],
        "seconds": {**timings, "total": time.time() - t0},
        "config": cfg.to_dict(),
    }
    write_json(out / "metrics.json", metrics)
    report = write_demo_report(out, masker, test_ds, metrics, scaling=scaling)
    log(f"LE: masker {metrics['masker_LE']:.1f}%, centre box {metrics['centre_LE']:.1f}%; "
        f"classifier accuracy {clf_acc:.1f}%")
    log(f"report: {report.resolve()}")
    return metrics


def write_demo_report(out: Path, masker: Any, test_ds: Any, metrics: dict[str, Any], n_images: int = 24,
                      scaling: str = "shared") -> Path:
    """report.html (see :func:`masksal.report.demo_page.write_demo_page`)."""
    from masksal.report.demo_page import write_demo_page

    return write_demo_page(out, masker, test_ds, metrics, n_images=n_images, scaling=scaling)


def _stage(folder: Path, cfg: ExperimentConfig, kind: str, steps: int | None, step: str, plan: str,
           train: Callable[..., Any], timings: dict[str, float], log: Any, progress: bool, run: RunOptions) -> None:
    """Reuse a finished stage of the same recipe, else train it (resuming an interrupted one)."""
    check_same_recipe(folder, cfg, kind, f"delete {folder.parent} or choose another --out")
    if stage_done(folder, steps):
        log(f"{step} {kind}: reusing {folder}")
        return
    log(f"{step} training the {kind} ({plan})")
    t = time.time()
    train(cfg, folder, resume=is_checkpoint(folder), progress=progress, run=run)
    timings[f"{kind}_seconds"] = time.time() - t
