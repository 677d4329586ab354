"""Pictures of saliency maps: overlays, boxes, PNG encoding.

matplotlib is imported inside the functions that need its colour maps, so importing this module
(``masksal explain`` does) costs nothing and sets no backend.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

Box = Sequence[float]
Boxes = Sequence[Box] | np.ndarray


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float in [0, 1] or uint8 -> uint8."""
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def scale_to_unit(saliency: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """``(H, W)`` map -> float64 in [0, 1]: ``(m - vmin) / (vmax - vmin)``, clipped.

    ``vmin`` / ``vmax`` default to the map's own minimum / maximum (per-image min-max scaling);
    an empty range (constant map, or ``vmax <= vmin``) gives zeros. NaN counts as ``vmin``.
    """
    m = saliency.astype(np.float64)
    lo = float(np.nanmin(m)) if vmin is None else float(vmin)
    hi = float(np.nanmax(m)) if vmax is None else float(vmax)
    m = np.nan_to_num(m, nan=lo, posinf=hi, neginf=lo)
    if not hi > lo:
        return np.zeros_like(m)
    return np.clip((m - lo) / (hi - lo), 0.0, 1.0)


def colorize(saliency: np.ndarray, cmap: str = "jet", vmin: float | None = None,
             vmax: float | None = None) -> np.ndarray:
    """``(H, W)`` map -> ``(H, W, 3)`` uint8 colours of ``cmap``, scaled by :func:`scale_to_unit`
    (min-max per map unless ``vmin`` / ``vmax`` are given; a constant map -> the lowest colour)."""
    from matplotlib import colormaps

    m = scale_to_unit(saliency, vmin, vmax)
    return (colormaps[cmap](m)[..., :3] * 255 + 0.5).astype(np.uint8)


def overlay(image: np.ndarray, saliency: np.ndarray, alpha: float = 0.5, cmap: str = "jet",
            vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Blend a colourized map (see :func:`colorize`) over an image; both at the same ``(H, W)``."""
    img = to_uint8(image).astype(np.float32)
    col = colorize(saliency, cmap, vmin, vmax).astype(np.float32)
    return (img * (1 - alpha) + col * alpha + 0.5).astype(np.uint8)


def css_gradient(cmap: str, stops: int = 17) -> str:
    """A CSS ``linear-gradient`` through ``stops`` evenly spaced colours of ``cmap``, low at the
    left: a colour bar that stays sharp at any width and needs no image."""
    from matplotlib import colormaps

    cm = colormaps[cmap]
    parts = []
    for t in np.linspace(0.0, 1.0, stops):
        r, g, b = (int(round(255 * c)) for c in cm(float(t))[:3])
        parts.append(f"rgb({r},{g},{b}) {100 * t:.4g}%")
    return "linear-gradient(to right, " + ", ".join(parts) + ")"


def draw_boxes(image: np.ndarray, boxes: Boxes, colour: tuple[int, int, int] = (0, 255, 0),
               width: int = 1, scale: int = 1) -> np.ndarray:
    """Draw inclusive-coordinate boxes ``(x0, y0, x1, y1)`` on a copy of ``image``.

    ``scale``: the image is a ``scale``-times nearest upscaling of the one the boxes refer to;
    each box is drawn around the upscaled pixels it covers, so lines stay thin and sharp.
    """
    pil = Image.fromarray(to_uint8(image))
    draw = ImageDraw.Draw(pil)
    for b in boxes:
        x0, y0, x1, y1 = (float(v) for v in b)
        if x1 >= x0 and y1 >= y0:
            draw.rectangle([x0 * scale, y0 * scale, (x1 + 1) * scale - 1, (y1 + 1) * scale - 1],
                           outline=colour, width=width)
    return np.asarray(pil)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling, so small images stay crisp in a report."""
    if factor <= 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buf, format="PNG")
    return buf.getvalue()


def data_uri(image: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI: reports stay one self-contained file."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()
