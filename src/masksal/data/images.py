"""Reading images and the one resize/crop that every dataset applies to images, boxes and masks.

Geometry conventions (see :mod:`masksal.types`): an image pixel ``(x, y)`` covers the
continuous square ``[x, x + 1) x [y, y + 1)``; a box ``(x0, y0, x1, y1)`` with inclusive last
row and column covers ``[x0, x1 + 1) x [y0, y1 + 1)``. :class:`ResizeCrop` maps that continuous
rectangle exactly as it maps the image (scale, then shift by the crop offset), clips it to the
output and snaps it back to whole pixels: the output box holds the pixels whose centres lie in
the mapped rectangle (at least the pixel under its middle, so a thin box never vanishes).
Integer boxes under an identity transform come back unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from PIL import Image
from torch import Tensor

ResizeMode = Literal["shorter_crop", "stretch", "none"]
RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)

# Extensions PIL decodes out of the box; compared lower-case.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)

_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


class ImageReadError(ValueError):
    """An image (or mask) file that cannot be read; the message is one line naming the file."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _open_decoded(path: Path) -> Image.Image:
    """Open and fully decode ``path`` (PIL decodes lazily, so truncation shows only on load)."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    # Decoders raise many unrelated types (OSError, SyntaxError, struct.error, DecompressionBomb...);
    # one bad file must never end a whole run, so all of them become one ImageReadError.
    except Exception as exc:
        raise ImageReadError(f"{path}: {_one_line(exc)}") from exc


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB.

    Grayscale, palette, CMYK and 16-bit images are converted to RGB; an alpha channel is dropped
    (as ``PIL.Image.convert("RGB")`` does, like the reference evaluation pipelines). EXIF
    orientation is not applied: box annotations refer to the stored pixel grid.

    Args:
        path: image file.

    Returns:
        ``(H, W, 3)`` uint8 array.

    Raises:
        ImageReadError: the file is missing, truncated or not an image (one-line message
            ``"<path>: <reason>"``).
    """
    path = Path(path)
    img = _open_decoded(path)
    if img.mode in _SIXTEEN_BIT_MODES:
        # convert("RGB") would clip 16-bit values at 255 instead of rescaling them.
        wide = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask image as ``(H, W)`` uint8 gray levels (a 1-bit PNG reads as 0/255).

    Raises:
        ImageReadError: as :func:`read_image`.
    """
    path = Path(path)
    img = _open_decoded(path)
    if img.mode in _SIXTEEN_BIT_MODES:
        return (np.asarray(img) > 0).astype(np.uint8) * 255
    return np.ascontiguousarray(np.asarray(img.convert("L"), dtype=np.uint8))


@dataclass(frozen=True)
class Geometry:
    """Where an ``in_h x in_w`` image lands: resized to ``resized_h x resized_w``, then the
    window ``[top, top + out_h) x [left, left + out_w)`` is kept."""

    in_h: int
    in_w: int
    resized_h: int
    resized_w: int
    top: int
    left: int
    out_h: int
    out_w: int


@dataclass(frozen=True)
class ResizeCrop:
    """The resize/crop shared by images, boxes and masks of every masksal dataset.

    Modes:

    * ``"shorter_crop"`` (default, the paper's evaluation preprocessing): resize so the shorter
      side is ``size`` (the longer side becomes ``int(size * long / short)``, as
      ``torchvision.transforms.Resize(size)``), then keep the centred ``size x size`` window
      (offsets ``round((resized - size) / 2)``, as ``CenterCrop``).
    * ``"stretch"``: resize to ``size x size`` ignoring the aspect ratio (the wsolevaluation
      test transform).
    * ``"none"``: keep the original size (samples of different sizes then need batch size 1).

    Images are resized bilinearly with antialiasing (PIL, as torchvision does for PIL images);
    masks with nearest-neighbour sampling at pixel centres (:func:`nearest_resize`), so 0/1/255
    (ignore) stay exact and a box's mask lands exactly on the transformed box.
    Note that wsolevaluation resizes masks with OpenCV's ``INTER_NEAREST``, which samples at
    pixel corners: the two can differ by one pixel along edges.

    Args:
        size: output side ``S``; ignored (may be ``None``) for ``mode="none"``.
        mode: one of ``"shorter_crop"``, ``"stretch"``, ``"none"``.
    """

    size: int | None = 224
    mode: ResizeMode = "shorter_crop"

    def __post_init__(self) -> None:
        if self.mode not in RESIZE_MODES:
            raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {self.mode!r}")
        if self.mode != "none" and (self.size is None or int(self.size) < 1):
            raise ValueError(f"resize mode {self.mode!r} needs a positive size, got {self.size!r}")

    def geometry(self, height: int, width: int) -> Geometry:
        """The resize and crop this transform applies to an image of ``height x width``."""
        if self.mode == "none":
            return Geometry(height, width, height, width, 0, 0, height, width)
        assert self.size is not None
        s = int(self.size)
        if self.mode == "stretch":
            return Geometry(height, width, s, s, 0, 0, s, s)
        if width <= height:
            new_w, new_h = s, int(s * height / width)
        else:
            new_w, new_h = int(s * width / height), s
        top = int(round((new_h - s) / 2.0))
        left = int(round((new_w - s) / 2.0))
        return Geometry(height, width, new_h, new_w, top, left, s, s)

    def image(self, image: np.ndarray) -> Tensor:
        """Transform an image.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.

        Returns:
            ``(3, S, S)`` float32 in [0, 1] (``(3, H, W)`` for ``mode="none"``).
        """
        g = self.geometry(int(image.shape[0]), int(image.shape[1]))
        out = image
        if (g.resized_h, g.resized_w) != (g.in_h, g.in_w):
            pil = Image.fromarray(image).resize((g.resized_w, g.resized_h), Image.Resampling.BILINEAR)
            out = np.asarray(pil)
        out = out[g.top : g.top + g.out_h, g.left : g.left + g.out_w]
        return torch.from_numpy(np.array(out, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)

    def float_image(self, image: Tensor) -> Tensor:
        """Transform a float image tensor (no round trip through uint8).

        Same geometry as :meth:`image`; the resize is torchvision's antialiased bilinear resize
        of tensors, which matches PIL's to within rounding.

        Args:
            image: ``(3, H, W)`` float in [0, 1].

        Returns:
            ``(3, S, S)`` float32 in [0, 1] (``(3, H, W)`` for ``mode="none"``).
        """
        from torchvision.transforms.v2 import functional as tvf

        g = self.geometry(int(image.shape[-2]), int(image.shape[-1]))
        out = image.float()
        if (g.resized_h, g.resized_w) != (g.in_h, g.in_w):
            out = tvf.resize(out, [g.resized_h, g.resized_w], antialias=True)
        return out[:, g.top : g.top + g.out_h, g.left : g.left + g.out_w].clamp(0.0, 1.0).contiguous()

    def mask(self, mask: np.ndarray) -> Tensor:
        """Transform a mask with nearest-neighbour sampling at pixel centres.

        Args:
            mask: ``(H, W)`` uint8 (1 object, 0 background, 255 ignore).

        Returns:
            ``(S, S)`` uint8 with the same value set.
        """
        g = self.geometry(int(mask.shape[0]), int(mask.shape[1]))
        out = nearest_resize(mask, g.resized_h, g.resized_w)
        out = out[g.top : g.top + g.out_h, g.left : g.left + g.out_w]
        return torch.from_numpy(np.array(out, dtype=np.uint8))

    def boxes(self, boxes: np.ndarray | Tensor, height: int, width: int) -> Tensor:
        """Transform inclusive boxes given in the pixel grid of a ``height x width`` image.

        Each box is mapped as a continuous rectangle, clipped to the output window and snapped
        to whole pixels (see the module docstring). A box with no area inside the window is
        dropped.

        Args:
            boxes: ``(K, 4)`` ``(x0, y0, x1, y1)``, inclusive, in input pixels.
            height: input image height.
            width: input image width.

        Returns:
            ``(K', 4)`` float32 inclusive integer-valued boxes in output pixels, ``K' <= K``.
        """
        g = self.geometry(height, width)
        arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        # Exact rationals: ties (a box edge on a pixel centre) then fall exactly as in mask().
        sx = Fraction(g.resized_w, g.in_w)
        sy = Fraction(g.resized_h, g.in_h)
        kept: list[list[float]] = []
        for x0, y0, x1, y1 in arr.tolist():
            xs = _snap(Fraction(x0) * sx - g.left, (Fraction(x1) + 1) * sx - g.left, g.out_w)
            ys = _snap(Fraction(y0) * sy - g.top, (Fraction(y1) + 1) * sy - g.top, g.out_h)
            if xs is not None and ys is not None:
                kept.append([xs[0], ys[0], xs[1], ys[1]])
        return torch.tensor(kept, dtype=torch.float32).reshape(-1, 4)

    def __call__(
        self,
        image: np.ndarray,
        boxes: np.ndarray | Tensor | None = None,
        mask: np.ndarray | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Transform an image with its boxes and optional mask (all in the same pixel grid).

        Returns:
            ``image (3, S, S)`` float in [0, 1], ``boxes (K', 4)`` float inclusive,
            ``mask (S, S)`` uint8 or ``None``.
        """
        h, w = int(image.shape[0]), int(image.shape[1])
        box_t = self.boxes(np.zeros((0, 4)) if boxes is None else boxes, h, w)
        mask_t = None if mask is None else self.mask(mask)
        return self.image(image), box_t, mask_t


def nearest_resize(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize sampling source pixel ``floor((i + 0.5) * in / out)``.

    Integer index arithmetic (not PIL, whose float rounding moves ties) keeps masks exactly
    consistent with :meth:`ResizeCrop.boxes`.

    Args:
        mask: ``(H, W)`` array of any dtype.
        height: output height.
        width: output width.

    Returns:
        ``(height, width)`` array of the same dtype.
    """
    in_h, in_w = int(mask.shape[0]), int(mask.shape[1])
    if (in_h, in_w) == (height, width):
        return mask
    rows = ((2 * np.arange(height) + 1) * in_h) // (2 * height)
    cols = ((2 * np.arange(width) + 1) * in_w) // (2 * width)
    return mask[rows[:, None], cols[None, :]]


def _snap(lo: Fraction, hi: Fraction, n: int) -> tuple[float, float] | None:
    """Inclusive pixel range covering the continuous interval ``[lo, hi)`` clipped to ``[0, n)``."""
    lo, hi = max(lo, Fraction(0)), min(hi, Fraction(n))
    if not hi > lo:
        return None
    # Pixels whose centres (i + 0.5) fall in [lo, hi); a sub-pixel box keeps its middle pixel.
    half = Fraction(1, 2)
    first = math.ceil(lo - half)
    last = math.ceil(hi - half) - 1
    if last < first:
        first = last = min(math.floor((lo + hi) / 2), n - 1)
    return float(max(first, 0)), float(min(last, n - 1))
