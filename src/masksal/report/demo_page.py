"""``report.html`` of ``masksal demo``: metrics, training curves, and test images with their masks."""

from __future__ import annotations

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
    gt_boxes,
    has_boxes,
    map_ranges,
    predict,
)
from masksal.report.panels import (
    box_legend,
    colorbar_ticks,
    iou_text,
    picture,
    prediction_text,
    scaling_sentence,
    upscale_factor,
)
from masksal.report.plots import training_figures
from masksal.types import collate

# (key in the evaluation's results, name, what it measures); "%" columns are shown with one decimal.
_METRIC_ROWS = [("le", "LE", "localization error, % (lower is better)"),
                ("om", "OM", "LE or wrong class, % (lower is better)"),
                ("f1", "F1", "mask against box region, % (higher is better)"),
                ("maxboxacc", "MaxBoxAcc", "% (higher is better)"),
                ("maxboxacc_v2", "MaxBoxAccV2", "% (higher is better)"),
                ("pxap", "PxAP", "pixel average precision, % (higher is better)"),
                ("maps_per_second", "maps/s", "maps per second on this machine")]

_CARDS_STYLE = """
.cards { display: grid; gap: 1em; grid-template-columns: repeat(auto-fill, minmax(min(100%, 340px), 1fr)); }
.card { margin: 0; border: 1px solid #ddd; border-radius: 6px; padding: 0.5em; min-width: 0; }
.panels { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 4px; }
.panels figure { margin: 0; min-width: 0; }
.panels img { display: block; width: 100%; image-rendering: pixelated; }
.panels figcaption { font-size: 0.75em; color: #555; text-align: center; }
.card > figcaption { margin-top: 0.4em; }
"""


def _metrics_part(rep: Report, metrics: dict[str, Any]) -> None:
    co_trained = "" if metrics["mode"] == "fix" else (
        f" Trained alongside the masker, the classifier's copy ends at {metrics['masker']['top1']:.1f}%; the "
        "masker's numbers use that copy, which it explains.")
    rep.paragraph(f"Classifier test accuracy {metrics['classifier_test_accuracy']:.1f}%. Masker trained in "
                  f"{metrics['mode'].upper()} mode.{co_trained} All numbers on the held-out test split.")
    # Metrics as rows, methods as columns: two methods and seven metrics fit a phone screen this way.
    rows = [[f"{name}: {what}", *[f"{float(metrics[m][k]):.{0 if k == 'maps_per_second' else 1}f}"
                                   for m in ("masker", "centre_baseline")]]
            for k, name, what in _METRIC_ROWS if k in metrics["masker"] and k in metrics["centre_baseline"]]
    rep.table(["metric", "masker", "centre baseline"], rows)
    rep.paragraph("LE: the box from the largest connected region of the map above its mean is wrong if its IoU with "
                  "the ground-truth box is 0.5 or less. OM also counts a wrong class as an error. MaxBoxAcc, "
                  "MaxBoxAccV2 and PxAP follow wsolevaluation (Choe et al. 2020). The centre baseline is the same "
                  "centred Gaussian map for every image.", note=True)


