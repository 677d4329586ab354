"""LE, OM, F1 (metrics/localization.py) and the box helpers, on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from masksal.metrics import LocalizationError, binarize, box_iou, largest_component_boxes
from masksal.types import Batch


def make_batch(boxes: list[list[list[float]]], size: int = 16, labels: list[int] | None = None) -> Batch:
    n = len(boxes)
    return Batch(images=torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)),
                 labels=torch.tensor(labels if labels is not None else [0] * n),
                 boxes=[torch.tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes])


def region_map(size: int, *regions: tuple[int, int, int, int], value: float = 1.0) -> torch.Tensor:
    """A (size, size) map, ``value`` on the inclusive regions (x0, y0, x1, y1), 0 elsewhere."""
    m = torch.zeros(size, size)
    for x0, y0, x1, y1 in regions:
        m[y0:y1 + 1, x0:x1 + 1] = value
    return m


def scores(maps: torch.Tensor, batch: Batch, predictions: torch.Tensor | None = None, **kw: object) -> dict:
    metric = LocalizationError(**kw)  # type: ignore[arg-type]
    metric.update(maps, batch, predictions=predictions)
    return metric.compute()


def test_perfect_map_has_zero_error_and_full_f1() -> None:
    batch = make_batch([[[2, 2, 5, 5]]], size=8)
    out = scores(region_map(8, (2, 2, 5, 5))[None], batch, predictions=torch.tensor([0]))
    assert out["le"] == 0.0 and out["gt_known_loc"] == 100.0
    assert out["om"] == 0.0 and out["top1_loc"] == 100.0
    assert out["f1"] == pytest.approx(100.0)
    assert out["mask_area"] == pytest.approx(16 / 64)


def test_wrong_class_makes_om_fail_but_not_le() -> None:
    batch = make_batch([[[2, 2, 5, 5]]], size=8, labels=[1])
    out = scores(region_map(8, (2, 2, 5, 5))[None], batch, predictions=torch.tensor([0]))
    assert out["le"] == 0.0
    assert out["om"] == 100.0 and out["top1_loc"] == 0.0


def test_without_predictions_om_is_not_reported() -> None:
    out = scores(region_map(8, (2, 2, 5, 5))[None], make_batch([[[2, 2, 5, 5]]], size=8))
    assert "om" not in out and out["le"] == 0.0


def test_constant_map_localizes_nothing_and_f1_is_hand_computed() -> None:
    # Nothing is > mean: empty box, wrong. F1 of m = 0.5 everywhere on 8x8 against a 16-pixel box:
    # P = 8 / 32, R = 8 / 16, F1 = 2 * 0.25 * 0.5 / 0.75 = 1/3.
    out = scores(torch.full((1, 8, 8), 0.5), make_batch([[[2, 2, 5, 5]]], size=8))
    assert out["le"] == 100.0
    assert out["mask_area"] == 0.0
    assert out["f1"] == pytest.approx(100 / 3)


def test_map_on_the_wrong_object() -> None:
    out = scores(region_map(8, (0, 0, 1, 1))[None], make_batch([[[4, 4, 7, 7]]], size=8))
    assert out["le"] == 100.0 and out["f1"] == 0.0


@pytest.mark.parametrize(("pred", "gt", "localized"), [
    ((0, 0, 9, 4), (0, 0, 10, 8), True),    # IoU 50 / 99 = 0.505: just above 0.5
    ((0, 0, 9, 4), (0, 0, 9, 9), False),    # IoU 50 / 100 = 0.5 exactly: LE's hit is strict
    ((0, 0, 10, 4), (0, 0, 9, 9), False),   # IoU 50 / 105 = 0.476: just below
])
def test_iou_threshold_is_strict(pred: tuple[int, int, int, int], gt: tuple[int, int, int, int],
                                 localized: bool) -> None:
    out = scores(region_map(16, pred)[None], make_batch([[list(gt)]]))
    assert out["le"] == (0.0 if localized else 100.0)


def test_iou_threshold_is_configurable_and_strict_at_07() -> None:
    # IoU 70 / 100 = 0.7 exactly: not localized at a threshold of 0.7, localized at 0.69.
    batch = make_batch([[[0, 0, 9, 9]]])
    m = region_map(16, (0, 0, 9, 6))[None]
    assert scores(m, batch, iou_threshold=0.7)["le"] == 100.0
    assert scores(m, batch, iou_threshold=0.69)["le"] == 0.0


def test_several_ground_truth_boxes_any_box_localizes_and_f1_takes_the_best() -> None:
    batch = make_batch([[[0, 0, 3, 3], [8, 8, 11, 11]]])
    out = scores(region_map(16, (8, 8, 11, 11))[None], batch)
    assert out["le"] == 0.0 and out["f1"] == pytest.approx(100.0)


def test_largest_four_connected_component_is_kept() -> None:
    # A 3x3 blob and a 4x4 blob touching it only diagonally: 4-connectivity keeps them apart.
    m = region_map(16, (0, 0, 2, 2), (3, 3, 6, 6))
    boxes = largest_component_boxes(binarize(m[None].double().numpy()))
    assert boxes.tolist() == [[3, 3, 6, 6]]


def test_boxes_are_inclusive() -> None:
    assert box_iou(np.array([[0, 0, 0, 0]]), np.array([[0, 0, 0, 0]]))[0, 0] == 1.0
    # 4x4 pixels vs 4x5 pixels: 16 / 20.
    assert box_iou(np.array([[2, 2, 5, 5]]), np.array([[2, 2, 5, 6]]))[0, 0] == pytest.approx(0.8)
    # A 4-pixel-wide object at columns 2..5 is exactly the inclusive box [2, 5].
    out = scores(region_map(8, (2, 2, 5, 5))[None], make_batch([[[2, 2, 5, 5]]], size=8))
    assert out["le"] == 0.0


def test_ground_truth_is_clipped_to_the_image_by_default() -> None:
    # GT sticks out of the image on the left; its visible part is exactly the object.
    m = region_map(16, (0, 2, 5, 5))[None]
    out = scores(m, make_batch([[[-10, 2, 5, 5]]]))
    assert out["le"] == 0.0 and out["f1"] == pytest.approx(100.0)


def test_si_geometry_reproduces_the_reference_scorer() -> None:
    # Object = 4x4 pixels 2..5, GT (2, 2, 5, 5). SI's regions are [2, 5) x [2, 5) = 9 pixels for
    # both boxes, so IoU = 1, but F1 reads m (16 pixels) against 9: P = 9 / (16 + 1e-6), R = 1.
    batch = make_batch([[[2, 2, 5, 5]]], size=8)
    out = scores(region_map(8, (2, 2, 5, 5))[None], batch, geometry="si")
    p, r = 9 / (16 + 1e-6), 1.0
    assert out["le"] == 0.0
    assert out["f1"] == pytest.approx(100 * 2 * p * r / (p + r + 1e-6))


def test_si_geometry_uses_the_unclipped_ground_truth_area() -> None:
    # GT (-10, 2, 5, 5): SI's area (5 + 10) * (5 - 2) = 45; the predicted region [0, 5) x [2, 5)
    # has 15 pixels, all inside: IoU = 15 / 45 = 1/3 -> not localized. Inclusive: IoU 1.
    m = region_map(16, (0, 2, 5, 5))[None]
    batch = make_batch([[[-10, 2, 5, 5]]])
    assert scores(m, batch, geometry="si")["le"] == 100.0
    assert scores(m, batch)["le"] == 0.0


def test_si_geometry_truncates_ground_truth_coordinates() -> None:
    # GT (2.9, 2.9, 5.9, 5.9) -> SI reads (2, 2, 5, 5); inclusive covers pixels 3..5.
    m = region_map(8, (2, 2, 4, 4))[None]  # 3x3 object, SI region [2, 4) x [2, 4) = 4 pixels
    batch = make_batch([[[2.9, 2.9, 5.9, 5.9]]], size=8)
    si = scores(m, batch, geometry="si")
    # IoU = 4 / (4 + 9 - 4) = 0.444 -> not localized under SI.
    assert si["le"] == 100.0
    # Inclusive: pred (2, 2, 4, 4) vs (2.9, 2.9, 5.9, 5.9): inter 2.1^2, union 9 + 16 - 4.41.
    assert box_iou(np.array([[2, 2, 4, 4]]), np.array([[2.9, 2.9, 5.9, 5.9]]))[0, 0] == pytest.approx(
        4.41 / (9 + 16 - 4.41))


def test_casm_geometry_keeps_the_inclusive_predicted_box() -> None:
    # Object = 4x4 pixels 2..5, GT (2, 2, 5, 5). CASM reads the GT as [2, 5) x [2, 5) (9 pixels)
    # but keeps the predicted box inclusive, [2, 6) x [2, 6) (16 pixels): IoU 9 / 16 > 0.5.
    batch = make_batch([[[2, 2, 5, 5]]], size=8)
    out = scores(region_map(8, (2, 2, 5, 5))[None], batch, geometry="casm")
    p, r = 9 / (16 + 1e-6), 1.0
    assert out["le"] == 0.0
    assert out["f1"] == pytest.approx(100 * 2 * p * r / (p + r + 1e-6))
    # A 2x2 object with GT (2, 2, 4, 4): CASM's IoU 4 / 4; SI's box [2, 3) x [2, 3) gives 1 / 4.
    small = region_map(8, (2, 2, 3, 3))[None]
    gt = make_batch([[[2, 2, 4, 4]]], size=8)
    assert scores(small, gt, geometry="casm")["le"] == 0.0
    assert scores(small, gt, geometry="si")["le"] == 100.0


def test_casm_geometry_skips_ground_truth_clipped_to_nothing() -> None:
    # GT (8, 2, 12, 5) lies right of an 8-px image: CASM scores it 0 (its clipped region is empty).
    batch = make_batch([[[8, 2, 12, 5], [2, 2, 5, 5]]], size=8)
    out = scores(region_map(8, (2, 2, 5, 5))[None], batch, geometry="casm")
    assert out["le"] == 0.0 and out["f1"] > 0


def test_reference_geometries_binarize_in_float32() -> None:
    # A constant map: nothing exceeds its float64 mean; SI and CASM compare against torch's float32
    # mean, which for 0.3 need not be exact.
    m = np.full((1, 224, 224), np.float32(0.3), dtype=np.float64)
    assert not binarize(m, "mean").any()
    t = torch.from_numpy(m.astype(np.float32)).view(1, -1)
    assert np.array_equal(binarize(m, "mean", float32=True).reshape(1, -1), (t > t.mean(dim=1, keepdim=True)).numpy())
    with pytest.raises(ValueError, match="geometry"):
        LocalizationError(geometry="exclusive")  # type: ignore[arg-type]


def test_binarize_rules() -> None:
    ramp = (torch.arange(16, dtype=torch.float64) / 15).reshape(1, 4, 4).numpy()
    # mean 0.5: values > 0.5 are 8/15..15/15 -> 8 pixels.
    assert binarize(ramp, "mean").sum() == 8
    # CASM: k = 1 + floor(15 * (1 - 0.5) + 0.5) = 9, th = 9th smallest = 8/15, keep > th: 7 pixels.
    assert binarize(ramp, "casm").sum() == 7
    # Fixed fraction: ceil(0.25 * 16) = 4 largest pixels.
    kept = binarize(ramp, 0.25)
    assert kept.sum() == 4 and kept.reshape(-1)[-4:].all()
    with pytest.raises(ValueError, match="fraction"):
        binarize(ramp, 1.5)


def test_binarization_rule_changes_the_box() -> None:
    # A ramp map: "mean" keeps the top half, a fixed fraction of 1/4 the top quarter (last 4 rows
    # of 16) -> box rows 12..15, which matches a GT of those rows.
    m = torch.arange(16, dtype=torch.float32).repeat_interleave(16).reshape(1, 16, 16) / 15
    batch = make_batch([[[0, 12, 15, 15]]])
    assert scores(m, batch, binarize=0.25)["le"] == 0.0
    assert scores(m, batch, binarize="mean")["le"] == 100.0


def test_f1_normalizes_maps_outside_unit_range() -> None:
    # A map of 0 / 7 is min-max normalized to 0 / 1 by "auto": same F1 as the binary map.
    batch = make_batch([[[2, 2, 5, 5]]], size=8)
    out = scores(7 * region_map(8, (2, 2, 5, 5))[None], batch)
    assert out["f1"] == pytest.approx(100.0)
    raw = scores(7 * region_map(8, (2, 2, 5, 5))[None], batch, normalize="none")
    # P = 1, R = 7 * 16 / 16 = 7: F1 = 2 * 7 / 8.
    assert raw["f1"] == pytest.approx(100 * 2 * 7 / 8)


def test_invalid_maps_raise_clear_errors() -> None:
    batch = make_batch([[[2, 2, 5, 5]]], size=8)
    metric = LocalizationError()
    bad = region_map(8, (2, 2, 5, 5))[None].clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        metric.update(bad, batch)
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="inf"):
        metric.update(bad, batch)
    with pytest.raises(ValueError, match="do not match"):
        metric.update(torch.zeros(1, 4, 4), batch)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        metric.update(torch.zeros(8, 8), batch)
    with pytest.raises(ValueError, match="no ground-truth box"):
        metric.update(torch.zeros(1, 8, 8), make_batch([[]], size=8))
    assert metric.num_images == 0


def test_om_needs_predictions_for_all_or_none() -> None:
    metric = LocalizationError()
    batch = make_batch([[[2, 2, 5, 5]]], size=8)
    m = region_map(8, (2, 2, 5, 5))[None]
    metric.update(m, batch, predictions=torch.tensor([0]))
    metric.update(m, batch)
    with pytest.raises(ValueError, match="all or none"):
        metric.compute()


def test_empty_accumulator_gives_nan() -> None:
    assert math.isnan(LocalizationError().compute()["le"])
