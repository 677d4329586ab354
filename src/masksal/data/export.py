"""Write any masksal dataset in the metadata layout of clovaai/wsolevaluation.

Other WSOL tools read that layout, so a dataset exported here (the built-in benchmark in
particular) can be scored by them, and read back by :class:`~masksal.data.wsol.WSOLDataset`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from masksal.types import IGNORE

__all__ = ["WSOLExport", "export_wsol"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class WSOLExport:
    """Where an export went.

    Attributes:
        metadata_dir: ``<out>/metadata/<name>/<split>`` (the wsolevaluation metadata files).
        image_root: ``<out>/dataset/<name>``, the root image ids (and mask paths) are relative to.
        num_images: images written.
        has_masks: whether ``localization.txt`` holds masks (else boxes).
        errors: one message per sample skipped because its image could not be read.
    """

    metadata_dir: Path
    image_root: Path
    num_images: int
    has_masks: bool
    errors: list[str] = field(default_factory=list)

    @property
    def spec(self) -> str:
        """The :func:`~masksal.data.load_dataset` spec that reads the export back."""
        return f"wsol:{self.metadata_dir}:{self.image_root}"


def _to_uint8_image(image: torch.Tensor) -> np.ndarray:
    arr = image.detach().to("cpu", torch.float32).clamp(0, 1).mul(255).round().to(torch.uint8)
    return arr.permute(1, 2, 0).numpy()


def _file_stem(sample_id: str, used: set[str], index: int) -> str:
    stem = _UNSAFE.sub("_", Path(sample_id).with_suffix("").as_posix().replace("/", "__")).strip("._")
    stem = stem or f"{index:06d}"
    if stem in used:
        stem = f"{stem}_{index:06d}"
    used.add(stem)
    return stem


def _box_line(image_id: str, box: Iterable[float]) -> str:
    # wsolevaluation parses integers; masksal boxes are whole pixels, so rounding is exact.
    return ",".join([image_id, *(str(int(round(float(v)))) for v in box)])


def export_wsol(
    dataset: Dataset[dict[str, Any]],
    out_dir: str | Path,
    name: str = "masksal_benchmark",
    split: str = "test",
    *,
    progress: bool = False,
) -> WSOLExport:
    """Write a masksal dataset in the wsolevaluation layout.

    Layout written under ``out_dir``::

        metadata/<name>/<split>/image_ids.txt      <split>/<label>/<stem>.png
                                class_labels.txt   <image_id>,<label>
                                image_sizes.txt    <image_id>,<width>,<height>
                                localization.txt   boxes: <image_id>,<x0>,<y0>,<x1>,<y1>
                                                   masks: <image_id>,<mask>,<ignore>
                                localization_boxes.txt  (mask datasets: their boxes)
                                class_names.txt    (when the dataset has ``classes``)
        dataset/<name>/<split>/<label>/<stem>.png, <stem>_mask.png, <stem>_ignore.png

    Images are the dataset's transformed samples, saved as 8-bit RGB PNG (lossless, so they
    read back equal up to the 1/255 quantization). Boxes are written as integers, inclusive,
    one line per box, as wsolevaluation's ImageNet/CUB metadata; an image without boxes gets
    no line (wsolevaluation's box evaluator expects at least one). When samples carry masks,
    ``localization.txt`` follows its OpenImages format instead: per image one object mask
    PNG (255 = object) and one ignore PNG (255 = ignore), both paths relative to the image
    root, and the boxes go to ``localization_boxes.txt``. Samples whose image cannot be read
    are skipped and reported in :attr:`WSOLExport.errors`.

    Args:
        dataset: a map-style dataset of masksal sample dicts.
        out_dir: output folder (created).
        name: dataset name, the folder under ``metadata/`` and ``dataset/``.
        split: split name, the folder below those.
        progress: show a progress bar.

    Returns:
        A :class:`WSOLExport`; ``load_dataset(result.spec, split=split, resize="none")``
        reads the export back.

    Raises:
        ValueError: some samples carry a mask and others do not.
    """
    out_dir = Path(out_dir)
    meta_dir = out_dir / "metadata" / name / split
    image_root = out_dir / "dataset" / name
    meta_dir.mkdir(parents=True, exist_ok=True)

    has_masks: bool | None = getattr(dataset, "has_masks", None)
    ids: list[str] = []
    labels: list[str] = []
    sizes: list[str] = []
    boxes: list[str] = []
    masks: list[str] = []
    errors: list[str] = []
    used: set[str] = set()

    indices = range(len(dataset))  # type: ignore[arg-type]
    for index in tqdm(indices, desc=f"export {name}/{split}", disable=not progress):
        sample = dataset[index]
        if "error" in sample:
            errors.append(str(sample["error"]))
            continue
        sample_mask = sample.get("mask")
        if has_masks is None:
            has_masks = sample_mask is not None
        if has_masks != (sample_mask is not None):
            raise ValueError(f"sample {sample.get('id', index)!r}: some samples have a mask and others not")

        label = int(sample["label"])
        stem = _file_stem(str(sample.get("id", index)), used, index)
        rel_dir = f"{split}/{label}"
        image_id = f"{rel_dir}/{stem}.png"
        (image_root / rel_dir).mkdir(parents=True, exist_ok=True)
        rgb = _to_uint8_image(sample["image"])
        Image.fromarray(rgb).save(image_root / image_id)

        ids.append(image_id)
        labels.append(f"{image_id},{label}")
        sizes.append(f"{image_id},{rgb.shape[1]},{rgb.shape[0]}")
        for box in torch.as_tensor(sample.get("boxes", torch.zeros(0, 4))).reshape(-1, 4).tolist():
            boxes.append(_box_line(image_id, box))
        if sample_mask is not None:
            m = torch.as_tensor(sample_mask).to("cpu", torch.uint8).numpy()
            mask_id, ignore_id = f"{rel_dir}/{stem}_mask.png", f"{rel_dir}/{stem}_ignore.png"
            Image.fromarray(((m == 1) * 255).astype(np.uint8)).save(image_root / mask_id)
            Image.fromarray(((m == IGNORE) * 255).astype(np.uint8)).save(image_root / ignore_id)
            masks.append(f"{image_id},{mask_id},{ignore_id}")

    def write(file: str, lines: list[str]) -> None:
        (meta_dir / file).write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    write("image_ids.txt", ids)
    write("class_labels.txt", labels)
    write("image_sizes.txt", sizes)
    if has_masks:
        write("localization.txt", masks)
        write("localization_boxes.txt", boxes)
    else:
        write("localization.txt", boxes)
    classes = getattr(dataset, "classes", None)
    if classes:
        write("class_names.txt", [str(c) for c in classes])
    return WSOLExport(
        metadata_dir=meta_dir,
        image_root=image_root,
        num_images=len(ids),
        has_masks=bool(has_masks),
        errors=errors,
    )
