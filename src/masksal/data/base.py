"""The base of the file-backed datasets: a list of image records, one resize/crop, per-sample errors.

Every dataset of :mod:`masksal.data` returns, for index ``i``, a dict ready for
:func:`masksal.types.collate`::

    {"image": (3, S, S) float32 in [0, 1],
     "label": int (class index; -1 when unknown),
     "boxes": (K, 4) float32 inclusive (x0, y0, x1, y1) after the resize/crop, K may be 0,
     "mask": (S, S) uint8, 1 object / 0 background / 255 ignore (only for mask datasets),
     "id": str,
     "orig_size": (H, W) of the file on disk}

or, when the image (or one of its mask files) cannot be read, an *error sample*
``{"error": "<path>: <reason>", "id": str}`` (:func:`error_sample`). :func:`masksal.types.collate`
drops error samples from the batch and lists their messages in ``Batch.skipped``, so one bad file
never ends a run. Images, boxes and masks all go through the same
:class:`~masksal.data.images.ResizeCrop` (or, for training on unannotated photos, through
:class:`~masksal.data.augment.Augment`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from masksal.data.augment import Augment
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

__all__ = ["LocalizationDataset", "Record", "collate_skip_errors", "error_sample", "image_files", "is_error"]


def error_sample(sample_id: str, message: str) -> dict[str, Any]:
    """The sample a dataset returns for a file it cannot read: ``{"error": message, "id": id}``.

    ``message`` is one line naming the file (``"<path>: <reason>"``).
    """
    return {"error": " ".join(str(message).split()), "id": str(sample_id)}


def is_error(sample: dict[str, Any]) -> bool:
    """Whether ``sample`` is an error sample (see :func:`error_sample`)."""
    return "error" in sample


def collate_skip_errors(samples: Sequence[dict[str, Any]]) -> tuple[Batch | None, list[str]]:
    """Collate samples, dropping error samples: ``(batch or None when none is left, messages)``.

    Kept for callers that want the messages apart; :func:`masksal.types.collate` drops error
    samples too and keeps their messages in ``Batch.skipped``.
    """
    batch = collate(list(samples))
    return (batch if len(batch) else None), list(batch.skipped)


@dataclass(frozen=True)
class Record:
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
    """Base of the file-backed datasets: a list of image records and one :class:`ResizeCrop`.

    Args:
        records: the images, in dataset order.
        size: output side ``S`` (``None`` only with ``resize="none"``).
        resize: ``"shorter_crop"``, ``"stretch"`` or ``"none"``.
        num_classes: number of classes, or ``None`` when unknown (unlabelled images).
        classes: class names indexed by label, or ``None``.
        has_masks: whether samples carry a ``"mask"``.
        augment: random crop/flip applied instead of ``resize`` (only for records without boxes
            or masks: the augmentation does not move ground truth).

    Attributes:
        num_classes, classes, has_masks: as above.
        transform: the resize/crop applied to images, boxes and masks.
        augment: the augmentation, or ``None``.
        epoch: the epoch the augmentation draws for (see :meth:`set_epoch`).
    """

    def __init__(
        self,
        records: list[Record],
        *,
        size: int | None = 224,
        resize: ResizeMode = "shorter_crop",
        num_classes: int | None = None,
        classes: list[str] | None = None,
        has_masks: bool = False,
        augment: Augment | None = None,
    ) -> None:
        if augment is not None and (has_masks or any(len(r.boxes) for r in records)):
            raise ValueError("augmentation is only for images without boxes or masks")
        self.records = records
        self.transform = ResizeCrop(size, resize)
        self.num_classes = num_classes
        self.classes = classes
        self.has_masks = has_masks
        self.augment = augment
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    @property
    def ids(self) -> list[str]:
        """Sample identifiers, in dataset order."""
        return [r.id for r in self.records]

    @property
    def labels(self) -> list[int]:
        """Class index of every sample, in dataset order (-1 when unknown)."""
        return [r.label for r in self.records]

    def set_epoch(self, epoch: int) -> None:
        """Draw the augmentation of ``epoch`` (as ``DistributedSampler.set_epoch``); no-op without it."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        try:
            image = read_image(rec.path)
            mask = self._read_mask(rec, image.shape[0], image.shape[1]) if self.has_masks else None
        except ImageReadError as exc:
            return error_sample(rec.id, str(exc))
        h, w = int(image.shape[0]), int(image.shape[1])
        if self.augment is not None:
            img_t = self.augment(torch.tensor(image).permute(2, 0, 1), self.epoch, index)
            box_t, mask_t = torch.zeros(0, 4), None
        else:
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
    def _read_mask(rec: Record, height: int, width: int) -> np.ndarray:
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


def is_image_file(path: str | Path) -> bool:
    """A file with an image extension (any case) whose name is not hidden (``.x``, ``._x``)."""
    name = Path(path).name
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def image_files(root: Path) -> list[Path]:
    """Image files under ``root``, recursively, sorted by relative path; hidden entries skipped."""
    found = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if is_image_file(p) and p.is_file():
            found.append(p)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())
