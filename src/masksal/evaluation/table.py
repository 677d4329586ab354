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


_NOT_RANKED = ("images", "top1", "maps_per_second")
"""Columns never marked best: counts, the classifier's own accuracy, speed (no interval)."""


def _number(v: Any) -> float | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))
    return float(v) if ok else None


def _interval(r: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    iv = dict(r.get("ci") or {}).get(key)
    if iv is None or len(iv) != 2 or any(_number(x) is None for x in iv):
        return None
    return float(iv[0]), float(iv[1])


def best_rows(rows: Sequence[Mapping[str, Any]], key: str, higher_is_better: bool) -> int | None:
    """The row that is best on ``key`` with its confidence interval apart from every other row's
    (:func:`~masksal.metrics.resampling.separated_best`); None without intervals or when they overlap."""
    from masksal.metrics.resampling import separated_best

    values = [_number(r.get(key)) for r in rows]
    return separated_best([math.nan if v is None else v for v in values], [_interval(r, key) for r in rows],
                          higher_is_better)


def format_table(results: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """Render one or several :func:`evaluate` results as a Markdown table.

    One row per result (named by its ``explainer``), one column per metric present in any of
    them (a missing value shows as ``-``). Skipped metrics are listed under the table. A result
    with confidence intervals (``ci``, :func:`evaluate` with ``ci=``) shows each value with its
    interval, ``74.0 [71.2, 76.9]``, and the best value of a column is in bold only where its
    interval lies apart from every other row's.

    Args:
        results: a result dict, or a sequence of them (e.g. one per saliency method).

    Returns:
        The Markdown text.
    """
    from masksal.report import markdown_table

    rows = [results] if isinstance(results, Mapping) else list(results)
    cols = [c for c in _COLUMNS if any(c[0] in r for r in rows)]
    best = {key: best_rows(rows, key, higher_is_better="↓" not in header) for key, header, _ in cols
            if key not in _NOT_RANKED}
    body = []
    for i, r in enumerate(rows):
        cells = [r.get("explainer", "?")]
        for key, _, fmt in cols:
            v = _number(r.get(key))
            iv = _interval(r, key)
            cell = "-" if v is None else fmt.format(v)
            if v is not None and iv is not None:
                cell += f" [{fmt.format(iv[0])}, {fmt.format(iv[1])}]"
            cells.append(f"**{cell}**" if best.get(key) == i else cell)
        body.append(cells)
    lines = markdown_table(["Method", *(h for _, h, _ in cols)], body, first_align="---").splitlines()
    with_ci = [r for r in rows if r.get("ci")]
    if with_ci:
        r0 = with_ci[0]
        runs = any(r.get("ci_over") == "seeds and images" for r in with_ci)
        lines += ["", f"[low, high]: {100 * float(r0.get('ci_level', 0.95)):g} % bootstrap interval over the images"
                      + (" (rows of several runs: over the runs and the images)" if runs else "")
                      + f", {int(r0.get('ci_resamples', 0))} resamples, seed {r0.get('ci_seed', 0)}; bold: best of "
                      "the column, its interval apart from every other method's."]
    notes = [f"{r.get('explainer', '?')}: {m} skipped ({why})"
             for r in rows for m, why in dict(r.get("skipped", {})).items()]
    notes += [f"{r.get('explainer', '?')}: {int(r['bad_samples'])} unreadable sample(s) left out, e.g. "
              f"{(r.get('bad_sample_messages') or ['?'])[0]}" for r in rows if r.get("bad_samples")]
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def speed_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of the speed columns: maps/s, ms per image, peak memory, and the masker's
    speed-up over each method (a column only when a masker is among the methods)."""
    from masksal.report import markdown_table

    with_masker = any(math.isfinite(float(r.get("masker_speedup", math.nan))) for r in rows)
    body = [[r["method"], f"{r['maps_per_second']:.1f}", f"{r['ms_per_image']:.2f}", f"{r['peak_memory_mib']:.0f}",
             *([f"{r['masker_speedup']:.1f}x"] if with_masker else [])] for r in rows]
    head = ["method", "maps/s", "ms / image", "peak memory (MiB)", *(["masker is faster by"] if with_masker else [])]
    return markdown_table(head, body, first_align="---").rstrip("\n")
