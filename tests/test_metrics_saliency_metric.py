"""SM (metrics/saliency_metric.py) on toy classifiers with hand-computed probabilities."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from masksal.classifiers import Classifier
from masksal.metrics import SaliencyMetric
from masksal.types import Batch


class RedScore(nn.Module):
    """Logits (0, k * mean red) of the whole input: the class-1 probability is sigmoid(k * red)."""

    def __init__(self, k: float = 2.0) -> None:
        super().__init__()
        self.k = k
        self.head = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, 0].mean(dim=(1, 2))
        return self.head(torch.stack([torch.zeros_like(red), self.k * red], dim=1))


def classifier(k: float = 2.0) -> Classifier:
    # Identity normalization: the model sees [0, 1] pixels.
    return Classifier(RedScore(k), taps=["head"], mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def red_square_batch(size: int = 16, lo: int = 4, hi: int = 11) -> Batch:
    images = torch.zeros(1, 3, size, size)
    images[0, 0, lo:hi + 1, lo:hi + 1] = 1.0
    return Batch(images=images, labels=torch.tensor([1]), boxes=[torch.zeros(0, 4)])


def square_map(size: int, lo: int, hi: int) -> torch.Tensor:
    m = torch.zeros(1, size, size)
    m[0, lo:hi + 1, lo:hi + 1] = 1.0
    return m


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_sm_on_the_object_is_hand_computed() -> None:
    # Box 4..11 (64 of 256 pixels); the crop is all red, resized stays all red: p = sigmoid(2).
    sm = SaliencyMetric(classifier())
    sm.update(square_map(16, 4, 11), red_square_batch())
    out = sm.compute()
    assert out["sm"] == pytest.approx(math.log(64 / 256) - log_sigmoid(2.0), abs=1e-5)
    assert out["sm_area_term"] == pytest.approx(math.log(0.25))
    assert out["sm_crop_top1"] == 100.0


def test_small_box_area_is_floored_at_005() -> None:
    # A 2x2 box inside the red square: area 4/256 < 0.05 -> log(0.05); crop still all red.
    sm = SaliencyMetric(classifier())
    sm.update(square_map(16, 6, 7), red_square_batch())
    assert sm.compute()["sm"] == pytest.approx(math.log(0.05) - log_sigmoid(2.0), abs=1e-5)


def test_box_off_the_object_classifies_worse() -> None:
    # A box on black pixels only: red = 0, p = 0.5; same area as the object's box.
    sm_on, sm_off = SaliencyMetric(classifier()), SaliencyMetric(classifier())
    sm_on.update(square_map(16, 4, 11), red_square_batch())
    off = torch.zeros(1, 16, 16)
    off[0, 0:3, 0:16] = 1.0  # rows 0..2 are black in the image; 48 pixels
    sm_off.update(off, red_square_batch())
    assert sm_off.compute()["sm"] == pytest.approx(math.log(48 / 256) - math.log(0.5), abs=1e-5)
    assert sm_on.compute()["sm"] < sm_off.compute()["sm"]


def test_empty_box_classifies_the_mean_colour_image() -> None:
    # Constant map: no box, area floored, "crop" = mean colour (0 here): red 0, p = 0.5.
    sm = SaliencyMetric(classifier())
    sm.update(torch.full((1, 16, 16), 0.3), red_square_batch())
    assert sm.compute()["sm"] == pytest.approx(math.log(0.05) - math.log(0.5), abs=1e-6)


def test_si_geometry_drops_the_last_row_and_column() -> None:
    # SI's box for pixels 4..11 is [4, 11) x [4, 11): 49 pixels.
    sm = SaliencyMetric(classifier(), geometry="si")
    sm.update(square_map(16, 4, 11), red_square_batch())
    assert sm.compute()["sm_area_term"] == pytest.approx(math.log(49 / 256))


def test_crop_is_resized_bicubically_to_the_input_size() -> None:
    # Half red, half black crop: bicubic upsampling keeps the mean red at 1/2 up to the kernel's
    # overshoot near the edge, which is symmetric.
    images = torch.zeros(1, 3, 16, 16)
    images[0, 0, :, :8] = 1.0
    batch = Batch(images=images, labels=torch.tensor([1]), boxes=[torch.zeros(0, 4)])
    crops, areas = SaliencyMetric(classifier()).crops(square_map(16, 6, 9), batch)
    assert crops.shape == (1, 3, 16, 16) and areas.tolist() == [16 / 256]
    assert crops[0, 0].mean().item() == pytest.approx(0.5, abs=1e-4)
    assert crops[0, 0, :, 0].min().item() > 0.99 and crops[0, 0, :, -1].max().item() < 0.01


def test_log_prob_stays_finite_when_the_probability_underflows() -> None:
    sm = SaliencyMetric(classifier(k=-1e4))  # class 1 has probability exp(-1e4) on red crops
    sm.update(square_map(16, 4, 11), red_square_batch())
    out = sm.compute()
    assert math.isfinite(out["sm"]) and out["sm"] == pytest.approx(math.log(0.25) + 1e4, rel=1e-6)


def test_batched_equals_per_image_and_merge() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 16, 16, generator=g)
    maps = torch.rand(5, 16, 16, generator=g)
    batch = Batch(images=images, labels=torch.tensor([0, 1, 1, 0, 1]), boxes=[torch.zeros(0, 4)] * 5)
    whole = SaliencyMetric(classifier(), batch_size=2)
    whole.update(maps, batch)
    parts = [SaliencyMetric(classifier()) for _ in range(5)]
    for i, p in enumerate(parts):
        p.update(maps[i:i + 1], Batch(images[i:i + 1], batch.labels[i:i + 1], [torch.zeros(0, 4)]))
    merged = parts[0]
    for p in parts[1:]:
        merged.merge(p)
    for k, v in whole.compute().items():
        assert merged.compute()[k] == pytest.approx(v, abs=1e-9)
