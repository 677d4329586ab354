"""What the demo report and the side-by-side page say and draw, read from their HTML and pictures
(the browser checks of the layout are in test_report_browser.py)."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from masksal.classifiers import create_classifier
from masksal.demo import write_demo_report
from masksal.explainers import CentreBaseline
from masksal.masker import Masker, MaskerNet
from masksal.report.maps import GT_COLOUR, MAP_BOX_COLOUR, check_scaling, map_ranges
from masksal.report.panels import picture, short_name, upscale_factor
from masksal.report.plots import figure_to_array, training_figures
from masksal.report.side_by_side import write_side_by_side as side_by_side
from masksal.types import Batch

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32
GT = (4, 4, 13, 13)  # inclusive: a 10 x 10 box


class BoxMaps:
    """Maps that are 1 on a given inclusive box per image, 0 elsewhere."""

    name = "boxes"

    def __init__(self, boxes: list[tuple[int, int, int, int]]) -> None:
        self.boxes = boxes

    def explain(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        maps = torch.zeros(images.shape[0], images.shape[2], images.shape[3])
        for i, (x0, y0, x1, y1) in enumerate(self.boxes):
            maps[i, y0:y1 + 1, x0:x1 + 1] = 1
        return maps


def _batch(boxes: bool = True) -> Batch:
    g = torch.Generator().manual_seed(0)
    box = torch.tensor([GT], dtype=torch.float32)
    return Batch(images=torch.rand(2, 3, SIZE, SIZE, generator=g), labels=torch.tensor([0, 2]),
                 boxes=[box if boxes else torch.zeros(0, 4) for _ in range(2)], ids=["a", "b"])


def _masker(num_classes: int = 3) -> Masker:
    torch.manual_seed(0)
    clf = create_classifier("small_resnet18", num_classes, width=8).eval()
    shapes = clf.tap_shapes(SIZE)
    return Masker(clf, MaskerNet({t: shapes[t][0] for t in clf.taps})).eval()


def _pictures(html: str) -> list[np.ndarray]:
    """The pictures of the side-by-side table's map cells, decoded."""
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB"))
            for b in re.findall(r'<td><img src="data:image/png;base64,([^"]+)"', html)]


def test_scaling_values_and_ranges() -> None:
    assert check_scaling("shared") == "shared" and check_scaling("per_image") == "per-image"
    with pytest.raises(ValueError, match="scaling must be 'shared' or 'per-image', got 'max'"):
        check_scaling("max")
    maps = np.stack([np.full((4, 4), 0.2), np.linspace(-1, 3, 16).reshape(4, 4)])
    assert map_ranges(maps, "per-image") == [None, None]
    assert map_ranges(maps, "shared") == [(-1.0, 3.0), (-1.0, 3.0)]
    assert map_ranges(maps, "shared", unit=True) == [(0.0, 1.0), (0.0, 1.0)]


def test_shared_scaling_keeps_a_nearly_empty_mask_dark() -> None:
    img = np.full((SIZE, SIZE, 3), 0.5)
    full = np.zeros((SIZE, SIZE))
    full[8:24, 8:24] = 1.0
    weak = 0.05 * full
    for scaling in ("shared", "per-image"):
        (r_full, r_weak) = map_ranges(np.stack([full, weak]), scaling, unit=True)
        a = picture(img, 1, full, r_full, show_image=False).astype(float)
        b = picture(img, 1, weak, r_weak, show_image=False).astype(float)
        inside = (slice(8, 24), slice(8, 24))
        if scaling == "per-image":  # the weakness is invisible: both stretched to full brightness
            assert np.array_equal(a, b)
        else:
            assert b[inside].mean() < 0.25 * a[inside].mean()


def test_side_by_side_captions_headers_boxes_and_classes(tmp_path: Path) -> None:
    masker = _masker()
    shifted = (9, 4, 18, 13)  # 5 px right of GT: overlap 5 x 10 = 50, union 150, IoU 1/3
    oracle = BoxMaps([shifted, GT])
    methods: list[tuple[str, Any]] = [("masker:runs/some/long/path/masker_ca", masker), ("boxes", oracle),
                                      ("centre", CentreBaseline())]
    page = side_by_side(methods, _batch(), tmp_path / "p.html", class_names=["zero", "one", "two"])
    html = page.read_text()
    assert '<html lang="en">' in html and '<meta name="viewport"' in html
    # One header row with every method's (short) name.
    header = re.search(r"<thead><tr>(.*?)</tr></thead>", html).group(1)  # type: ignore[union-attr]
    assert [re.sub(r"<[^>]+>", "", n) for n in re.findall(r'<span class="name">(.*?)</span>', header)] == \
        ["masker:…/masker_ca", "boxes", "centre"]
    # For which class each map is made.
    assert "class-agnostic: the classifier&#x27;s own decision" in header
    assert "map for the true class" in header and "baseline: same map for every image" in header
    assert "map for the true class" not in header.split("</th>")[1]  # not for the masker
    # Captions: class names, the prediction of the masker's classifier, the hand-computed IoUs.
    assert "true: zero" in html and "true: two" in html and "predicted: " in html
    assert html.count("IoU 0.33, not localized") >= 1 and html.count("IoU 1.00, localized") >= 1
    # The ground-truth box on every column: green on its left edge (x = 4), in every map picture.
    f = upscale_factor(SIZE)
    pics = _pictures(html)
    assert len(pics) == 2 * (len(methods) + 1)
    for pic in pics[: len(methods) + 1]:  # image "a": the box from the oracle's map is elsewhere
        left_edge = pic[4 * f:14 * f, 4 * f]
        assert (left_edge == np.array(GT_COLOUR, dtype=np.uint8)).all(axis=-1).sum() >= 5 * f
    assert tuple(pics[2][8 * f, 9 * f]) == MAP_BOX_COLOUR  # the oracle's box for image "a"
    assert "ground-truth box (green)" in html and "box from the map (cyan)" in html
    assert "Shared scaling" in html and 'class="colorbar"' in html


