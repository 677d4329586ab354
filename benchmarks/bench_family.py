"""Prediction difference analysis and FIDO next to a trained masker, and the learned infill's hole error.

Rows (quality and speed, measured in one run on the same test images, masker first as the yardstick):

    python benchmarks/bench_family.py --rows masker,pda,pda_fit --pda-stride 3
    python benchmarks/bench_family.py --rows masker,fido_sdr,fido_ssr --inpainter runs/inpainter_64.safetensors

``pda`` uses each image's own patch statistics, ``pda_fit`` statistics fitted on 500 training
images. ``--rows inpainter`` prints the mean absolute error in the holes of 256 validation images
for the learned infill, its push-pull prior, the mean colour and the image mean. Needs the masker
of ``masksal demo --quick --out runs/demo_quick`` (``--masker``) and, for FIDO, an inpainter
trained with the recipe of docs/methods.md. One torch thread; prints tables, writes JSON.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch
from _common import save_json

from masksal.cli.specs import build_loader, load_method, reference_checkpoint
from masksal.data.benchmark import BenchmarkDataset
from masksal.evaluation import compare_methods, format_table, speed_table
from masksal.explainers import FIDO, PredictionDifference
from masksal.explainers.base import Explainer
from masksal.inpainting import load_inpainter, push_pull_fill, random_holes
from masksal.masking import infill


def inpainter_errors(path: str) -> dict[str, dict[str, float]]:
    """Hole error (mean |fill - x| over hole pixels, pixels in [0, 1]) per kind of hole and fill."""
    val = BenchmarkDataset(split="val", n=256, size=64)
    x = torch.from_numpy(val.images).permute(0, 3, 1, 2).float() / 255
    obj = torch.from_numpy(val.masks).float()[:, None]
    holes = {"random training-like holes": random_holes(256, (64, 64), torch.Generator().manual_seed(123)),
             "the object's pixel mask": obj, "everything but the object": 1 - obj}
    net = load_inpainter(path)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    out: dict[str, dict[str, float]] = {}
    for name, h in holes.items():
        fills = {"learned": net.inpaint(x, h), "push-pull": push_pull_fill(x, h),
                 "mean colour": infill(x, "mean", mean, mean), "image mean": infill(x, "image_mean", mean, mean)}
        out[name] = {k: float(((f - x).abs() * h).sum() / (h.sum() * 3)) for k, f in fills.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rows", default="masker,pda,pda_fit,fido_sdr,fido_ssr",
                    help="comma-separated: masker, pda, pda_fit, fido_sdr, fido_ssr, or inpainter")
    ap.add_argument("--masker", default="runs/demo_quick/masker_ca")
    ap.add_argument("--inpainter", default="runs/inpainter_64.safetensors")
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--pda-stride", type=int, default=3)
    ap.add_argument("--pda-window", type=int, default=None)
    ap.add_argument("--pda-padding", type=int, default=None)
    ap.add_argument("--out", default="runs/bench/family.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.rows == "inpainter":
        errors = inpainter_errors(args.inpainter)
        for name, row in errors.items():
            print(f"{name:28s} " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()))
        save_json(args.out, errors)
        return

    spec = f"masker:{args.masker}"
    masker = load_method(spec, None)
    assert isinstance(masker, Explainer)
    clf = masker.classifier
    _, loader = build_loader("benchmark", "test", 64, args.limit, 16, reference=reference_checkpoint(None, [spec]))
    pda = {"stride": args.pda_stride, "window": args.pda_window, "padding": args.pda_padding}
    tag = ",".join(f"{k}={v}" for k, v in pda.items() if v is not None)
    wanted = args.rows.split(",")
    methods: list[tuple[str, Explainer]] = []
    for row in wanted:
        if row == "masker":
            methods.append((spec, masker))
        elif row == "pda":
            methods.append((f"pda:{tag} (own-image statistics)", PredictionDifference(clf, **pda)))
        elif row == "pda_fit":
            train = BenchmarkDataset(split="train", n=500, size=64, start=100_000)
            fitted = PredictionDifference(clf, **pda).fit(torch.from_numpy(train.images).permute(0, 3, 1, 2))
            methods.append((f"pda:{tag} (fitted on 500 training images)", fitted))
        elif row in ("fido_sdr", "fido_ssr"):
            objective = row.split("_")[1]
            methods.append((f"fido:objective={objective} (learned infill)",
                            FIDO(clf, inpainter=args.inpainter, objective=objective)))
        else:
            raise SystemExit(f"unknown row {row!r}")
    load = os.getloadavg()[0]
    start = time.perf_counter()
    rows: list[dict[str, Any]] = compare_methods(methods, clf, loader, metrics=["le_om_f1", "maxboxacc", "pxap"],
                                                 limit=args.limit, progress=False)
    print(f"{args.limit} test images, one torch thread, load average {load:.1f} -> {os.getloadavg()[0]:.1f}, "
          f"{time.perf_counter() - start:.0f} s")
    print(format_table(rows))
    print(speed_table(rows))
    save_json(args.out, rows)


if __name__ == "__main__":
    main()
