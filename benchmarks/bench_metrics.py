"""Speed of the metric accumulators on random 224 x 224 maps, boxes and masks.

Prints a table (seconds and maps per second, per metric) and writes JSON (default
``runs/bench/metrics.json``). Run: ``python benchmarks/bench_metrics.py [--n 1000] [--out PATH]``.

A second table times MaxBoxAcc and PxAP against the procedures they replace, side by side on the
first ``--ref-n`` maps (batch by batch, in turn, so that a change in the machine's load hits all
alike), and checks that all give the same hit counts / histograms:

* MaxBoxAcc, 1000 thresholds: masksal with numba (compiled union-find sweeps over all levels,
  the default when numba is installed), masksal's NumPy one pass over all levels, the previous
  masksal (one ``cv2.findContours`` per distinct uint8 level), and a port of wsolevaluation's
  procedure (one ``cv2.threshold`` + ``cv2.findContours`` per threshold, boxes per contour,
  vectorized IoU), run once for MaxBoxAccV2 (all contours) and once for MaxBoxAcc (largest
  contour), as wsolevaluation evaluates them. masksal computes v1 and v2 in one update;
  numba's first call (compiling, or loading the cache) is timed apart, before the table, both
  as this process found it and cold (a fresh cache, in a subprocess);
* PxAP: masksal with numba (one compiled pass per map, the default when numba is installed),
  masksal's NumPy path (one ``bincount`` of (pixel class, bin)), the previous masksal (binary search per
  class), and wsolevaluation's two ``np.histogram`` per image.

Maps are smooth random fields (7 x 7 noise upsampled bicubically, like CAMs); ``--noise`` uses
per-pixel noise instead, the worst case of the MaxBoxAcc contour sweep (thousands of contours per
threshold). SM and deletion/insertion run a classifier: by default a toy one (8 x 8 average pool
and a linear layer) so that the table measures the metric itself, not a network. Deletion and
insertion cost ``2 (steps + 1)`` classifier inputs per map and run on the first ``--di-n`` maps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
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
from masksal.metrics.base import NUMBA_AVAILABLE, check_maps, check_masks, minmax_normalize
from masksal.metrics.boxes import box_iou
from masksal.metrics.maxboxacc import _best_iou_per_level_opencv
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


class PerLevelMaxBoxAccuracy(MaxBoxAccuracy):
    """The previous MaxBoxAcc: one ``cv2.findContours`` per distinct uint8 level of each map."""

    def _best_iou_per_level_batch(self, maps: np.ndarray, gts: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        out = [_best_iou_per_level_opencv(m, gt, self._used_levels) for m, gt in zip(maps, gts, strict=True)]
        return np.stack([v1 for v1, _ in out]), np.stack([v2 for _, v2 in out])


class SearchsortedPxAP(PixelAveragePrecision):
    """The previous PxAP update: boolean selection and a binary search per pixel class."""

    def update(self, maps: torch.Tensor, batch: Batch) -> None:
        arr = minmax_normalize(check_maps(maps, batch, nan=self.nan_maps, metric=self.name))
        masks = check_masks(batch, self.name)
        nbins = len(self.edges) - 1
        for key, value in (("hist_object", 1), ("hist_background", 0)):
            idx = np.searchsorted(self.edges, arr[masks == value], side="right") - 1
            self._state[key] += np.bincount(np.clip(idx, 0, nbins - 1), minlength=nbins)
        self._state["count"] += arr.shape[0]


def normalize(m: np.ndarray) -> np.ndarray:
    """wsolevaluation's normalize_scoremap (a constant or NaN map becomes zeros) and its
    check_scoremap_validity (no NaN, values in [0, 1])."""
    m = m.astype(np.float64)
    if np.isnan(m).any() or m.min() == m.max():
        return np.zeros_like(m)
    m = m - m.min()
    m = m / m.max()
    if np.isnan(m).any() or m.min() < 0 or m.max() > 1:
        raise ValueError("invalid score map")
    return m


def wsol_box_hits(maps: np.ndarray, gts: list[np.ndarray], multi_contour: bool,
                  deltas: tuple[float, ...] = (0.3, 0.5, 0.7), step: float = 0.001) -> np.ndarray:
    """Port of wsolevaluation's BoxEvaluator.accumulate: hits ``(len(deltas), thresholds)``.

    Per map and threshold: binarize the uint8 map with cv2.threshold at int(t * max), findContours
    (RETR_TREE), the largest contour (``multi_contour=False``, MaxBoxAcc) or all of them
    (MaxBoxAccV2), their boxes; one IoU matrix per map, then the best IoU per threshold.
    """
    thresholds = np.arange(0, 1, step)
    hits = np.zeros((len(deltas), len(thresholds)))
    for raw, gt in zip(maps, gts, strict=True):
        m = normalize(raw)
        h, w = m.shape
        image = np.expand_dims((m * 255).astype(np.uint8), 2)
        boxes, counts = [], []
        for t in thresholds:
            _, fg = cv2.threshold(image, int(t * np.max(image)), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(fg, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
            if len(contours) == 0:
                boxes.append(np.zeros((1, 4), dtype=np.int64))
                counts.append(1)
                continue
            if not multi_contour:
                contours = [max(contours, key=cv2.contourArea)]
            found = []
            for c in contours:
                x, y, bw, bh = cv2.boundingRect(c)
                found.append([x, y, min(x + bw, w - 1), min(y + bh, h - 1)])
            boxes.append(np.asarray(found))
            counts.append(len(found))
        iou = box_iou(np.concatenate(boxes), gt).max(axis=1)
        best, i = [], 0
        for c in counts:
            best.append(iou[i:i + c].max())
            i += c
        hits += np.asarray(best)[None, :] >= np.asarray(deltas)[:, None]
    return hits


def wsol_pxap_hists(maps: np.ndarray, masks: np.ndarray, step: float = 0.001) -> tuple[np.ndarray, np.ndarray]:
    """Port of wsolevaluation's MaskEvaluator.accumulate: object and background histograms."""
    edges = np.append(np.arange(0, 1, step), [1.0, 2.0, 3.0])
    obj, bg = np.zeros(len(edges) - 1), np.zeros(len(edges) - 1)
    for raw, mask in zip(maps, masks, strict=True):
        m = normalize(raw)
        obj += np.histogram(m[mask == 1], bins=edges)[0]
        bg += np.histogram(m[mask == 0], bins=edges)[0]
    return obj, bg


