"""Meaningful and Extremal Perturbation: the pieces (smooth mask, blur pyramid) and what the optimum means."""

from __future__ import annotations

import math

import pytest
import torch

from masksal.classifiers import Classifier, create_classifier
from masksal.explainers import ExtremalPerturbation, MeaningfulPerturbation, SmoothMaxMask
from masksal.explainers._common import at_resolution, gaussian_blur
from masksal.explainers.extremal_perturbation import _smooth_max_mask_reference

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


@pytest.mark.parametrize(("h", "w", "step", "sigma"), [(32, 32, 2, 6.0), (37, 23, 3, 5.0), (16, 20, 1, 2.5),
                                                    (20, 20, 7, 21.0)])
@pytest.mark.parametrize("kind", ["uniform", "binary"])
def test_smooth_max_mask_equals_the_reference_implementation(h: int, w: int, step: int, sigma: float,
                                                             kind: str) -> None:
    # The per-place pooling with its hand-written backward pass against the former pixel-level
    # softmax (autograd): same masks and same parameter gradients, to float tolerance. Canvas
    # sizes that are not a multiple of the step included.
    g = SmoothMaxMask(h, w, step=step, sigma=sigma)
    gen = torch.Generator().manual_seed(h * w + step)
    params = torch.rand(3, 1, *g.grid_shape, generator=gen)
    if kind == "binary":
        params = (params > 0.7).float()
    fast, ref = params.clone().requires_grad_(), params.clone().requires_grad_()
    m_fast, m_ref = g(fast), _smooth_max_mask_reference(g, ref)
    assert m_fast.shape == m_ref.shape == (3, 1, *g.canvas_shape)
    torch.testing.assert_close(m_fast, m_ref, rtol=1e-5, atol=1e-6)
    if kind == "binary":
        return  # pooled values of exactly 1 sit on the clamp's kink: its gradient is a coin flip there
    weight = torch.rand(m_ref.shape, generator=gen)
    (m_fast * weight).sum().backward()
    (m_ref * weight).sum().backward()
    assert fast.grad is not None and ref.grad is not None
    torch.testing.assert_close(fast.grad, ref.grad, rtol=1e-4, atol=1e-5 * float(ref.grad.abs().max()))


def test_smooth_max_mask_gradient_is_the_derivative() -> None:
    g = SmoothMaxMask(6, 5, step=2, sigma=2.0)
    params = (0.1 + 0.8 * torch.rand(2, 1, *g.grid_shape, generator=torch.Generator().manual_seed(3))).double()
    assert torch.autograd.gradcheck(g, (params.requires_grad_(),))


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
