"""Plots for reports (matplotlib, headless), returned as RGB arrays."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def figure_to_array(fig: plt.Figure) -> np.ndarray:
    fig.canvas.draw()
    arr = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # type: ignore[attr-defined]
    plt.close(fig)
    return arr


def read_log(path: str | Path) -> list[dict[str, float]]:
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def training_curves(log_path: str | Path) -> np.ndarray | None:
    """Two panels from a training ``log.jsonl``: objective terms, and accuracies / mask size."""
    rows = read_log(log_path)
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6), dpi=100)
    for key in sorted({k for r in rows for k in r}):
        if key in ("step", "time", "lr") or any(key not in r for r in rows):
            continue
        vals = [float(r[key]) for r in rows]
        if key.endswith("accuracy"):
            b.plot(steps, vals, label=key)
        elif key == "mask_mean":
            b.plot(steps, [100 * v for v in vals], label="mask mean (%)", color="black", linestyle="--")
        else:
            a.plot(steps, vals, label=key)
    a.set_xlabel("step")
    a.set_title("objective terms (weighted)")
    a.legend(fontsize=7)
    b.set_xlabel("step")
    b.set_title("accuracy (%) and mask size")
    b.legend(fontsize=7)
    fig.tight_layout()
    return figure_to_array(fig)
