"""FIDO: finds the region a hand-built model looks at with either objective and either infill,
computes log odds as defined, and behaves like every other explainer (batching, hygiene)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_explainers_toy import SIZE, TopLeftNet, quadrant_share

from masksal.classifiers import Classifier, create_classifier
from masksal.explainers import FIDO, create_explainer
from masksal.explainers.fido import log_odds
from masksal.inpainting import InpaintingNet, save_inpainter

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy() -> tuple[Classifier, torch.Tensor]:
    clf = Classifier(TopLeftNet(), taps=["layer4"])
    return clf, torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("objective", ["ssr", "sdr"])
@pytest.mark.parametrize("fill", ["mean", "learned"])
def test_finds_the_quadrant_the_toy_looks_at(objective: str, fill: str, toy: tuple[Classifier, torch.Tensor]) -> None:
    clf, x = toy
    # An untrained InpaintingNet fills holes smoothly (push-pull): it removes the toy's texture.
    infill = {"infill": "mean"} if fill == "mean" else {"inpainter": InpaintingNet((4, 8))}
    fido = FIDO(clf, objective=objective, iterations=100, samples=4, **infill)
    maps = fido.explain(x, torch.zeros(2, dtype=torch.long))
    assert maps.shape == (2, SIZE, SIZE) and float(maps.min()) >= 0 and float(maps.max()) <= 1
    share = quadrant_share(maps)
    assert (share > 0.55).all(), share


def test_log_odds_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, -1.0]])
    lo = log_odds(logits, torch.tensor([0, 2]))
    expected = torch.tensor([2.0 - torch.log(torch.tensor(2.0)).item(),
                             -1.0 - torch.logsumexp(torch.tensor([0.0, 1.0]), 0).item()])
    torch.testing.assert_close(lo, expected)


def make_classifier(dtype: torch.dtype = torch.float32) -> Classifier:
    torch.manual_seed(0)
    return create_classifier("small_resnet18", 5, width=8).to(dtype)


SMALL = {"iterations": 5, "samples": 2, "mask_cells": 8}


def test_registered_with_a_saved_inpainter(tmp_path: Path) -> None:
    path = save_inpainter(InpaintingNet((4, 8)), tmp_path / "inp.safetensors")
    clf = make_classifier()
    fido = create_explainer("fido", clf, inpainter=str(path), **SMALL)
    assert isinstance(fido, FIDO) and fido.infill == "learned"
    assert fido.options()["inpainter"] == str(path)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    maps = fido.explain(x)
    assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all()


def test_batch_equals_one_by_one() -> None:
    clf = make_classifier(torch.float64)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.tensor([0, 4, 2])
    fido = FIDO(clf, infill="blur", **SMALL)
    batched = fido.explain(x, t)
    singles = torch.cat([fido.explain(x[i:i + 1], t[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, singles)


def test_classifier_left_untouched_and_works_under_no_grad() -> None:
    clf = make_classifier()
    clf.train()
    stale = torch.full_like(clf.model.fc.weight, 7.0)
    clf.model.fc.weight.grad = stale
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    x = torch.rand(1, 3, 32, 32)
    expected = FIDO(clf, infill="mean", **SMALL).explain(x, 1)
    with torch.no_grad():
        maps = FIDO(clf, infill="mean", **SMALL).explain(x, 1)
    torch.testing.assert_close(maps, expected)
    assert all(torch.equal(v, clf.state_dict()[k]) for k, v in before.items())
    assert clf.training and clf.model.fc.weight.grad is stale
    assert all(p.grad is None for n, p in clf.named_parameters() if n != "model.fc.weight")


def test_bad_options_are_refused() -> None:
    clf = make_classifier()
    with pytest.raises(ValueError, match="needs a generative infill"):
        FIDO(clf)
    with pytest.raises(ValueError, match="needs inpainter"):
        FIDO(clf, infill="learned")
    with pytest.raises(ValueError, match="objective"):
        FIDO(clf, infill="mean", objective="both")
    with pytest.raises(ValueError, match="not found"):
        FIDO(clf, inpainter="missing.safetensors")
