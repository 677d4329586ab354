"""Cost of ``import masksal`` (and its public API) on top of ``import torch, torchvision``.

Each measurement runs in a fresh interpreter, alternating the two commands, and the median of the
repeats is reported: the difference is what masksal adds. Prints a table and writes JSON.

    python benchmarks/bench_import.py [--repeats 7] [--out runs/bench/import.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

from _common import save_json

BASE = "import torch, torchvision"
WITH = ("import torch, torchvision; import masksal; "
        "from masksal import fit_masker, load_masker, create_explainer, evaluate, Masker")
CLI = "import masksal.cli"


def seconds(code: str) -> float:
    """Wall time of ``python -c`` running ``code`` after the interpreter starts, measured inside it."""
    probe = f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default="runs/bench/import.json")
    args = ap.parse_args()
    runs: dict[str, list[float]] = {"base": [], "with": [], "cli": []}
    seconds(WITH)  # warm the file cache once
    for _ in range(args.repeats):
        runs["base"].append(seconds(BASE))
        runs["with"].append(seconds(WITH))
        runs["cli"].append(seconds(f"{BASE}; {CLI}"))
    med = {k: statistics.median(v) for k, v in runs.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"median of {args.repeats} fresh interpreters, load average {load:.1f} on {os.cpu_count()} cores")
    print(f"{'import torch, torchvision':45s} {med['base']:6.2f} s")
    adds = med["with"] - med["base"]
    print(f"{'  + masksal and its public API':45s} {med['with']:6.2f} s  (masksal adds {adds:.2f} s)")
    print(f"{'  + masksal.cli (what `masksal --help` loads)':45s} {med['cli']:6.2f} s  "
          f"(adds {med['cli'] - med['base']:.2f} s)")
    save_json(args.out, {"runs": runs, "median": med, "masksal_adds": med["with"] - med["base"],
                         "cli_adds": med["cli"] - med["base"], "load_average": load})


if __name__ == "__main__":
    main()
