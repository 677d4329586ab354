"""Training for requested classes (training/masker_step.py, training/classifier.py): the targets a
conditional masker is trained on, the absent-class rule, multi-label (sigmoid) classifiers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from masksal.classifiers import Classifier, create_classifier
from masksal.config import ClassifierTrainConfig
from masksal.data import BenchmarkDataset
from masksal.training import fit_masker
from masksal.training.classifier import ClassifierTraining
from masksal.training.masker_step import sample_targets
from masksal.types import Batch, collate

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(labels: list[int], objects: list[list[int]] | None = None) -> Batch:
    n = len(labels)
    return Batch(images=torch.rand(n, 3, 8, 8), labels=torch.tensor(labels), boxes=[torch.zeros(0, 4)] * n,
                 object_labels=None if objects is None else [torch.tensor(o) for o in objects])


def test_targets_are_the_label_then_distinct_absent_classes() -> None:
    b = _batch([0, 3, 5, 5], objects=[[0, 1], [3, 2], [5, 4], [5, 0]])
    seen = torch.zeros(4, 6)
    for seed in range(300):
        t = sample_targets(b, 6, 3, torch.Generator().manual_seed(seed))
        assert t.shape == (4, 4) and t[:, 0].tolist() == [0, 3, 5, 5]
        for i, objects in enumerate(b.object_labels or []):
            absent = t[i, 1:].tolist()
            assert len(set(absent)) == 3 and not set(absent) & set(objects.tolist())  # never a present class
            seen[i, t[i, 1:]] += 1
    # Uniform among the 4 absent classes of each image: each drawn 3/4 of the time (225 of 300).
    expected = 300 * 3 / 4
    for i, objects in enumerate(b.object_labels or []):
        absent_classes = [c for c in range(6) if c not in objects.tolist()]
        assert all(abs(float(seen[i, c]) - expected) < 4 * math.sqrt(expected / 4) for c in absent_classes)
    again = sample_targets(b, 6, 3, torch.Generator().manual_seed(7))
    assert torch.equal(again, sample_targets(b, 6, 3, torch.Generator().manual_seed(7)))  # a function of the seed


def test_single_object_images_count_only_their_label_as_present() -> None:
    t = sample_targets(_batch([2, 2]), 3, 2, torch.Generator().manual_seed(0))
    assert sorted(t[0, 1:].tolist()) == [0, 1] and sorted(t[1, 1:].tolist()) == [0, 1]
    assert sample_targets(_batch([2]), 3, 0, torch.Generator()).tolist() == [[2]]
    with pytest.raises(ValueError, match="absent_targets"):
        sample_targets(_batch([2]), 3, 3, torch.Generator())


class _Colour(nn.Module):
    """A perfect classifier of coloured squares: class c = the square is drawn in channel c. Its
    tap ``feat`` is the image itself, so class evidence is local and exact."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Identity()
        self.offset = nn.Parameter(torch.zeros(()))  # a parameter, as every classifier has

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 10 * F.adaptive_max_pool2d(self.feat(z), 1).flatten(1) + self.offset


def _squares(n: int) -> list[tuple[torch.Tensor, int]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        x = torch.zeros(3, 32, 32)
        side = int(torch.randint(8, 15, (1,), generator=g))
        x0, y0 = (int(v) for v in torch.randint(0, 32 - side, (2,), generator=g))
        x[i % 3, y0:y0 + side, x0:x0 + side] = 1.0
        out.append((x, i % 3))
    return out


def test_absent_classes_get_the_empty_mask() -> None:
    # The rule: a class that is not among an image's labels gets the empty mask. On squares whose
    # class a perfect classifier reads from their colour, the masker learns the square for its
    # own class and nothing for the others; never shown absent classes, it marks the square for them too.
    clf = Classifier(_Colour(), taps=["feat"], mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    data = _squares(96)
    x, y = torch.stack([d[0] for d in data[:12]]), torch.tensor([d[1] for d in data[:12]])
    square = x.amax(1) > 0
    common = {"steps": 60, "batch_size": 16, "progress": False, "hidden": 8, "conditional": True,
              "masked_out": "target", "masker_lr": 1e-2}
    masker = fit_masker(clf, data, **common)  # type: ignore[arg-type]
    present, absent = masker.explain(x, y), masker.explain(x, (y + 1) % 3)
    assert float(present[square].mean()) > 0.9 and float(present[~square].mean()) < 0.1
    assert float(absent.mean()) < 0.1 and float(absent[square].mean()) < 0.1
    untold = fit_masker(clf, data, absent_targets=0, **common)  # type: ignore[arg-type]
    assert float(untold.explain(x, (y + 1) % 3)[square].mean()) > 0.5


def test_multilabel_classifier_step_is_binary_cross_entropy_on_every_object() -> None:
    torch.manual_seed(0)
    clf = create_classifier("small_resnet18", 20, width=8)
    data = BenchmarkDataset("train", n=4, size=32, objects=2, cache_dir=None)
    batch = collate([data[i] for i in range(8)])
    training = ClassifierTraining(clf, ClassifierTrainConfig(multilabel=True, lr=0.0), 4, torch.device("cpu"))
    clf.train()
    with torch.no_grad():
        logits = clf(batch.images)
    positives = torch.zeros(8, 20)
    for i, objects in enumerate(batch.object_labels or []):
        positives[i, objects] = 1.0
    rec = training.step(batch, 0)  # lr 0: the step leaves the weights, so the loss is the one of `logits`
    assert positives.sum(1).tolist() == [2.0] * 8
    # Per image, the sum over the 20 classes of the binary cross-entropy; then the mean over images.
    by_hand = -(positives * F.logsigmoid(logits) + (1 - positives) * F.logsigmoid(-logits)).sum(1).mean()
    assert rec["loss"] == pytest.approx(float(by_hand), rel=1e-4)
    hits = positives.gather(1, logits.argmax(1, keepdim=True))[:, 0]
    assert rec["train_accuracy"] == pytest.approx(100 * float(hits.mean()))


def test_multilabel_conditional_masker_trains_alongside_its_classifier() -> None:
    data = BenchmarkDataset("train", n=16, size=32, objects=2, cache_dir=None)
    clf = create_classifier("small_resnet18", 20, width=8)
    masker = fit_masker(clf, data, steps=2, batch_size=8, progress=False, hidden=8, mode="ca", conditional=True,
                        multilabel=True, masked_out="target")
    x = torch.stack([data[i]["image"] for i in range(2)])
    pair = [int(v) for v in data[0]["object_labels"]]
    maps = masker.explain_targets(x[:1], pair)
    assert maps.shape == (1, 2, 32, 32) and torch.isfinite(maps).all()


def test_the_clean_gate_on_images_of_several_objects() -> None:
    from masksal.training.masker_step import seen_clean

    logits = torch.tensor([[3.0, 2.0, 0.0], [3.0, 2.0, 0.0], [3.0, 2.0, 0.0]])
    single = _batch([1, 0, 2])
    assert seen_clean(logits, single).tolist() == [False, True, False]  # top-1 only
    pairs = _batch([1, 0, 2], objects=[[1, 2], [0, 2], [2, 1]])
    assert seen_clean(logits, pairs).tolist() == [True, True, False]  # among the top 2 on two-object images
    assert seen_clean(torch.tensor([[-1.0, 0.5, 4.0]]), _batch([1], [[1, 2]]), multilabel=True).tolist() == [True]