def compare_speed(maps: torch.Tensor, batches: list[Batch], batch_size: int, n: int) -> list[dict[str, object]]:
    """MaxBoxAcc and PxAP against the procedures they replace on the first ``n`` maps, timed batch
    by batch in turn (CPU seconds of this process), with a check that the results agree."""
    box_metrics: dict[str, MaxBoxAccuracy] = {"one pass": MaxBoxAccuracy(backend="numpy"),
                                              "per level": PerLevelMaxBoxAccuracy(backend="numpy")}
    if NUMBA_AVAILABLE:
        box_metrics = {"numba": MaxBoxAccuracy(backend="numba"), **box_metrics}
    fastest = next(iter(box_metrics))
    px_metrics: dict[str, PixelAveragePrecision] = {"bincount": PixelAveragePrecision(backend="numpy"),
                                                    "searchsorted": SearchsortedPxAP(backend="numpy")}
    if NUMBA_AVAILABLE:
        px_metrics = {"px numba": PixelAveragePrecision(backend="numba"), **px_metrics}
    px_fastest = next(iter(px_metrics))
    ref_hits = {"v1": 0.0, "v2": 0.0}
    ref_obj, ref_bg = 0.0, 0.0
    secs = dict.fromkeys(["numba", "one pass", "per level", "wsol v1", "wsol v2", "px numba", "bincount",
                          "searchsorted",
                          "wsol pxap"], 0.0)
    done = 0
    for i, batch in enumerate(batches):
        take = min(len(batch), n - done)
        if take <= 0:
            break
        b = Batch(images=batch.images[:take], labels=batch.labels[:take], boxes=batch.boxes[:take],
                  masks=None if batch.masks is None else batch.masks[:take])
        m = maps[i * batch_size:i * batch_size + take]
        gts = [bx.numpy().astype(np.float64) for bx in b.boxes]
        for name, metric in box_metrics.items():
            t = time.process_time()
            metric.update(m, b)
            secs[name] += time.process_time() - t
        for key, multi in (("v1", False), ("v2", True)):
            t = time.process_time()
            ref_hits[key] = ref_hits[key] + wsol_box_hits(m.numpy(), gts, multi)
            secs[f"wsol {key}"] += time.process_time() - t
        for name, px in px_metrics.items():
            t = time.process_time()
            px.update(m, b)
            secs[name] += time.process_time() - t
        t = time.process_time()
        o, g = wsol_pxap_hists(m.numpy(), b.masks.numpy() if b.masks is not None else np.zeros(0))
        ref_obj, ref_bg = ref_obj + o, ref_bg + g
        secs["wsol pxap"] += time.process_time() - t
        done += take
    levels = box_metrics["one pass"].levels
    states = {k: v.state_dict() for k, v in box_metrics.items()}
    boxes_agree = all(np.array_equal(st["hits_v1"][:, levels], ref_hits["v1"])
                      and np.array_equal(st["hits_v2"][:, levels], ref_hits["v2"]) for st in states.values())
    px_states = [p.state_dict() for p in px_metrics.values()]
    px_agree = all(np.array_equal(st["hist_object"], ref_obj) and np.array_equal(st["hist_background"], ref_bg)
                   for st in px_states)
    rows: list[dict[str, object]] = []

    def row(what: str, name: str, base: str, agree: bool) -> None:
        rows.append({"comparison": what, "method": name, "maps": done, "cpu_seconds": secs[name],
                     "ms_per_map": 1000 * secs[name] / done, "speedup_of_masksal": secs[name] / secs[base],
                     "identical_results": agree})

    for name in (*box_metrics, "wsol v2", "wsol v1"):
        row("MaxBoxAcc, 1000 thresholds", name, fastest, boxes_agree)
    rows.append({"comparison": "MaxBoxAcc, 1000 thresholds", "method": "wsol v1 + v2", "maps": done,
                 "cpu_seconds": secs["wsol v1"] + secs["wsol v2"],
                 "ms_per_map": 1000 * (secs["wsol v1"] + secs["wsol v2"]) / done,
                 "speedup_of_masksal": (secs["wsol v1"] + secs["wsol v2"]) / secs[fastest],
                 "identical_results": boxes_agree})
    for name in (*px_metrics, "wsol pxap"):
        row("PxAP", name, px_fastest, px_agree)
    return rows


