"""Explain image files: maps at each image's own resolution, as ``.npy`` and overlay PNGs.

Images are read one by one (a corrupt or unreadable file is reported on one line and skipped),
resized to the explainer's input size (stretched to a square, so the map covers the whole
image), explained in batches, and each map is resized back to the image's own size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from masksal.data.images import IMAGE_EXTENSIONS, ImageReadError, read_image
from masksal.explainers.base import Explainer
from masksal.report.images import overlay


@dataclass
class ExplainResult:
    """Files written, and one message per input that could not be explained."""

    written: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def find_images(inputs: list[str | Path]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """``[(file, path relative to its input root)]`` for files and folders (recursive, sorted),
    plus a message for each input that does not exist."""
    found: list[tuple[Path, Path]] = []
    missing: list[str] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            found += [(f, f.relative_to(p)) for f in files]
        elif p.is_file():
            found.append((p, Path(p.name)))
        else:
            missing.append(f"{p}: no such file or folder")
    return found, missing


def _to_input(image: np.ndarray, size: int) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(1, 3, size, size)`` float in [0, 1] (antialiased resize)."""
    x = torch.from_numpy(np.array(image))  # a copy: decoded images can be read-only
    x = x.permute(2, 0, 1)[None].float() / 255.0
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def _batches(items: list[tuple[Path, Path]], size: int) -> Iterator[list[tuple[Path, Path]]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def explain_files(
    explainer: Explainer,
    inputs: list[str | Path],
    out: str | Path,
    image_size: int,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_error: object = print,
) -> ExplainResult:
    """Explain every image under ``inputs`` and write ``<name>.npy`` + ``<name>_overlay.png``.

    Outputs keep the inputs' relative folder structure under ``out``. ``on_error`` is called with
    a one-line message for each unreadable image (default: print it).
    """
    out = Path(out)
    items, missing = find_images(inputs)
    result = ExplainResult(failed=list(missing))
    for msg in missing:
        on_error(msg)  # type: ignore[operator]
    bar = tqdm(total=len(items), desc="explain", unit="img", disable=not progress, dynamic_ncols=True)
    for chunk in _batches(items, batch_size):
        images, keep = [], []
        for path, rel in chunk:
            try:
                images.append(read_image(path))
                keep.append((path, rel))
            except ImageReadError as e:
                result.failed.append(str(e))
                on_error(str(e))  # type: ignore[operator]
        bar.update(len(chunk) - len(keep))
        if not images:
            continue
        x = torch.cat([_to_input(im, image_size) for im in images]).to(device)
        maps = explainer.explain(x).detach().float().cpu()
        for (_path, rel), im, m in zip(keep, images, maps, strict=True):
            h, w = im.shape[:2]
            full = F.interpolate(m[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
            target = out / rel.parent
            target.mkdir(parents=True, exist_ok=True)
            npy = target / f"{rel.stem}.npy"
            np.save(npy, full.astype(np.float32))
            png = target / f"{rel.stem}_overlay.png"
            Image.fromarray(overlay(im, full)).save(png)
            result.written += [npy, png]
        bar.update(len(keep))
    bar.close()
    return result