def write_demo_page(out: str | Path, masker: Any, test_ds: Any, metrics: dict[str, Any], n_images: int = 24,
                    scaling: str = "shared") -> Path:
    """Write ``out/report.html``: the metrics table, the masker's training curves (from
    ``out/masker_<mode>/log.jsonl``) and ``n_images`` test images, each with its mask, the box from
    the mask, the true class, the classifier's prediction and the IoU.

    Args:
        masker: a :class:`~masksal.masker.Masker` (its classifier gives the predictions).
        test_ds: a masksal dataset (samples with ``image``, ``label``, ``boxes``); its ``classes``
            attribute, when present, names the classes.
        metrics: the demo's ``metrics.json`` content (``mode``, ``classifier_test_accuracy``,
            ``masker`` and ``centre_baseline`` results).
        scaling: ``"shared"`` (masks on their own 0-1 scale) or ``"per-image"`` (each mask
            stretched from its minimum to its maximum).
    """
    out = Path(out)
    scale = check_scaling(scaling)
    rep = Report("masksal demo: masker on the built-in benchmark")
    _metrics_part(rep, metrics)

    figures = training_figures(out / f"masker_{metrics['mode']}" / "log.jsonl")
    if figures:
        rep.heading("Masker training")
        rep.figures(figures)

    rep.heading("Test images")
    device = next(masker.parameters()).device
    batch = collate([test_ds[i] for i in range(min(n_images, len(test_ds)))]).to(device)
    maps = masker.explain(batch.images).detach().float().cpu().numpy()
    preds = predict(masker.classifier, batch.images)
    names = [str(c) for c in getattr(test_ds, "classes", None) or []]
    boxes = has_boxes(batch)
    gts = gt_boxes(batch)
    map_boxes = boxes_from_maps(maps, batch) if boxes else np.full((len(batch), 4), -1)
    ranges = map_ranges(maps, scale, unit=True)

    rep.paragraph("Each card is one test image: the image, the masker's mask (bright = kept), and the mask over "
                  "the image. Below: the true class, the classifier's prediction with its probability"
                  + (", and how well the box from the mask matches the ground-truth box." if boxes else "."),
                  note=True)
    rep.raw(box_legend(boxes))
    rep.colorbar(CMAP, colorbar_ticks(scale, ranges[0]),
                 "Mask value, 0 = removed, 1 = kept. " + scaling_sentence(scale, "mask"))
    rep.style(_CARDS_STYLE)
    rep.raw('<div class="cards">' + "".join(
        _card(batch.images[i].permute(1, 2, 0).cpu().numpy(), maps[i], ranges[i], gts[i], map_boxes[i], boxes,
              batch.ids[i], class_name(names, int(batch.labels[i])),
              None if preds is None else (class_name(names, preds[i].label), preds[i].score,
                                          preds[i].label == int(batch.labels[i])))
        for i in range(len(batch))) + "</div>")
    return rep.write(out / "report.html")


def _card(img: np.ndarray, mask: np.ndarray, value_range: tuple[float, float] | None, gt: np.ndarray,
          map_box: np.ndarray, boxes: bool, image_id: str, true_name: str,
          pred: tuple[str, float, bool] | None) -> str:
    f = upscale_factor(img.shape[0])
    h, w = mask.shape
    iou = best_iou(map_box, gt, h, w) if boxes else float("nan")
    gt_alt = " with its ground-truth box in green" if boxes else ""
    box_alt = (f"; the box from the mask (cyan) has IoU {iou:.2f} with the ground-truth box (green)"
               if boxes and map_box[0] >= 0 else "")
    panels = [
        (picture(img, f, gt=gt if boxes else None), "image",
         f"Test image {image_id}, true class {true_name}{gt_alt}"),
        (picture(img, f, mask, value_range, show_image=False), "mask",
         f"Mask for test image {image_id}: mean value {float(mask.mean()):.2f}, "
         f"{float((mask > mask.mean()).mean()):.0%} of pixels above the mean"),
        (picture(img, f, mask, value_range, gt=gt if boxes else None, map_box=map_box if boxes else None),
         "mask over image", f"Mask over test image {image_id}{box_alt}"),
    ]
    figs = "".join(f'<figure><img src="{data_uri(p)}" alt="{esc(alt)}"><figcaption>{esc(cap)}</figcaption></figure>'
                   for p, cap, alt in panels)
    cap = [esc(f"true: {true_name}")]
    if pred is not None:
        cap.append(prediction_text(*pred))
    cap += [esc(iou_text(iou, map_box)), esc(f"test image {image_id}; mask mean {float(mask.mean()):.2f}")]
    return (f'<figure class="card"><div class="panels">{figs}</div>'
            f'<figcaption>{"<br>".join(c for c in cap if c)}</figcaption></figure>')
