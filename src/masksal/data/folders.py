"""Plain folders of images: unlabelled (``folder:DIR``, explanation only) or one subfolder per class
(``imagefolder:DIR``, torchvision's ImageFolder layout, for training and evaluation)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from torchvision.datasets.folder import make_dataset

from masksal.data.augment import Augment, augment_by_default
from masksal.data.base import LocalizationDataset, Record, image_files, is_image_file
from masksal.data.images import ResizeMode
from masksal.data.metadata import MetadataError

__all__ = ["ClassFolderDataset", "UnlabelledFolderDataset"]

SPLITS = ("train", "val", "test", "all")


class UnlabelledFolderDataset(LocalizationDataset):
    """Every image under a folder, for explanation only (no labels, no ground truth).

    Files with a common image extension (:data:`~masksal.data.images.IMAGE_EXTENSIONS`,
    any case) are found recursively, hidden files and folders skipped, and ordered by their
    path relative to ``root`` (``"a/x.png" < "b.png"``). Samples have ``label`` -1, no boxes,
    ``id`` = the relative path, and ``orig_size`` so maps can be resized back to the file.
    ``num_classes`` is ``None``: an evaluation explains the top-1 class and has no label-based
    metric. To train, use :class:`ClassFolderDataset` (``imagefolder:DIR``).

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
        files = image_files(root)
        if not files:
            raise MetadataError(f"{root}: no images found")
        records = [Record(path=p, id=p.relative_to(root).as_posix(), label=-1) for p in files]
        super().__init__(records, size=size, resize=resize)


def _class_dirs(folder: Path) -> list[str]:
    # torchvision's find_classes, minus hidden folders (.ipynb_checkpoints, .DS_Store dirs...),
    # which would otherwise become classes.
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _split_folders(root: Path) -> tuple[Path, Path] | None:
    """``(train, held-out)`` folders when ``root`` has ``train/`` and ``val/`` (or ``test/``) of class folders."""
    train = root / "train"
    held = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if train.is_dir() and held is not None and _class_dirs(train) and _class_dirs(held):
        return train, held
    return None


def _held_out_rank(seed: int, key: str) -> str:
    return hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()


