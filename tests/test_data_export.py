"""Tests of the wsolevaluation export (masksal.data.export): round trips through WSOLDataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from masksal.data import BenchmarkDataset, WSOLDataset, export_wsol, load_dataset


class _Samples(Dataset[dict[str, Any]]):
    """A tiny in-memory dataset of masksal samples."""

    def __init__(self, samples: list[dict[str, Any]], classes: list[str] | None = None) -> None:
        self.samples = samples
        self.classes = classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.samples[i]


def _sample(i: int, size: int, masks: bool) -> dict[str, Any]:
    rng = np.random.default_rng(i)
    image = torch.from_numpy(rng.integers(0, 256, (3, size, size), dtype=np.uint8)).float() / 255
    boxes = torch.tensor([[1, 2, 5, 7], [3, 3, size - 1, size - 2]][: 1 + i % 2], dtype=torch.float32)
    sample: dict[str, Any] = {"image": image, "label": i % 3, "boxes": boxes, "id": f"img/{i}.jpg"}
    if masks:
        mask = torch.zeros(size, size, dtype=torch.uint8)
        mask[2:8, 1:6] = 1
        mask[0, :] = 255
        mask[9 + i, 3] = 255
        sample["mask"] = mask
    return sample


def _assert_same(a: Dataset[dict[str, Any]], b: Dataset[dict[str, Any]], n: int) -> None:
    for i in range(n):
        x, y = a[i], b[i]
        assert torch.equal(x["image"], y["image"]), i  # PNG is lossless
        assert x["label"] == y["label"]
        assert torch.equal(torch.as_tensor(x["boxes"]).float(), y["boxes"])
        if "mask" in x:
            assert torch.equal(x["mask"], y["mask"])
        else:
            assert "mask" not in y


def test_export_round_trip_with_masks(tmp_path: Path) -> None:
    src = _Samples([_sample(i, 16, masks=True) for i in range(5)], classes=["cat", "dog", "owl"])
    out = export_wsol(src, tmp_path, name="tiny", split="val")
    assert out.num_images == 5 and out.has_masks and out.errors == []
    assert out.metadata_dir == tmp_path / "metadata/tiny/val"
    back = load_dataset(out.spec, split="val", size=16)
    assert isinstance(back, WSOLDataset) and len(back) == 5 and back.has_masks
    assert back.classes == ["cat", "dog", "owl"] and back.num_classes == 3
    _assert_same(src, back, 5)
    # The files follow the OpenImages format of wsolevaluation.
    loc = (out.metadata_dir / "localization.txt").read_text().splitlines()
    assert loc[0] == "val/0/img__0.png,val/0/img__0_mask.png,val/0/img__0_ignore.png"
    assert (out.metadata_dir / "image_ids.txt").read_text().splitlines()[1] == "val/1/img__1.png"
    assert (out.metadata_dir / "image_sizes.txt").read_text().splitlines()[0] == "val/0/img__0.png,16,16"
    assert Image.open(out.image_root / "val/0/img__0_mask.png").mode == "L"


def test_export_round_trip_boxes_only_and_skipped_errors(tmp_path: Path) -> None:
    samples = [_sample(i, 12, masks=False) for i in range(4)]
    samples.insert(2, {"error": "/data/broken.jpg: cannot identify image file", "id": "broken"})
    out = export_wsol(_Samples(samples), tmp_path)
    assert out.num_images == 4 and not out.has_masks
    assert out.errors == ["/data/broken.jpg: cannot identify image file"]
    loc = (out.metadata_dir / "localization.txt").read_text().splitlines()
    assert loc[:3] == ["test/0/img__0.png,1,2,5,7", "test/1/img__1.png,1,2,5,7", "test/1/img__1.png,3,3,11,10"]
    labels = (out.metadata_dir / "class_labels.txt").read_text().splitlines()
    assert labels == ["test/0/img__0.png,0", "test/1/img__1.png,1", "test/2/img__2.png,2", "test/0/img__3.png,0"]
    back = load_dataset(out.spec, resize="none")
    _assert_same(_Samples([s for s in samples if "error" not in s]), back, 4)


def test_export_round_trip_of_the_builtin_benchmark(tmp_path: Path) -> None:
    bench = load_dataset("benchmark", split="test", n=6, size=32)
    assert isinstance(bench, BenchmarkDataset)
    out = export_wsol(bench, tmp_path)
    back = load_dataset(out.spec, split="test", size=32)
    assert len(back) == 6 and back.num_classes == bench.num_classes
    assert back.classes == list(bench.classes)
    _assert_same(bench, back, 6)
