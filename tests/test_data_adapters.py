"""Tests of the dataset adapters and the wsolevaluation export (masksal.data.adapters / export).

Every fixture is a handful of tiny files written to tmp_path in the real formats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from masksal.data import (
    BenchmarkDataset,
    CUBDataset,
    ImageFolderDataset,
    ImageNetValDataset,
    MetadataError,
    ResizeCrop,
    WSOLDataset,
    collate_skip_errors,
    export_wsol,
    load_dataset,
)


def _image(path: Path, h: int, w: int, seed: int = 0) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _boxes(sample: dict[str, Any]) -> list[list[float]]:
    return [[float(v) for v in b] for b in sample["boxes"].tolist()]


def _assert_one_line(exc: pytest.ExceptionInfo[BaseException], prefix: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(prefix), message


# Hand-computed: a 40 x 20 (W x H) image at S = 10, shorter side -> scale 1/2, resized 20 x 10,
# centre crop keeps x in [5, 15). A 30 x 30 image at S = 10 -> scale 1/3, no crop.
BOXES_40x20 = [[10, 4, 29, 13], [20, 0, 39, 19]]
BOXES_40x20_S10 = [[0.0, 2.0, 9.0, 6.0], [5.0, 0.0, 9.0, 9.0]]
BOX_30x30 = [3, 0, 5, 29]
BOX_30x30_S10 = [1.0, 0.0, 1.0, 9.0]


# --------------------------------------------------------------------------- ImageNet


def _voc(width: int, height: int, objects: list[tuple[str, list[int]]]) -> str:
    body = "".join(
        f"\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
        f"\t\t<difficult>0</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{b[0]}</xmin>\n\t\t\t<ymin>{b[1]}</ymin>\n"
        f"\t\t\t<xmax>{b[2]}</xmax>\n\t\t\t<ymax>{b[3]}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for name, b in objects
    )
    return (
        "<annotation>\n\t<folder>val</folder>\n\t<filename>x</filename>\n\t<source>\n"
        "\t\t<database>ILSVRC_2012</database>\n\t</source>\n\t<size>\n"
        f"\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
        f"\t<segmented>0</segmented>\n{body}</annotation>\n"
    )


def _imagenet(root: Path, kaggle: bool = False, mapping: bool = True) -> tuple[Path, Path]:
    images = root / ("ILSVRC/Data/CLS-LOC/val" if kaggle else "val")
    xmls = root / ("ILSVRC/Annotations/CLS-LOC/val" if kaggle else "bbox/val")
    _image(images / "ILSVRC2012_val_00000001.JPEG", 20, 40)
    _image(images / "ILSVRC2012_val_00000002.JPEG", 30, 30, seed=1)
    tench = "n01440764"
    other = "n09999999"
    _write(
        xmls / "ILSVRC2012_val_00000001.xml",
        _voc(40, 20, [(tench, BOXES_40x20[0]), (other, [0, 0, 5, 5]), (tench, BOXES_40x20[1])]),
    )
    _write(xmls / "ILSVRC2012_val_00000002.xml", _voc(30, 30, [("n01443537", BOX_30x30)]))
    if mapping:
        # Not in sorted order, so a mapping-based index differs from a sorted-synset index.
        _write(
            root / "LOC_synset_mapping.txt",
            "n01443537 goldfish, Carassius auratus\nn01440764 tench, Tinca tinca\nn09999999 other thing\n",
        )
    return images, xmls


def test_imagenet_labels_boxes_and_classes(tmp_path: Path) -> None:
    _imagenet(tmp_path)
    ds = load_dataset(f"imagenet:{tmp_path}", split="val", size=10)
    assert isinstance(ds, ImageNetValDataset) and len(ds) == 2
    first, second = ds[0], ds[1]
    assert first["id"] == "ILSVRC2012_val_00000001" and first["orig_size"] == (20, 40)
    assert (first["label"], second["label"]) == (1, 0)  # line order of LOC_synset_mapping.txt
    assert ds.num_classes == 3
    assert ds.classes == ["goldfish, Carassius auratus", "tench, Tinca tinca", "other thing"]
    # Several boxes, resized and cropped by hand; the other synset's box is not the label's.
    assert _boxes(first) == BOXES_40x20_S10
    assert _boxes(second) == [BOX_30x30_S10]
    assert first["image"].shape == (3, 10, 10) and first["image"].dtype == torch.float32
    assert float(first["image"].min()) >= 0.0 and float(first["image"].max()) <= 1.0
    raw = ImageNetValDataset(tmp_path / "val", tmp_path / "bbox", resize="none")
    assert _boxes(raw[0]) == [[float(v) for v in b] for b in BOXES_40x20]  # 0-based inclusive as stored
    assert raw.synsets == ["n01440764", "n01443537", "n09999999"]  # sorted without a mapping
    assert (raw[0]["label"], raw[1]["label"]) == (0, 1)


def test_imagenet_kaggle_layout(tmp_path: Path) -> None:
    _imagenet(tmp_path, kaggle=True)
    ds = load_dataset(f"imagenet:{tmp_path}", split="test", size=10)
    assert [ds[i]["label"] for i in range(len(ds))] == [1, 0] and _boxes(ds[0]) == BOXES_40x20_S10
    with pytest.raises(ValueError, match="validation split"):
        load_dataset(f"imagenet:{tmp_path}", split="train")


def test_imagenet_malformed_metadata(tmp_path: Path) -> None:
    _, xmls = _imagenet(tmp_path)
    xml = xmls / "ILSVRC2012_val_00000002.xml"
    text = xml.read_text()
    xml.write_text(text.replace("</bndbox>", "</bndbx>", 1))
    with pytest.raises(MetadataError) as info:
        load_dataset(f"imagenet:{tmp_path}", size=10)
    line = text.splitlines().index("\t\t</bndbox>") + 1
    _assert_one_line(info, f"{xml}:{line}: malformed XML")

    xml.write_text(text.replace("<xmin>3</xmin>", "<xmin>three</xmin>"))
    with pytest.raises(MetadataError) as info:
        load_dataset(f"imagenet:{tmp_path}", size=10)
    line = text.splitlines().index("\t\t\t<xmin>3</xmin>") + 1
    _assert_one_line(info, f"{xml}:{line}: 'three' is not a valid float")

    xml.unlink()
    with pytest.raises(MetadataError, match="missing annotation") as info:
        load_dataset(f"imagenet:{tmp_path}", size=10)
    _assert_one_line(info, f"{xmls.parent}: missing annotation {xml.name} for image ")

    xml.write_text(text)
    _write(tmp_path / "LOC_synset_mapping.txt", "n01443537 goldfish\ntench n01440764\n")
    with pytest.raises(MetadataError) as info:
        load_dataset(f"imagenet:{tmp_path}", size=10)
    _assert_one_line(info, f"{tmp_path / 'LOC_synset_mapping.txt'}:2: expected 'nXXXXXXXX [name]'")


# --------------------------------------------------------------------------- CUB


def _cub(parent: Path) -> Path:
    root = parent / "CUB_200_2011"
    _image(root / "images/001.Albatross/a_1.jpg", 20, 40)
    _image(root / "images/002.Auklet/b_2.jpg", 30, 30, seed=1)
    _image(root / "images/002.Auklet/b_3.jpg", 30, 30, seed=2)
    _write(root / "images.txt", "1 001.Albatross/a_1.jpg\n2 002.Auklet/b_2.jpg\n3 002.Auklet/b_3.jpg\n")
    _write(root / "image_class_labels.txt", "1 1\n2 2\n3 2\n")
    # (x, y, w, h) -> inclusive (x, y, x + w, y + h): BOXES_40x20[0] and BOX_30x30.
    _write(root / "bounding_boxes.txt", "1 10.0 4.0 19.0 9.0\n2 3.0 0.0 2.0 29.0\n3 0.0 0.0 10.0 10.0\n")
    _write(root / "train_test_split.txt", "1 0\n2 1\n3 0\n")
    _write(root / "classes.txt", "1 001.Albatross\n2 002.Auklet\n")
    return root


def test_cub_splits_labels_and_box_conversion(tmp_path: Path) -> None:
    root = _cub(tmp_path)
    test = load_dataset(f"cub:{tmp_path}", split="test", size=10)  # the parent folder works too
    assert isinstance(test, CUBDataset)
    assert [s["id"] for s in test] == ["001.Albatross/a_1.jpg", "002.Auklet/b_3.jpg"]
    assert [s["label"] for s in test] == [0, 1]  # 1-based in the file
    assert _boxes(test[0]) == [BOXES_40x20_S10[0]]
    assert test.num_classes == 2 and test.classes == ["001.Albatross", "002.Auklet"]
    train = CUBDataset(root, "train", size=10)
    assert [s["id"] for s in train] == ["002.Auklet/b_2.jpg"] and _boxes(train[0]) == [BOX_30x30_S10]
    everything = CUBDataset(root, "all", resize="none")
    assert len(everything) == 3
    assert _boxes(everything[0]) == [[10.0, 4.0, 29.0, 13.0]]
    assert _boxes(everything[2]) == [[0.0, 0.0, 10.0, 10.0]]


@pytest.mark.parametrize(
    ("file", "content", "expected"),
    [
        ("bounding_boxes.txt", "1 10.0 4.0 19.0 9.0\n2 3.0 0.0 2.0\n", ":2: expected '<id> <x> <y> <w> <h>'"),
        ("bounding_boxes.txt", "1 10.0 4.0 19.0 9.0\n\n3 0 0 1 x\n", ":3: 'x' is not a valid float"),
        ("image_class_labels.txt", "1 1\n2 2\n3 2\n9 1\n", ":4: image id 9 is not in images.txt"),
        ("train_test_split.txt", "1 0\n2 1\n", ": no line for image id 3"),
        ("images.txt", "1 001.Albatross/a_1.jpg\n2\n", ":2: expected '<id> <relpath>'"),
    ],
)
def test_cub_malformed_metadata_names_file_and_line(
    tmp_path: Path, file: str, content: str, expected: str
) -> None:
    root = _cub(tmp_path)
    _write(root / file, content)
    with pytest.raises(MetadataError) as info:
        CUBDataset(root, "test")
    _assert_one_line(info, f"{root / file}{expected}")


def test_cub_missing_file(tmp_path: Path) -> None:
    root = _cub(tmp_path)
    (root / "train_test_split.txt").unlink()
    with pytest.raises(MetadataError) as info:
        CUBDataset(root, "test")
    _assert_one_line(info, f"{root / 'train_test_split.txt'}: missing")
    assert len(CUBDataset(root, "all")) == 3  # the split file is only needed to split


# --------------------------------------------------------------------------- wsolevaluation


def _wsol_boxes(tmp_path: Path) -> tuple[Path, Path]:
    meta = tmp_path / "metadata/CUB/test"
    data = tmp_path / "dataset/CUB"
    _image(data / "test/a.png", 20, 40)
    _image(data / "test/b.png", 30, 30, seed=1)
    _write(meta / "image_ids.txt", "test/a.png\ntest/b.png\n")
    _write(meta / "class_labels.txt", "test/a.png,3\ntest/b.png,1\n")
    # b's boxes were annotated on a 60 x 60 version: (6,0,11,59) there is BOX_30x30 here.
    _write(meta / "image_sizes.txt", "test/a.png,40,20\ntest/b.png,60,60\n")
    _write(meta / "localization.txt", "test/a.png,10,4,29,13\ntest/a.png,20,0,39,19\ntest/b.png,6,0,11,59\n")
    return meta.parent, data


def test_wsol_boxes(tmp_path: Path) -> None:
    meta, data = _wsol_boxes(tmp_path)
    ds = load_dataset(f"wsol:{meta}:{data}", split="test", size=10)
    assert isinstance(ds, WSOLDataset) and not ds.has_masks
    assert [s["id"] for s in ds] == ["test/a.png", "test/b.png"]
    assert [s["label"] for s in ds] == [3, 1] and ds.num_classes == 4 and ds.classes is None
    assert _boxes(ds[0]) == BOXES_40x20_S10
    assert _boxes(ds[1]) == [BOX_30x30_S10]
    assert "mask" not in ds[0]
    same = load_dataset("wsol", metadata_dir=meta / "test", image_root=data, size=10, num_classes=200)
    assert same.num_classes == 200 and _boxes(same[1]) == [BOX_30x30_S10]


def test_wsol_malformed_metadata(tmp_path: Path) -> None:
    meta, data = _wsol_boxes(tmp_path)
    loc = meta / "test/localization.txt"
    _write(loc, "test/a.png,10,4,29,13\ntest/a.png,20,0,39\n")
    with pytest.raises(MetadataError) as info:
        WSOLDataset(meta, data)
    _assert_one_line(info, f"{loc}:2: expected '<image_id>,<x0>,<y0>,<x1>,<y1>'")
    _write(loc, "test/a.png,10,4,9,13\n")
    with pytest.raises(MetadataError) as info:
        WSOLDataset(meta, data)
    _assert_one_line(info, f"{loc}:1: box (10.0, 4.0, 9.0, 13.0) has x1 < x0")
    labels = meta / "test/class_labels.txt"
    _write(labels, "test/a.png,3\ntest/b.png;1\n")
    with pytest.raises(MetadataError) as info:
        WSOLDataset(meta, data)
    _assert_one_line(info, f"{labels}:2: expected '<image_id>,<class>'")
    (meta / "test/image_ids.txt").unlink()
    with pytest.raises(MetadataError) as info:
        WSOLDataset(meta, data)
    _assert_one_line(info, f"{meta / 'image_ids.txt'}: missing")


def _wsol_masks(tmp_path: Path, mask_dir: str = "dataset/OpenImages") -> tuple[Path, Path, Path, np.ndarray]:
    """One 20 x 40 image with two instance masks and an ignore region, OpenImages style."""
    meta = tmp_path / "metadata/OpenImages/test"
    data = tmp_path / "dataset/OpenImages"
    masks = tmp_path / mask_dir
    _image(data / "test/0abc/x.png", 20, 40)
    _image(data / "test/0abc/y.png", 30, 30, seed=1)
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
    _write(meta / "image_ids.txt", "test/0abc/x.png\ntest/0abc/y.png\n")
    _write(meta / "class_labels.txt", "test/0abc/x.png,0\ntest/0abc/y.png,0\n")
    _write(meta / "image_sizes.txt", "")
    _write(
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
    _write(loc, "test/0abc/x.png,test/0abc/x_m0abc_1.png,test/0abc/x_ignore.png\n")
    with pytest.raises(MetadataError) as info:
        WSOLDataset(meta, data, masks)
    _assert_one_line(info, f"{loc}: no line for image test/0abc/y.png")
    _write(loc, "test/0abc/x.png,test/0abc/x_m0abc_1.png,test/0abc/x_ignore.png\nzzz,a,b\n")
    with pytest.raises(MetadataError) as info:
        WSOLDataset(meta, data, masks)
    _assert_one_line(info, f"{loc}:2: image id 'zzz' is not in image_ids.txt")


# --------------------------------------------------------------------------- bad images


def test_corrupt_and_missing_images_are_skipped_and_reported(tmp_path: Path) -> None:
    _image(tmp_path / "a.png", 12, 16)
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    _image(tmp_path / "c.png", 16, 12, seed=3)
    ds = load_dataset(f"folder:{tmp_path}", size=8)
    assert ds[1] == {"error": str(ds[1]["error"]), "id": "b.jpg"}
    assert str(ds[1]["error"]).startswith(f"{bad}: ")
    loader = DataLoader(ds, batch_size=3, collate_fn=collate_skip_errors)
    (batch, errors), = list(loader)
    assert batch is not None and len(batch) == 2 and batch.ids == ["a.png", "c.png"]
    assert batch.images.shape == (2, 3, 8, 8) and batch.labels.tolist() == [-1, -1]
    assert len(errors) == 1 and errors[0].startswith(str(bad)) and "\n" not in errors[0]
    only_bad, errs = collate_skip_errors([ds[1]])
    assert only_bad is None and errs == [ds[1]["error"]]

    # A listed image that is missing on disk, and a corrupt mask, are per-sample errors too.
    meta, data, masks, _ = _wsol_masks(tmp_path / "w")
    (data / "test/0abc/y.png").unlink()
    (masks / "test/0abc/x_m0abc_2.png").write_bytes(b"broken")
    ds2 = WSOLDataset(meta, data, size=8)
    assert "error" in ds2[0] and "x_m0abc_2.png" in ds2[0]["error"]
    assert "error" in ds2[1] and "y.png" in ds2[1]["error"]


# --------------------------------------------------------------------------- folders


def test_folder_recursion_order_and_original_size(tmp_path: Path) -> None:
    _image(tmp_path / "b.png", 10, 20)
    _image(tmp_path / "a/z.jpg", 8, 8)
    _image(tmp_path / "a/b/c.PNG", 9, 7)
    _image(tmp_path / "A.jpeg", 6, 6)
    _image(tmp_path / ".hidden/x.png", 5, 5)
    _image(tmp_path / "._resource_fork.png", 5, 5)
    _write(tmp_path / "notes.txt", "not an image")
    ds = load_dataset(f"folder:{tmp_path}", split="whatever", size=4)
    assert isinstance(ds, ImageFolderDataset)
    assert ds.ids == ["A.jpeg", "a/b/c.PNG", "a/z.jpg", "b.png"]
    assert ds.num_classes is None and ds.classes is None
    sample = ds[3]
    assert sample["orig_size"] == (10, 20) and sample["label"] == -1
    assert sample["image"].shape == (3, 4, 4) and sample["boxes"].shape == (0, 4)
    full = ImageFolderDataset(tmp_path, resize="none")
    assert full[1]["image"].shape == (3, 9, 7)
    with pytest.raises(MetadataError, match="missing image folder"):
        ImageFolderDataset(tmp_path / "a/b/c.PNG")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MetadataError, match="no images"):
        ImageFolderDataset(tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown dataset spec"):
        load_dataset(f"images:{tmp_path}")


# --------------------------------------------------------------------------- export


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
