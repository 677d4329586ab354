"""The model-blind baselines: the centre prior's values and the seeded uniform stream."""

from __future__ import annotations

import pytest
import torch

from masksal.explainers import CentreBaseline, RandomBaseline


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_centre_baseline_values() -> None:
    x = images(2)
    box = CentreBaseline(kind="box", box_fraction=0.5).explain(x)
    expected = torch.zeros(32, 32)
    expected[8:24, 8:24] = 1
    assert torch.equal(box[0], expected) and torch.equal(box[1], expected)
    g = CentreBaseline(sigma=0.25).map(33, 33)
    assert float(g[16, 16]) == pytest.approx(1.0)
    assert float(g[16, 16 + 8]) == pytest.approx(float(torch.exp(torch.tensor(-(8.0**2) / (2 * 8.25**2)))))
    assert torch.equal(g, g.flip(0)) and torch.equal(g, g.flip(1))


def test_random_baseline_is_seeded_uniform_and_ignores_the_model() -> None:
    x = images(3)
    a = RandomBaseline(seed=5).explain(x)
    assert torch.equal(a, RandomBaseline(None, seed=5).explain(x * 0))
    assert not torch.equal(a, RandomBaseline(seed=6).explain(x))
    assert a.min() >= 0 and a.max() < 1
    assert not torch.equal(a[0], a[1])
