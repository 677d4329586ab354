"""The pictures and caption pieces the demo page and the side-by-side page share."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from masksal.report.html import esc
from masksal.report.images import colorize, draw_boxes, overlay, to_uint8, upscale
from masksal.report.maps import CMAP, GT_COLOUR, GT_NAME, MAP_BOX_COLOUR, MAP_BOX_NAME, Scaling

# Pictures are drawn this many pixels wide at least (small images nearest-upscaled), so boxes are
# drawn with sharp lines that stay visible when the browser shrinks the picture to its column.
PICTURE_PX = 192
BOX_LINE_PX = 2


def upscale_factor(size: int, target: int = PICTURE_PX) -> int:
    return max(1, math.ceil(target / max(1, size)))


def picture(image: np.ndarray, factor: int, saliency: np.ndarray | None = None,
            value_range: tuple[float, float] | None = None, gt: np.ndarray | None = None,
            map_box: np.ndarray | None = None, show_image: bool = True) -> np.ndarray:
    """One panel, upscaled by ``factor``: ``image`` ``(H, W, 3)`` in [0, 1], optionally with the
    map ``(H, W)`` overlaid (or shown alone when not ``show_image``) in the report's colour map
    over ``value_range`` (``None``: the map's own min-max), then the ground-truth boxes ``gt``
    ``(K, 4)`` and the box from the map ``(4,)`` (``-1`` row: none) drawn on top."""
    vmin, vmax = value_range if value_range is not None else (None, None)
    if saliency is None:
        pic = to_uint8(image)
    elif show_image:
        pic = overlay(image, saliency, alpha=0.6, cmap=CMAP, vmin=vmin, vmax=vmax)
    else:
        pic = colorize(saliency, CMAP, vmin, vmax)
    pic = upscale(pic, factor)
    if gt is not None and len(gt):
        pic = draw_boxes(pic, gt, GT_COLOUR, width=BOX_LINE_PX, scale=factor)
    if map_box is not None and map_box[0] >= 0:
        pic = draw_boxes(pic, map_box[None], MAP_BOX_COLOUR, width=BOX_LINE_PX, scale=factor)
    return pic


def box_legend(boxes: bool) -> str:
    """Markup naming the box colours, or an honest sentence when the data have no boxes."""
    if not boxes:
        return ("<p class='note'>This dataset has no ground-truth boxes: no box is drawn and no IoU given.</p>")
    gt, mb = ("#" + "".join(f"{c:02x}" for c in colour) for colour in (GT_COLOUR, MAP_BOX_COLOUR))
    return (f"<p class='note'><span class='legend-box' style='border-color:{gt}'></span> ground-truth box "
            f"({GT_NAME}); <span class='legend-box' style='border-color:{mb}'></span> box from the map "
            f"({MAP_BOX_NAME}): the tight box of the largest connected region above the map's mean, the box the "
            "LE metric scores. IoU: its overlap with the ground-truth box (localized when above 0.5).</p>")


def iou_text(iou: float, box: np.ndarray) -> str:
    if math.isnan(iou):
        return ""
    if box[0] < 0:
        return "no box from the map"
    return f"IoU {iou:.2f}, {'localized' if iou > 0.5 else 'not localized'}"


def prediction_text(name: str, score: float, correct: bool) -> str:
    """Markup: the predicted class and its probability, in red with ", wrong" when it is wrong."""
    text = esc(f"predicted: {name} ({score:.0%})")
    return text if correct else f'<span class="wrong">{text}, wrong</span>'


def fmt_value(v: float) -> str:
    return f"{v:.3g}"


def colorbar_ticks(scaling: Scaling, value_range: tuple[float, float] | None) -> list[str]:
    if scaling == "per-image" or value_range is None:
        return ["each map's lowest", "its highest"]
    lo, hi = value_range
    return [fmt_value(lo + (hi - lo) * t) for t in (0, 0.25, 0.5, 0.75, 1)]


def scaling_sentence(scaling: Scaling, what: str = "map") -> str:
    if scaling == "per-image":
        return (f"Per-image scaling: each {what} is stretched from its own lowest value (dark) to its highest "
                f"(bright), which shows its shape but not its strength: a nearly empty {what} looks as strong as "
                "a full one.")
    return f"Shared scaling: every {what} on the page on one scale, so a weak {what} looks weak."


def lines(items: Sequence[str]) -> str:
    """Caption lines, each escaped, joined with line breaks (empty items dropped)."""
    return "<br>".join(esc(s) for s in items if s)


def short_name(name: str, limit: int = 30) -> str:
    """A method spec short enough for a column header: a long checkpoint path keeps its last
    folder (``masker:runs/x/y/masker_ca`` -> ``masker:…/masker_ca``); other specs unchanged."""
    kind, sep, arg = name.partition(":")
    if len(name) <= limit or "/" not in arg.rstrip("/"):
        return name
    return f"{kind}{sep}…/{arg.rstrip('/').rsplit('/', 1)[-1]}"


def breakable(name: str) -> str:
    """Escaped ``name`` with line-break opportunities after ``/ , : =`` (long method specs and
    checkpoint paths wrap at their separators instead of mid-word)."""
    out = esc(name)
    for sep in ("/", ",", ":", "="):
        out = out.replace(sep, sep + "<wbr>")
    return out
