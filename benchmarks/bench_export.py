"""Speed of the exported masker (onnxruntime, CPU) against PyTorch eager, and the cost of explaining.

Two models, random weights (speed does not depend on training):

* ``small``: small_resnet18 width 16 at 64 px (the demo's masker), batch 64;
* ``resnet50``: torchvision ResNet-50 at 224 px, taps layer3 + layer4, batch 8.

For each, measured side by side in one run (median of ``--repeats``, the variants run in turn):

1. classify and explain (logits and maps from one call): PyTorch eager
   (:class:`masksal.export.ClassifyAndExplain`) against the ONNX graph in onnxruntime, with one
   thread and with each runtime's default thread count; the largest difference of their outputs;
2. its overhead over a plain classifier forward (the same classifier, PyTorch eager, logits only).

Prints a table and writes JSON.

    python benchmarks/bench_export.py [--models small,resnet50] [--repeats 7] [--out runs/bench/export.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import save_json

from masksal.classifiers import create_classifier
from masksal.export import ClassifyAndExplain, export_masker, require
from masksal.masker import Masker, MaskerNet
from masksal.report.markdown import markdown_table

MODELS: dict[str, dict[str, Any]] = {
    "small": {"arch": "small_resnet18", "kwargs": {"width": 16}, "classes": 20, "size": 64, "batch": 64},
    "resnet50": {"arch": "resnet50", "kwargs": {}, "classes": 1000, "size": 224, "batch": 8},
}


def _timed_interleaved(fns: dict[str, Callable[[], object]], repeats: int,
                       medians: dict[str, float]) -> dict[str, float]:
    """Seconds per call of each function: the best of ``repeats``, run in turn so load changes hit all
    alike (on a shared machine the best run is the least disturbed one; medians go to the JSON)."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for rep in range(repeats):
        for k in names[rep % len(names):] + names[:rep % len(names)]:  # rotated: no one always runs first
            t = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t)
    medians.update({k: float(np.median(v)) for k, v in times.items()})
    return {k: float(np.min(v)) for k, v in times.items()}


def bench_model(name: str, spec: dict[str, Any], repeats: int, tmp: Path) -> dict[str, Any]:
    ort = require("onnxruntime")
    torch.manual_seed(0)
    clf = create_classifier(spec["arch"], spec["classes"], **spec["kwargs"])
    shapes = clf.tap_shapes(spec["size"])
    masker = Masker(clf, MaskerNet({t: shapes[t][0] for t in clf.taps})).eval()
    x = torch.rand(spec["batch"], 3, spec["size"], spec["size"])
    path = tmp / f"{name}.onnx"
    t = time.perf_counter()
    export_masker(masker, path, image_size=spec["size"])
    export_s = time.perf_counter() - t

    both = ClassifyAndExplain(masker).eval()
    sessions = {}
    for threads in (1, 0):  # 0: onnxruntime's default (one per physical core)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Idle pool threads spin by default, stealing the CPU from the PyTorch run that follows.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions[threads] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {"images": x.numpy()}
    with torch.no_grad():
        ref_logits, ref_maps = both(x)
    got_logits, got_maps = sessions[0].run(None, feed)
    max_diff = {"logits": float(np.abs(got_logits - ref_logits.numpy()).max()),
                "maps": float(np.abs(got_maps - ref_maps.numpy()).max())}

    @torch.no_grad()
    def eager_both() -> object:
        return both(x)

    @torch.no_grad()
    def eager_classify() -> object:
        return clf(x)

    medians: dict[str, float] = {}
    times: dict[str, float] = {}
    default_threads = torch.get_num_threads()
    for threads, label in ((1, "1 thread"), (default_threads, "default threads")):
        torch.set_num_threads(threads)  # one phase per thread count, its three variants in turn
        sess = sessions[1 if label == "1 thread" else 0]
        fns: dict[str, Callable[[], object]] = {
            f"PyTorch eager, classify only, {label}": eager_classify,
            f"PyTorch eager, classify + explain, {label}": eager_both,
            f"onnxruntime, classify + explain, {label}": lambda sess=sess: sess.run(None, feed),
        }
        times.update(_timed_interleaved(fns, repeats, medians))
    torch.set_num_threads(default_threads)
    rows = []
    for label in ("1 thread", "default threads"):
        t_cls = times[f"PyTorch eager, classify only, {label}"]
        t_eager = times[f"PyTorch eager, classify + explain, {label}"]
        t_ort = times[f"onnxruntime, classify + explain, {label}"]
        rows.append({"threads": label, "classify_ms": 1000 * t_cls, "eager_ms": 1000 * t_eager, "ort_ms": 1000 * t_ort,
                     "explain_overhead": t_eager / t_cls - 1, "ort_speedup": t_eager / t_ort,
                     "eager_images_per_s": spec["batch"] / t_eager, "ort_images_per_s": spec["batch"] / t_ort})
    return {"model": name, **{k: v for k, v in spec.items() if k != "kwargs"}, "arch_kwargs": spec["kwargs"],
            "export_seconds": export_s, "onnx_mb": path.stat().st_size / 2**20, "max_abs_diff": max_diff,
            "rows": rows, "median_ms": {k: 1000 * v for k, v in medians.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="small,resnet50", help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default="runs/bench/export.json")
    args = ap.parse_args()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise SystemExit(f"error: unknown model(s) {unknown}; choose from {list(MODELS)}")
    ort = require("onnxruntime")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results.append(bench_model(name, MODELS[name], args.repeats, Path(tmp)))
    device = (f"CPU {platform.machine()}, {os.cpu_count()} logical cores; torch {torch.__version__} "
              f"(default {torch.get_num_threads()} threads), onnxruntime {ort.__version__}")
    print(f"{device}; best of {args.repeats}; random weights")
    table = []
    for r in results:
        for row in r["rows"]:
            table.append([f"{r['model']} ({r['size']} px, batch {r['batch']})", row["threads"],
                          f"{row['classify_ms']:.1f}", f"{row['eager_ms']:.1f}",
                          f"{100 * row['explain_overhead']:+.1f} %", f"{row['ort_ms']:.1f}",
                          f"{row['ort_speedup']:.2f}x"])
    print(markdown_table(["model", "threads", "classify only, eager (ms)", "classify + explain, eager (ms)",
                          "explain overhead", "classify + explain, onnxruntime (ms)", "onnxruntime speed-up"], table))
    for r in results:
        print(f"{r['model']}: exported in {r['export_seconds']:.0f} s, {r['onnx_mb']:.1f} MB; onnxruntime vs "
              f"eager max |diff|: logits {r['max_abs_diff']['logits']:.1e}, maps {r['max_abs_diff']['maps']:.1e}")
    save_json(args.out, {"device": device, "args": vars(args), "results": results})


if __name__ == "__main__":
    main()
