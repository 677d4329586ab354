"""RISE: seeded masks made once, batching that only splits the work, the formula on a direct computation."""

from __future__ import annotations

import pytest
import torch

from masksal.classifiers import Classifier, create_classifier
from masksal.explainers import RISE

pytestmark = pytest.mark.usefixtures("one_thread")


def make_classifier() -> Classifier:
    torch.manual_seed(0)
    return create_classifier("small_resnet18", 5, width=8)


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_rise_fixed_seed_is_deterministic_and_seed_matters() -> None:
    clf = make_classifier()
    x = images(2)
    a = RISE(clf, n_masks=30, seed=3).explain(x)
    b = RISE(clf, n_masks=30, seed=3).explain(x)
    c = RISE(clf, n_masks=30, seed=4).explain(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_rise_masks_are_made_once_and_do_not_depend_on_batch_size() -> None:
    clf = make_classifier()
    r = RISE(clf, n_masks=12, grid_size=4, batch_size=5)
    m = r.masks(0, 12, 32, 32)
    assert m.shape == (12, 32, 32) and m.min() >= 0 and m.max() <= 1
    assert torch.equal(r.masks(4, 9, 32, 32), m[4:9])
    assert r._random_draws(32, 32)[0] is r._random_draws(32, 32)[0]
    # Masks ~ bilinear upsampling of a binary grid: mean close to p, both values present.
    big = RISE(clf, n_masks=400, p=0.5).masks(0, 400, 32, 32)
    assert abs(float(big.mean()) - 0.5) < 0.05
    assert float((big > 0.99).float().mean()) > 0.05 and float((big < 0.01).float().mean()) > 0.05
    # batch_size only changes how the work is split
    x = images(3)
    maps = [RISE(clf, n_masks=20, batch_size=bs).explain(x, torch.tensor([0, 1, 2])) for bs in (1, 7, 64)]
    torch.testing.assert_close(maps[0], maps[1])
    torch.testing.assert_close(maps[0], maps[2])


def test_rise_equals_its_formula_on_a_linear_model() -> None:
    # For a model whose class-0 probability is the sum of mask-weighted pixel values, the RISE map
    # is the masks' weighted average: check it against a direct computation.
    clf = make_classifier()
    r = RISE(clf, n_masks=16, grid_size=3, batch_size=8)
    x = images(1)
    masks = r.masks(0, 16, 32, 32)
    mean = torch.tensor(clf.spec.mean).view(1, 3, 1, 1)
    masked = mean + (x - mean) * masks[:, None]
    with torch.no_grad():
        probs = clf.eval()(masked).softmax(1)[:, 2]
    expected = (probs[:, None, None] * masks).sum(0) / (16 * 0.5)
    torch.testing.assert_close(r.explain(x, torch.tensor([2]))[0], expected, rtol=1e-4, atol=1e-6)
