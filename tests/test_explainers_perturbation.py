"""Meaningful and Extremal Perturbation: the pieces (smooth mask, blur pyramid) and what the optimum means."""

from __future__ import annotations

import math

import pytest
import torch

from masksal.classifiers import Classifier, create_classifier
from masksal.explainers import ExtremalPerturbation, MeaningfulPerturbation, SmoothMaxMask
from masksal.explainers._common import at_resolution, gaussian_blur

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clf() -> Classifier:
    torch.manual_seed(0)
    return create_classifier("small_resnet18", 5, width=8).eval()


def images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_smooth_max_mask_single_point_and_constant() -> None:
    g = SmoothMaxMask(32, 32, step=2, sigma=6.0)
    assert g.margin == 6 and g.canvas_shape == (44, 44) and g.grid_shape == (22, 22)
    p = torch.zeros(1, 1, 22, 22)
    p[0, 0, 11, 11] = 1  # its cell holds canvas pixels 22-23: centre 22.5
    m = g(p)[0, 0]
    assert float(m[22, 22]) == pytest.approx(1.0, abs=1e-3)  # flat top within sigma / 2
    # pixel (23, 29): distance sqrt(0.5^2 + 6.5^2); kernel exp(-2 (d / sigma - 1/2)^2); softmax pooling
    # of that value against the 80 zero neighbours with coldness 20
    k = math.exp(-2 * (math.hypot(0.5, 6.5) / 6 - 0.5) ** 2)
    pooled = k * math.exp(20 * k) / (math.exp(20 * k) + 80)
    assert float(m[23, 29]) == pytest.approx(pooled, rel=1e-4)
    assert float(m[22, 40]) == 0.0  # beyond the pooling radius
    torch.testing.assert_close(m, m.T)
    ones = g.crop(g(torch.ones(1, 1, 22, 22)))
    assert ones.shape == (1, 1, 32, 32) and float(ones.min()) > 0.98 and float(ones.max()) <= 1.0
    assert float(g(torch.zeros(1, 1, 22, 22)).abs().max()) == 0.0


def test_blur_pyramid_interpolation(clf: Classifier) -> None:
    ep = ExtremalPerturbation(clf, num_levels=5, max_blur=2.0)
    x = images()
    pyramid = ep._blur_pyramid(x)
    assert pyramid.shape == (2, 5, 3, 32, 32)
    torch.testing.assert_close(pyramid[:, -1], x)
    torch.testing.assert_close(pyramid[:, 0], gaussian_blur(x, 2.0))
    torch.testing.assert_close(pyramid[:, 2], gaussian_blur(x, 1.0))
    ones = torch.ones(2, 1, 1, 32, 32)
    torch.testing.assert_close(ep._perturb(pyramid, ones)[:, 0], x)
    torch.testing.assert_close(ep._perturb(pyramid, 0 * ones)[:, 0], pyramid[:, 0])
    torch.testing.assert_close(ep._perturb(pyramid, 0.375 * ones)[:, 0], 0.5 * (pyramid[:, 1] + pyramid[:, 2]))


@pytest.mark.parametrize("area", [0.05, 0.2, 0.4])
def test_extremal_masks_meet_their_area(clf: Classifier, area: float) -> None:
    maps = ExtremalPerturbation(clf, areas=area, iterations=100, lr=0.1).explain(images())
    kept = (maps > 0.5).float().mean(dim=(1, 2))
    assert ((kept - area).abs() < 0.05).all(), kept
    assert maps.min() >= 0 and maps.max() <= 1


def test_extremal_several_areas_average_independent_masks(clf: Classifier) -> None:
    x = images()
    both = ExtremalPerturbation(clf, areas=[0.1, 0.3], iterations=20).explain(x)
    one = ExtremalPerturbation(clf, areas=0.1, iterations=20).explain(x)
    other = ExtremalPerturbation(clf, areas=0.3, iterations=20).explain(x)
    torch.testing.assert_close(both, (one + other) / 2, rtol=1e-4, atol=1e-5)


def test_meaningful_perturbation_deletes_evidence(clf: Classifier) -> None:
    x = images()
    with torch.no_grad():
        t = clf(x).argmax(dim=1)
        p_clean = clf(x).softmax(dim=1).gather(1, t[:, None])[:, 0]
    saliency = MeaningfulPerturbation(clf, iterations=60).explain(x, t)
    assert saliency.min() >= 0 and saliency.max() <= 1
    keep = (1 - saliency)[:, None]
    blurred = gaussian_blur(x, at_resolution(10.0, 32))
    with torch.no_grad():
        p_deleted = clf(x * keep + blurred * (1 - keep)).softmax(dim=1).gather(1, t[:, None])[:, 0]
    assert (p_deleted < p_clean - 0.1).all(), (p_clean, p_deleted)
    # a prohibitive area cost deletes nothing
    nothing = MeaningfulPerturbation(clf, iterations=60, l1_coeff=100.0).explain(x, t)
    assert float(nothing.max()) < 1e-3