class ClassFolderDataset(LocalizationDataset):
    """Images in one subfolder per class (torchvision's ``ImageFolder`` layout): ``imagefolder:DIR``.

    Class names are the subfolder names, sorted; class ``i`` is the ``i``-th name (as
    ``torchvision.datasets.ImageFolder``, whose ``make_dataset`` walks the folders; hidden
    folders and files are skipped). Images may sit in nested folders inside a class folder.
    Samples have no boxes (``boxes`` is ``(0, 4)``) and ``id`` = the path relative to ``root``.

    Splits, by layout:

    * ``DIR/train/<class>/...`` and ``DIR/val/<class>/...`` (or ``DIR/test/``): ``"train"``
      reads ``train/``; ``"val"`` and ``"test"`` read ``val/`` (or ``test/``, whichever exists,
      ``val/`` first); classes come from ``train/`` and a held-out class absent from it is an
      error. Used when both folders exist and hold subfolders.
    * otherwise ``DIR/<class>/...``: a deterministic stratified hold-out. In each class the
      files are ordered by ``sha1("<split_seed>:<relative path>")`` and the first
      ``round(val_fraction * n)`` are held out (at least one when the class has two or more
      images and ``val_fraction > 0``; never all of them). ``"train"`` is the rest, ``"val"``
      and ``"test"`` are the held-out images, ``"all"`` is everything.

    Augmentation (:class:`~masksal.data.augment.Augment`, random resized crop + flip) replaces
    the resize/crop when on; by default (``augment=None``) it is on for the ``"train"`` split
    when there are fewer than :data:`~masksal.data.augment.SMALL_PER_CLASS` images per class.

    Args:
        root: the dataset folder.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        size: output side ``S``.
        resize: ``"shorter_crop"``, ``"stretch"`` or ``"none"``.
        val_fraction: share of each class held out for ``"val"``/``"test"`` (single-folder layout).
        split_seed: seed of the hold-out draw.
        augment: ``True``, ``False`` or ``None`` (the rule above).
        augment_seed: seed of the augmentation draws (see :meth:`set_epoch`).

    Attributes:
        classes: class names; ``num_classes`` their number; ``class_to_idx`` the mapping.
        layout: ``"split-folders"`` or ``"held-out"``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        size: int | None = 224,
        resize: ResizeMode = "shorter_crop",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        augment: bool | None = None,
        augment_seed: int = 0,
    ) -> None:
        root = Path(root)
        if split not in SPLITS:
            raise ValueError(f"imagefolder split must be one of {SPLITS}, got {split!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
        if not root.is_dir():
            raise MetadataError(f"{root}: missing image folder")
        folders = _split_folders(root)
        self.layout: Literal["split-folders", "held-out"] = "held-out" if folders is None else "split-folders"
        class_root = root if folders is None else folders[0]
        classes = _class_dirs(class_root)
        if not classes:
            raise MetadataError(f"{root}: no class subfolders (imagefolder: needs one subfolder per class; "
                                f"folder:{root} explains unlabelled images)")
        self.class_to_idx = {c: i for i, c in enumerate(classes)}
        files = self._files(class_root, root)
        for c in classes:
            if not any(label == self.class_to_idx[c] for _, label in files):
                raise MetadataError(f"{class_root / c}: class folder has no images")

        if folders is not None:
            if split in ("val", "test"):
                files = self._held_files(folders[1], root)
            elif split == "all":
                files = files + self._held_files(folders[1], root)
        elif split != "all":
            held = self._hold_out(files, root, val_fraction, split_seed)
            files = [f for f in files if (f[0] in held) == (split != "train")]
            if not files:
                raise MetadataError(f"{root}: no held-out images for split {split!r} (val_fraction={val_fraction})")

        records = [Record(path=p, id=p.relative_to(root).as_posix(), label=label) for p, label in files]
        if augment is None:
            augment = resize != "none" and augment_by_default(split, len(records), len(classes))
        if augment and (resize == "none" or size is None):
            raise ValueError("augmentation needs an output size (resize='none' keeps each image's own size)")
        super().__init__(records, size=size, resize=resize, num_classes=len(classes), classes=classes,
                         augment=Augment(int(size), seed=augment_seed) if augment and size else None)

    def _files(self, folder: Path, root: Path) -> list[tuple[Path, int]]:
        """``(path, label)`` of every image under ``folder/<class>/``, in torchvision's order."""

        def valid(path: str) -> bool:
            rel = Path(path).relative_to(folder)
            return is_image_file(path) and not any(part.startswith(".") for part in rel.parts)

        found = make_dataset(str(folder), self.class_to_idx, is_valid_file=valid, allow_empty=True)
        return [(Path(p), int(label)) for p, label in found]

    def _held_files(self, folder: Path, root: Path) -> list[tuple[Path, int]]:
        unknown = [c for c in _class_dirs(folder) if c not in self.class_to_idx]
        if unknown:
            raise MetadataError(f"{folder / unknown[0]}: class {unknown[0]!r} is not a class of {root / 'train'}")
        return self._files(folder, root)

    @staticmethod
    def _hold_out(files: list[tuple[Path, int]], root: Path, fraction: float, seed: int) -> set[Path]:
        by_class: dict[int, list[Path]] = {}
        for path, label in files:
            by_class.setdefault(label, []).append(path)
        held: set[Path] = set()
        for paths in by_class.values():
            n = len(paths)
            k = min(round(fraction * n), n - 1)
            if fraction > 0 and n >= 2:
                k = max(k, 1)
            ranked = sorted(paths, key=lambda p: _held_out_rank(seed, p.relative_to(root).as_posix()))
            held.update(ranked[:k])
        return held
