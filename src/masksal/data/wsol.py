"""A split in the metadata layout of clovaai/wsolevaluation (``wsol:<metadata_dir>:<image_root>``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from masksal.data import metadata as md
from masksal.data.base import LocalizationDataset, Record
from masksal.data.images import ResizeMode

__all__ = ["WSOLDataset"]

_BOX_FORM = "<image_id>,<x0>,<y0>,<x1>,<y1>"
_MASK_FORM = "<image_id>,<mask>,<ignore>"


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

    Validation (each fault a one-line :class:`~masksal.data.metadata.MetadataError` with
    file:line): spaces around commas are stripped; an id listed twice in ``image_ids.txt``,
    ``class_labels.txt`` or ``image_sizes.txt``, or an id missing from ``image_ids.txt``, is
    refused; class indices must be ``>= 0`` and below the class count when it is known
    (``num_classes`` or ``class_names.txt``); sizes are positive integers; box coordinates are
    finite with ``x0 <= x1``, ``y0 <= y1``; image ids and mask paths must stay inside their root
    (no absolute path, no ``..`` climbing out) unless ``allow_outside_root=True``.

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
        allow_outside_root: accept absolute paths and ``..`` in image ids and mask paths.
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
        allow_outside_root: bool = False,
    ) -> None:
        meta = Path(metadata_dir)
        if not (meta / "image_ids.txt").is_file() and (meta / split / "image_ids.txt").is_file():
            meta = meta / split
        image_root = Path(image_root)
        mask_root = Path(mask_root) if mask_root is not None else image_root
        self.metadata_dir = meta
        self._outside = allow_outside_root

        ids_file = md.require_file(meta / "image_ids.txt", "wsolevaluation image list")
        listed = md.IdRegistry(ids_file)
        paths: dict[str, Path] = {}
        for number, line in md.read_lines(ids_file):
            listed.add(line, number)
            paths[line] = md.inside_root(image_root, line, ids_file, number, "image id",
                                      allow_outside_root=allow_outside_root)
        ids = list(paths)
        if not ids:
            raise md.MetadataError(f"{ids_file}: no image ids")
        known = set(ids)

        classes: list[str] | None = None
        names_file = meta / "class_names.txt"
        if names_file.is_file():
            classes = [line for _, line in md.read_lines(names_file)]
            if num_classes is None:
                num_classes = len(classes)

        labels_file = md.require_file(meta / "class_labels.txt", "wsolevaluation class labels")
        labels: dict[str, int] = {}
        registry = md.IdRegistry(labels_file, known, "image_ids.txt")
        for number, line in md.read_lines(labels_file):
            image_id, value = md.split_fields(labels_file, number, line, 2, ",", "<image_id>,<class>")
            registry.add(image_id, number)
            labels[image_id] = md.parse_int(labels_file, number, value, "class", low=0, high=num_classes)
        registry.require_all(ids)

        sizes: dict[str, tuple[int, int]] = {}
        sizes_file = meta / "image_sizes.txt"
        if sizes_file.is_file():
            registry = md.IdRegistry(sizes_file, known, "image_ids.txt")
            for number, line in md.read_lines(sizes_file):
                image_id, w, h = md.split_fields(sizes_file, number, line, 3, ",", "<image_id>,<width>,<height>")
                registry.add(image_id, number)
                sizes[image_id] = (md.parse_int(sizes_file, number, w, "width", low=1),
                                   md.parse_int(sizes_file, number, h, "height", low=1))

        boxes: dict[str, list[list[float]]] = {}
        masks: dict[str, list[Path]] = {}
        ignores: dict[str, Path] = {}
        loc_file = meta / "localization.txt"
        if loc_file.is_file():
            self._localization(loc_file, known, mask_root, boxes, masks, ignores)
            if masks:
                # A box split may leave an image without boxes (K = 0); a mask is never invented.
                missing = [i for i in ids if i not in masks]
                if missing:
                    raise md.MetadataError(f"{loc_file}: no line for image id {missing[0]} ({len(missing)} missing)")
        extra_boxes = meta / "localization_boxes.txt"
        if masks and extra_boxes.is_file():
            registry = md.IdRegistry(extra_boxes, known, "image_ids.txt")
            for number, line in md.read_lines(extra_boxes):
                parts = md.split_fields(extra_boxes, number, line, 5, ",", _BOX_FORM)
                registry.add(parts[0], number, repeats=True)
                boxes.setdefault(parts[0], []).append(self._box(extra_boxes, number, parts))

        if num_classes is None:
            num_classes = max(labels.values()) + 1

        records = [
            Record(
                path=paths[image_id],
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

    def _localization(self, loc_file: Path, known: set[str], mask_root: Path, boxes: dict[str, list[list[float]]],
                      masks: dict[str, list[Path]], ignores: dict[str, Path]) -> None:
        """Read ``localization.txt`` (box lines or mask lines) into ``boxes`` or ``masks``/``ignores``."""
        registry = md.IdRegistry(loc_file, known, "image_ids.txt")
        for number, line in md.read_lines(loc_file):
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 5:
                registry.add(parts[0], number, repeats=True)
                boxes.setdefault(parts[0], []).append(self._box(loc_file, number, parts))
            elif len(parts) == 3 and parts[0]:
                image_id, mask_path, ignore_path = parts
                registry.add(image_id, number, repeats=True)
                if not mask_path:
                    raise md.MetadataError(f"{loc_file}:{number}: empty mask path")
                masks.setdefault(image_id, []).append(
                    md.inside_root(mask_root, mask_path, loc_file, number, "mask path",
                                   allow_outside_root=self._outside))
                if ignore_path:
                    if image_id in ignores:
                        raise md.MetadataError(f"{loc_file}:{number}: second ignore mask for {image_id}")
                    ignores[image_id] = md.inside_root(mask_root, ignore_path, loc_file, number, "ignore mask path",
                                                    allow_outside_root=self._outside)
            else:
                raise md.MetadataError(f"{loc_file}:{number}: expected '{_BOX_FORM}' or '{_MASK_FORM}', got {line!r}")
            if boxes and masks:
                raise md.MetadataError(f"{loc_file}:{number}: mixes box lines and mask lines")

    @staticmethod
    def _box(path: Path, number: int, parts: list[str]) -> list[float]:
        box = [md.parse_float(path, number, v) for v in parts[1:]]
        md.check_box(path, number, box)
        return box
