"""Explain image files: a map at each image's own resolution and an overlay, near the model's speed.

Images are decoded and resized by a pool of threads while the model explains the previous batch,
and maps and overlays are encoded and written by the same pool while the model goes on. A corrupt
or unreadable file is reported on one line and skipped; a write that fails is reported the same way.

Each image is stretched to the explainer's ``S x S`` input (PIL bilinear with antialiasing, as the
datasets resize), so the map covers the whole image; the ``S x S`` map is then resized back
bilinearly (as ``F.interpolate(..., mode="bilinear", align_corners=False)``) to the image's size.

Output names keep the input's file name with its suffix, under the inputs' folder structure
relative to their common folder, so no two inputs share an output (``cat.png`` and ``cat.jpg``,
``a/x.png`` and ``b/x.png``) and an input file is never overwritten:

* ``<rel>.npy`` (float32), ``<rel>.npz`` (float16, compressed; array ``"map"``) or
  ``<rel>.map.png`` (8-bit: ``round(255 * clip(map, 0, 1))``): the map, ``(H, W)``;
* ``<rel>.overlay.png`` or ``.overlay.jpg``: the map (jet, min-max scaled per image) blended over
  the image, at most ``max_overlay_side`` pixels on its longest side.

Memory is bounded for huge images: the map is computed at the model's resolution, upsampled and
written in strips of rows (about 4 MB each), the overlay is capped, and the full-resolution image
is held only as the decoder's own buffer while it is resized. An image being decoded takes about
4 bytes per pixel (PIL's RGB buffer; one per worker thread at most), an image waiting to be
written keeps only its model input and overlay base (at most ``3 * max_overlay_side**2`` bytes,
12 MB at 2048), those waiting are capped at two batches and about ``PENDING_BYTES`` (256 MB), and
one batch is decoded ahead. Measured for one 6000 x 6000 PNG: about 200 MB above the process with
the model loaded (``benchmarks/bench_explain_cli.py --huge``).
"""

from __future__ import annotations

import os
import zipfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image
from tqdm.auto import tqdm

from masksal.data.images import IMAGE_EXTENSIONS, ImageReadError, read_image
from masksal.explainers.base import Explainer

MapFormat = Literal["npy", "npz", "png"]
OverlayFormat = Literal["png", "jpg"]
MAP_FORMATS: tuple[str, ...] = ("npy", "npz", "png")
OVERLAY_FORMATS: tuple[str, ...] = ("png", "jpg")
MAP_SUFFIX = {"npy": ".npy", "npz": ".npz", "png": ".map.png"}
STRIP_PIXELS = 1 << 20  # rows per strip are chosen so that one strip holds about this many pixels
PENDING_BYTES = 256 << 20  # decoded pictures waiting for their files to be written, at most (about)


@dataclass
class ExplainResult:
    """Files written, the inputs explained, and one message per input that failed."""

    written: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    explained: list[Path] = field(default_factory=list)


