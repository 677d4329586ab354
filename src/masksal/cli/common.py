"""What every command shares: options, the one-line error rule, threads, devices."""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

# Errors a user can cause and fix; shown as one line. KeyError is not among them: a KeyError is a
# bug of ours, and its message (a bare key) says nothing to a user.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError)

ConfigOpt = Annotated[str | None, typer.Option(
    "--config", "-c", help="YAML experiment config: a file, or a packaged name (final, ablation/ca, ...).")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", "-s", help="Override: section.key=value (repeatable), e.g. masker_train.steps=200.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
DeviceOpt = Annotated[str, typer.Option(
    help="auto (a GPU when there is one), cpu, cuda, cuda:1; under torchrun each process takes cuda:LOCAL_RANK.")]
ThreadsOpt = Annotated[int, typer.Option(
    min=0, help="CPU threads for torch (0: automatic, fewer when the machine is busy; see docs/your-model.md).")]
BatchOpt = Annotated[int, typer.Option(min=1, help="Images per batch.")]
ArchOpt = Annotated[str | None, typer.Option(
    help="Architecture of a --classifier weight file: a torchvision name (resnet50, efficientnet_b0, ...), "
         "timm:NAME or small_resnet18.")]
NumClassesOpt = Annotated[int | None, typer.Option(
    min=1, help="Outputs of a --classifier weight file (default: the data's class count).")]
ImageSizeOpt = Annotated[int | None, typer.Option(
    "--image-size", "--size", min=16,
    help="Image side in pixels (default: the classifier checkpoint's; 224 for a weight file).")]
DataOpt = Annotated[str, typer.Option(
    help="benchmark, benchmark:pairs (two objects per image), imagefolder:DIR, folder:DIR (unlabelled: top-1 "
         "explained), imagenet:ROOT, cub:ROOT, wsol:METADATA:IMAGES.")]
NumImagesOpt = Annotated[int, typer.Option("--num-images", min=1, help="Images of the built-in benchmark per split.")]
ScalingOpt = Annotated[str, typer.Option(
    help="Colour scale of the maps in the HTML pages: shared (one range per method, so a weak map looks weak) "
         "or per-image (each map stretched to its own range).")]
AmpOpt = Annotated[str, typer.Option(
    help="Mixed precision: auto (bf16, or fp16 with loss scaling, on a GPU; off on CPU), off, bf16, fp16.")]
CompileOpt = Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the networks.")]
SyncBnOpt = Annotated[bool, typer.Option(
    "--sync-batchnorm/--no-sync-batchnorm",
    help="Under torchrun: BatchNorm statistics over the global batch, as in a single-process run.")]


MetricOptionOpt = Annotated[list[str] | None, typer.Option(
    "--metric-option", "-m",
    help="A metric's setting, METRIC.KEY=VALUE (repeatable), e.g. sm.geometry=si for the paper's SM scorer, "
         "deletion_insertion.target=label; see docs/metrics.md.")]


def parse_metric_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["sm.geometry=si", ...]`` -> ``{"sm": {"geometry": "si"}}`` (values read like method options)."""
    from masksal.explainers.registry import parse_method_spec

    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        metric, dot, name = key.strip().partition(".")
        if not (eq and dot and metric and name):
            raise ValueError(f"--metric-option {item!r}: expected METRIC.KEY=VALUE, e.g. sm.geometry=si")
        out.setdefault(metric, {}).update(parse_method_spec(f"x:{name}={value}")[1])
    return out


CiOpt = Annotated[bool, typer.Option(
    "--ci/--no-ci", help="95 % bootstrap intervals over the images for every number (metrics that run the "
                         "classifier then run it one image at a time).")]
CiResamplesOpt = Annotated[int, typer.Option(min=10, help="Bootstrap resamples for --ci.")]
CiSeedOpt = Annotated[int, typer.Option(help="Seed of the bootstrap resamples (the same for every method).")]


@dataclass(frozen=True)
class Runtime:
    """Where and how a command runs its model: the shared options of :func:`runtime_options`.

    ``threads`` is the number of torch CPU threads in use (already set); ``amp``, ``compile`` and
    ``sync_batchnorm`` are those of the training commands (their defaults elsewhere).
    """

    device: str = "auto"
    threads: int = 1
    quiet: bool = False
    amp: str = "auto"
    compile: bool = False
    sync_batchnorm: bool = True

    @property
    def progress(self) -> bool:
        """Whether to show progress bars."""
        return not self.quiet


def _option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


_RUN_OPTIONS = (_option("device", DeviceOpt, "auto"), _option("threads", ThreadsOpt, 0),
                _option("quiet", QuietOpt, False))
_TRAIN_OPTIONS = (_option("amp", AmpOpt, "auto"), _option("compile_", CompileOpt, False),
                  _option("sync_batchnorm", SyncBnOpt, True))


def option_group(name: str, options: tuple[inspect.Parameter, ...],
                 build: Callable[[dict[str, Any]], Any]) -> Callable[[F], F]:
    """Give a command options declared once here: they are appended to the command's own
    options, and the command receives ``build(values)`` as one argument named ``name``.

    typer has no shared option groups (click apps use a decorator for this too): the wrapper's
    signature, which typer reads to build the command line, is the command's own without ``name``
    plus ``options``.
    """

    def deco(fn: F) -> F:
        own = inspect.signature(fn, eval_str=True)
        params = [p for p in own.parameters.values() if p.name != name]
        # keyword-only options (a group added by another decorator) stay last
        params.sort(key=lambda p: p.kind == inspect.Parameter.KEYWORD_ONLY)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {p.name: kwargs.pop(p.name, p.default) for p in options}
            return fn(*args, **{name: build(values)}, **kwargs)

        wrapper.__signature__ = own.replace(parameters=[*params, *options])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {**{p.name: p.annotation for p in (*params, *options)},
                                   "return": own.return_annotation}
        return wrapper  # type: ignore[return-value]

    return deco


def runtime_options(training: bool = False) -> Callable[[F], F]:
    """Give a command the options every model-running command shares: ``--device``, ``--threads``
    and ``--quiet`` (with ``training``, also ``--amp``, ``--compile`` and ``--sync-batchnorm``),
    received as one :class:`Runtime` argument named ``runtime``, with torch's threads already set."""

    def build(v: dict[str, Any]) -> Runtime:
        return Runtime(device=v["device"], threads=set_threads(v["threads"]), quiet=v["quiet"],
                       amp=v.get("amp", "auto"), compile=v.get("compile_", False),
                       sync_batchnorm=v.get("sync_batchnorm", True))

    return option_group("runtime", _RUN_OPTIONS + (_TRAIN_OPTIONS if training else ()), build)


@dataclass(frozen=True)
class Inputs:
    """What a scoring command (evaluate, benchmark, tune) reads, besides the classifier
    checkpoint: the data spec, split, benchmark size and image side (``None``: the classifier's),
    and how to build a ``--classifier`` weight file (``arch``, ``num_classes``)."""

    data: str = "benchmark"
    split: str = "test"
    n: int = 2000
    size: int | None = None
    arch: str | None = None
    num_classes: int | None = None


@dataclass(frozen=True)
class Scoring:
    """How a scoring command (evaluate, benchmark) scores maps: each metric's options
    (``{"sm": {"geometry": "si"}}``), the bootstrap resamples of the 95 % intervals (``ci``, 0:
    none) and their seed."""

    metric_options: dict[str, dict[str, Any]]
    ci: int = 0
    ci_seed: int = 0


def scoring_options(ci: bool = False) -> Callable[[F], F]:
    """Give a scoring command ``--metric-option``, ``--ci/--no-ci`` (default ``ci``),
    ``--ci-resamples`` and ``--ci-seed``, received as one :class:`Scoring` argument named
    ``scoring``; a malformed ``--metric-option`` fails before any work."""
    options = (_option("metric_option", MetricOptionOpt, None), _option("ci", CiOpt, ci),
               _option("ci_resamples", CiResamplesOpt, 1000), _option("ci_seed", CiSeedOpt, 0))
    return option_group("scoring", options, lambda v: Scoring(
        parse_metric_options(v["metric_option"]), v["ci_resamples"] if v["ci"] else 0, v["ci_seed"]))


def scoring_command(ci: bool = False) -> Callable[[F], F]:
    """Everything a command that explains and scores maps (evaluate, benchmark) shares: the
    one-line errors of :func:`errors` and the option groups :class:`Runtime`, :class:`Inputs`
    and :class:`Scoring` (``--ci`` on by default when ``ci``)."""

    def deco(fn: F) -> F:
        return errors()(runtime_options()(input_options()(scoring_options(ci=ci)(fn))))

    return deco


def input_options(split: str = "test", split_help: str = "Split to evaluate.") -> Callable[[F], F]:
    """Give a scoring command ``--data``, ``--split``, ``--num-images``, ``--image-size``,
    ``--arch`` and ``--num-classes``, received as one :class:`Inputs` argument named ``inputs``."""
    split_opt = Annotated[str, typer.Option(help=split_help)]
    options = (_option("data", DataOpt, "benchmark"), _option("split", split_opt, split),
               _option("n", NumImagesOpt, 2000), _option("size", ImageSizeOpt, None),
               _option("arch", ArchOpt, None), _option("num_classes", NumClassesOpt, None))
    return option_group("inputs", options, lambda v: Inputs(**v))


def one_line(e: BaseException) -> str:
    """The first line of an exception's message (the exception's name if it has none)."""
    text = str(e).strip()
    if isinstance(e, KeyError) and e.args:
        text = f"missing key {e.args[0]!r}"
    return text.splitlines()[0] if text else type(e).__name__


def fail(msg: str, code: int = 2) -> None:
    """Print ``error: msg`` on one line and exit with ``code``."""
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def errors(interrupted: str = "interrupted") -> Callable[[F], F]:
    """Decorate a command: user errors become one ``error:`` line (exit 2) and Ctrl-C prints
    ``interrupted`` (formatted with the command's ``out`` argument) and exits 130."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except KeyboardInterrupt:
                typer.echo(interrupted.format(out=kwargs.get("out", "")), err=True)
                raise typer.Exit(130) from None
            except USER_ERRORS as e:
                fail(one_line(e))
            except MemoryError:
                fail("out of memory: use a smaller --batch-size or image size")
        return wrapper  # type: ignore[return-value]

    return deco


def default_threads() -> int:
    """Torch CPU threads for a run: one per core that is not already busy (the 1-minute load
    average), at least one. On a machine loaded with other CPU-bound work, threads that wait for
    each other cost far more than they bring (measured in benchmarks/bench_threads.py)."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # not available on this platform
        load = 0.0
    return max(1, min(cores, cores - int(load + 0.5)))


def set_threads(threads: int) -> int:
    """Set torch's CPU threads (``0``: :func:`default_threads`); returns the number used."""
    import torch

    n = threads if threads > 0 else default_threads()
    torch.set_num_threads(n)
    return n


def check_out_file(path: Path | None, option: str = "--out") -> None:
    """Fail now (before any work) when ``path`` cannot be written: a folder in its place, or a
    regular file where a parent folder should be."""
    if path is None:
        return
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path}: is a folder, expected a file name")
    _check_parents(path, option)


def _check_parents(path: Path, option: str) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{option} {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK):
                raise PermissionError(f"{option} {path}: cannot write in {parent}")
            break


def check_out_dir(path: Path, option: str = "--out") -> None:
    """Fail now when the folder ``path`` cannot be created or written."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{option} {path}: is a file, expected a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK):
            raise PermissionError(f"{option} {path}: cannot write in this folder")
        return
    _check_parents(path, option)


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()
