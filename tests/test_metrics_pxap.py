"""PxAP (metrics/pxap.py) on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from masksal.metrics import PixelAveragePrecision
from masksal.metrics.base import minmax_normalize
from masksal.metrics.pxap import _normalize
from masksal.types import Batch


def make_batch(masks: torch.Tensor) -> Batch:
    n, h, w = masks.shape
    return Batch(images=torch.zeros(n, 3, h, w), labels=torch.zeros(n, dtype=torch.long),
                 boxes=[torch.zeros(0, 4) for _ in range(n)], masks=masks.to(torch.uint8))


def square_mask(size: int = 4, fg: tuple[slice, slice] = (slice(0, 2), slice(0, 2))) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.uint8)
    m[fg] = 1
    return m


def pxap(maps: torch.Tensor, masks: torch.Tensor, **kw: object) -> float:
    metric = PixelAveragePrecision(**kw)  # type: ignore[arg-type]
    metric.update(maps, make_batch(masks))
    return metric.compute()["pxap"]


def test_perfect_map_scores_100() -> None:
    mask = square_mask()
    assert pxap(mask.float()[None], mask[None]) == pytest.approx(100.0)


def test_constant_map_scores_the_object_fraction() -> None:
    # Every pixel in the lowest bin: one operating point, P = 4/16, R = 1.
    assert pxap(torch.full((1, 4, 4), 0.7), square_mask()[None]) == pytest.approx(25.0)


def test_map_on_the_wrong_object() -> None:
    # Map 1 on 4 background pixels: at the top bin P = 0, then everything: P = 4/16, R: 0 -> 1.
    mask = square_mask()
    wrong = torch.zeros(4, 4)
    wrong[2:4, 2:4] = 1
    assert pxap(wrong[None], mask[None]) == pytest.approx(25.0)


def test_ignore_pixels_are_left_out() -> None:
    mask = square_mask()
    m = mask.float().clone()
    m[2:4, 2:4] = 1.0  # as salient as the object
    # Counted as background: top bin has TP = 4, FP = 4 -> P = 0.5 at R = 1.
    assert pxap(m[None], mask[None]) == pytest.approx(50.0)
    ignored = mask.clone()
    ignored[2:4, 2:4] = 255
    assert pxap(m[None], ignored[None]) == pytest.approx(100.0)


def test_empty_mask_adds_background_only() -> None:
    # Image 1 has no object and 4 salient pixels; image 2 is perfect. Pooled top bin: TP 4, FP 4.
    empty = torch.zeros(4, 4, dtype=torch.uint8)
    m1 = torch.zeros(4, 4)
    m1[0, :] = 1
    mask2 = square_mask()
    value = pxap(torch.stack([m1, mask2.float()]), torch.stack([empty, mask2]))
    assert value == pytest.approx(50.0)
    # A split with no object pixel at all: PxAP is undefined.
    assert math.isnan(pxap(m1[None], empty[None]))


def test_pooled_histograms_not_mean_of_per_image_aps() -> None:
    # Image 1 perfect (AP 100); image 2 constant with 1 object pixel of 16 (AP 6.25). Mean of APs:
    # 53.125. Pooled: top bin TP 4, FP 0 -> P 1, R 4/5; lowest bin TP 5, FP 27 -> P 5/32, R 1:
    # 100 * (0.8 + 5/32 * 0.2) = 83.125.
    mask1 = square_mask()
    mask2 = torch.zeros(4, 4, dtype=torch.uint8)
    mask2[3, 3] = 1
    maps = torch.stack([mask1.float(), torch.zeros(4, 4)])
    assert pxap(maps[:1], mask1[None]) == pytest.approx(100.0)
    assert pxap(maps[1:], mask2[None]) == pytest.approx(6.25)
    assert pxap(maps, torch.stack([mask1, mask2])) == pytest.approx(83.125)


def test_precision_is_not_interpolated() -> None:
    # Ranking (high to low): object, background, background, object, object. Recall steps of 1/3
    # at precisions 1, 2/4, 3/5: AP = (1 + 0.5 + 0.6) / 3 = 0.7 (interpolated would be 0.7333).
    m = torch.tensor([[[1.0, 0.8, 0.6, 0.4, 0.0]]])
    mask = torch.tensor([[[1, 0, 0, 1, 1]]], dtype=torch.uint8)
    assert pxap(m, mask) == pytest.approx(70.0)


def test_histograms_use_the_reference_bins() -> None:
    rng = np.random.default_rng(0)
    maps = torch.from_numpy(rng.random((3, 8, 8)))
    maps[0, 0, 0], maps[0, 0, 1] = 0.0, 1.0  # exact 0 and 1 (after normalization) land in their bins
    masks = torch.from_numpy(rng.integers(0, 2, (3, 8, 8)).astype(np.uint8))
    metric = PixelAveragePrecision()
    metric.update(maps, make_batch(masks))
    arr = maps.numpy()
    norm = np.stack([(m - m.min()) / (m - m.min()).max() for m in arr])
    expected, _ = np.histogram(norm[masks.numpy() == 1], bins=metric.edges)
    np.testing.assert_array_equal(metric.state_dict()["hist_object"], expected)
    assert len(metric.edges) == 1003 and metric.edges[-3:].tolist() == [1.0, 2.0, 3.0]


def test_scale_of_the_map_does_not_matter() -> None:
    rng = np.random.default_rng(1)
    m = torch.from_numpy(rng.random((2, 6, 6)))
    masks = torch.from_numpy(rng.integers(0, 2, (2, 6, 6)).astype(np.uint8))
    assert pxap(m, masks) == pytest.approx(pxap(10 * m - 3, masks))


def test_invalid_inputs_raise() -> None:
    metric = PixelAveragePrecision()
    mask = square_mask()[None]
    nan = torch.full((1, 4, 4), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        metric.update(nan, make_batch(mask))
    metric_zero = PixelAveragePrecision(nan_maps="zero")
    metric_zero.update(nan, make_batch(mask))  # scored as an all-zero map: the object fraction
    assert metric_zero.compute()["pxap"] == pytest.approx(25.0)
    with pytest.raises(ValueError, match="0 \\(background\\), 1 \\(object\\) or 255"):
        metric.update(torch.zeros(1, 4, 4), make_batch(torch.full((1, 4, 4), 2)))
    batch = make_batch(mask)
    batch.masks = None
    with pytest.raises(ValueError, match="no pixel masks"):
        metric.update(torch.zeros(1, 4, 4), batch)


@settings(max_examples=100, deadline=None)
@given(step=st.sampled_from([0.001, 0.002, 0.01, 0.07, 0.3]), seed=st.integers(0, 2**32 - 1),
       n_edges=st.integers(0, 40))
def test_bin_index_equals_np_histogram_bins_including_values_on_the_edges(step: float, seed: int,
                                                                          n_edges: int) -> None:
    metric = PixelAveragePrecision(threshold_step=step)
    rng = np.random.default_rng(seed)
    scores = rng.random(200)
    # Values exactly on bin edges (where s / step rounds the wrong way), 0 and 1.
    edges = metric.edges[:-2]
    scores[:n_edges] = edges[rng.integers(0, len(edges), n_edges)]
    scores[-2:] = 0.0, 1.0
    expected = np.searchsorted(metric.edges, scores, side="right") - 1
    np.testing.assert_array_equal(metric.bin_index(scores), expected)
    hist, _ = np.histogram(scores, bins=metric.edges)
    np.testing.assert_array_equal(np.bincount(metric.bin_index(scores), minlength=len(hist)), hist)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), ties=st.booleans())
def test_batch_histograms_equal_the_reference_per_image_histograms(seed: int, ties: bool) -> None:
    # wsolevaluation: per image, np.histogram of the object and of the background scores.
    rng = np.random.default_rng(seed)
    maps = rng.random((3, 9, 7))
    if ties:
        maps = np.round(maps * 4)
    masks = rng.choice(np.array([0, 1, 255], dtype=np.uint8), size=(3, 9, 7))
    metric = PixelAveragePrecision()
    metric.update(torch.from_numpy(maps), make_batch(torch.from_numpy(masks)))
    obj, bg = np.zeros(len(metric.edges) - 1), np.zeros(len(metric.edges) - 1)
    for m, mask in zip(maps, masks, strict=True):
        m = np.zeros_like(m) if m.max() == m.min() else (m - m.min()) / (m - m.min()).max()
        obj += np.histogram(m[mask == 1], bins=metric.edges)[0]
        bg += np.histogram(m[mask == 0], bins=metric.edges)[0]
    state = metric.state_dict()
    np.testing.assert_array_equal(state["hist_object"], obj)
    np.testing.assert_array_equal(state["hist_background"], bg)


def test_per_map_normalization_is_minmax_normalize_bit_for_bit() -> None:
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(5, 7, 9)) * 1e3
    maps[1] = 4.0  # constant
    maps[2, 3, 3] = np.nan
    maps[3] = np.round(maps[3])  # ties
    expected = minmax_normalize(maps)
    for m, e in zip(maps, expected, strict=True):
        assert np.array_equal(_normalize(m.copy()), e)


@pytest.mark.parametrize("kind", ["uniform", "smooth", "tied", "constant", "nan", "float32"])
def test_compiled_histograms_equal_the_numpy_path(kind: str) -> None:
    """The numba pass (the default with the ``fast`` extra) gives the NumPy path's counts exactly."""
    pytest.importorskip("numba")
    g = torch.Generator().manual_seed(3)
    n, size = 6, 24
    if kind == "uniform":
        maps = torch.rand(n, size, size, generator=g, dtype=torch.float64)
    elif kind == "smooth":
        maps = torch.nn.functional.interpolate(torch.rand(n, 1, 5, 5, generator=g), size=size, mode="bicubic",
                                               align_corners=False)[:, 0].double()
    elif kind == "tied":  # many scores on bin edges: multiples of 0.001 and exact 0 / 1
        maps = torch.randint(0, 5, (n, size, size), generator=g).double() / 4
    elif kind == "constant":
        maps = torch.full((n, size, size), 0.7, dtype=torch.float64)
    elif kind == "nan":
        maps = torch.rand(n, size, size, generator=g, dtype=torch.float64)
        maps[1, 3, 4] = float("nan")
    else:
        maps = torch.rand(n, size, size, generator=g) * 7 - 2  # raw float32, not in [0, 1]
    masks = torch.randint(0, 2, (n, size, size), generator=g, dtype=torch.uint8)
    masks[:, :2] = 255  # ignore band
    batch = make_batch(masks)
    nan = "zero" if kind == "nan" else "raise"
    fast, slow = (PixelAveragePrecision(backend=b, nan_maps=nan) for b in ("numba", "numpy"))
    assert fast.backend == "numba" and slow.backend == "numpy"
    fast.update(maps, batch)
    slow.update(maps, batch)
    for key in ("hist_object", "hist_background", "count"):
        assert np.array_equal(fast.state_dict()[key], slow.state_dict()[key]), key
    assert fast.compute() == slow.compute()
