"""Maps of K classes per image: a conditional masker's one forward pass against K passes.

For K = 1, 5, 20 target classes per image, measured side by side in one run (same batch, size,
classifier and threads):

* ``explain_targets``: a conditional masker's ``(B, K, H, W)`` masks from one classifier forward
  and one decoder pass (only the class head runs K times), for each head (``projection``, ``film``);
* ``explain x K``: the same masks by K calls of ``explain(images, targets)``, one forward each;
* ``gradcam x K``: Grad-CAM, K forward and backward passes;
* the classifier forward alone (images/s), the reference.

Rates are maps/s (B * K maps per call); each K's calls and a classifier forward are timed
interleaved, round by round, and each ratio is to the forward of the same rounds (a shared
machine's changing load then hits all alike). Classifier forwards per call are counted with a
forward hook. Random weights: speed does not depend on training. Prints a table and writes JSON.

    python benchmarks/bench_targets.py [--size 64] [--batch 64] [--ks 1,5,20] [--out runs/bench/targets.json]
"""

from __future__ import annotations

import argparse
import functools
import platform
import time
from collections.abc import Callable
from typing import Any

import torch
from _common import save_json

from masksal.classifiers import create_classifier
from masksal.explainers import create_explainer
from masksal.masker import Masker, MaskerConfig, MaskerNet


def timed_together(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function, the calls interleaved round by round (one call of
    each per round): on a shared machine a change of load then hits every method alike, and their
    ratios stay comparable."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
    return {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()}


def forwards_per_call(model: torch.nn.Module, fn: Callable[[], object]) -> int:
    """How many times ``model`` runs its forward during one call of ``fn``."""
    count = [0]
    handle = model.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    try:
        fn()
    finally:
        handle.remove()
    return count[0]


def methods(maskers: dict[str, Masker], gradcam: Any, x: torch.Tensor, targets: torch.Tensor
            ) -> dict[str, Callable[[], object]]:
    """The calls compared for ``targets`` ``(B, K)``: each gives the B * K maps."""
    calls: dict[str, Callable[[], object]] = {
        f"explain_targets ({c})": functools.partial(m.explain_targets, x, targets) for c, m in maskers.items()}
    proj = maskers["projection"]
    calls["explain x K (projection)"] = lambda: [proj.explain(x, targets[:, j]) for j in range(targets.shape[1])]
    calls["gradcam x K"] = lambda: [gradcam.explain(x, targets[:, j]) for j in range(targets.shape[1])]
    return calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--ks", default="1,5,20")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="runs/bench/targets.json")
    args = ap.parse_args()
    dev = torch.device(args.device)
    ks = [int(k) for k in args.ks.split(",")]
    if max(ks) > args.classes:
        raise SystemExit(f"--ks: K up to {args.classes} (the number of classes)")
    torch.manual_seed(0)

    clf = create_classifier("small_resnet18", args.classes, width=args.width).to(dev).eval()
    shapes = clf.tap_shapes(args.size)
    maskers = {c: Masker(clf, MaskerNet({t: shapes[t][0] for t in clf.taps},
                                        MaskerConfig(conditional=True, conditioning=c),
                                        num_classes=args.classes).to(dev)).eval()
               for c in ("projection", "film")}
    gradcam = create_explainer("gradcam", clf)
    x = torch.rand(args.batch, 3, args.size, args.size, device=dev)
    g = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def classify() -> None:
        clf(x)

    rows: list[dict[str, Any]] = []
    for k in ks:
        targets = torch.stack([torch.randperm(args.classes, generator=g)[:k] for _ in range(args.batch)]).to(dev)
        calls = {"classifier forward": classify, **methods(maskers, gradcam, x, targets)}
        secs = timed_together(calls, args.repeats)
        t_cls = secs["classifier forward"]
        if k == ks[0]:
            rows.append({"what": "classifier forward", "k": 0, "per_second": args.batch / t_cls,
                         "unit": "images/s", "forwards": 1})
        for what, fn in calls.items():
            if what != "classifier forward":
                rows.append({"what": what, "k": k, "per_second": args.batch * k / secs[what], "unit": "maps/s",
                             "forwards": forwards_per_call(clf.model, fn),
                             "ratio_to_classifier_forward": t_cls / secs[what]})

    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.processor() or 'x86_64'}"
    if dev.type == "cpu":
        device_name += f", {torch.get_num_threads()} thread(s))"
    print(f"device: {device_name}; batch {args.batch}, {args.size} px, small_resnet18 width {args.width}, "
          f"{args.classes} classes")
    print(f"{'what':32s} {'K':>3s} {'rate':>10s} {'unit':9s} {'forwards':>8s}  time per call / classifier forward")
    for r in rows:
        rel = f"{1 / r['ratio_to_classifier_forward']:.2f}x" if "ratio_to_classifier_forward" in r else ""
        print(f"{r['what']:32s} {r['k']:3d} {r['per_second']:10.1f} {r['unit']:9s} {r['forwards']:8d}  {rel}")
    save_json(args.out, {"device": device_name, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
