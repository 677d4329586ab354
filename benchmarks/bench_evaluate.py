"""``evaluate`` against explaining alone: what the metrics cost on top of the explainer.

Runs, on the same batches of the built-in benchmark: the explainer alone (maps and logits), then
``evaluate`` with LE/OM/F1, MaxBoxAcc and PxAP, with the metric updates in this process and in
1 or 2 worker processes beside the model. Reports wall times and their ratio to the explain-only
time (the goal: at most 1.5x), as a table and JSON. A masker checkpoint (``--masker``) is used
when given, else a masker with random weights on the demo's small classifier (speed does not
depend on training).

    python benchmarks/bench_evaluate.py [--masker runs/demo/masker_ca] [--images 2000] [--workers 0 1 2]
        [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from _common import save_json
from torch.utils.data import DataLoader

from masksal.checkpoint import load_masker
from masksal.classifiers import create_classifier
from masksal.data.benchmark import BenchmarkDataset
from masksal.evaluation import evaluate
from masksal.masker import Masker, MaskerNet
from masksal.metrics import MaxBoxAccuracy
from masksal.types import collate

METRICS = ("le_om_f1", "maxboxacc", "pxap")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masker", default=None)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the fastest of each is reported")
    ap.add_argument("--out", default="runs/bench/evaluate.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.masker:
        masker = load_masker(args.masker)
        size = int(masker.info.get("image_size", 64))
    else:
        torch.manual_seed(0)
        size = 64
        clf = create_classifier("small_resnet18", 20, width=16)
        shapes = clf.tap_shapes(size)
        masker = Masker(clf, MaskerNet({t: shapes[t][0] for t in clf.taps}))
    ds = BenchmarkDataset("test", n=args.images, size=size)
    loader = DataLoader(ds, batch_size=args.batch, collate_fn=collate)
    batches = list(loader)  # decoded once: both passes read the same tensors from memory
    # MaxBoxAcc's compiled code (numba, when installed) is loaded from its cache, or compiled, on
    # first use: timed here, apart, so that the first evaluate below does not carry it (worker
    # processes, being spawned, load it again inside their times).
    backend = MaxBoxAccuracy().backend
    t0 = time.perf_counter()
    if backend == "numba":
        from masksal.metrics._levelboxes import compiled_level_ious

        compiled_level_ious(np.random.rand(1, 9, 9), [np.array([[1.0, 1.0, 5.0, 5.0]])], np.ones(256, dtype=bool))
    first_call_s = time.perf_counter() - t0

    # Rounds in turn (explain only, then each evaluate), keeping each one's fastest wall time and
    # its smallest CPU time of this process: on a shared machine single runs vary by 1.5x.
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    results: dict[str, dict[str, float]] = {}

    def timed(what: str, run: Callable[[], dict[str, float] | None]) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        out = run()
        wall[what] = min(wall.get(what, float("inf")), time.perf_counter() - t0)
        cpu[what] = min(cpu.get(what, float("inf")), time.process_time() - c0)
        if out is not None:
            results[what] = out

    def explain_only() -> None:
        for b in batches:
            masker.explain_with_logits(b.images)

    for _ in range(args.repeat):
        timed("explain only", explain_only)
        for w in args.workers:
            timed(f"evaluate, metric workers {w}", lambda w=w: evaluate(  # type: ignore[misc]
                masker, masker.classifier, batches, metrics=METRICS, progress=False, metric_workers=w))
    rows = []
    for what in wall:
        row = {"what": what, "seconds": wall[what], "ratio": wall[what] / wall["explain only"],
               "cpu_seconds_this_process": cpu[what], "cpu_ratio": cpu[what] / cpu["explain only"]}
        if what in results:
            row.update(le=results[what]["le"], maxboxacc_v2=results[what]["maxboxacc_v2"], pxap=results[what]["pxap"])
        rows.append(row)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.images} images of {size} px, batch {args.batch}, {torch.get_num_threads()} torch thread(s), "
          f"load average {load:.1f}; metrics {', '.join(METRICS)}; MaxBoxAcc backend {backend} "
          f"(first call {first_call_s:.2f} s, not in the times below)")
    print(f"best of {args.repeat} rounds; CPU = this process's (workers' CPU not included)")
    for r in rows:
        print(f"{r['what']:32s} {r['seconds']:8.2f} s  {r['ratio']:5.2f}x explain-only   "
              f"CPU {r['cpu_seconds_this_process']:8.2f} s  {r['cpu_ratio']:5.2f}x")
    save_json(args.out, {"args": vars(args), "load_average": load, "maxboxacc_backend": backend,
                         "maxboxacc_first_call_seconds": first_call_s, "rows": rows})


if __name__ == "__main__":
    main()
