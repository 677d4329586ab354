"""Evaluate a saliency method on a dataset: every metric, one pass, streamed.

:func:`evaluate` runs an explainer over a DataLoader of :class:`~masksal.types.Batch` (built
with ``collate_fn=masksal.types.collate``), feeds the maps to the metric accumulators and returns
one flat dict. The classifier's logits for the top-1 prediction come from the explainer's own
forward pass when it ran one (``explain_with_logits``): no second forward per batch.
:func:`evaluate_sharded` splits the dataset across ``torchrun`` processes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from masksal.classifiers import Classifier, as_classifier, eval_mode
from masksal.devices import module_device
from masksal.distributed import all_reduce_sum
from masksal.explainers.base import SupportsExplain
from masksal.metrics.base import Accumulator, Metric
from masksal.metrics.classification import ClassificationAccuracy
from masksal.types import Batch

METRICS = ("le_om_f1", "maxboxacc", "pxap", "sm", "deletion_insertion", "road", "pointing_game", "class_sensitivity")
DEFAULT_METRICS = ("le_om_f1", "maxboxacc", "pxap", "sm", "deletion_insertion")
"""What :func:`evaluate` computes unless told otherwise (ROAD, at ~20 forwards per image, is asked for)."""
_NEEDS = {"le_om_f1": "boxes", "maxboxacc": "boxes", "pxap": "masks", "pointing_game": "boxes or masks",
          "class_sensitivity": "objects"}


def _build(name: str, classifier: Classifier, options: Mapping[str, Any]) -> Metric:
    # Imported here: the metric modules bring SciPy and OpenCV, which `import masksal` should not.
    from masksal.metrics import (
        ClassSensitivity,
        DeletionInsertion,
        LocalizationError,
        MaxBoxAccuracy,
        PixelAveragePrecision,
        PointingGame,
        RemoveAndDebias,
        SaliencyMetric,
    )

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
    if name == "class_sensitivity":  # images of several objects (benchmark:pairs), each asked about one
        return ClassSensitivity(**options)
    return DeletionInsertion(classifier, **options)


def _has(batch: Batch, what: str) -> bool:
    if what == "boxes or masks":
        return _has(batch, "boxes") or _has(batch, "masks")
    if what == "masks":
        return batch.masks is not None
    if what == "objects":
        return batch.object_labels is not None
    return any(b.numel() > 0 for b in batch.boxes)


def _take(batch: Batch, n: int) -> Batch:
    """The first ``n`` images of a batch."""
    return batch.head(n)


def _total(loader: Iterable[Batch], limit: int | None) -> int | None:
    n: int | None
    try:  # the sampler's length is this process's shard under a DistributedSampler
        n = len(loader.sampler)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        n = None
    if limit is not None:
        return limit if n is None else min(n, limit)
    return n


def _run(explainer: SupportsExplain, classifier: Classifier, loader: Iterable[Batch], metrics: dict[str, Metric],
         skipped: dict[str, str], *, limit: int | None, progress: bool, desc: str,
         bad: list[str] | None = None, workers: int = 0,
         top1: ClassificationAccuracy | None = None) -> dict[str, float]:
    """One pass over ``loader``: top-1 (into ``top1`` when given), maps, metric updates. Fills
    ``skipped`` (metrics not computed) and ``bad`` (samples that could not be read); returns counts
    and timings. With ``workers``, the metrics that need no classifier are updated in that many
    worker processes while the next batch is explained (:mod:`masksal.evaluation.workers`)."""
    from contextlib import ExitStack

    from masksal.evaluation.workers import MAP_ONLY, MetricWorkers

    bad = [] if bad is None else bad
    pool: MetricWorkers | None = None
    here: dict[str, Metric] = metrics
    stack = ExitStack()
    device = module_device(classifier)
    top1 = ClassificationAccuracy() if top1 is None else top1
    seen, explain_s, unlabelled = 0, 0.0, 0
    first = True
    bar = tqdm(total=_total(loader, limit), unit="img", desc=desc, disable=not progress, dynamic_ncols=True)
    try:
        for batch in loader:
            if not isinstance(batch, Batch):
                raise TypeError(f"the loader must yield masksal.types.Batch (use collate_fn=masksal.types.collate), "
                                f"got {type(batch).__name__}")
            if limit is not None and seen + len(batch) > limit:
                batch = _take(batch, limit - seen)
            bad.extend(batch.skipped)  # unreadable samples: named, counted, and the rest scored
            if len(batch) == 0:
                bar.update(len(batch.skipped))
                if limit is not None and seen >= limit:
                    break
                continue
            if first:
                for name in list(metrics):
                    need = _NEEDS.get(name)
                    if need is not None and not _has(batch, need):
                        what = {"masks": "pixel masks", "objects": "list of each image's objects (benchmark:pairs "
                                "has one)"}.get(need, need)
                        skipped[name] = f"the dataset has no {what}"
                        del metrics[name]
                first = False
                away = {k: m for k, m in metrics.items() if k in MAP_ONLY}
                if workers > 0 and away:
                    pool = stack.enter_context(MetricWorkers(away, workers))
                    here = {k: m for k, m in metrics.items() if k not in away}
            batch = batch.to(device)
            labelled = bool((batch.labels >= 0).all())
            t0 = time.perf_counter()
            maps, logits = _explain(explainer, classifier, batch.images, batch.labels if labelled else None)
            explain_s += time.perf_counter() - t0
            if labelled:
                top1.update(logits, batch.labels)
            else:  # an unlabelled folder: explain and score the top-1 class; no accuracy
                batch = _with_labels(batch, logits.argmax(dim=1))
                unlabelled += len(batch)
            if pool is not None:
                pool.submit(maps, batch, logits.argmax(dim=1))
            for metric in here.values():
                if getattr(metric, "takes_predictions", False):  # LE / OM need the top-1 class
                    metric.update(maps, batch, predictions=logits.argmax(dim=1))  # type: ignore[call-arg]
                else:
                    metric.update(maps, batch)
            seen += len(batch)
            bar.update(len(batch) + len(batch.skipped))
            if limit is not None and seen >= limit:
                break
        if pool is not None:
            pool.collect()
    finally:
        bar.close()
        stack.close()
    top1.all_reduce()
    for metric in metrics.values():
        metric.all_reduce()
    out = dict(top1.compute()) if top1.num_images else {"top1": math.nan}
    seen_all, unlabelled_all, bad_all = all_reduce_sum(seen, unlabelled, len(bad))
    out.update(images=seen_all, explain_seconds=explain_s, unlabelled=unlabelled_all, bad_samples=bad_all)
    return out


def default_metric_workers(device: torch.device) -> int:
    """One metric worker when the model runs on a GPU (the CPU is free for the metrics), none on
    the CPU, where the model's threads already use the cores (measured in
    ``benchmarks/bench_evaluate.py``)."""
    return 1 if device.type == "cuda" else 0


def _explain(explainer: SupportsExplain, classifier: Classifier, images: torch.Tensor,
             targets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(maps, logits)``: the explainer's logits when it computed them, else one forward pass."""
    with_logits = getattr(explainer, "explain_with_logits", None)
    logits = None
    if with_logits is not None:
        out = with_logits(images, targets)
        maps, logits = out.maps, out.logits
    else:
        maps = explainer.explain(images, targets)
    if logits is None:
        with torch.no_grad():
            logits = classifier(images)
    return maps.detach(), logits.detach()


