"""Sanity checks for saliency maps (Adebayo et al. 2018), applied to the masker as Phang et al. do.

Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim, "Sanity Checks for Saliency Maps", NeurIPS 2018.
A saliency method that explains the model must change when the model changes:

* **cascading parameter randomization**: re-initialize the classifier's parameterized units from
  the top (``fc``, ``layer4.1``, ``layer4.0``, ... ``conv1``), cumulatively, and compare each
  randomized model's maps with the original maps;
* **independent parameter randomization**: the same, one unit at a time (the others keep their
  trained weights);
* **data randomization**: a classifier trained on shuffled labels (and a masker trained for it)
  against one trained on the true labels with the same budget.

Maps are compared per image with Spearman rank correlation (plain, and of ``|0.5 - m|`` as in
the paper's code), SSIM (:func:`skimage.metrics.structural_similarity`) and the Pearson
correlation of HOG features (:func:`skimage.feature.hog`). The masker is compared on its
pre-sigmoid maps: a sigmoid saturates, so rank ties would hide changes. With ``retrain_steps``
the masker is also retrained for a few steps on each randomized classifier (a masker reading
only the top stages cannot change when only ``fc`` is randomized unless it is retrained).
Grad-CAM and vanilla gradients, computed for the true class, are the reference points.

Everything runs through :func:`run_sanity_checks` (``masksal sanity CHECKPOINT``), which writes
``results.json`` and ``report.html`` to its output folder.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from torch import Tensor
from tqdm.auto import tqdm

from masksal.classifiers import Classifier
from masksal.config import ExperimentConfig
from masksal.masker import Masker, MaskerNet
from masksal.randomization import cascading_randomization, independent_randomization, parameterized_units
from masksal.types import Batch

SIMILARITIES = ("spearman", "spearman_abs", "ssim", "hog")
"""Names of the similarity scores, in report order."""

METHODS = ("masker", "gradcam", "saliency")
"""Saliency methods compared by default: ours and the two reference points."""


# ---------------------------------------------------------------------------------------------
# Similarity of two sets of maps
# ---------------------------------------------------------------------------------------------

def _pairs(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    x = a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
    y = b.detach().cpu().numpy() if isinstance(b, Tensor) else np.asarray(b)
    if x.shape != y.shape or x.ndim != 3:
        raise ValueError(f"expected two (B, H, W) stacks of maps of the same shape, got {x.shape} and {y.shape}")
    return x.astype(np.float64), y.astype(np.float64)


def _minmax(m: np.ndarray) -> np.ndarray:
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def spearman_similarity(a: np.ndarray | Tensor, b: np.ndarray | Tensor, centre: float | None = None) -> np.ndarray:
    """Spearman rank correlation per image of two ``(B, H, W)`` map stacks -> ``(B,)``.

    Args:
        centre: if given, compare ``|centre - m|`` instead of ``m`` (the paper's "absolute"
            variant uses ``centre = 0.5``). A constant map gives NaN.
    """
    x, y = _pairs(a, b)
    if centre is not None:
        x, y = np.abs(centre - x), np.abs(centre - y)
    out = np.full(len(x), np.nan)
    for i in range(len(x)):
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            out[i] = float(spearmanr(x[i].ravel(), y[i].ravel()).statistic)
    return out


def ssim_similarity(a: np.ndarray | Tensor, b: np.ndarray | Tensor, win_size: int = 5) -> np.ndarray:
    """SSIM per image of two ``(B, H, W)`` map stacks, each map min-max normalized -> ``(B,)``.

    ``win_size`` 5 as in the paper's code; 1 for identical maps, about 0 for independent noise.
    """
    from skimage.metrics import structural_similarity

    x, y = _pairs(a, b)
    return np.array([structural_similarity(_minmax(x[i]), _minmax(y[i]), win_size=win_size, data_range=1.0)
                     for i in range(len(x))])


def hog_similarity(a: np.ndarray | Tensor, b: np.ndarray | Tensor, pixels_per_cell: int | None = None) -> np.ndarray:
    """Pearson correlation of HOG features per image of two ``(B, H, W)`` map stacks -> ``(B,)``.

    Args:
        pixels_per_cell: HOG cell side; default 16 pixels at 224 px scaled to the map size
            (the paper's code uses 16 at 224 px), at least 2.
    """
    from skimage.feature import hog

    x, y = _pairs(a, b)
    ppc = pixels_per_cell or max(2, round(16 * x.shape[-1] / 224))
    out = np.full(len(x), np.nan)
    for i in range(len(x)):
        fx = hog(_minmax(x[i]), pixels_per_cell=(ppc, ppc), cells_per_block=(2, 2), feature_vector=True)
        fy = hog(_minmax(y[i]), pixels_per_cell=(ppc, ppc), cells_per_block=(2, 2), feature_vector=True)
        if np.ptp(fx) > 0 and np.ptp(fy) > 0:
            out[i] = float(pearsonr(fx, fy).statistic)
    return out


def map_similarities(reference: np.ndarray | Tensor, other: np.ndarray | Tensor,
                     abs_centre: float | None = 0.5) -> dict[str, float]:
    """Mean over images of every similarity score between two ``(B, H, W)`` map stacks.

    Args:
        abs_centre: the centre of the "absolute" Spearman variant (``|abs_centre - m|``); None
            compares ``|m|`` (Adebayo et al.'s variant; for non-negative maps it equals the plain
            Spearman correlation).

    Returns:
        ``{"spearman", "spearman_abs", "ssim", "hog"}``, NaN-ignoring means (a constant map has
        no rank correlation).
    """
    x, y = _pairs(reference, other)
    if abs_centre is None:
        abs_scores = spearman_similarity(np.abs(x), np.abs(y))
    else:
        abs_scores = spearman_similarity(x, y, centre=abs_centre)
    scores = {"spearman": spearman_similarity(x, y), "spearman_abs": abs_scores,
              "ssim": ssim_similarity(x, y), "hog": hog_similarity(x, y)}
    return {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in scores.items()}


# ---------------------------------------------------------------------------------------------
# Small in-memory training loops (retraining after randomization, data randomization)
# ---------------------------------------------------------------------------------------------

def _fit_masker(cfg: ExperimentConfig, classifier: Classifier, images: Tensor, labels: Tensor, steps: int,
                batch_size: int, seed: int, progress: bool, net: MaskerNet | None = None, **options: Any) -> Masker:
    """A FIX masker for ``classifier`` with the objectives and optimizer settings of ``cfg``."""
    from dataclasses import asdict

    from masksal.training import fit_masker

    tr = cfg.masker_train
    return fit_masker(classifier, _pairs_dataset(images, labels), mode="fix", steps=steps, batch_size=batch_size,
                      seed=seed, progress=progress, net=net, masker_lr=tr.masker_lr,
                      masker_weight_decay=tr.masker_weight_decay, grad_clip=tr.grad_clip,
                      log_every=max(1, steps), **asdict(cfg.objectives), **options)


def _pairs_dataset(images: Tensor, labels: Tensor) -> Any:
    from torch.utils.data import TensorDataset

    from masksal.training.data import as_training_dataset

    return as_training_dataset(TensorDataset(images, labels), None)


# ---------------------------------------------------------------------------------------------
# The whole check
# ---------------------------------------------------------------------------------------------

@dataclass
class SanityBudget:
    """Sizes of a sanity-check run.

    Attributes:
        n_images: test images whose maps are compared.
        retrain_steps: masker steps on each randomized classifier (0: maps re-derived only).
        retrain_images: training images for that retraining and for the data randomization.
        data_epochs: classifier epochs of the data randomization (shuffled and true labels).
        data_masker_steps: masker steps for each of those two classifiers.
        batch_size: masker batch size while (re)training.
        smooth_samples: noisy copies per image of the smooth MPRT (:mod:`masksal.mprt`; 0: skip it).
        smooth_noise: its noise, as a fraction of each image's value range.
        entropy_bins: histogram bins of the efficient MPRT's entropy.
    """

    n_images: int = 64
    retrain_steps: int = 0
    retrain_images: int = 8000
    data_epochs: int = 10
    data_masker_steps: int = 100
    batch_size: int = 32
    smooth_samples: int = 50
    smooth_noise: float = 0.1
    entropy_bins: int = 100


def _explainers(masker: Masker, methods: Sequence[str]) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    from masksal.explainers import create_explainer

    out: dict[str, Callable[[Tensor, Tensor], Tensor]] = {}
    for m in methods:
        if m == "masker":
            out[m] = lambda x, _y: masker.mask_logits(x)
        else:
            e = create_explainer(m, masker.classifier)
            out[m] = lambda x, y, e=e: e.explain(x, y)  # type: ignore[misc]
    return out


def method_abs_centre(method: str) -> float | None:
    """The centre of a method's "absolute" Spearman variant: 0.5 for the masker (the paper's code
    centres masks at 0.5), None (``|m|``) for gradient-like maps."""
    return 0.5 if method == "masker" else None


def _maps(fns: dict[str, Callable[[Tensor, Tensor], Tensor]], images: Tensor, labels: Tensor,
          batch_size: int = 64) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {k: [] for k in fns}
    for s in range(0, len(images), batch_size):
        x, y = images[s:s + batch_size], labels[s:s + batch_size]
        for k, fn in fns.items():
            out[k].append(fn(x, y).detach().float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def run_sanity_checks(
    checkpoint: str | Path,
    out: str | Path = "runs/sanity",
    *,
    budget: SanityBudget | None = None,
    methods: Sequence[str] = METHODS,
    data_randomization: bool = True,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], Any] = print,
    data: str | None = None,
) -> dict[str, Any]:
    """Cascading, independent and data randomization checks of a trained masker; report in ``out``.

    Args:
        checkpoint: a masker checkpoint directory (``masksal train``).
        out: output folder: ``results.json``, ``report.html`` (and ``data_randomization/``).
        budget: sizes (images compared, retraining steps, data-randomization budget).
        methods: ``"masker"`` and any names of :func:`masksal.explainers.create_explainer`
            (compared for the true class).
        data_randomization: also train classifiers on shuffled and on true labels (small budget)
            with a masker each, and compare their maps.
        seed: seed of the randomization draws and of the small trainings.
        data: a data spec replacing the one the masker was trained on (e.g. its image folder
            where it lives now); default: the checkpoint's.

    Returns:
        The dict written to ``results.json``: ``{"cascading": {unit: {method: {score: value}}},
        "independent": ..., "data_randomization": {...} or None, "units": [...], "budget": {...}}``.
    """
    from masksal.checkpoint import load_config_of, load_masker
    from masksal.devices import resolve_device
    from masksal.mprt import efficient_mprt_summary, smooth_mprt
    from masksal.report.sanity_page import sanity_markdown, write_sanity_report
    from masksal.training.data import load_batch

    b = budget or SanityBudget()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    dev = resolve_device(device)
    masker = load_masker(checkpoint, device=dev)
    cfg = load_config_of(checkpoint)
    if data is not None:
        from masksal.config import with_overrides

        cfg = with_overrides(cfg, {"data.dataset": data}, "option")
    clf = masker.classifier
    clf.requires_grad_(False)
    test = load_batch(cfg, "test", b.n_images).to(dev)
    fns = _explainers(masker, methods)
    reference = _maps(fns, test.images, test.labels)
    units = parameterized_units(clf.model)
    train: Batch | None = None
    if b.retrain_steps > 0 or data_randomization:
        train = load_batch(cfg, "train", b.retrain_images)
    results: dict[str, Any] = {"checkpoint": str(checkpoint), "units": units, "methods": list(methods),
                               "budget": asdict(b), "seed": seed, "images": len(test)}
    examples: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    full_random: dict[str, np.ndarray] = {}  # every unit random: the last step of the cascade
    for kind, gen in (("cascading", cascading_randomization), ("independent", independent_randomization)):
        log(f"{kind} randomization of {len(units)} units ({', '.join(reversed(units))})")
        rows: dict[str, Any] = {}
        examples[kind] = {}
        for unit in tqdm(gen(clf.model, units, seed=seed), total=len(units), desc=kind, disable=not progress,
                         dynamic_ncols=True):
            maps = _maps(fns, test.images, test.labels)
            rows[unit] = {m: map_similarities(reference[m], maps[m], method_abs_centre(m)) for m in methods}
            examples[kind][unit] = {m: maps[m][:4] for m in methods}
            if b.retrain_steps > 0 and "masker" in methods and train is not None:
                retrained = _fit_masker(cfg, clf, train.images, train.labels, b.retrain_steps, b.batch_size, seed,
                                        False, net=copy.deepcopy(masker.net)).mask_logits(test.images).cpu().numpy()
                rows[unit]["masker_retrained"] = map_similarities(reference["masker"], retrained, 0.5)
                if kind == "cascading" and unit == units[0]:
                    full_random["masker_retrained"] = retrained
            if kind == "cascading" and unit == units[0]:
                full_random.update(maps)
        results[kind] = rows
    results["efficient_mprt"] = efficient_mprt_summary(reference, full_random, b.entropy_bins)
    results["smooth_mprt"] = None
    if b.smooth_samples > 0:
        log(f"smooth MPRT: {b.smooth_samples} noisy copies per image, units randomized bottom-up")
        results["smooth_mprt"] = smooth_mprt(fns, clf.model, units, test.images, test.labels, b.smooth_samples,
                                             b.smooth_noise, seed, progress)
    results["data_randomization"] = None
    if data_randomization and train is not None:
        results["data_randomization"] = _data_randomization(cfg, masker, methods, train, test, reference, b, seed,
                                                            dev, progress, log)
    results["seconds"] = time.time() - t0
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "report.md").write_text(sanity_markdown(results))
    report = write_sanity_report(out, results, test, reference, examples)
    log(f"sanity report: {report.resolve()} and report.md")
    return results


def _data_randomization(cfg: ExperimentConfig, masker: Masker, methods: Sequence[str], train: Batch, test: Batch,
                        reference: dict[str, np.ndarray], b: SanityBudget, seed: int, device: torch.device,
                        progress: bool,
                        log: Callable[[str], Any]) -> dict[str, Any]:
    """Classifiers (and maskers) trained on true and on shuffled labels, with the same small budget.

    The true-label pair is the control: its maps show how far two runs of this small budget agree
    at all, so the shuffled-label numbers are read against it, not against 1.
    """
    from masksal.classifiers import classifier_from_spec
    from masksal.training import accuracy, fit_classifier

    g = torch.Generator().manual_seed(seed + 17)
    shuffled = train.labels[torch.randperm(len(train.labels), generator=g).to(train.labels.device)]
    out: dict[str, Any] = {}
    for name, labels in (("true_labels", train.labels), ("shuffled_labels", shuffled)):
        log(f"data randomization: classifier on {name.replace('_', ' ')} ({len(labels)} images, "
            f"{b.data_epochs} epochs)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            clf = classifier_from_spec(masker.classifier.spec).to(device)
        data = _pairs_dataset(train.images, labels)
        fit_classifier(clf, data, epochs=b.data_epochs, seed=seed, progress=progress)
        train_acc = accuracy(clf, data, limit=2000)
        with torch.no_grad():
            test_acc = 100.0 * float((clf(test.images).argmax(1) == test.labels).float().mean())
        clf.requires_grad_(False)
        m = _fit_masker(cfg, clf, train.images, labels, b.data_masker_steps, b.batch_size, seed, progress,
                        hidden=masker.net.cfg.hidden, upsample=masker.net.cfg.upsample)
        maps = _maps(_explainers(m, methods), test.images, test.labels)
        out[name] = {"train_accuracy": train_acc, "test_accuracy": test_acc,
                     "similarity": {k: map_similarities(reference[k], maps[k], method_abs_centre(k)) for k in methods}}
    return out
