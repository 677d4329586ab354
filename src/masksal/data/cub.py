"""CUB-200-2011 with its original text files (``cub:<root>``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from masksal.data import metadata as md
from masksal.data.base import LocalizationDataset, Record
from masksal.data.images import ResizeMode

__all__ = ["CUBDataset"]

T = TypeVar("T")


class CUBDataset(LocalizationDataset):
    """CUB-200-2011 with its original text files.

    Reads, under ``root`` (the ``CUB_200_2011`` folder, or its parent):
    ``images.txt`` (``"<id> <relpath>"``, images under ``images/``), ``image_class_labels.txt``
    (``"<id> <class>"``, 1-based, turned 0-based), ``bounding_boxes.txt`` (``"<id> <x> <y> <w>
    <h>"``, floats), ``train_test_split.txt`` (``"<id> <is_train>"``) and, if present,
    ``classes.txt`` (``"<class> <name>"``) for :attr:`classes`.

    Validation: every file lists each image id of ``images.txt`` exactly once (and no other);
    classes are ``1..N`` (``N`` from ``classes.txt`` when present); box values are finite with
    ``w, h >= 0``; ``is_train`` is 0 or 1; image paths stay inside ``images/`` unless
    ``allow_outside_root``. Each fault is a one-line :class:`~masksal.data.metadata.MetadataError`
    naming file and line.

    Box conversion: ``(x, y, w, h)`` becomes the inclusive box ``(x, y, x + w, y + h)``, the
    conversion of wsolevaluation's CUB metadata (``1 60.0 27.0 325.0 304.0`` is listed there as
    ``60,27,385,331``). It fits the data: over the 5,794 test images ``x + w`` reaches
    ``width - 1`` but never ``width``, so ``x + w`` is the last pixel, not one past it.

    Args:
        root: dataset folder.
        split: ``"train"``, ``"test"`` or ``"all"``.
        size: output side ``S``.
        resize: ``"shorter_crop"``, ``"stretch"`` or ``"none"``.
        allow_outside_root: accept absolute image paths and ``..`` in ``images.txt``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        *,
        size: int | None = 224,
        resize: ResizeMode = "shorter_crop",
        allow_outside_root: bool = False,
    ) -> None:
        root = Path(root)
        if not (root / "images.txt").is_file() and (root / "CUB_200_2011" / "images.txt").is_file():
            root = root / "CUB_200_2011"
        if split not in ("train", "test", "all"):
            raise ValueError(f"CUB split must be 'train', 'test' or 'all', got {split!r}")

        images_txt = md.require_file(root / "images.txt", "CUB image list")
        paths: dict[str, Path] = {}
        rels: dict[str, str] = {}
        listed = md.IdRegistry(images_txt)
        used: dict[str, int] = {}
        for number, line in md.read_lines(images_txt):
            # Split once: the relative path is the rest of the line.
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise md.MetadataError(f"{images_txt}:{number}: expected '<id> <relpath>', got {line!r}")
            image_id, rel = parts[0], parts[1].strip()
            listed.add(image_id, number)
            if rel in used:
                raise md.MetadataError(f"{images_txt}:{number}: image {rel!r} listed twice (first on line {used[rel]})")
            used[rel] = number
            rels[image_id] = rel
            paths[image_id] = md.inside_root(root / "images", rel, images_txt, number, "image path",
                                          allow_outside_root=allow_outside_root)
        if not paths:
            raise md.MetadataError(f"{images_txt}: no images listed")

        classes: list[str] | None = None
        if (root / "classes.txt").is_file():
            classes = self._class_names(root / "classes.txt")
        top = len(classes) + 1 if classes else None
        label_of = self._table(root / "image_class_labels.txt", "<id> <class>", paths,
                               lambda f, n, v: md.parse_int(f, n, v[0], "class", low=1, high=top))
        boxes = self._table(root / "bounding_boxes.txt", "<id> <x> <y> <w> <h>", paths, _xywh_box)
        keep = set(paths)
        if split != "all":
            flags = self._table(root / "train_test_split.txt", "<id> <is_train>", paths,
                                lambda f, n, v: md.parse_int(f, n, v[0], "is_train", low=0, high=2))
            want = 1 if split == "train" else 0
            keep = {i for i, v in flags.items() if v == want}
        num_classes = len(classes) if classes else max(label_of.values())

        records = [
            Record(path=paths[i], id=rels[i], label=label_of[i] - 1, boxes=np.array([boxes[i]], dtype=np.float64))
            for i in sorted(keep, key=lambda k: listed.first_line[k])
        ]
        super().__init__(records, size=size, resize=resize, num_classes=num_classes, classes=classes)

    @staticmethod
    def _class_names(path: Path) -> list[str]:
        """Names of ``classes.txt``, whose class numbers must be exactly ``1..N``."""
        named: dict[int, str] = {}
        for number, line in md.read_lines(path):
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise md.MetadataError(f"{path}:{number}: expected '<class> <name>', got {line!r}")
            k = md.parse_int(path, number, parts[0], "class", low=1)
            if k in named:
                raise md.MetadataError(f"{path}:{number}: class {k} listed twice")
            named[k] = parts[1].strip()
        gaps = sorted(set(range(1, len(named) + 1)) - set(named))
        if gaps:
            raise md.MetadataError(f"{path}: class numbers are not 1..{len(named)} (no class {gaps[0]})")
        return [named[k] for k in sorted(named)]

    @staticmethod
    def _table(path: Path, form: str, ids: dict[str, Path], parse: Callable[[Path, int, list[str]], T]) -> dict[str, T]:
        """``{id: parse(path, line, values)}`` of a whitespace table listing every id of ``ids`` once."""
        md.require_file(path, "CUB metadata file")
        registry = md.IdRegistry(path, set(ids), "images.txt")
        out: dict[str, T] = {}
        for number, line in md.read_lines(path):
            key, *rest = md.split_fields(path, number, line, len(form.split()), None, form)
            registry.add(key, number)
            out[key] = parse(path, number, rest)
        registry.require_all(list(ids))
        return out


def _xywh_box(path: Path, number: int, values: list[str]) -> list[float]:
    """CUB's ``x y w h`` as the inclusive box ``(x, y, x + w, y + h)``."""
    x, y, w, h = (md.parse_float(path, number, v) for v in values)
    md.check_box(path, number, (x, y, x + w, y + h))
    return [x, y, x + w, y + h]
