"""MaxBoxAcc v1 / v2 (metrics/maxboxacc.py): hand-computed cases and the reference's conventions."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from masksal.metrics import LocalizationError, MaxBoxAccuracy, resize_maps
from masksal.metrics._levelboxes import contour_boxes
from masksal.metrics.maxboxacc import NUM_LEVELS, _best_iou_per_level_opencv
from masksal.types import Batch


def make_batch(boxes: list[list[list[float]]], size: int = 16) -> Batch:
    n = len(boxes)
    return Batch(images=torch.zeros(n, 3, size, size), labels=torch.zeros(n, dtype=torch.long),
                 boxes=[torch.tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes])


def region_map(size: int, *regions: tuple[int, int, int, int], value: float = 1.0) -> torch.Tensor:
    m = torch.zeros(size, size)
    for x0, y0, x1, y1 in regions:
        m[y0:y1 + 1, x0:x1 + 1] = value
    return m


def run(maps: torch.Tensor, batch: Batch, **kw: object) -> dict[str, float]:
    metric = MaxBoxAccuracy(**kw)  # type: ignore[arg-type]
    metric.update(maps, batch)
    return metric.compute()


def test_perfect_map_scores_100() -> None:
    # Object pixels 4..9; the reference's box is (4, 4, 10, 10) (x + w, one pixel larger).
    out = run(region_map(16, (4, 4, 9, 9))[None], make_batch([[[4, 4, 10, 10]]]))
    assert out["maxboxacc"] == 100.0 and out["maxboxacc_v2"] == 100.0
    assert out["maxboxacc_threshold"] == 0.0


def test_predicted_box_is_one_pixel_larger_than_the_object() -> None:
    # A 4x4 object 4..7 with its exact inclusive GT: the reference box (4, 4, 8, 8) has IoU 16/25 =
    # 0.64, a hit at 0.3 and 0.5 but not at 0.7.
    out = run(region_map(16, (4, 4, 7, 7))[None], make_batch([[[4, 4, 7, 7]]]))
    assert out["maxboxacc_v2_iou50"] == 100.0
    assert out["maxboxacc_v2_iou70"] == 0.0


def test_box_is_clipped_at_the_image_border() -> None:
    # Object at columns and rows 12..15 of 16: x + w = 16 is clipped to 15, so the box is exact.
    out = run(region_map(16, (12, 12, 15, 15))[None], make_batch([[[12, 12, 15, 15]]]))
    assert out["maxboxacc_v2_iou70"] == 100.0


def test_hit_is_iou_at_least_delta() -> None:
    # Object 0..9 x 0..4 -> box (0, 0, 10, 5): 66 pixels; GT (0, 0, 10, 10): 121 pixels, IoU 66/121 =
    # 0.545; GT (0, 0, 10, 7) (88 px): 0.75. And IoU = 0.5 exactly counts (>=), unlike LE.
    m = region_map(16, (0, 0, 9, 4))[None]
    assert run(m, make_batch([[[0, 0, 10, 10]]]))["maxboxacc_v2_iou50"] == 100.0
    assert run(m, make_batch([[[0, 0, 10, 10]]]))["maxboxacc_v2_iou70"] == 0.0
    assert run(m, make_batch([[[0, 0, 10, 7]]]))["maxboxacc_v2_iou70"] == 100.0
    # GT (0, 0, 10, 11): 132 pixels, IoU 66/132 = 0.5 exactly: a hit at 0.5.
    assert run(m, make_batch([[[0, 0, 10, 11]]]))["maxboxacc"] == 100.0
    # GT (0, 0, 10, 12): 143 pixels, IoU 0.4615: just below.
    assert run(m, make_batch([[[0, 0, 10, 12]]]))["maxboxacc"] == 0.0
    # 0.7 exactly: object 0..5 x 0..8 -> box (0, 0, 6, 9) = 7 x 10 = 70 px inside GT (0, 0, 9, 9).
    m7 = region_map(16, (0, 0, 5, 8))[None]
    assert run(m7, make_batch([[[0, 0, 9, 9]]]))["maxboxacc_v2_iou70"] == 100.0
    # Just below 0.7: GT (0, 0, 9, 10) = 110 px, IoU 70/110 = 0.636.
    assert run(m7, make_batch([[[0, 0, 9, 10]]]))["maxboxacc_v2_iou70"] == 0.0


def test_le_is_strict_and_maxboxacc_is_not_on_the_same_box() -> None:
    # Object at columns 6..15, rows 11..15 of a 16 x 16 image: touching the border, so the
    # reference's box is clipped back to the object, (6, 11, 15, 15), 50 pixels, for both
    # metrics. GT (6, 6, 15, 15) has 100 pixels: IoU = 0.5 exactly.
    m = region_map(16, (6, 11, 15, 15))[None]
    batch = make_batch([[[6, 6, 15, 15]]])
    assert run(m, batch)["maxboxacc"] == 100.0  # IoU >= 0.5
    le = LocalizationError()
    le.update(m, batch)
    assert le.compute()["le"] == 100.0  # IoU > 0.5 fails


def test_constant_map_scores_the_fallback_box() -> None:
    # Normalized to zeros: no contour at any threshold, box [0, 0, 0, 0] (1 pixel) still scored.
    const = torch.full((1, 16, 16), 0.3)
    assert run(const, make_batch([[[4, 4, 10, 10]]]))["maxboxacc_v2"] == 0.0
    out = run(const, make_batch([[[0, 0, 0, 1]]]))  # IoU 1/2
    assert out["maxboxacc_v2_iou30"] == 100.0 and out["maxboxacc_v2_iou50"] == 100.0
    assert out["maxboxacc_v2_iou70"] == 0.0


def test_nan_map_raises_by_default_or_scores_as_zero_map() -> None:
    m = torch.full((1, 16, 16), float("nan"))
    batch = make_batch([[[0, 0, 0, 1]]])
    with pytest.raises(ValueError, match="NaN"):
        run(m, batch)
    assert run(m, batch, nan_maps="zero") == run(torch.zeros(1, 16, 16), batch)
    m[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="inf"):
        run(m, batch, nan_maps="zero")


def test_v1_uses_the_largest_contour_v2_all_contours() -> None:
    # A big blob off the object and a small blob on it, same value: v1 takes the big blob's box.
    m = region_map(16, (0, 0, 7, 7), (12, 12, 13, 13))[None]
    out = run(m, make_batch([[[12, 12, 14, 14]]]))
    assert out["maxboxacc"] == 0.0
    assert out["maxboxacc_v2_iou30"] == out["maxboxacc_v2_iou70"] == 100.0


def test_v2_counts_hole_contours_as_candidate_boxes() -> None:
    # A ring 2..13 with a hole 5..10. RETR_TREE gives the hole's border (pixels 4..11), box
    # (4, 4, 12, 12): exactly the GT. The outer box (2, 2, 14, 14) has IoU 81/169 = 0.48.
    ring = region_map(16, (2, 2, 13, 13))
    ring[5:11, 5:11] = 0
    out = run(ring[None], make_batch([[[4, 4, 12, 12]]]))
    assert out["maxboxacc_v2_iou70"] == 100.0
    assert out["maxboxacc"] == 0.0


def test_several_ground_truth_boxes_best_pair_counts() -> None:
    m = region_map(16, (4, 4, 9, 9))[None]
    out = run(m, make_batch([[[0, 0, 1, 1], [4, 4, 10, 10]]]))
    assert out["maxboxacc"] == 100.0 and out["maxboxacc_v2"] == 100.0


def nested_map() -> torch.Tensor:
    """0.5 on a 10x10 square (2..11), 1.0 on its 2x2 core (5..6): low thresholds see the square,
    high thresholds (uint8 level >= 127) only the core."""
    m = region_map(16, (2, 2, 11, 11), value=0.5)
    m[5:7, 5:7] = 1.0
    return m


def test_one_threshold_for_the_whole_split() -> None:
    # Image A's GT is the square (right at low thresholds), image B's the core (right at high
    # thresholds): each image alone reaches 100 at its own threshold, but at any ONE threshold
    # exactly one of them is right: 50.
    maps = torch.stack([nested_map(), nested_map()])
    out = run(maps, make_batch([[[2, 2, 12, 12]], [[5, 5, 7, 7]]]))
    assert out["maxboxacc"] == 50.0 and out["maxboxacc_v2"] == 50.0
    for gt in ([[2, 2, 12, 12]], [[5, 5, 7, 7]]):
        assert run(nested_map()[None], make_batch([gt]))["maxboxacc"] == 100.0


def test_threshold_chosen_on_validation_split_is_applied_to_test() -> None:
    val, test = MaxBoxAccuracy(), MaxBoxAccuracy()
    val.update(nested_map()[None], make_batch([[[2, 2, 12, 12]]]))
    test.update(nested_map()[None], make_batch([[[5, 5, 7, 7]]]))
    thresholds = val.best_thresholds()
    assert thresholds["v1_iou50"] == 0.0  # the first threshold of the best (the square's) range
    at_val = test.compute_at(thresholds)
    assert at_val["boxacc"] == 0.0 and at_val["boxacc_v2"] == 0.0
    assert test.compute()["maxboxacc"] == 100.0  # the oracle on the test split itself
    # Level 127 = int(0.5 * 255): thresholds >= 0.5 see only the core.
    assert test.compute_at(0.5)["boxacc"] == 100.0
    assert test.compute_at(0.49)["boxacc"] == 0.0
    with pytest.raises(ValueError):
        test.compute_at(1.5)


def test_thresholds_collapse_onto_uint8_levels_strictly() -> None:
    metric = MaxBoxAccuracy()
    assert len(metric.thresholds) == 1000 and metric.thresholds[-1] < 1.0
    assert metric.levels[0] == metric.levels[3] == 0 and metric.levels[4] == 1  # 0.004 * 255 = 1.02
    # A map whose object is at uint8 value 127 (0.5 * 255 = 127.5, truncated): foreground at
    # threshold t is u8 > int(255 t), so the object vanishes from t = 127/255 on.
    m = region_map(16, (4, 4, 9, 9), value=0.5)
    m[0, 0] = 1.0  # normalization anchor, a 1-pixel distractor
    metric.update(m[None], make_batch([[[4, 4, 10, 10]]]))
    t, acc = metric.accuracy_curve(version=2, iou_threshold=0.5)
    hit = acc == 100.0
    assert hit[t < 127 / 255].all() and not hit[t >= 127 / 255].any()


def test_ground_truth_outside_the_image_is_never_hit() -> None:
    out = run(region_map(16, (0, 0, 15, 15))[None], make_batch([[[20, 20, 30, 30]]]))
    assert out["maxboxacc_v2"] == 0.0


def test_wrong_shape_and_missing_boxes_raise() -> None:
    metric = MaxBoxAccuracy()
    with pytest.raises(ValueError, match="do not match"):
        metric.update(torch.zeros(1, 8, 8), make_batch([[[0, 0, 1, 1]]]))
    with pytest.raises(ValueError, match="no ground-truth box"):
        metric.update(torch.zeros(1, 16, 16), make_batch([[]]))
    assert math.isnan(metric.compute()["maxboxacc"])


def test_resize_maps_is_opencv_bicubic_and_identity_at_same_size() -> None:
    rng = np.random.default_rng(0)
    small = rng.random((2, 7, 7))
    out = resize_maps(torch.from_numpy(small), (28, 28)).numpy()
    assert out.shape == (2, 28, 28)
    assert np.array_equal(out[1], cv2.resize(small[1], (28, 28), interpolation=cv2.INTER_CUBIC))
    big = rng.random((1, 28, 28))
    assert np.array_equal(resize_maps(torch.from_numpy(big), (28, 28)).numpy(), big)


def boxes_of(contours: list[np.ndarray], h: int, w: int) -> list[list[int]]:
    """(x, y, x + w, y + h) of each contour's bounding rectangle, clipped to the image."""
    out = []
    for c in contours:
        x, y, bw, bh = cv2.boundingRect(c)
        out.append([x, y, min(x + bw, w - 1), min(y + bh, h - 1)])
    return out


