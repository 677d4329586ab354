"""Datasets for real localization benchmarks, all yielding the same sample dicts.

Every dataset here returns, for index ``i``, a dict ready for :func:`masksal.types.collate`::

    {"image": (3, S, S) float32 in [0, 1],
     "label": int (class index; -1 when unknown),
     "boxes": (K, 4) float32 inclusive (x0, y0, x1, y1) after the resize/crop, K may be 0,
     "mask": (S, S) uint8, 1 object / 0 background / 255 ignore (only for mask datasets),
     "id": str,
     "orig_size": (H, W) of the file on disk}

or, when the image (or one of its mask files) cannot be read, ``{"error": "<path>: <reason>",
"id": str}``; :func:`collate_skip_errors` drops those and hands back their messages, so one bad
file never ends a run. Images, boxes and masks all go through the same
:class:`~masksal.data.images.ResizeCrop`. Metadata problems (a missing file, a malformed line)
raise :class:`MetadataError`, a ``ValueError`` whose one-line message names the file and line.

Adapters: :class:`ImageNetValDataset` (ILSVRC val JPEGs + Pascal-VOC-style XML boxes),
:class:`CUBDataset` (CUB-200-2011 text files), :class:`WSOLDataset` (the metadata layout of
clovaai/wsolevaluation, boxes or OpenImages-style pixel masks), :class:`ImageFolderDataset`
(any folder of images, no ground truth), and :func:`load_dataset` to build any of them, or the
built-in procedural benchmark, from one spec string.
"""

from __future__ import annotations

import re
import xml.parsers.expat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from masksal.data.benchmark import BenchmarkDataset
from masksal.data.images import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    ResizeCrop,
    ResizeMode,
    nearest_resize,
    read_image,
    read_mask,
)
from masksal.types import IGNORE, Batch, collate

__all__ = [
    "CUBDataset",
    "ImageFolderDataset",
    "ImageNetValDataset",
    "LocalizationDataset",
    "MetadataError",
    "WSOLDataset",
    "collate_skip_errors",
    "load_dataset",
    "read_synset_mapping",
]


class MetadataError(ValueError):
    """A missing or malformed metadata file; the message is one line naming file (and line)."""


def collate_skip_errors(samples: Sequence[dict[str, Any]]) -> tuple[Batch | None, list[str]]:
    """Collate samples, dropping the ones whose image could not be read.

    Use as ``DataLoader(..., collate_fn=collate_skip_errors)``.

    Args:
        samples: dataset samples; error samples carry an ``"error"`` key.

    Returns:
        ``(batch, errors)``: the :class:`~masksal.types.Batch` of the good samples (``None``
        when none is left) and one ``"<path>: <reason>"`` message per dropped sample.
    """
    errors = [str(s["error"]) for s in samples if "error" in s]
    good = [s for s in samples if "error" not in s]
    return (collate(good) if good else None), errors


# --------------------------------------------------------------------------- shared machinery


@dataclass(frozen=True)
class _Record:
    """One image and its ground truth, in the pixel grid of the file on disk."""

    path: Path
    id: str
    label: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    # (W, H) of the grid the boxes were annotated in, when the metadata states it; boxes are
    # rescaled to the actual image when the two differ (what wsolevaluation effectively does).
    box_frame: tuple[int, int] | None = None
    mask_paths: tuple[Path, ...] = ()
    ignore_path: Path | None = None


