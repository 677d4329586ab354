"""``masksal explain`` (maps and overlays for image files and folders) and ``masksal export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from masksal.cli import app
from masksal.cli.common import BatchOpt, Runtime, ThreadsOpt, errors, fail, runtime_options, set_threads


@app.command(epilog="Example: masksal explain runs/demo/masker_ca photos/ --out runs/maps")
@errors()
@runtime_options()
def explain(
    checkpoint: Annotated[Path, typer.Argument(help="Masker checkpoint directory.")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched recursively).")],
    out: Annotated[Path, typer.Option(help="Folder for the maps and overlays (inputs' layout mirrored).")],
    format_: Annotated[str, typer.Option(
        "--format", help="Maps as npy (float32), npz (float16, compressed) or png (8-bit).")] = "npy",
    overlay: Annotated[bool, typer.Option("--overlay/--no-overlay", help="Also write an overlay picture.")] = True,
    overlay_format: Annotated[str, typer.Option(help="Overlay as png or jpg (smaller, faster, lossy).")] = "png",
    max_overlay_side: Annotated[int, typer.Option(
        min=0, help="Longest overlay side in pixels (larger images are shown downscaled); 0: the image's size.")
    ] = 2048,
    target: Annotated[int | None, typer.Option(
        min=0, help="Class index every map explains (a class-conditional masker, masker.conditional); "
                    "default: each image's top-1 class.")] = None,
    batch_size: BatchOpt = 32,
    workers: Annotated[int, typer.Option(min=0, help="Threads decoding and writing files (0: up to 4).")] = 0,
    *,
    runtime: Runtime,
) -> None:
    """Write a saliency map (at the image's own resolution) and an overlay for each image.

    Outputs are named after the input with its suffix: cat.png -> cat.png.npy, cat.png.overlay.png.
    """
    from masksal.checkpoint import load_masker
    from masksal.cli.common import check_out_dir
    from masksal.devices import resolve_device
    from masksal.explain_files import MAP_FORMATS, OVERLAY_FORMATS, explain_files

    def report(msg: str) -> None:
        typer.echo(f"skipped: {msg}", err=True)

    if format_ not in MAP_FORMATS:
        fail(f"--format must be one of {', '.join(MAP_FORMATS)}, got {format_!r}")
    if overlay_format not in OVERLAY_FORMATS:
        fail(f"--overlay-format must be one of {', '.join(OVERLAY_FORMATS)}, got {overlay_format!r}")
    check_out_dir(out)
    dev = resolve_device(runtime.device)
    masker = load_masker(checkpoint, device=dev)
    if masker.info.get("explains_copy"):
        typer.echo(f"note: {checkpoint} was trained alongside its classifier (CA): the maps explain that co-trained "
                   "copy, which this checkpoint holds, not the classifier it started from", err=True)
    if target is not None:
        if not masker.class_specific:
            fail(f"--target: {checkpoint} is a class-agnostic masker (it explains the top-1 class); asking for a "
                 "class needs a masker trained with masker.conditional: true")
        if target >= masker.classifier.num_classes:
            fail(f"--target {target}: the classifier has {masker.classifier.num_classes} classes (0.."
                 f"{masker.classifier.num_classes - 1})")
    size = int(masker.info.get("image_size", 224))
    res = explain_files(masker, list(inputs), out, size, batch_size, dev, progress=runtime.progress, on_error=report,
                        target=target,
                        map_format=format_, overlay=overlay,  # type: ignore[arg-type]
                        overlay_format=overlay_format,  # type: ignore[arg-type]
                        max_overlay_side=max_overlay_side or None, workers=workers or None)
    typer.echo(f"{len(res.explained)} image(s) explained into {out}; {len(res.failed)} failed")
    if res.failed:
        if not res.explained:
            fail("no image could be explained", 1)
        raise typer.Exit(1)


@app.command("export", epilog="Example: masksal export runs/demo/masker_ca --out masker.onnx")
@errors()
def export_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Masker checkpoint directory.")],
    out: Annotated[Path, typer.Option(help="File to write (e.g. masker.onnx, masker.pt).")],
    format_: Annotated[str, typer.Option(
        "--format", help="onnx (needs the export extra: onnx, onnxscript, onnxruntime) or torchscript.")] = "onnx",
    opset: Annotated[int, typer.Option(min=7, help="ONNX opset version.")] = 18,
    threads: ThreadsOpt = 0,
) -> None:
    """Export the masker with its classifier as one graph: images -> (logits, maps), normalization inside.

    Input "images": (B, 3, S, S) float32 RGB in [0, 1], any batch size B, S the checkpoint's image size.
    Outputs "logits": (B, C); "maps": (B, S, S) in [0, 1]. Runs with onnxruntime or torch.jit.load alone.
    """
    from masksal.checkpoint import load_masker
    from masksal.cli.common import check_out_file
    from masksal.export import EXPORT_FORMATS, export_masker, require

    if format_ not in EXPORT_FORMATS:
        fail(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {format_!r}")
    check_out_file(out)
    set_threads(threads)  # the graph is traced on the CPU
    if format_ == "onnx":  # before the checkpoint is loaded: a missing package fails at once
        require("onnx")
        require("onnxscript")
    masker = load_masker(checkpoint)
    size = int(masker.info.get("image_size", 224))
    try:
        path = export_masker(masker, out, format_, image_size=size, opset=opset)  # type: ignore[arg-type]
    except Exception as e:  # the exporters raise many types with pages of detail: one line here
        first = (str(e).strip().splitlines() or [""])[0]
        fail(f"{checkpoint}: {format_} export to {out} failed ({type(e).__name__}: {first})", code=1)
    typer.echo(f"wrote {path}: images (B, 3, {size}, {size}) in [0, 1] -> logits (B, "
               f"{masker.classifier.num_classes}), maps (B, {size}, {size}) in [0, 1]")
