"""Plots for reports, returned as RGB arrays.

Figures are :class:`matplotlib.figure.Figure` objects drawn on an Agg canvas: no pyplot state, no
``matplotlib.use`` (which would change the backend of a program that imports masksal), and
matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

# Human names of the masker's log.jsonl keys (training._masker_step and
# objectives.compute_objectives); a key not listed is shown with its underscores as spaces.
TERM_NAMES = {
    "total": "masker objective (sum of the terms)",
    "masked_in_ce": "masked-in cross-entropy (keep the class)",
    "masked_out_entropy": "masked-out −entropy (remove the evidence)",
    "masked_out_ce": "masked-out −cross-entropy (remove the evidence)",
    "masked_out_uniform": "masked-out cross-entropy to uniform",
    "area": "mask area penalty",
    "tv": "smoothness penalty (total variation)",
    "classifier_ce": "classifier loss (clean + masked images)",
}
ACCURACY_NAMES = {
    "clean_accuracy": "accuracy on clean images",
    "masked_in_accuracy": "accuracy, masked-in (only the mask kept)",
    "masked_out_accuracy": "accuracy, masked-out (the mask removed)",
}
_NOT_PLOTTED = {"step", "time", "lr"}


def new_figure(figsize: tuple[float, float], dpi: float = 100, constrained: bool = False) -> Any:
    """A :class:`~matplotlib.figure.Figure` on its own Agg canvas (outside pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] = (6.4, 4.8), dpi: float = 100,
             **kwargs: Any) -> tuple[Any, Any]:
    """``(figure, axes)`` like ``pyplot.subplots``, without pyplot."""
    fig = new_figure(figsize, dpi)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def __getattr__(name: str) -> Any:
    # `from masksal.report.plots import plt` in older call sites: `plt.subplots` is served by the
    # pyplot-free `subplots` above.
    if name == "plt":
        return SimpleNamespace(subplots=subplots)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def figure_to_array(fig: Any) -> np.ndarray:
    """Render a figure to ``(H, W, 3)`` uint8 RGB and release it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    arr = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:  # a figure made through pyplot stays registered there until closed
        pyplot.close(fig)
    return arr


def read_log(path: str | Path) -> list[dict[str, float]]:
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def running_mean(values: Sequence[float], window: int) -> np.ndarray:
    """Mean of each value and the ``window - 1`` before it (fewer at the start)."""
    v = np.asarray(values, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(v)])
    i = np.arange(1, len(v) + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo)


def _series(rows: list[dict[str, float]]) -> dict[str, list[float]]:
    keys = [k for k in rows[0] if k not in _NOT_PLOTTED and all(k in r for r in rows)]
    return {k: [float(r[k]) for r in rows] for k in keys}


def _panel(steps: list[float], series: list[tuple[str, list[float], dict[str, Any]]], title: str, ylabel: str,
           window: int) -> Any:
    # 4.8 in at 200 dpi, shown at most 480 px wide: 11 pt text is about 15 px on a desktop and
    # 12 px at phone width (the picture shrinks to the screen).
    fig = new_figure((4.8, 5.0), dpi=200, constrained=True)
    ax = fig.subplots()
    for label, vals, style in series:
        if window > 1:
            raw = ax.plot(steps, vals, linewidth=0.8, alpha=0.25, **style)
            style = {**style, "color": raw[0].get_color()}
        ax.plot(steps, running_mean(vals, window), linewidth=2.0, label=label, **style)
    ax.set_title(title, fontsize=13)
    ax.set_xlabel("training step", fontsize=12)
    ax.set_ylabel(ylabel, fontsize=12)
    ax.tick_params(labelsize=11)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=1, fontsize=11, frameon=False)
    return fig


def _summary(steps: list[float], series: list[tuple[str, list[float], dict[str, Any]]], unit: str) -> str:
    parts = [f"{label} {vals[0]:.2f}{unit} at the start, {vals[-1]:.2f}{unit} at the end" for label, vals, _ in series]
    return f"over steps {steps[0]:.0f} to {steps[-1]:.0f}: " + "; ".join(parts)


def training_figures(log_path: str | Path) -> list[tuple[np.ndarray, str, str]]:
    """Two plots of a masker's ``log.jsonl``: its weighted objective terms, and the classifier's
    accuracies with the mask's area, against the training step.

    Returns ``(RGB image, caption, alt text)`` pairs, drawn at twice the size they are shown at;
    empty when the log is missing or empty.
    """
    rows = read_log(log_path)
    if not rows:
        return []
    steps = [float(r["step"]) for r in rows]
    data = _series(rows)
    window = max(1, len(rows) // 25) if len(rows) > 40 else 1
    Series = list[tuple[str, list[float], dict[str, Any]]]
    styles: dict[str, dict[str, Any]] = {"total": {"color": "black"}, "classifier_ce": {"linestyle": "--"}}
    terms: Series = [(TERM_NAMES.get(k, k.replace("_", " ")), v, styles.get(k, {}))
                     for k, v in data.items() if k not in ACCURACY_NAMES and k != "mask_mean"]
    accs: Series = [(ACCURACY_NAMES[k], v, {}) for k, v in data.items() if k in ACCURACY_NAMES]
    if "mask_mean" in data:
        accs.append(("mask area (% of pixels)", [100 * v for v in data["mask_mean"]],
                     {"color": "black", "linestyle": "--"}))
    smooth = (f" Faint lines: every logged step; solid: the running mean of {window} logged steps."
              if window > 1 else "")
    out = []
    if terms:
        fig = _panel(steps, terms, "Training objective", "weighted loss term", window)
        clf = (" Dashed: the classifier's own loss, trained alongside the masker." if "classifier_ce" in data else "")
        out.append((figure_to_array(fig), "The terms the masker minimizes, each times its weight, and their sum "
                    "(black)." + clf + smooth,
                    "Line chart of the masker's weighted objective terms " + _summary(steps, terms, "")))
    if accs:
        fig = _panel(steps, accs, "Classifier accuracy and mask area", "percent", window)
        fig.axes[0].set_ylim(-3, 103)
        out.append((figure_to_array(fig), "Accuracy of the classifier on the training batch, clean and masked, "
                    "and the share of the image the mask keeps." + smooth,
                    "Line chart of accuracies and mask area in percent " + _summary(steps, accs, "%")))
    return out
