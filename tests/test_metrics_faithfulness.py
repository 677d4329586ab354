"""Deletion / insertion (metrics/faithfulness.py) on a toy model that looks at one region only."""

from __future__ import annotations

import math

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
    flat = torch.full((1, 3, 8, 8), 0.4)
    assert torch.allclose(metric.substrate(flat, "blur"), flat)  # blurring a constant image
    blurred = metric.substrate(images, "blur")
    assert blurred.std() < images.std()


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
    bad = good_map()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        DeletionInsertion(classifier()).update(bad, red_batch())
