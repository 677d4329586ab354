"""Each method must find the one region a hand-built model looks at; the model-blind baselines must not."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from masksal.classifiers import Classifier
from masksal.explainers import create_explainer

SIZE = 32


class TopLeftNet(nn.Module):
    """Logits from the top-left quadrant only.

    The input is zeroed outside the quadrant, then ``layer4`` (a 3x3 conv: a Laplacian, which
    responds to fine texture, and a box filter) and a mean pool feed a linear head whose class 0
    scores the amount of texture. Blurring or greying the quadrant lowers class 0; nothing outside
    the quadrant changes any logit. The output is moderately confident (class-0 probability about
    0.6), so probability-based methods are not saturated.
    """

    def __init__(self) -> None:
        super().__init__()
        self.layer4 = nn.Conv2d(3, 2, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2, 3)
        with torch.no_grad():
            self.layer4.weight.zero_()
            self.layer4.weight[0] = torch.tensor([[0.0, -1, 0], [-1, 4, -1], [0, -1, 0]])
            self.layer4.weight[1] = 1 / 9
            self.fc.weight.copy_(torch.tensor([[2.0, 0], [0, 1], [0, 0]]))
            self.fc.bias.copy_(torch.tensor([-6.2, 0, 0]))

    def forward(self, z: Tensor) -> Tensor:
        h, w = z.shape[-2:]
        quadrant = torch.zeros(1, 1, h, w, dtype=z.dtype, device=z.device)
        quadrant[..., : h // 2, : w // 2] = 1
        f = self.relu(self.layer4(z * quadrant))
        return self.fc(f.mean(dim=(2, 3)) * 4)


# Enough masks / iterations for the toy to converge, still fast. EP: the toy is not
# flip-invariant, so no jitter, and a larger step makes up for fewer iterations.
SETTINGS: dict[str, dict[str, Any]] = {
    "rise": {"n_masks": 4000},  # the paper's count
    "ig": {"steps": 16},
    "smoothgrad": {"n_samples": 8},
    "meaningful_perturbation": {"iterations": 50},
    "extremal_perturbation": {"iterations": 100, "lr": 0.1, "jitter": False},
}
MODEL_BASED = ["gradcam", "saliency", "ig", "smoothgrad", "guided_backprop", "rise",
               "meaningful_perturbation", "extremal_perturbation", "pytorch_grad_cam"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy() -> tuple[Classifier, Tensor, Tensor]:
    clf = Classifier(TopLeftNet(), taps=["layer4"])
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))  # texture everywhere
    with torch.no_grad():
        assert clf(x).argmax(1).tolist() == [0, 0]
    return clf, x, torch.zeros(2, dtype=torch.long)


def quadrant_share(maps: Tensor) -> Tensor:
    """Per image, the share of the map's mass (above its minimum) in the top-left quadrant."""
    m = maps - maps.amin(dim=(1, 2), keepdim=True)
    return m[:, : SIZE // 2, : SIZE // 2].sum(dim=(1, 2)) / m.sum(dim=(1, 2))


def test_toy_depends_on_the_quadrant_only(toy: tuple[Classifier, Tensor, Tensor]) -> None:
    clf, x, _ = toy
    y = x.clone()
    y[..., SIZE // 2:, :] = torch.rand_like(y[..., SIZE // 2:, :])
    y[..., :, SIZE // 2:] = 0.5
    with torch.no_grad():
        torch.testing.assert_close(clf(x), clf(y))
        p0 = clf(x).softmax(dim=1)[:, 0]
    assert ((p0 > 0.3) & (p0 < 0.9)).all(), p0


@pytest.mark.parametrize("name", MODEL_BASED)
def test_method_puts_most_mass_where_the_model_looks(name: str, toy: tuple[Classifier, Tensor, Tensor]) -> None:
    clf, x, targets = toy
    maps = create_explainer(name, clf, **SETTINGS.get(name, {})).explain(x, targets)
    share = quadrant_share(maps)
    assert (share > 0.55).all(), share  # a quarter of the image holds most of the mass


@pytest.mark.parametrize("name", ["centre", "random"])
def test_model_blind_baselines_fail_the_same_check(name: str, toy: tuple[Classifier, Tensor, Tensor]) -> None:
    clf, x, targets = toy
    share = quadrant_share(create_explainer(name, clf).explain(x, targets))
    assert (share < 0.35).all(), share  # about a quarter: what a map that ignores the model gets
