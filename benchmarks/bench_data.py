"""Speed of the procedural benchmark generator (one process, one thread).

Prints a table of images per second by image size and writes JSON (default
``runs/bench/data.json``). Run: ``python benchmarks/bench_data.py [--n 2000] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import cv2
import numpy as np
from _common import save_json

from masksal.data import sources
from masksal.data.benchmark import GENERATOR_VERSION, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="images per measurement at 64 px")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 224])
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/data.json"))
    args = parser.parse_args()
    # One core: the generator is meant to be fast without threads.
    cv2.setNumThreads(1)

    t0 = time.perf_counter()
    for family in sources.FAMILIES:
        sources.object_source(family)
    sources.load_backgrounds()
    load_s = time.perf_counter() - t0

    rows = []
    for size in args.sizes:
        # Keep each measurement to a similar number of pixels.
        n = max(50, int(args.n * (64 / size) ** 2))
        generate("train", 20, size=size)
        best = float("inf")
        for repeat in range(args.repeats):
            t = time.perf_counter()
            out = generate("train", n, size=size, seed=repeat)
            best = min(best, time.perf_counter() - t)
        area = out["masks"].reshape(n, -1).mean(1)
        rows.append({"size": size, "n": n, "seconds": best, "images_per_s": n / best,
                     "mean_mask_fraction": float(area.mean())})

    print(f"source loading (once per process): {load_s:.2f} s")
    print(f"{'size':>6} {'n':>6} {'seconds':>8} {'img/s':>9} {'mask frac':>9}")
    for r in rows:
        print(f"{r['size']:>6} {r['n']:>6} {r['seconds']:>8.3f} {r['images_per_s']:>9.0f} "
              f"{r['mean_mask_fraction']:>9.3f}")

    result = {
        "benchmark": "procedural data generation",
        "generator_version": GENERATOR_VERSION,
        "threads": 1,
        "machine": platform.platform(),
        "processor": platform.processor(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "source_loading_s": load_s,
        "rows": rows,
    }
    save_json(args.out, result)


if __name__ == "__main__":
    main()
