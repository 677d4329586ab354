"""``masksal demo | train-classifier | train``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from masksal.cli import app
from masksal.cli.common import ConfigOpt, F, ResumeOpt, Runtime, ScalingOpt, SetOpt, errors, runtime_options

RESUME_HINT = "interrupted: progress saved in {out}; continue with the same command and --resume"


def _run_training(fn: Any, config: str | None, overrides: list[str], extra: dict[str, Any], out: Path, resume: bool,
                  runtime: Runtime, tensorboard: Path | None = None) -> dict[str, Any] | None:
    """Run a training function (under torchrun too); the result on rank 0, ``None`` elsewhere."""
    from masksal.config import load_config, with_overrides
    from masksal.distributed import is_main_process, torchrun_session
    from masksal.precision import RunOptions

    cfg = load_config(config, overrides)
    if extra:
        cfg = with_overrides(cfg, extra, "option")
    run = RunOptions(device=runtime.device, amp=runtime.amp, compile=runtime.compile,
                     sync_batchnorm=runtime.sync_batchnorm)
    callbacks = []
    if tensorboard is not None:
        from masksal.training import TensorBoardLogger

        callbacks.append(TensorBoardLogger(tensorboard))
    with torchrun_session(runtime.device):
        res = fn(cfg, out, resume=resume, progress=runtime.progress, run=run, callbacks=callbacks)
        return res if is_main_process() else None


@app.command(epilog="Example: masksal demo --quick")
@errors("interrupted: progress saved in {out}; run the same command again to continue")
@runtime_options()
def demo(
    out: Annotated[Path | None, typer.Option(
        help="Output folder, cached between runs (default: runs/demo, or runs/demo_quick with --quick).")] = None,
    quick: Annotated[bool, typer.Option(
        "--quick", help="Short run: 12,000 images, 200 masker steps (about 2 min on 2 cores).")] = False,
    mode: Annotated[str, typer.Option(help="Classifier mode while training the masker: fix, ca or pool.")] = "ca",
    scaling: ScalingOpt = "shared",
    *,
    runtime: Runtime,
) -> None:
    """Run the whole chain on the built-in benchmark and write report.html and metrics.json."""
    from masksal.demo import run_demo

    run_demo(out or Path("runs/demo_quick" if quick else "runs/demo"), quick=quick, mode=mode,
             progress=runtime.progress, device=runtime.device, scaling=scaling.replace("-", "_"))


def _training(name: str | None, example: str) -> Callable[[F], F]:
    """A training command: its example, the resume hint an interruption prints, and the shared
    runtime options with the training ones (--amp, --compile, --sync-batchnorm)."""

    def deco(fn: F) -> F:
        return app.command(name, epilog=f"Example: {example}")(errors(RESUME_HINT)(runtime_options(training=True)(fn)))

    return deco


@_training("train-classifier", "masksal train-classifier --out runs/classifier --set classifier_train.epochs=2")
def train_classifier_cmd(
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: ResumeOpt = False,
    *,
    runtime: Runtime,
) -> None:
    """Train a classifier on the configured dataset (default: the built-in benchmark).

    Data parallel under torchrun: torchrun --nproc-per-node N -m masksal train-classifier ...
    """
    from masksal.training import train_classifier

    res = _run_training(train_classifier, config, list(set_ or []), {}, out, resume, runtime)
    if res is not None:
        typer.echo(f"test accuracy {res['test_accuracy']:.2f}% after {res['steps']} steps; checkpoint: {out}")


@_training(None, "masksal train --classifier my_resnet.safetensors --set classifier.arch=resnet18 "
           "--data imagefolder:photos/ --image-size 224 --out runs/mine")
def train(
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    classifier: Annotated[str | None, typer.Option(
        help="Classifier checkpoint directory or weight file (sets classifier.weights).")] = None,
    arch: Annotated[str | None, typer.Option(
        help="Architecture of a --classifier weight file (sets classifier.arch): a torchvision name (resnet50, "
             "efficientnet_b0, ...), timm:NAME or small_resnet18.")] = None,
    data: Annotated[str | None, typer.Option(
        help="Training data (sets data.dataset): benchmark, imagefolder:DIR, wsol:META:IMAGES, ...")] = None,
    image_size: Annotated[int | None, typer.Option(min=16, help="Image side in pixels (sets data.image_size).")] = None,
    mode: Annotated[str | None, typer.Option(
        help="fix (explain exactly the given classifier; the default), ca (train a copy alongside) or pool.")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Masker steps (sets masker_train.steps).")] = None,
    examples_per_class: Annotated[int | None, typer.Option(
        "--examples-per-class", min=1, help="Few-shot: train on K images per class.")] = None,
    tensorboard: Annotated[Path | None, typer.Option(help="Also log to TensorBoard in this folder.")] = None,
    resume: ResumeOpt = False,
    *,
    runtime: Runtime,
) -> None:
    """Train a masker for a trained classifier.

    Data parallel under torchrun: torchrun --nproc-per-node N -m masksal train ...
    """
    from masksal.training import train_masker

    extra: dict[str, Any] = {}
    for key, value in (("classifier.weights", classifier), ("classifier.arch", arch), ("data.dataset", data),
                       ("data.image_size", image_size),
                       ("masker_train.mode", mode), ("masker_train.steps", steps),
                       ("data.examples_per_class", examples_per_class)):
        if value is not None:
            extra[key] = value
    res = _run_training(train_masker, config, list(set_ or []), extra, out, resume, runtime, tensorboard)
    if res is not None:
        note = (" The masker explains a copy of the classifier trained alongside it (CA): its checkpoint holds "
                "that copy." if res["explains_copy"] else " The masker explains exactly the given classifier (FIX).")
        typer.echo(f"trained {res['steps']} steps in {res['seconds']:.0f} s; checkpoint: {out}.{note}")
