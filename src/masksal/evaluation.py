"""Evaluate a saliency method on a dataset: every metric, one pass, streamed.

:func:`evaluate` runs an :class:`~masksal.explainers.base.Explainer` over a DataLoader of
:class:`~masksal.types.Batch` (built with ``collate_fn=masksal.types.collate``), feeds the maps
to the metric accumulators and returns one flat dict; :func:`format_table` renders results as a
Markdown table.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from masksal.classifiers import Classifier
from masksal.explainers.base import Explainer
from masksal.metrics import (
    ClassificationAccuracy,
    DeletionInsertion,
    LocalizationError,
    MaxBoxAccuracy,
    Metric,
    PixelAveragePrecision,
    PointingGame,
    RemoveAndDebias,
    SaliencyMetric,
)
from masksal.metrics.saliency_metric import eval_mode, module_device
from masksal.types import Batch

METRICS = ("le_om_f1", "maxboxacc", "pxap", "sm", "deletion_insertion", "road", "pointing_game")
_NEEDS = {"le_om_f1": "boxes", "maxboxacc": "boxes", "pxap": "masks"}


def _build(name: str, classifier: Classifier, options: Mapping[str, Any]) -> Metric:
    if name == "le_om_f1":
        return LocalizationError(**options)
    if name == "maxboxacc":
        return MaxBoxAccuracy(**options)
    if name == "pxap":
        return PixelAveragePrecision(**options)
    if name == "sm":
        return SaliencyMetric(classifier, **options)
    if name == "road":
        return RemoveAndDebias(classifier, **options)
    if name == "pointing_game":  # boxes or masks, whichever the batch has; images with neither are skipped
        return PointingGame(**options)
    return DeletionInsertion(classifier, **options)


def _has(batch: Batch, what: str) -> bool:
    if what == "masks":
        return batch.masks is not None
    return any(b.numel() > 0 for b in batch.boxes)


def _take(batch: Batch, n: int) -> Batch:
    """The first ``n`` images of a batch."""
    return Batch(images=batch.images[:n], labels=batch.labels[:n], boxes=batch.boxes[:n],
                 masks=None if batch.masks is None else batch.masks[:n], ids=list(batch.ids[:n]))


def _total(loader: Iterable[Batch], limit: int | None) -> int | None:
    n: int | None
    try:  # the sampler's length is this process's shard under a DistributedSampler
        n = len(loader.sampler)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        n = None
    if limit is not None:
        return limit if n is None else min(n, limit)
    return n


def _run(explainer: Explainer, classifier: Classifier, loader: Iterable[Batch], metrics: dict[str, Metric],
         skipped: dict[str, str], *, limit: int | None, progress: bool, desc: str) -> dict[str, float]:
    """One pass over ``loader``: top-1, maps, metric updates. Fills ``skipped``; returns timings."""
    device = module_device(classifier)
    top1 = ClassificationAccuracy()
    seen, explain_s = 0, 0.0
    first = True
    bar = tqdm(total=_total(loader, limit), unit="img", desc=desc, disable=not progress, dynamic_ncols=True)
    try:
        for batch in loader:
            if not isinstance(batch, Batch):
                raise TypeError(f"the loader must yield masksal.types.Batch (use collate_fn=masksal.types.collate), "
                                f"got {type(batch).__name__}")
            if limit is not None and seen + len(batch) > limit:
                batch = _take(batch, limit - seen)
            if len(batch) == 0:
                break
            if first:
                for name in list(metrics):
                    need = _NEEDS.get(name)
                    if need is not None and not _has(batch, need):
                        skipped[name] = f"the dataset has no {'pixel masks' if need == 'masks' else 'boxes'}"
                        del metrics[name]
                first = False
            batch = batch.to(device)
            with torch.no_grad():
                logits = classifier(batch.images)
            top1.update(logits, batch.labels)
            t0 = time.perf_counter()
            maps = explainer.explain(batch.images, batch.labels).detach()
            explain_s += time.perf_counter() - t0
            for metric in metrics.values():
                if isinstance(metric, LocalizationError):
                    metric.update(maps, batch, predictions=logits.argmax(dim=1))
                else:
                    metric.update(maps, batch)
            seen += len(batch)
            bar.update(len(batch))
            if limit is not None and seen >= limit:
                break
    finally:
        bar.close()
    top1.all_reduce()
    for metric in metrics.values():
        metric.all_reduce()
    out = dict(top1.compute())
    out.update(images=float(top1.num_images), explain_seconds=explain_s)
    return out


def evaluate(
    explainer: Explainer,
    classifier: Classifier,
    loader: Iterable[Batch],
    *,
    metrics: Sequence[str] = METRICS,
    limit: int | None = None,
    val_loader: Iterable[Batch] | None = None,
    progress: bool = True,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run a saliency method over a dataset and compute the requested metrics.

    Maps are explained for the true class (``explainer.explain(images, labels)``: GT-known
    maps, as wsolevaluation); the classifier's top-1 prediction on the clean image gives
    ``top1`` and, with the box, OM / Top-1 Loc. Metrics that need boxes (``le_om_f1``,
    ``maxboxacc``) or pixel masks (``pxap``) are skipped when the dataset's first batch has none;
    ``result["skipped"]`` says which and why. Under ``torch.distributed`` (each process given a
    shard of the dataset) the metric states are all-reduced, so every process returns the
    numbers of the whole dataset.

    Args:
        explainer: any :class:`~masksal.explainers.base.Explainer` (maps ``(B, H, W)`` at the
            image resolution).
        classifier: the :class:`~masksal.classifiers.Classifier` the maps explain; evaluated in
            eval mode (its mode is restored after), on its own device.
        loader: yields :class:`~masksal.types.Batch` (``DataLoader(..., collate_fn=collate)``),
            images ``(B, 3, H, W)`` in [0, 1].
        metrics: names among ``"le_om_f1"`` (LE, OM, F1, GT-known / Top-1 Loc), ``"maxboxacc"``
            (MaxBoxAcc v1 / v2), ``"pxap"``, ``"sm"``, ``"deletion_insertion"``, ``"road"``,
            ``"pointing_game"``.
        limit: evaluate at most this many images (of each loader).
        val_loader: a separate validation split: MaxBoxAcc thresholds are chosen on it and the
            test accuracy at those thresholds is reported (``boxacc``, ``boxacc_v2``...), next to
            the best-over-thresholds oracle (``maxboxacc``...).
        progress: show a tqdm progress bar (rate and ETA).
        metric_options: constructor keyword arguments per metric name, e.g.
            ``{"deletion_insertion": {"steps": 50}, "le_om_f1": {"binarize": "casm"}}``.

    Returns:
        A flat dict: ``explainer`` (name), ``images``, ``top1`` and every metric's keys (see each
        metric's ``compute``), ``seconds`` (wall time of the test pass), ``explain_seconds``,
        ``maps_per_second`` and ``skipped`` (``{metric: reason}``).

    Raises:
        ValueError: an unknown metric name.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    options = dict(metric_options or {})
    bad = [k for k in options if k not in METRICS]
    if bad:
        raise ValueError(f"metric_options for unknown metric(s) {bad}; choose from {list(METRICS)}")
    name = str(getattr(explainer, "name", type(explainer).__name__))
    skipped: dict[str, str] = {}
    result: dict[str, Any] = {"explainer": name}
    with eval_mode(classifier):
        val_thresholds = None
        if val_loader is not None:
            if "maxboxacc" in metrics:
                val_metrics: dict[str, Metric] = {"maxboxacc": _build("maxboxacc", classifier,
                                                                      options.get("maxboxacc", {}))}
                val_skipped: dict[str, str] = {}
                _run(explainer, classifier, val_loader, val_metrics, val_skipped, limit=limit,
                     progress=progress, desc=f"{name} (val)")
                if "maxboxacc" in val_metrics and val_metrics["maxboxacc"].num_images > 0:
                    acc = val_metrics["maxboxacc"]
                    assert isinstance(acc, MaxBoxAccuracy)
                    val_thresholds = acc.best_thresholds()
                else:
                    skipped["boxacc (val threshold)"] = val_skipped.get("maxboxacc", "the validation split is empty")
            else:
                skipped["boxacc (val threshold)"] = "maxboxacc was not requested"
        built = {m: _build(m, classifier, options.get(m, {})) for m in dict.fromkeys(metrics)}
        t0 = time.perf_counter()
        timing = _run(explainer, classifier, loader, built, skipped, limit=limit, progress=progress, desc=name)
        seconds = time.perf_counter() - t0
    result["images"] = int(timing["images"])
    result["top1"] = timing["top1"]
    for metric in built.values():
        result.update(metric.compute())
    box = built.get("maxboxacc")
    if isinstance(box, MaxBoxAccuracy) and val_thresholds is not None:
        result.update(box.compute_at(val_thresholds))
        result.update({f"val_threshold_{k}": v for k, v in val_thresholds.items()})
    result["seconds"] = seconds
    result["explain_seconds"] = timing["explain_seconds"]
    result["maps_per_second"] = result["images"] / timing["explain_seconds"] if timing["explain_seconds"] > 0 \
        else math.nan
    result["skipped"] = skipped
    return result


# (key, column header, number format); the order of the table's columns.
_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("images", "Images", "{:.0f}"),
    ("top1", "Top-1 cls (%)", "{:.2f}"),
    ("gt_known_loc", "GT-known Loc (%)", "{:.2f}"),
    ("top1_loc", "Top-1 Loc (%)", "{:.2f}"),
    ("le", "LE (%) ↓", "{:.2f}"),
    ("om", "OM (%) ↓", "{:.2f}"),
    ("f1", "F1 (%)", "{:.2f}"),
    ("maxboxacc", "MaxBoxAcc (oracle thr., %)", "{:.2f}"),
    ("maxboxacc_v2", "MaxBoxAccV2 (oracle thr., %)", "{:.2f}"),
    ("boxacc", "BoxAcc (val thr., %)", "{:.2f}"),
    ("boxacc_v2", "BoxAccV2 (val thr., %)", "{:.2f}"),
    ("pxap", "PxAP (%)", "{:.2f}"),
    ("sm", "SM ↓", "{:.3f}"),
    ("deletion_auc", "Deletion AUC ↓", "{:.4f}"),
    ("insertion_auc", "Insertion AUC", "{:.4f}"),
    ("road_gap", "ROAD gap", "{:.4f}"),
    ("road_gap_blurred", "ROAD gap (blurred map)", "{:.4f}"),
    ("pointing_game", "Pointing game (%)", "{:.2f}"),
    ("maps_per_second", "Maps/s", "{:.1f}"),
)


def format_table(results: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """Render one or several :func:`evaluate` results as a Markdown table.

    One row per result (named by its ``explainer``), one column per metric present in any of
    them (a missing value shows as ``-``). Skipped metrics are listed under the table.

    Args:
        results: a result dict, or a sequence of them (e.g. one per saliency method).

    Returns:
        The Markdown text.
    """
    from masksal.report import markdown_table

    rows = [results] if isinstance(results, Mapping) else list(results)
    cols = [c for c in _COLUMNS if any(c[0] in r for r in rows)]
    body = []
    for r in rows:
        cells = [r.get("explainer", "?")]
        for key, _, fmt in cols:
            v = r.get(key)
            ok = isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))
            cells.append(fmt.format(v) if ok else "-")
        body.append(cells)
    lines = markdown_table(["Method", *(h for _, h, _ in cols)], body, first_align="---").splitlines()
    notes = [f"{r.get('explainer', '?')}: {m} skipped ({why})"
             for r in rows for m, why in dict(r.get("skipped", {})).items()]
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"
