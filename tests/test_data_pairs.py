"""Tests of masksal.data.pairs: any ``(image, label)`` dataset as masksal samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from data_files import assert_one_line, image
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.datasets import ImageFolder

from masksal.data import ResizeCrop, from_pairs
from masksal.types import collate


class _Items(Dataset[Any]):
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


def _pixels(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_every_image_kind_gives_the_same_sample(tmp_path: Path) -> None:
    arr = _pixels(30, 40)
    expected = ResizeCrop(16).image(arr)
    as_uint8 = torch.from_numpy(arr).permute(2, 0, 1)
    kinds = [Image.fromarray(arr), as_uint8, arr, as_uint8.float() / 255]
    ds = from_pairs(_Items([(k, 1) for k in kinds]), size=16, num_classes=2)
    for i in range(3):  # PIL, uint8 tensor, numpy: the same bytes, the same resize
        sample = ds[i]
        assert torch.equal(sample["image"], expected), i
        assert sample["label"] == 1 and sample["boxes"].shape == (0, 4) and sample["orig_size"] == (30, 40)
    # A float tensor is resized in float (torchvision's antialiased bilinear, not PIL's): close.
    assert float((ds[3]["image"] - expected).abs().max()) < 1 / 255
    assert ds[0]["id"] == "_Items[0]"


def test_gray_and_rgba_inputs_become_rgb() -> None:
    gray = _pixels(12, 12)[:, :, 0]
    items = [(Image.fromarray(gray), 0), (torch.from_numpy(gray)[None], 0), (torch.from_numpy(gray), 0),
             (Image.fromarray(np.dstack([_pixels(12, 12), np.full((12, 12), 7, np.uint8)])), 0)]
    ds = from_pairs(_Items(items), size=12)
    for i in range(3):
        img = ds[i]["image"]
        assert img.shape == (3, 12, 12) and torch.equal(img[0], img[2])
        assert torch.equal(img[0], torch.from_numpy(gray).float() / 255)
    assert ds[3]["image"].shape == (3, 12, 12)


def test_tensor_dataset_labels_classes_and_mapping_items() -> None:
    pairs = TensorDataset(torch.rand(4, 3, 40, 30), torch.tensor([0, 1, 2, 1]))
    ds = from_pairs(pairs, size=8, num_classes=3)
    batch = collate([ds[i] for i in range(4)])
    assert batch.images.shape == (4, 3, 8, 8) and batch.labels.tolist() == [0, 1, 2, 1]
    assert ds.num_classes == 3 and ds.classes is None
    hf_style = from_pairs(_Items([{"image": torch.rand(3, 8, 8), "label": np.int64(1), "extra": 0}]), size=8)
    assert hf_style[0]["label"] == 1 and hf_style.num_classes is None


def test_torchvision_folder_with_a_broken_file_is_skipped_and_named(tmp_path: Path) -> None:
    for c in ("cat", "dog"):
        for i in range(2):
            image(tmp_path / c / f"{i}.png", 10, 14, seed=i)
    broken = tmp_path / "dog/1.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    ds = from_pairs(ImageFolder(str(tmp_path)), size=8)
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2
    assert ds[3] == {"error": ds[3]["error"], "id": str(broken)}
    assert ds[3]["error"].startswith(f"{broken}: ")
    batches = list(DataLoader(ds, batch_size=4, collate_fn=collate))
    assert len(batches[0]) == 3 and batches[0].labels.tolist() == [0, 0, 1]
    assert batches[0].skipped == [ds[3]["error"]] and batches[0].ids[0] == str(tmp_path / "cat/0.png")


@pytest.mark.parametrize(("item", "error", "message"), [
    ((torch.randn(3, 8, 8) * 2, 0), ValueError, "_Items[0]: image values span"),
    ((torch.full((3, 8, 8), float("nan")), 0), ValueError, "_Items[0]: image values span"),
    ((torch.rand(3, 8, 8), 5), ValueError, "_Items[0]: label 5 is not a class index (0..2)"),
    ((torch.rand(3, 8, 8), -1), ValueError, "_Items[0]: label -1 is not a class index"),
    ((torch.rand(3, 8, 8), 1.0), TypeError, "_Items[0]: label must be an int class index, got float"),
    ((torch.rand(3, 8, 8), torch.tensor([0, 1])), TypeError, "_Items[0]: label must be an int class index"),
    ((torch.rand(4, 8, 8), 0), ValueError, "_Items[0]: image must be (3, H, W), (1, H, W) or (H, W)"),
    (("cat.png", 0), TypeError, "_Items[0]: image must be a PIL image, a tensor or a numpy array, got str"),
    (torch.rand(3, 8, 8), TypeError, "_Items[0]: expected an (image, label) pair, got Tensor"),
    ({"img": 1}, TypeError, "_Items[0]: a mapping item needs 'image' and 'label' keys"),
])
def test_faults_of_the_users_data_are_one_line(item: Any, error: type[Exception], message: str) -> None:
    ds = from_pairs(_Items([item]), size=8, num_classes=3)
    with pytest.raises(error) as info:
        ds[0]
    assert_one_line(info, message)


def test_augmentation_option() -> None:
    pairs = TensorDataset(torch.rand(3, 3, 40, 30), torch.tensor([0, 1, 0]))
    plain = from_pairs(pairs, size=16)
    aug = from_pairs(pairs, size=16, augment=True, augment_seed=3)
    assert plain.augment is None and aug.augment is not None
    x = aug[1]["image"]
    assert x.shape == (3, 16, 16) and torch.equal(x, aug[1]["image"]) and not torch.equal(x, plain[1]["image"])
    aug.set_epoch(2)
    assert not torch.equal(x, aug[1]["image"])