def test_side_by_side_without_boxes_says_so_and_draws_none(tmp_path: Path) -> None:
    methods: list[tuple[str, Any]] = [("masker", _masker()), ("boxes", BoxMaps([GT, GT]))]
    html = side_by_side(methods, _batch(boxes=False), tmp_path / "p.html", scaling="per-image").read_text()
    assert "has no ground-truth boxes" in html
    assert "ground-truth box (green)" not in html and "class='legend-box'" not in html
    assert re.search(r"IoU \d", html) is None and "localized" not in html
    assert "Per-image scaling" in html and "true: class 0" in html  # no names given
    assert "predicted: " in html  # the classifier found on the masker
    for pic in _pictures(html):
        assert not (pic == np.array(GT_COLOUR, dtype=np.uint8)).all(axis=-1).any()


def _log(path: Path, n: int = 60) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"step": s, "masked_in_ce": 2.0 - s / n, "masked_out_entropy": -s / n, "area": 1.0, "tv": 0.1,
             "total": 3.0 - 2 * s / n, "mask_mean": 0.4, "clean_accuracy": 50.0 + s / 2,
             "masked_in_accuracy": 40.0, "masked_out_accuracy": 30.0, "lr": 1e-3, "time": s} for s in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_training_figures_have_human_names(tmp_path: Path) -> None:
    _log(tmp_path / "log.jsonl")
    figs = training_figures(tmp_path / "log.jsonl")
    assert len(figs) == 2
    for img, caption, alt in figs:
        assert img.shape[1] == 960 and img.dtype == np.uint8 and img.std() > 0
        assert "_" not in alt and caption
    assert "masked-out −entropy" in figs[0][2] and "smoothness penalty" in figs[0][2]
    assert "accuracy on clean images 50.00% at the start" in figs[1][2]
    assert training_figures(tmp_path / "missing.jsonl") == []


def test_demo_report_cards(tmp_path: Path) -> None:
    from masksal.data.benchmark import BenchmarkDataset

    ds = BenchmarkDataset(split="test", n=4, size=SIZE, seed=1, families=("digits",))
    masker = _masker(len(ds.classes))
    _log(tmp_path / "masker_fix" / "log.jsonl")
    res = {"le": 50.0, "om": 60.0, "f1": 40.0, "top1": 25.0, "maps_per_second": 100.0}
    metrics = {"classifier_test_accuracy": 25.0, "mode": "fix", "masker": res, "centre_baseline": res}
    html = write_demo_report(tmp_path, masker, ds, metrics, n_images=4).read_text()
    captions = re.findall(r'<figure class="card"><div class="panels">.*?</div><figcaption>(.*?)</figcaption>', html)
    assert len(captions) == 4
    for cap, i in zip(captions, range(4), strict=True):
        assert f"true: {ds.classes[int(ds[i]['label'])]}" in cap and "predicted: " in cap
        assert "IoU " in cap or "no box from the map" in cap
    assert "Each card is one test image" in html and "Each row" not in html
    assert "LE: localization error" in html and "Masker training" in html and html.count('class="colorbar"') == 1
    assert "Mask value, 0 = removed, 1 = kept. Shared scaling" in html
    per_image = write_demo_report(tmp_path, masker, ds, metrics, n_images=2, scaling="per-image").read_text()
    assert "Per-image scaling" in per_image


def test_short_names_keep_the_checkpoint_folder() -> None:
    assert short_name("masker:runs/demo/masker_ca") == "masker:runs/demo/masker_ca"
    assert short_name("masker:runs/a/long/path/to/the/masker_ca/") == "masker:…/masker_ca"
    assert short_name("rise:n_masks=500,batch_size=100,p=0.5") == "rise:n_masks=500,batch_size=100,p=0.5"


def test_plots_need_no_pyplot_and_keep_the_backend(tmp_path: Path) -> None:
    from masksal.report.plots import plt

    fig, axes = plt.subplots(1, 2, figsize=(4, 3), dpi=50, sharey=True)
    axes[0].plot([0, 1], [0, 1])
    assert figure_to_array(fig).shape == (150, 200, 3)
    _log(tmp_path / "log.jsonl")
    code = ("import matplotlib; matplotlib.use('svg'); import sys; import masksal.report.demo_page, "
            "masksal.report.side_by_side; from masksal.report.plots import training_figures; "
            f"assert len(training_figures({str(tmp_path / 'log.jsonl')!r})) == 2; "
            "print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"
