"""Deletion / insertion (metrics/faithfulness.py) on a toy model that looks at one region only."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from masksal.classifiers import Classifier
from masksal.metrics import DeletionInsertion
from masksal.types import Batch


class TopLeftRed(nn.Module):
    """Logits (0, 10 * mean red of the top-left 4x4 block): nothing else matters."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, 0, :4, :4].mean(dim=(1, 2))
        return self.head(torch.stack([torch.zeros_like(red), 10 * red], dim=1))


def classifier() -> Classifier:
    return Classifier(TopLeftRed(), taps=["head"], mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def red_batch(n: int = 1) -> Batch:
    return Batch(images=torch.ones(n, 3, 8, 8), labels=torch.ones(n, dtype=torch.long),
                 boxes=[torch.zeros(0, 4)] * n)


def good_map() -> torch.Tensor:
    m = torch.zeros(1, 8, 8)
    m[0, :4, :4] = 1.0
    return m


S10 = 1 / (1 + math.exp(-10))  # probability of class 1 with the region intact


def test_deletion_and_insertion_curves_are_hand_computed() -> None:
    # 64 pixels, 4 steps of 16: the good map removes the 16 region pixels first.
    metric = DeletionInsertion(classifier(), steps=4, deletion_substrate="zeros", insertion_substrate="zeros")
    deletion, insertion = metric.scores(good_map(), red_batch())
    assert deletion[0].tolist() == pytest.approx([S10, 0.5, 0.5, 0.5, 0.5])
    assert insertion[0].tolist() == pytest.approx([0.5, S10, S10, S10, S10])
    metric.update(good_map(), red_batch())
    out = metric.compute()
    # Trapezoid over [0, 1] with spacing 1/4.
    assert out["deletion_auc"] == pytest.approx((S10 / 2 + 3 * 0.5 + 0.5 / 2) / 4)
    assert out["insertion_auc"] == pytest.approx((0.5 / 2 + 3 * S10 + S10 / 2) / 4)


def test_a_map_pointing_elsewhere_scores_worse() -> None:
    bad = 1 - good_map()  # the region comes last
    metric = DeletionInsertion(classifier(), steps=4, deletion_substrate="zeros", insertion_substrate="zeros")
    deletion, insertion = metric.scores(bad, red_batch())
    assert deletion[0].tolist() == pytest.approx([S10, S10, S10, S10, 0.5])
    assert insertion[0].tolist() == pytest.approx([0.5, 0.5, 0.5, 0.5, S10])
    good = DeletionInsertion(classifier(), steps=4, deletion_substrate="zeros", insertion_substrate="zeros")
    good.update(good_map(), red_batch())
    metric.update(bad, red_batch())
    assert good.compute()["deletion_auc"] < metric.compute()["deletion_auc"]
    assert good.compute()["insertion_auc"] > metric.compute()["insertion_auc"]


def test_steps_that_do_not_divide_the_image() -> None:
    # 64 pixels in 3 steps: 0, 21, 42, 64 pixels; the 16 region pixels go in step 1.
    metric = DeletionInsertion(classifier(), steps=3, deletion_substrate="zeros")
    assert metric.pixel_counts(64).tolist() == [0, 21, 42, 64]
    deletion, _ = metric.scores(good_map(), red_batch())
    assert deletion[0].tolist() == pytest.approx([S10, 0.5, 0.5, 0.5])


def test_substrates() -> None:
    clf = Classifier(TopLeftRed(), taps=["head"], mean=(0.25, 0.5, 0.75), std=(1.0, 1.0, 1.0))
    metric = DeletionInsertion(clf)
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(metric.substrate(images, "zeros"), torch.zeros_like(images))
    mean = metric.substrate(images, "mean")
    assert mean[1, :, 3, 3].tolist() == [0.25, 0.5, 0.75]
    blurred = metric.substrate(images, "blur")
    assert blurred.std() < images.std()


def test_rise_blur_kernel_is_a_smoothed_unit_pixel() -> None:
    # scipy's gaussian_filter(sigma=5) in reflect mode folds the tails back into the 11 x 11 window:
    # nearly a box filter, separable, summing to 1 (a truncated Gaussian's 1-D weights: 0.066-0.109).
    k = DeletionInsertion(classifier()).rise_kernel()
    assert k.shape == (11, 11) and k.dtype == np.float32
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-6)
    row = k.sum(axis=0)
    assert row.min() == pytest.approx(0.0880, abs=1e-4) and row.max() == pytest.approx(0.0940, abs=1e-4)
    assert np.allclose(k, np.outer(row, row), atol=1e-7)