def _with_labels(batch: Batch, labels: torch.Tensor) -> Batch:
    return dataclasses.replace(batch, labels=labels)


def evaluate(
    explainer: SupportsExplain,
    classifier: Classifier | torch.nn.Module | None,
    loader: Iterable[Batch],
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    limit: int | None = None,
    val_loader: Iterable[Batch] | None = None,
    progress: bool = True,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    metric_workers: int | None = None,
    ci: int = 0,
    ci_seed: int = 0,
    ci_level: float = 0.95,
    keep_per_image: bool = False,
    states: dict[str, Accumulator] | None = None,
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
            ``"pointing_game"``, ``"class_sensitivity"`` (images of several objects, each asked
            about one: ``benchmark:pairs``).
        limit: evaluate at most this many images (of each loader).
        val_loader: a separate validation split: MaxBoxAcc thresholds are chosen on it and the
            test accuracy at those thresholds is reported (``boxacc``, ``boxacc_v2``...), next to
            the best-over-thresholds oracle (``maxboxacc``...).
        progress: show a tqdm progress bar (rate and ETA).
        metric_workers: processes that update the metrics needing no classifier while the next
            batch is explained (0: in this process); ``None``: :func:`default_metric_workers`.
        metric_options: constructor keyword arguments per metric name, e.g.
            ``{"deletion_insertion": {"steps": 50}, "le_om_f1": {"binarize": "casm"}}``.
        ci: bootstrap resamples for confidence intervals over the images (0: none). The metrics
            then keep per-image states (see :mod:`masksal.evaluation.intervals`); the metrics that
            run the classifier (SM, deletion / insertion, ROAD) run it one image at a time.
        ci_seed: seed of the resampling (the same for every method: paired resamples).
        ci_level: confidence level of the intervals.
        keep_per_image: keep the metrics' per-image states without computing intervals (``ci``
            implies it), e.g. to combine several training seeds
            (:func:`~masksal.evaluation.intervals.combine_runs`).
        states: a dict that receives the metrics' accumulators (name -> accumulator, ``"top1"``
            included) once the pass is done.

    Returns:
        A flat dict: ``explainer`` (name), ``images``, ``top1`` and every metric's keys (see each
        metric's ``compute``), ``seconds`` (wall time of the test pass), ``explain_seconds``,
        ``maps_per_second``, ``skipped`` (``{metric: reason}``), ``bad_samples`` (samples that
        could not be read and were left out; ``bad_sample_messages`` names them). With ``ci``:
        ``ci`` (``{key: [low, high]}``), ``ci_level``, ``ci_resamples``, ``ci_seed``, ``ci_over``.

    Raises:
        ValueError: an unknown metric name.
    """
    if ci < 0:
        raise ValueError(f"ci must be >= 0 resamples, got {ci}")
    keep = keep_per_image or ci > 0
    if classifier is None:
        classifier = getattr(explainer, "classifier", None)
        if not isinstance(classifier, Classifier):
            raise ValueError("evaluate: pass the classifier the maps explain (this explainer has none)")
    classifier = as_classifier(classifier)  # a plain nn.Module: ImageNet normalization
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    options = dict(metric_options or {})
    strays = [k for k in options if k not in METRICS]
    if strays:
        raise ValueError(f"metric_options for unknown metric(s) {strays}; choose from {list(METRICS)}")
    name = str(getattr(explainer, "name", type(explainer).__name__))
    skipped: dict[str, str] = {}
    result: dict[str, Any] = {"explainer": name}
    n_workers = default_metric_workers(module_device(classifier)) if metric_workers is None else metric_workers
    with eval_mode(classifier):
        val_thresholds = None
        if val_loader is not None:
            if "maxboxacc" in metrics:
                val_metrics: dict[str, Metric] = {"maxboxacc": _build("maxboxacc", classifier,
                                                                      options.get("maxboxacc", {}))}
                val_skipped: dict[str, str] = {}
                _run(explainer, classifier, val_loader, val_metrics, val_skipped, limit=limit,
                     progress=progress, desc=f"{name} (val)", workers=n_workers)
                if "maxboxacc" in val_metrics and val_metrics["maxboxacc"].num_images > 0:
                    acc = val_metrics["maxboxacc"]
                    val_thresholds = acc.best_thresholds()  # type: ignore[attr-defined]
                else:
                    skipped["boxacc (val threshold)"] = val_skipped.get("maxboxacc", "the validation split is empty")
            else:
                skipped["boxacc (val threshold)"] = "maxboxacc was not requested"
        built = {m: _build(m, classifier, options.get(m, {})) for m in dict.fromkeys(metrics)}
        top1 = ClassificationAccuracy()
        for accumulator in (*built.values(), top1):
            accumulator.keep_per_image = keep
        t0 = time.perf_counter()
        bad: list[str] = []
        timing = _run(explainer, classifier, loader, built, skipped, limit=limit, progress=progress, desc=name,
                      workers=n_workers, bad=bad, top1=top1)
        seconds = time.perf_counter() - t0
    result["images"] = int(timing["images"])
    result["top1"] = timing["top1"]
    if timing["unlabelled"]:
        skipped["top1"] = f"{int(timing['unlabelled'])} image(s) have no label: their top-1 class was explained"
    for metric in built.values():
        result.update(metric.compute())
    box = built.get("maxboxacc")
    if box is not None and val_thresholds is not None:
        result.update(box.compute_at(val_thresholds))  # type: ignore[attr-defined]
        result.update({f"val_threshold_{k}": v for k, v in val_thresholds.items()})
    result["seconds"] = seconds
    result["explain_seconds"] = timing["explain_seconds"]
    result["maps_per_second"] = result["images"] / timing["explain_seconds"] if timing["explain_seconds"] > 0 \
        else math.nan
    result["skipped"] = skipped
    result["bad_samples"] = int(timing["bad_samples"])
    result["bad_sample_messages"] = bad[:100]  # this process's first ones (rank 0 under torchrun)
    accumulators: dict[str, Accumulator] = {"top1": top1, **built} if top1.num_images else dict(built)
    if ci > 0:
        from masksal.evaluation.intervals import metric_intervals

        result["ci"] = metric_intervals(accumulators, n=ci, seed=ci_seed, level=ci_level, val_thresholds=val_thresholds)
        result.update(ci_level=ci_level, ci_resamples=ci, ci_seed=ci_seed, ci_over="images")
    if states is not None:
        states.update(accumulators)
    return result


def evaluate_sharded(
    explainer: Any,
    classifier: Any,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    val_dataset: Dataset | None = None,
    limit: int | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    **evaluate_kwargs: Any,
) -> dict[str, Any]:
    """:func:`masksal.evaluation.evaluate` with the dataset split across the processes.

    Each process explains its shard (:func:`shard_dataset`); the metric accumulators are summed
    over processes, so every process returns the result of the whole split: exactly the
    single-process result for the counting metrics (top-1, LE, OM, GT-known / Top-1 Loc,
    MaxBoxAcc, PxAP), up to float summation order for the averaged ones (F1, SM, deletion /
    insertion). Rank 0 writes the result to ``out`` (JSON) and shows the progress bar. Timings
    (``seconds``, ``explain_seconds``) are rank 0's. Without a process group this is plain
    :func:`~masksal.evaluation.evaluate` over the whole dataset.

    Args:
        explainer: an :class:`~masksal.explainers.base.Explainer`.
        classifier: the :class:`~masksal.classifiers.Classifier` the maps explain, on this
            process's device.
        dataset: a map-style dataset of sample dicts (images in [0, 1], see
            :func:`masksal.types.collate`).
        batch_size: images per forward pass and process.
        num_workers: DataLoader workers per process.
        val_dataset: the validation split for MaxBoxAcc's thresholds (sharded the same way).
        limit: evaluate the first ``limit`` images of each split (of the whole split, not per process).
        out: a JSON file for the result, written by rank 0 only.
        progress: progress bar on rank 0.
        **evaluate_kwargs: ``metrics``, ``metric_options`` of :func:`~masksal.evaluation.evaluate`.

    Returns:
        The :func:`~masksal.evaluation.evaluate` result of the whole split, on every process.
    """
    from masksal.checkpoint import write_json
    from masksal.distributed import barrier, is_main_process, shard_dataset
    from masksal.types import collate

    def loader(ds: Dataset) -> DataLoader:
        if limit is not None:
            ds = Subset(ds, range(min(limit, len(ds))))  # type: ignore[arg-type]
        return DataLoader(shard_dataset(ds), batch_size=batch_size, num_workers=num_workers, collate_fn=collate,
                          pin_memory=module_device(classifier).type == "cuda")

    result = evaluate(explainer, classifier, loader(dataset),
                      val_loader=None if val_dataset is None else loader(val_dataset),
                      progress=progress and is_main_process(), **evaluate_kwargs)
    if out is not None and is_main_process():
        write_json(Path(out), {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()})
    barrier()
    return result
