"""Tests of the CUB-200-2011 adapter (masksal.data.cub): splits, box conversion, metadata faults.

Every fixture is a handful of tiny files written to tmp_path in the real formats.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from data_files import BOX_30x30_S10, BOXES_40x20_S10, assert_one_line, boxes, image, write

from masksal.data import CUBDataset, MetadataError, load_dataset


def _cub(parent: Path) -> Path:
    root = parent / "CUB_200_2011"
    image(root / "images/001.Albatross/a_1.jpg", 20, 40)
    image(root / "images/002.Auklet/b_2.jpg", 30, 30, seed=1)
    image(root / "images/002.Auklet/b_3.jpg", 30, 30, seed=2)
    write(root / "images.txt", "1 001.Albatross/a_1.jpg\n2 002.Auklet/b_2.jpg\n3 002.Auklet/b_3.jpg\n")
    write(root / "image_class_labels.txt", "1 1\n2 2\n3 2\n")
    # (x, y, w, h) -> inclusive (x, y, x + w, y + h): BOXES_40x20[0] and BOX_30x30.
    write(root / "bounding_boxes.txt", "1 10.0 4.0 19.0 9.0\n2 3.0 0.0 2.0 29.0\n3 0.0 0.0 10.0 10.0\n")
    write(root / "train_test_split.txt", "1 0\n2 1\n3 0\n")
    write(root / "classes.txt", "1 001.Albatross\n2 002.Auklet\n")
    return root


def test_cub_splits_labels_and_box_conversion(tmp_path: Path) -> None:
    root = _cub(tmp_path)
    test = load_dataset(f"cub:{tmp_path}", split="test", size=10)  # the parent folder works too
    assert isinstance(test, CUBDataset)
    assert [s["id"] for s in test] == ["001.Albatross/a_1.jpg", "002.Auklet/b_3.jpg"]
    assert [s["label"] for s in test] == [0, 1]  # 1-based in the file
    assert boxes(test[0]) == [BOXES_40x20_S10[0]]
    assert test.num_classes == 2 and test.classes == ["001.Albatross", "002.Auklet"]
    train = CUBDataset(root, "train", size=10)
    assert [s["id"] for s in train] == ["002.Auklet/b_2.jpg"] and boxes(train[0]) == [BOX_30x30_S10]
    everything = CUBDataset(root, "all", resize="none")
    assert len(everything) == 3
    assert boxes(everything[0]) == [[10.0, 4.0, 29.0, 13.0]]
    assert boxes(everything[2]) == [[0.0, 0.0, 10.0, 10.0]]


@pytest.mark.parametrize(
    ("file", "content", "expected"),
    [
        ("bounding_boxes.txt", "1 10.0 4.0 19.0 9.0\n2 3.0 0.0 2.0\n", ":2: expected '<id> <x> <y> <w> <h>'"),
        ("bounding_boxes.txt", "1 10.0 4.0 19.0 9.0\n\n3 0 0 1 x\n", ":3: 'x' is not a valid float"),
        ("image_class_labels.txt", "1 1\n2 2\n3 2\n9 1\n", ":4: image id '9' is not in images.txt"),
        ("train_test_split.txt", "1 0\n2 1\n", ": no line for image id 3"),
        ("images.txt", "1 001.Albatross/a_1.jpg\n2\n", ":2: expected '<id> <relpath>'"),
    ],
)
def test_cub_malformed_metadata_names_file_and_line(
    tmp_path: Path, file: str, content: str, expected: str
) -> None:
    root = _cub(tmp_path)
    write(root / file, content)
    with pytest.raises(MetadataError) as info:
        CUBDataset(root, "test")
    assert_one_line(info, f"{root / file}{expected}")


def test_cub_missing_file(tmp_path: Path) -> None:
    root = _cub(tmp_path)
    (root / "train_test_split.txt").unlink()
    with pytest.raises(MetadataError) as info:
        CUBDataset(root, "test")
    assert_one_line(info, f"{root / 'train_test_split.txt'}: missing")
    assert len(CUBDataset(root, "all")) == 3  # the split file is only needed to split




@pytest.mark.parametrize(
    ("file", "content", "expected"),
    [
        ("images.txt", "1 001.Albatross/a_1.jpg\n2 002.Auklet/b_2.jpg\n1 002.Auklet/b_3.jpg\n",
         ":3: image id '1' listed twice (first on line 1)"),
        ("images.txt", "1 001.Albatross/a_1.jpg\n2 002.Auklet/b_2.jpg\n3 002.Auklet/b_2.jpg\n",
         ":3: image '002.Auklet/b_2.jpg' listed twice (first on line 2)"),
        ("image_class_labels.txt", "1 1\n2 2\n2 2\n3 2\n", ":3: image id '2' listed twice"),
        ("image_class_labels.txt", "1 1\n2 0\n3 2\n", ":2: class 0 is below 1"),
        ("image_class_labels.txt", "1 1\n2 -4\n3 2\n", ":2: class -4 is below 1"),
        ("image_class_labels.txt", "1 1\n2 2\n3 3\n", ":3: class 3 is out of range (expected 1..2)"),
        ("bounding_boxes.txt", "1 10.0 4.0 19.0 9.0\n2 3.0 nan 2.0 29.0\n3 0 0 1 1\n", ":2: 'nan' is not a finite"),
        ("bounding_boxes.txt", "1 10.0 4.0 19.0 9.0\n2 3.0 0 inf 29.0\n3 0 0 1 1\n", ":2: 'inf' is not a finite"),
        ("bounding_boxes.txt", "1 10.0 4.0 19.0 9.0\n2 3.0 0.0 -2.0 29.0\n3 0 0 1 1\n",
         ":2: box (3.0, 0.0, 1.0, 29.0)"),
        ("train_test_split.txt", "1 0\n2 1\n3 2\n", ":3: is_train 2 is out of range"),
        ("classes.txt", "1 001.Albatross\n3 003.Cormorant\n", ": class numbers are not 1..2 (no class 2)"),
        ("classes.txt", "1 001.Albatross\n1 002.Auklet\n", ":2: class 1 listed twice"),
    ],
)
def test_cub_faults_are_refused_with_file_and_line(tmp_path: Path, file: str, content: str, expected: str) -> None:
    root = _cub(tmp_path)
    write(root / file, content)
    with pytest.raises(MetadataError) as info:
        CUBDataset(root, "test")
    assert_one_line(info, f"{root / file}{expected}")


def test_cub_whitespace_is_stripped(tmp_path: Path) -> None:
    root = _cub(tmp_path)
    write(root / "images.txt", "  1   001.Albatross/a_1.jpg  \n2\t002.Auklet/b_2.jpg\n\n3 002.Auklet/b_3.jpg\r\n")
    write(root / "bounding_boxes.txt", "1  10.0 4.0   19.0 9.0 \n2 3.0 0.0 2.0 29.0\n 3 0.0 0.0 10.0 10.0\n")
    ds = CUBDataset(root, "all", resize="none")
    assert ds.ids == ["001.Albatross/a_1.jpg", "002.Auklet/b_2.jpg", "002.Auklet/b_3.jpg"]
    assert boxes(ds[0]) == [[10.0, 4.0, 29.0, 13.0]]


@pytest.mark.parametrize("path", ["../../../secret.png", "/etc/secret.png", "001.Albatross/../../../../secret.png"])
def test_cub_image_paths_stay_inside_the_root(tmp_path: Path, path: str) -> None:
    root = _cub(tmp_path / "data")
    secret = image(tmp_path / "secret.png", 8, 8)
    write(root / "images.txt", f"1 001.Albatross/a_1.jpg\n2 {path}\n3 002.Auklet/b_3.jpg\n")
    with pytest.raises(MetadataError) as info:
        CUBDataset(root, "all")
    assert_one_line(info, f"{root / 'images.txt'}:2: image path {path!r} leaves {root / 'images'}")
    assert "allow_outside_root=True" in str(info.value)
    if not path.startswith("/"):  # the opt-in reads the file the metadata names
        ds = CUBDataset(root, "all", resize="none", allow_outside_root=True)
        assert (ds[1]["image"].mul(255).round().byte().permute(1, 2, 0).numpy() == secret).all()
    # A '..' that stays inside the root is just a path.
    write(root / "images.txt", "1 001.Albatross/a_1.jpg\n2 001.Albatross/../002.Auklet/b_2.jpg\n3 002.Auklet/b_3.jpg\n")
    assert "error" not in CUBDataset(root, "all")[1]
