"""Speed of the masker against its classifier, measured side by side in one run.

* explain: masker maps/s vs a plain classifier forward (images/s), same batch and size;
* training: masker steps/s (FIX and CA) vs classifier training steps/s, same batch and size.

Random weights: speed does not depend on training. Prints a table and writes JSON.

    python benchmarks/bench_masker.py [--size 64] [--batch 64] [--repeats 20] [--out runs/bench/masker.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from masksal.classifiers import create_classifier
from masksal.config import load_config
from masksal.masker import Masker, MaskerNet
from masksal.training import MaskerTraining
from masksal.types import Batch


def timed(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="runs/bench/masker.json")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)

    clf = create_classifier("small_resnet18", args.classes, width=args.width).to(dev)
    shapes = clf.tap_shapes(args.size)
    net = MaskerNet({t: shapes[t][0] for t in clf.taps}).to(dev)
    masker = Masker(clf, net).eval()
    x = torch.rand(args.batch, 3, args.size, args.size, device=dev)
    y = torch.randint(0, args.classes, (args.batch,), device=dev)

    rows: list[dict[str, object]] = []

    @torch.no_grad()
    def classify() -> None:
        clf.eval()(x)

    t_cls = timed(classify, args.repeats)
    t_exp = timed(lambda: masker.explain(x), args.repeats)
    rows.append({"what": "classifier forward", "per_second": args.batch / t_cls, "unit": "images/s"})
    rows.append({"what": "masker explain", "per_second": args.batch / t_exp, "unit": "maps/s",
                 "ratio_to_classifier": t_cls / t_exp})

    opt = torch.optim.SGD(clf.parameters(), lr=1e-3, momentum=0.9)

    def clf_step() -> None:
        clf.train()
        loss = F.cross_entropy(clf(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t_cstep = timed(clf_step, args.repeats)
    rows.append({"what": "classifier training step", "per_second": 1 / t_cstep, "unit": "steps/s"})
    batch = Batch(images=x, labels=y, boxes=[torch.zeros(0, 4)] * args.batch)
    for mode in ("fix", "ca"):
        cfg = load_config(None, [f"masker_train.mode={mode}"])
        training = MaskerTraining(clf, net, cfg.masker_train, cfg.objectives, dev)

        def m_step(training: MaskerTraining = training) -> None:
            training.step(batch, 0)

        t = timed(m_step, args.repeats)
        rows.append({"what": f"masker training step ({mode.upper()})", "per_second": 1 / t, "unit": "steps/s",
                     "cost_in_classifier_steps": t / t_cstep})
    clf.requires_grad_(True)

    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.processor() or 'x86_64'}"
    if dev.type == "cpu":
        device_name += f", {torch.get_num_threads()} thread(s))"
    print(f"device: {device_name}; batch {args.batch}, {args.size} px, small_resnet18 width {args.width}")
    print(f"{'what':34s} {'rate':>12s}  relative")
    for r in rows:
        rel = ""
        if "ratio_to_classifier" in r:
            rel = f"{r['ratio_to_classifier']:.2f}x classifier forward speed"
        if "cost_in_classifier_steps" in r:
            rel = f"costs {r['cost_in_classifier_steps']:.2f} classifier steps"
        print(f"{r['what']:34s} {r['per_second']:10.1f} {r['unit']:9s} {rel}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": device_name, "args": vars(args), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
