"""ILSVRC 2012 validation images with their Pascal-VOC-style XML boxes (``imagenet:<root>``)."""

from __future__ import annotations

import re
import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from masksal.data.base import LocalizationDataset, Record, image_files
from masksal.data.images import ResizeMode
from masksal.data.metadata import MetadataError, check_box, parse_float, read_lines, require_file

__all__ = ["ImageNetValDataset", "read_synset_mapping"]


_SYNSET = re.compile(r"^n\d{8}$")


def read_synset_mapping(path: str | Path) -> tuple[list[str], list[str] | None]:
    """Read a synset list, one class per line, line order = class index.

    Accepts ``LOC_synset_mapping.txt`` lines (``"n01440764 tench, Tinca tinca"``) and bare
    synset lists (``"n01440764"``).

    Returns:
        ``(synsets, names)``; ``names`` is ``None`` unless every line carries a name.

    Raises:
        MetadataError: missing file, a line not starting with a WordNet id, a repeated synset.
    """
    path = require_file(Path(path), "synset mapping file")
    first_line: dict[str, int] = {}
    names: list[str] = []
    for number, line in read_lines(path):
        wnid, _, name = line.partition(" ")
        if not _SYNSET.match(wnid):
            raise MetadataError(f"{path}:{number}: expected 'nXXXXXXXX [name]', got {line!r}")
        if wnid in first_line:
            raise MetadataError(f"{path}:{number}: synset {wnid} listed twice (first on line {first_line[wnid]})")
        first_line[wnid] = number
        names.append(name.strip())
    synsets = list(first_line)
    if not synsets:
        raise MetadataError(f"{path}: no synsets")
    return synsets, (names if all(names) else None)


@dataclass
class _VOCObject:
    name: str = ""
    name_line: int = 0
    box: dict[str, float] = field(default_factory=dict)
    box_line: int = 0


def _parse_voc_xml(path: Path) -> tuple[int, int, list[_VOCObject]]:
    """Parse the fields of an ILSVRC/Pascal-VOC annotation: ``(width, height, objects)``."""
    # expat directly (not ElementTree): it reports the line of each element, for error messages.
    parser = xml.parsers.expat.ParserCreate()
    stack: list[str] = []
    text: list[str] = []
    size: dict[str, float] = {}
    size_line: list[int] = [0]
    objects: list[_VOCObject] = []

    def start(tag: str, _attrs: dict[str, str]) -> None:
        stack.append(tag)
        text.clear()
        if stack[-2:] == ["annotation", "object"]:
            objects.append(_VOCObject())
        elif stack[-2:] == ["object", "bndbox"] and objects:
            objects[-1].box_line = parser.CurrentLineNumber

    def chars(data: str) -> None:
        text.append(data)

    def end(tag: str) -> None:
        value = "".join(text).strip()
        text.clear()
        line = parser.CurrentLineNumber
        parent = stack[-2] if len(stack) > 1 else ""
        if parent == "size" and tag in ("width", "height"):
            size[tag] = parse_float(path, line, value)
            size_line[0] = line
        elif parent == "object" and tag == "name" and objects:
            objects[-1].name, objects[-1].name_line = value, line
        elif parent == "bndbox" and tag in ("xmin", "ymin", "xmax", "ymax") and objects:
            objects[-1].box[tag] = parse_float(path, line, value)
        stack.pop()

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(path.read_bytes(), True)
    except xml.parsers.expat.ExpatError as exc:
        reason = xml.parsers.expat.ErrorString(exc.code)
        raise MetadataError(f"{path}:{exc.lineno}: malformed XML ({reason})") from None
    except OSError as exc:
        raise MetadataError(f"{path}: cannot read ({' '.join(str(exc).split())})") from exc
    if "width" not in size or "height" not in size:
        raise MetadataError(f"{path}: no <size><width>/<height>")
    if min(size.values()) < 1 or any(v != int(v) for v in size.values()):
        raise MetadataError(f"{path}:{size_line[0]}: image size {size['width']:g} x {size['height']:g} "
                            "is not a positive whole number of pixels")
    if not objects:
        raise MetadataError(f"{path}: no <object>")
    for obj in objects:
        if not obj.name:
            raise MetadataError(f"{path}:{obj.box_line or 1}: <object> without <name>")
        if len(obj.box) != 4:
            raise MetadataError(f"{path}:{obj.name_line}: <object> without a complete <bndbox>")
    return int(size["width"]), int(size["height"]), objects


