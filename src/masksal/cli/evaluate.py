"""``masksal evaluate | benchmark | data export``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from masksal.cli import app
from masksal.cli.common import (
    BatchOpt,
    Inputs,
    NumImagesOpt,
    Runtime,
    ScalingOpt,
    Scoring,
    check_out_dir,
    check_out_file,
    errors,
    scoring_command,
)

data_app = typer.Typer(no_args_is_help=True, help="Work with the built-in benchmark and dataset formats.")
app.add_typer(data_app, name="data")

METRIC_HELP = ("Comma-separated: le_om_f1, maxboxacc, pxap, sm, deletion_insertion, road, pointing_game, "
               "class_sensitivity (on benchmark:pairs).")


def split_methods(text: str) -> list[str]:
    """Split ``--methods`` on the commas outside brackets (``ep:areas=[0.1,0.2],gradcam``)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def expand_runs(spec: str) -> list[str]:
    """``NAME:A|B|C`` -> ``[NAME:A, NAME:B, NAME:C]``: one method run several times (training seeds of a
    masker, ``masker:runs/s0|runs/s1``, or random seeds, ``rise:seed=0|seed=1``); a spec without ``|``
    is one run."""
    if "|" not in spec:
        return [spec]
    name, colon, rest = spec.partition(":")
    runs = [r.strip() for r in rest.split("|")]
    if not colon or not name.strip() or not all(runs):
        raise ValueError(f"--methods {spec!r}: write several runs of one method as NAME:OPTIONS|OPTIONS|..., "
                         "e.g. masker:runs/s0|runs/s1")
    return [f"{name.strip()}:{r}" for r in runs]


def _metric_list(metrics: str) -> list[str]:
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    if not names:
        raise ValueError("--metrics: name at least one metric")
    return names


def _exit_on_bad_samples(results: list[dict[str, Any]]) -> None:
    """Exit 1 (after every output is written) when samples could not be read: the numbers cover the rest."""
    bad = max((int(r.get("bad_samples", 0)) for r in results), default=0)
    if bad:
        first = next(m for r in results for m in r.get("bad_sample_messages", []) or ["?"])
        typer.echo(f"error: {bad} sample(s) could not be read and were left out (first: {first}); the numbers "
                   "above cover the others", err=True)
        raise typer.Exit(1)


