"""Tuning on a validation split (evaluation/tuning.py), intervals in evaluate / compare_methods /
format_table (evaluation/intervals.py, table.py)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from masksal.classifiers import Classifier, create_classifier
from masksal.evaluation import compare_methods, evaluate, format_table, tune
from masksal.evaluation.tuning import (
    TuningResult,
    configurations,
    format_spec,
    parse_grid,
    read_tuning,
    tuning_grid,
    write_tuning,
)
from masksal.explainers import available_explainers, create_explainer, parse_method_spec, register_explainer
from masksal.explainers.base import Explainer, Explanation
from masksal.types import collate

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 24


def samples(n: int, seed: int = 0) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        x0, y0 = (int(v) for v in torch.randint(0, SIZE // 2, (2,), generator=g))
        w = int(torch.randint(8, SIZE // 2, (1,), generator=g))  # wsolevaluation boxes are 1 px larger: IoU > 0.7
        m = torch.zeros(SIZE, SIZE, dtype=torch.uint8)
        m[y0:y0 + w, x0:x0 + w] = 1
        out.append({"image": torch.rand(3, SIZE, SIZE, generator=g), "label": i % 3, "id": f"img{i:03d}",
                    "boxes": torch.tensor([[x0, y0, x0 + w - 1, y0 + w - 1]], dtype=torch.float32), "mask": m})
    return out


def loader(n: int = 12, seed: int = 0, batch_size: int = 4) -> DataLoader:
    return DataLoader(samples(n, seed), batch_size=batch_size, collate_fn=collate)  # type: ignore[arg-type]


class ShiftedBox(Explainer):
    """A map that knows where the object is (it reads the image's own object mask, hidden in the
    last pixel row here via a lookup) and shifts it by ``shift`` pixels: 0 is perfect."""

    name = "shifted_box"
    TUNING_GRID = {"shift": [0, 6, 12], "scale": [1.0, 2.0]}
    objects: dict[int, Tensor] = {}

    def __init__(self, classifier: Any, shift: int = 6, scale: float = 1.0) -> None:
        super().__init__(classifier)
        self.shift, self.scale = shift, scale

    def _maps(self, images: Tensor, targets: Tensor | None) -> Explanation:
        maps = torch.stack([self.objects[hash(img.cpu().numpy().tobytes())] for img in images]).float()
        return Explanation(torch.roll(maps, self.shift, dims=2) * self.scale, None)


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    torch.manual_seed(0)
    return create_classifier("small_resnet18", 3, width=8).eval()


@pytest.fixture(scope="module")
def shifted_box() -> Iterator[None]:
    from masksal.explainers import registry

    saved = [dict(d) for d in (registry._FACTORIES, registry._ALIASES, registry._REQUIRES_CLASSIFIER)]
    register_explainer("shifted_box", ShiftedBox, replace=True)
    for seed in (0, 1):
        for s in samples(16, seed):
            ShiftedBox.objects[hash(s["image"].numpy().tobytes())] = s["mask"].clone()
    yield
    # The registry is process-wide: other test modules list every registered method.
    for d, before in zip((registry._FACTORIES, registry._ALIASES, registry._REQUIRES_CLASSIFIER), saved, strict=True):
        d.clear()
        d.update(before)


def test_configurations_start_with_the_authors_and_respect_the_budget() -> None:
    grid = {"a": [1, 2, 3], "b": [True, False]}
    configs = configurations(grid, {"a": 1, "b": True}, budget=10)
    assert configs[0] == {} and len(configs) == 6  # the authors' point (a=1, b=True) is not repeated
    assert {"a": 1, "b": True} not in configs[1:]
    assert configs[1:] == [{"a": 1, "b": False}, {"a": 2, "b": True}, {"a": 2, "b": False}, {"a": 3, "b": True},
                           {"a": 3, "b": False}]
    few = configurations(grid, {"a": 1, "b": True}, budget=3, seed=5)
    assert len(few) == 3 and few[0] == {} and all(c in configs for c in few)
    assert few == configurations(grid, {"a": 1, "b": True}, budget=3, seed=5)
    assert configurations({}, {}, budget=4) == [{}]
    with pytest.raises(ValueError, match="budget"):
        configurations(grid, {}, budget=0)
    # An authors' option given as a placeholder (Grad-CAM's layer=None, built as "layer4") is not
    # tried again under its resolved value.
    layers = {"layer": ["layer4", "layer3", "layer2"]}
    assert configurations(layers, {"layer": None}, budget=6, resolved={"layer": "layer4"}) == \
        [{}, {"layer": "layer3"}, {"layer": "layer2"}]


def test_tune_does_not_repeat_the_authors_resolved_layer(classifier: Classifier) -> None:
    res = tune("gradcam", classifier, loader(6), limit=6, progress=False, ci=0)
    assert [t.spec for t in res.trials] == ["gradcam", "gradcam:layer=layer3", "gradcam:layer=layer2"]


def test_grid_and_spec_text_round_trip() -> None:
    assert parse_grid("rise:grid_size=[4,7];p=0.5") == ("rise", {"grid_size": [4, 7], "p": [0.5]})
    assert parse_grid("ep:areas=[[0.1,0.2],0.3]")[1] == {"areas": [[0.1, 0.2], 0.3]}
    options = {"areas": [0.1, 0.2], "jitter": False, "layer": "layer3", "blur_sigma": None, "l1_coeff": 0.0784}
    assert parse_method_spec(format_spec("ep", options)) == ("ep", options)
    assert format_spec("gradcam", {}) == "gradcam"


def test_every_declared_grid_names_real_options(classifier: Classifier) -> None:
    declared = {name: tuning_grid(name) for name in available_explainers() if name not in ("masker", "shifted_box")}
    assert {"gradcam", "rise", "extremal_perturbation", "meaningful_perturbation", "ig", "smoothgrad",
            "prediction_difference"} <= {n for n, g in declared.items() if g}
    for name, grid in declared.items():
        for key, values in grid.items():
            for v in values:
                create_explainer(name, classifier, **{key: v})  # raises on an option the method lacks



def test_prediction_difference_grid_fills_the_budget_with_valid_geometries(classifier: Classifier) -> None:
    # With the stride the docs tune at (pda:stride=3), the authors' geometry and five others: each
    # a window/frame that fits a 64 px image, none a repeat of the authors'.
    configs = configurations(tuning_grid("pda"), {"window": None, "padding": None}, budget=6)
    assert len(configs) == 6 and configs[0] == {}
    geometries = set()
    for options in configs:
        pda = create_explainer("pda", classifier, stride=3, **options)
        geometries.add(pda._geometry(64, 64))  # raises on a window/frame that does not fit
    assert geometries == {(3, 1), (3, 2), (8, 1), (8, 2), (16, 1), (16, 2)}

def test_tune_picks_the_best_configuration_and_keeps_the_authors_on_ties(classifier: Classifier,
                                                                        shifted_box: None) -> None:
    res = tune("shifted_box", classifier, loader(12, seed=1), budget=6, limit=12, progress=False, ci=100)
    assert [t.spec for t in res.trials][0] == "shifted_box" and res.trials[0].authors
    assert len(res.trials) == 6 and res.images == 12
    # shift 0 finds every box; the scale of a map does not change MaxBoxAccV2, so scale=1.0 (the
    # authors') wins the tie and is not written.
    assert res.best_spec == "shifted_box:shift=0"
    best = next(t for t in res.trials if t.spec == res.best_spec)
    assert best.value == 100.0 and best.interval is not None and best.interval[0] <= 100.0 <= best.interval[1]
    assert next(t for t in res.trials if t.spec == "shifted_box:shift=0;scale=2.0").value == 100.0
    assert all(t.value < 100.0 for t in res.trials if t.options.get("shift", 6) != 0)
    # LE (lower is better) as the declared metric, and a grid given by hand.
    res_le = tune("shifted_box:scale=2.0", classifier, loader(12, seed=1), grid={"shift": [12, 0]}, metric="le",
                  progress=False, ci=0)
    assert res_le.best_spec == "shifted_box:scale=2.0;shift=0" and res_le.trials[0].interval is None
    with pytest.raises(ValueError, match="no option"):
        tune("shifted_box", classifier, loader(4), grid={"sigma": [1]}, progress=False)
    with pytest.raises(ValueError, match="selection metric"):
        tune("shifted_box", classifier, loader(4), metric="accuracy", progress=False)


def test_write_and_read_tuning(tmp_path: Any, classifier: Classifier, shifted_box: None) -> None:
    res = tune("shifted_box", classifier, loader(8, seed=1), grid={"shift": [0]}, limit=8, progress=False, ci=0)
    other = TuningResult(method="gradcam", authors_spec="gradcam", best_spec="gradcam:layer=layer3",
                         metric="maxboxacc_v2", higher_is_better=True, budget=6, images=8, grid={})
    write_tuning([res], tmp_path)
    paths = write_tuning([other], tmp_path)  # added, the first kept
    back = read_tuning(tmp_path)
    assert set(back) == {"shifted_box", "gradcam"} and back["shifted_box"].best_spec == "shifted_box:shift=0"
    assert back["shifted_box"].trials[1].value == res.trials[1].value
    assert paths["best"].read_text().splitlines() == ["shifted_box:shift=0", "gradcam:layer=layer3"]
    assert "**`shifted_box:shift=0`**" in paths["markdown"].read_text()
    with pytest.raises(ValueError, match="no tuning.json"):
        read_tuning(tmp_path / "nowhere")


def test_evaluate_with_intervals_same_with_metric_workers(classifier: Classifier) -> None:
    gradcam = create_explainer("gradcam", classifier)
    kw: dict[str, Any] = {"metrics": ("le_om_f1", "maxboxacc", "pxap", "sm"), "progress": False, "ci": 200,
                          "metric_options": {"maxboxacc": {"threshold_step": 0.01}}}
    res = evaluate(gradcam, classifier, loader(16), val_loader=loader(8, seed=1), metric_workers=0, **kw)
    assert res["ci_resamples"] == 200 and res["ci_over"] == "images"
    for key in ("top1", "le", "om", "f1", "maxboxacc", "maxboxacc_v2", "boxacc", "boxacc_v2", "pxap", "sm"):
        low, high = res["ci"][key]
        assert low <= high, key
        if key not in ("maxboxacc", "maxboxacc_v2"):  # a mean lies inside its percentile interval
            assert low <= res[key] <= high, key
    # Map-only metrics updated in a worker process: the same images, the same resamples.
    with_worker = evaluate(gradcam, classifier, loader(16, batch_size=3), val_loader=loader(8, seed=1),
                           metric_workers=1, **kw)
    for key in ("le", "maxboxacc_v2", "boxacc_v2", "pxap"):
        assert with_worker["ci"][key] == pytest.approx(res["ci"][key]), key
    assert "ci" not in evaluate(gradcam, classifier, loader(4), metrics=("le_om_f1",), progress=False)


def test_compare_methods_runs_and_table_marks_only_separated_best(classifier: Classifier, shifted_box: None) -> None:
    methods: list[tuple[str, Any]] = [
        ("box", create_explainer("shifted_box", classifier, shift=0)),
        ("box shifted (2 runs)", [create_explainer("shifted_box", classifier, shift=s) for s in (6, 12)]),
        ("random", create_explainer("random", classifier))]
    rows = compare_methods(methods, classifier, loader(16), metrics=("le_om_f1",), progress=False, ci=200)
    box, runs, rnd = rows
    assert box["le"] == 0.0 and box["ci"]["le"] == [0.0, 0.0]
    assert runs["runs"] == 2 and runs["ci_over"] == "seeds and images"
    assert runs["le"] == pytest.approx(sum(runs["run_values"]["le"]) / 2)
    table = format_table(rows)
    assert "| **0.00 [0.00, 0.00]** |" in table  # LE of the perfect box, apart from the others
    assert "bootstrap interval over the images (rows of several runs: over the runs and the images)" in table
    # Overlapping intervals: no bold.
    close = [{"explainer": "a", "le": 10.0, "ci": {"le": [5.0, 15.0]}},
             {"explainer": "b", "le": 12.0, "ci": {"le": [8.0, 16.0]}}]
    assert "**" not in format_table(close)
    apart = [dict(close[0]), {"explainer": "b", "le": 30.0, "ci": {"le": [20.0, 40.0]}}]
    assert "| **10.00 [5.00, 15.00]** |" in format_table(apart)
    assert not math.isnan(rows[0]["maps_per_second"])