class ImageNetValDataset(LocalizationDataset):
    """ILSVRC 2012 validation images with their XML box annotations.

    Expected layout (``imagenet:<root>``), the first that exists is used:

    * Kaggle ``imagenet-object-localization-challenge``: ``<root>/ILSVRC/Data/CLS-LOC/val/``
      (JPEGs), ``<root>/ILSVRC/Annotations/CLS-LOC/val/`` (XML), ``<root>/LOC_synset_mapping.txt``.
    * Official archives: ``<root>/val/`` (``ILSVRC2012_img_val.tar``, flat or in per-synset
      folders), ``<root>/bbox/`` (``ILSVRC2012_bbox_val_v3.tgz``, XML found recursively), and
      optionally ``<root>/LOC_synset_mapping.txt`` or ``<root>/synsets.txt``.

    Each image ``ILSVRC2012_val_XXXXXXXX.JPEG`` is matched to ``ILSVRC2012_val_XXXXXXXX.xml``.
    The XML gives ``<size>`` and one or more ``<object>`` with ``<name>`` (a WordNet id) and
    ``<bndbox>`` ``xmin/ymin/xmax/ymax``. Coordinate convention: the values are used as
    0-based pixel indices with ``xmax``/``ymax`` inclusive, exactly as wsolevaluation's
    ILSVRC metadata and the Phang et al. scorer use them (there, ``xmin`` takes the value 0
    and ``xmax`` reaches ``width - 1`` but never ``width``); boxes are clipped to the image.
    The label is the first object's synset; only boxes of that synset are kept (all boxes of
    an ILSVRC val image share its class).

    Class indices come from ``synset_mapping`` (line order), or else from the sorted set of
    synsets found in the XML files, which equals the standard 1000-class order only when every
    class is present: pass the mapping when using a subset.

    Args:
        image_dir: folder of validation images (searched recursively).
        annotation_dir: folder of XML files (searched recursively).
        synset_mapping: optional ``LOC_synset_mapping.txt``-style file.
        size: output side ``S`` (see :class:`~masksal.data.images.ResizeCrop`).
        resize: ``"shorter_crop"``, ``"stretch"`` or ``"none"``.

    Attributes:
        synsets: WordNet id per class index; ``classes`` holds the names when the mapping
            file gives them, otherwise the synsets.
    """

    def __init__(
        self,
        image_dir: str | Path,
        annotation_dir: str | Path,
        synset_mapping: str | Path | None = None,
        *,
        size: int | None = 224,
        resize: ResizeMode = "shorter_crop",
    ) -> None:
        image_dir, annotation_dir = Path(image_dir), Path(annotation_dir)
        for d, what in ((image_dir, "image folder"), (annotation_dir, "annotation folder")):
            if not d.is_dir():
                raise MetadataError(f"{d}: missing {what}")
        xml_index: dict[str, list[Path]] = {}
        for p in sorted(annotation_dir.rglob("*.xml")):
            xml_index.setdefault(p.stem, []).append(p)
        images = image_files(image_dir)
        if not images:
            raise MetadataError(f"{image_dir}: no images found")
        seen: dict[str, Path] = {}
        parsed = []
        for img in images:
            if img.stem in seen:  # the id is the stem: two files would be one sample counted twice
                raise MetadataError(f"{img}: image {img.stem} found twice (also {seen[img.stem]})")
            seen[img.stem] = img
            xml_paths = xml_index.get(img.stem, [])
            if not xml_paths:
                raise MetadataError(f"{annotation_dir}: missing annotation {img.stem}.xml for image {img}")
            if len(xml_paths) > 1:
                raise MetadataError(f"{xml_paths[1]}: second annotation for image {img.stem} "
                                    f"(also {xml_paths[0]})")
            xml_path = xml_paths[0]
            parsed.append((img, xml_path, *_parse_voc_xml(xml_path)))

        names: list[str] | None = None
        if synset_mapping is not None:
            self.synsets, names = read_synset_mapping(synset_mapping)
        else:
            self.synsets = sorted({o.name for *_, objs in parsed for o in objs})
        index = {s: i for i, s in enumerate(self.synsets)}

        records = []
        for img, xml_path, width, height, objs in parsed:
            wnid = objs[0].name
            if wnid not in index:
                where = f"{xml_path}:{objs[0].name_line}"
                raise MetadataError(f"{where}: synset {wnid} is not in {synset_mapping}")
            boxes = []
            for o in objs:
                if o.name != wnid:
                    continue
                box = [o.box["xmin"], o.box["ymin"], o.box["xmax"], o.box["ymax"]]
                check_box(xml_path, o.box_line, box)
                boxes.append(box)
            records.append(
                Record(
                    path=img,
                    id=img.stem,
                    label=index[wnid],
                    boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                    box_frame=(width, height),
                )
            )
        super().__init__(
            records,
            size=size,
            resize=resize,
            num_classes=len(self.synsets),
            classes=names if names is not None else list(self.synsets),
        )

    @staticmethod
    def find_layout(root: str | Path) -> tuple[Path, Path, Path | None]:
        """``(image_dir, annotation_dir, synset_mapping or None)`` for a root laid out as above."""
        root = Path(root)
        mapping = next(
            (p for p in (root / "LOC_synset_mapping.txt", root / "synsets.txt") if p.is_file()), None
        )
        kaggle = (root / "ILSVRC/Data/CLS-LOC/val", root / "ILSVRC/Annotations/CLS-LOC/val")
        if kaggle[0].is_dir() and kaggle[1].is_dir():
            return kaggle[0], kaggle[1], mapping
        if (root / "val").is_dir() and (root / "bbox").is_dir():
            return root / "val", root / "bbox", mapping
        raise MetadataError(
            f"{root}: no ImageNet layout found (expected ILSVRC/Data/CLS-LOC/val + "
            "ILSVRC/Annotations/CLS-LOC/val, or val/ + bbox/)"
        )
