"""Command-line specs: method specs to explainers, data specs to datasets and loaders.

A method spec is a registered method with options, ``gradcam``, ``rise:n_masks=500``, or a
trained masker, ``masker:CHECKPOINT`` (a checkpoint directory alone also reads as a masker);
see :func:`masksal.explainers.parse_method_spec`. A data spec is ``benchmark`` or one of
:func:`masksal.data.load_dataset`'s (``imagefolder:DIR``, ``wsol:META:IMAGES``...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset

from masksal.checkpoint import is_checkpoint, load_classifier, load_config_of, read_meta
from masksal.classifiers import Classifier
from masksal.cli.common import Inputs
from masksal.config import DataConfig
from masksal.explainers.base import SupportsExplain
from masksal.types import collate


def is_masker_spec(spec: str) -> bool:
    return spec.startswith("masker:") or is_checkpoint(spec)


def masker_path(spec: str) -> Path:
    return Path(spec.removeprefix("masker:"))


def load_method(spec: str, classifier: Classifier | None, device: str | torch.device = "cpu") -> SupportsExplain:
    """The explainer named by ``spec``; registry methods explain ``classifier``.

    A masker checkpoint brings its own classifier; when ``classifier`` is given as well it must be
    that classifier, or (for a masker trained alongside its classifier, CA) the classifier the
    masker started from: the maps then still come from the masker's co-trained copy, and the
    metrics that run a classifier (top-1, OM, SM, deletion / insertion) use the given one, as the
    paper's scorer does.
    """
    from masksal.explainers import create_explainer, parse_method_spec

    if is_masker_spec(spec):
        path = masker_path(spec)
        explainer = create_explainer("masker", classifier, checkpoint=path, device=device)
        explainer.name = f"masker:{path.name}"
        return explainer
    name, options = parse_method_spec(spec)
    if classifier is None and name not in ("centre", "random"):
        raise ValueError(f"method {spec!r} needs a classifier: pass --classifier CHECKPOINT")
    return create_explainer(name, classifier, **options)


def method_label(spec: str, explainer: Any) -> str:
    """How a table names the method: ``masker:<folder>`` for a masker, else the spec."""
    name = str(getattr(explainer, "name", ""))
    return name if name.startswith("masker:") else spec


class Evaluated(NamedTuple):
    """What ``evaluate`` runs: the method, its classifier, the dataset, the image size and the data
    reference (a checkpoint or data config saying which benchmark classes the labels mean)."""

    explainer: SupportsExplain
    classifier: Classifier
    dataset: Dataset
    size: int
    reference: Path | DataConfig | None


def load_evaluated(method: str, classifier: str | None, device: torch.device,
                   inputs: Inputs | None = None) -> Evaluated:
    """The method, classifier and dataset for ``evaluate``, each file read once:
    a masker without ``--classifier`` brings its classifier, image size and training data;
    otherwise see :func:`classifier_and_data`. ``inputs.size`` overrides the image size (default:
    the classifier's, 224 for a weight file)."""
    inputs = inputs or Inputs()
    if classifier is None and is_masker_spec(method):
        explainer = load_method(method, None, device)
        info = dict(getattr(explainer, "info", {}))
        cfg = info.get("config")
        ref: Path | DataConfig | None = cfg.data if cfg is not None else masker_path(method)
        clf: Classifier = explainer.classifier  # type: ignore[attr-defined]
        size = inputs.size or int(info.get("image_size", 224))
        ds = build_dataset(inputs.data, inputs.split, size, inputs.n, reference=ref)
        check_classes(ds, clf, inputs.data)
        return Evaluated(explainer, clf, ds, size, ref)
    c = classifier_and_data(classifier, [method], device, inputs)
    return Evaluated(load_method(method, c.classifier, device), c.classifier, c.dataset, c.size, c.reference)


class ClassifierData(NamedTuple):
    """The classifier to evaluate, the dataset, its image size and the data reference."""

    classifier: Classifier
    dataset: Dataset
    size: int
    reference: Path | None


def classifier_and_data(classifier: str | None, methods: list[str], device: str | torch.device,
                        inputs: Inputs) -> ClassifierData:
    """The classifier (:func:`resolve_classifier`) and the dataset whose labels it predicts, at the
    classifier's image size unless ``inputs.size`` is given. The dataset comes first: a weight file
    takes its class count from it."""
    ref = reference_checkpoint(classifier, methods)
    size = inputs.size or image_size_of(classifier, methods)
    ds = build_dataset(inputs.data, inputs.split, size, inputs.n, reference=ref)
    clf = resolve_classifier(classifier, methods, device, inputs.arch, inputs.num_classes, ds)
    check_classes(ds, clf, inputs.data)
    return ClassifierData(clf, ds, size, ref)


def is_weight_file(classifier: str | None) -> bool:
    """Whether ``--classifier`` names a weight file (not a checkpoint folder)."""
    return classifier is not None and Path(classifier).is_file()


def resolve_classifier(classifier: str | None, methods: list[str], device: str | torch.device,
                       arch: str | None = None, num_classes: int | None = None,
                       dataset: Dataset | None = None) -> Classifier:
    """The classifier to evaluate: ``--classifier`` if given, else the first masker's.

    ``--classifier`` is a checkpoint folder, or a weight file (``.safetensors``, ``.pt``) of the
    architecture ``arch`` (``--arch``) with ``num_classes`` outputs (default: ``dataset``'s).
    """
    if classifier is not None and is_weight_file(classifier):
        from masksal.classifiers import create_classifier
        from masksal.training import dataset_num_classes

        if not arch:
            raise ValueError(f"--classifier {classifier} is a weight file: name its architecture with --arch "
                             "(resnet18, efficientnet_b0, timm:vit_small_patch16_224, small_resnet18, ...)")
        if num_classes is None:
            if dataset is None:
                raise ValueError(f"--classifier {classifier}: pass --num-classes (its number of outputs)")
            try:
                num_classes = dataset_num_classes(dataset)
            except ValueError:
                raise ValueError(f"--classifier {classifier}: the data do not say how many classes there are; "
                                 "pass --num-classes (its number of outputs, e.g. 1000 for ImageNet)") from None
        return create_classifier(arch, num_classes, weights=classifier).to(device).eval()
    if arch is not None or num_classes is not None:
        raise ValueError("--arch and --num-classes describe a --classifier weight file; a checkpoint folder "
                         "already says both")
    if classifier is not None:
        return load_classifier(classifier, device=device)
    for spec in methods:
        if is_masker_spec(spec):
            return load_classifier(masker_path(spec), device=device)
    raise ValueError("no classifier: pass --classifier CHECKPOINT (or a masker:CHECKPOINT method)")


def reference_checkpoint(classifier_ckpt: str | None, methods: list[str]) -> Path | None:
    """The checkpoint whose training data describe the evaluation data (size, benchmark families):
    the classifier's or the first masker's (a weight file has none)."""
    specs = [classifier_ckpt] if classifier_ckpt and not is_weight_file(classifier_ckpt) else []
    for spec in specs + [m for m in methods if is_masker_spec(m)]:
        return masker_path(spec)
    return None


def image_size_of(classifier_ckpt: str | None, methods: list[str]) -> int:
    """The input size the classifier was trained at (from its checkpoint; 224 without one)."""
    ref = reference_checkpoint(classifier_ckpt, methods)
    return read_meta(ref).image_size if ref is not None else 224


def build_dataset(data: str, split: str, size: int, n: int, reference: Path | DataConfig | None = None) -> Dataset:
    """A dataset from a data spec; for the built-in benchmark, the families and seed the
    ``reference`` (a checkpoint, or its data config) was trained on, so labels mean the same classes."""
    if data in ("benchmark", "benchmark:pairs"):
        from masksal.data.benchmark import BenchmarkDataset

        kw: dict[str, Any] = {"objects": 2} if data == "benchmark:pairs" else {}
        if reference is not None:
            dcfg = reference if isinstance(reference, DataConfig) else load_config_of(reference).data
            if dcfg.dataset.partition(":")[0] == "benchmark":
                kw.update(families=tuple(dcfg.families), seed=dcfg.seed, max_distractors=dcfg.max_distractors)
        return BenchmarkDataset(split=split, n=n, size=size, **kw)
    from masksal.data import load_dataset

    return load_dataset(data, split=split, size=size)


def build_loader(data: str, split: str, size: int, n: int, batch_size: int, num_workers: int = 0,
                 reference: Path | DataConfig | None = None) -> tuple[Dataset, DataLoader]:
    """A dataset (see :func:`build_dataset`) and its loader of :class:`~masksal.types.Batch`."""
    ds = build_dataset(data, split, size, n, reference)
    return ds, loader_of(ds, batch_size, num_workers)


def loader_of(ds: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    """The loader of :class:`~masksal.types.Batch` of a dataset, in order."""
    return DataLoader(ds, batch_size=batch_size, collate_fn=collate, num_workers=num_workers)


def check_classes(ds: Dataset, classifier: Classifier, data: str) -> None:
    """A one-line error when the dataset has more classes than the classifier predicts."""
    n = getattr(ds, "num_classes", None)
    if n and classifier.num_classes > 0 and int(n) > classifier.num_classes:
        raise ValueError(f"data {data!r} has {n} classes but the classifier predicts {classifier.num_classes}")
