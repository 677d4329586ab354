"""Training throughput (images/s) with 1 and 2 data-parallel processes on CPU (gloo).

Each row is a short real training run (``train_classifier`` or ``train_masker`` in CA mode) on
the built-in benchmark, in fresh processes joined by a gloo group on 127.0.0.1; the global batch
is the same in every row, so a row's images/s compare directly. The first ``--warmup`` steps are
not timed. Random classifier weights: speed does not depend on training. Prints a table and
writes JSON.

Rows: 1 process with all C cores' threads, 1 process with 1 thread, 2 processes with C/2
threads each (BatchNorm synchronized, then not). On this machine the 2 processes share the same
cores, so the 2-process rows measure the cost of data parallelism (gradient all-reduce,
synchronized BatchNorm, a batch split in halves) against the 1-process rows, not a speed-up;
"2 processes x 1 thread" vs "1 process x 1 thread" is the scaling one would get from a second
free core. With one GPU per process each process has its own device.

    python benchmarks/bench_distributed.py [--size 64] [--batch 32] [--steps 8] [--workloads masker,classifier]
        [--out runs/bench/distributed.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import save_json

from masksal.classifiers import create_classifier
from masksal.config import load_config
from masksal.distributed import get_world_size
from masksal.precision import RunOptions
from masksal.training import train_classifier, train_masker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from launch import launch_local  # noqa: E402  (the tests' local process launcher)

NOTE = ("the 2 processes share this machine's {cores} CPU core(s) ({half} thread(s) each), the same cores the "
        "1-process rows use: the 2-process rows measure the overhead of data parallelism on shared cores, not a "
        "multi-device speed-up. Other programs running on the machine make all rows noisy.")


def _job(what: str, overrides: list[str], out: str, sync_batchnorm: bool, warmup: int) -> dict[str, Any]:
    """One timed training run, in every process of the group."""
    cfg = load_config(None, overrides)
    times: dict[int, float] = {}

    def tick(step: int, _rec: dict[str, float]) -> None:
        times[step] = time.perf_counter()  # after the per-step all-reduce of the log: all processes agree

    run = RunOptions(device="cpu", amp="off", sync_batchnorm=sync_batchnorm)
    if what == "classifier":
        res = train_classifier(cfg, out, progress=False, on_step=tick, run=run)
    else:
        res = train_masker(cfg, out, progress=False, on_step=tick, run=run)
    last = max(times)
    return {"world": get_world_size(), "steps": int(res["steps"]), "timed_steps": last - warmup,
            "seconds": times[last] - times[warmup]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32, help="global batch (split across the processes)")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workloads", default="masker", help="comma-separated: masker (CA mode), classifier")
    ap.add_argument("--out", default="runs/bench/distributed.json")
    args = ap.parse_args()
    if args.batch % 2:
        ap.error("--batch must be even (split across 2 processes)")
    cores = os.cpu_count() or 1
    common = [f"data.image_size={args.size}", f"data.n_train={args.batch * (args.steps + 1)}", "data.n_test=8",
              "data.cache_dir=null", "data.families=[digits]", f"classifier.kwargs={{width: {args.width}}}",
              "masker_train.log_every=1", "masker_train.checkpoint_every=100000"]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="masksal-bench-") as tmp:
        torch.manual_seed(0)
        weights = Path(tmp) / "classifier.pt"
        torch.save(create_classifier("small_resnet18", 10, width=args.width).model.state_dict(), weights)
        # One epoch of `steps` steps for the classifier; `steps` masker steps in CA mode.
        workloads = {
            "classifier": [*common, "classifier_train.epochs=1", f"classifier_train.batch_size={args.batch}"],
            "masker": [*common, "masker_train.mode=ca", f"masker_train.batch_size={args.batch}",
                       f"masker_train.steps={args.steps}",
                       f"classifier.weights={weights}"],
        }
        # (processes, threads per process, synchronized BatchNorm)
        plan = [(1, cores, True), (1, 1, True), (2, max(1, cores // 2), True), (2, max(1, cores // 2), False)]
        for what in [w.strip() for w in args.workloads.split(",") if w.strip()]:
            if what not in workloads:
                ap.error(f"unknown workload {what!r}: choose from {sorted(workloads)}")
            name = "masker (CA)" if what == "masker" else what
            for world, threads, sync in plan:
                out = Path(tmp) / f"{what}-{world}-{threads}-{sync}"
                res = launch_local(_job, world, what, workloads[what], str(out), sync, args.warmup,
                                   threads=threads)[0]
                ips = args.batch * res["timed_steps"] / res["seconds"]
                rows.append({"training": name, "processes": world, "threads_per_process": threads,
                             "sync_batchnorm": sync and world > 1, "global_batch": args.batch,
                             "per_process_batch": args.batch // world, "timed_steps": res["timed_steps"],
                             "seconds": res["seconds"], "images_per_second": ips})
                print(f"  {name}: {world} process(es) x {threads} thread(s), sync BatchNorm "
                      f"{'on' if sync and world > 1 else 'off'}: {ips:.1f} images/s", flush=True)
    base = {r["training"]: r["images_per_second"] for r in rows
            if r["processes"] == 1 and r["threads_per_process"] == 1}
    for r in rows:
        r["relative_to_1_process_1_thread"] = r["images_per_second"] / base[r["training"]]
    note = NOTE.format(cores=cores, half=max(1, cores // 2))
    device = f"CPU ({platform.processor() or platform.machine()}, {cores} cores), gloo on 127.0.0.1"
    print(f"\ndevice: {device}; global batch {args.batch}, {args.size} px, small_resnet18 width {args.width}")
    print(f"note: {note}\n")
    print(f"{'training':12s} {'processes':>9s} {'threads':>7s} {'sync BN':>7s} {'batch/proc':>10s} {'images/s':>9s} "
          f"{'vs 1x1':>7s}")
    for r in rows:
        print(f"{r['training']:12s} {r['processes']:9d} {r['threads_per_process']:7d} "
              f"{'on' if r['sync_batchnorm'] else 'off':>7s} {r['per_process_batch']:10d} "
              f"{r['images_per_second']:9.1f} {r['relative_to_1_process_1_thread']:6.2f}x")
    save_json(args.out, {"device": device, "note": note, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
