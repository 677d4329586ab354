"""Bootstrap confidence intervals of any metric, over images (and over training seeds).

An accumulator built with ``keep_per_image = True`` keeps each image's share of its state (see
:mod:`masksal.metrics.base`). A bootstrap resample draws ``N`` of the ``N`` images with replacement;
the resample's state is the per-image states weighted by how often each image was drawn, and the
metric is computed from that state by the accumulator's own ``compute``: MaxBoxAcc picks its best
threshold over the resample, PxAP pools the resample's histograms, ROAD averages its curves. The
interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled values
(percentile bootstrap, Efron & Tibshirani 1993), computed by ``scipy.stats.bootstrap``; BCa and the
basic bootstrap are one option away.

When a method involves training (a masker trained with several seeds), :func:`bootstrap_runs`
resamples both levels: the runs (seeds) with replacement, and the images with replacement (the same
images for every run, since every run is scored on the same images); the estimate is the mean
over runs.

Example:
    >>> import torch
    >>> from masksal.metrics import PointingGame
    >>> from masksal.types import Batch
    >>> pg = PointingGame(); pg.keep_per_image = True
    >>> maps = torch.zeros(4, 8, 8); maps[:, 2, 2] = 1; maps[3, 7, 7] = 2
    >>> boxes = [torch.tensor([[0., 0., 3., 3.]])] * 4
    >>> pg.update(maps, Batch(torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long), boxes))
    >>> pg.compute()["pointing_game"], len(bootstrap(pg, n=200)["pointing_game"])
    (75.0, 2)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np

from masksal.metrics.base import Accumulator

Interval = tuple[float, float]
"""``(low, high)`` of a confidence interval, in the metric's own units."""
Statistic = Callable[[Mapping[str, Accumulator]], Mapping[str, float]]
"""Metric values from (resampled) accumulators; the default is the union of their ``compute()``."""
BootstrapMethod = Literal["percentile", "basic", "bca"]


def _as_mapping(metrics: Accumulator | Mapping[str, Accumulator]) -> dict[str, Accumulator]:
    return {metrics.name: metrics} if isinstance(metrics, Accumulator) else dict(metrics)


def _default_statistic(metrics: Mapping[str, Accumulator]) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in metrics.values():
        out.update(m.compute())
    return out


class _Resampler:
    """The per-image states of one or several accumulators over the same images, ready to be
    reweighted: ``values(counts)`` -> ``(K, R)`` metric values for ``R`` resamples."""

    def __init__(self, metrics: Mapping[str, Accumulator], statistic: Statistic | None) -> None:
        if not metrics:
            raise ValueError("bootstrap: no metric given")
        sizes = {name: m.num_kept_images for name, m in metrics.items()}
        for m in metrics.values():
            m._check_kept()  # raises with the reason when per-image states are missing
        if len(set(sizes.values())) != 1:
            raise ValueError(f"bootstrap: the metrics kept different numbers of images {sizes}; resample "
                             "metrics of the same images together, others one by one")
        self.metrics = dict(metrics)
        self.statistic = statistic or _default_statistic
        self.n = next(iter(sizes.values()))
        # Images in the order of their ids when every image has a distinct one: the resamples then
        # do not depend on the order images arrived in (shards, metric workers, batch size).
        self.states = {}
        for name, m in self.metrics.items():
            ids = m.per_image_ids()
            order = np.arange(self.n)
            if all(i is not None for i in ids) and len(set(ids)) == self.n:
                order = np.argsort(np.asarray(ids, dtype=object).astype(str), kind="stable")
            self.states[name] = {k: v[order].reshape(self.n, -1) for k, v in m.per_image_states().items()}
        self.keys = [k for k, v in self.statistic(self.metrics).items() if isinstance(v, int | float)]

    def values(self, counts: np.ndarray) -> np.ndarray:
        """``(K, R)`` values of the statistic for ``R`` resamples given as ``(R, N)`` image counts."""
        out = np.full((len(self.keys), counts.shape[0]), np.nan)
        summed = {name: {k: counts @ v for k, v in st.items()} for name, st in self.states.items()}
        for r in range(counts.shape[0]):
            resampled = {name: m.with_state({k: summed[name][k][r].reshape(m._state[k].shape)
                                             for k in m._state})
                         for name, m in self.metrics.items()}
            stat = self.statistic(resampled)
            for j, k in enumerate(self.keys):
                v = stat.get(k, math.nan)
                out[j, r] = float(v) if isinstance(v, int | float) else math.nan
        return out


