"""How many CPU threads a training step should use, on a quiet machine and on a busy one.

Times a classifier training step and a FIX masker step (the demo's model and batch) with each
thread count from 1 to the number of cores, first on the machine as it is, then with ``--load``
extra busy processes (pure CPU loops) competing for the cores, and reports what
``masksal.cli.common.default_threads`` would choose in each case. Ratios within one run.

    python benchmarks/bench_threads.py [--load 5] [--repeats 10] [--out runs/bench/threads.json]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import torch
import torch.nn.functional as F
from _common import save_json

from masksal.classifiers import create_classifier
from masksal.cli.common import default_threads
from masksal.config import load_config
from masksal.masker import MaskerNet
from masksal.training import MaskerTraining
from masksal.types import Batch


def _spin(stop: mp.synchronize.Event) -> None:  # type: ignore[name-defined]
    x = 0
    while not stop.is_set():
        for i in range(10000):
            x += i * i


def _median_step(fn: object, repeats: int) -> float:
    for _ in range(2):
        fn()  # type: ignore[operator]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def measure(threads: int, repeats: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    clf = create_classifier("small_resnet18", 20, width=16)
    x, y = torch.rand(128, 3, 64, 64), torch.randint(0, 20, (128,))
    opt = torch.optim.SGD(clf.parameters(), lr=1e-3, momentum=0.9)

    def clf_step() -> None:
        clf.train()
        loss = F.cross_entropy(clf(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    classifier_step_s = _median_step(clf_step, repeats)  # before FIX training freezes the classifier
    shapes = clf.tap_shapes(64)
    net = MaskerNet({t: shapes[t][0] for t in clf.taps})
    cfg = load_config(None, ["masker_train.mode=fix"])
    training = MaskerTraining(clf, net, cfg.masker_train, cfg.objectives, torch.device("cpu"))
    batch = Batch(images=x[:64], labels=y[:64], boxes=[torch.zeros(0, 4)] * 64)
    return {"classifier_step_s": classifier_step_s,
            "masker_step_s": _median_step(lambda: training.step(batch, 0), repeats)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--load", type=int, default=5, help="Busy processes added for the loaded measurement.")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default="runs/bench/threads.json")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    for condition in ("as is", f"+{args.load} busy processes"):
        stop = mp.Event()
        spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.load)] \
            if condition != "as is" else []
        for p in spinners:
            p.start()
        if spinners:
            time.sleep(65)  # let the 1-minute load average see them, as default_threads does
        try:
            chosen = default_threads()
            load = os.getloadavg()[0]
            for threads in range(1, cores + 1):
                r = measure(threads, args.repeats)
                rows.append({"condition": condition, "load_average": load, "threads": threads,
                             "default_threads": chosen, **r})
                print(f"{condition:22s} load {load:5.1f}  threads {threads}: classifier step "
                      f"{r['classifier_step_s']:.3f} s, masker step {r['masker_step_s']:.3f} s"
                      f"{'  <- default' if threads == chosen else ''}")
        finally:
            stop.set()
            for p in spinners:
                p.join()
    save_json(args.out, {"cores": cores, "torch_default_threads": torch.get_num_threads(), "rows": rows})


if __name__ == "__main__":
    main()