def numba_first_call() -> dict[str, float]:
    """Seconds numba's first call costs: in this process (loading its cache, or compiling when
    there is none) and cold (compiling into an empty cache, in a fresh subprocess)."""
    if not NUMBA_AVAILABLE:
        return {}
    call = ("from masksal.metrics._levelboxes import compiled_level_ious\n"
            "compiled_level_ious(np.random.rand(1, 9, 9), [np.array([[1.0, 1.0, 5.0, 5.0]])], np.ones(256, bool))\n")
    probe = f"import time\nimport numpy as np\nt = time.perf_counter()\n{call}print(time.perf_counter() - t)\n"
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        cold = float(subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                                    check=True).stdout.split()[-1])
    t = time.perf_counter()
    from masksal.metrics._levelboxes import compiled_level_ious  # the same import and call, here

    compiled_level_ious(np.random.rand(1, 9, 9), [np.array([[1.0, 1.0, 5.0, 5.0]])], np.ones(256, bool))
    return {"numba_first_call_seconds": time.perf_counter() - t, "numba_cold_compile_seconds": cold}


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
    parser.add_argument("--ref-n", type=int, default=100,
                        help="maps for the side-by-side comparison with the replaced procedures (0: skip)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/metrics.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    clf = toy_classifier() if args.classifier == "toy" else create_classifier("small_resnet18", 10, width=8)
    clf.eval()
    maps, batches, batch_size = make_data(args.n, args.size, args.noise)
    first_call = numba_first_call()  # before any timing: MaxBoxAcc below runs compiled code
    if first_call:
        print(f"numba first call: {first_call['numba_first_call_seconds']:.2f} s in this process (cached "
              f"code), {first_call['numba_cold_compile_seconds']:.1f} s cold (compiling, empty cache)")
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

    speed: list[dict[str, object]] = []
    if args.ref_n > 0:
        speed = compare_speed(maps, batches, batch_size, min(args.ref_n, args.n))
        print(f"\nSide by side on {speed[0]['maps']} maps (CPU seconds of this process; "
              "speed-up = method's time / masksal's default path's):")
        print(f"| {'comparison':<28} | {'method':<34} | {'ms/map':>8} | {'speed-up':>8} | {'identical':>9} |")
        print(f"|{'-' * 30}|{'-' * 36}|{'-' * 10}|{'-' * 10}|{'-' * 11}|")
        labels = {"numba": "masksal: numba sweeps (default)", "one pass": "masksal: NumPy one pass",
                  "per level": "previous: findContours per level",
                  "wsol v2": "wsolevaluation port, MaxBoxAccV2", "wsol v1": "wsolevaluation port, MaxBoxAcc",
                  "wsol v1 + v2": "wsolevaluation port, both",
                  "px numba": "masksal: numba pass (default)", "bincount": "masksal: NumPy bincount",
                  "searchsorted": "previous: searchsorted",
                  "wsol pxap": "wsolevaluation port (np.histogram)"}
        for r in speed:
            print(f"| {r['comparison']:<28} | {labels[str(r['method'])]:<34} | {r['ms_per_map']:>8.2f} | "
                  f"{r['speedup_of_masksal']:>7.1f}x | {str(r['identical_results']):>9} |")

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
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "maxboxacc_backend": MaxBoxAccuracy().backend,
        **first_call,
        "cpu_count": os.cpu_count(),
        "rows": rows,
        "side_by_side": speed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
