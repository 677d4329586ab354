"""Deletion / insertion against an independent re-implementation of RISE's ``CausalMetric``.

The reference below is written from the conventions of eclique/RISE (``evaluation.py`` and
``Evaluation.ipynb``), not from masksal: images in normalized space, a model ending in a softmax,
the top-1 class of the clean image tracked, ``step`` pixels a step over ``ceil(HW / step)``
steps, pixel order ``np.flip(np.argsort(map))``, deletion to zeros (normalized), insertion from a
blur whose kernel is a unit pixel smoothed by ``scipy.ndimage.gaussian_filter`` and applied by a
zero-padded ``conv2d``, AUC ``(sum - first / 2 - last / 2) / (len - 1)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from masksal.classifiers import Classifier
from masksal.metrics import DeletionInsertion
from masksal.types import Batch

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def reference_blur(klen: int = 11, nsig: float = 5.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """RISE's insertion substrate: a 3 x 3 diagonal bank of the smoothed-unit-pixel kernel, zero padded."""
    unit = np.zeros((klen, klen))
    unit[klen // 2, klen // 2] = 1.0
    k = gaussian_filter(unit, nsig)
    bank = np.zeros((3, 3, klen, klen))
    for c in range(3):
        bank[c, c] = k
    weight = torch.from_numpy(bank.astype("float32"))
    return lambda x: nn.functional.conv2d(x, weight, padding=klen // 2)


Substrate = Callable[[torch.Tensor], torch.Tensor]


def reference_causal_metric(model: nn.Module, mode: str, step: int, substrate_fn: Substrate, images: torch.Tensor,
                            explanations: np.ndarray, order: str = "numpy") -> np.ndarray:
    """Probability curves ``(n, steps + 1)`` of RISE's batch evaluation.

    ``order="numpy"`` is RISE's call; ``"stable"`` orders tied pixels in raster order.
    """
    n, c, h, w = images.shape
    hw = h * w
    with torch.no_grad():
        top = model(images).argmax(dim=-1)
    n_steps = (hw + step - 1) // step
    flat = explanations.reshape(n, hw)
    if order == "numpy":
        salient = np.flip(np.argsort(flat, axis=1), axis=-1)
    else:
        salient = np.argsort(-flat, axis=1, kind="stable")
    substrate = substrate_fn(images)
    start, finish = (images.clone(), substrate) if mode == "del" else (substrate, images.clone())
    start_px, finish_px = start.numpy().reshape(n, c, hw), finish.numpy().reshape(n, c, hw)
    scores = np.empty((n, n_steps + 1))
    for i in range(n_steps + 1):
        with torch.no_grad():
            probs = model(start)
        scores[:, i] = probs[torch.arange(n), top].numpy()
        for j in range(n):  # the numpy view writes through to `start`
            coords = salient[j, step * i:step * (i + 1)]
            start_px[j][:, coords] = finish_px[j][:, coords]
    return scores


def reference_auc(curve: np.ndarray) -> float:
    return float((curve.sum() - curve[0] / 2 - curve[-1] / 2) / (curve.shape[0] - 1))


class TinyNet(nn.Module):
    """A position-sensitive classifier on normalized images: patchify conv, 4 x 4 pool, linear."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 8, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.fc = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def edge_case_maps(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """Noise, a smooth field, a constant map, a 1-px bar, a 4-level map (ties), a blob; cycled to n."""
    smooth = nn.functional.interpolate(torch.rand(1, 1, 7, 7, generator=g), size=(size, size), mode="bilinear",
                                       align_corners=False)[0, 0]
    bar = torch.zeros(size, size)
    bar[:, size // 3] = 1.0
    blob = torch.zeros(size, size)
    blob[size // 4:size // 2, size // 2:3 * size // 4] = 1.0
    kinds = [torch.rand(size, size, generator=g), smooth, torch.full((size, size), 0.7), bar,
             torch.floor(4 * torch.rand(size, size, generator=g)) / 4, blob]
    return torch.stack([kinds[i % len(kinds)] for i in range(n)]).float()


def setup(n: int, size: int, seed: int = 0) -> tuple[nn.Module, Classifier, torch.Tensor, torch.Tensor, Batch]:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = TinyNet().eval()
    images = nn.functional.interpolate(torch.rand(n, 3, size // 8, size // 8, generator=g), size=(size, size),
                                       mode="bilinear", align_corners=False).clamp(0, 1)
    maps = edge_case_maps(n, size, g)
    normalized = (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    clf = Classifier(net, taps=["features"], mean=MEAN, std=STD)
    batch = Batch(images=images, labels=torch.zeros(n, dtype=torch.long), boxes=[torch.zeros(0, 4)] * n)
    return nn.Sequential(net, nn.Softmax(dim=1)).eval(), clf, normalized, maps, batch


def compare(metric: DeletionInsertion, model: nn.Module, step: int, normalized: torch.Tensor, maps: torch.Tensor,
            batch: Batch, order: str) -> None:
    deletion, insertion = metric.scores(maps, batch)
    ref_del = reference_causal_metric(model, "del", step, torch.zeros_like, normalized, maps.numpy(), order)
    ref_ins = reference_causal_metric(model, "ins", step, reference_blur(), normalized, maps.numpy(), order)
    assert deletion.numpy() == pytest.approx(ref_del, abs=1e-6)
    assert insertion.numpy() == pytest.approx(ref_ins, abs=1e-6)
    metric.update(maps, batch)
    out = metric.compute()
    assert out["deletion_auc"] == pytest.approx(np.mean([reference_auc(c) for c in ref_del]), abs=1e-6)
    assert out["insertion_auc"] == pytest.approx(np.mean([reference_auc(c) for c in ref_ins]), abs=1e-6)


def test_defaults_are_rises_published_evaluation_at_224_px() -> None:
    # RISE's notebook: CausalMetric(model, mode, 224 * 8, substrate) at 224 x 224, i.e. 28 steps.
    model, clf, normalized, maps, batch = setup(6, 224)
    compare(DeletionInsertion(clf), model, 224 * 8, normalized, maps, batch, order="stable")


def test_ties_numpy_is_rises_own_pixel_order() -> None:
    # With RISE's argsort the tied maps (constant, bar, 4 levels, blob) match too.
    model, clf, normalized, maps, batch = setup(6, 224, seed=1)
    compare(DeletionInsertion(clf, ties="numpy"), model, 224 * 8, normalized, maps, batch, order="numpy")


def test_without_ties_the_tie_order_does_not_matter() -> None:
    model, clf, normalized, _, batch = setup(2, 224, seed=2)
    noise = torch.rand(2, 224, 224, generator=torch.Generator().manual_seed(5))
    compare(DeletionInsertion(clf), model, 224 * 8, normalized, noise, batch, order="numpy")


def test_pixels_per_step_with_a_partial_last_step() -> None:
    # 48 x 48 = 2304 pixels, 100 a step: 24 steps, the last one moves 4 pixels yet spans 1/24.
    model, clf, normalized, maps, batch = setup(6, 48, seed=3)
    metric = DeletionInsertion(clf, pixels_per_step=100)
    assert metric.pixel_counts(2304).tolist()[-3:] == [2200, 2300, 2304]
    compare(metric, model, 100, normalized, maps, batch, order="stable")


def test_rise_steps_at_224_px_equal_evenly_spread_steps() -> None:
    metric = DeletionInsertion(Classifier(TinyNet(), taps=["fc"]))
    literal = DeletionInsertion(Classifier(TinyNet(), taps=["fc"]), pixels_per_step=224 * 8)
    assert metric.pixel_counts(224 * 224).tolist() == literal.pixel_counts(224 * 224).tolist()
    assert len(metric.pixel_counts(224 * 224)) == 29
