"""The sanity checks' report: ``report.md`` tables and ``report.html`` plots and example maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from masksal.sanity import SIMILARITIES
from masksal.types import Batch

NAN_NOTE = ("nan: every map of the method became constant (e.g. Grad-CAM once the layer it reads is random and its "
            "positive part vanishes), so no rank correlation exists; the plots leave those points out.")

_LABELS = {"spearman": "Spearman", "spearman_abs": "Spearman (abs)", "ssim": "SSIM", "hog": "HOG (Pearson)"}


def _images(results: dict[str, Any]) -> int:
    """The number of test images compared (fewer than asked for when the split is smaller)."""
    return int(results.get("images", results["budget"]["n_images"]))


def plot_randomization(results: dict[str, Any], kind: str, title: str | None = None) -> np.ndarray:
    """One panel per similarity score: score against the randomized unit, one line per method."""
    from masksal.report.plots import figure_to_array, plt

    rows: dict[str, Any] = results[kind]
    units = list(rows)
    methods = [m for m in rows[units[0]]] if units else []
    fig, axes = plt.subplots(1, len(SIMILARITIES), figsize=(4.2 * len(SIMILARITIES), 3.8), dpi=90, sharey=True)
    # One y range for the shared axis, down to the lowest score of any panel.
    low = min([-0.4, *[float(v) - 0.05 for u in units for m in methods for sc in SIMILARITIES
                       if np.isfinite(v := rows[u][m][sc])]])
    axes[0].set_ylim(low, 1.05)
    x = np.arange(len(units) + 1)
    for ax, score in zip(axes, SIMILARITIES, strict=True):
        for method in methods:
            ys = [1.0] + [rows[u][method][score] for u in units]
            ax.plot(x, ys, marker="o", ms=3, label=method.replace("_", " "))
        ax.axhline(0, color="grey", lw=0.7)
        ax.set_xticks(x, ["original", *units], rotation=60, ha="right", fontsize=7)
        ax.set_title(_LABELS[score])
    axes[0].set_ylabel("similarity to the original maps")
    axes[0].legend(fontsize=7)
    fig.suptitle(title or f"{kind} randomization (top unit first)", fontsize=10)
    fig.tight_layout()
    return figure_to_array(fig)


def sanity_markdown(results: dict[str, Any], score: str = "spearman") -> str:
    """The numbers of the report as Markdown: one table per randomization (methods x units, in the
    order the units were randomized) and the data randomization table."""
    from masksal.report import markdown_table

    def cell(v: float) -> str:
        return f"{v:.2f}"

    parts = ["# Sanity checks (Adebayo et al. 2018)", "",
             f"Checkpoint {results['checkpoint']}, {_images(results)} test images. {_LABELS[score]} similarity "
             "between the maps of the original and of the randomized classifier (1 = unchanged, about 0 = unrelated). "
             f"{NAN_NOTE}", ""]
    for kind, order in (("cascading", "cumulatively, from the top"), ("independent", "one unit at a time")):
        rows = results.get(kind) or {}
        if not rows:
            continue
        units = list(rows)
        methods = list(rows[units[0]])
        parts += [f"## {kind.capitalize()} randomization ({order})", "",
                  markdown_table(["method", *units], [[m, *[cell(rows[u][m][score]) for u in units]] for m in methods])]
    parts += _mprt_markdown(results, score, cell)
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


EMPRT_TEXT = ("Efficient MPRT (Hedström et al. 2023): the relative rise of each map's histogram entropy from the "
              "trained to the fully randomized classifier, (H_random - H_trained) / H_trained; positive passes (the "
              "map grows more complex, closer to noise, when the model is random), higher is better.")
SMPRT_TEXT = ("Smooth MPRT (Hedström et al. 2023): each map averaged over {n} noisy copies of the image (noise "
              "{noise} of its value range) before the comparison; units randomized cumulatively from the input up.")


def _mprt_markdown(results: dict[str, Any], score: str, cell: Any) -> list[str]:
    """The smooth and efficient MPRT tables (absent from results written before they existed)."""
    from masksal.report import markdown_table

    parts: list[str] = []
    em = results.get("efficient_mprt")
    if em:
        parts += ["## Efficient MPRT", "", EMPRT_TEXT, "",
                  markdown_table(["method", "eMPRT (mean)", "share > 0", "entropy trained", "entropy random"],
                                 [[m.replace("_", " "), cell(d["score"]), cell(d["pass_rate"]),
                                   cell(d["entropy_trained"]), cell(d["entropy_random"])] for m, d in em.items()])]
    sm = results.get("smooth_mprt")
    if sm:
        b = results["budget"]
        units = list(sm)
        methods = list(sm[units[0]])
        parts += ["## Smooth MPRT (bottom-up)", "", SMPRT_TEXT.format(n=b["smooth_samples"], noise=b["smooth_noise"]),
                  "", markdown_table(["method", *units],
                                     [[m, *[cell(sm[u][m][score]) for u in units]] for m in methods])]
    return parts


def write_sanity_report(out: Path, results: dict[str, Any], test: Batch, reference: dict[str, np.ndarray],
                        examples: dict[str, dict[str, dict[str, np.ndarray]]]) -> Path:
    """``report.html``: plots and tables of the similarity scores, and example maps per unit."""
    from masksal.report import Report, colorize, upscale

    rep = Report("Sanity checks (Adebayo et al. 2018) of the masker")
    b = results["budget"]
    rep.paragraph(f"Checkpoint {results['checkpoint']}. {_images(results)} test images. Similarity between the maps of "
                  "the original classifier and of the randomized one: 1 = unchanged, about 0 = unrelated. A method "
                  "that explains the model should fall toward 0 as more of the model is randomized. Masker maps "
                  "are compared before the sigmoid; Grad-CAM and gradients are computed for the true class. "
                  + NAN_NOTE)
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
    em = results.get("efficient_mprt")
    if em:
        rep.heading("Efficient MPRT")
        rep.paragraph(EMPRT_TEXT)
        rep.table(["method", "eMPRT (mean)", "share > 0", "entropy trained", "entropy random"],
                  [[m.replace("_", " "), float(d["score"]), float(d["pass_rate"]), float(d["entropy_trained"]),
                    float(d["entropy_random"])] for m, d in em.items()])
    sm = results.get("smooth_mprt")
    if sm:
        rep.heading("Smooth MPRT")
        rep.paragraph(SMPRT_TEXT.format(n=b["smooth_samples"], noise=b["smooth_noise"]))
        rep.image(plot_randomization(results, "smooth_mprt", "smooth MPRT (input unit first)"),
                  "smooth MPRT: similarity against the randomized unit", width_px=1100)
        methods = list(next(iter(sm.values())))
        rep.table(["unit", *[f"{m} {_LABELS[s]}" for m in methods for s in ("spearman", "ssim")]],
                  [[u, *[float(sm[u][m][s]) for m in methods for s in ("spearman", "ssim")]] for u in sm])
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
