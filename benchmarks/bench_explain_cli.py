"""Speed of ``masksal explain`` on a folder: per-image wall time against the model alone, in one run.

Writes ``--images`` PNGs of the built-in benchmark (test split, the checkpoint's image size) to a
temporary folder, then times, side by side and alternating (median of ``--repeats``):

* model only: ``masker.explain`` on the same images, already decoded, in batches of ``--batch``;
* the command's function (:func:`masksal.explain_files.explain_files`, which ``masksal explain``
  calls): decode, explain, map and overlay files written, for several output settings.

The masker is the checkpoint given by ``--checkpoint`` (default: ``runs/demo_quick/masker_ca``,
from ``masksal demo --quick``) or, when it does not exist, random weights of the same architecture
(small_resnet18 width 16, 64 px): speed does not depend on training.

``--huge`` also measures the peak memory (RSS) of explaining one 6000 x 6000 PNG, in a fresh
process, above the process's memory with the model loaded.

    python benchmarks/bench_explain_cli.py [--checkpoint runs/demo_quick/masker_ca] [--images 300]
        [--threads 0] [--huge] [--out runs/bench/explain_cli.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import save_json
from PIL import Image

from masksal.checkpoint import load_masker, read_meta
from masksal.classifiers import create_classifier
from masksal.data.benchmark import BenchmarkDataset
from masksal.explain_files import explain_files
from masksal.masker import Masker, MaskerNet
from masksal.report.markdown import markdown_table

SETTINGS: dict[str, dict[str, object]] = {
    "npy + PNG overlay (default)": {},
    "npy, --no-overlay": {"overlay": False},
    "npy + JPEG overlay": {"overlay_format": "jpg"},
    "npz (float16) + PNG overlay": {"map_format": "npz"},
    "8-bit PNG map + PNG overlay": {"map_format": "png"},
}


def _masker(checkpoint: Path | None) -> tuple[Masker, int, str]:
    if checkpoint is not None and (checkpoint / "meta.json").is_file():
        return load_masker(checkpoint), read_meta(checkpoint).image_size, str(checkpoint)
    torch.manual_seed(0)
    clf = create_classifier("small_resnet18", 20, width=16)
    shapes = clf.tap_shapes(64)
    return Masker(clf, MaskerNet({t: shapes[t][0] for t in clf.taps})).eval(), 64, "random weights"


def _timed_interleaved(fns: dict[str, Callable[[Path], object]], repeats: int, root: Path,
                       medians: dict[str, float]) -> dict[str, float]:
    """Seconds per call of each function: the best of ``repeats``, run in turn so load changes hit all
    alike (on a shared machine the best run is the least disturbed one; medians go to the JSON). Each
    call writes into a new folder under ``root``: a fresh run creates its files (removing them between
    calls would load the file system's journal while the next call runs)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for rep in range(repeats + 1):  # the first round warms up
        for k, (name, fn) in enumerate(fns.items()):
            out = root / f"out{k}_{rep}"
            t = time.perf_counter()
            fn(out)
            if rep:
                times[name].append(time.perf_counter() - t)
    medians.update({k: float(np.median(v)) for k, v in times.items()})
    return {k: float(np.min(v)) for k, v in times.items()}


def _file_creation_ms(root: Path, n: int = 100) -> float:
    """Milliseconds to create one small file under ``root``: a floor the file system sets."""
    d = root / "creation"
    d.mkdir()
    t = time.perf_counter()
    for i in range(n):
        (d / f"{i}.bin").write_bytes(b"x" * 4096)
    ms = 1000 * (time.perf_counter() - t) / n
    shutil.rmtree(d)
    return ms


def _memory_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc, in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_rss_child(image: Path, checkpoint: str) -> None:
    """In a fresh process: peak RSS while explaining one huge image, above the model-loaded process."""
    masker, image_size, _ = _masker(Path(checkpoint) if checkpoint else None)
    masker.explain(torch.rand(1, 3, image_size, image_size))  # allocator and thread pools warm
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (the peak) to the present RSS
    base = _memory_mb("VmRSS")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        res = explain_files(masker, [image], Path(tmp), image_size, progress=False)
        seconds = time.perf_counter() - t
        assert not res.failed, res.failed
    print(json.dumps({"baseline_mb": base, "peak_mb": _memory_mb("VmHWM"), "seconds": seconds}))


def _huge_png(path: Path, size: int) -> None:
    """A smooth ``size x size`` RGB PNG (fast to write; decoding still holds every pixel)."""
    ramp = np.linspace(0, 255, size, dtype=np.float32).astype(np.uint8)
    img = np.empty((size, size, 3), np.uint8)
    img[..., 0] = ramp[None, :]
    img[..., 1] = ramp[:, None]
    img[..., 2] = 90
    Image.fromarray(img).save(path, compress_level=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=Path("runs/demo_quick/masker_ca"))
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32, help="the command's default --batch-size")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--workers", type=int, default=0, help="the command's --workers (0: its default)")
    ap.add_argument("--root", default=None, help="folder for the images and outputs (default: the system's "
                    "temporary folder); e.g. /dev/shm to leave the disk out")
    ap.add_argument("--huge", action="store_true", help="also measure peak memory on a 6000 x 6000 PNG")
    ap.add_argument("--huge-size", type=int, default=6000)
    ap.add_argument("--rss-child", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default="runs/bench/explain_cli.json")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.rss_child is not None:
        _peak_rss_child(args.rss_child, str(args.checkpoint))
        return

    masker, size, source = _masker(args.checkpoint)
    ds = BenchmarkDataset(split="test", n=args.images, size=size, seed=0)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(dir=args.root) as tmp:
        src = Path(tmp) / "images"
        src.mkdir()
        for i, img in enumerate(ds.images):
            Image.fromarray(img).save(src / f"{i:05d}.png")
        tensors = torch.from_numpy(ds.images).permute(0, 3, 1, 2).float().div(255.0)

        def model_only(_out: Path) -> None:
            for i in range(0, len(tensors), args.batch):
                masker.explain(tensors[i:i + args.batch])

        fns: dict[str, Callable[[Path], object]] = {"model only (masker.explain, decoded images)": model_only}
        for name, opts in SETTINGS.items():
            def run(out: Path, opts: dict[str, object] = opts) -> None:
                res = explain_files(masker, [src], out, size, batch_size=args.batch, progress=False,
                                    workers=args.workers or None, **opts)  # type: ignore[arg-type]
                assert len(res.explained) == args.images, res.failed[:3]
            fns[name] = run
        medians: dict[str, float] = {}
        times = _timed_interleaved(fns, args.repeats, Path(tmp), medians)
        creation_ms = _file_creation_ms(Path(tmp))
    model_t = times["model only (masker.explain, decoded images)"]
    for name, t in times.items():
        rows.append({"what": name, "ms_per_image": 1000 * t / args.images, "images_per_s": args.images / t,
                     "ratio_to_model": t / model_t})

    huge = None
    if args.huge:
        with tempfile.TemporaryDirectory() as tmp:
            _huge_png(Path(tmp) / "huge.png", args.huge_size)
            cmd = [sys.executable, __file__, "--rss-child", str(Path(tmp) / "huge.png"),
                   "--checkpoint", str(args.checkpoint), "--threads", str(args.threads)]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        huge = json.loads(done.stdout.strip().splitlines()[-1]) | {"size": args.huge_size}

    device = f"CPU {platform.machine()}, {torch.get_num_threads()} torch thread(s)"
    print(f"masker: {source} ({size} px); {args.images} PNG images of the built-in benchmark; batch {args.batch}; "
          f"{device}; best of {args.repeats}; files under {args.root or tempfile.gettempdir()}, where "
          f"creating one file takes {creation_ms:.2f} ms")
    print(markdown_table(["what", "ms / image", "images / s", "x model-only time"],
                         [[r["what"], f"{r['ms_per_image']:.3f}", f"{r['images_per_s']:.0f}",
                           f"{r['ratio_to_model']:.2f}"] for r in rows]))
    if huge:
        print(f"{args.huge_size} x {args.huge_size} PNG: peak RSS {huge['peak_mb']:.0f} MB, "
              f"{huge['peak_mb'] - huge['baseline_mb']:.0f} MB above the model-loaded process "
              f"({huge['baseline_mb']:.0f} MB); {huge['seconds']:.1f} s")
    record = {"device": device, "masker": source, "image_size": size,
              "args": vars(args) | {"checkpoint": str(args.checkpoint), "root": args.root or tempfile.gettempdir()},
              "rows": rows, "median_ms_per_image": {k: 1000 * v / args.images for k, v in medians.items()},
              "file_creation_ms": creation_ms, "huge": huge}
    save_json(args.out, record)


if __name__ == "__main__":
    main()
