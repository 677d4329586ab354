"""Datasets: the built-in procedural benchmark, real localization benchmarks (ImageNet val,
CUB-200-2011, the wsolevaluation metadata layout), image folders (unlabelled, or one subfolder per
class), any ``(image, label)`` dataset, and wsolevaluation export.

Every dataset yields sample dicts for :func:`masksal.types.collate` (see
:mod:`masksal.data.base`); an unreadable file yields an error sample that ``collate`` leaves out
and lists in ``Batch.skipped``. :func:`load_dataset` builds any dataset from a spec string;
:func:`from_pairs` adapts a dataset of ``(image, label)`` pairs.
"""

from masksal.data.augment import Augment
from masksal.data.base import LocalizationDataset, collate_skip_errors, error_sample, is_error
from masksal.data.benchmark import CLASS_NAMES, BenchmarkDataset, generate
from masksal.data.cub import CUBDataset
from masksal.data.export import WSOLExport, export_wsol
from masksal.data.folders import ClassFolderDataset, UnlabelledFolderDataset
from masksal.data.imagenet import ImageNetValDataset, read_synset_mapping
from masksal.data.images import (
    IMAGE_EXTENSIONS,
    RESIZE_MODES,
    ImageReadError,
    ResizeCrop,
    ResizeMode,
    read_image,
    read_mask,
)
from masksal.data.metadata import MetadataError
from masksal.data.pairs import PairDataset, from_pairs
from masksal.data.specs import SPEC_FORMS, load_dataset
from masksal.data.wsol import WSOLDataset

__all__ = [
    "CLASS_NAMES",
    "IMAGE_EXTENSIONS",
    "RESIZE_MODES",
    "SPEC_FORMS",
    "Augment",
    "BenchmarkDataset",
    "CUBDataset",
    "ClassFolderDataset",
    "UnlabelledFolderDataset",
    "ImageNetValDataset",
    "ImageReadError",
    "LocalizationDataset",
    "MetadataError",
    "PairDataset",
    "ResizeCrop",
    "ResizeMode",
    "WSOLDataset",
    "WSOLExport",
    "collate_skip_errors",
    "error_sample",
    "export_wsol",
    "from_pairs",
    "generate",
    "is_error",
    "load_dataset",
    "read_image",
    "read_mask",
    "read_synset_mapping",
]


def __getattr__(name: str) -> object:
    """``ImageFolderDataset``, the former name of :class:`UnlabelledFolderDataset`, with a warning:
    the name read as torchvision's labelled ``ImageFolder``, which is ``ClassFolderDataset``."""
    if name == "ImageFolderDataset":
        import warnings

        warnings.warn("masksal.data.ImageFolderDataset is now UnlabelledFolderDataset (unlabelled images; "
                      "one subfolder per class is ClassFolderDataset)", DeprecationWarning, stacklevel=2)
        return UnlabelledFolderDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