def test_rise_blur_pads_with_the_mean_colour() -> None:
    # An image of the mean colour is unchanged (zero padding in normalized space); any other
    # constant image darkens or brightens towards the mean at the border and keeps its value
    # 5 pixels inside. torchvision's reflect-padded Gaussian keeps every constant image.
    clf = Classifier(TopLeftRed(), taps=["head"], mean=(0.25, 0.5, 0.75), std=(0.5, 0.5, 0.5))
    mean_image = clf.mean.expand(1, 3, 16, 16).clone()
    rise = DeletionInsertion(clf)
    assert torch.allclose(rise.substrate(mean_image, "blur"), mean_image, atol=1e-7)
    flat = torch.full((1, 3, 16, 16), 0.4)
    out = rise.substrate(flat, "blur")
    assert torch.allclose(out[..., 5:11, 5:11], flat[..., 5:11, 5:11], atol=1e-6)
    # Corner pixel of channel 0: 36 of the 121 kernel taps fall inside, the rest on the mean 0.25.
    k = rise.rise_kernel()
    inside = float(k[5:, 5:].sum())
    assert out[0, 0, 0, 0].item() == pytest.approx(0.4 * inside + 0.25 * (1 - inside), abs=1e-6)
    gaussian = DeletionInsertion(clf, blur="gaussian")
    assert torch.allclose(gaussian.substrate(flat, "blur"), flat, atol=1e-6)


