"""``masksal reproduce roar``: RemOve And Retrain (Hooker et al. 2019) on the built-in benchmark.

Hooker, Erhan, Kindermans & Kim, "A Benchmark for Interpretability Methods in Deep Neural
Networks", NeurIPS 2019. For each saliency method and fraction f, the top f of the pixels of
every training and test image (ranked by the method's map) are replaced by the training set's
per-channel mean colour, a classifier is trained from scratch on the degraded training images
and its accuracy on the degraded test images is measured. A method whose maps point at the
evidence makes accuracy fall faster than removing random pixels; retraining rules out that the
drop only comes from the classifier never having seen such images.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from masksal.checkpoint import write_json
from masksal.report.markdown import markdown_table
from masksal.reproduce._common import (
    Budget,
    Log,
    budget_dict,
    ensure_classifier,
    final_config_path,
    fmt,
    load_experiment,
    stage_done,
    train_run,
)

FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
METHODS = ("masker", "gradcam", "random")


def remove_top_pixels(images: Tensor, maps: Tensor, fraction: float, fill: Tensor, seed: int = 0) -> Tensor:
    """Replace the ``fraction`` most salient pixels of each image by ``fill``.

    Args:
        images: ``(N, 3, H, W)`` in [0, 1].
        maps: ``(N, H, W)`` saliency maps, larger = more salient.
        fraction: share of the pixels to remove, in [0, 1]; ``round(fraction * H * W)`` per image.
        fill: ``(3,)`` or ``(1, 3, 1, 1)`` colour of the removed pixels.
        seed: seed of the random tie-breaking (many maps, Grad-CAM's after its ReLU for one,
            have large flat regions whose order would otherwise follow the memory layout).

    Returns:
        ``(N, 3, H, W)`` degraded copy of ``images``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    n, _, h, w = images.shape
    k = int(round(fraction * h * w))
    out = images.clone()
    if k == 0:
        return out
    g = torch.Generator().manual_seed(seed)
    m = maps.detach().double().reshape(n, -1).cpu()
    lo, hi = m.min(dim=1, keepdim=True).values, m.max(dim=1, keepdim=True).values
    m = (m - lo) / (hi - lo).clamp_min(1e-30)
    key = m + torch.rand(m.shape, generator=g, dtype=torch.float64) * 1e-9
    top = key.topk(k, dim=1).indices
    removed = torch.zeros(n, h * w, dtype=torch.bool)
    removed.scatter_(1, top, True)
    removed = removed.view(n, 1, h, w).to(images.device)
    colour = fill.reshape(1, 3, 1, 1).to(images)
    return torch.where(removed, colour, out)


def _maps_for(method: str, masker: Any, images: Tensor, labels: Tensor, seed: int, batch: int = 100) -> Tensor:
    from masksal.explainers import create_explainer

    if method == "random":
        g = torch.Generator().manual_seed(seed + 991)
        return torch.rand(images.shape[0], *images.shape[-2:], generator=g)
    explainer = masker if method == "masker" else create_explainer(method, masker.classifier)
    parts = [explainer.explain(images[s:s + batch], labels[s:s + batch]).detach().cpu()
             for s in range(0, len(images), batch)]
    return torch.cat(parts)


def _resize(images: Tensor, size: int) -> Tensor:
    import torch.nn.functional as F

    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _resolve_masker(out: Path, budget: Budget, masker: str | Path | None, classifier: str | Path | None,
                    overrides: Sequence[str], progress: bool, log: Log, device: str) -> Path:
    """The masker to evaluate: ``masker``, else the ablation's final row, else one trained here."""
    if masker is not None:
        return Path(masker)
    ablation_final = out.parent / "rows" / "ca" / "seed0"
    if (ablation_final / "eval.json").is_file():
        log(f"masker: reusing the ablation's final model {ablation_final}")
        return ablation_final
    clf = ensure_classifier(out.parent, budget, classifier, progress, log, overrides, device)
    cfg = load_experiment(final_config_path(), {**budget.masker_overrides(0), "classifier.weights": str(clf)},
                          overrides)
    path = out / "masker"
    if not stage_done(path, cfg.masker_train.steps):
        log(f"masker: training the final recipe ({cfg.masker_train.steps} steps) into {path}")
    train_run(cfg, path, progress, device)
    return path


