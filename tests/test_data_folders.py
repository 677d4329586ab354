"""Tests of image folders (masksal.data.folders): unlabelled ``folder:`` and class-per-subfolder
``imagefolder:`` with its splits and augmentation.

Every fixture is a handful of tiny JPEG/PNG files written to tmp_path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data_files import assert_one_line, image, write
from torchvision.datasets import ImageFolder

from masksal.data import ClassFolderDataset, MetadataError, UnlabelledFolderDataset, load_dataset
from masksal.types import collate


def test_folder_recursion_order_and_original_size(tmp_path: Path) -> None:
    image(tmp_path / "b.png", 10, 20)
    image(tmp_path / "a/z.jpg", 8, 8)
    image(tmp_path / "a/b/c.PNG", 9, 7)
    image(tmp_path / "A.jpeg", 6, 6)
    image(tmp_path / ".hidden/x.png", 5, 5)
    image(tmp_path / "._resource_fork.png", 5, 5)
    write(tmp_path / "notes.txt", "not an image")
    ds = load_dataset(f"folder:{tmp_path}", split="whatever", size=4)
    assert isinstance(ds, UnlabelledFolderDataset)
    assert ds.ids == ["A.jpeg", "a/b/c.PNG", "a/z.jpg", "b.png"]
    assert ds.num_classes is None and ds.classes is None
    sample = ds[3]
    assert sample["orig_size"] == (10, 20) and sample["label"] == -1
    assert sample["image"].shape == (3, 4, 4) and sample["boxes"].shape == (0, 4)
    full = UnlabelledFolderDataset(tmp_path, resize="none")
    assert full[1]["image"].shape == (3, 9, 7)
    with pytest.raises(MetadataError, match="missing image folder"):
        UnlabelledFolderDataset(tmp_path / "a/b/c.PNG")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MetadataError, match="no images"):
        UnlabelledFolderDataset(tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown dataset spec"):
        load_dataset(f"images:{tmp_path}")




def test_folder_is_for_explanation_only(tmp_path: Path) -> None:
    image(tmp_path / "a.png", 8, 8)
    for kwargs in ({"split": "train"}, {"split": "test", "require_labels": True}):
        with pytest.raises(ValueError) as info:
            load_dataset(f"folder:{tmp_path}", **kwargs)  # type: ignore[arg-type]
        assert_one_line(info, f"folder:{tmp_path} has no labels and is for explanation only")
        assert f"imagefolder:{tmp_path}" in str(info.value)
    ds = load_dataset(f"folder:{tmp_path}", split="test", size=8)
    assert ds.num_classes is None and ds[0]["label"] == -1


def _classes(root: Path, per_class: int = 8, classes: tuple[str, ...] = ("cat", "dog", "owl")) -> None:
    for k, c in enumerate(classes):
        for i in range(per_class):
            suffix = ".jpg" if i % 2 else ".png"
            image(root / c / f"img{i}{suffix}", 20 + i, 24, seed=10 * k + i)


def test_imagefolder_classes_and_order_match_torchvision(tmp_path: Path) -> None:
    _classes(tmp_path, per_class=3)
    image(tmp_path / "dog/nested/deeper.jpg", 10, 10)  # nested files belong to their class
    ds = load_dataset(f"imagefolder:{tmp_path}", split="all", size=16)
    assert isinstance(ds, ClassFolderDataset) and ds.layout == "held-out"
    tv = ImageFolder(str(tmp_path))
    assert ds.classes == tv.classes == ["cat", "dog", "owl"] and ds.num_classes == 3
    assert ds.class_to_idx == tv.class_to_idx
    assert [str(r.path) for r in ds.records] == [p for p, _ in tv.samples]
    assert ds.labels == [label for _, label in tv.samples]
    sample = ds[3]
    assert sample["id"] == "dog/img0.png" and sample["label"] == 1
    assert sample["image"].shape == (3, 16, 16) and sample["boxes"].shape == (0, 4)
    assert sample["orig_size"] == (20, 24)
    # Hidden folders (torchvision would make them classes) and hidden files are skipped.
    image(tmp_path / ".ipynb_checkpoints/x.png", 8, 8)
    image(tmp_path / "cat/._img0.png", 8, 8)
    again = ClassFolderDataset(tmp_path, "all")
    assert again.classes == ["cat", "dog", "owl"] and len(again) == len(ds)


def test_imagefolder_held_out_split_is_stratified_deterministic_and_disjoint(tmp_path: Path) -> None:
    _classes(tmp_path)
    train = ClassFolderDataset(tmp_path, "train", size=8)
    val = ClassFolderDataset(tmp_path, "val", size=8)
    test = ClassFolderDataset(tmp_path, "test", size=8)
    everything = ClassFolderDataset(tmp_path, "all", size=8)
    assert (len(train), len(val), len(everything)) == (21, 3, 24)  # round(0.1 * 8) = 1 per class
    assert sorted(val.labels) == [0, 1, 2] and val.ids == test.ids
    assert set(train.ids).isdisjoint(val.ids) and sorted(train.ids + val.ids) == sorted(everything.ids)
    assert ClassFolderDataset(tmp_path, "val").ids == val.ids  # deterministic
    quarter = ClassFolderDataset(tmp_path, "val", val_fraction=0.25)
    assert len(quarter) == 6 and sorted(quarter.labels) == [0, 0, 1, 1, 2, 2]
    others = {tuple(ClassFolderDataset(tmp_path, "val", split_seed=s).ids) for s in range(6)}
    assert len(others) > 1  # the seed picks other images
    # A class of one image keeps it for training; a class of two gives one to the hold-out.
    _classes(tmp_path / "small", per_class=1, classes=("a",))
    _classes(tmp_path / "small", per_class=2, classes=("b",))
    assert ClassFolderDataset(tmp_path / "small", "val").ids[0].startswith("b/")
    assert len(ClassFolderDataset(tmp_path / "small", "train")) == 2
    with pytest.raises(MetadataError) as info:
        ClassFolderDataset(tmp_path, "val", val_fraction=0.0)
    assert_one_line(info, f"{tmp_path}: no held-out images for split 'val'")


def test_imagefolder_train_and_val_folders(tmp_path: Path) -> None:
    _classes(tmp_path / "train", per_class=2)
    _classes(tmp_path / "val", per_class=1, classes=("dog", "owl"))  # a class may be absent
    train = load_dataset(f"imagefolder:{tmp_path}", split="train", size=8)
    val = load_dataset(f"imagefolder:{tmp_path}", split="val", size=8)
    assert isinstance(train, ClassFolderDataset) and train.layout == "split-folders"
    assert len(train) == 6 and train.ids[0] == "train/cat/img0.png"
    # Labels of the held-out folder follow the training classes, not its own folder list.
    assert val.ids == ["val/dog/img0.png", "val/owl/img0.png"] and val.labels == [1, 2]
    assert load_dataset(f"imagefolder:{tmp_path}", split="test").ids == val.ids  # test/ absent: val/
    assert len(load_dataset(f"imagefolder:{tmp_path}", split="all")) == 8
    image(tmp_path / "val/emu/x.png", 8, 8)
    with pytest.raises(MetadataError) as info:
        load_dataset(f"imagefolder:{tmp_path}", split="val")
    assert_one_line(info, f"{tmp_path / 'val/emu'}: class 'emu' is not a class of {tmp_path / 'train'}")


def test_imagefolder_errors_are_one_line(tmp_path: Path) -> None:
    image(tmp_path / "flat/a.png", 8, 8)
    with pytest.raises(MetadataError) as info:
        load_dataset(f"imagefolder:{tmp_path / 'flat'}", split="train")
    assert_one_line(info, f"{tmp_path / 'flat'}: no class subfolders")
    assert f"folder:{tmp_path / 'flat'}" in str(info.value)
    _classes(tmp_path / "c", per_class=2)
    (tmp_path / "c/emu").mkdir()
    write(tmp_path / "c/emu/readme.txt", "no images here")
    with pytest.raises(MetadataError) as info:
        ClassFolderDataset(tmp_path / "c")
    assert_one_line(info, f"{tmp_path / 'c/emu'}: class folder has no images")
    with pytest.raises(MetadataError, match="missing image folder"):
        ClassFolderDataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split must be one of"):
        ClassFolderDataset(tmp_path / "flat", "validation")
    with pytest.raises(ValueError, match="val_fraction"):
        ClassFolderDataset(tmp_path / "flat", val_fraction=1.0)


def test_imagefolder_augmentation_rule_and_determinism(tmp_path: Path) -> None:
    _classes(tmp_path)
    train = ClassFolderDataset(tmp_path, "train", size=16)
    assert train.augment is not None  # small training split: on by default
    assert ClassFolderDataset(tmp_path, "val", size=16).augment is None
    assert ClassFolderDataset(tmp_path, "train", size=16, augment=False).augment is None
    plain = ClassFolderDataset(tmp_path, "train", size=16, augment=False)
    a, b = train[0]["image"], train[0]["image"]
    assert torch.equal(a, b) and a.shape == (3, 16, 16) and 0.0 <= float(a.min()) <= float(a.max()) <= 1.0
    assert not torch.equal(a, plain[0]["image"])
    torch.manual_seed(0)
    state = torch.get_rng_state()
    train.set_epoch(1)
    c = train[0]["image"]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG stream is untouched
    assert not torch.equal(a, c)  # another epoch, another crop
    same = ClassFolderDataset(tmp_path, "train", size=16)
    same.set_epoch(1)
    assert torch.equal(same[0]["image"], c)
    assert not torch.equal(ClassFolderDataset(tmp_path, "train", size=16, augment_seed=1)[0]["image"], a)
    # Batches of augmented images collate like any other.
    batch = collate([train[i] for i in range(5)])
    assert batch.images.shape == (5, 3, 16, 16) and batch.skipped == []
    with pytest.raises(ValueError, match="augmentation needs an output size"):
        ClassFolderDataset(tmp_path, "train", resize="none", augment=True)
    assert ClassFolderDataset(tmp_path, "train", resize="none").augment is None


def test_former_name_of_the_unlabelled_folder_still_works_with_a_warning():
    import masksal.data as data

    with pytest.warns(DeprecationWarning, match="UnlabelledFolderDataset"):
        assert data.ImageFolderDataset is data.UnlabelledFolderDataset