def test_mean_substrate_deletion_matches_zero_in_normalized_space() -> None:
    # Red mean 0.5: the model sees red 1 as 0.5 (logit 5) and a deleted pixel as exactly 0.
    clf = Classifier(TopLeftRed(), taps=["head"], mean=(0.5, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    metric = DeletionInsertion(clf, steps=4, deletion_substrate="mean")
    deletion, _ = metric.scores(good_map(), red_batch())
    s5 = 1 / (1 + math.exp(-5))
    assert deletion[0].tolist() == pytest.approx([s5, 0.5, 0.5, 0.5, 0.5])


def test_targets_select_the_tracked_class() -> None:
    metric = DeletionInsertion(classifier(), steps=4, deletion_substrate="zeros")
    deletion, _ = metric.scores(good_map(), red_batch(), targets=torch.tensor([0]))
    assert deletion[0].tolist() == pytest.approx([1 - S10, 0.5, 0.5, 0.5, 0.5])


def test_top1_is_tracked_by_default_and_label_on_request() -> None:
    # The red image is class 1 for the model; a batch labelled 0 tracks class 1 by default (RISE)
    # and class 0 with target="label".
    batch = Batch(images=torch.ones(1, 3, 8, 8), labels=torch.tensor([0]), boxes=[torch.zeros(0, 4)])
    top1, _ = DeletionInsertion(classifier(), steps=4, deletion_substrate="zeros").scores(good_map(), batch)
    label, _ = DeletionInsertion(classifier(), steps=4, deletion_substrate="zeros", target="label").scores(
        good_map(), batch)
    assert top1[0].tolist() == pytest.approx([S10, 0.5, 0.5, 0.5, 0.5])
    assert label[0].tolist() == pytest.approx([1 - S10, 0.5, 0.5, 0.5, 0.5])


def test_default_schedule_is_rises_28_steps() -> None:
    metric = DeletionInsertion(classifier())
    counts = metric.pixel_counts(224 * 224)
    assert len(counts) == 29 and torch.equal(torch.diff(counts), torch.full((28,), 1792))


def test_pixels_per_step_is_rises_literal_schedule() -> None:
    # 64 pixels, 24 a step: 0, 24, 48, 64 -- the last step moves 16 pixels and spans 1/3 of x.
    metric = DeletionInsertion(classifier(), pixels_per_step=24, deletion_substrate="zeros",
                               insertion_substrate="zeros")
    assert metric.pixel_counts(64).tolist() == [0, 24, 48, 64]
    deletion, _ = metric.scores(good_map(), red_batch())
    assert deletion[0].tolist() == pytest.approx([S10, 0.5, 0.5, 0.5])
    metric.update(good_map(), red_batch())
    assert metric.compute()["deletion_auc"] == pytest.approx((S10 / 2 + 0.5 + 0.5 + 0.5 / 2) / 3)
    assert metric.curves()["fraction"].tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    # Merging with an accumulator that saw nothing (no curve length yet), either way round.
    fresh = DeletionInsertion(classifier(), pixels_per_step=24, deletion_substrate="zeros",
                              insertion_substrate="zeros")
    assert fresh.merge(metric).compute() == metric.compute()
    assert metric.merge(DeletionInsertion(classifier(), pixels_per_step=24, deletion_substrate="zeros",
                                          insertion_substrate="zeros")).num_images == 1
    with pytest.raises(ValueError, match="same size"):
        metric.update(torch.zeros(1, 4, 4), Batch(torch.ones(1, 3, 4, 4), torch.ones(1, dtype=torch.long),
                                                  [torch.zeros(0, 4)]))


def test_tie_orders() -> None:
    # A constant map: every pixel tied. "stable" deletes in raster order, so the top-left region
    # (rows 0-3, the first 4 pixels of each) goes in the first half: 32 pixels cover rows 0-3.
    flat = torch.full((1, 8, 8), 0.5)
    stable, _ = DeletionInsertion(classifier(), steps=2, deletion_substrate="zeros").scores(flat, red_batch())
    assert stable[0].tolist() == pytest.approx([S10, 0.5, 0.5])
    metric = DeletionInsertion(classifier(), steps=2, ties="numpy")
    expected = np.flip(np.argsort(flat.numpy().reshape(1, -1), axis=1), axis=1)
    assert metric.ranking(flat, flat.double().numpy()).numpy().tolist() == expected.tolist()


def test_batched_over_images_and_steps_equals_per_image_loop() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 8, 8, generator=g)
    maps = torch.rand(5, 8, 8, generator=g)
    batch = Batch(images=images, labels=torch.tensor([1, 0, 1, 1, 0]), boxes=[torch.zeros(0, 4)] * 5)
    whole = DeletionInsertion(classifier(), steps=8, batch_size=7)  # chunks straddle images
    whole.update(maps, batch)
    single = DeletionInsertion(classifier(), steps=8, batch_size=1)
    for i in range(5):
        single.update(maps[i:i + 1], Batch(images[i:i + 1], batch.labels[i:i + 1], [torch.zeros(0, 4)]))
    for k, v in whole.compute().items():
        assert single.compute()[k] == pytest.approx(v, abs=1e-12)
    for k in ("deletion", "insertion"):
        assert single.curves()[k] == pytest.approx(whole.curves()[k], abs=1e-12)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="substrate"):
        DeletionInsertion(classifier(), deletion_substrate="noise")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        DeletionInsertion(classifier(), steps=0)
    with pytest.raises(ValueError, match="not both"):
        DeletionInsertion(classifier(), steps=10, pixels_per_step=100)
    with pytest.raises(ValueError, match="pixels_per_step"):
        DeletionInsertion(classifier(), pixels_per_step=0)
    for option, value in (("target", "top5"), ("blur", "box"), ("ties", "random")):
        with pytest.raises(ValueError, match=option):
            DeletionInsertion(classifier(), **{option: value})  # type: ignore[arg-type]
    bad = good_map()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        DeletionInsertion(classifier()).update(bad, red_batch())
