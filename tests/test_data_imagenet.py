"""Tests of the ImageNet validation adapter (masksal.data.imagenet): layouts, boxes, metadata faults.

Every fixture is a handful of tiny files written to tmp_path in the real formats.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data_files import (
    BOX_30x30,
    BOX_30x30_S10,
    BOXES_40x20,
    BOXES_40x20_S10,
    assert_one_line,
    boxes,
    image,
    write,
)

from masksal.data import ImageNetValDataset, MetadataError, load_dataset


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
    image(images / "ILSVRC2012_val_00000001.JPEG", 20, 40)
    image(images / "ILSVRC2012_val_00000002.JPEG", 30, 30, seed=1)
    tench = "n01440764"
    other = "n09999999"
    write(
        xmls / "ILSVRC2012_val_00000001.xml",
        _voc(40, 20, [(tench, BOXES_40x20[0]), (other, [0, 0, 5, 5]), (tench, BOXES_40x20[1])]),
    )
    write(xmls / "ILSVRC2012_val_00000002.xml", _voc(30, 30, [("n01443537", BOX_30x30)]))
    if mapping:
        # Not in sorted order, so a mapping-based index differs from a sorted-synset index.
        write(
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
    assert boxes(first) == BOXES_40x20_S10
    assert boxes(second) == [BOX_30x30_S10]
    assert first["image"].shape == (3, 10, 10) and first["image"].dtype == torch.float32
    assert float(first["image"].min()) >= 0.0 and float(first["image"].max()) <= 1.0
    raw = ImageNetValDataset(tmp_path / "val", tmp_path / "bbox", resize="none")
    assert boxes(raw[0]) == [[float(v) for v in b] for b in BOXES_40x20]  # 0-based inclusive as stored
    assert raw.synsets == ["n01440764", "n01443537", "n09999999"]  # sorted without a mapping
    assert (raw[0]["label"], raw[1]["label"]) == (0, 1)


def test_imagenet_kaggle_layout(tmp_path: Path) -> None:
    _imagenet(tmp_path, kaggle=True)
    ds = load_dataset(f"imagenet:{tmp_path}", split="test", size=10)
    assert [ds[i]["label"] for i in range(len(ds))] == [1, 0] and boxes(ds[0]) == BOXES_40x20_S10
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
    assert_one_line(info, f"{xml}:{line}: malformed XML")

    xml.write_text(text.replace("<xmin>3</xmin>", "<xmin>three</xmin>"))
    with pytest.raises(MetadataError) as info:
        load_dataset(f"imagenet:{tmp_path}", size=10)
    line = text.splitlines().index("\t\t\t<xmin>3</xmin>") + 1
    assert_one_line(info, f"{xml}:{line}: 'three' is not a valid float")

    xml.unlink()
    with pytest.raises(MetadataError, match="missing annotation") as info:
        load_dataset(f"imagenet:{tmp_path}", size=10)
    assert_one_line(info, f"{xmls.parent}: missing annotation {xml.name} for image ")

    xml.write_text(text)
    write(tmp_path / "LOC_synset_mapping.txt", "n01443537 goldfish\ntench n01440764\n")
    with pytest.raises(MetadataError) as info:
        load_dataset(f"imagenet:{tmp_path}", size=10)
    assert_one_line(info, f"{tmp_path / 'LOC_synset_mapping.txt'}:2: expected 'nXXXXXXXX [name]'")




@pytest.mark.parametrize(("old", "new", "message"), [
    ("<xmax>5</xmax>", "<xmax>nan</xmax>", "'nan' is not a finite number"),
    ("<ymin>0</ymin>", "<ymin>-inf</ymin>", "'-inf' is not a finite number"),
    ("<width>30</width>", "<width>0</width>", "image size 0 x 30 is not a positive whole number"),
])
def test_imagenet_non_finite_or_empty_values_name_file_and_line(
        tmp_path: Path, old: str, new: str, message: str) -> None:
    _, xmls = _imagenet(tmp_path)
    xml = xmls / "ILSVRC2012_val_00000002.xml"
    text = xml.read_text()
    assert old in text
    xml.write_text(text.replace(old, new))
    line = next(i for i, s in enumerate(text.splitlines(), 1) if old in s)
    if "width" in old:  # the size error points at the last <size> field read
        line = next(i for i, s in enumerate(text.splitlines(), 1) if "<height>" in s)
    with pytest.raises(MetadataError) as info:
        load_dataset(f"imagenet:{tmp_path}", size=10)
    assert_one_line(info, f"{xml}:{line}: {message}")


def test_imagenet_duplicates_are_refused(tmp_path: Path) -> None:
    images, xmls = _imagenet(tmp_path)
    # The same image id twice (flat and in a synset folder) would be one sample counted twice.
    copy = images / "n01440764" / "ILSVRC2012_val_00000001.JPEG"
    image(copy, 20, 40)
    with pytest.raises(MetadataError) as info:
        load_dataset(f"imagenet:{tmp_path}", size=10)
    assert_one_line(info, f"{copy}: image ILSVRC2012_val_00000001 found twice")
    copy.unlink()
    # Two annotation files for one image: which one holds is not guessed.
    second = xmls / "again" / "ILSVRC2012_val_00000002.xml"
    write(second, (xmls / "ILSVRC2012_val_00000002.xml").read_text())
    with pytest.raises(MetadataError) as info:
        load_dataset(f"imagenet:{tmp_path}", size=10)
    assert_one_line(info, f"{second}: second annotation for image ILSVRC2012_val_00000002")
    second.unlink()
    mapping = write(tmp_path / "LOC_synset_mapping.txt", "n01443537 goldfish\nn01440764 tench\nn01443537 again\n")
    with pytest.raises(MetadataError) as info:
        load_dataset(f"imagenet:{tmp_path}", size=10)
    assert_one_line(info, f"{mapping}:3: synset n01443537 listed twice (first on line 1)")


def test_imagenet_mapping_with_spaces_bom_and_crlf(tmp_path: Path) -> None:
    _imagenet(tmp_path, mapping=False)
    (tmp_path / "LOC_synset_mapping.txt").write_bytes(
        "\ufeffn01443537 goldfish\r\n  n01440764 tench  \r\n\r\nn09999999 other\r\n".encode())
    ds = load_dataset(f"imagenet:{tmp_path}", size=10)
    assert ds.classes == ["goldfish", "tench", "other"] and (ds[0]["label"], ds[1]["label"]) == (1, 0)
