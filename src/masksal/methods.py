"""Resolve command-line method specs to explainers, and command-line data specs to loaders.

A method spec is either a trained masker, ``masker:CHECKPOINT`` (or a checkpoint directory
path), or a registered method with options, ``gradcam``, ``rise:n_masks=500``
(see :func:`masksal.explainers.parse_method_spec`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from masksal.checkpoint import load_classifier, load_masker, read_meta
from masksal.classifiers import Classifier
from masksal.explainers import create_explainer, parse_method_spec
from masksal.explainers.base import Explainer
from masksal.types import collate


def is_masker_spec(spec: str) -> bool:
    return spec.startswith("masker:") or (Path(spec) / "meta.json").is_file()


def masker_path(spec: str) -> Path:
    return Path(spec.removeprefix("masker:"))


def load_method(spec: str, classifier: Classifier | None, device: str | torch.device = "cpu") -> Explainer:
    """The explainer named by ``spec``; registry methods explain ``classifier``.

    A masker checkpoint brings its own classifier; when ``classifier`` is given as well, the two
    must be the same weights (a masker only explains the classifier it was trained with).
    """
    if is_masker_spec(spec):
        masker = load_masker(masker_path(spec), device=device)
        if classifier is not None and masker.classifier.fingerprint() != classifier.fingerprint():
            raise ValueError(f"{spec}: this masker was trained with another classifier (weights differ) "
                             "than the one given with --classifier")
        masker.name = f"masker:{masker_path(spec).name}"
        return masker
    if classifier is None:
        raise ValueError(f"method {spec!r} needs a classifier: pass --classifier CHECKPOINT")
    name, options = parse_method_spec(spec)
    return create_explainer(name, classifier, **options)


def resolve_classifier(classifier: str | None, methods: list[str], device: str | torch.device) -> Classifier:
    """The classifier to evaluate: ``--classifier`` if given, else the first masker's."""
    if classifier is not None:
        return load_classifier(classifier, device=device)
    for spec in methods:
        if is_masker_spec(spec):
            return load_classifier(masker_path(spec), device=device)
    raise ValueError("no classifier: pass --classifier CHECKPOINT (or a masker:CHECKPOINT method)")


def reference_checkpoint(classifier_ckpt: str | None, methods: list[str]) -> Path | None:
    """The checkpoint whose training data describe the evaluation data (size, benchmark families)."""
    for spec in ([classifier_ckpt] if classifier_ckpt else []) + [m for m in methods if is_masker_spec(m)]:
        return masker_path(spec)
    return None


def image_size_of(classifier_ckpt: str | None, methods: list[str]) -> int:
    """The input size the classifier was trained at (from its checkpoint; 224 without one)."""
    ref = reference_checkpoint(classifier_ckpt, methods)
    return read_meta(ref).image_size if ref is not None else 224


def build_loader(data: str, split: str, size: int, n: int, batch_size: int, num_workers: int = 0,
                 reference: Path | None = None) -> tuple[Dataset, DataLoader]:
    """A dataset and its loader from a data spec (``benchmark`` or a :func:`load_dataset` spec).

    For the built-in benchmark, the families and seed are those the ``reference`` checkpoint was
    trained on, so labels mean the same classes.
    """
    if data == "benchmark":
        from masksal.checkpoint import load_config_of
        from masksal.data.benchmark import BenchmarkDataset

        kw: dict[str, object] = {}
        if reference is not None:
            dcfg = load_config_of(reference).data
            if dcfg.dataset == "benchmark":
                kw = {"families": tuple(dcfg.families), "seed": dcfg.seed, "max_distractors": dcfg.max_distractors}
        ds: Dataset = BenchmarkDataset(split=split, n=n, size=size, **kw)  # type: ignore[arg-type]
    else:
        from masksal.data import load_dataset

        ds = load_dataset(data, split=split, size=size)
    return ds, DataLoader(ds, batch_size=batch_size, collate_fn=collate, num_workers=num_workers)


def check_classes(ds: Dataset, classifier: Classifier, data: str) -> None:
    """A one-line error when the dataset has more classes than the classifier predicts."""
    n = getattr(ds, "num_classes", None)
    if n and classifier.num_classes > 0 and int(n) > classifier.num_classes:
        raise ValueError(f"data {data!r} has {n} classes but the classifier predicts {classifier.num_classes}")
