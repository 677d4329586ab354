"""``masksal explain``: maps and overlays for image files and folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from masksal.cli import app
from masksal.cli.common import BatchOpt, DeviceOpt, QuietOpt, ThreadsOpt, errors, fail, set_threads


@app.command(epilog="Example: masksal explain runs/demo/masker_ca photos/ --out runs/maps")
@errors()
def explain(
    checkpoint: Annotated[Path, typer.Argument(help="Masker checkpoint directory.")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched recursively).")],
    out: Annotated[Path, typer.Option(help="Folder for the .npy maps and overlay PNGs.")],
    batch_size: BatchOpt = 32,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Write a saliency map (.npy, at the image's own resolution) and an overlay PNG for each image."""
    from masksal.checkpoint import load_masker
    from masksal.cli.common import check_out_dir
    from masksal.devices import resolve_device
    from masksal.explain_files import explain_files

    def report(msg: str) -> None:
        typer.echo(f"skipped: {msg}", err=True)

    set_threads(threads)
    check_out_dir(out)
    dev = resolve_device(device)
    masker = load_masker(checkpoint, device=dev)
    if masker.info.get("explains_copy"):
        typer.echo(f"note: {checkpoint} was trained alongside its classifier (CA): the maps explain that co-trained "
                   "copy, which this checkpoint holds, not the classifier it started from", err=True)
    size = int(masker.info.get("image_size", 224))
    res = explain_files(masker, list(inputs), out, size, batch_size, dev, progress=not quiet, on_error=report)
    n = len(res.written) // 2
    typer.echo(f"{n} image(s) explained into {out}; {len(res.failed)} failed")
    if res.failed:
        if n == 0:
            fail("no image could be explained", 1)
        raise typer.Exit(1)
