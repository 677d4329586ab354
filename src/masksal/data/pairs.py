"""Any ``(image, label)`` dataset as a masksal dataset: :func:`from_pairs`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from masksal.data.augment import Augment
from masksal.data.base import error_sample
from masksal.data.images import ImageReadError, ResizeCrop, ResizeMode

__all__ = ["PairDataset", "from_pairs"]

# What reading a broken or missing image file raises inside a user's dataset (PIL raises OSError
# subclasses for unreadable files, SyntaxError for some corrupt PNG chunks, DecompressionBombError
# for absurd sizes): those samples are skipped and named; anything else is a bug and propagates.
_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ImageReadError, Image.DecompressionBombError)
# Float images are expected in [0, 1]; this slack absorbs rounding from the user's own transforms.
_RANGE_SLACK = 1e-3


class PairDataset(Dataset[dict[str, Any]]):
    """Wraps a dataset yielding ``(image, label)`` into masksal sample dicts (see :func:`from_pairs`).

    Attributes:
        dataset: the wrapped dataset.
        num_classes: class count, or ``None`` when neither given nor found on the dataset.
        classes: class names (the dataset's ``classes`` attribute when it has one), or ``None``.
        transform: the resize/crop applied to every image.
        augment: the augmentation, or ``None``.
    """

    def __init__(self, dataset: Dataset[Any], size: int | None = 224, *, resize: ResizeMode = "shorter_crop",
                 num_classes: int | None = None, classes: list[str] | None = None, augment: bool = False,
                 augment_seed: int = 0) -> None:
        self.dataset = dataset
        self.transform = ResizeCrop(size, resize)
        found = getattr(dataset, "classes", None)
        self.classes = classes if classes is not None else ([str(c) for c in found] if found else None)
        self.num_classes = num_classes if num_classes is not None else (len(self.classes) if self.classes else None)
        if augment and (resize == "none" or size is None):
            raise ValueError("augmentation needs an output size (resize='none' keeps each image's own size)")
        self.augment = Augment(int(size), seed=augment_seed) if augment and size else None
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        """Draw the augmentation of ``epoch``; no-op without augmentation."""
        self.epoch = int(epoch)

    def _name(self, index: int) -> str:
        """The file behind sample ``index`` when the dataset says (torchvision folders do), else ``Class[i]``."""
        samples = getattr(self.dataset, "samples", None) or getattr(self.dataset, "imgs", None)
        try:
            return str(samples[index][0])  # type: ignore[index]
        except (TypeError, IndexError, KeyError):
            return f"{type(self.dataset).__name__}[{index}]"

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self._name(index)
        try:
            item = self.dataset[index]
            image, label = _split_item(item, name)
            tensor = _to_tensor(image, name)
        except _READ_ERRORS as exc:
            return error_sample(name, f"{name}: {' '.join(str(exc).split()) or type(exc).__name__}")
        label = _to_label(label, name, self.num_classes)
        h, w = int(tensor.shape[-2]), int(tensor.shape[-1])
        if self.augment is not None:
            out = self.augment(tensor, self.epoch, index)
        elif tensor.dtype == torch.uint8:
            out = self.transform.image(tensor.permute(1, 2, 0).numpy())
        else:
            out = self.transform.float_image(tensor)
        return {"image": out, "label": label, "boxes": torch.zeros(0, 4), "id": name, "orig_size": (h, w)}


def from_pairs(dataset: Dataset[Any], size: int | None = 224, *, resize: ResizeMode = "shorter_crop",
               num_classes: int | None = None, classes: list[str] | None = None, augment: bool = False,
               augment_seed: int = 0) -> PairDataset:
    """Adapt any dataset of ``(image, label)`` pairs to masksal's sample dicts.

    Items may be ``(image, label, ...)`` tuples (extra fields ignored) or mappings with
    ``"image"`` and ``"label"`` keys. Images may be a PIL image (any mode, converted to RGB),
    a tensor ``(3, H, W)``/``(1, H, W)``/``(H, W)`` in uint8 or float in [0, 1] (not normalized),
    or a numpy ``(H, W, 3)``/``(H, W)`` array of the same kinds. Each is resized/cropped to
    ``size x size`` as every masksal dataset (:class:`~masksal.data.images.ResizeCrop`) or,
    with ``augment=True``, randomly cropped and flipped (:class:`~masksal.data.augment.Augment`).

    An item whose file cannot be read (the dataset raises ``OSError`` and kin) becomes an error
    sample naming the file (from the dataset's ``samples``, as torchvision's folders have, else
    ``"<DatasetClass>[<index>]"``), which :func:`masksal.types.collate` leaves out and lists in
    ``Batch.skipped``. Other faults (a normalized image, a label that is not a class index) raise
    a one-line ``ValueError``/``TypeError``.

    Args:
        dataset: map-style dataset.
        size: output side ``S``.
        resize: ``"shorter_crop"``, ``"stretch"`` or ``"none"``.
        num_classes: class count (default: ``len(dataset.classes)`` when the dataset has it).
        classes: class names (default: ``dataset.classes``).
        augment: random resized crop and flip (for training on few photos).
        augment_seed: seed of the augmentation draws.

    Returns:
        A :class:`PairDataset` of sample dicts (``image`` ``(3, S, S)`` float in [0, 1],
        ``label`` int, ``boxes`` ``(0, 4)``, ``id`` str, ``orig_size`` ``(H, W)``).

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> pairs = TensorDataset(torch.rand(4, 3, 40, 30), torch.tensor([0, 1, 0, 1]))
        >>> ds = from_pairs(pairs, size=16, num_classes=2)
        >>> ds[1]["image"].shape, ds[1]["label"]
        (torch.Size([3, 16, 16]), 1)
    """
    return PairDataset(dataset, size, resize=resize, num_classes=num_classes, classes=classes, augment=augment,
                       augment_seed=augment_seed)


def _split_item(item: Any, name: str) -> tuple[Any, Any]:
    if isinstance(item, Mapping):
        if "image" in item and "label" in item:
            return item["image"], item["label"]
        raise TypeError(f"{name}: a mapping item needs 'image' and 'label' keys, got {sorted(map(str, item))}")
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    raise TypeError(f"{name}: expected an (image, label) pair, got {type(item).__name__}")


def _to_tensor(image: Any, name: str) -> Tensor:
    """``(3, H, W)`` uint8 or float32 tensor from a PIL image, a tensor or a numpy array."""
    if isinstance(image, Image.Image):
        image.load()  # decode now: a lazily opened, broken file fails here, inside the caller's try
        return torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)
    if isinstance(image, np.ndarray):
        arr = image if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) else np.moveaxis(image[..., :3], -1, 0)
        image = torch.from_numpy(np.ascontiguousarray(arr))
    if not isinstance(image, Tensor):
        raise TypeError(f"{name}: image must be a PIL image, a tensor or a numpy array, got {type(image).__name__}")
    t = image.detach().cpu()
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"{name}: image must be (3, H, W), (1, H, W) or (H, W), got shape {tuple(image.shape)}")
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    if t.dtype == torch.uint8:
        return t.contiguous()
    if t.dtype == torch.bool or not t.is_floating_point():
        raise ValueError(f"{name}: image dtype {t.dtype} is neither uint8 nor float")
    t = t.float()
    lo, hi = float(t.min()), float(t.max())
    if not (lo >= -_RANGE_SLACK and hi <= 1 + _RANGE_SLACK):  # also false for NaN
        raise ValueError(f"{name}: image values span [{lo:.3g}, {hi:.3g}]; pass unnormalized images in [0, 1] "
                         "(or uint8): the classifier wrapper normalizes them itself")
    return t.clamp(0.0, 1.0).contiguous()


def _to_label(label: Any, name: str, num_classes: int | None) -> int:
    if isinstance(label, Tensor) and label.numel() == 1 and not label.is_floating_point():
        label = int(label.item())
    elif isinstance(label, np.integer):
        label = int(label)
    if not isinstance(label, int) or isinstance(label, bool):
        raise TypeError(f"{name}: label must be an int class index, got {type(label).__name__} {label!r}")
    if label < 0 or (num_classes is not None and label >= num_classes):
        bound = f"0..{num_classes - 1}" if num_classes is not None else ">= 0"
        raise ValueError(f"{name}: label {label} is not a class index ({bound})")
    return label
