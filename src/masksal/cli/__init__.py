"""The ``masksal`` command (typer): one module per family of commands, one error rule for all.

Every command prints ``error: <one line naming the file or option>`` on bad input (exit 2),
``interrupted ...`` on Ctrl-C (exit 130), and imports the heavy parts of the library only when
it runs, so ``masksal --help`` is quick.
"""

from __future__ import annotations

import sys

import click
import typer

from masksal import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Masking-based saliency maps: train a masker, explain images, measure saliency methods.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"masksal {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Masking-based saliency maps: train a masker, explain images, measure saliency methods."""


from masksal.cli import evaluate as _evaluate  # noqa: E402  (the commands register themselves on `app`)
from masksal.cli import explain as _explain  # noqa: E402
from masksal.cli import reproduce as _reproduce  # noqa: E402
from masksal.cli import train as _train  # noqa: E402
from masksal.cli import tune as _tune  # noqa: E402

__all__ = ["app", "main"]
_COMMANDS = (_evaluate, _explain, _reproduce, _train, _tune)


def _click_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...],
                             tuple[type[BaseException], ...]]:
    """(usage errors, other click errors, aborts): click's, and those of the click that recent typer
    versions carry inside them."""
    usage: list[type[BaseException]] = [click.UsageError]
    other: list[type[BaseException]] = [click.ClickException]
    abort: list[type[BaseException]] = [click.exceptions.Abort]
    try:
        from typer._click import exceptions as vendored
    except ImportError:
        pass
    else:
        usage.append(vendored.UsageError)
        other.append(vendored.ClickException)
        if hasattr(vendored, "Abort"):
            abort.append(vendored.Abort)
    return tuple(usage), tuple(other), tuple(abort)


_USAGE, _CLICK, _ABORT = _click_errors()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: usage errors (a bad option value) are one line too."""
    try:
        code = app(args=argv, standalone_mode=False)  # click returns an Exit's code in this mode
    except _ABORT:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except _USAGE as e:
        ctx = getattr(e, "ctx", None)
        cmd = f"{ctx.command_path} --help" if ctx is not None else "masksal --help"
        msg = " ".join(e.format_message().split())  # type: ignore[attr-defined]
        typer.echo(f"error: {msg} (see {cmd})", err=True)
        sys.exit(2)
    except _CLICK as e:
        typer.echo(f"error: {' '.join(e.format_message().split())}", err=True)  # type: ignore[attr-defined]
        sys.exit(int(getattr(e, "exit_code", 1)))
    except BrokenPipeError:
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
