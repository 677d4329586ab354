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
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr
from torch import Tensor, nn
from tqdm.auto import tqdm

from masksal.classifiers import Classifier
from masksal.config import ExperimentConfig
from masksal.masker import Masker, MaskerNet
from masksal.types import Batch, collate

SIMILARITIES = ("spearman", "spearman_abs", "ssim", "hog")
"""Names of the similarity scores, in report order."""

METHODS = ("masker", "gradcam", "saliency")
"""Saliency methods compared by default: ours and the two reference points."""


# ---------------------------------------------------------------------------------------------
# Parameter randomization
# ---------------------------------------------------------------------------------------------

def parameterized_units(model: nn.Module, depth: int = 2) -> list[str]:
    """Names of the model's parameterized units, from input to output.

    A unit is a submodule at most ``depth`` dots deep that holds parameters and has no such
    submodule below it: for a ResNet with ``depth=2`` that is ``conv1, bn1, layer1.0, ...,
    layer4.1, fc`` (one residual block per unit), the granularity of the paper's code.

    Args:
        model: any module (e.g. ``classifier.model``).
        depth: how many levels of the module tree to descend.

    Returns:
        Module names in ``named_modules`` order (input to output for sequential models).
    """
    candidates = [name for name, m in model.named_modules()
                  if name and name.count(".") < depth and any(True for _ in m.parameters())]
    return [n for n in candidates if not any(o.startswith(n + ".") for o in candidates)]


