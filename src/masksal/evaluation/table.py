"""Markdown tables of evaluation results: quality (:func:`format_table`) and speed (:func:`speed_table`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# (key, column header, number format); the order of the table's columns.
_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("images", "Images", "{:.0f}"),
    ("top1", "Top-1 cls (%)", "{:.2f}"),
    ("gt_known_loc", "GT-known Loc (%)", "{:.2f}"),
    ("top1_loc", "Top-1 Loc (%)", "{:.2f}"),
    ("le", "LE (%) ↓", "{:.2f}"),
    ("om", "OM (%) ↓", "{:.2f}"),
    ("f1", "F1 (%)", "{:.2f}"),
    ("maxboxacc", "MaxBoxAcc (oracle thr., %)", "{:.2f}"),
    ("maxboxacc_v2", "MaxBoxAccV2 (oracle thr., %)", "{:.2f}"),
    ("boxacc", "BoxAcc (val thr., %)", "{:.2f}"),
    ("boxacc_v2", "BoxAccV2 (val thr., %)", "{:.2f}"),
    ("pxap", "PxAP (%)", "{:.2f}"),
    ("sm", "SM ↓", "{:.3f}"),
    ("deletion_auc", "Deletion AUC ↓", "{:.4f}"),
    ("insertion_auc", "Insertion AUC", "{:.4f}"),
    ("road_gap", "ROAD gap", "{:.4f}"),
    ("road_gap_blurred", "ROAD gap (blurred map)", "{:.4f}"),
    ("pointing_game", "Pointing game (%)", "{:.2f}"),
    ("class_loc", "Requested object localized (%)", "{:.2f}"),
    ("class_other_loc", "Other object localized (%) ↓", "{:.2f}"),
    ("class_pointing", "Pointing, requested (%)", "{:.2f}"),
    ("class_pointing_other", "Pointing, other (%) ↓", "{:.2f}"),
    ("class_mass_other", "Mass on other (%) ↓", "{:.2f}"),
    ("maps_per_second", "Maps/s", "{:.1f}"),
)


def format_table(results: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """Render one or several :func:`evaluate` results as a Markdown table.

    One row per result (named by its ``explainer``), one column per metric present in any of
    them (a missing value shows as ``-``). Skipped metrics are listed under the table.

    Args:
        results: a result dict, or a sequence of them (e.g. one per saliency method).

    Returns:
        The Markdown text.
    """
    from masksal.report import markdown_table

    rows = [results] if isinstance(results, Mapping) else list(results)
    cols = [c for c in _COLUMNS if any(c[0] in r for r in rows)]
    body = []
    for r in rows:
        cells = [r.get("explainer", "?")]
        for key, _, fmt in cols:
            v = r.get(key)
            ok = isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))
            cells.append(fmt.format(v) if ok else "-")
        body.append(cells)
    lines = markdown_table(["Method", *(h for _, h, _ in cols)], body, first_align="---").splitlines()
    notes = [f"{r.get('explainer', '?')}: {m} skipped ({why})"
             for r in rows for m, why in dict(r.get("skipped", {})).items()]
    notes += [f"{r.get('explainer', '?')}: {int(r['bad_samples'])} unreadable sample(s) left out, e.g. "
              f"{(r.get('bad_sample_messages') or ['?'])[0]}" for r in rows if r.get("bad_samples")]
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def speed_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of the speed columns: maps/s, ms per image, peak memory, masker speed-up."""
    from masksal.report import markdown_table

    body = [[r["method"], f"{r['maps_per_second']:.1f}", f"{r['ms_per_image']:.2f}", f"{r['peak_memory_mib']:.0f}",
             f"{r['masker_speedup']:.1f}x"] for r in rows]
    return markdown_table(["method", "maps/s", "ms / image", "peak memory (MiB)", "masker is faster by"], body,
                          first_align="---").rstrip("\n")
