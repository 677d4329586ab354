"""``side_by_side.html`` of ``masksal benchmark``: the same images explained by every method."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from masksal.report.html import Report, esc
from masksal.report.images import data_uri
from masksal.report.maps import (
    CMAP,
    best_iou,
    boxes_from_maps,
    check_scaling,
    class_name,
    explained_class,
    find_classifier,
    gt_boxes,
    has_boxes,
    map_ranges,
    predict,
)
from masksal.report.panels import (
    box_legend,
    breakable,
    fmt_value,
    iou_text,
    lines,
    picture,
    prediction_text,
    scaling_sentence,
    short_name,
    upscale_factor,
)
from masksal.types import Batch

_STYLE = """
table.sbs { table-layout: fixed; width: 100%; border-collapse: separate; border-spacing: 4px 6px; }
table.sbs th, table.sbs td { border: 0; padding: 0; vertical-align: top; text-align: center; background: none; }
table.sbs thead th { font-size: 0.85em; vertical-align: bottom; padding-bottom: 0.2em; }
table.sbs thead th.name { font-weight: 600; }
table.sbs img { display: block; width: 100%; image-rendering: pixelated; }
table.sbs .tag, table.sbs .range { display: block; font-weight: normal; color: #555; font-size: 0.9em; }
table.sbs .caption { font-size: 0.78em; }
table.sbs tbody th.row { text-align: left; font-weight: normal; font-size: 0.85em; padding-top: 0.6em; }
table.sbs tbody th.row b { font-weight: 600; }
@media (max-width: 600px) { table.sbs thead th { font-size: 0.75em; } }
"""


def _unit_scale(explainer: Any) -> bool:
    """True for a masker: its maps are masks in [0, 1] whose values mean something unscaled."""
    from masksal.masker import Masker

    return isinstance(explainer, Masker)


def write_side_by_side(methods: Sequence[tuple[str, Any]], batch: Batch, out: str | Path, *,
                       classifier: Any = None, class_names: Sequence[str] | None = None,
                       scaling: str = "shared") -> Path:
    """Write the page: ``batch``'s images (rows) explained by every method (columns).

    Args:
        methods: ``(name, explainer)`` pairs; each map is requested for the true class
            (``explain(images, labels)``, as the evaluation does).
        batch: the images, ``(B, 3, H, W)`` in [0, 1], on the explainers' device.
        out: the HTML file to write.
        classifier: gives the predicted class and its probability in each row's caption
            (default: the classifier the first method holding one was built with).
        class_names: names of the classes in label order (default: ``class N``).
        scaling: ``"shared"``: each method's maps on one scale over the page (a masker's masks on
            their own 0-1 scale); ``"per-image"``: each map stretched from its minimum to its maximum.
    """
    scale = check_scaling(scaling)
    explainers = [e for _, e in methods]
    clf = classifier if classifier is not None else find_classifier(explainers)
    images = batch.images
    maps = [e.explain(images, batch.labels).detach().float().cpu().numpy() for e in explainers]
    preds = predict(clf, images)
    boxes = has_boxes(batch)
    gts = gt_boxes(batch)
    none = np.full((len(batch), 4), -1)
    map_boxes = [boxes_from_maps(m, batch) if boxes else none for m in maps]
    ranges = [map_ranges(m, scale, unit=_unit_scale(e)) for m, e in zip(maps, explainers, strict=True)]
    targets = [explained_class(e) for e in explainers]

    rep = Report("masksal benchmark: the same images, every method")
    rep.style(_STYLE)
    rep.paragraph("Each row is one test image; each column shows one method's map over it (bright = salient)"
                  + (", with the ground-truth box and the box from the map." if boxes else "."), note=True)
    rep.raw(box_legend(boxes))
    rep.raw("<p class='note'>For which class each method's map is made:</p><ul class='note'>" + "".join(
        f"<li><b>{breakable(name)}</b>: {esc(t.sentence)}</li>" for (name, _), t in zip(methods, targets, strict=True))
        + "</ul>")
    if scale == "shared":
        ticks = ["lowest", "", "highest"]
        label = ("Shared scaling, per method: all of a method's maps on this page share one scale, from its lowest "
                 "value (dark) to its highest (bright), so a weak map looks weak next to a strong one; the range is "
                 "under the method's name. A masker's masks keep their own scale, 0 = removed to 1 = kept. Methods "
                 "measure different things: compare shapes across columns, not colours.")
    else:
        ticks = ["each map's lowest", "its highest"]
        label = scaling_sentence(scale)
    rep.colorbar(CMAP, ticks, label)

    head = ['<th scope="col" class="name">image</th>']
    for (name, _), t, r in zip(methods, targets, ranges, strict=True):
        rng = f"scale {fmt_value(r[0][0])} to {fmt_value(r[0][1])}" if r and r[0] is not None else "scale per image"
        head.append(f'<th scope="col" title="{esc(name)}"><span class="name">{breakable(short_name(name))}</span>'
                    f'<span class="tag">{esc(t.tag)}</span><span class="range">{esc(rng)}</span></th>')
    rows = []
    f = upscale_factor(int(images.shape[-1]))
    h, w = int(images.shape[-2]), int(images.shape[-1])
    for i in range(len(batch)):
        img = images[i].permute(1, 2, 0).detach().float().cpu().numpy()
        true = class_name(class_names, int(batch.labels[i]))
        cap = [f"<b>{esc(f'image {batch.ids[i]}')}</b>", esc(f"true: {true}")]
        if preds is not None:
            p = preds[i]
            cap.append(prediction_text(class_name(class_names, p.label), p.score, p.label == int(batch.labels[i])))
        # Each image is a row group: its caption spans the whole row above its pictures (readable
        # at any width), then the pictures.
        rows.append(f'<tbody><tr><th scope="rowgroup" colspan="{len(methods) + 1}" class="row caption">'
                    f'{" · ".join(cap)}</th></tr>')
        gt_alt = " with its ground-truth box in green" if boxes else ""
        cells = [f'<td><img src="{data_uri(picture(img, f, gt=gts[i] if boxes else None))}" '
                 f'alt="{esc(f"Image {batch.ids[i]}, true class {true}{gt_alt}")}"></td>']
        for (name, _), m, mb, r in zip(methods, maps, map_boxes, ranges, strict=True):
            iou = best_iou(mb[i], gts[i], h, w) if boxes else float("nan")
            pic = picture(img, f, m[i], r[i], gt=gts[i] if boxes else None, map_box=mb[i] if boxes else None)
            text = iou_text(iou, mb[i])
            alt = f"{name} map over image {batch.ids[i]}" + (f"; {text}" if text else "")
            caption = f'<div class="caption">{lines([text])}</div>' if text else ""
            cells.append(f'<td><img src="{data_uri(pic)}" alt="{esc(alt)}">{caption}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr></tbody>")
    width = 190 * (len(methods) + 1)
    rep.raw(f'<table class="sbs" style="max-width:{width}px"><thead><tr>{"".join(head)}</tr></thead>'
            f'{"".join(rows)}</table>')
    return rep.write(out)