class LocalizationDataset(Dataset[dict[str, Any]]):
    """Base of the adapters: a list of image records and one :class:`ResizeCrop`.

    Attributes:
        num_classes: number of classes, or ``None`` when unknown.
        classes: class names indexed by label, or ``None``.
        has_masks: whether samples carry a ``"mask"``.
        transform: the resize/crop applied to images, boxes and masks.
    """

    def __init__(
        self,
        records: list[_Record],
        *,
        size: int | None = 224,
        resize: ResizeMode = "shorter_crop",
        num_classes: int | None = None,
        classes: list[str] | None = None,
        has_masks: bool = False,
    ) -> None:
        self.records = records
        self.transform = ResizeCrop(size, resize)
        self.num_classes = num_classes
        self.classes = classes
        self.has_masks = has_masks

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    @property
    def ids(self) -> list[str]:
        """Sample identifiers, in dataset order."""
        return [r.id for r in self.records]

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        try:
            image = read_image(rec.path)
            mask = self._read_mask(rec, image.shape[0], image.shape[1]) if self.has_masks else None
        except ImageReadError as exc:
            return {"error": str(exc), "id": rec.id}
        h, w = int(image.shape[0]), int(image.shape[1])
        boxes = _to_frame(rec.boxes, rec.box_frame, w, h)
        img_t, box_t, mask_t = self.transform(image, boxes, mask)
        sample: dict[str, Any] = {
            "image": img_t,
            "label": int(rec.label),
            "boxes": box_t,
            "id": rec.id,
            "orig_size": (h, w),
        }
        if mask_t is not None:
            sample["mask"] = mask_t
        return sample

    @staticmethod
    def _read_mask(rec: _Record, height: int, width: int) -> np.ndarray:
        """Union of the instance masks (> 0 is object); ignore = ignore region minus objects.

        A mask file stored at another resolution than its image is resampled onto the image grid.
        """
        fg = np.zeros((height, width), dtype=bool)
        for p in rec.mask_paths:
            fg |= nearest_resize(read_mask(p), height, width) > 0
        out = fg.astype(np.uint8)
        if rec.ignore_path is not None:
            ignore = nearest_resize(read_mask(rec.ignore_path), height, width) > 0
            out[ignore & ~fg] = IGNORE
        return out


def _to_frame(boxes: np.ndarray, frame: tuple[int, int] | None, width: int, height: int) -> np.ndarray:
    """Rescale inclusive boxes from an annotated ``(W, H)`` frame to the actual image size."""
    if frame is None or frame == (width, height) or len(boxes) == 0 or min(frame) <= 0:
        return boxes
    sx, sy = width / frame[0], height / frame[1]
    b = np.asarray(boxes, dtype=np.float64)
    return np.stack(
        [b[:, 0] * sx, b[:, 1] * sy, (b[:, 2] + 1) * sx - 1, (b[:, 3] + 1) * sy - 1], axis=1
    )


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise MetadataError(f"{path}: missing {what}")
    return path


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MetadataError(f"{path}: cannot read ({' '.join(str(exc).split())})") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line.strip()


def _fields(path: Path, number: int, line: str, n: int, sep: str | None, form: str) -> list[str]:
    parts = line.split(sep) if sep else line.split()
    if len(parts) != n:
        raise MetadataError(f"{path}:{number}: expected '{form}', got {line!r}")
    return [p.strip() for p in parts]


