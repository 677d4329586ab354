"""``masksal evaluate --metrics road,pointing_game`` on every dataset format, as a user runs it:
the built-in benchmark, ImageNet's XML boxes, CUB, the wsolevaluation layout with boxes and with
OpenImages masks, a labelled image folder and an unlabelled one (tiny real-format fixtures)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torchvision
from data_files import image
from test_data_cub import _cub
from test_data_imagenet import _imagenet
from test_data_wsol import _wsol_boxes, _wsol_masks
from typer.testing import CliRunner

from masksal.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def weight_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), path)
    return path


def _data(kind: str, root: Path) -> tuple[str, str, int, bool]:
    """(data spec, split, images in it, whether it has boxes or masks)."""
    if kind == "benchmark":
        return "benchmark", "test", 4, True
    if kind == "imagenet":
        _imagenet(root)
        return f"imagenet:{root}", "val", 2, True
    if kind == "cub":
        return f"cub:{_cub(root)}", "test", 2, True
    if kind == "wsol_boxes":
        meta, data = _wsol_boxes(root)
        return f"wsol:{meta}:{data}", "test", 2, True
    if kind == "wsol_masks":
        meta, data, _, _ = _wsol_masks(root)
        return f"wsol:{meta.parent}:{data}", "test", 2, True
    for i in range(3):
        for c in ("cat", "dog"):
            image(root / "photos" / c / f"{i}.png", 24, 30, seed=i)
    if kind == "imagefolder":
        return f"imagefolder:{root / 'photos'}", "val", 2, False  # one held-out image per class
    return f"folder:{root / 'photos' / 'cat'}", "all", 3, False


@pytest.mark.parametrize("kind", ["benchmark", "imagenet", "cub", "wsol_boxes", "wsol_masks", "imagefolder", "folder"])
def test_road_and_pointing_game_on_every_format(kind: str, weight_file: Path, tmp_path: Path) -> None:
    spec, split, n, annotated = _data(kind, tmp_path)
    out = tmp_path / "e.json"
    r = runner.invoke(app, ["evaluate", "centre", "--classifier", str(weight_file), "--arch", "resnet18",
                            "--num-classes", "1000", "--data", spec, "--split", split, "--image-size", "32",
                            "--num-images", "4", "--metrics", "road,pointing_game", "--val-split", "none",
                            "--out", str(out), "-q", "--threads", "1"])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["images"] == n
    for key in ("road_gap", "road_morf", "road_lerf", "road_gap_blurred"):
        assert math.isfinite(res[key]), key
    if annotated:
        assert 0.0 <= res["pointing_game"] <= 100.0 and "pointing_game" not in res.get("skipped", {})
    else:
        assert "pointing_game" not in res and "no boxes or masks" in res["skipped"]["pointing_game"]
        assert "pointing_game skipped" in r.output
