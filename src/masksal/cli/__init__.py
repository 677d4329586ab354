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

__all__ = ["app", "main"]
_COMMANDS = (_evaluate, _explain, _reproduce, _train)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: usage errors (a bad option value) are one line too."""
    try:
        code = app(args=argv, standalone_mode=False)  # click returns an Exit's code in this mode
    except click.exceptions.Abort:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except click.UsageError as e:
        cmd = f"{e.ctx.command_path} --help" if e.ctx is not None else "masksal --help"
        typer.echo(f"error: {e.format_message()} (see {cmd})", err=True)
        sys.exit(2)
    except click.ClickException as e:
        typer.echo(f"error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except BrokenPipeError:
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
