"""Build any masksal dataset from one spec string: :func:`load_dataset`."""

from __future__ import annotations

from typing import Any

from masksal.data.base import LocalizationDataset
from masksal.data.benchmark import BenchmarkDataset
from masksal.data.cub import CUBDataset
from masksal.data.folders import ClassFolderDataset, UnlabelledFolderDataset
from masksal.data.imagenet import ImageNetValDataset
from masksal.data.images import ResizeMode
from masksal.data.wsol import WSOLDataset

__all__ = ["SPEC_FORMS", "load_dataset"]

SPEC_FORMS = ("benchmark", "benchmark:pairs", "imagenet:<root>", "cub:<root>", "wsol:<metadata_dir>:<image_root>",
              "imagefolder:<dir>", "folder:<dir>")


def load_dataset(
    spec: str,
    split: str = "test",
    size: int = 224,
    resize: ResizeMode = "shorter_crop",
    *,
    require_labels: bool = False,
    **kw: Any,
) -> LocalizationDataset | BenchmarkDataset:
    """Build a dataset from a spec string.

    Specs:

    * ``"benchmark"``: the built-in procedural benchmark, ``BenchmarkDataset(split=split,
      n=kw["n"], size=size)`` (its images are drawn at ``size``; ``resize`` does not apply).
    * ``"benchmark:pairs"``: its two-object split (``objects=2``: two objects of different
      classes per image, each image yielded once per object as the requested one).
    * ``"imagenet:<root>"``: :class:`~masksal.data.imagenet.ImageNetValDataset` on the layout
      documented there (``split`` "val" or "test"; keywords ``image_dir``, ``annotation_dir``,
      ``synset_mapping`` override the detected paths).
    * ``"cub:<root>"``: :class:`~masksal.data.cub.CUBDataset` (``split`` "train", "test" or
      "all"; keyword ``allow_outside_root``).
    * ``"wsol:<metadata_dir>:<image_root>"``: :class:`~masksal.data.wsol.WSOLDataset`; also
      ``"wsol"`` with keywords ``metadata_dir``, ``image_root`` and optional ``mask_root``,
      ``num_classes``, ``allow_outside_root``.
    * ``"imagefolder:<dir>"``: :class:`~masksal.data.folders.ClassFolderDataset`, one subfolder
      per class (``split`` "train", "val", "test" or "all"; keywords ``val_fraction`` (0.1),
      ``split_seed`` (0), ``augment`` (``None``: on for a small training split),
      ``augment_seed`` (0)).
    * ``"folder:<dir>"``: :class:`~masksal.data.folders.UnlabelledFolderDataset`, unlabelled images for
      explanation only (``split`` is ignored, but ``"train"`` is refused).

    Args:
        spec: one of the above.
        split: dataset split.
        size: output side ``S`` of images, boxes and masks.
        resize: ``"shorter_crop"`` (default), ``"stretch"`` or ``"none"``.
        require_labels: refuse a dataset without labels (``folder:``) with a one-line error naming
            ``imagefolder:``; implied by ``split="train"``.
        **kw: dataset-specific keywords (see above).

    Returns:
        A map-style dataset of sample dicts, with ``num_classes`` (``None`` for unlabelled
        folders) and ``classes`` attributes.

    Raises:
        ValueError: an unknown spec, a split the dataset has not, a folder used for training.
        MetadataError: missing or malformed metadata (one line naming file and line).
    """
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "benchmark":
        if rest.strip() not in ("", "pairs"):
            raise ValueError(f"unknown benchmark split {spec!r}: expected 'benchmark' or 'benchmark:pairs'")
        if rest.strip() == "pairs":
            kw.setdefault("objects", 2)
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
    if kind == "imagefolder":
        return ClassFolderDataset(rest or kw.pop("root"), split=split, size=size, resize=resize, **kw)
    if kind == "folder":
        root = rest or kw.get("root", "<dir>")
        if require_labels or split == "train":
            raise ValueError(f"folder:{root} has no labels and is for explanation only; to train (or to score "
                             f"label-based metrics) use imagefolder:{root} with one subfolder per class")
        return UnlabelledFolderDataset(rest or kw.pop("root"), size=size, resize=resize, **kw)
    raise ValueError(f"unknown dataset spec {spec!r}: expected " + ", ".join(repr(f) for f in SPEC_FORMS))