def reference_sweep(maps: np.ndarray, gts: list[np.ndarray], deltas: tuple[float, ...] = (0.3, 0.5, 0.7),
                    step: float = 0.001) -> tuple[np.ndarray, np.ndarray]:
    """Hit counts per (delta, threshold), one cv2 pass per threshold: the slow, literal procedure."""
    grid = np.arange(0, 1, step)
    hits1, hits2 = np.zeros((len(deltas), len(grid))), np.zeros((len(deltas), len(grid)))
    for m, gt in zip(maps, gts, strict=True):
        m = m.astype(np.float64)
        m = np.zeros_like(m) if m.min() == m.max() else (m - m.min()) / (m - m.min()).max()
        u8 = (m * 255).astype(np.uint8)
        h, w = m.shape
        for ti, t in enumerate(grid):
            _, fg = cv2.threshold(u8, int(t * u8.max()), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(fg, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]

            if len(contours) == 0:
                b1 = b2 = [[0, 0, 0, 0]]
            else:
                b1 = boxes_of([max(contours, key=cv2.contourArea)], h, w)
                b2 = boxes_of(list(contours), h, w)
            for boxes, hits in ((b1, hits1), (b2, hits2)):
                best = 0.0
                for p in boxes:
                    for g in gt:
                        iw = max(0, min(p[2], g[2]) - max(p[0], g[0]) + 1)
                        ih = max(0, min(p[3], g[3]) - max(p[1], g[1]) + 1)
                        union = (p[2] - p[0] + 1) * (p[3] - p[1] + 1) + (g[2] - g[0] + 1) * (g[3] - g[1] + 1) \
                            - iw * ih
                        best = max(best, iw * ih / union)
                for di, d in enumerate(deltas):
                    hits[di, ti] += best >= d
    return hits1, hits2


def test_vectorized_sweep_equals_the_per_threshold_procedure() -> None:
    rng = np.random.default_rng(0)
    size, n = 40, 5
    maps = np.stack([cv2.resize(rng.random((5, 5)), (size, size), interpolation=cv2.INTER_CUBIC)
                     for _ in range(n)])
    maps[2] = rng.random((size, size))  # pixel noise: many contours, holes, ties in contour area
    maps[3] = 0.25  # constant
    # Four values in 5 x 5 blocks: plateaus (ties), holes and islands in holes.
    blocks = rng.integers(0, 4, (8, 8)).astype(np.float64)
    maps[4] = cv2.resize(blocks, (size, size), interpolation=cv2.INTER_NEAREST) / 3
    gts = []
    for _ in range(n):
        k = int(rng.integers(1, 4))
        x0, y0 = rng.integers(0, size - 8, (2, k))
        x1, y1 = np.minimum(x0 + rng.integers(2, 20, k), size - 1), np.minimum(y0 + rng.integers(2, 20, k), size - 1)
        gts.append(np.stack([x0, y0, x1, y1], 1).astype(np.float64))
    hits1, hits2 = reference_sweep(maps, gts)
    metric = MaxBoxAccuracy()
    metric.update(torch.from_numpy(maps), make_batch([g.tolist() for g in gts], size=size))
    state = metric.state_dict()
    np.testing.assert_array_equal(state["hits_v1"][:, metric.levels], hits1)
    np.testing.assert_array_equal(state["hits_v2"][:, metric.levels], hits2)
    assert metric.compute()["maxboxacc_v2_iou30"] == pytest.approx(100 * hits2[0].max() / n)


def test_coarser_threshold_grid() -> None:
    metric = MaxBoxAccuracy(threshold_step=0.01)
    assert len(metric.thresholds) == 100
    metric.update(region_map(16, (4, 4, 9, 9))[None], make_batch([[[4, 4, 10, 10]]]))
    assert metric.compute()["maxboxacc"] == 100.0


def test_v1_takes_the_largest_polygon_area_not_the_most_pixels() -> None:
    # A 10-pixel line (polygon area 0) and a 3 x 3 square (9 pixels, area 4): v1 takes the square.
    m = region_map(16, (0, 1, 9, 1), (10, 10, 12, 12))[None]
    assert run(m, make_batch([[[10, 10, 13, 13]]]))["maxboxacc"] == 100.0
    assert run(m, make_batch([[[0, 1, 10, 2]]]))["maxboxacc"] == 0.0


def test_v1_ties_go_to_the_component_found_last_in_raster_order() -> None:
    # Two equal squares: OpenCV lists top-level contours last-found first and max() keeps the
    # first of equal areas, so v1 is the lower square's box.
    m = region_map(16, (1, 1, 3, 3), (9, 9, 11, 11))[None]
    assert run(m, make_batch([[[9, 9, 12, 12]]]))["maxboxacc"] == 100.0
    assert run(m, make_batch([[[1, 1, 4, 4]]]))["maxboxacc"] == 0.0
    # Same row: the right one is found last.
    m = region_map(16, (1, 5, 3, 7), (9, 5, 11, 7))[None]
    assert run(m, make_batch([[[9, 5, 12, 8]]]))["maxboxacc"] == 100.0


def test_v2_counts_an_island_inside_a_hole() -> None:
    # A ring 1..14 with a hole 4..11 and an island 7..8 in it: three contours; the island's box
    # (7, 7, 9, 9) is exactly the GT. v1 is the ring's outer contour.
    m = region_map(16, (1, 1, 14, 14))
    m[4:12, 4:12] = 0
    m[7:9, 7:9] = 1
    out = run(m[None], make_batch([[[7, 7, 9, 9]]]))
    assert out["maxboxacc_v2_iou70"] == 100.0 and out["maxboxacc"] == 0.0


def random_map(kind: str, h: int, w: int, seed: int) -> np.ndarray:
    """A normalized float64 map: pixel noise, smooth (bicubic), tied (few values), binary or constant."""
    rng = np.random.default_rng(seed)
    if kind == "noise":
        m = rng.random((h, w))
    elif kind == "smooth":
        m = cv2.resize(rng.random((int(rng.integers(2, 7)), int(rng.integers(2, 7)))), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    elif kind == "tied":
        m = rng.integers(0, int(rng.integers(2, 7)), (h, w)).astype(np.float64)
    elif kind == "binary":
        m = (rng.random((h, w)) < rng.random()).astype(np.float64)
    else:
        m = np.full((h, w), 0.3)
    lo, hi = m.min(), m.max()
    return np.zeros((h, w)) if hi == lo else (m - lo) / (hi - lo)


KINDS = st.sampled_from(["noise", "smooth", "tied", "binary", "constant"])


def opencv_boxes(u8: np.ndarray, level: int) -> tuple[list[tuple[int, ...]], tuple[int, ...]]:
    """wsolevaluation's boxes at one level: every contour's, and the largest contour's."""
    h, w = u8.shape
    contours = cv2.findContours((u8 > level).view(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
    boxes = [tuple(b) for b in boxes_of(list(contours), h, w)]
    return sorted(boxes), tuple(boxes_of([max(contours, key=cv2.contourArea)], h, w)[0])


@settings(max_examples=150, deadline=None)
@given(kind=KINDS, h=st.integers(1, 24), w=st.integers(1, 24), seed=st.integers(0, 2**32 - 1))
def test_one_pass_boxes_equal_findcontours_at_every_level(kind: str, h: int, w: int, seed: int) -> None:
    m = random_map(kind, h, w, seed)
    u8 = (m * 255).astype(np.uint8)
    levels = np.arange(int(u8.max()))
    if len(levels) == 0:
        return  # constant map: no foreground at any level (the fallback box, tested above)
    got = contour_boxes(m, levels)
    assert got.has_fg.all()
    for i, level in enumerate(levels.tolist()):
        all_boxes, largest = opencv_boxes(u8, level)
        assert sorted(tuple(b) for b in got.v2_box[got.v2_level == i].tolist()) == all_boxes, level
        assert tuple(got.v1_box[0, i].tolist()) == largest, level


@settings(max_examples=40, deadline=None)
@given(kinds=st.lists(KINDS, min_size=2, max_size=4), h=st.integers(1, 16), w=st.integers(1, 16),
       seed=st.integers(0, 2**32 - 1))
def test_stacked_maps_give_each_map_its_own_boxes(kinds: list[str], h: int, w: int, seed: int) -> None:
    # Several maps in one pass (stacked one row apart) give what each gives alone, per level;
    # levels at or above a map's maximum have no foreground.
    maps = np.stack([random_map(kind, h, w, seed + i) for i, kind in enumerate(kinds)])
    levels = np.arange(255)
    got = contour_boxes(maps, levels)
    for k, m in enumerate(maps):
        u8 = (m * 255).astype(np.uint8)
        for i, level in enumerate(levels.tolist()):
            mine = got.v2_box[(got.v2_map == k) & (got.v2_level == i)]
            if level >= u8.max():
                assert not got.has_fg[k, i] and len(mine) == 0
                continue
            all_boxes, largest = opencv_boxes(u8, level)
            assert got.has_fg[k, i]
            assert sorted(tuple(b) for b in mine.tolist()) == all_boxes, (k, level)
            assert tuple(got.v1_box[k, i].tolist()) == largest, (k, level)


@settings(max_examples=150, deadline=None)
@given(kind=KINDS, h=st.integers(1, 30), w=st.integers(1, 30), seed=st.integers(0, 2**32 - 1),
       step=st.sampled_from([0.001, 0.01, 0.07]))
def test_one_pass_equals_the_per_level_opencv_procedure(kind: str, h: int, w: int, seed: int, step: float) -> None:
    m = random_map(kind, h, w, seed)
    rng = np.random.default_rng(seed + 1)
    k = int(rng.integers(1, 4))
    x0, y0 = rng.integers(-2, w, k), rng.integers(-2, h, k)
    gt = np.stack([x0, y0, x0 + rng.integers(0, w + 2, k), y0 + rng.integers(0, h + 2, k)], 1).astype(np.float64)
    metric = MaxBoxAccuracy(threshold_step=step)
    v1, v2 = metric._best_iou_per_level(m, gt)
    r1, r2 = _best_iou_per_level_opencv(m, gt, metric._used_levels)
    np.testing.assert_array_equal(v1, r1)
    np.testing.assert_array_equal(v2, r2)


def test_update_over_a_batch_equals_the_per_level_procedure() -> None:
    # Many small maps (stacked in groups by update) and a few large ones, with several GT boxes.
    rng = np.random.default_rng(5)
    for size, n in ((20, 12), (70, 3)):
        maps = np.stack([random_map(kind, size, size, int(rng.integers(1 << 30)))
                         for kind in ("smooth", "noise", "tied", "binary", "constant", "smooth")[:n % 7 or 6]]
                        + [random_map("smooth", size, size, int(rng.integers(1 << 30))) for _ in range(max(0, n - 6))])
        gts = []
        for _ in range(len(maps)):
            k = int(rng.integers(1, 4))
            x0, y0 = rng.integers(0, size - 4, (2, k))
            gts.append(np.stack([x0, y0, x0 + rng.integers(1, size // 2, k), y0 + rng.integers(1, size // 2, k)], 1))
        metric = MaxBoxAccuracy()
        metric.update(torch.from_numpy(maps), make_batch([g.tolist() for g in gts], size=size))
        hits1, hits2 = np.zeros((3, NUM_LEVELS)), np.zeros((3, NUM_LEVELS))
        deltas = np.array(metric.iou_thresholds)[:, None]
        for m, gt in zip(maps, gts, strict=True):
            r1, r2 = _best_iou_per_level_opencv(m, gt.astype(np.float64), metric._used_levels)
            hits1[:, metric._used_levels] += r1[metric._used_levels] >= deltas
            hits2[:, metric._used_levels] += r2[metric._used_levels] >= deltas
        np.testing.assert_array_equal(metric.state_dict()["hits_v1"], hits1)
        np.testing.assert_array_equal(metric.state_dict()["hits_v2"], hits2)
