"""MaxBoxAcc's two box backends (compiled numba sweeps, NumPy pass) against the per-level OpenCV
procedure: identical boxes, IoUs and hit counts on random, smooth, tied, binary and constant maps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_metrics_maxboxacc import KINDS, make_batch, opencv_boxes, random_map

from masksal.metrics import MaxBoxAccuracy
from masksal.metrics._levelboxes import compiled_contour_boxes
from masksal.metrics.maxboxacc import _best_iou_per_level_opencv
from masksal.types import Batch

pytest.importorskip("numba")


@settings(max_examples=150, deadline=None)
@given(kind=KINDS, h=st.integers(1, 27), w=st.integers(1, 27), seed=st.integers(0, 2**32 - 1),
       refill=st.sampled_from([0, 16]))
def test_compiled_boxes_equal_findcontours_at_every_level(kind: str, h: int, w: int, seed: int, refill: int) -> None:
    # refill 0: the largest contour of levels with holes always from the third (filled) sweep;
    # 16: from cv2 at those levels when few.
    m = random_map(kind, h, w, seed)
    u8 = (m * 255).astype(np.uint8)
    levels = np.arange(255)
    got = compiled_contour_boxes(m, levels, opencv_refill_max=refill)
    for i, level in enumerate(levels.tolist()):
        mine = got.v2_box[got.v2_level == i]
        if level >= u8.max():
            assert not got.has_fg[0, i] and len(mine) == 0
            continue
        all_boxes, largest = opencv_boxes(u8, level)
        assert got.has_fg[0, i]
        assert sorted(tuple(b) for b in mine.tolist()) == all_boxes, level
        assert tuple(got.v1_box[0, i].tolist()) == largest, level


def test_nested_rings_and_many_components_at_224_px() -> None:
    # Concentric rings (holes inside holes, islands in them) plus speckle: the largest contour is
    # decided by filled areas, and a level has thousands of contours (the box buffers grow).
    yy, xx = np.mgrid[:224, :224]
    r = np.hypot(yy - 100.5, xx - 120.5)
    m = 0.5 + 0.5 * np.cos(r / 6.0) * np.exp(-r / 150)
    m += 0.2 * np.random.default_rng(0).random((224, 224)) * (xx > 150)
    m = (m - m.min()) / (m.max() - m.min())
    u8 = (m * 255).astype(np.uint8)
    levels = np.arange(0, 255, 7)
    for refill in (0, 255):
        got = compiled_contour_boxes(m, levels, opencv_refill_max=refill)
        for i, level in enumerate(levels.tolist()):
            all_boxes, largest = opencv_boxes(u8, level)
            assert sorted(tuple(b) for b in got.v2_box[got.v2_level == i].tolist()) == all_boxes, level
            assert tuple(got.v1_box[0, i].tolist()) == largest, level


@settings(max_examples=150, deadline=None)
@given(kind=KINDS, h=st.integers(1, 31), w=st.integers(1, 31), seed=st.integers(0, 2**32 - 1),
       step=st.sampled_from([0.001, 0.01, 0.07]))
def test_both_backends_equal_the_per_level_opencv_procedure(kind: str, h: int, w: int, seed: int,
                                                            step: float) -> None:
    m = random_map(kind, h, w, seed)
    rng = np.random.default_rng(seed + 1)
    k = int(rng.integers(1, 4))
    x0, y0 = rng.integers(-2, w, k), rng.integers(-2, h, k)
    gt = np.stack([x0, y0, x0 + rng.integers(0, w + 2, k), y0 + rng.integers(0, h + 2, k)], 1).astype(np.float64)
    gt[:, 2:] += rng.random((k, 2)) * (kind == "smooth")  # fractional ends too
    fast, slow = MaxBoxAccuracy(threshold_step=step, backend="numba"), MaxBoxAccuracy(threshold_step=step,
                                                                                      backend="numpy")
    r1, r2 = _best_iou_per_level_opencv(m, gt, fast._used_levels)
    for metric in (fast, slow):
        v1, v2 = metric._best_iou_per_level(m, gt)
        np.testing.assert_array_equal(v1, r1)
        np.testing.assert_array_equal(v2, r2)


@pytest.mark.parametrize("size", [224, 63])
def test_backends_accumulate_identical_states(size: int) -> None:
    # Raw (unnormalized) maps: the compiled path normalizes each map itself, to the same bits.
    rng = np.random.default_rng(size)
    kinds = ["smooth", "smooth", "tied", "constant"] + (["noise", "binary"] if size < 100 else [])
    maps = np.stack([random_map(k, size, size, int(rng.integers(1 << 30))) for k in kinds])
    maps = maps * rng.uniform(0.1, 9.0, (len(kinds), 1, 1)) - rng.uniform(-3, 3, (len(kinds), 1, 1))  # raw scores
    maps[-1, 3, 5] = np.nan  # scored as an all-zero map with nan_maps="zero"
    maps = torch.from_numpy(maps)
    gts = []
    for _ in kinds:
        x0, y0 = rng.integers(0, size - 8, (2, 2))
        gts.append(np.stack([x0, y0, x0 + rng.integers(4, size // 2, 2), y0 + rng.integers(4, size // 2, 2)], 1))
    batch = make_batch([g.tolist() for g in gts], size=size)
    states = []
    for backend in ("numba", "numpy"):
        metric = MaxBoxAccuracy(backend=backend, nan_maps="zero")
        metric.update(maps, batch)
        states.append(metric.state_dict())
    for key in ("hits_v1", "hits_v2", "count"):
        np.testing.assert_array_equal(states[0][key], states[1][key])


def test_backend_choice_is_reported_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from masksal.metrics import base

    assert base.NUMBA_AVAILABLE
    assert MaxBoxAccuracy().backend == "numba" and "backend='numba'" in repr(MaxBoxAccuracy())
    assert MaxBoxAccuracy(backend="numpy").backend == "numpy"
    with pytest.raises(ValueError, match="backend must be"):
        MaxBoxAccuracy(backend="cuda")  # type: ignore[arg-type]
    monkeypatch.setattr(base, "NUMBA_AVAILABLE", False)
    metric = MaxBoxAccuracy()
    assert metric.backend == "numpy" and "backend='numpy'" in repr(metric)
    m = torch.zeros(1, 16, 16)
    m[0, 4:10, 4:10] = 1
    metric.update(m, Batch(torch.rand(1, 3, 16, 16), torch.tensor([0]), [torch.tensor([[4.0, 4.0, 10.0, 10.0]])]))
    assert metric.compute()["maxboxacc"] == 100.0
    with pytest.raises(ValueError, match=r"pip install 'masksal\[fast\]'"):
        MaxBoxAccuracy(backend="numba")


def test_map_of_ones_and_zeros_has_its_box_everywhere() -> None:
    # A binary map: every level below 255 binarizes to the same square; its box at each level.
    m = np.zeros((20, 30))
    m[3:9, 5:17] = 1.0
    got = compiled_contour_boxes(m, np.arange(255))
    assert got.has_fg.all()
    assert (got.v2_box == [5, 3, 17, 9]).all() and len(got.v2_box) == 255
    assert (got.v1_box[0] == [5, 3, 17, 9]).all()
    assert cv2.boundingRect(cv2.findContours((m > 0).astype(np.uint8), cv2.RETR_TREE,
                                             cv2.CHAIN_APPROX_SIMPLE)[-2][0]) == (5, 3, 12, 6)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_an_empty_batch_adds_nothing(backend: str) -> None:
    metric = MaxBoxAccuracy(backend=backend)  # type: ignore[arg-type]
    metric.update(torch.zeros(0, 16, 16), Batch(torch.zeros(0, 3, 16, 16), torch.zeros(0, dtype=torch.long), []))
    assert metric.num_images == 0 and not metric.state_dict()["hits_v2"].any()


def _hand_made_maps() -> dict[str, np.ndarray]:
    """Small maps whose contours at level 0 (foreground: value 1) are known by hand."""
    maps = {}
    ring = np.zeros((12, 14))
    ring[2:10, 2:12] = 1
    ring[4:8, 4:10] = 0  # a ring with one 4 x 6 hole
    maps["ring"] = ring
    nested = np.zeros((16, 16))
    nested[1:15, 1:15] = 1
    nested[3:13, 3:13] = 0
    nested[5:11, 5:11] = 1
    nested[7:9, 7:9] = 0  # a ring in the hole of a ring: two holes, two outer contours
    maps["nested"] = nested
    border = np.zeros((10, 10))
    border[0:8, 0:8] = 1
    border[2:6, 0:4] = 0  # the background reaches the image border: no hole
    maps["border hole"] = border
    pixel = np.zeros((9, 9))
    pixel[1:8, 1:8] = 1
    pixel[3, 3] = pixel[5, 5] = 0  # two 1-pixel holes
    maps["1-pixel holes"] = pixel
    diagonal = np.zeros((8, 8))
    diagonal[1:7, 1:7] = 1
    diagonal[3, 3] = diagonal[4, 4] = 0  # background touching only diagonally: two holes (4-connected)
    diagonal[6, 7] = 1  # foreground touching only diagonally at (5, 6)-(6, 7): one component (8-connected)
    maps["diagonals"] = diagonal
    # Filling decides the largest contour: the ring (36 pixels, polygon area 64 filled) beats the
    # solid block (42 pixels, area 30) only with its hole filled.
    decide = np.zeros((12, 22))
    decide[1:10, 1:10] = 1
    decide[2:9, 2:9] = 0
    decide[1:7, 12:19] = 1
    maps["filled ring wins"] = decide
    return maps


@pytest.mark.parametrize("name", list(_hand_made_maps()))
@pytest.mark.parametrize("refill", [0, 16])
def test_hand_made_holes_match_findcontours(name: str, refill: int) -> None:
    m = _hand_made_maps()[name]
    got = compiled_contour_boxes(m, np.arange(255), opencv_refill_max=refill)
    all_boxes, largest = opencv_boxes((m * 255).astype(np.uint8), 0)
    assert sorted(tuple(b) for b in got.v2_box[got.v2_level == 0].tolist()) == all_boxes
    assert tuple(got.v1_box[0, 0].tolist()) == largest
    expected = {"ring": 2, "nested": 4, "border hole": 1, "1-pixel holes": 3, "diagonals": 3, "filled ring wins": 3}
    assert len(all_boxes) == expected[name]  # the contour counts worked out by hand


def test_largest_contour_is_redone_only_where_holes_can_change_it() -> None:
    from masksal.metrics._levelboxes_jit import map_level_boxes

    used = np.ones(256, dtype=bool)
    m = _hand_made_maps()["filled ring wins"]
    _, _, v1, refill, _ = map_level_boxes((m * 255).astype(np.uint8), used)
    assert refill[:255].all() and not refill[255]  # every level of the binary map: the hole can lift the ring
    assert tuple(compiled_contour_boxes(m, np.arange(1)).v1_box[0, 0].tolist()) == (1, 1, 10, 10)
    # A 10 x 10 block, a one-pixel-wide L whose box could hold more than the block, and a small
    # ring whose 1-pixel hole adds too little to lift either: no level needs the filled areas.
    m = np.zeros((32, 32))
    m[1:11, 20:30] = 1
    m[30, 1:25] = 1
    m[6:31, 1] = 1
    m[2:5, 2:5] = 1
    m[3, 3] = 0
    _, _, v1, refill, _ = map_level_boxes((m * 255).astype(np.uint8), used)
    assert not refill.any() and tuple(v1[0].tolist()) == opencv_boxes((m * 255).astype(np.uint8), 0)[1]
    assert tuple(v1[0].tolist()) == (20, 1, 30, 11)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_float32_maps_score_as_their_float64_values(backend: str) -> None:
    # The compiled path reads float32 maps without a float64 copy: the same hits as the same
    # values in float64 (raw scores, a constant map, a NaN map scored as zeros).
    rng = np.random.default_rng(3)
    maps = np.stack([random_map("smooth", 40, 40, 1), random_map("noise", 40, 40, 2), random_map("tied", 40, 40, 3),
                     random_map("constant", 40, 40, 4)]).astype(np.float32) * np.float32(7.3) - np.float32(2.1)
    maps[3, 2, 2] = np.nan
    gts = [[[int(x), int(y), int(x) + 12, int(y) + 9]] for x, y in rng.integers(0, 28, (4, 2))]
    states = []
    for dtype in (torch.float32, torch.float64):
        metric = MaxBoxAccuracy(backend=backend, nan_maps="zero")  # type: ignore[arg-type]
        metric.update(torch.from_numpy(maps).to(dtype), make_batch(gts, size=40))
        states.append(metric.state_dict())
    for key in ("hits_v1", "hits_v2", "count"):
        np.testing.assert_array_equal(states[0][key], states[1][key])
    assert states[0]["hits_v2"].sum() > 0


def test_maps_beyond_the_compiled_size_are_a_one_line_error():
    from masksal.metrics._levelboxes import COMPILED_MAX_SIDE, compiled_level_ious

    wide = np.zeros((1, 1, COMPILED_MAX_SIDE), np.float32)  # 32768 px wide, one row: cheap to allocate
    with pytest.raises(ValueError, match="backend='numpy'"):
        compiled_level_ious(wide, [np.array([[0.0, 0.0, 1.0, 0.0]])], np.ones(256, bool))


@pytest.mark.parametrize("module", ["_levelboxes_jit", "_levelious_jit"])
def test_compiled_modules_record_the_modules_they_call(module):
    """numba's cache would keep stale callee code after an edit of a callee alone: each compiled
    module records its callees' SHA-256 (update CALLEES_SHA256 there after editing them)."""
    import hashlib
    import importlib
    from pathlib import Path

    mod = importlib.import_module(f"masksal.metrics.{module}")
    folder = Path(mod.__file__).parent
    actual = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in mod.CALLEES_SHA256}
    assert actual == mod.CALLEES_SHA256, f"update CALLEES_SHA256 in {module}.py to {actual}"
