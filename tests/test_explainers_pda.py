"""Prediction difference analysis: finds the region a hand-built model looks at, computes the
weight of evidence of a hand-checked case, and behaves like every other explainer (batching,
hygiene, determinism)."""

from __future__ import annotations

import math

import pytest
import torch
from test_explainers_toy import SIZE, TopLeftNet, quadrant_share
from torch import Tensor, nn

from masksal.classifiers import Classifier, create_classifier
from masksal.explainers import PredictionDifference, create_explainer
from masksal.explainers.prediction_difference import PatchGaussian, forwards_per_map

pytestmark = pytest.mark.usefixtures("one_thread")


def smooth_images(n: int, size: int, seed: int) -> Tensor:
    """Random colour ramps: the patch statistics of images without texture."""
    g = torch.Generator().manual_seed(seed)
    c = torch.linspace(-0.5, 0.5, size)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    a, b, d = (torch.rand(n, 3, 1, 1, generator=g) for _ in range(3))
    return (0.2 + 0.6 * a + 0.3 * (b - 0.5) * xx + 0.3 * (d - 0.5) * yy).clamp(0, 1)


def test_finds_the_quadrant_the_toy_looks_at() -> None:
    clf = Classifier(TopLeftNet(), taps=["layer4"])
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))  # texture everywhere
    pda = PredictionDifference(clf, window=4, stride=2, padding=2, samples=4)
    # Fitted on texture-free images, a conditional sample is smooth: it removes the texture the
    # toy's class 0 counts, so windows in its quadrant lower the class evidence.
    pda.fit(smooth_images(64, SIZE, seed=1))
    maps = pda.explain(x, torch.zeros(2, dtype=torch.long))
    share = quadrant_share(maps)
    assert (share > 0.55).all(), share
    # outside the quadrant nothing changes the logits: relevance exactly 0 far from it
    assert torch.allclose(maps[:, SIZE // 2 + 4:, SIZE // 2 + 4:], torch.zeros(1), atol=1e-6)
    assert (maps[:, 2:12, 2:12] > 0).float().mean() > 0.9


class FirstPixelNet(nn.Module):
    """Two classes; class 0's logit is 4 * (red value of pixel (0, 0) in [0, 1]) - 2."""

    def forward(self, z: Tensor) -> Tensor:
        r = z[:, 0, 0, 0] * 0.229 + 0.485  # undo ImageNet normalization of the red channel
        logit = 4 * r - 2
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


def test_weight_of_evidence_on_a_hand_computed_case() -> None:
    # Window 1 at pixel (0, 0); the patch model fitted on constant images of red 0.25 has zero
    # variance (up to the ridge), so every sample is 0.25: p(c | x without pixel) = sigmoid(-1).
    clf = Classifier(FirstPixelNet())
    pda = PredictionDifference(clf, window=1, stride=1, padding=1, samples=3, sampling="marginal")
    pda.fit(torch.full((4, 3, 8, 8), 0.25))
    x = torch.full((1, 3, 8, 8), 0.25)
    x[0, 0, 0, 0] = 1.0  # logit 2: p = sigmoid(2)
    maps = pda.explain(x, torch.zeros(1, dtype=torch.long))

    def woe(p: float) -> float:
        q = (p * 100_000 + 1) / (100_000 + 2)
        return math.log2(q / (1 - q))

    p_clean, p_without = 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(1))
    assert maps[0, 0, 0].item() == pytest.approx(woe(p_clean) - woe(p_without), rel=1e-3)
    assert torch.allclose(maps[0].flatten()[1:], torch.zeros(1), atol=1e-5)  # no other pixel matters


def test_conditional_sampling_follows_the_frame() -> None:
    # Images that are constant per image (random level): the frame determines the patch exactly.
    levels = torch.rand(200, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    stats = PatchGaussian.fit(levels.expand(200, 3, 6, 6), side=5)
    from masksal.explainers.prediction_difference import _conditionals

    cond = _conditionals(stats, window=3, padding=1, marginal=False)
    frame = torch.full((3, 25), 0.8)
    centre = 4  # offset (1, 1): the centred window
    mean = cond.constant[centre] + (cond.regression[centre] @ frame[..., None])[..., 0]
    assert torch.allclose(mean, torch.full_like(mean, 0.8), atol=1e-3)
    assert float(cond.chol[centre].abs().max()) < 0.02  # almost no conditional spread
    marg = _conditionals(stats, window=3, padding=1, marginal=True)
    assert float(marg.regression.abs().max()) == 0.0
    assert abs(float(marg.constant[centre].mean()) - float(levels.mean())) < 1e-4


def make_classifier(dtype: torch.dtype = torch.float32) -> Classifier:
    torch.manual_seed(0)
    return create_classifier("small_resnet18", 5, width=8).to(dtype)


SMALL = {"window": 8, "stride": 8, "padding": 2, "samples": 2}


def test_registered_shapes_and_top1() -> None:
    clf = make_classifier()
    pda = create_explainer("pda", clf, **SMALL)
    assert isinstance(pda, PredictionDifference) and pda.name == "prediction_difference"
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    explanation = pda.explain_with_logits(x)
    assert explanation.maps.shape == (2, 32, 32) and explanation.maps.dtype == torch.float32
    assert torch.isfinite(explanation.maps).all()
    assert explanation.logits is not None and explanation.logits.shape == (2, 5)


def test_batch_equals_one_by_one_and_is_deterministic() -> None:
    clf = make_classifier(torch.float64)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.tensor([0, 4, 2])
    pda = PredictionDifference(clf, **SMALL)
    batched = pda.explain(x, t)
    singles = torch.cat([pda.explain(x[i:i + 1], t[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, singles)
    torch.testing.assert_close(PredictionDifference(clf, **SMALL, batch_size=5).explain(x, t), batched)
    assert not torch.allclose(PredictionDifference(clf, **SMALL, seed=1).explain(x, t), batched)


def test_classifier_left_untouched() -> None:
    clf = make_classifier()
    clf.train()
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    PredictionDifference(clf, **SMALL).explain(torch.rand(1, 3, 32, 32))
    assert all(torch.equal(v, clf.state_dict()[k]) for k, v in before.items())
    assert clf.training and all(p.grad is None for p in clf.parameters())


class CountingNet(nn.Module):
    """Two-class logits from the mean colour; counts the images it classifies."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def forward(self, z: Tensor) -> Tensor:
        self.seen += z.shape[0]
        m = z.mean(dim=(2, 3))
        return torch.stack([m[:, 0], m[:, 1]], dim=1)


@pytest.mark.parametrize(("size", "window", "stride", "samples"), [(32, 8, 8, 2), (10, 4, 3, 1), (20, 3, 2, 3)])
def test_cost_is_the_stated_number_of_forward_passes(size: int, window: int, stride: int, samples: int) -> None:
    net = CountingNet()
    pda = PredictionDifference(Classifier(net), window=window, stride=stride, padding=1, samples=samples)
    pda.explain(torch.rand(1, 3, size, size), 0)  # targets given: one clean forward for the evidence
    assert net.seen == forwards_per_map(size, size, window, stride, samples)
    assert forwards_per_map(64, 64, window=3, stride=1, samples=10) == 1 + 10 * 62 * 62


def test_default_geometry_scales_the_authors_settings() -> None:
    pda = PredictionDifference(make_classifier())
    assert pda._geometry(64, 64) == (3, 1)  # 10 and 2 px at 224 px
    assert pda._geometry(224, 224) == (10, 2)


def test_bad_options_and_mismatched_fit_are_refused() -> None:
    clf = make_classifier()
    with pytest.raises(ValueError, match="sampling"):
        PredictionDifference(clf, sampling="gibbs")
    with pytest.raises(ValueError, match="stride"):
        PredictionDifference(clf, window=2, stride=3).explain(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="at least"):
        PredictionDifference(clf, window=30, padding=2).explain(torch.rand(1, 3, 32, 32))
    pda = PredictionDifference(clf).fit(torch.rand(4, 3, 64, 64))  # 5-px frames
    with pytest.raises(ValueError, match="fit"):
        pda.explain(torch.rand(1, 3, 224, 224))  # needs 14-px frames
