"""Tables of ``masksal evaluate --out`` results as docs/methods.md prints them, and a selection on the
validation split by a metric declared in advance.

    python benchmarks/family_tables.py "1:runs/sp/w1/val.json" "2:runs/sp/w2/val.json" ... \\
        --select maxboxacc_v2 --out runs/sp/val_table.json

Each argument is ``LABEL:PATH``. With ``--select METRIC`` the first row is the incumbent (the
preset's or the authors' setting): another row replaces it only when its value of METRIC is
strictly higher (ties keep the incumbent, as ``masksal tune`` does; among tied challengers the
first given wins). Prints a Markdown table (one decimal, 95 % intervals where the file has them)
and writes the rows and the choice as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _common import save_json

# (key in the evaluate JSON, column header); "↓": lower is better.
COLUMNS = (("le", "LE % ↓"), ("om", "OM % ↓"), ("f1", "F1 %"), ("maxboxacc_v2", "MaxBoxAccV2 %"),
           ("pxap", "PxAP %"), ("mask_mean", "mean mask value"), ("top1", "top-1 %"))


def cell(result: dict[str, Any], key: str) -> str:
    """``80.2 [76.8, 83.4]`` (mask_mean: three decimals, no interval); ``-`` when missing."""
    v = result.get(key)
    if not isinstance(v, int | float):
        return "-"
    if key == "mask_mean":
        return f"{v:.3f}"
    iv = (result.get("ci") or {}).get(key)
    return f"{v:.1f}" + (f" [{iv[0]:.1f}, {iv[1]:.1f}]" if iv and len(iv) == 2 else "")


def select(rows: list[tuple[str, dict[str, Any]]], metric: str) -> int:
    """Index of the chosen row: the first (incumbent) unless another is strictly higher on ``metric``."""
    best = 0
    for i, (_, r) in enumerate(rows[1:], start=1):
        if float(r[metric]) > float(rows[best][1][metric]):
            best = i
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("results", nargs="+", help="LABEL:PATH of a masksal evaluate --out JSON file")
    ap.add_argument("--select", default=None, help="metric to choose by (e.g. maxboxacc_v2); first row = incumbent")
    ap.add_argument("--out", default=None, help="JSON file for the rows and the choice")
    args = ap.parse_args()
    rows: list[tuple[str, dict[str, Any]]] = []
    for spec in args.results:
        label, sep, path = spec.rpartition(":")
        if not sep or not label:
            ap.error(f"{spec!r}: expected LABEL:PATH")
        if not Path(path).is_file():
            ap.error(f"{path}: no such file")
        rows.append((label, json.loads(Path(path).read_text())))
    chosen = select(rows, args.select) if args.select else None
    cols = [c for c in COLUMNS if any(c[0] in r for _, r in rows)]
    print("| run | " + " | ".join(h for _, h in cols) + " | s / map |")
    print("|---|" + "---:|" * (len(cols) + 1))
    for i, (label, r) in enumerate(rows):
        name = f"**{label} (chosen)**" if i == chosen else label
        per_map = float(r["seconds"]) / float(r["images"]) if "seconds" in r and r.get("images") else float("nan")
        print(f"| {name} | " + " | ".join(cell(r, k) for k, _ in cols) + f" | {per_map:.3g} |")
    if chosen is not None:
        print(f"\nchosen by {args.select} (ties keep the first row): {rows[chosen][0]}")
    if args.out:
        save_json(args.out, {"select": args.select, "chosen": None if chosen is None else rows[chosen][0],
                             "rows": [{"label": label, **r} for label, r in rows]})


if __name__ == "__main__":
    main()