@app.command(epilog="Example: masksal evaluate masker:runs/demo/masker_ca --limit 500 --out runs/evaluate.json")
@scoring_command(ci=False)
def evaluate(
    method: Annotated[str, typer.Argument(help="masker:CHECKPOINT, a checkpoint folder, or a method name with "
                                          "options (gradcam, rise:n_masks=500, ...).")],
    classifier: Annotated[str | None, typer.Option(
        help="Classifier checkpoint (default: the masker's), or a weight file with --arch. For a masker trained "
             "alongside its classifier (CA), the classifier it started from: the metrics that run a classifier then "
             "use that one.")] = None,
    val_split: Annotated[str | None, typer.Option(
        help="Choose MaxBoxAcc thresholds on this split (no leakage); 'none' to skip.")] = "val",
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate at most N images (quick look).")] = None,
    metrics: Annotated[str, typer.Option(help=METRIC_HELP)] = "le_om_f1,maxboxacc,pxap,sm,deletion_insertion",
    batch_size: BatchOpt = 64,
    metric_workers: Annotated[int | None, typer.Option(
        min=0, help="Processes updating the map-only metrics beside the model (default: 1 with a GPU, 0 on CPU).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
    *,
    scoring: Scoring,
    inputs: Inputs,
    runtime: Runtime,
) -> None:
    """Evaluate a saliency method on a dataset: every metric, a table, and JSON.

    Sharded under torchrun (torchrun --nproc-per-node N -m masksal evaluate ...): each process
    explains its part of the split, the metrics are summed, rank 0 prints and writes the result.
    """
    from masksal.checkpoint import write_json
    from masksal.cli.specs import build_dataset, load_evaluated, method_label
    from masksal.distributed import is_main_process, process_device, torchrun_session
    from masksal.evaluation import evaluate_sharded, format_table

    check_out_file(out)
    names = _metric_list(metrics)
    with torchrun_session(runtime.device):
        main = is_main_process()
        dev = process_device(runtime.device)
        explainer, clf, ds, img, ref = load_evaluated(method, classifier, dev, inputs)
        val_ds = None
        if val_split and val_split != "none" and "maxboxacc" in names:
            val_ds = build_dataset(inputs.data, val_split, img, inputs.n, reference=ref)
        res = evaluate_sharded(explainer, clf, ds, batch_size=batch_size, val_dataset=val_ds, limit=limit,
                               progress=runtime.progress, metrics=names, metric_workers=metric_workers,
                               metric_options=scoring.metric_options, ci=scoring.ci, ci_seed=scoring.ci_seed)
        res["explainer"] = method_label(method, explainer)
    if not main:
        return
    typer.echo(format_table(res))
    if out is not None:
        write_json(out, json.loads(json.dumps(res, default=float)))
        typer.echo(f"wrote {out}")
    _exit_on_bad_samples([res])


@app.command(epilog='Example: masksal benchmark --methods "masker:runs/demo/masker_ca,gradcam,rise:n_masks=500" '
             "--limit 64")
@scoring_command(ci=True)
def benchmark(
    methods: Annotated[str, typer.Option(help="Comma-separated method specs: masker:CKPT, gradcam, "
                                         "'rise:n_masks=4000', ep, ... (options after ':', split by ';' "
                                         "when several).")],
    classifier: Annotated[str | None, typer.Option(
        help="Classifier checkpoint (default: the first masker's), or a weight file with --arch.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate at most N images per method.")] = None,
    metrics: Annotated[str, typer.Option(help=METRIC_HELP)] = "le_om_f1,maxboxacc,pxap,sm",
    batch_size: BatchOpt = 64,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/benchmark"),
    scaling: ScalingOpt = "shared",
    tuned: Annotated[Path | None, typer.Option(
        help="tuning.json (or its folder) from masksal tune: each method given as it was tuned gets a second row "
             "with the configuration chosen on the validation split.")] = None,
    *,
    scoring: Scoring,
    inputs: Inputs,
    runtime: Runtime,
) -> None:
    """Compare saliency methods on one classifier and dataset: quality and speed in one table.

    Several runs of one method (training seeds) share a row: masker:runs/s0|runs/s1|runs/s2 reports
    the mean over the runs, with intervals over seeds and images.
    """
    import platform

    import torch

    from masksal.cli.specs import classifier_and_data, load_method, loader_of, method_label
    from masksal.devices import resolve_device
    from masksal.evaluation import compare_methods, format_table, speed_table, write_outputs
    from masksal.evaluation.tuning import read_tuning
    from masksal.report.side_by_side import write_side_by_side
    from masksal.training import dataset_classes
    from masksal.types import collate

    check_out_dir(out)
    names = _metric_list(metrics)
    specs = split_methods(methods)
    if not specs:
        raise ValueError("--methods: name at least one method")
    tuning = read_tuning(tuned) if tuned is not None else {}
    dev = resolve_device(runtime.device)
    runs = [expand_runs(spec) for spec in specs]
    flat = [r for group in runs for r in group]
    clf, ds, size, _ = classifier_and_data(classifier, flat, dev, inputs)
    loader = loader_of(ds, batch_size)
    rows_to_run: list[tuple[str, list[str]]] = []
    for spec, group in zip(specs, runs, strict=True):
        chosen = tuning.get(spec)
        if chosen is None:
            rows_to_run.append((spec, group))
        elif chosen.best_spec == spec:
            rows_to_run.append((f"{spec} (authors' = tuned)", group))
        else:
            rows_to_run += [(f"{spec} (authors')", group), (f"{chosen.best_spec} (tuned)", [chosen.best_spec])]
    loaded: list[tuple[str, list[Any]]] = []
    for label, group in rows_to_run:
        explainers = [load_method(r, clf, dev) for r in group]
        if len(group) > 1:  # a masker's runs by their first folder, other methods by the spec
            first = method_label(group[0], explainers[0])
            label = f"{first if first != group[0] else label} ({len(group)} runs)"
        elif label == group[0]:
            label = method_label(label, explainers[0])
        loaded.append((label, explainers))
    rows = compare_methods([(label, es if len(es) > 1 else es[0]) for label, es in loaded], clf, loader,
                           metrics=names, limit=limit, progress=runtime.progress,
                           metric_options=scoring.metric_options, ci=scoring.ci, ci_seed=scoring.ci_seed)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else \
        f"CPU {platform.machine()}, {runtime.threads} threads"
    paths = write_outputs(rows, out, {"device": name, "methods": specs, "data": inputs.data, "split": inputs.split,
                                      "limit": limit, "image_size": size,
                                      "tuned": None if tuned is None else str(tuned)})
    sample = collate([ds[i] for i in range(min(8, len(ds)))]).to(dev)  # type: ignore[arg-type]
    page = write_side_by_side([(label, es[0]) for label, es in loaded], sample, out / "side_by_side.html",
                              classifier=clf, class_names=dataset_classes(ds) or None,
                              scaling=scaling.replace("-", "_"))
    typer.echo(format_table(rows))
    typer.echo("")
    typer.echo(speed_table(rows))
    typer.echo(f"wrote {paths['markdown']}, {paths['json']} and {page}")
    _exit_on_bad_samples(rows)


@data_app.command("export", epilog="Example: masksal data export --out runs/wsol --num-images 500")
@errors()
def data_export(
    out: Annotated[Path, typer.Option(help="Folder to write the wsolevaluation layout into.")],
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    n: NumImagesOpt = 2000,
    size: Annotated[int, typer.Option(min=32, max=224, help="Image side in pixels (32-224).")] = 64,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
) -> None:
    """Write the built-in benchmark in the wsolevaluation metadata layout (images, boxes, masks)."""
    from masksal.data.benchmark import BenchmarkDataset
    from masksal.data.export import export_wsol

    check_out_dir(out)
    ds = BenchmarkDataset(split=split, n=n, size=size, seed=seed)
    export_wsol(ds, out, split=split)
    typer.echo(f"wrote {n} {split} images to {out}")
