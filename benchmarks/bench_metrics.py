"""Speed of the metric accumulators on random 224 x 224 maps, boxes and masks.

Prints a table (seconds and maps per second, per metric) and writes JSON (default
``runs/bench/metrics.json``). Run: ``python benchmarks/bench_metrics.py [--n 1000] [--out PATH]``.

Maps are smooth random fields (7 x 7 noise upsampled bicubically, like CAMs); ``--noise`` uses
per-pixel noise instead, the worst case of the MaxBoxAcc contour sweep (thousands of contours per
threshold). SM and deletion/insertion run a classifier: by default a toy one (8 x 8 average pool
and a linear layer) so that the table measures the metric itself, not a network. Deletion and
insertion cost ``2 (steps + 1)`` classifier inputs per map and run on the first ``--di-n`` maps.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from masksal.classifiers import Classifier, create_classifier
from masksal.metrics import (
    DeletionInsertion,
    LocalizationError,
    MaxBoxAccuracy,
    Metric,
    PixelAveragePrecision,
    SaliencyMetric,
)
from masksal.types import Batch


def make_data(n: int, size: int, noise: bool, seed: int = 0) -> tuple[torch.Tensor, list[Batch], int]:
    """Random maps ``(n, size, size)`` and batches of random images, labels, boxes and masks."""
    rng = np.random.default_rng(seed)
    if noise:
        maps = rng.random((n, size, size)).astype(np.float32)
    else:
        maps = np.stack([cv2.resize(rng.random((7, 7)).astype(np.float32), (size, size),
                                    interpolation=cv2.INTER_CUBIC) for _ in range(n)])
    images = torch.from_numpy(rng.random((n, 3, size, size), dtype=np.float32))
    labels = torch.from_numpy(rng.integers(0, 10, n))
    boxes, masks = [], np.zeros((n, size, size), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        k = int(rng.integers(1, 4))
        x0, y0 = rng.integers(0, size * 3 // 4, (2, k))
        w, h = rng.integers(size // 8, size // 2, (2, k))
        x1, y1 = np.minimum(x0 + w, size - 1), np.minimum(y0 + h, size - 1)
        boxes.append(torch.from_numpy(np.stack([x0, y0, x1, y1], 1).astype(np.float32)))
        for j in range(k):  # an ellipse in each box, an ignore band around it
            cx, cy, rx, ry = (x0[j] + x1[j]) / 2, (y0[j] + y1[j]) / 2, (x1[j] - x0[j]) / 2, (y1[j] - y0[j]) / 2
            r = ((xx - cx) / max(rx, 1)) ** 2 + ((yy - cy) / max(ry, 1)) ** 2
            masks[i][(r <= 1.3) & (masks[i] == 0)] = 255
            masks[i][r <= 1.0] = 1
    batch_size = 50
    batches = [Batch(images=images[s:s + batch_size], labels=labels[s:s + batch_size],
                     boxes=boxes[s:s + batch_size], masks=torch.from_numpy(masks[s:s + batch_size]))
               for s in range(0, n, batch_size)]
    return torch.from_numpy(maps), batches, batch_size


def toy_classifier(num_classes: int = 10) -> Classifier:
    model = nn.Sequential(nn.AdaptiveAvgPool2d(8), nn.Flatten(), nn.Linear(3 * 64, num_classes))
    return Classifier(model, taps=["0"])


def time_metric(make: Callable[[], Metric], maps: torch.Tensor, batches: list[Batch], batch_size: int,
                limit: int) -> tuple[float, int, dict[str, float]]:
    metric = make()
    done = 0
    t = time.perf_counter()
    for i, batch in enumerate(batches):
        if done >= limit:
            break
        take = min(len(batch), limit - done)
        b = Batch(images=batch.images[:take], labels=batch.labels[:take], boxes=batch.boxes[:take],
                  masks=None if batch.masks is None else batch.masks[:take])
        m = maps[i * batch_size:i * batch_size + take]
        if isinstance(metric, LocalizationError):
            metric.update(m, b, predictions=b.labels)
        else:
            metric.update(m, b)
        done += take
    metric.all_reduce()
    out = metric.compute()
    return time.perf_counter() - t, done, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="maps per metric")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--di-n", type=int, default=50, help="maps for deletion/insertion")
    parser.add_argument("--steps", type=int, default=100, help="deletion/insertion steps")
    parser.add_argument("--noise", action="store_true", help="per-pixel noise maps (worst case)")
    parser.add_argument("--classifier", choices=["toy", "small_resnet18"], default="toy")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/metrics.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    clf = toy_classifier() if args.classifier == "toy" else create_classifier("small_resnet18", 10, width=8)
    clf.eval()
    maps, batches, batch_size = make_data(args.n, args.size, args.noise)
    metrics: list[tuple[str, Callable[[], Metric], int]] = [
        ("LE / OM / F1", lambda: LocalizationError(), args.n),
        ("LE / OM / F1 (SI geometry)", lambda: LocalizationError(geometry="si"), args.n),
        ("MaxBoxAcc v1 + v2 (1000 thresholds)", lambda: MaxBoxAccuracy(), args.n),
        ("PxAP", lambda: PixelAveragePrecision(), args.n),
        ("SM", lambda: SaliencyMetric(clf), args.n),
        (f"Deletion + insertion ({args.steps} steps)", lambda: DeletionInsertion(clf, steps=args.steps),
         min(args.di_n, args.n)),
    ]
    rows = []
    for name, make, limit in metrics:
        seconds, n, values = time_metric(make, maps, batches, batch_size, limit)
        rows.append({"metric": name, "maps": n, "seconds": seconds, "maps_per_s": n / seconds,
                     "ms_per_map": 1000 * seconds / n, "values": values})
        print(f"  {name}: {seconds:.2f} s", flush=True)

    print(f"\n{args.n} maps of {args.size} x {args.size} ({'pixel noise' if args.noise else 'smooth'}), "
          f"classifier: {args.classifier}, torch threads: {torch.get_num_threads()}")
    print(f"| {'metric':<40} | {'maps':>5} | {'seconds':>8} | {'maps/s':>8} | {'ms/map':>7} |")
    print(f"|{'-' * 42}|{'-' * 7}|{'-' * 10}|{'-' * 10}|{'-' * 9}|")
    for r in rows:
        print(f"| {r['metric']:<40} | {r['maps']:>5} | {r['seconds']:>8.2f} | {r['maps_per_s']:>8.1f} | "
              f"{r['ms_per_map']:>7.2f} |")

    result = {
        "benchmark": "metric accumulators",
        "n": args.n,
        "size": args.size,
        "maps": "pixel noise" if args.noise else "smooth (7x7 noise, bicubic)",
        "classifier": args.classifier,
        "deletion_insertion_steps": args.steps,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
