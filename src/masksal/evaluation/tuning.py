"""Tune a saliency method's settings on a validation split: a declared grid, budget and metric.

A fair comparison gives every method the same chance to be set up for the data at hand. Each
explainer class declares the settings worth trying in its ``TUNING_GRID`` (a reader sees what was
tried); :func:`tune` evaluates the authors' settings (the class's defaults, plus any options the
method spec fixes) and then configurations of the grid, at most ``budget`` configurations in all,
each on the same validation images, and picks the best by one metric declared in advance. A tie
keeps the authors' settings. When the grid holds more configurations than the budget allows, a
seeded random subset is tried (random search, Bergstra & Bengio 2012).

The default selection metric is MaxBoxAccV2 (Choe et al. 2020): it is the metric Choe et al.
proposed for choosing the hyperparameters of localization methods on held-out data, it scores the
map at every threshold (so it does not depend on how a method scales its maps, unlike the mean
threshold of LE), and it averages boxes at IoU 0.3, 0.5 and 0.7 (coarse and precise localization).
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from masksal.classifiers import Classifier
from masksal.types import Batch

SELECTION_METRICS: dict[str, tuple[str, bool]] = {
    "maxboxacc_v2": ("maxboxacc", True), "maxboxacc": ("maxboxacc", True), "le": ("le_om_f1", False),
    "om": ("le_om_f1", False), "f1": ("le_om_f1", True), "pxap": ("pxap", True), "sm": ("sm", False),
    "deletion_auc": ("deletion_insertion", False), "insertion_auc": ("deletion_insertion", True),
    "pointing_game": ("pointing_game", True), "road_gap": ("road", True),
}
"""Selection metric key -> (the :func:`~masksal.evaluation.evaluate` metric computing it, higher is better)."""
DEFAULT_METRIC = "maxboxacc_v2"
DEFAULT_BUDGET = 6
REPORTED = ("le_om_f1", "maxboxacc", "pxap")
"""Cheap localization metrics computed beside the selection metric (the maps cost the time)."""


def tuning_grid(method: str) -> dict[str, list[Any]]:
    """The ``TUNING_GRID`` the method ``method`` (a registered name) declares; ``{}`` if none."""
    from masksal.explainers.registry import explainer_factory

    return {k: list(v) for k, v in dict(getattr(explainer_factory(method), "TUNING_GRID", {}) or {}).items()}


def parse_grid(text: str) -> tuple[str, dict[str, list[Any]]]:
    """Read ``"rise:grid_size=[4,7,10];p=[0.25,0.5]"`` into ``("rise", {"grid_size": [4, 7, 10], ...})``.

    A list gives the values to try, a single value one value; an option whose value is itself a list
    (Extremal Perturbation's ``areas``) is written as a list of lists, ``areas=[[0.1,0.2],0.3]``.

    Raises:
        ValueError: a malformed spec or an option without values.
    """
    from masksal.explainers import parse_method_spec

    name, options = parse_method_spec(text)
    grid = {k: (list(v) if isinstance(v, list) else [v]) for k, v in options.items()}
    empty = [k for k, v in grid.items() if not v]
    if empty:
        raise ValueError(f"--grid {text!r}: no value to try for {empty}")
    return name, grid


def format_spec(name: str, options: Mapping[str, Any]) -> str:
    """The method spec ``name:key=value;...`` that :func:`~masksal.explainers.parse_method_spec` reads back."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if v is None:
            return "none"
        if isinstance(v, list | tuple):
            return "[" + ",".join(value(x) for x in v) + "]"
        return repr(v) if isinstance(v, float) else str(v)

    return name if not options else name + ":" + ";".join(f"{k}={value(v)}" for k, v in options.items())


def _defaults(method: str) -> dict[str, Any]:
    from masksal.explainers.registry import explainer_factory

    try:
        params = inspect.signature(explainer_factory(method)).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def configurations(grid: Mapping[str, Sequence[Any]], authors: Mapping[str, Any], budget: int,
                   seed: int = 0, resolved: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The options to try: ``{}`` (the authors' settings) first, then grid points that differ from
    them, in the grid's order; a seeded random subset when there are more than ``budget - 1``.

    Args:
        grid: option -> values.
        authors: the authors' value of each option (the class default or the spec's fixed option).
        budget: configurations in all, the authors' included (>= 1).
        seed: seed of the random subset.
        resolved: what an authors' option given as a placeholder became once the explainer was
            built (Grad-CAM's ``layer=None`` is the family's ``"layer4"``); a grid value equal to
            either is the authors' setting, not a new configuration.
    """
    if budget < 1:
        raise ValueError(f"budget must be >= 1 configuration, got {budget}")
    keys = list(grid)
    points = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]
    others = [p for p in points if any(not _is_authors(k, p[k], authors, resolved) for k in p)]
    if len(others) > budget - 1:
        chosen = sorted(random.Random(seed).sample(range(len(others)), budget - 1))
        others = [others[i] for i in chosen]
    return [{}, *others]


_MISSING = object()


def _is_authors(key: str, value: Any, authors: Mapping[str, Any], resolved: Mapping[str, Any] | None) -> bool:
    return value == authors.get(key, _MISSING) or (resolved is not None and value == resolved.get(key, _MISSING))


def _resolved(explainer: object, keys: Iterable[str]) -> dict[str, Any]:
    """The values the built explainer holds for ``keys`` (the attributes of the same names)."""
    return {k: getattr(explainer, k) for k in keys if isinstance(getattr(explainer, k, None), str | int | float)}


@dataclass
class Trial:
    """One configuration evaluated on the validation images."""

    spec: str
    options: dict[str, Any]
    value: float
    interval: list[float] | None
    results: dict[str, float]
    seconds: float
    authors: bool


@dataclass
class TuningResult:
    """What :func:`tune` tried and chose. ``authors_spec``: the method as given (the authors' settings);
    ``best_spec``: the chosen configuration (equal to ``authors_spec`` when nothing beat it)."""

    method: str
    authors_spec: str
    best_spec: str
    metric: str
    higher_is_better: bool
    budget: int
    images: int
    grid: dict[str, list[Any]]
    trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TuningResult:
        d = dict(data)
        d["trials"] = [Trial(**t) for t in d.get("trials", [])]
        return cls(**d)

    def markdown(self) -> str:
        """A table of every configuration tried, the chosen one in bold."""
        from masksal.report import markdown_table

        cols = [("le", "LE ↓", "{:.1f}"), ("maxboxacc_v2", "MaxBoxAccV2", "{:.1f}"), ("pxap", "PxAP", "{:.1f}")]
        cols = [c for c in cols if c[0] != self.metric]
        body = []
        for t in self.trials:
            sel = "-" if math.isnan(t.value) else f"{t.value:.2f}"
            if t.interval is not None and sel != "-":
                sel += f" [{t.interval[0]:.2f}, {t.interval[1]:.2f}]"
            extra = [fmt.format(t.results[k]) if isinstance(t.results.get(k), int | float) else "-"
                     for k, _, fmt in cols]
            rate = self.images / t.seconds if t.seconds > 0 else math.nan
            name = f"`{t.spec}`" + (" (authors')" if t.authors else "")
            row = [name, sel, *extra, f"{rate:.2f}"]
            body.append([f"**{c}**" for c in row] if t.spec == self.best_spec else row)
        header = ["configuration", f"{self.metric} {'↑' if self.higher_is_better else '↓'} (val)",
                  *(h for _, h, _ in cols), "maps/s"]
        return (f"### {self.authors_spec}\n\nChosen: `{self.best_spec}` ({len(self.trials)} of a budget of "
                f"{self.budget} configurations, {self.images} validation images, {self.seconds:.0f} s).\n\n"
                + markdown_table(header, body, first_align="---"))


def tune(
    method: str,
    classifier: Classifier,
    loader: Iterable[Batch],
    *,
    grid: Mapping[str, Sequence[Any]] | None = None,
    metric: str = DEFAULT_METRIC,
    budget: int = DEFAULT_BUDGET,
    limit: int | None = None,
    seed: int = 0,
    ci: int = 1000,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = True,
) -> TuningResult:
    """Choose a method's settings on a validation split (see the module's docstring).

    Args:
        method: a method spec, ``"rise"`` or ``"ep:iterations=400"``: the name of a registered
            method and the options held fixed (with the class defaults: the authors' settings).
        classifier: the classifier the maps explain.
        loader: the validation split, batches of :class:`~masksal.types.Batch`; every configuration
            sees the same images.
        grid: option -> values to try; default: the method class's ``TUNING_GRID``.
        metric: the selection metric, a key of :data:`SELECTION_METRICS`.
        budget: configurations evaluated in all, the authors' included.
        limit: validation images (the first ``limit`` of the loader).
        seed: seed of the random subset when the grid exceeds the budget.
        ci: bootstrap resamples for each configuration's interval on the selection metric (0: none).
        metric_options: constructor options per metric, as for :func:`~masksal.evaluation.evaluate`.
        progress: progress bars.

    Returns:
        A :class:`TuningResult`; ``best_spec`` builds the chosen explainer.

    Raises:
        ValueError: an unknown method, metric or option, or an empty grid.
    """
    from masksal.evaluation.evaluate import evaluate
    from masksal.explainers import create_explainer, parse_method_spec

    if metric not in SELECTION_METRICS:
        raise ValueError(f"unknown selection metric {metric!r}; choose from {sorted(SELECTION_METRICS)}")
    family, higher = SELECTION_METRICS[metric]
    name, base = parse_method_spec(method)
    tried = {k: list(v) for k, v in (grid if grid is not None else tuning_grid(name)).items()}
    defaults = _defaults(name)
    unknown = sorted(set(tried) - set(defaults))
    if defaults and unknown:
        raise ValueError(f"{name} has no option(s) {unknown} to tune; its options: {', '.join(defaults)}")
    authors = {**defaults, **base}
    metrics = list(dict.fromkeys([family, *REPORTED]))
    result = TuningResult(method=name, authors_spec=method, best_spec=method, metric=metric, higher_is_better=higher,
                          budget=budget, images=0, grid=tried)
    t_all = time.perf_counter()
    best_value = math.nan
    first = create_explainer(name, classifier, **base)
    resolved = _resolved(first, tried)
    for options in configurations(tried, authors, budget, seed, resolved):
        merged = {**base, **options}
        # The spec names the options that differ from the authors' (plus those the method spec fixed).
        spec = method if not options else format_spec(name, {**base, **{
            k: v for k, v in options.items() if not _is_authors(k, v, authors, resolved)}})
        explainer = first if not options else create_explainer(name, classifier, **merged)
        t0 = time.perf_counter()
        res = evaluate(explainer, classifier, loader, metrics=metrics, limit=limit, progress=progress,
                       metric_options=metric_options, ci=ci)
        seconds = time.perf_counter() - t0
        value = float(res.get(metric, math.nan))
        iv = res.get("ci", {}).get(metric)
        numbers = {k: float(v) for k, v in res.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        result.trials.append(Trial(spec=spec, options=options, value=value, interval=None if iv is None else list(iv),
                                   results=numbers, seconds=float(res.get("explain_seconds", seconds)),
                                   authors=not options))
        result.images = int(res["images"])
        better = (value > best_value) if higher else (value < best_value)
        if math.isnan(best_value) or (not math.isnan(value) and better):
            best_value, result.best_spec = value, spec
    result.seconds = time.perf_counter() - t_all
    return result


def write_tuning(results: Sequence[TuningResult], out_dir: Path) -> dict[str, Path]:
    """Add ``results`` to ``out_dir/tuning.json`` (replacing earlier results of the same method
    spec) and rewrite ``tuning.md`` (every method's table) and ``best_specs.txt`` (one chosen spec
    a line, for ``masksal benchmark --methods``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / "tuning.json"
    kept: list[TuningResult] = []
    if js.exists():
        kept = [TuningResult.from_json(d) for d in json.loads(js.read_text()).get("methods", [])]
    new = {r.authors_spec for r in results}
    everything = [r for r in kept if r.authors_spec not in new] + list(results)
    js.write_text(json.dumps({"methods": [r.to_json() for r in everything]}, indent=2, default=float))
    md = out_dir / "tuning.md"
    md.write_text("# Tuning on the validation split\n\n" + "\n\n".join(r.markdown() for r in everything))
    best = out_dir / "best_specs.txt"
    best.write_text("".join(f"{r.best_spec}\n" for r in everything))
    return {"json": js, "markdown": md, "best": best}


def read_tuning(path: Path) -> dict[str, TuningResult]:
    """``tuning.json`` (a file or its folder) -> {authors' spec: result}."""
    p = path / "tuning.json" if path.is_dir() else path
    if not p.is_file():
        raise ValueError(f"--tuned {path}: no tuning.json there (write one with masksal tune)")
    try:
        data = json.loads(p.read_text())
        results = [TuningResult.from_json(d) for d in data["methods"]]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--tuned {p}: not a tuning.json written by masksal tune ({e})") from None
    return {r.authors_spec: r for r in results}