def _number(path: Path, number: int, text: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise MetadataError(f"{path}:{number}: {text!r} is not a valid {kind.__name__}") from None


def _check_box(path: Path, number: int, box: Sequence[float]) -> None:
    if box[2] < box[0] or box[3] < box[1]:
        raise MetadataError(f"{path}:{number}: box {tuple(box)} has x1 < x0 or y1 < y0")


def _image_files(root: Path) -> list[Path]:
    """Image files under ``root``, recursively, sorted by relative path; hidden entries skipped."""
    found = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
            found.append(p)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


# --------------------------------------------------------------------------- ImageNet


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
    path = _require_file(Path(path), "synset mapping file")
    synsets: list[str] = []
    names: list[str] = []
    for number, line in _lines(path):
        wnid, _, name = line.partition(" ")
        if not _SYNSET.match(wnid):
            raise MetadataError(f"{path}:{number}: expected 'nXXXXXXXX [name]', got {line!r}")
        if wnid in synsets:
            raise MetadataError(f"{path}:{number}: synset {wnid} listed twice")
        synsets.append(wnid)
        names.append(name.strip())
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
            size[tag] = _number(path, line, value, float)
        elif parent == "object" and tag == "name" and objects:
            objects[-1].name, objects[-1].name_line = value, line
        elif parent == "bndbox" and tag in ("xmin", "ymin", "xmax", "ymax") and objects:
            objects[-1].box[tag] = _number(path, line, value, float)
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
        xml_index = {p.stem: p for p in annotation_dir.rglob("*.xml")}
        images = _image_files(image_dir)
        if not images:
            raise MetadataError(f"{image_dir}: no images found")
        parsed = []
        for img in images:
            xml_path = xml_index.get(img.stem)
            if xml_path is None:
                raise MetadataError(f"{annotation_dir}: missing annotation {img.stem}.xml for image {img}")
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
                _check_box(xml_path, o.box_line, box)
                boxes.append(box)
            records.append(
                _Record(
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


# --------------------------------------------------------------------------- CUB-200-2011


class CUBDataset(LocalizationDataset):
    """CUB-200-2011 with its original text files.

    Reads, under ``root`` (the ``CUB_200_2011`` folder, or its parent):
    ``images.txt`` (``"<id> <relpath>"``, images under ``images/``), ``image_class_labels.txt``
    (``"<id> <class>"``, 1-based, turned 0-based), ``bounding_boxes.txt`` (``"<id> <x> <y> <w>
    <h>"``, floats), ``train_test_split.txt`` (``"<id> <is_train>"``) and, if present,
    ``classes.txt`` (``"<class> <name>"``) for :attr:`classes`.

    Box conversion: ``(x, y, w, h)`` becomes the inclusive box ``(x, y, x + w, y + h)``, the
    conversion of wsolevaluation's CUB metadata (``1 60.0 27.0 325.0 304.0`` is listed there as
    ``60,27,385,331``). It fits the data: over the 5,794 test images ``x + w`` reaches
    ``width - 1`` but never ``width``, so ``x + w`` is the last pixel, not one past it.

    Args:
        root: dataset folder.
        split: ``"train"``, ``"test"`` or ``"all"``.
        size: output side ``S``.
        resize: ``"shorter_crop"``, ``"stretch"`` or ``"none"``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        *,
        size: int | None = 224,
        resize: ResizeMode = "shorter_crop",
    ) -> None:
        root = Path(root)
        if not (root / "images.txt").is_file() and (root / "CUB_200_2011" / "images.txt").is_file():
            root = root / "CUB_200_2011"
        if split not in ("train", "test", "all"):
            raise ValueError(f"CUB split must be 'train', 'test' or 'all', got {split!r}")

        images_txt = _require_file(root / "images.txt", "CUB image list")
        paths: dict[str, str] = {}
        for number, line in _lines(images_txt):
            # Split once: the relative path is the rest of the line.
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise MetadataError(f"{images_txt}:{number}: expected '<id> <relpath>', got {line!r}")
            paths[parts[0]] = parts[1]

        labels = self._table(root / "image_class_labels.txt", 2, "<id> <class>", int, paths)
        boxes = self._table(root / "bounding_boxes.txt", 5, "<id> <x> <y> <w> <h>", float, paths)
        keep = set(paths)
        if split != "all":
            flags = self._table(root / "train_test_split.txt", 2, "<id> <is_train>", int, paths)
            want = 1 if split == "train" else 0
            keep = {i for i, v in flags.items() if v[0] == want}

        classes: list[str] | None = None
        if (root / "classes.txt").is_file():
            named = self._table(root / "classes.txt", 2, "<class> <name>", str, None)
            classes = [named[k][0] for k in sorted(named, key=int)]
        num_classes = len(classes) if classes else max(v[0] for v in labels.values())

        records = []
        for image_id in sorted(keep, key=int):
            x, y, w, h = boxes[image_id]
            records.append(
                _Record(
                    path=root / "images" / paths[image_id],
                    id=paths[image_id],
                    label=labels[image_id][0] - 1,
                    boxes=np.array([[x, y, x + w, y + h]], dtype=np.float64),
                )
            )
        super().__init__(records, size=size, resize=resize, num_classes=num_classes, classes=classes)

    @staticmethod
    def _table(
        path: Path, n: int, form: str, kind: Any, ids: dict[str, str] | None
    ) -> dict[str, list[Any]]:
        """``{id: values}`` from a whitespace table; with ``ids``, every id must appear once."""
        _require_file(path, "CUB metadata file")
        out: dict[str, list[Any]] = {}
        for number, line in _lines(path):
            if kind is str:
                parts = line.split(maxsplit=1)
                if len(parts) != 2:
                    raise MetadataError(f"{path}:{number}: expected '{form}', got {line!r}")
                out[parts[0]] = [parts[1]]
                continue
            key, *rest = _fields(path, number, line, n, None, form)
            if ids is not None and key not in ids:
                raise MetadataError(f"{path}:{number}: image id {key} is not in images.txt")
            values = [_number(path, number, v, kind) for v in rest]
            if n == 5:
                x, y, w, h = values
                _check_box(path, number, (x, y, x + w, y + h))
            out[key] = values
        if ids is not None:
            missing = [i for i in ids if i not in out]
            if missing:
                raise MetadataError(f"{path}: no line for image id {missing[0]} ({len(missing)} missing)")
        return out


# --------------------------------------------------------------------------- wsolevaluation


class WSOLDataset(LocalizationDataset):
    """A split in the metadata layout of clovaai/wsolevaluation (Choe et al., CVPR 2020).

    ``metadata_dir`` holds (or its ``<split>/`` subfolder holds) the comma-separated files:

    * ``image_ids.txt``: ``<image_id>`` per line, a path relative to ``image_root``;
    * ``class_labels.txt``: ``<image_id>,<class index>``;
    * ``image_sizes.txt``: ``<image_id>,<width>,<height>`` (may be empty, as for OpenImages);
    * ``localization.txt``, either boxes ``<image_id>,<x0>,<y0>,<x1>,<y1>`` (ImageNet, CUB;
      0-based inclusive pixel indices; one line per box) or masks
      ``<image_id>,<mask_path>,<ignore_path>`` (OpenImages30k; one line per instance mask,
      the ignore path given on the image's first line only, paths relative to ``mask_root``).
      Absent or empty for splits without localization (train). In a box split an image
      without lines has no boxes; in a mask split every image needs a mask.

    Boxes are read in the frame of ``image_sizes.txt`` and rescaled to the actual image when
    the two differ. A mask pixel is object when any instance mask is > 0 there; ignore (255)
    when the ignore mask is > 0 and no instance covers it, as wsolevaluation's ``get_mask``.

    Two optional files, written by :func:`~masksal.data.export.export_wsol` and unknown to
    wsolevaluation: ``localization_boxes.txt`` (boxes of a mask split, box format) and
    ``class_names.txt`` (one name per line, line ``i`` = class ``i``).

    Args:
        metadata_dir: ``metadata/<dataset>/<split>`` or ``metadata/<dataset>``.
        image_root: root the image ids are relative to (e.g. ``dataset/CUB``).
        mask_root: root of the mask paths; defaults to ``image_root`` (wsolevaluation keeps
            OpenImages masks next to the images).
        split: subfolder of ``metadata_dir`` to use when it has no ``image_ids.txt`` itself.
        num_classes: overrides the class count (default: names file, else max label + 1).
        size: output side ``S``.
        resize: ``"shorter_crop"``, ``"stretch"`` or ``"none"``.
    """

    def __init__(
        self,
        metadata_dir: str | Path,
        image_root: str | Path,
        mask_root: str | Path | None = None,
        *,
        split: str = "test",
        num_classes: int | None = None,
        size: int | None = 224,
        resize: ResizeMode = "shorter_crop",
    ) -> None:
        meta = Path(metadata_dir)
        if not (meta / "image_ids.txt").is_file() and (meta / split / "image_ids.txt").is_file():
            meta = meta / split
        image_root = Path(image_root)
        mask_root = Path(mask_root) if mask_root is not None else image_root
        self.metadata_dir = meta

        ids_file = _require_file(meta / "image_ids.txt", "wsolevaluation image list")
        ids = [line for _, line in _lines(ids_file)]
        known = set(ids)
        if not ids:
            raise MetadataError(f"{ids_file}: no image ids")

        labels_file = _require_file(meta / "class_labels.txt", "wsolevaluation class labels")
        labels: dict[str, int] = {}
        for number, line in _lines(labels_file):
            image_id, value = _fields(labels_file, number, line, 2, ",", "<image_id>,<class>")
            labels[image_id] = _number(labels_file, number, value, int)
        self._all_listed(labels_file, ids, labels)

        sizes: dict[str, tuple[int, int]] = {}
        sizes_file = meta / "image_sizes.txt"
        if sizes_file.is_file():
            for number, line in _lines(sizes_file):
                image_id, w, h = _fields(sizes_file, number, line, 3, ",", "<image_id>,<width>,<height>")
                sizes[image_id] = (_number(sizes_file, number, w, int), _number(sizes_file, number, h, int))

        boxes: dict[str, list[list[float]]] = {}
        masks: dict[str, list[Path]] = {}
        ignores: dict[str, Path] = {}
        loc_file = meta / "localization.txt"
        if loc_file.is_file():
            for number, line in _lines(loc_file):
                parts = line.split(",")
                if len(parts) == 5:
                    boxes.setdefault(parts[0], []).append(self._box(loc_file, number, parts))
                elif len(parts) == 3:
                    image_id, mask_path, ignore_path = (p.strip() for p in parts)
                    if not mask_path:
                        raise MetadataError(f"{loc_file}:{number}: empty mask path")
                    masks.setdefault(image_id, []).append(mask_root / mask_path)
                    if ignore_path:
                        if image_id in ignores:
                            raise MetadataError(f"{loc_file}:{number}: second ignore mask for {image_id}")
                        ignores[image_id] = mask_root / ignore_path
                else:
                    raise MetadataError(
                        f"{loc_file}:{number}: expected '<image_id>,<x0>,<y0>,<x1>,<y1>' or "
                        f"'<image_id>,<mask>,<ignore>', got {line!r}"
                    )
                if parts[0].strip() not in known:
                    raise MetadataError(f"{loc_file}:{number}: image id {parts[0]!r} is not in image_ids.txt")
            if boxes and masks:
                raise MetadataError(f"{loc_file}: mixes box lines and mask lines")
            if masks:
                # A box split may leave an image without boxes (K = 0); a mask is never invented.
                self._all_listed(loc_file, ids, masks)
        extra_boxes = meta / "localization_boxes.txt"
        if masks and extra_boxes.is_file():
            for number, line in _lines(extra_boxes):
                parts = _fields(extra_boxes, number, line, 5, ",", "<image_id>,<x0>,<y0>,<x1>,<y1>")
                boxes.setdefault(parts[0], []).append(self._box(extra_boxes, number, parts))

        classes: list[str] | None = None
        names_file = meta / "class_names.txt"
        if names_file.is_file():
            classes = [line for _, line in _lines(names_file)]
        if num_classes is None:
            num_classes = len(classes) if classes else max(labels[i] for i in ids) + 1

        records = [
            _Record(
                path=image_root / image_id,
                id=image_id,
                label=labels[image_id],
                boxes=np.asarray(boxes.get(image_id, []), dtype=np.float64).reshape(-1, 4),
                box_frame=sizes.get(image_id),
                mask_paths=tuple(masks.get(image_id, ())),
                ignore_path=ignores.get(image_id),
            )
            for image_id in ids
        ]
        super().__init__(
            records,
            size=size,
            resize=resize,
            num_classes=num_classes,
            classes=classes,
            has_masks=bool(masks),
        )

    @staticmethod
    def _box(path: Path, number: int, parts: list[str]) -> list[float]:
        box = [_number(path, number, v.strip(), float) for v in parts[1:]]
        _check_box(path, number, box)
        return box

    @staticmethod
    def _all_listed(path: Path, ids: list[str], table: dict[str, Any]) -> None:
        missing = [i for i in ids if i not in table]
        if missing:
            raise MetadataError(f"{path}: no line for image {missing[0]} ({len(missing)} missing)")


# --------------------------------------------------------------------------- plain folders


class ImageFolderDataset(LocalizationDataset):
    """Every image under a folder, for explanation only (no ground truth).

    Files with a common image extension (:data:`~masksal.data.images.IMAGE_EXTENSIONS`,
    any case) are found recursively, hidden files and folders skipped, and ordered by their
    path relative to ``root`` (``"a/x.png" < "b.png"``). Samples have ``label`` -1, no boxes,
    ``id`` = the relative path, and ``orig_size`` so maps can be resized back to the file.

    Args:
        root: folder to search.
        size: output side ``S``.
        resize: ``"shorter_crop"``, ``"stretch"`` or ``"none"``.
    """

    def __init__(
        self, root: str | Path, *, size: int | None = 224, resize: ResizeMode = "shorter_crop"
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise MetadataError(f"{root}: missing image folder")
        files = _image_files(root)
        if not files:
            raise MetadataError(f"{root}: no images found")
        records = [_Record(path=p, id=p.relative_to(root).as_posix(), label=-1) for p in files]
        super().__init__(records, size=size, resize=resize)


# --------------------------------------------------------------------------- factory


def load_dataset(
    spec: str,
    split: str = "test",
    size: int = 224,
    resize: ResizeMode = "shorter_crop",
    **kw: Any,
) -> LocalizationDataset | BenchmarkDataset:
    """Build a dataset from a spec string.

    Specs:

    * ``"benchmark"``: the built-in procedural benchmark, ``BenchmarkDataset(split=split,
      n=kw["n"], size=size)`` (its images are drawn at ``size``; ``resize`` does not apply).
    * ``"imagenet:<root>"``: :class:`ImageNetValDataset` on the layout documented there
      (``split`` "val" or "test"; keywords ``image_dir``, ``annotation_dir``,
      ``synset_mapping`` override the detected paths).
    * ``"cub:<root>"``: :class:`CUBDataset` (``split`` "train", "test" or "all").
    * ``"wsol:<metadata_dir>:<image_root>"``: :class:`WSOLDataset`; also ``"wsol"`` with
      keywords ``metadata_dir``, ``image_root`` and optional ``mask_root``, ``num_classes``.
    * ``"folder:<dir>"``: :class:`ImageFolderDataset` (``split`` is ignored).

    Args:
        spec: one of the above.
        split: dataset split.
        size: output side ``S`` of images, boxes and masks.
        resize: ``"shorter_crop"`` (default), ``"stretch"`` or ``"none"``.
        **kw: dataset-specific keywords (see above).

    Returns:
        A map-style dataset of sample dicts, with ``num_classes`` and ``classes`` attributes.
    """
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "benchmark":
        return BenchmarkDataset(split=split, size=size, **kw)
    if kind == "imagenet":
        if split not in ("val", "test"):
            raise ValueError(f"ImageNet has boxes for the validation split only (val, test), not {split!r}")
        if rest:
            image_dir, annotation_dir, mapping = ImageNetValDataset.find_layout(rest)
            kw.setdefault("image_dir", image_dir)
            kw.setdefault("annotation_dir", annotation_dir)
            kw.setdefault("synset_mapping", mapping)
        return ImageNetValDataset(size=size, resize=resize, **kw)
    if kind == "cub":
        return CUBDataset(rest or kw.pop("root"), split=split, size=size, resize=resize, **kw)
    if kind == "wsol":
        if rest:
            metadata_dir, sep, image_root = rest.partition(":")
            if not sep:
                raise ValueError(f"expected 'wsol:<metadata_dir>:<image_root>', got {spec!r}")
            kw.setdefault("metadata_dir", metadata_dir)
            kw.setdefault("image_root", image_root)
        return WSOLDataset(split=split, size=size, resize=resize, **kw)
    if kind == "folder":
        return ImageFolderDataset(rest or kw.pop("root"), size=size, resize=resize, **kw)
    raise ValueError(
        f"unknown dataset spec {spec!r}: expected 'benchmark', 'imagenet:<root>', 'cub:<root>', "
        "'wsol:<metadata_dir>:<image_root>' or 'folder:<dir>'"
    )
