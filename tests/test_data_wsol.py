"""Tests of the wsolevaluation metadata adapter (masksal.data.wsol): boxes, masks, metadata faults.

Every fixture is a handful of tiny files written to tmp_path in the real formats.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_files import BOX_30x30_S10, BOXES_40x20_S10, assert_one_line, boxes, image, write
from PIL import Image

from masksal.data import MetadataError, ResizeCrop, WSOLDataset, load_dataset


def _wsol_boxes(tmp_path: Path) -> tuple[Path, Path]:
    meta = tmp_path / "metadata/CUB/test"
    data = tmp_path / "dataset/CUB"
    image(data / "test/a.png", 20, 40)
    image(data / "test/b.png", 30, 30, seed=1)
    write(meta / "image_ids.txt", "test/a.png\ntest/b.png\n")
    write(meta / "class_labels.txt", "test/a.png,3\ntest/b.png,1\n")
    # b's boxes were annotated on a 60 x 60 version: (6,0,11,59) there is BOX_30x30 here.
    write(meta / "image_sizes.txt", "test/a.png,40,20\ntest/b.png,60,60\n")
    write(meta / "localization.txt", "test/a.png,10,4,29,13\ntest/a.png,20,0,39,19\ntest/b.png,6,0,11,59\n")
    return meta.parent, data


def test_wsol_boxes(tmp_path: Path) -> None:
    meta, data = _wsol_boxes(tmp_path)
    ds = load_dataset(f"wsol:{meta}:{data}", split="test", size=10)
    assert isinstance(ds, WSOLDataset) and not ds.has_masks
    assert [s["id"] for s in ds] == ["test/a.png", "test/b.png"]
    assert [s["label"] for s in ds] == [3, 1] and ds.num_classes == 4 and ds.classes is None
    assert boxes(ds[0]) == BOXES_40x20_S10
    assert boxes(ds[1]) == [BOX_30x30_S10]
    assert "mask" not in ds[0]
    same = load_dataset("wsol", metadata_dir=meta / "test", image_root=data, size=10, num_classes=200)
    assert same.num_classes == 200 and boxes(same[1]) == [BOX_30x30_S10]


def test_wsol_malformed_metadata(tmp_path: Path) -> None:
    meta, data = _wsol_boxes(tmp_path)
    loc = meta / "test/localization.txt"
    write(loc, "test/a.png,10,4,29,13\ntest/a.png,20,0,39\n")
    with pytest.raises(MetadataError) as info:
        WSOLDataset(meta, data)
    assert_one_line(info, f"{loc}:2: expected '<image_id>,<x0>,<y0>,<x1>,<y1>'")
    write(loc, "test/a.png,10,4,9,13\n")
    with pytest.raises(MetadataError) as info:
        WSOLDataset(meta, data)
    assert_one_line(info, f"{loc}:1: box (10.0, 4.0, 9.0, 13.0) has x1 < x0")
    labels = meta / "test/class_labels.txt"
    write(labels, "test/a.png,3\ntest/b.png;1\n")
    with pytest.raises(MetadataError) as info:
        WSOLDataset(meta, data)
    assert_one_line(info, f"{labels}:2: expected '<image_id>,<class>'")
    (meta / "test/image_ids.txt").unlink()
    with pytest.raises(MetadataError) as info:
        WSOLDataset(meta, data)
    assert_one_line(info, f"{meta / 'image_ids.txt'}: missing")


def _wsol_masks(tmp_path: Path, mask_dir: str = "dataset/OpenImages") -> tuple[Path, Path, Path, np.ndarray]:
    """One 20 x 40 image with two instance masks and an ignore region, OpenImages style."""
    meta = tmp_path / "metadata/OpenImages/test"
    data = tmp_path / "dataset/OpenImages"
    masks = tmp_path / mask_dir
    image(data / "test/0abc/x.png", 20, 40)
    image(data / "test/0abc/y.png", 30, 30, seed=1)
    m1 = np.zeros((20, 40), bool)
    m1[4:14, 10:30] = True
    m2 = np.zeros((20, 40), bool)
    m2[0:20, 30:34] = True
    ignore = np.zeros((20, 40, 3), np.uint8)
    ignore[2:16, 8:32] = 255  # a box around m1: its pixels outside m1 are ignored
    for name, arr in (("x_m0abc_1.png", m1), ("x_m0abc_2.png", m2), ("x_ignore.png", ignore)):
        (masks / "test/0abc").mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(masks / "test/0abc" / name)
    ym = np.zeros((30, 30), bool)
    ym[3:9, 6:27] = True
    Image.fromarray(ym).save(masks / "test/0abc/y_m0abc_1.png")
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(masks / "test/0abc/y_ignore.png")
    write(meta / "image_ids.txt", "test/0abc/x.png\ntest/0abc/y.png\n")
    write(meta / "class_labels.txt", "test/0abc/x.png,0\ntest/0abc/y.png,0\n")
    write(meta / "image_sizes.txt", "")
    write(
        meta / "localization.txt",
        "test/0abc/x.png,test/0abc/x_m0abc_1.png,test/0abc/x_ignore.png\n"
        "test/0abc/x.png,test/0abc/x_m0abc_2.png,\n"
        "test/0abc/y.png,test/0abc/y_m0abc_1.png,test/0abc/y_ignore.png\n",
    )
    expected = (m1 | m2).astype(np.uint8)
    expected[(ignore[:, :, 0] > 0) & ~(m1 | m2)] = 255
    return meta, data, masks, expected


def test_wsol_masks_union_and_ignore(tmp_path: Path) -> None:
    meta, data, _, expected = _wsol_masks(tmp_path)
    raw = WSOLDataset(meta, data, resize="none")
    assert raw.has_masks and raw.num_classes == 1
    sample = raw[0]
    assert sample["mask"].dtype == torch.uint8
    assert np.array_equal(sample["mask"].numpy(), expected)
    assert int((sample["mask"] == 255).sum()) == 14 * 24 - 10 * 20 - 2 * 14  # ring minus m2's overlap
    assert sample["boxes"].shape == (0, 4)

    small = load_dataset(f"wsol:{meta}:{data}", size=10)
    mask = small[0]["mask"]
    assert torch.equal(mask, ResizeCrop(10).mask(expected))
    # By hand: x in [5, 15) of the 20 x 10 resize, i.e. original columns 10..29 (pixel centres
    # at 2j + 1); m1 covers them on rows 2..6, m2 starts at original column 30 (outside).
    assert (mask[2:7] == 1).all() and (mask[0] == 0).all()
    assert (mask[1] == 255).all() and (mask[7] == 255).all() and (mask[8:] == 0).all()


def test_wsol_masks_in_another_root_and_missing_mask(tmp_path: Path) -> None:
    meta, data, masks, expected = _wsol_masks(tmp_path, mask_dir="masks/OpenImages")
    ds = load_dataset("wsol", metadata_dir=meta, image_root=data, mask_root=masks, resize="none")
    assert np.array_equal(ds[0]["mask"].numpy(), expected)
    loc = meta / "localization.txt"
    write(loc, "test/0abc/x.png,test/0abc/x_m0abc_1.png,test/0abc/x_ignore.png\n")
    with pytest.raises(MetadataError) as info:
        WSOLDataset(meta, data, masks)
    assert_one_line(info, f"{loc}: no line for image id test/0abc/y.png")
    write(loc, "test/0abc/x.png,test/0abc/x_m0abc_1.png,test/0abc/x_ignore.png\nzzz,a,b\n")
    with pytest.raises(MetadataError) as info:
        WSOLDataset(meta, data, masks)
    assert_one_line(info, f"{loc}:2: image id 'zzz' is not in image_ids.txt")




def test_wsol_spaces_around_commas_are_parsed_not_dropped(tmp_path: Path) -> None:
    meta, data = _wsol_boxes(tmp_path)
    test = meta / "test"
    write(test / "image_ids.txt", " test/a.png \ntest/b.png\r\n")
    write(test / "class_labels.txt", "test/a.png , 3\n test/b.png,\t1 \n")
    write(test / "image_sizes.txt", "test/a.png, 40, 20\ntest/b.png ,60 ,60\n")
    write(test / "localization.txt", "test/a.png , 10, 4, 29, 13\ntest/a.png,20 ,0 , 39,19\n test/b.png, 6,0,11,59 \n")
    ds = WSOLDataset(meta, data, size=10)
    assert ds.ids == ["test/a.png", "test/b.png"] and [s["label"] for s in ds] == [3, 1]
    assert boxes(ds[0]) == BOXES_40x20_S10 and boxes(ds[1]) == [BOX_30x30_S10]


@pytest.mark.parametrize(
    ("file", "content", "expected"),
    [
        ("image_ids.txt", "test/a.png\ntest/b.png\ntest/a.png\n",
         ":3: image id 'test/a.png' listed twice (first on line 1)"),
        ("class_labels.txt", "test/a.png,3\ntest/b.png,1\ntest/a.png,3\n", ":3: image id 'test/a.png' listed twice"),
        ("class_labels.txt", "test/a.png,3\ntest/b.png,-1\n", ":2: class -1 is below 0"),
        ("class_labels.txt", "test/a.png,3\ntest/b.png,1\ntest/c.png,1\n",
         ":3: image id 'test/c.png' is not in image_ids.txt"),
        ("class_labels.txt", "test/a.png,3\n", ": no line for image id test/b.png (1 missing)"),
        ("class_labels.txt", "test/a.png,3.0\ntest/b.png,1\n", ":1: '3.0' is not a valid int"),
        ("image_sizes.txt", "test/a.png,40,20\ntest/a.png,40,20\n", ":2: image id 'test/a.png' listed twice"),
        ("image_sizes.txt", "test/a.png,0,20\n", ":1: width 0 is below 1"),
        ("localization.txt", "test/a.png,10,4,29,13\ntest/b.png,nan,0,11,59\n", ":2: 'nan' is not a finite number"),
        ("localization.txt", "test/a.png,10,4,inf,13\n", ":1: 'inf' is not a finite number"),
        ("localization.txt", "test/a.png,10,4,29,-Infinity\n", ":1: '-Infinity' is not a finite number"),
        ("localization.txt", "test/a.png,10,4,29,13\ntest/b.png,m.png,\n", ":2: mixes box lines and mask lines"),
        ("localization.txt", "test/a.png,,4,29,13\n", ":1: '' is not a valid float"),
    ],
)
def test_wsol_faults_are_refused_with_file_and_line(tmp_path: Path, file: str, content: str, expected: str) -> None:
    meta, data = _wsol_boxes(tmp_path)
    write(meta / "test" / file, content)
    with pytest.raises(MetadataError) as info:
        WSOLDataset(meta, data)
    assert_one_line(info, f"{meta / 'test' / file}{expected}")


def test_wsol_labels_checked_against_a_known_class_count(tmp_path: Path) -> None:
    meta, data = _wsol_boxes(tmp_path)
    labels = meta / "test/class_labels.txt"
    with pytest.raises(MetadataError) as info:
        WSOLDataset(meta, data, num_classes=3)
    assert_one_line(info, f"{labels}:1: class 3 is out of range (expected 0..2)")
    write(meta / "test/class_names.txt", "albatross\nauklet\n")
    with pytest.raises(MetadataError) as info:
        WSOLDataset(meta, data)
    assert_one_line(info, f"{labels}:1: class 3 is out of range (expected 0..1)")
    write(meta / "test/class_names.txt", "a\nb\nc\nd\n")
    assert WSOLDataset(meta, data).num_classes == 4


@pytest.mark.parametrize("bad", ["../outside/a.png", "test/../../outside/a.png", "/abs/outside/a.png", ".."])
def test_wsol_image_ids_stay_inside_the_image_root(tmp_path: Path, bad: str) -> None:
    meta, data = _wsol_boxes(tmp_path)
    ids = write(meta / "test/image_ids.txt", f"test/a.png\n{bad}\n")
    write(meta / "test/class_labels.txt", f"test/a.png,3\n{bad},1\n")
    write(meta / "test/image_sizes.txt", "")
    write(meta / "test/localization.txt", "")
    with pytest.raises(MetadataError) as info:
        WSOLDataset(meta, data)
    assert_one_line(info, f"{ids}:2: image id {bad!r} leaves {data} (absolute or '..'; pass allow_outside_root=True")


def test_wsol_outside_paths_only_with_the_explicit_option(tmp_path: Path) -> None:
    meta, data, masks, expected = _wsol_masks(tmp_path)
    outside = image(tmp_path / "outside/z.png", 20, 40, seed=9)
    Image.fromarray(np.ones((20, 40), bool)).save(tmp_path / "outside/z_mask.png")
    write(meta / "image_ids.txt", "test/0abc/x.png\n../../outside/z.png\n")
    write(meta / "class_labels.txt", "test/0abc/x.png,0\n../../outside/z.png,0\n")
    loc = write(meta / "localization.txt", "test/0abc/x.png,test/0abc/x_m0abc_1.png,\n"
                "../../outside/z.png,../../outside/z_mask.png,\n")
    with pytest.raises(MetadataError) as info:
        WSOLDataset(meta, data)
    assert_one_line(info, f"{meta / 'image_ids.txt'}:2: image id '../../outside/z.png' leaves {data}")
    ds = WSOLDataset(meta, data, resize="none", allow_outside_root=True)
    z = ds[1]
    assert np.array_equal(z["image"].mul(255).round().byte().permute(1, 2, 0).numpy(), outside)
    assert bool((z["mask"] == 1).all())
    # Mask paths are checked against the mask root in the same way.
    write(meta / "image_ids.txt", "test/0abc/x.png\n")
    write(meta / "class_labels.txt", "test/0abc/x.png,0\n")
    write(loc, "test/0abc/x.png,test/0abc/x_m0abc_1.png,/etc/ignore.png\n")
    with pytest.raises(MetadataError) as info:
        load_dataset("wsol", metadata_dir=meta, image_root=data)
    assert_one_line(info, f"{loc}:1: ignore mask path '/etc/ignore.png' leaves {data}")
