"""``masksal reproduce ablation | fewshot | roar | photos`` and ``masksal sanity``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from masksal.cli import app
from masksal.cli.common import ConfigOpt, F, Runtime, SetOpt, errors, runtime_options

reproduce_app = typer.Typer(no_args_is_help=True, help="Reproduce the paper's findings on the built-in benchmark.")
app.add_typer(reproduce_app, name="reproduce")
BudgetOpt = Annotated[str, typer.Option(
    help="small (a 2-core CPU: minutes per experiment, see the README) or full (a GPU, the paper's scale).")]
KEPT = "interrupted: finished runs are kept in {out}; run the same command again to continue"


def _experiment(name: str, example: str) -> Callable[[F], F]:
    """A ``masksal reproduce`` command: its example, the note an interruption prints (finished runs
    are kept), and the shared runtime options."""

    def deco(fn: F) -> F:
        return reproduce_app.command(name, epilog=f"Example: {example}")(errors(KEPT)(runtime_options()(fn)))

    return deco


@_experiment("ablation", "masksal reproduce ablation --rows both_fix,ca --seeds 1")
def reproduce_ablation(
    out: Annotated[Path, typer.Option(help="Output folder (rows are reused).")] = Path("runs/reproduce"),
    budget: BudgetOpt = "small",
    seeds: Annotated[int | None, typer.Option(min=1, help="Seeds per row (default: 3, the budget's).")] = None,
    classifier: Annotated[Path | None, typer.Option(
        help="Classifier checkpoint to start from (e.g. runs/demo/classifier); default: trained once.")] = None,
    rows: Annotated[str | None, typer.Option(help="Comma-separated subset of the rows.")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Masker steps per row (overrides the budget).")] = None,
    paper_numbers: Annotated[Path | None, typer.Option(
        help="YAML of the paper's numbers per row (rows: {row: {le, om, f1, sm}}, source: ...) for the "
             "report's paper columns.")] = None,
    set_: SetOpt = None,
    *,
    runtime: Runtime,
) -> None:
    """Train and evaluate every ablation row (the packaged configs/ablation/*.yaml); write report.md and report.html."""
    from masksal.reproduce import get_budget, run_ablation

    run_ablation(out, get_budget(budget), seeds=seeds, classifier=classifier,
                 rows=[r.strip() for r in rows.split(",") if r.strip()] if rows else None, steps=steps,
                 overrides=set_ or [], paper_numbers=paper_numbers, progress=runtime.progress, log=typer.echo,
                 device=runtime.device)


@_experiment("fewshot", "masksal reproduce fewshot --seeds 1")
def reproduce_fewshot(
    out: Annotated[Path, typer.Option(help="Output folder (runs are reused).")] = Path("runs/reproduce/fewshot"),
    budget: BudgetOpt = "small",
    classifier: Annotated[Path | None, typer.Option(help="Classifier checkpoint; default: trained once.")] = None,
    config: ConfigOpt = None,
    seeds: Annotated[int | None, typer.Option(min=1, help="Seeds per K (default: 3, the budget's).")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Masker steps per K (overrides the budget).")] = None,
    set_: SetOpt = None,
    *,
    runtime: Runtime,
) -> None:
    """Train the final recipe on K = 1, 2, 5, 10, 50 and all images per class; plot LE and PxAP against K."""
    from masksal.reproduce import get_budget, run_fewshot

    run_fewshot(out, get_budget(budget), classifier=classifier, config=config, seeds=seeds, steps=steps,
                overrides=set_ or [], progress=runtime.progress, log=typer.echo, device=runtime.device)


@_experiment("roar", "masksal reproduce roar")
def reproduce_roar(
    out: Annotated[Path, typer.Option(help="Output folder (retrainings are reused).")] = Path("runs/reproduce/roar"),
    budget: BudgetOpt = "small",
    masker: Annotated[Path | None, typer.Option(
        help="Masker checkpoint (default: the ablation's final row next to --out, else trained here).")] = None,
    classifier: Annotated[Path | None, typer.Option(help="Classifier checkpoint for a masker trained here.")] = None,
    *,
    runtime: Runtime,
) -> None:
    """Remove the most salient 10-90% of the pixels (masker, Grad-CAM, random), retrain, plot test accuracy."""
    from masksal.reproduce import get_budget, run_roar

    run_roar(out, get_budget(budget), masker=masker, classifier=classifier, progress=runtime.progress, log=typer.echo,
             device=runtime.device)


@_experiment("photos", "masksal reproduce photos --steps 50")
def reproduce_photos(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/reproduce/photos"),
    budget: BudgetOpt = "small",
    steps: Annotated[int | None, typer.Option(min=1, help="Masker steps (overrides the budget).")] = None,
    *,
    runtime: Runtime,
) -> None:
    """Train a masker for an ImageNet EfficientNet-Lite0 on the few photos available offline; show overlays."""
    from masksal.reproduce import get_budget, run_photos

    run_photos(out, get_budget(budget), steps=steps, progress=runtime.progress, log=typer.echo, device=runtime.device)


@app.command(epilog="Example: masksal sanity runs/demo/masker_ca --no-data-randomization")
@errors("interrupted")
@runtime_options()
def sanity(
    checkpoint: Annotated[Path, typer.Argument(help="Masker checkpoint directory.")],
    out: Annotated[Path, typer.Option(help="Output folder for results.json and report.html.")] = Path("runs/sanity"),
    images: Annotated[int, typer.Option(min=1, help="Test images whose maps are compared.")] = 64,
    retrain: Annotated[bool, typer.Option(
        "--retrain/--no-retrain", help="Also retrain the masker on each randomized classifier.")] = False,
    retrain_steps: Annotated[int, typer.Option(min=1, help="Masker steps of each retraining.")] = 20,
    data_randomization: Annotated[bool, typer.Option(
        "--data-randomization/--no-data-randomization",
        help="Also train small classifiers (and maskers) on shuffled and on true labels.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the randomization.")] = 0,
    smooth_samples: Annotated[int, typer.Option(
        min=0, help="Noisy copies per image of the smooth MPRT (Hedström et al. 2023; 0: skip it).")] = 50,
    data: Annotated[str | None, typer.Option(
        help="Data spec replacing the checkpoint's (e.g. its image folder where it is now).")] = None,
    *,
    runtime: Runtime,
) -> None:
    """Sanity checks: cascading/independent randomization of the classifier and data randomization (Adebayo et
    al.), smooth and efficient MPRT (Hedström et al.)."""
    from masksal.sanity import SanityBudget, run_sanity_checks

    budget = SanityBudget(n_images=images, retrain_steps=retrain_steps if retrain else 0, smooth_samples=smooth_samples)
    run_sanity_checks(checkpoint, out, budget=budget, data_randomization=data_randomization, seed=seed,
                      progress=runtime.progress, log=typer.echo, device=runtime.device, data=data)
