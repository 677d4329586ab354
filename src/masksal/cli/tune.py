"""``masksal tune``: choose a rival's settings on the validation split, with a declared budget and metric."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from masksal.cli import app
from masksal.cli.common import (
    BatchOpt,
    Inputs,
    MetricOptionOpt,
    Runtime,
    errors,
    input_options,
    parse_metric_options,
    runtime_options,
)
from masksal.cli.evaluate import split_methods


@app.command(epilog="Example: masksal tune rise,ep --classifier runs/demo/masker_fix --limit 32 --out runs/tune; "
             "then masksal benchmark --methods ... --tuned runs/tune")
@errors()
@runtime_options()
@input_options(split="val", split_help="The split to tune on (never the one you report).")
def tune(
    methods: Annotated[str, typer.Argument(
        help="Comma-separated method specs, each tuned in turn from its authors' settings (the class defaults and "
             "the options given, e.g. 'rise,ep,gradcam' or 'rise:batch_size=256').")],
    classifier: Annotated[str, typer.Option(
        help="Checkpoint of the classifier the maps explain (a classifier or masker checkpoint), or a weight file "
             "with --arch.")],
    grid: Annotated[list[str] | None, typer.Option(
        help="Override a method's declared TUNING_GRID (repeatable): "
             "'rise:grid_size=[5,7,9];p=[0.25,0.5]'; a list-valued option as a list of lists.")] = None,
    metric: Annotated[str, typer.Option(
        help="Selection metric (higher or lower is better as the metric says): maxboxacc_v2 (default, "
             "Choe et al.'s choice for tuning on held-out data), le, f1, pxap, sm, insertion_auc, ...")]
    = "maxboxacc_v2",
    budget: Annotated[int, typer.Option(
        min=1, help="Configurations evaluated per method, the authors' settings included (the same for every "
                    "method; a grid larger than the budget is sampled at random).")] = 6,
    limit: Annotated[int, typer.Option(min=2, help="Validation images per configuration.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the random subset when a grid exceeds the budget.")] = 0,
    ci_resamples: Annotated[int, typer.Option(
        min=0, help="Bootstrap resamples for each configuration's interval on the selection metric (0: none).")]
    = 1000,
    metric_option: MetricOptionOpt = None,
    batch_size: BatchOpt = 32,
    out: Annotated[Path, typer.Option(
        help="Folder for tuning.json, tuning.md and best_specs.txt (results of other methods already there are "
             "kept).")] = Path("runs/tune"),
    *,
    inputs: Inputs,
    runtime: Runtime,
) -> None:
    """Tune saliency methods on a validation split: every method gets the same budget of configurations,
    chosen by one declared metric; writes each configuration's scores and the chosen spec."""
    from masksal.cli.specs import classifier_and_data, is_masker_spec, loader_of
    from masksal.devices import resolve_device
    from masksal.evaluation.tuning import SELECTION_METRICS, parse_grid, tune, write_tuning
    from masksal.explainers import parse_method_spec
    from masksal.explainers.registry import explainer_factory

    specs = split_methods(methods)
    if not specs:
        raise ValueError("METHODS: name at least one method")
    if metric not in SELECTION_METRICS:
        raise ValueError(f"--metric {metric!r}: choose from {', '.join(sorted(SELECTION_METRICS))}")
    for spec in specs:
        if is_masker_spec(spec):
            raise ValueError(f"{spec}: a masker's settings are its training recipe (masksal train --set ...), "
                             "not tuned here")
    grids = {}
    for text in grid or []:
        name, values = parse_grid(text)
        grids[explainer_factory(name)] = values
    options = parse_metric_options(metric_option)
    dev = resolve_device(runtime.device)
    clf, ds, _, _ = classifier_and_data(classifier, [], dev, inputs)
    loader = loader_of(ds, batch_size)
    if inputs.split == "test":
        typer.echo("note: tuning on the test split; report numbers on another split", err=True)
    paths = {}
    for spec in specs:
        factory = explainer_factory(parse_method_spec(spec)[0])
        res = tune(spec, clf, loader, grid=grids.get(factory), metric=metric, budget=budget, limit=limit, seed=seed,
                   ci=ci_resamples, metric_options=options, progress=runtime.progress)
        typer.echo(res.markdown())
        typer.echo(f"chosen: {res.best_spec}\n")
        paths = write_tuning([res], out)  # after each method: an interrupted run keeps the finished ones
    typer.echo(f"wrote {paths['markdown']}, {paths['json']} and {paths['best']}")