def find_images(inputs: Sequence[str | Path]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """``[(file, output name relative to --out)]`` for files and folders, plus one message per
    input that does not exist.

    Folders are searched recursively (sorted). The relative names are the files' paths relative to
    the common folder of all inputs (a folder input counts as itself, a file input as its parent),
    so one folder keeps its own layout and distinct files always get distinct names. A file found
    twice is listed once.
    """
    groups: list[tuple[Path, list[Path]]] = []
    missing: list[str] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            groups.append((p, files))
        elif p.is_file():
            groups.append((p.parent, [p]))
        else:
            missing.append(f"{p}: no such file or folder")
    if not groups:
        return [], missing
    common = Path(os.path.commonpath([os.path.abspath(base) for base, _ in groups]))
    found: list[tuple[Path, Path]] = []
    seen: set[str] = set()
    for _, files in groups:
        for f in files:
            key = os.path.abspath(f)
            if key not in seen:
                seen.add(key)
                found.append((f, Path(key).relative_to(common)))
    return found, missing


def output_paths(rel: Path, out: Path, map_format: MapFormat = "npy",
                 overlay_format: OverlayFormat | None = "png") -> list[Path]:
    """The files written for the input named ``rel`` (see :func:`find_images`): map, then overlay."""
    paths = [out / rel.parent / (rel.name + MAP_SUFFIX[map_format])]
    if overlay_format is not None:
        paths.append(out / rel.parent / f"{rel.name}.overlay.{overlay_format}")
    return paths


@dataclass
class _Decoded:
    path: Path
    rel: Path
    height: int
    width: int
    model_input: np.ndarray  # (S, S, 3) uint8
    overlay_base: np.ndarray | None  # (h', w', 3) uint8, longest side capped


def _capped(height: int, width: int, side: int | None) -> tuple[int, int]:
    if side is None or max(height, width) <= side:
        return height, width
    scale = side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _decode(path: Path, rel: Path, size: int, overlay_side: int | None, overlay: bool) -> _Decoded:
    """Decode one image straight to the model's input and the overlay's base.

    Written here rather than with :func:`read_image` because that returns a full-resolution array
    (with copies): for a 6000 x 6000 image this path holds only PIL's own buffer.
    """
    try:
        with Image.open(path) as img:
            img.load()
            width, height = img.size
            if img.mode.startswith("I"):  # 16/32-bit integer: the reader's rescaling to 8 bits (rare)
                rgb = Image.fromarray(read_image(path))
            else:
                rgb = img if img.mode == "RGB" else img.convert("RGB")
            small = np.asarray(rgb if rgb.size == (size, size) else
                               rgb.resize((size, size), Image.Resampling.BILINEAR))
            base = None
            if overlay:
                oh, ow = _capped(height, width, overlay_side)
                if (oh, ow) == (size, size):
                    base = small  # read-only arrays: sharing one is safe
                else:
                    base = np.asarray(rgb if (oh, ow) == (height, width) else
                                      rgb.resize((ow, oh), Image.Resampling.BILINEAR))
            return _Decoded(path, rel, height, width, small, base)
    except ImageReadError:
        raise
    # Decoders raise many unrelated types (OSError, SyntaxError, DecompressionBombError...):
    # one bad file must never end the run, so each becomes a one-line ImageReadError.
    except Exception as exc:
        raise ImageReadError(f"{path}: {' '.join(str(exc).split()) or type(exc).__name__}") from exc


@lru_cache(maxsize=64)
def _taps(out_n: int, in_n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two-tap bilinear resampling ``in_n -> out_n`` along one axis: ``(i0, i1, w0, w1)``.

    Read off ``F.interpolate`` applied to an identity matrix, so the weights are PyTorch's own
    (align_corners=False); kept as two taps so a huge output costs O(pixels), not O(pixels * S).
    """
    eye = torch.eye(in_n, dtype=torch.float32)[None, None]
    m = F.interpolate(eye, size=(out_n, in_n), mode="bilinear", align_corners=False)[0, 0].numpy()
    rows = np.arange(out_n)
    i0 = (m != 0).argmax(axis=1)
    i1 = np.minimum(i0 + 1, in_n - 1)
    w0 = m[rows, i0]
    w1 = np.where(i1 != i0, m[rows, i1], 0).astype(np.float32)
    return i0, i1, w0[:, None], w1[:, None]


def resize_map_rows(saliency: np.ndarray, height: int, width: int, strip: int | None = None) -> Iterator[np.ndarray]:
    """The ``(S_h, S_w)`` map bilinearly resized to ``(height, width)``, yielded in strips of rows.

    Equals ``F.interpolate(map[None, None], (height, width), mode="bilinear",
    align_corners=False)`` (to float32 rounding), without holding the whole result.
    """
    sal = np.asarray(saliency, dtype=np.float32)
    if sal.shape[1] != width:
        i0, i1, w0, w1 = _taps(width, sal.shape[1])
        sal = sal[:, i0] * w0.T + sal[:, i1] * w1.T  # (S_h, width)
    step = strip or max(1, STRIP_PIXELS // max(width, 1))
    same_rows = sal.shape[0] == height
    ti0, ti1, tw0, tw1 = (None,) * 4 if same_rows else _taps(height, sal.shape[0])
    for r0 in range(0, height, step):
        r1 = min(height, r0 + step)
        if same_rows:
            yield sal[r0:r1]
        else:
            yield sal[ti0[r0:r1]] * tw0[r0:r1] + sal[ti1[r0:r1]] * tw1[r0:r1]  # type: ignore[index]


def resize_map(saliency: np.ndarray, height: int, width: int) -> np.ndarray:
    """The whole resized map ``(height, width)`` float32 (see :func:`resize_map_rows`)."""
    return np.concatenate(list(resize_map_rows(saliency, height, width)), axis=0)


def _npy_header(f: Any, dtype: str, shape: tuple[int, int]) -> None:
    np.lib.format.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False, "shape": shape})


def _write_map(path: Path, saliency: np.ndarray, height: int, width: int, fmt: MapFormat) -> None:
    if fmt == "npy":
        with open(path, "wb") as f:
            _npy_header(f, "<f4", (height, width))
            for rows in resize_map_rows(saliency, height, width):
                f.write(np.ascontiguousarray(rows, dtype="<f4").data)
    elif fmt == "npz":
        # np.savez_compressed's layout (a zip holding map.npy), streamed so no full copy is held;
        # level 1: maps are smooth, a higher level costs time for little size.
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf, \
                zf.open("map.npy", "w", force_zip64=True) as f:
            _npy_header(f, "<f2", (height, width))
            for rows in resize_map_rows(saliency, height, width):
                f.write(np.ascontiguousarray(rows, dtype="<f2").data)
    else:
        import cv2

        gray = np.empty((height, width), dtype=np.uint8)  # 1 byte per pixel: the PNG encoder wants it whole
        r = 0
        for rows in resize_map_rows(saliency, height, width):
            gray[r:r + len(rows)] = np.rint(np.clip(rows, 0, 1) * 255)
            r += len(rows)
        _write_encoded(path, cv2, ".png", gray)


@lru_cache(maxsize=8)
def _lut_bgr(cmap: str) -> np.ndarray:
    """``(256, 3)`` uint8 BGR colours of ``cmap``, as matplotlib maps a value ``v`` in [0, 1]."""
    rgb = (colormaps[cmap](np.arange(256))[:, :3] * 255 + 0.5).astype(np.uint8)  # integers index the table
    return np.ascontiguousarray(rgb[:, ::-1])


def overlay_bgr(image: np.ndarray, saliency: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """The map (min-max scaled per image, a constant map shows as the colormap's low end) blended over
    the image, as :func:`masksal.report.overlay` draws it but with uint8 arithmetic (fast).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        saliency: ``(H, W)`` float map.

    Returns:
        ``(H, W, 3)`` uint8 **BGR** (OpenCV's order, ready to encode).
    """
    import cv2

    m = np.nan_to_num(saliency.astype(np.float32, copy=False))
    lo, hi = float(m.min()), float(m.max())
    # matplotlib picks colour floor(v * 256) of 256 (1.0 -> the last): the same index here.
    idx = np.zeros(m.shape, np.uint8) if hi <= lo else \
        np.clip((m - lo) * (256.0 / (hi - lo)), 0, 255).astype(np.uint8)
    colours = cv2.LUT(cv2.merge([idx, idx, idx]), _lut_bgr(cmap)[None])  # 10x numpy's fancy indexing
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    return cv2.addWeighted(bgr, 1 - alpha, colours, alpha, 0.0)


def _write_encoded(path: Path, cv2: Any, ext: str, image: np.ndarray) -> None:
    # Fast settings, measured: PNG at zlib level 1 with the "sub" filter encodes 64-512 px overlays
    # 3-7x faster than Pillow's default for files about 35 % larger; JPEG at quality 90.
    params = ([cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
              if ext == ".png" else [cv2.IMWRITE_JPEG_QUALITY, 90])
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise OSError(f"could not encode {ext} of shape {image.shape}")
    with open(path, "wb") as f:
        f.write(buf.data)


def _write_outputs(item: _Decoded, saliency: np.ndarray, paths: list[Path], map_format: MapFormat) -> list[Path]:
    """Write the map (and the overlay) of one image; each file appears whole (written, then renamed)."""
    for i, path in enumerate(paths):
        tmp = path.with_name(path.name + ".partial")
        try:
            if i == 0:
                _write_map(tmp, saliency, item.height, item.width, map_format)
            else:
                import cv2

                assert item.overlay_base is not None
                oh, ow = item.overlay_base.shape[:2]
                picture = overlay_bgr(item.overlay_base, resize_map(saliency, oh, ow))
                _write_encoded(tmp, cv2, path.suffix, picture)
            tmp.replace(path)
        # Any failure (disk full, permissions, an encoder error) fails this image only, on one line.
        except Exception as e:
            tmp.unlink(missing_ok=True)
            reason = e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())
            raise OSError(f"{path}: {reason or type(e).__name__}") from None
    return paths


def explain_files(
    explainer: Explainer,
    inputs: Sequence[str | Path],
    out: str | Path,
    image_size: int,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_error: Callable[[str], object] = print,
    map_format: MapFormat = "npy",
    overlay: bool = True,
    overlay_format: OverlayFormat = "png",
    max_overlay_side: int | None = 2048,
    workers: int | None = None,
    target: int | None = None,
) -> ExplainResult:
    """Explain every image under ``inputs`` and write its map (and overlay) under ``out``.

    Args:
        explainer: maps ``(B, S, S)`` for images ``(B, 3, S, S)`` in [0, 1] (e.g. a :class:`Masker`).
        inputs: image files and folders (searched recursively).
        out: output folder; names as in this module's docstring (:func:`output_paths`).
        image_size: the explainer's input side ``S``.
        batch_size: images per forward pass.
        device: where the explainer runs.
        progress: show a progress bar.
        on_error: called with a one-line message for each input that fails (default: print).
        map_format: ``"npy"`` (float32), ``"npz"`` (float16, compressed) or ``"png"`` (8-bit).
        overlay: also write an overlay picture per image.
        overlay_format: ``"png"`` or ``"jpg"`` (smaller and faster to write, lossy).
        max_overlay_side: longest side of an overlay (larger images are shown downscaled);
            ``None`` for the image's own size.
        workers: threads decoding and writing (default: ``min(4, cpu count)``).
        target: the class every map explains (``None``: the explainer's default, e.g. each
            image's top-1 class).

    Returns:
        The files written, the inputs explained, and the failures (unreadable inputs, failed writes,
        an output that would replace an input file).
    """
    if map_format not in MAP_FORMATS:
        raise ValueError(f"map format must be one of {MAP_FORMATS}, got {map_format!r}")
    if overlay_format not in OVERLAY_FORMATS:
        raise ValueError(f"overlay format must be one of {OVERLAY_FORMATS}, got {overlay_format!r}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if max_overlay_side is not None and max_overlay_side < 1:
        raise ValueError(f"max overlay side must be at least 1, got {max_overlay_side}")
    out = Path(out)
    try:  # before any work: an --out that cannot be a folder fails at once, on one line
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {out}: cannot create the folder ({e.strerror or e})") from None
    items, missing = find_images(inputs)
    result = ExplainResult(failed=list(missing))
    input_files = {os.path.abspath(p) for p, _ in items}
    made: set[Path] = set()  # output folders already created (one mkdir per folder, not per image)

    def fail(msg: str) -> None:
        result.failed.append(msg)
        on_error(msg)

    for msg in missing:
        on_error(msg)
    n_workers = workers or min(4, os.cpu_count() or 1)
    bar = tqdm(total=len(items), desc="explain", unit="img", disable=not progress, dynamic_ncols=True)
    chunks = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    pending: deque[tuple[Path, int, Future[list[Path]]]] = deque()  # (input, bytes held, write)
    held = 0

    def collect(block: bool) -> None:
        nonlocal held
        while pending and (block or pending[0][2].done()):
            path, size, fut = pending.popleft()
            held -= size
            try:
                result.written += fut.result()
                result.explained.append(path)
            except OSError as e:
                fail(str(e))
            bar.update(1)

    with ThreadPoolExecutor(n_workers, thread_name_prefix="explain") as pool:
        def submit(chunk: list[tuple[Path, Path]]) -> list[Future[_Decoded]]:
            return [pool.submit(_decode, p, rel, image_size, max_overlay_side, overlay) for p, rel in chunk]

        ahead = submit(chunks[0]) if chunks else []
        for k in range(len(chunks)):
            decoding, ahead = ahead, submit(chunks[k + 1]) if k + 1 < len(chunks) else []
            decoded: list[_Decoded] = []
            for fut in decoding:
                try:
                    decoded.append(fut.result())
                except ImageReadError as e:
                    fail(str(e))
                    bar.update(1)
            if not decoded:
                continue
            x = torch.from_numpy(np.stack([d.model_input for d in decoded])).to(device)
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
            maps = explainer.explain(x, target).detach().float().cpu().numpy()
            for d, m in zip(decoded, maps, strict=True):
                paths = output_paths(d.rel, out, map_format, overlay_format if overlay else None)
                clash = [p for p in paths if os.path.abspath(p) in input_files]
                if clash:
                    fail(f"{d.path}: its output {clash[0]} is an input file; choose another --out")
                    bar.update(1)
                    continue
                if paths[0].parent not in made:
                    try:
                        paths[0].parent.mkdir(parents=True, exist_ok=True)
                    except OSError as e:
                        fail(f"{d.path}: cannot create the output folder {paths[0].parent} ({e.strerror or e})")
                        bar.update(1)
                        continue
                    made.add(paths[0].parent)
                size = d.model_input.nbytes + (0 if d.overlay_base is None else d.overlay_base.nbytes)
                pending.append((d.path, size, pool.submit(_write_outputs, d, m, paths, map_format)))
                held += size
            # Bounded memory: at most two batches, and about PENDING_BYTES, waiting to be written.
            while len(pending) > 2 * batch_size or (held > PENDING_BYTES and len(pending) > 1):
                pending[0][2].exception()  # waits for the oldest write; collect() reports its failure
                collect(block=False)
            collect(block=False)
        collect(block=True)
    bar.close()
    return result
