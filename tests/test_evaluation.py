"""evaluate() end to end on a tiny classifier and a tiny dataset made here; format_table()."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from masksal.classifiers import Classifier, create_classifier
from masksal.evaluation import evaluate, format_table
from masksal.explainers import create_explainer
from masksal.explainers.base import SupportsExplain
from masksal.metrics import LocalizationError, MaxBoxAccuracy
from masksal.types import collate

SIZE = 32


class Centre:
    """A centred Gaussian, whatever the image."""

    name = "centre"

    def __init__(self) -> None:
        self.calls: list[torch.Tensor | None] = []

    def explain(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append(targets)
        b, _, h, w = images.shape
        y = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
        x = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
        g = torch.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * (h / 6) ** 2))
        return g.expand(b, h, w).clone()


def samples(n: int, *, boxes: bool = True, masks: bool = True, seed: int = 0) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        x0, y0 = (int(v) for v in torch.randint(0, SIZE // 2, (2,), generator=g))
        w = int(torch.randint(6, SIZE // 2, (1,), generator=g))
        s: dict[str, Any] = {"image": torch.rand(3, SIZE, SIZE, generator=g), "label": i % 3, "id": f"img{i}"}
        if boxes:
            s["boxes"] = torch.tensor([[x0, y0, x0 + w - 1, y0 + w - 1]], dtype=torch.float32)
        if masks:
            m = torch.zeros(SIZE, SIZE, dtype=torch.uint8)
            m[y0:y0 + w, x0:x0 + w] = 1
            m[0, :] = 255  # an ignore row
            s["mask"] = m
        out.append(s)
    return out


def loader(n: int = 10, **kw: Any) -> DataLoader:
    return DataLoader(samples(n, **kw), batch_size=4, collate_fn=collate)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    torch.manual_seed(0)
    return create_classifier("small_resnet18", 3, width=8)


FAST = {"deletion_insertion": {"steps": 4}}


def test_evaluate_end_to_end(classifier: Classifier) -> None:
    explainer = Centre()
    assert isinstance(explainer, SupportsExplain)
    classifier.train()
    result = evaluate(explainer, classifier, loader(10), val_loader=loader(6, seed=1), progress=False,
                      metric_options=FAST)
    assert classifier.training  # mode restored
    assert result["explainer"] == "centre" and result["images"] == 10
    assert result["skipped"] == {}
    for key in ("top1", "le", "om", "gt_known_loc", "top1_loc", "f1", "maxboxacc", "maxboxacc_v2", "pxap",
                "boxacc", "boxacc_v2", "sm", "deletion_auc", "insertion_auc", "maps_per_second"):
        assert math.isfinite(result[key]), key
    assert result["le"] + result["gt_known_loc"] == pytest.approx(100.0)
    assert 0 <= result["pxap"] <= 100 and 0 <= result["deletion_auc"] <= 1
    # The oracle threshold is at least as good as the one chosen on the validation split.
    assert result["maxboxacc"] >= result["boxacc"]
    # Maps were explained for the true labels.
    assert explainer.calls[0] is not None and explainer.calls[0].tolist() == [0, 1, 2, 0]


def test_evaluate_matches_the_metrics_run_by_hand(classifier: Classifier) -> None:
    result = evaluate(Centre(), classifier, loader(10), metrics=("le_om_f1", "maxboxacc"), progress=False)
    le, box = LocalizationError(), MaxBoxAccuracy()
    correct = 0
    classifier.eval()
    for batch in loader(10):
        with torch.no_grad():
            pred = classifier(batch.images).argmax(dim=1)
        correct += int((pred == batch.labels).sum())
        maps = Centre().explain(batch.images, batch.labels)
        le.update(maps, batch, predictions=pred)
        box.update(maps, batch)
    assert result["top1"] == pytest.approx(100 * correct / 10)
    for k, v in {**le.compute(), **box.compute()}.items():
        assert result[k] == pytest.approx(v), k
    assert "pxap" not in result and "sm" not in result


def test_limit_stops_mid_batch(classifier: Classifier) -> None:
    result = evaluate(Centre(), classifier, loader(10), metrics=("le_om_f1",), limit=5, progress=False)
    assert result["images"] == 5


def test_metrics_needing_annotations_are_skipped_with_a_reason(classifier: Classifier) -> None:
    result = evaluate(Centre(), classifier, loader(6, masks=False), metrics=("le_om_f1", "pxap"), progress=False)
    assert result["skipped"] == {"pxap": "the dataset has no pixel masks"}
    assert "le" in result and "pxap" not in result
    result = evaluate(Centre(), classifier, loader(6, boxes=False, masks=False), progress=False,
                      metric_options=FAST, val_loader=loader(4, boxes=False, masks=False))
    assert set(result["skipped"]) == {"le_om_f1", "maxboxacc", "pxap", "boxacc (val threshold)"}
    assert math.isfinite(result["sm"]) and math.isfinite(result["insertion_auc"])
    assert "skipped" in format_table(result)


def test_unknown_metric_raises(classifier: Classifier) -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(Centre(), classifier, loader(2), metrics=("iou",), progress=False)


def test_progress_bar_shows_rate(classifier: Classifier, capsys: pytest.CaptureFixture[str]) -> None:
    evaluate(Centre(), classifier, loader(4), metrics=("le_om_f1",), progress=True)
    err = capsys.readouterr().err
    assert "centre" in err and "img" in err


def test_format_table() -> None:
    rows = [{"explainer": "masker", "images": 10, "le": 20.0, "maxboxacc": 75.5, "skipped": {}},
            {"explainer": "centre", "images": 10, "le": 50.25, "pxap": float("nan"),
             "skipped": {"sm": "not requested"}}]
    table = format_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| Method | Images | LE (%)")
    assert "MaxBoxAcc (oracle thr., %)" in lines[0] and "PxAP (%)" in lines[0]
    assert lines[1].startswith("|---|")
    assert lines[2] == "| masker | 10 | 20.00 | 75.50 | - |"
    assert lines[3] == "| centre | 10 | 50.25 | - | - |"
    assert "- centre: sm skipped (not requested)" in table
    assert format_table(rows[0]).count("\n| masker") == 1


def test_metrics_in_worker_processes_give_the_same_numbers() -> None:
    from masksal.data.benchmark import BenchmarkDataset

    torch.manual_seed(0)
    classifier = create_classifier("small_resnet18", 10, width=8).eval()
    ds = BenchmarkDataset("test", n=24, size=32, families=("digits",))
    loader = DataLoader(ds, batch_size=8, collate_fn=collate)
    explainer = create_explainer("gradcam", classifier)
    names = ("le_om_f1", "maxboxacc", "pxap", "pointing_game")
    here = evaluate(explainer, classifier, loader, metrics=names, progress=False, metric_workers=0)
    away = evaluate(explainer, classifier, loader, metrics=names, progress=False, metric_workers=2)
    for key in ("images", "le", "om", "maxboxacc", "maxboxacc_v2", "pxap", "pointing_game"):
        assert away[key] == here[key], key
    assert away["f1"] == pytest.approx(here["f1"], rel=1e-12)  # a sum in another order