@torch.no_grad()
def randomize_unit(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every parameter of ``module`` at random, in place (buffers are left alone).

    Convolution kernels: Kaiming normal (fan-out), the initialization of torchvision's ResNets;
    linear weights: uniform in ``+-1/sqrt(fan_in)`` (PyTorch's default); one-dimensional
    parameters (biases, normalization scales and shifts): uniform in ``+-1/sqrt(n)``, as the
    paper's code does. Draws come from ``generator`` (on the CPU), so a seed fixes the result.
    """
    for p in module.parameters():
        if not p.is_floating_point():
            continue
        if p.dim() == 4:
            fan_out = p.shape[0] * p.shape[2] * p.shape[3]
            new = torch.randn(p.shape, generator=generator) * math.sqrt(2.0 / fan_out)
        elif p.dim() >= 2:
            bound = 1.0 / math.sqrt(max(1, p[0].numel()))
            new = (torch.rand(p.shape, generator=generator) * 2 - 1) * bound
        else:
            bound = 1.0 / math.sqrt(max(1, p.numel()))
            new = (torch.rand(p.shape, generator=generator) * 2 - 1) * bound
        p.copy_(new.to(device=p.device, dtype=p.dtype))


def _snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def cascading_randomization(model: nn.Module, units: Sequence[str] | None = None, seed: int = 0,
                            depth: int = 2) -> Iterator[str]:
    """Randomize ``units`` from the top down, cumulatively; yield each unit's name once it is done.

    While the caller handles the value ``u`` of step ``k``, the units ``units[-1] ... u`` (the
    top ``k + 1``) are random and all others keep their weights. The model's original state
    is restored when the iteration ends or is abandoned.

    Args:
        model: the module to randomize in place (e.g. ``classifier.model``).
        units: unit names, input to output; default :func:`parameterized_units`.
        seed: seed of the random draws.
        depth: passed to :func:`parameterized_units` when ``units`` is None.

    Example:
        >>> for unit in cascading_randomization(clf.model):      # doctest: +SKIP
        ...     maps = masker.mask_logits(images)            # top units random
    """
    names = list(units) if units is not None else parameterized_units(model, depth)
    original = _snapshot(model)
    g = torch.Generator().manual_seed(seed)
    try:
        for name in reversed(names):
            randomize_unit(model.get_submodule(name), g)
            yield name
    finally:
        model.load_state_dict(original)


def independent_randomization(model: nn.Module, units: Sequence[str] | None = None, seed: int = 0,
                              depth: int = 2) -> Iterator[str]:
    """Randomize one unit at a time, from the top down; yield its name while it alone is random.

    Each unit gets its trained weights back before the next one is randomized, and the whole
    model is restored when the iteration ends or is abandoned. Arguments as
    :func:`cascading_randomization`.
    """
    names = list(units) if units is not None else parameterized_units(model, depth)
    original = _snapshot(model)
    g = torch.Generator().manual_seed(seed)
    try:
        for name in reversed(names):
            unit = model.get_submodule(name)
            kept = _snapshot(unit)
            randomize_unit(unit, g)
            yield name
            unit.load_state_dict(kept)
    finally:
        model.load_state_dict(original)


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

def _batches(images: Tensor, labels: Tensor, batch_size: int, steps: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    n = len(images)
    perm = torch.randperm(n, generator=g)
    pos = 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos:pos + batch_size] if batch_size <= n else torch.arange(batch_size) % n
        pos += batch_size
        yield images[idx], labels[idx]


def fit_classifier(classifier: Classifier, images: Tensor, labels: Tensor, epochs: int, batch_size: int = 128,
                   lr: float = 0.2, seed: int = 0, progress: bool = False, desc: str = "classifier") -> float:
    """Train ``classifier`` in place (SGD + one-cycle, as ``masksal train-classifier``).

    Args:
        images: ``(N, 3, H, W)`` in [0, 1]; labels: ``(N,)`` (shuffled for data randomization).

    Returns:
        Training accuracy (%) over the last epoch's batches.
    """
    torch.manual_seed(seed)
    steps = epochs * max(1, len(images) // batch_size)
    opt = torch.optim.SGD(classifier.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
    classifier.train().requires_grad_(True)
    per_epoch = max(1, len(images) // batch_size)
    correct = seen = 0
    for step, (x, y) in enumerate(tqdm(_batches(images, labels, batch_size, steps, seed), total=steps, desc=desc,
                                       disable=not progress, leave=False, dynamic_ncols=True)):
        logits = classifier(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step >= steps - per_epoch:
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
    classifier.eval()
    return 100.0 * correct / max(1, seen)


def fit_masker(cfg: ExperimentConfig, classifier: Classifier, net: MaskerNet, images: Tensor, labels: Tensor,
               steps: int, batch_size: int = 32, seed: int = 0, progress: bool = False, desc: str = "masker") -> None:
    """Train ``net`` in place for ``steps`` FIX-mode steps against a frozen ``classifier``.

    Uses the objectives, infill and optimizer settings of ``cfg`` (the masker's own config).
    """
    # The training loop's own step, so retraining here follows exactly the recipe of `masksal train`.
    from masksal.training import fix_masker_step

    if steps <= 0:
        return
    opt = torch.optim.Adam(net.parameters(), lr=cfg.train.masker_lr, weight_decay=cfg.train.masker_weight_decay)
    was = [p.requires_grad for p in classifier.parameters()]
    classifier.requires_grad_(False)
    try:
        for step, (x, y) in enumerate(tqdm(_batches(images, labels, batch_size, steps, seed), total=steps, desc=desc,
                                           disable=not progress, leave=False, dynamic_ncols=True)):
            torch.manual_seed(seed * 1_000_003 + step)
            b = Batch(images=x, labels=y, boxes=[torch.zeros(0, 4)] * len(y))
            fix_masker_step(cfg, classifier, net, b, opt)
    finally:
        for p, r in zip(classifier.parameters(), was, strict=True):
            p.requires_grad_(r)
    net.eval()


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
    """

    n_images: int = 64
    retrain_steps: int = 0
    retrain_images: int = 8000
    data_epochs: int = 10
    data_masker_steps: int = 100
    batch_size: int = 32


def load_split(cfg: ExperimentConfig, split: str, n: int) -> Batch:
    """The first ``n`` images of ``split`` of the dataset of ``cfg`` as one :class:`Batch` (in memory)."""
    from masksal.training import build_dataset

    c = copy.deepcopy(cfg)
    if split == "test":
        c.data.n_test = n
    else:
        c.data.n_train = n
        c.data.examples_per_class = None
    ds = build_dataset(c, split)
    return collate([ds[i] for i in range(min(n, len(ds)))])  # type: ignore[arg-type]


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


def _abs_centre(method: str) -> float | None:
    # The paper's code centres its "absolute" variant at 0.5 (for masks); gradient maps use |m|.
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
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], Any] = print,
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

    Returns:
        The dict written to ``results.json``: ``{"cascading": {unit: {method: {score: value}}},
        "independent": ..., "data_randomization": {...} or None, "units": [...], "budget": {...}}``.
    """
    from masksal.checkpoint import load_config_of, load_masker

    b = budget or SanityBudget()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    masker = load_masker(checkpoint, device=device)
    cfg = load_config_of(checkpoint)
    clf = masker.classifier
    clf.requires_grad_(False)
    test = load_split(cfg, "test", b.n_images).to(device)
    fns = _explainers(masker, methods)
    reference = _maps(fns, test.images, test.labels)
    units = parameterized_units(clf.model)
    train: Batch | None = None
    if b.retrain_steps > 0 or data_randomization:
        train = load_split(cfg, "train", b.retrain_images).to(device)
    results: dict[str, Any] = {"checkpoint": str(checkpoint), "units": units, "methods": list(methods),
                               "budget": asdict(b), "seed": seed}
    examples: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for kind, gen in (("cascading", cascading_randomization), ("independent", independent_randomization)):
        log(f"{kind} randomization of {len(units)} units ({', '.join(reversed(units))})")
        rows: dict[str, Any] = {}
        examples[kind] = {}
        for unit in tqdm(gen(clf.model, units, seed=seed), total=len(units), desc=kind, disable=not progress,
                         dynamic_ncols=True):
            maps = _maps(fns, test.images, test.labels)
            rows[unit] = {m: map_similarities(reference[m], maps[m], _abs_centre(m)) for m in methods}
            examples[kind][unit] = {m: maps[m][:4] for m in methods}
            if b.retrain_steps > 0 and "masker" in methods and train is not None:
                net = copy.deepcopy(masker.net)
                fit_masker(cfg, clf, net, train.images, train.labels, b.retrain_steps, b.batch_size, seed)
                retrained = Masker(clf, net).eval().mask_logits(test.images).cpu().numpy()
                rows[unit]["masker_retrained"] = map_similarities(reference["masker"], retrained, 0.5)
        results[kind] = rows
    results["data_randomization"] = None
    if data_randomization and train is not None:
        results["data_randomization"] = _data_randomization(cfg, masker, methods, train, test, reference, b, seed,
                                                            device, progress, log)
    results["seconds"] = time.time() - t0
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "report.md").write_text(sanity_markdown(results))
    report = write_sanity_report(out, results, test, reference, examples)
    log(f"sanity report: {report.resolve()} and report.md")
    return results


def _data_randomization(cfg: ExperimentConfig, masker: Masker, methods: Sequence[str], train: Batch, test: Batch,
                        reference: dict[str, np.ndarray], b: SanityBudget, seed: int, device: str, progress: bool,
                        log: Callable[[str], Any]) -> dict[str, Any]:
    """Classifiers (and maskers) trained on true and on shuffled labels, with the same small budget.

    The true-label pair is the control: its maps show how far two runs of this small budget agree
    at all, so the shuffled-label numbers are read against it, not against 1.
    """
    from masksal.classifiers import classifier_from_spec

    g = torch.Generator().manual_seed(seed + 17)
    shuffled = train.labels[torch.randperm(len(train.labels), generator=g).to(train.labels.device)]
    out: dict[str, Any] = {}
    for name, labels in (("true_labels", train.labels), ("shuffled_labels", shuffled)):
        log(f"data randomization: classifier on {name.replace('_', ' ')} ({len(labels)} images, "
            f"{b.data_epochs} epochs)")
        torch.manual_seed(seed)
        clf = classifier_from_spec(masker.classifier.spec).to(device)
        train_acc = fit_classifier(clf, train.images, labels, b.data_epochs, seed=seed, progress=progress,
                                   desc=f"classifier ({name})")
        with torch.no_grad():
            test_acc = 100.0 * float((clf(test.images).argmax(1) == test.labels).float().mean())
        shapes = clf.tap_shapes(test.images.shape[-1])
        net = MaskerNet({t: shapes[t][0] for t in clf.taps}, copy.deepcopy(masker.net.cfg)).to(device)
        clf.requires_grad_(False)
        fit_masker(cfg, clf, net, train.images, labels, b.data_masker_steps, b.batch_size, seed, progress,
                   desc=f"masker ({name})")
        m = Masker(clf, net).eval()
        maps = _maps(_explainers(m, methods), test.images, test.labels)
        out[name] = {"train_accuracy": train_acc, "test_accuracy": test_acc,
                     "similarity": {k: map_similarities(reference[k], maps[k], _abs_centre(k)) for k in methods}}
    return out


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

_LABELS = {"spearman": "Spearman", "spearman_abs": "Spearman (abs)", "ssim": "SSIM", "hog": "HOG (Pearson)"}


def plot_randomization(results: dict[str, Any], kind: str) -> np.ndarray:
    """One panel per similarity score: score against the randomized unit, one line per method."""
    from masksal.report.plots import figure_to_array, plt

    rows: dict[str, Any] = results[kind]
    units = list(rows)
    methods = [m for m in rows[units[0]]] if units else []
    fig, axes = plt.subplots(1, len(SIMILARITIES), figsize=(4.2 * len(SIMILARITIES), 3.8), dpi=90, sharey=True)
    x = np.arange(len(units) + 1)
    for ax, score in zip(axes, SIMILARITIES, strict=True):
        for method in methods:
            ys = [1.0] + [rows[u][method][score] for u in units]
            ax.plot(x, ys, marker="o", ms=3, label=method.replace("_", " "))
        ax.axhline(0, color="grey", lw=0.7)
        ax.set_xticks(x, ["original", *units], rotation=60, ha="right", fontsize=7)
        ax.set_title(_LABELS[score])
        ax.set_ylim(-0.4, 1.05)
    axes[0].set_ylabel("similarity to the original maps")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{kind} randomization (top unit first)", fontsize=10)
    fig.tight_layout()
    return figure_to_array(fig)


def sanity_markdown(results: dict[str, Any], score: str = "spearman") -> str:
    """The numbers of the report as Markdown: one table per randomization (methods x units, in the
    order the units were randomized) and the data randomization table."""
    from masksal.report import markdown_table

    def cell(v: float) -> str:
        return f"{v:.2f}"

    b = results["budget"]
    parts = ["# Sanity checks (Adebayo et al. 2018)", "",
             f"Checkpoint {results['checkpoint']}, {b['n_images']} test images. {_LABELS[score]} similarity between "
             "the maps of the original and of the randomized classifier (1 = unchanged, about 0 = unrelated).", ""]
    for kind, order in (("cascading", "cumulatively, from the top"), ("independent", "one unit at a time")):
        rows = results.get(kind) or {}
        if not rows:
            continue
        units = list(rows)
        methods = list(rows[units[0]])
        parts += [f"## {kind.capitalize()} randomization ({order})", "",
                  markdown_table(["method", *units], [[m, *[cell(rows[u][m][score]) for u in units]] for m in methods])]
    dr = results.get("data_randomization")
    if dr:
        methods = list(dr["true_labels"]["similarity"])
        parts += ["## Data randomization", "",
                  "Classifiers trained with the same small budget on true labels (the control) and on shuffled "
                  "labels; read the shuffled row against the control, not against 1.", "",
                  markdown_table(["labels", "train acc (%)", "test acc (%)", *methods],
                                 [[name.replace("_", " "), f"{d['train_accuracy']:.1f}", f"{d['test_accuracy']:.1f}",
                                   *[cell(d["similarity"][m][score]) for m in methods]] for name, d in dr.items()])]
    return "\n".join(parts)


def write_sanity_report(out: Path, results: dict[str, Any], test: Batch, reference: dict[str, np.ndarray],
                        examples: dict[str, dict[str, dict[str, np.ndarray]]]) -> Path:
    """``report.html``: plots and tables of the similarity scores, and example maps per unit."""
    from masksal.report import Report, colorize, upscale

    rep = Report("Sanity checks (Adebayo et al. 2018) of the masker")
    b = results["budget"]
    rep.paragraph(f"Checkpoint {results['checkpoint']}. {b['n_images']} test images. Similarity between the maps of "
                  "the original classifier and of the randomized one: 1 = unchanged, about 0 = unrelated. A method "
                  "that explains the model should fall toward 0 as more of the model is randomized. Masker maps "
                  "are compared before the sigmoid; Grad-CAM and gradients are computed for the true class.")
    if b["retrain_steps"]:
        rep.paragraph(f"'masker retrained': the masker further trained for {b['retrain_steps']} steps on each "
                      "randomized classifier before its maps are taken.", note=True)
    else:
        rep.paragraph("The masker is not retrained here (use --retrain): its maps are re-derived from the randomized "
                      "classifier's features only. A masker reading layer3/layer4 cannot change while only fc is "
                      "random.", note=True)
    for kind in ("cascading", "independent"):
        rows = results[kind]
        rep.heading(f"{kind.capitalize()} randomization")
        rep.image(plot_randomization(results, kind), f"{kind}: similarity against the randomized unit", width_px=1100)
        methods = list(next(iter(rows.values())))
        rep.table(["unit", *[f"{m} {_LABELS[s]}" for m in methods for s in ("spearman", "ssim")]],
                  [[u, *[float(rows[u][m][s]) for m in methods for s in ("spearman", "ssim")]] for u in rows])
        cells = []
        img = test.images[0].permute(1, 2, 0).cpu().numpy()
        ms = [m for m in reference]
        cells.append((upscale((img * 255).astype(np.uint8), 2), "image 0"))
        cells += [(upscale(colorize(reference[m][0]), 2), f"{m}: original") for m in ms]
        for u, maps in examples[kind].items():
            cells.append((upscale((img * 255).astype(np.uint8), 2), u))
            cells += [(upscale(colorize(maps[m][0]), 2), f"{m}: {u}") for m in ms]
        rep.grid(cells, columns=1 + len(ms), cell_px=110)
    dr = results.get("data_randomization")
    if dr:
        rep.heading("Data randomization")
        rep.paragraph("Two classifiers of the same architecture trained with the same small budget, one on the true "
                      "labels (control) and one on shuffled labels, each with a masker trained for it; their maps are "
                      "compared with the original model's. Read the shuffled-label row against the control, not "
                      "against 1.")
        rep.table(["labels", "train acc (%)", "test acc (%)",
                   *[f"{m} {_LABELS[s]}" for m in dr["true_labels"]["similarity"] for s in ("spearman", "ssim")]],
                  [[name.replace("_", " "), float(d["train_accuracy"]), float(d["test_accuracy"]),
                    *[float(d["similarity"][m][s]) for m in d["similarity"] for s in ("spearman", "ssim")]]
                   for name, d in dr.items()])
    return rep.write(out / "report.html")
