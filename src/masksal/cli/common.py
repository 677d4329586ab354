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


def runtime_options(training: bool = False) -> Callable[[F], F]:
    """Give a command the options every model-running command shares, declared once here:
    ``--device``, ``--threads`` and ``--quiet`` (with ``training``, also ``--amp``,
    ``--compile`` and ``--sync-batchnorm``). They are appended to the command's own options, and
    the command receives them as one :class:`Runtime` argument named ``runtime``, with torch's
    threads already set.

    typer has no shared option groups (click apps use a decorator for this too): the wrapper's
    signature, which typer reads to build the command line, is the command's own without
    ``runtime`` plus these options.
    """
    shared = _RUN_OPTIONS + (_TRAIN_OPTIONS if training else ())

    def deco(fn: F) -> F:
        own = inspect.signature(fn, eval_str=True)
        params = [p for p in own.parameters.values() if p.name != "runtime"]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {p.name: kwargs.pop(p.name, p.default) for p in shared}
            runtime = Runtime(device=values["device"], threads=set_threads(values["threads"]), quiet=values["quiet"],
                              amp=values.get("amp", "auto"), compile=values.get("compile_", False),
                              sync_batchnorm=values.get("sync_batchnorm", True))
            return fn(*args, runtime=runtime, **kwargs)

        wrapper.__signature__ = own.replace(parameters=[*params, *shared])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {**{p.name: p.annotation for p in (*params, *shared)},
                                   "return": own.return_annotation}
        return wrapper  # type: ignore[return-value]

    return deco


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