def _counts(indices: np.ndarray, n: int) -> np.ndarray:
    """``(R, N)`` how often each image appears in each row of ``(R, M)`` drawn indices."""
    rows = indices.shape[0]
    flat = (indices + n * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


def bootstrap(
    metrics: Accumulator | Mapping[str, Accumulator],
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    method: BootstrapMethod = "percentile",
    statistic: Statistic | None = None,
) -> dict[str, Interval]:
    """Bootstrap confidence intervals over images of every value a metric computes.

    Args:
        metrics: one accumulator, or several over the same images (resampled together), each
            updated with ``keep_per_image = True``.
        n: number of resamples.
        seed: seed of the resampling; the same seed and number of images give the same resamples,
            so methods scored on the same images are resampled identically (paired).
        level: confidence level in (0, 1).
        method: ``"percentile"`` (default), ``"basic"`` or ``"bca"`` (bias-corrected and
            accelerated; ``N`` extra evaluations for its jackknife).
        statistic: values from the resampled accumulators (a mapping name -> accumulator, the
            names of ``metrics``, or the accumulator's ``name``); default: the union of their
            ``compute()``. Use it for values computed otherwise, e.g. MaxBoxAcc at thresholds fixed
            on a validation split (``lambda m: m["maxboxacc"].compute_at(thresholds)``).

    Returns:
        ``{key: (low, high)}`` for every numeric key of the statistic. An interval is NaN where the
        resampled values are (e.g. PxAP of a resample without object pixels); a value that every
        resample shares gives ``(value, value)``.

    Raises:
        ValueError: no per-image states (``keep_per_image`` was off), metrics over different
            numbers of images, fewer than 2 images, or a bad ``n``, ``level`` or ``method``.
    """
    from scipy.stats import bootstrap as scipy_bootstrap

    if n < 1:
        raise ValueError(f"bootstrap: n must be >= 1, got {n}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap: level must lie in (0, 1), got {level}")
    if method not in ("percentile", "basic", "bca"):
        raise ValueError(f"bootstrap: method must be 'percentile', 'basic' or 'bca', got {method!r}")
    res = _Resampler(_as_mapping(metrics), statistic)
    if res.n < 2:
        raise ValueError(f"bootstrap: need at least 2 images, got {res.n}")

    def stat(indices: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.moveaxis(np.asarray(indices), axis, -1)
        lead = idx.shape[:-1]
        values = res.values(_counts(idx.reshape(-1, idx.shape[-1]), res.n))
        return values.reshape(len(res.keys), *lead)

    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        # Degenerate resamples (a value every resample shares) and NaN values are reported as such.
        warnings.simplefilter("ignore")
        ci = scipy_bootstrap((np.arange(res.n),), stat, n_resamples=n, confidence_level=level,
                             method="BCa" if method == "bca" else method, vectorized=True, batch=100,
                             rng=np.random.default_rng(seed)).confidence_interval
    low, high = np.atleast_1d(ci.low), np.atleast_1d(ci.high)
    point = stat(np.arange(res.n)[None])[:, 0]
    out: dict[str, Interval] = {}
    for j, k in enumerate(res.keys):
        lo, hi = float(low[j]), float(high[j])
        if math.isnan(lo) and math.isnan(hi) and not math.isnan(point[j]):
            # scipy gives NaN when every resample has the same value; that value is the interval.
            samples = stat(np.random.default_rng(seed).integers(0, res.n, (min(n, 50), res.n)))[j]
            if np.all(samples == point[j]):
                lo = hi = float(point[j])
        out[k] = (lo, hi)
    return out


def bootstrap_runs(
    runs: Sequence[Accumulator | Mapping[str, Accumulator]],
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    statistic: Statistic | Sequence[Statistic | None] | None = None,
) -> tuple[dict[str, float], dict[str, Interval]]:
    """Estimate and two-level bootstrap interval for a method trained with several seeds.

    Each run (one seed) holds accumulators over the same images. A resample draws the runs with
    replacement and, independently, the images with replacement (the same draw for every run, as
    every run was scored on those images); its value is the mean over the drawn runs of the metric
    computed on the drawn images. The interval is the percentile interval of those values; the
    estimate is the mean over runs of each run's value on all images. With one run this is the
    percentile bootstrap over images.

    Args:
        runs: per seed, one accumulator or a mapping of them (same names, same images), updated
            with ``keep_per_image = True``.
        n, seed, level: as in :func:`bootstrap`.
        statistic: as in :func:`bootstrap`, or one per run (e.g. each run's MaxBoxAcc at its own
            validation thresholds); every run must give the same keys.

    Returns:
        ``(estimates, intervals)``: ``{key: mean over runs}``, ``{key: (low, high)}``.

    Raises:
        ValueError: no run, runs over different numbers of images, or no per-image states.
    """
    # Hand-written: scipy.stats.bootstrap resamples one level (the images) and has no nested
    # (runs, then images) resampling.
    if not runs:
        raise ValueError("bootstrap_runs: no run given")
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap_runs: level must lie in (0, 1), got {level}")
    stats = list(statistic) if isinstance(statistic, Sequence) else [statistic] * len(runs)
    if len(stats) != len(runs):
        raise ValueError(f"bootstrap_runs: {len(stats)} statistics for {len(runs)} runs")
    resamplers = [_Resampler(_as_mapping(r), st) for r, st in zip(runs, stats, strict=True)]
    sizes = {r.n for r in resamplers}
    if len(sizes) != 1:
        raise ValueError(f"bootstrap_runs: the runs were scored on different numbers of images {sorted(sizes)}")
    keys = resamplers[0].keys
    if any(r.keys != keys for r in resamplers):
        raise ValueError("bootstrap_runs: the runs compute different metric keys")
    n_img, n_runs = sizes.pop(), len(resamplers)
    rng = np.random.default_rng(seed)
    image_counts = _counts(rng.integers(0, n_img, (n, n_img)), n_img)
    run_counts = _counts(rng.integers(0, n_runs, (n, n_runs)), n_runs)  # (R, S)
    full = np.ones((1, n_img))
    estimates = np.mean([r.values(full)[:, 0] for r in resamplers], axis=0)
    total = np.zeros((len(keys), n))
    for s, r in enumerate(resamplers):
        used = run_counts[:, s] > 0
        if used.any():
            total[:, used] += r.values(image_counts[used]) * run_counts[used, s]
    values = total / n_runs
    alpha = (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN intervals
        low = np.nanquantile(values, alpha, axis=1)
        high = np.nanquantile(values, 1.0 - alpha, axis=1)
    return ({k: float(estimates[j]) for j, k in enumerate(keys)},
            {k: (float(low[j]), float(high[j])) for j, k in enumerate(keys)})


def separated_best(estimates: Sequence[float], intervals: Sequence[Interval | None],
                   higher_is_better: bool) -> int | None:
    """The index of the best estimate when its interval lies strictly apart from every other's.

    Args:
        estimates: one value per method (NaN: not measured, ignored).
        intervals: one ``(low, high)`` per method, or None where a method has none.
        higher_is_better: the metric's direction.

    Returns:
        The best method's index, or None when fewer than two methods have a value, the best has no
        interval, or its interval overlaps another method's interval (or another's value, for a
        method without interval).
    """
    valid = [i for i, v in enumerate(estimates) if v is not None and not math.isnan(v)]
    if len(valid) < 2:
        return None
    sign = 1.0 if higher_is_better else -1.0
    best = max(valid, key=lambda i: sign * estimates[i])
    iv = intervals[best]
    if iv is None or any(math.isnan(x) for x in iv):
        return None
    worst_edge = min(iv) if higher_is_better else max(iv)
    for i in valid:
        if i == best:
            continue
        other = intervals[i]
        edge = estimates[i] if other is None or any(math.isnan(x) for x in other) else \
            (max(other) if higher_is_better else min(other))
        if (worst_edge <= edge) if higher_is_better else (worst_edge >= edge):
            return None
    return best
