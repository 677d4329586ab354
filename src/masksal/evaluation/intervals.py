"""Confidence intervals for :func:`~masksal.evaluation.evaluate` results.

``evaluate(..., ci=1000)`` keeps every metric's per-image states and adds to its result
``ci``: ``{key: [low, high]}``, the bootstrap interval over the evaluated images of every metric key
(top-1 included), plus ``ci_level``, ``ci_resamples``, ``ci_seed`` and ``ci_over`` (what was
resampled: ``"images"``, or ``"seeds and images"`` for a method evaluated with several training
seeds, see :func:`combine_runs`). The accuracy at validation-chosen MaxBoxAcc thresholds
(``boxacc``...) is resampled with those thresholds held fixed: they come from another split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from masksal.metrics.base import Accumulator
from masksal.metrics.resampling import Statistic, bootstrap, bootstrap_runs

CI_DEFAULT_RESAMPLES = 1000


def _statistic(name: str, val_thresholds: Mapping[str, float] | None) -> Statistic | None:
    if name != "maxboxacc" or val_thresholds is None:
        return None
    thresholds = dict(val_thresholds)

    def stat(metrics: Mapping[str, Accumulator]) -> dict[str, float]:
        m = metrics[name]
        return {**m.compute(), **m.compute_at(thresholds)}  # type: ignore[attr-defined]

    return stat


def metric_intervals(metrics: Mapping[str, Accumulator], *, n: int = CI_DEFAULT_RESAMPLES, seed: int = 0,
                     level: float = 0.95, val_thresholds: Mapping[str, float] | None = None
                     ) -> dict[str, list[float]]:
    """``{key: [low, high]}`` over images for every key of every accumulator (each resampled on its
    own, with the same seed, so that two methods scored on the same images are resampled alike)."""
    out: dict[str, list[float]] = {}
    for name, m in metrics.items():
        if m.num_images < 2:
            continue
        for key, (lo, hi) in bootstrap(m, n=n, seed=seed, level=level,
                                       statistic=_statistic(name, val_thresholds)).items():
            out[key] = [lo, hi]
    return out


def val_thresholds_of(result: Mapping[str, Any]) -> dict[str, float] | None:
    """The validation-chosen MaxBoxAcc thresholds of an evaluate result (``val_threshold_*``), or None."""
    found = {k.removeprefix("val_threshold_"): float(v) for k, v in result.items() if k.startswith("val_threshold_")}
    return found or None


def combine_runs(results: Sequence[dict[str, Any]], runs: Sequence[Mapping[str, Accumulator]], *,
                 n: int = CI_DEFAULT_RESAMPLES, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """One result for a method trained with several seeds: the mean over the runs of every value,
    with two-level (seeds, then images) bootstrap intervals.

    Args:
        results: each run's :func:`~masksal.evaluation.evaluate` result (same images).
        runs: each run's accumulators (name -> accumulator, kept per image), as evaluate built them.
        n, seed, level: bootstrap settings (``n = 0``: the means only, no intervals). Each run's
            ``boxacc`` values are resampled at that run's own validation thresholds.

    Returns:
        The first result with every numeric value replaced by the mean over runs, ``ci`` from
        :func:`~masksal.metrics.resampling.bootstrap_runs`, ``runs`` (how many) and
        ``run_values`` (each run's own value of every key).
    """
    if not results or len(results) != len(runs):
        raise ValueError("combine_runs: give one result and one set of accumulators per run")
    combined: dict[str, Any] = dict(results[0])
    numeric = [k for k, v in combined.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    for k in numeric:
        values = [float(r[k]) for r in results if isinstance(r.get(k), int | float)]
        combined[k] = sum(values) / len(values) if values else math.nan
    combined["run_values"] = {k: [r.get(k) for r in results] for k in numeric}
    combined["runs"] = len(results)
    combined.pop("ci", None)
    if n <= 0:
        return combined
    intervals: dict[str, list[float]] = {}
    thresholds = [val_thresholds_of(r) for r in results]
    for name in runs[0]:
        per_run = [{name: r[name]} for r in runs]
        if per_run[0][name].num_images < 2:
            continue
        stats = [_statistic(name, t) for t in thresholds]  # each run at its own validation thresholds
        _, ci = bootstrap_runs(per_run, n=n, seed=seed, level=level, statistic=stats)
        intervals.update({k: [lo, hi] for k, (lo, hi) in ci.items()})
    combined.update(ci=intervals, ci_level=level, ci_resamples=n, ci_seed=seed, ci_over="seeds and images")
    return combined
