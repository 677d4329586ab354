"""Command line: ``masksal demo | train-classifier | train | explain | evaluate | data export | export``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

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
TrainDeviceOpt = Annotated[str | None, typer.Option(
    help="auto, cpu, cuda, cuda:1 (sets train.device); under torchrun each process takes cuda:LOCAL_RANK.")]
AmpOpt = Annotated[str, typer.Option(
    help="Mixed precision: auto (bf16, or fp16 with loss scaling, on a GPU; off on CPU), off, bf16, fp16.")]
CompileOpt = Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the networks.")]
SyncBnOpt = Annotated[bool, typer.Option(
    "--sync-batchnorm/--no-sync-batchnorm",
    help="Under torchrun: BatchNorm statistics over the global batch, as in a single-process run.")]


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _interrupted(out: Path) -> None:
    typer.echo(f"interrupted: progress saved in {out}; continue with the same command and --resume", err=True)
    raise typer.Exit(130)


def _train(fn: Any, config: Path | None, overrides: list[str], out: Path, resume: bool, quiet: bool, amp: str,
           compile_: bool, sync_batchnorm: bool) -> dict[str, Any] | None:
    """Run a training function (under torchrun too); the result on rank 0, ``None`` elsewhere."""
    from masksal.config import load_config
    from masksal.distributed import RunOptions, is_main_process, torchrun_session

    try:
        cfg = load_config(config, overrides)
        run = RunOptions(amp=amp, compile=compile_, sync_batchnorm=sync_batchnorm)
        with torchrun_session(cfg.train.device):
            res = fn(cfg, out, resume=resume, progress=not quiet, run=run)
            return res if is_main_process() else None  # type: ignore[no-any-return]
    except KeyboardInterrupt:
        _interrupted(out)
    except USER_ERRORS as e:
        _fail(str(e))
    return None


@app.command()
def demo(
    out: Annotated[Path | None, typer.Option(
        help="Output folder, cached between runs (default: runs/demo, or runs/demo_quick with --quick).")] = None,
    quick: Annotated[bool, typer.Option(
        "--quick", help="Short run: 12,000 images, 200 masker steps (about 2 min on 2 cores).")] = False,
    mode: Annotated[str, typer.Option(help="Classifier mode while training the masker: fix, ca or pool.")] = "ca",
    quiet: QuietOpt = False,
) -> None:
    """Run the whole chain on the built-in benchmark and write report.html and metrics.json."""
    from masksal.demo import run_demo

    out = out or Path("runs/demo_quick" if quick else "runs/demo")
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
    device: TrainDeviceOpt = None,
    amp: AmpOpt = "auto",
    compile_: CompileOpt = False,
    sync_batchnorm: SyncBnOpt = True,
    quiet: QuietOpt = False,
) -> None:
    """Train a classifier on the configured dataset (default: the built-in benchmark).

    Data parallel under torchrun: torchrun --nproc-per-node N -m masksal train-classifier ...
    """
    from masksal.training import train_classifier

    overrides = list(set_ or []) + ([f"train.device={device}"] if device else [])
    res = _train(train_classifier, config, overrides, out, resume, quiet, amp, compile_, sync_batchnorm)
    if res is not None:
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
    device: TrainDeviceOpt = None,
    amp: AmpOpt = "auto",
    compile_: CompileOpt = False,
    sync_batchnorm: SyncBnOpt = True,
    quiet: QuietOpt = False,
) -> None:
    """Train a masker for a trained classifier.

    Data parallel under torchrun: torchrun --nproc-per-node N -m masksal train ...
    """
    from masksal.training import train_masker

    overrides = list(set_ or [])
    if classifier is not None:
        overrides.append(f"classifier.weights={classifier}")
    if examples_per_class is not None:
        overrides.append(f"data.examples_per_class={examples_per_class}")
    if device is not None:
        overrides.append(f"train.device={device}")
    res = _train(train_masker, config, overrides, out, resume, quiet, amp, compile_, sync_batchnorm)
    if res is not None:
        typer.echo(f"trained {res['steps']} steps in {res['seconds']:.0f} s; checkpoint: {out}")


@app.command()
def explain(
    checkpoint: Annotated[Path, typer.Argument(help="Masker checkpoint directory.")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched recursively).")],
    out: Annotated[Path, typer.Option(help="Folder for the maps and overlays (inputs' layout mirrored).")],
    format_: Annotated[str, typer.Option(
        "--format", help="Maps as npy (float32), npz (float16, compressed) or png (8-bit).")] = "npy",
    overlay: Annotated[bool, typer.Option("--overlay/--no-overlay", help="Also write an overlay picture.")] = True,
    overlay_format: Annotated[str, typer.Option(help="Overlay as png or jpg (smaller, faster, lossy).")] = "png",
    max_overlay_side: Annotated[int, typer.Option(
        help="Longest overlay side in pixels (larger images are shown downscaled); 0: the image's size.")] = 2048,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    workers: Annotated[int, typer.Option(help="Threads decoding and writing files (0: up to 4).")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    threads: ThreadsOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Write a saliency map (at the image's own resolution) and an overlay for each image.

    Outputs are named after the input with its suffix: cat.png -> cat.png.npy, cat.png.overlay.png.
    """
    from masksal.checkpoint import load_masker, read_meta
    from masksal.explain_files import MAP_FORMATS, OVERLAY_FORMATS, explain_files

    def report(msg: str) -> None:
        typer.echo(f"skipped: {msg}", err=True)

    if format_ not in MAP_FORMATS:
        _fail(f"--format must be one of {', '.join(MAP_FORMATS)}, got {format_!r}")
    if overlay_format not in OVERLAY_FORMATS:
        _fail(f"--overlay-format must be one of {', '.join(OVERLAY_FORMATS)}, got {overlay_format!r}")
    for name, value, least in (("--batch-size", batch_size, 1), ("--workers", workers, 0),
                               ("--max-overlay-side", max_overlay_side, 0)):
        if value < least:
            _fail(f"{name} must be at least {least}, got {value}")
    _set_threads(threads)
    try:
        masker = load_masker(checkpoint, device=device)
        size = read_meta(checkpoint).image_size
        res = explain_files(masker, list(inputs), out, size, batch_size, device, progress=not quiet,
                            on_error=report, map_format=format_, overlay=overlay,  # type: ignore[arg-type]
                            overlay_format=overlay_format, max_overlay_side=max_overlay_side or None,  # type: ignore[arg-type]
                            workers=workers or None)
    except USER_ERRORS as e:
        _fail(str(e))
    typer.echo(f"{len(res.explained)} image(s) explained into {out}; {len(res.failed)} failed")
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
    n: Annotated[int, typer.Option("--num-images", help="Images of the built-in benchmark per split.")] = 2000,
    size: Annotated[int | None, typer.Option(help="Image size (default: the classifier's).")] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate at most N images (quick look).")] = None,
    metrics: Annotated[str, typer.Option(help="Comma-separated: le_om_f1, maxboxacc, pxap, sm, "
                                         "deletion_insertion.")] = "le_om_f1,maxboxacc,pxap,sm,deletion_insertion",
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 64,
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
    out: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate a saliency method on a dataset: every metric, a table, and JSON.

    Sharded under torchrun (torchrun --nproc-per-node N -m masksal evaluate ...): each process
    explains its part of the split, the metrics are summed, rank 0 prints and writes the result.
    """
    import json

    from masksal.distributed import evaluate_sharded, is_main_process, process_device, torchrun_session
    from masksal.evaluation import format_table
    from masksal.methods import (
        build_loader,
        check_classes,
        image_size_of,
        load_method,
        reference_checkpoint,
        resolve_classifier,
    )

    try:
        with torchrun_session(device):
            main = is_main_process()
            dev = process_device(device)
            clf = resolve_classifier(classifier, [method], dev)
            explainer = load_method(method, clf, dev)
            clf = getattr(explainer, "classifier", clf)  # a masker evaluates with its own classifier object
            img = size or image_size_of(classifier, [method])
            ref = reference_checkpoint(classifier, [method])
            ds, _ = build_loader(data, split, img, n, batch_size, reference=ref)
            check_classes(ds, clf, data)
            val_ds = None
            if val_split and val_split != "none" and "maxboxacc" in metrics:
                val_ds, _ = build_loader(data, val_split, img, n, batch_size, reference=ref)
            res = evaluate_sharded(explainer, clf, ds, batch_size=batch_size, val_dataset=val_ds, limit=limit,
                                   progress=not quiet,
                                   metrics=[m.strip() for m in metrics.split(",") if m.strip()])
    except USER_ERRORS as e:
        _fail(str(e))
    if not main:
        return
    typer.echo(format_table(res))
    if out is not None:
        from masksal.checkpoint import write_json

        write_json(out, json.loads(json.dumps(res, default=float)))
        typer.echo(f"wrote {out}")


@app.command()
def benchmark(
    methods: Annotated[str, typer.Option(help="Comma-separated method specs: masker:CKPT, gradcam, "
                                         "'rise:n_masks=4000', ep, ... (options after ':', split by ';' "
                                         "when several).")],
    classifier: Annotated[str | None, typer.Option(help="Classifier checkpoint (default: the first masker's).")] = None,
    data: Annotated[str, typer.Option(help="benchmark or a dataset spec (see evaluate).")] = "benchmark",
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    n: Annotated[int, typer.Option("--num-images", help="Images of the built-in benchmark.")] = 2000,
    limit: Annotated[int | None, typer.Option(help="Evaluate at most N images per method.")] = None,
    metrics: Annotated[str, typer.Option(help="Comma-separated metric names.")] = "le_om_f1,maxboxacc,pxap,sm",
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 64,
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/benchmark"),
    quiet: QuietOpt = False,
) -> None:
    """Compare saliency methods on one classifier and dataset: quality and speed in one table."""
    import platform

    import torch

    from masksal.benchmarking import run_benchmark, side_by_side, speed_table, write_outputs
    from masksal.evaluation import format_table
    from masksal.methods import (
        build_loader,
        check_classes,
        image_size_of,
        load_method,
        reference_checkpoint,
        resolve_classifier,
    )
    from masksal.types import collate

    specs = [m.strip() for m in methods.split(",") if m.strip()]
    specs = [m.replace(";", ",") for m in specs]
    try:
        clf = resolve_classifier(classifier, specs, device)
        loaded = [(spec, load_method(spec, clf, device)) for spec in specs]
        size = image_size_of(classifier, specs)
        ds, loader = build_loader(data, split, size, n, batch_size, reference=reference_checkpoint(classifier, specs))
        check_classes(ds, clf, data)
        rows = run_benchmark(loaded, clf, loader, metrics=[m for m in metrics.split(",") if m],
                             limit=limit, progress=not quiet)
        dev = torch.device(device)
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else \
            f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
        paths = write_outputs(rows, out, {"device": name, "methods": specs, "data": data, "split": split,
                                          "limit": limit, "image_size": size})
        sample = collate([ds[i] for i in range(min(8, len(ds)))]).to(device)  # type: ignore[arg-type]
        page = side_by_side(loaded, sample, out / "side_by_side.html")
    except USER_ERRORS as e:
        _fail(str(e))
    typer.echo(format_table(rows))
    typer.echo("")
    typer.echo(speed_table(rows))
    typer.echo(f"wrote {paths['markdown']}, {paths['json']} and {page}")


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


reproduce_app = typer.Typer(no_args_is_help=True, help="Reproduce the paper's findings on the built-in benchmark.")
app.add_typer(reproduce_app, name="reproduce")
BudgetOpt = Annotated[str, typer.Option(help="small (2 CPU cores, about 30 minutes) or full (a GPU).")]
ThreadsOpt = Annotated[int, typer.Option(
    help="Torch CPU threads (0: torch's default). On a shared machine 1 is often much faster.")]


def _reproduce_interrupted(out: Path) -> None:
    typer.echo(f"interrupted: finished runs are kept in {out}; run the same command again to continue", err=True)
    raise typer.Exit(130)


def _set_threads(threads: int) -> None:
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


@reproduce_app.command("ablation")
def reproduce_ablation(
    out: Annotated[Path, typer.Option(help="Output folder (rows are reused).")] = Path("runs/reproduce"),
    budget: BudgetOpt = "small",
    seeds: Annotated[int | None, typer.Option(help="Seeds per row (default: 3, the budget's).")] = None,
    classifier: Annotated[Path | None, typer.Option(
        help="Classifier checkpoint to start from (e.g. runs/demo/classifier); default: trained once.")] = None,
    rows: Annotated[str | None, typer.Option(help="Comma-separated subset of the rows.")] = None,
    steps: Annotated[int | None, typer.Option(help="Masker steps per row (overrides the budget).")] = None,
    paper_numbers: Annotated[Path | None, typer.Option(
        help="YAML of the paper's numbers per row (rows: {row: {le, om, f1, sm}}, source: ...) for the "
             "report's paper columns.")] = None,
    set_: SetOpt = None,
    threads: ThreadsOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Train and evaluate every ablation row (configs/ablation/*.yaml); write report.md and report.html."""
    from masksal.reproduce import get_budget, run_ablation

    _set_threads(threads)
    try:
        run_ablation(out, get_budget(budget), seeds=seeds, classifier=classifier,
                     rows=[r.strip() for r in rows.split(",") if r.strip()] if rows else None, steps=steps,
                     overrides=set_ or [], paper_numbers=paper_numbers, progress=not quiet, log=typer.echo)
    except KeyboardInterrupt:
        _reproduce_interrupted(out)
    except USER_ERRORS as e:
        _fail(str(e))


