"""Datasets: the built-in procedural benchmark, real localization benchmarks (ImageNet val,
CUB-200-2011, the wsolevaluation metadata layout), plain image folders, and wsolevaluation export.

Every dataset yields sample dicts for :func:`masksal.types.collate` (see
:mod:`masksal.data.adapters`); :func:`load_dataset` builds one from a spec string.
"""

from masksal.data.adapters import (
    CUBDataset,
    ImageFolderDataset,
    ImageNetValDataset,
    LocalizationDataset,
    MetadataError,
    WSOLDataset,
    collate_skip_errors,
    load_dataset,
    read_synset_mapping,
)
from masksal.data.benchmark import CLASS_NAMES, BenchmarkDataset, generate
from masksal.data.export import WSOLExport, export_wsol
from masksal.data.images import (
    IMAGE_EXTENSIONS,
    RESIZE_MODES,
    ImageReadError,
    ResizeCrop,
    ResizeMode,
    read_image,
    read_mask,
)

__all__ = [
    "CLASS_NAMES",
    "BenchmarkDataset",
    "generate",
    "IMAGE_EXTENSIONS",
    "RESIZE_MODES",
    "CUBDataset",
    "ImageFolderDataset",
    "ImageNetValDataset",
    "ImageReadError",
    "LocalizationDataset",
    "MetadataError",
    "ResizeCrop",
    "ResizeMode",
    "WSOLDataset",
    "WSOLExport",
    "collate_skip_errors",
    "export_wsol",
    "load_dataset",
    "read_image",
    "read_mask",
    "read_synset_mapping",
]
