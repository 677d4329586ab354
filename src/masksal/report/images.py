"""Pictures of saliency maps: overlays, boxes, PNG encoding."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

Box = Sequence[float]
Boxes = Sequence[Box] | np.ndarray


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float in [0, 1] or uint8 -> uint8."""
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def colorize(saliency: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """``(H, W)`` map -> ``(H, W, 3)`` uint8 colours, min-max normalized (constant map -> zeros)."""
    m = np.nan_to_num(saliency.astype(np.float64))
    lo, hi = float(m.min()), float(m.max())
    m = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    return (colormaps[cmap](m)[..., :3] * 255 + 0.5).astype(np.uint8)


def overlay(image: np.ndarray, saliency: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a colourized map over an image; both at the same ``(H, W)``."""
    img = to_uint8(image).astype(np.float32)
    col = colorize(saliency, cmap).astype(np.float32)
    return (img * (1 - alpha) + col * alpha + 0.5).astype(np.uint8)


def draw_boxes(image: np.ndarray, boxes: Boxes, colour: tuple[int, int, int] = (0, 255, 0),
               width: int = 1) -> np.ndarray:
    """Draw inclusive-coordinate boxes ``(x0, y0, x1, y1)`` on a copy of ``image``."""
    pil = Image.fromarray(to_uint8(image))
    draw = ImageDraw.Draw(pil)
    for b in boxes:
        x0, y0, x1, y1 = (float(v) for v in b)
        if x1 >= x0 and y1 >= y0:
            draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
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