@reproduce_app.command("fewshot")
def reproduce_fewshot(
    out: Annotated[Path, typer.Option(help="Output folder (runs are reused).")] = Path("runs/reproduce/fewshot"),
    budget: BudgetOpt = "small",
    classifier: Annotated[Path | None, typer.Option(help="Classifier checkpoint; default: trained once.")] = None,
    config: ConfigOpt = None,
    seeds: Annotated[int | None, typer.Option(help="Seeds per K (default: 3, the budget's).")] = None,
    steps: Annotated[int | None, typer.Option(help="Masker steps per K (overrides the budget).")] = None,
    set_: SetOpt = None,
    threads: ThreadsOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Train the final recipe on K = 1, 2, 5, 10, 50 and all images per class; plot LE and PxAP against K."""
    from masksal.reproduce import get_budget, run_fewshot

    _set_threads(threads)
    try:
        run_fewshot(out, get_budget(budget), classifier=classifier, config=config, seeds=seeds, steps=steps,
                    overrides=set_ or [], progress=not quiet, log=typer.echo)
    except KeyboardInterrupt:
        _reproduce_interrupted(out)
    except USER_ERRORS as e:
        _fail(str(e))


@reproduce_app.command("roar")
def reproduce_roar(
    out: Annotated[Path, typer.Option(help="Output folder (retrainings are reused).")] = Path("runs/reproduce/roar"),
    budget: BudgetOpt = "small",
    masker: Annotated[Path | None, typer.Option(
        help="Masker checkpoint (default: the ablation's final row next to --out, else trained here).")] = None,
    classifier: Annotated[Path | None, typer.Option(help="Classifier checkpoint for a masker trained here.")] = None,
    threads: ThreadsOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Remove the most salient 10-90% of the pixels (masker, Grad-CAM, random), retrain, plot test accuracy."""
    from masksal.reproduce import get_budget, run_roar

    _set_threads(threads)
    try:
        run_roar(out, get_budget(budget), masker=masker, classifier=classifier, progress=not quiet,
                 log=typer.echo)
    except KeyboardInterrupt:
        _reproduce_interrupted(out)
    except USER_ERRORS as e:
        _fail(str(e))


@reproduce_app.command("photos")
def reproduce_photos(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/reproduce/photos"),
    budget: BudgetOpt = "small",
    steps: Annotated[int | None, typer.Option(help="Masker steps (overrides the budget).")] = None,
    threads: ThreadsOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Train a masker for an ImageNet EfficientNet-Lite0 on the few photos available offline; show overlays."""
    from masksal.reproduce import get_budget, run_photos

    _set_threads(threads)
    try:
        run_photos(out, get_budget(budget), steps=steps, progress=not quiet, log=typer.echo)
    except KeyboardInterrupt:
        _reproduce_interrupted(out)
    except (*USER_ERRORS, RuntimeError) as e:
        _fail(str(e))


@app.command()
def sanity(
    checkpoint: Annotated[Path, typer.Argument(help="Masker checkpoint directory.")],
    out: Annotated[Path, typer.Option(help="Output folder for results.json and report.html.")] = Path("runs/sanity"),
    images: Annotated[int, typer.Option(help="Test images whose maps are compared.")] = 64,
    retrain: Annotated[bool, typer.Option(
        "--retrain/--no-retrain", help="Also retrain the masker on each randomized classifier.")] = False,
    retrain_steps: Annotated[int, typer.Option(help="Masker steps of each retraining.")] = 20,
    data_randomization: Annotated[bool, typer.Option(
        "--data-randomization/--no-data-randomization",
        help="Also train small classifiers (and maskers) on shuffled and on true labels.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the randomization.")] = 0,
    threads: ThreadsOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Sanity checks (Adebayo et al.): cascading/independent randomization of the classifier, data randomization."""
    from masksal.sanity import SanityBudget, run_sanity_checks

    _set_threads(threads)
    try:
        budget = SanityBudget(n_images=images, retrain_steps=retrain_steps if retrain else 0)
        run_sanity_checks(checkpoint, out, budget=budget, data_randomization=data_randomization, seed=seed,
                          progress=not quiet, log=typer.echo)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except USER_ERRORS as e:
        _fail(str(e))


@app.command("export")
def export_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Masker checkpoint directory.")],
    out: Annotated[Path, typer.Option(help="File to write (e.g. masker.onnx, masker.pt).")],
    format_: Annotated[str, typer.Option(
        "--format", help="onnx (needs the export extra: onnx, onnxscript, onnxruntime) or torchscript.")] = "onnx",
    opset: Annotated[int, typer.Option(help="ONNX opset version.")] = 18,
) -> None:
    """Export the masker with its classifier as one graph: images -> (logits, maps), normalization inside.

    Input "images": (B, 3, S, S) float32 RGB in [0, 1], any batch size B, S the checkpoint's image size.
    Outputs "logits": (B, C); "maps": (B, S, S) in [0, 1]. Runs with onnxruntime or torch.jit.load alone.
    """
    from masksal.checkpoint import load_masker, read_meta
    from masksal.export import EXPORT_FORMATS, export_masker, require

    if format_ not in EXPORT_FORMATS:
        _fail(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {format_!r}")
    try:
        if format_ == "onnx":  # before the checkpoint is loaded: a missing package fails at once
            require("onnx")
            require("onnxscript")
        meta = read_meta(checkpoint)
        masker = load_masker(checkpoint)
    except USER_ERRORS as e:
        _fail(str(e))
    size = meta.image_size
    try:
        path = export_masker(masker, out, format_, image_size=size, opset=opset)  # type: ignore[arg-type]
    except Exception as e:  # the exporters raise many types with pages of detail: one line here
        first = (str(e).strip().splitlines() or [""])[0]
        _fail(f"{checkpoint}: {format_} export to {out} failed ({type(e).__name__}: {first})", code=1)
    typer.echo(f"wrote {path}: images (B, 3, {size}, {size}) in [0, 1] -> logits (B, {meta.classifier.num_classes}), "
               f"maps (B, {size}, {size}) in [0, 1]")


def main() -> None:
    """Console entry point."""
    try:
        app()
    except BrokenPipeError:
        sys.exit(1)


if __name__ == "__main__":
    main()