def run_roar(out: str | Path = "runs/reproduce/roar", budget: Budget | None = None, masker: str | Path | None = None,
             classifier: str | Path | None = None, methods: Sequence[str] = METHODS,
             fractions: Sequence[float] = FRACTIONS, seed: int = 0, overrides: Sequence[str] = (),
             progress: bool = True, log: Log = print, device: str = "auto") -> dict[str, Any]:
    """ROAR curves of ``methods``; writes ``report.md``, ``report.html`` and ``results.json`` to ``out``.

    Args:
        out: output folder (each retrained classifier's accuracy is cached in ``out/runs/``).
        budget: sizes: ``roar_train`` training images, ``roar_epochs``, ``roar_width`` of the
            retrained classifiers, ``n_test`` test images.
        masker: masker checkpoint whose maps are tested (default: the ablation's final row next
            to ``out``, else the final recipe trained here).
        classifier: classifier checkpoint to train that masker from (default: trained once).
        methods: ``"masker"``, ``"random"`` and any explainer name (``"gradcam"``...).
        fractions: shares of pixels removed.
        overrides: ``section.key=value`` settings for the masker trained here (if one is).

    Returns:
        ``{"accuracy": {method: {fraction: %}}, "clean_accuracy": %, ...}``.
    """
    from torch.utils.data import TensorDataset

    from masksal.checkpoint import load_config_of, load_masker
    from masksal.classifiers import create_classifier
    from masksal.reproduce._common import SMALL
    from masksal.training import accuracy as top1
    from masksal.training import fit_classifier
    from masksal.training.data import as_training_dataset, load_batch

    b = budget or SMALL
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = _resolve_masker(out, b, masker, classifier, overrides, progress, log, device)
    m = load_masker(ckpt)
    m.classifier.requires_grad_(False)
    cfg = load_config_of(ckpt)
    log(f"ROAR: maps of {', '.join(methods)} for {b.roar_train} training and {b.n_test} test images")
    train = load_batch(cfg, "train", b.roar_train)
    test = load_batch(cfg, "test", b.n_test)
    fill = train.images.mean(dim=(0, 2, 3))
    num_classes = m.classifier.num_classes
    maps = {meth: (_maps_for(meth, m, train.images, train.labels, seed),
                   _maps_for(meth, m, test.images, test.labels, seed + 1)) for meth in methods}
    runs_dir = out / "runs"
    runs_dir.mkdir(exist_ok=True)
    # A cached retraining is reused only if it was made with the same sizes and masker.
    setting = {"masker": str(ckpt), "roar_train": b.roar_train, "roar_epochs": b.roar_epochs,
               "roar_width": b.roar_width, "roar_size": b.roar_size, "n_test": b.n_test, "seed": seed,
               "trainer": "masksal.training.fit_classifier"}

    def retrain(tag: str, x_train: Tensor, x_test: Tensor, run_seed: int = seed) -> float:
        cache = runs_dir / f"{tag}.json"
        if cache.is_file():
            saved = json.loads(cache.read_text())
            if saved.get("setting") == setting:
                return float(saved["test_accuracy"])
        if b.roar_size is not None and b.roar_size != x_train.shape[-1]:
            x_train, x_test = _resize(x_train, b.roar_size), _resize(x_test, b.roar_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(run_seed)
            clf = create_classifier("small_resnet18", num_classes, width=b.roar_width)
        data = as_training_dataset(TensorDataset(x_train, train.labels), None)
        fit_classifier(clf, data, epochs=b.roar_epochs, seed=run_seed, progress=progress)
        train_acc = top1(clf, data, limit=5000)
        with torch.no_grad():
            pred = torch.cat([clf(x_test[s:s + 200]).argmax(1) for s in range(0, len(x_test), 200)])
        acc = 100.0 * float((pred == test.labels).float().mean())
        write_json(cache, {"test_accuracy": acc, "train_accuracy": train_acc, "setting": setting})
        return acc

    # The clean data is retrained twice (a second seed): the gap between the two is the noise of
    # one retraining, against which the gaps between the curves are read.
    jobs: list[tuple[str, float]] = [("clean", 0.0), ("clean_seed2", 0.0)] + [(meth, f) for meth in methods
                                                                              for f in fractions]
    accuracy: dict[str, dict[str, float]] = {meth: {} for meth in methods}
    examples: dict[str, list[np.ndarray]] = {meth: [] for meth in methods}
    clean = clean_again = math.nan
    for meth, f in tqdm(jobs, desc="ROAR retrainings", disable=not progress, dynamic_ncols=True):
        if meth == "clean":
            clean = retrain("clean", train.images, test.images)
            log(f"clean: test accuracy {clean:.1f}%")
            continue
        if meth == "clean_seed2":
            clean_again = retrain("clean_seed2", train.images, test.images, seed + 1)
            log(f"clean, second seed: test accuracy {clean_again:.1f}%")
            continue
        tr_maps, te_maps = maps[meth]
        x_train = remove_top_pixels(train.images, tr_maps, f, fill, seed)
        x_test = remove_top_pixels(test.images, te_maps, f, fill, seed + 1)
        examples[meth].append(x_test[0].permute(1, 2, 0).numpy())
        acc = retrain(f"{meth}_{f:.1f}", x_train, x_test)
        accuracy[meth][f"{f:.1f}"] = acc
        log(f"{meth}, {100 * f:.0f}% removed: test accuracy {acc:.1f}%")
    results = {"budget": budget_dict(b), "masker": str(ckpt), "methods": list(methods),
               "fractions": list(fractions), "clean_accuracy": clean, "clean_accuracy_second_seed": clean_again,
               "accuracy": accuracy, "findings": findings(accuracy, clean, abs(clean - clean_again))}
    write_json(out / "results.json", results)
    (out / "report.md").write_text(roar_markdown(results))
    write_roar_html(out / "report.html", results, test.images[0].permute(1, 2, 0).numpy(), examples)
    log(f"report: {(out / 'report.md').resolve()} and report.html")
    return results


def findings(accuracy: dict[str, dict[str, float]], clean: float, noise: float = math.nan) -> list[str]:
    """One sentence per method: does removing its top pixels hurt more than removing random ones?

    ``noise``: accuracy gap between two retrainings on the same data (different seeds); a method
    is said to beat random removal only where its mean gap exceeds it.
    """
    out = []
    rand = accuracy.get("random")
    for meth, accs in accuracy.items():
        if meth == "random" or not rand:
            continue
        below = [f for f in accs if f in rand and accs[f] < rand[f]]
        mean_gap = float(np.mean([rand[f] - accs[f] for f in accs if f in rand])) if accs else math.nan
        verdict = ""
        if np.isfinite(noise) and np.isfinite(mean_gap):
            verdict = (" Beyond the seed-to-seed noise: its pixels carry more of the evidence than random ones."
                       if mean_gap > noise else " Within the seed-to-seed noise: not distinguishable from random.")
        out.append(f"{meth}: accuracy below random removal at {len(below)} of {len(accs)} fractions "
                   f"(mean gap {mean_gap:+.1f} points; positive = the method's pixels carry more of the evidence)."
                   + verdict)
    return out


def _rows(results: dict[str, Any]) -> list[list[str]]:
    acc = results["accuracy"]
    return [[meth, fmt(results["clean_accuracy"]), *[fmt(acc[meth].get(f"{f:.1f}", math.nan))
                                                        for f in results["fractions"]]] for meth in acc]


def _header(results: dict[str, Any]) -> list[str]:
    return ["method", "0% (clean)", *[f"{100 * f:.0f}% removed" for f in results["fractions"]]]


def _notes(results: dict[str, Any]) -> list[str]:
    b = results["budget"]
    return [f"Maps of the masker {results['masker']}, Grad-CAM (layer4, true class) and uniform random maps. Each "
            f"cell: test accuracy (%) of a small_resnet18 (width {b['roar_width']}) trained from scratch for "
            f"{b['roar_epochs']} epochs on {b['roar_train']} degraded training images, tested on {b['n_test']} "
            "images degraded the same way (removed pixels = the training set's mean colour; pixels removed at "
            "64 px" + (f", images then resized to {b['roar_size']} px for the retrained classifier, to fit the "
                       "budget" if b.get("roar_size") else "") + ").",
            _noise_note(results),
            *results["findings"],
            *(["Small budget: one retraining per cell, so the curves carry the noise of a single run; "
               "--budget full trains wider classifiers for longer."] if b["name"] == "small" else [])]


def _seed_noise(results: dict[str, Any]) -> float:
    """Gap (points) between the two clean retrainings; NaN when there was only one."""
    return abs(results["clean_accuracy"] - results.get("clean_accuracy_second_seed", math.nan))


def _noise_note(results: dict[str, Any]) -> str:
    noise = _seed_noise(results)
    if not np.isfinite(noise):
        return "The clean data was retrained once: no estimate of the seed-to-seed noise."
    return (f"Seed-to-seed noise: two retrainings on the clean data reached {results['clean_accuracy']:.1f}% and "
            f"{results['clean_accuracy_second_seed']:.1f}% (gap {noise:.1f} points).")


def roar_markdown(results: dict[str, Any]) -> str:
    return "\n".join(["# ROAR: remove the most salient pixels and retrain", "",
                      *[n + "  " for n in _notes(results)], "", markdown_table(_header(results), _rows(results))])


def plot_roar(results: dict[str, Any]) -> np.ndarray:
    """Test accuracy against the fraction removed, one line per method, random dashed."""
    from masksal.report.plots import figure_to_array, plt

    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=90)
    for meth, accs in results["accuracy"].items():
        xs = [0.0] + [float(f) for f in accs]
        ys = [results["clean_accuracy"]] + list(accs.values())
        ax.plot([100 * x for x in xs], ys, marker="o", ls="--" if meth == "random" else "-", label=meth)
        noise = _seed_noise(results)
        if meth == "random" and np.isfinite(noise):
            ax.fill_between([100 * x for x in xs], [y - noise for y in ys], [y + noise for y in ys], alpha=0.15,
                            color="grey", label="random ± seed-to-seed gap")
    ax.set_xlabel("pixels removed (%)")
    ax.set_ylabel("test accuracy after retraining (%)")
    ax.legend()
    fig.tight_layout()
    return figure_to_array(fig)


def write_roar_html(path: Path, results: dict[str, Any], image: np.ndarray,
                    examples: dict[str, list[np.ndarray]]) -> Path:
    from masksal.report import Report, upscale

    rep = Report("ROAR: remove the most salient pixels and retrain")
    for n in _notes(results):
        rep.paragraph(n, note=True)
    rep.image(plot_roar(results), "test accuracy against the share of pixels removed", width_px=650)
    rep.table(_header(results), _rows(results))
    rep.heading("One test image, degraded")
    cells = []
    for meth, imgs in examples.items():
        cells.append((upscale((image * 255).astype(np.uint8), 2), f"{meth}: original"))
        cells += [(upscale((im * 255).astype(np.uint8), 2), f"{meth}: {100 * f:.0f}%")
                  for im, f in zip(imgs, results["fractions"], strict=False)]
    rep.grid(cells, columns=1 + len(results["fractions"]), cell_px=110)
    return rep.write(path)
