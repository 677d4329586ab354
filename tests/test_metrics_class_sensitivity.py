"""Class sensitivity (metrics/class_sensitivity.py) on hand-made maps of two-object images, and in
evaluate() on the benchmark's two-object split."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from masksal.classifiers import create_classifier
from masksal.data import BenchmarkDataset
from masksal.evaluation import evaluate, format_table
from masksal.metrics import ClassSensitivity
from masksal.types import Batch, collate

SIZE = 16
# Object of class 3: rows and columns 1..4 (16 px); object of class 7: rows 10..13, columns 9..14 (24 px).
BOX_A = [1.0, 1.0, 4.0, 4.0]
BOX_B = [9.0, 10.0, 14.0, 13.0]


def object_masks() -> torch.Tensor:
    m = torch.zeros(2, SIZE, SIZE, dtype=torch.uint8)
    m[0, 1:5, 1:5] = 1
    m[1, 10:14, 9:15] = 1
    return m


def requests(*classes: int) -> Batch:
    """One two-object image per requested class (3 or 7), as benchmark:pairs yields them."""
    n = len(classes)
    boxes = torch.tensor([BOX_A, BOX_B])
    return Batch(images=torch.rand(n, 3, SIZE, SIZE), labels=torch.tensor(classes),
                 boxes=[boxes[[0 if c == 3 else 1]] for c in classes],
                 object_labels=[torch.tensor([3, 7])] * n, object_boxes=[boxes] * n,
                 object_masks=[object_masks()] * n)


def on(*regions: tuple[slice, slice, float]) -> torch.Tensor:
    m = torch.zeros(SIZE, SIZE)
    for rows, cols, v in regions:
        m[rows, cols] = v
    return m


A = (slice(1, 5), slice(1, 5), 1.0)
B = (slice(10, 14), slice(9, 15), 1.0)


def test_a_map_on_the_requested_object_scores_and_on_the_other_does_not() -> None:
    cs = ClassSensitivity(tolerance=0.0)
    maps = torch.stack([on(A), on(A)])  # the same map for both requests: what a class-agnostic method gives
    cs.update(maps, requests(3, 7))
    r = cs.compute()
    assert r["class_requests"] == 2 and r["class_skipped"] == 0
    assert r["class_loc"] == 50.0  # right for class 3, wrong for class 7
    assert r["class_other_loc"] == 50.0  # asked about 7, the box is 3's
    assert r["class_pointing"] == 50.0 and r["class_pointing_other"] == 50.0
    assert r["class_mass"] == 50.0 and r["class_mass_other"] == 50.0
    cs.reset()
    cs.update(torch.stack([on(A), on(B)]), requests(3, 7))  # one map per request: class sensitive
    r = cs.compute()
    assert (r["class_loc"], r["class_other_loc"], r["class_pointing"], r["class_mass_other"]) == (100.0, 0.0, 100.0,
                                                                                                0.0)


def test_a_box_around_both_objects_localizes_neither() -> None:
    cs = ClassSensitivity(tolerance=0.0)
    cs.update(on((slice(1, 14), slice(1, 15), 1.0))[None], requests(3))
    r = cs.compute()
    assert r["class_loc"] == 0.0 and r["class_other_loc"] == 0.0
    # The mass: 16 px on the requested object, 24 px on the other, of 13 x 14 = 182 px of map.
    assert r["class_mass"] == pytest.approx(100 * 16 / 182)
    assert r["class_mass_other"] == pytest.approx(100 * 24 / 182)


def test_mass_by_hand_and_pointing_tolerance() -> None:
    # 0.5 on the requested object (16 px -> 8), 1.0 on 4 px of the other (4): mass 8/12 and 4/12.
    m = on((slice(1, 5), slice(1, 5), 0.5), (slice(10, 12), slice(9, 11), 1.0))
    cs = ClassSensitivity(tolerance=0.0)
    cs.update(m[None], requests(3))
    r = cs.compute()
    assert r["class_mass"] == pytest.approx(100 * 8 / 12) and r["class_mass_other"] == pytest.approx(100 * 4 / 12)
    assert r["class_pointing"] == 0.0 and r["class_pointing_other"] == 100.0  # the maximum is on the other
    # The maximum 1 px right of the requested object: a hit within a 1.5 px tolerance, a miss without.
    m = on(A)
    m[2, 5] = 2.0
    for px, expected in ((None, 0.0), (1.5, 100.0)):
        cs = ClassSensitivity(tolerance=0.0, tolerance_px=px)
        cs.update(m[None], requests(3))
        assert cs.compute()["class_pointing"] == expected


def test_an_empty_map_localizes_nothing_and_puts_no_mass_anywhere() -> None:
    cs = ClassSensitivity()
    cs.update(torch.zeros(1, SIZE, SIZE), requests(7))
    r = cs.compute()
    assert r["class_loc"] == 0.0 and r["class_mass"] == 0.0 and r["class_mass_other"] == 0.0


def test_images_without_objects_are_skipped_and_bad_requests_refused() -> None:
    cs = ClassSensitivity()
    plain = Batch(images=torch.rand(2, 3, SIZE, SIZE), labels=torch.tensor([3, 7]), boxes=[torch.tensor([BOX_A])] * 2)
    cs.update(torch.rand(2, SIZE, SIZE), plain)
    r = cs.compute()
    assert r["class_skipped"] == 2 and r["class_requests"] == 0 and math.isnan(r["class_loc"])
    with pytest.raises(ValueError, match="none of its objects"):
        cs.update(torch.rand(1, SIZE, SIZE), requests(5))
    with pytest.raises(ValueError, match="iou_threshold"):
        ClassSensitivity(iou_threshold=1.5)


def test_merged_halves_equal_the_whole() -> None:
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(6, SIZE, SIZE, generator=g)
    whole = ClassSensitivity()
    whole.update(maps, requests(3, 7, 3, 7, 3, 7))
    a, b = ClassSensitivity(), ClassSensitivity()
    a.update(maps[:2], requests(3, 7))
    b.update(maps[2:], requests(3, 7, 3, 7))
    assert a.merge(b).compute() == pytest.approx(whole.compute(), nan_ok=True)


class _ObjectMaps:
    """Not a saliency method: 1 on the box of object 0 of each image (0 elsewhere), whatever class
    is asked: a class-agnostic map that is right for one request in two."""

    name = "first_object"

    def __init__(self, dataset: BenchmarkDataset) -> None:
        self.ds = dataset
        self.seen = 0

    def explain(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        out = torch.zeros(images.shape[0], *images.shape[-2:])
        for i in range(images.shape[0]):
            x0, y0, x1, y1 = (int(v) for v in self.ds.boxes[(self.seen + i) // 2, 0])
            out[i, y0:y1 + 1, x0:x1 + 1] = 1.0
        self.seen += images.shape[0]
        return out


def test_evaluate_scores_class_sensitivity_on_the_pairs_split() -> None:
    ds = BenchmarkDataset("test", n=8, size=32, objects=2)
    clf = create_classifier("small_resnet18", 20, width=8)
    loader = DataLoader(ds, batch_size=6, collate_fn=collate)  # type: ignore[arg-type]
    res = evaluate(_ObjectMaps(ds), clf, loader, metrics=("class_sensitivity", "le_om_f1"), progress=False)
    assert res["images"] == 16 and res["class_requests"] == 16
    # Object 0's own mask: its request localized (IoU 1), the other request sees the other box.
    assert res["class_loc"] == 50.0 and res["class_other_loc"] == 50.0
    # Mass: object 0's pixels in its box, for its own request as "requested", for the other as "other".
    boxes = ds.boxes[:, 0].astype(int)
    fill = [ds.masks[k, 0].sum() / ((x1 - x0 + 1) * (y1 - y0 + 1)) for k, (x0, y0, x1, y1) in enumerate(boxes)]
    assert res["class_mass"] == pytest.approx(100 * sum(fill) / 16)
    assert res["class_mass_other"] == pytest.approx(100 * sum(fill) / 16)
    assert res["le"] == 50.0  # LE scores the requested object's box too
    assert "Requested object localized (%)" in format_table(res)
    single = DataLoader(BenchmarkDataset("test", n=4, size=32), batch_size=4, collate_fn=collate)  # type: ignore[arg-type]
    res = evaluate(_ObjectMaps(ds), clf, single, metrics=("class_sensitivity",), progress=False)
    assert "benchmark:pairs" in res["skipped"]["class_sensitivity"]
