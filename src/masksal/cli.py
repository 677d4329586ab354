"""Command line: ``masksal demo | train-classifier | train | explain | evaluate | data export``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Masking-based saliency maps: train a masker, explain images, measure saliency methods.")
data_app = typer.Typer(no_args_is_help=True, help="Work with the built-in benchmark and dataset formats.")
app.add_typer(data_app, name="data")

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, KeyError, ImportError)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML experiment config.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override: section.key=value (repeatable).")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _interrupted(out: Path) -> None:
    typer.echo(f"interrupted: progress saved in {out}; continue with the same command and --resume", err=True)
    raise typer.Exit(130)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder (cached between runs).")] = Path("runs/demo"),
    quick: Annotated[bool, typer.Option("--quick", help="Smoke run: small data, few steps (< 3 min).")] = False,
    mode: Annotated[str, typer.Option(help="Classifier mode while training the masker: fix, ca or pool.")] = "fix",
    quiet: QuietOpt = False,
) -> None:
    """Run the whole chain on the built-in benchmark and write report.html and metrics.json."""
    from masksal.demo import run_demo

    try:
        run_demo(out, quick=quick, mode=mode, progress=not quiet)
    except KeyboardInterrupt:
        _interrupted(out)
    except USER_ERRORS as e:
        _fail(str(e))


@app.command("train-classifier")
def train_classifier_cmd(
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: ResumeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a classifier on the configured dataset (default: the built-in benchmark)."""
    from masksal.config import load_config
    from masksal.training import train_classifier

    try:
        cfg = load_config(config, set_ or [])
        res = train_classifier(cfg, out, resume=resume, progress=not quiet)
    except KeyboardInterrupt:
        _interrupted(out)
    except USER_ERRORS as e:
        _fail(str(e))
    typer.echo(f"test accuracy {res['test_accuracy']:.2f}% after {res['steps']} steps; checkpoint: {out}")


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    classifier: Annotated[str | None, typer.Option(
        help="Classifier checkpoint directory or weight file (sets classifier.weights).")] = None,
    examples_per_class: Annotated[int | None, typer.Option(
        "--examples-per-class", help="Few-shot: train on K images per class.")] = None,
    resume: ResumeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a masker for a trained classifier."""
    from masksal.config import load_config
    from masksal.training import train_masker

    overrides = list(set_ or [])
    if classifier is not None:
        overrides.append(f"classifier.weights={classifier}")
    if examples_per_class is not None:
        overrides.append(f"data.examples_per_class={examples_per_class}")
    try:
        cfg = load_config(config, overrides)
        res = train_masker(cfg, out, resume=resume, progress=not quiet)
    except KeyboardInterrupt:
        _interrupted(out)
    except USER_ERRORS as e:
        _fail(str(e))
    typer.echo(f"trained {res['steps']} steps in {res['seconds']:.0f} s; checkpoint: {out}")


@app.command()
def explain(
    checkpoint: Annotated[Path, typer.Argument(help="Masker checkpoint directory.")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched recursively).")],
    out: Annotated[Path, typer.Option(help="Folder for the .npy maps and overlay PNGs.")],
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    quiet: QuietOpt = False,
) -> None:
    """Write a saliency map (.npy, at the image's own resolution) and an overlay PNG for each image."""
    from masksal.checkpoint import load_masker, read_meta
    from masksal.explain import explain_files

    def report(msg: str) -> None:
        typer.echo(f"skipped: {msg}", err=True)

    try:
        masker = load_masker(checkpoint, device=device)
        size = read_meta(checkpoint).image_size
        res = explain_files(masker, list(inputs), out, size, batch_size, device, progress=not quiet,
                            on_error=report)
    except USER_ERRORS as e:
        _fail(str(e))
    n = len(res.written) // 2
    typer.echo(f"{n} image(s) explained into {out}; {len(res.failed)} failed")
    if res.failed:
        raise typer.Exit(1)


@app.command()
def evaluate(
    method: Annotated[str, typer.Argument(help="masker:CHECKPOINT, a checkpoint folder, or a method "
                                          "name with options (gradcam, rise:n_masks=500, ...).")],
    data: Annotated[str, typer.Option(help="benchmark, folder:DIR, imagenet:ROOT, cub:ROOT, "
                                      "wsol:METADATA:IMAGES.")] = "benchmark",
    classifier: Annotated[str | None, typer.Option(help="Classifier checkpoint (default: the masker's).")] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    val_split: Annotated[str | None, typer.Option(
        help="Choose MaxBoxAcc thresholds on this split (no leakage); 'none' to skip.")] = "val",
    n: Annotated[int, typer.Option(help="Images of the built-in benchmark per split.")] = 2000,
    size: Annotated[int | None, typer.Option(help="Image size (default: the classifier's).")] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate at most N images (quick look).")] = None,
    metrics: Annotated[str, typer.Option(help="Comma-separated: le_om_f1, maxboxacc, pxap, sm, "
                                         "deletion_insertion.")] = "le_om_f1,maxboxacc,pxap,sm,deletion_insertion",
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 64,
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
    out: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate a saliency method on a dataset: every metric, a table, and JSON."""
    import json

    from masksal.evaluation import evaluate as run_evaluation
    from masksal.evaluation import format_table
    from masksal.methods import build_loader, image_size_of, load_method, resolve_classifier

    try:
        clf = resolve_classifier(classifier, [method], device)
        explainer = load_method(method, clf, device)
        clf = getattr(explainer, "classifier", clf)  # a masker evaluates with its own classifier object
        img = size or image_size_of(classifier, [method])
        _, loader = build_loader(data, split, img, n, batch_size)
        val_loader = None
        if val_split and val_split != "none" and "maxboxacc" in metrics:
            _, val_loader = build_loader(data, val_split, img, n, batch_size)
        res = run_evaluation(explainer, clf, loader, metrics=[m.strip() for m in metrics.split(",") if m.strip()],
                             limit=limit, val_loader=val_loader, progress=not quiet)
    except USER_ERRORS as e:
        _fail(str(e))
    typer.echo(format_table(res))
    if out is not None:
        from masksal.checkpoint import write_json

        write_json(out, json.loads(json.dumps(res, default=float)))
        typer.echo(f"wrote {out}")


@data_app.command("export")
def data_export(
    out: Annotated[Path, typer.Option(help="Folder to write the wsolevaluation layout into.")],
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    n: Annotated[int, typer.Option(help="Number of images.")] = 2000,
    size: Annotated[int, typer.Option(help="Image side in pixels (32-224).")] = 64,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
) -> None:
    """Write the built-in benchmark in the wsolevaluation metadata layout (images, boxes, masks)."""
    from masksal.data.benchmark import BenchmarkDataset
    from masksal.data.export import export_wsol

    try:
        ds = BenchmarkDataset(split=split, n=n, size=size, seed=seed)
        export_wsol(ds, out, split=split)
    except USER_ERRORS as e:
        _fail(str(e))
    typer.echo(f"wrote {n} {split} images to {out}")


def main() -> None:
    """Console entry point."""
    try:
        app()
    except BrokenPipeError:
        sys.exit(1)


if __name__ == "__main__":
    main()
