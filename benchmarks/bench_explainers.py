"""Speed of every saliency method (maps/s), measured side by side in one run.

Our Grad-CAM (backward to the layer only) runs next to pytorch-grad-cam's (backward through the
whole network) and captum's LayerGradCam, with a plain classifier forward as the yardstick.
Random weights (speed does not depend on training), small_resnet18. Small method settings by
default (RISE 500 masks, 50 MP and 20 EP steps, 16 IG steps, 10 SmoothGrad samples);
``--paper`` uses the papers' settings (RISE 4000 masks, MP 300 and EP 800 steps, IG and
SmoothGrad 50 samples: minutes per batch on a CPU). The settings of every method are recorded in
the JSON. Prints a table and writes JSON.

A last section times Extremal Perturbation's optimisation step with its smooth max mask built by
the current code and by the former one (``_smooth_max_mask_reference``), in turn, at each
``--ep-size`` (one image, one area, paper settings otherwise; the time per step includes the blur
pyramid, built once per call), and the mask builder alone (forward and backward);
``--ep-steps 0`` skips it.

    python benchmarks/bench_explainers.py [--paper] [--methods gradcam rise:n_masks=100] \\
        [--size 64] [--batch 64] [--repeats 5] [--threads N] [--ep-size 64 224] [--ep-steps 10] \\
        [--out runs/bench/explainers.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from _common import save_json
from captum.attr import LayerAttribution, LayerGradCam

from masksal.classifiers import Classifier, create_classifier
from masksal.explainers import ExtremalPerturbation, SmoothMaxMask, create_explainer, parse_method_spec
from masksal.explainers.extremal_perturbation import _smooth_max_mask_reference

SMALL: dict[str, dict[str, Any]] = {
    "gradcam": {},
    "pytorch_grad_cam": {},
    "saliency": {},
    "ig": {"steps": 16},
    "smoothgrad": {"n_samples": 10},
    "guided_backprop": {},
    "rise": {"n_masks": 500},
    "meaningful_perturbation": {"iterations": 50},
    "extremal_perturbation": {"iterations": 20},
    "centre": {},
    "random": {},
}
PAPER: dict[str, dict[str, Any]] = {name: {} for name in SMALL}  # the classes' defaults are the papers'


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_call(fn: Callable[[], object], dev: torch.device) -> float:
    sync(dev)
    t = time.perf_counter()
    fn()
    sync(dev)
    return time.perf_counter() - t


def time_side_by_side(calls: dict[str, Callable[[], object]], dev: torch.device, repeats: int,
                      long_call_s: float = 2.0) -> dict[str, list[float]]:
    """Seconds per call of each entry. Every call is timed once; those faster than ``long_call_s``
    are then timed ``repeats - 1`` more times in round-robin rounds, so that a change in the
    machine's load affects them alike."""
    times = {name: [time_call(fn, dev)] for name, fn in calls.items()}
    fast = [name for name, t in times.items() if t[0] < long_call_s]
    for _ in range(repeats - 1):
        for name in fast:
            times[name].append(time_call(calls[name], dev))
    return times


def settings_of(explainer: object) -> dict[str, Any]:
    """The explainer's configuration: its public attributes of plain types."""
    plain = (int, float, str, bool, list, tuple, type(None))
    return {k: v for k, v in vars(explainer).items() if not k.startswith("_") and isinstance(v, plain)}


def ep_mask_comparison(clf: Classifier, size: int, steps: int, repeats: int, dev: torch.device) -> dict[str, Any]:
    """Extremal Perturbation's step time with the current and the former mask builder, in turn."""
    ep = ExtremalPerturbation(clf, areas=0.1, iterations=steps)
    x = torch.rand(1, 3, size, size, device=dev)
    y = torch.zeros(1, dtype=torch.long, device=dev)
    generator = ep.mask_generator(size, size, dev)
    current = SmoothMaxMask.__call__

    def former(self: SmoothMaxMask, params: torch.Tensor) -> torch.Tensor:
        return _smooth_max_mask_reference(self, params)

    def run(builder: Callable[[SmoothMaxMask, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        SmoothMaxMask.__call__ = builder  # type: ignore[method-assign]
        try:
            return ep.explain(x, y)
        finally:
            SmoothMaxMask.__call__ = current  # type: ignore[method-assign]

    def mask_step(builder: Callable[[SmoothMaxMask, torch.Tensor], torch.Tensor]) -> None:
        params = torch.rand(1, 1, *generator.grid_shape, device=dev, requires_grad=True)
        builder(generator, params).square().sum().backward()

    maps = {"current": run(current), "former": run(former)}  # also the warm-up
    timings: dict[str, list[float]] = {"current": [], "former": []}
    mask_timings: dict[str, list[float]] = {"current": [], "former": []}
    for _ in range(repeats):
        for name, builder in (("current", current), ("former", former)):
            timings[name].append(time_call(lambda b=builder: run(b), dev) / steps)
            mask_timings[name].append(time_call(lambda b=builder: mask_step(b), dev))
    step = {k: statistics.median(v) for k, v in timings.items()}
    mask = {k: statistics.median(v) for k, v in mask_timings.items()}
    return {"size": size, "steps_timed": steps, "repeats": repeats, "grid": list(generator.grid_shape),
            "canvas": list(generator.canvas_shape), "step_seconds": step, "mask_seconds": mask,
            "step_speedup": step["former"] / step["current"], "mask_speedup": mask["former"] / mask["current"],
            "mask_share_of_step": {k: mask[k] / step[k] for k in step},
            "max_abs_map_difference": float((maps["current"] - maps["former"]).abs().max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=None,
                    help="method specs, e.g. gradcam rise:n_masks=100,batch_size=50 (default: all)")
    ap.add_argument("--paper", action="store_true", help="the papers' settings instead of small ones")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--ep-size", type=int, nargs="+", default=[64, 224],
                    help="image sizes of the Extremal Perturbation section")
    ap.add_argument("--ep-steps", type=int, default=10, help="EP steps per timed run (0: skip the section)")
    ap.add_argument("--out", default="runs/bench/explainers.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)

    clf = create_classifier("small_resnet18", args.classes, width=args.width).to(dev).eval()
    x = torch.rand(args.batch, 3, args.size, args.size, device=dev)
    y = torch.randint(0, args.classes, (args.batch,), device=dev)
    warm = x[:2], y[:2]

    defaults = PAPER if args.paper else SMALL
    specs: list[tuple[str, dict[str, Any]]]
    if args.methods:
        specs = [parse_method_spec(s) for s in args.methods]
        specs = [(n, {**defaults.get(n, {}), **o}) for n, o in specs]
    else:
        specs = list(defaults.items())

    @torch.no_grad()
    def classify() -> None:
        clf(x)

    captum_gc = LayerGradCam(clf, clf.layer("layer4"))

    def captum_gradcam() -> None:
        a = captum_gc.attribute(x, target=y, relu_attributions=True)
        LayerAttribution.interpolate(a, (args.size, args.size), "bilinear")

    calls: dict[str, Callable[[], object]] = {
        "classifier forward (reference)": classify,
        "captum LayerGradCam (reference)": captum_gradcam,
    }
    settings: dict[str, dict[str, Any]] = {"classifier forward (reference)": {},
                                           "captum LayerGradCam (reference)": {"layer": "layer4"}}
    for name, options in specs:
        explainer = create_explainer(name, clf, **options)
        explainer.explain(*warm)  # builds lazy state (masks, noise, mask generators) outside the timing
        calls[explainer.name] = partial(explainer.explain, x, y)
        settings[explainer.name] = settings_of(explainer)
        if explainer.name == "gradcam":  # top-1 comes from the same forward pass: no extra cost
            calls["gradcam (targets=None, top-1)"] = partial(explainer.explain, x)
            settings["gradcam (targets=None, top-1)"] = settings_of(explainer)
    classify()
    captum_gradcam()
    load_before = os.getloadavg()
    times = time_side_by_side(calls, dev, args.repeats)
    load_after = os.getloadavg()

    rows: list[dict[str, Any]] = []
    for name, ts in times.items():
        t = statistics.median(ts)
        rows.append({"method": name, "maps_per_s": args.batch / t, "seconds_per_batch": t, "timed_calls": len(ts),
                     "settings": settings[name]})
    t_fwd = rows[0]["seconds_per_batch"]
    t_cap = rows[1]["seconds_per_batch"]

    by_name = {r["method"]: r for r in rows}
    if "gradcam" in by_name and "pytorch_grad_cam" in by_name:
        by_name["gradcam"]["speedup_over_pytorch_grad_cam"] = (
            by_name["gradcam"]["maps_per_s"] / by_name["pytorch_grad_cam"]["maps_per_s"])
    if "gradcam" in by_name:
        by_name["gradcam"]["speedup_over_captum_layergradcam"] = by_name["gradcam"]["maps_per_s"] * t_cap / args.batch

    if dev.type == "cuda":
        device_name = torch.cuda.get_device_name(dev)
    else:
        device_name = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"device: {device_name}; batch {args.batch}, {args.size} px, small_resnet18 width {args.width}, "
          f"{'paper' if args.paper else 'small'} settings; targets given; "
          f"load average {load_before[0]:.1f} -> {load_after[0]:.1f}")
    print(f"{'method':34s} {'maps/s':>10s} {'s/batch':>9s}  vs classifier forward")
    for r in rows:
        extra = ""
        if "speedup_over_pytorch_grad_cam" in r:
            extra = f"  ({r['speedup_over_pytorch_grad_cam']:.1f}x pytorch_grad_cam, " \
                    f"{r['speedup_over_captum_layergradcam']:.2f}x captum)"
        print(f"{r['method']:34s} {r['maps_per_s']:10.1f} {r['seconds_per_batch']:9.3f}  "
              f"{r['maps_per_s'] * t_fwd / args.batch:6.3f}x{extra}")
    ep_section = []
    for ep_size in args.ep_size if args.ep_steps > 0 else []:
        sec = ep_mask_comparison(clf, ep_size, args.ep_steps, args.repeats, dev)
        ep_section.append(sec)
        st, mk = sec["step_seconds"], sec["mask_seconds"]
        print(f"\nExtremal Perturbation at {ep_size} px, one image, median of {args.repeats} runs of "
              f"{args.ep_steps} steps, current vs former mask builder (in turn):")
        print(f"  step: {1000 * st['current']:.1f} ms vs {1000 * st['former']:.1f} ms "
              f"({sec['step_speedup']:.2f}x); mask forward + backward alone: "
              f"{1000 * mk['current']:.1f} ms vs {1000 * mk['former']:.1f} ms ({sec['mask_speedup']:.1f}x); "
              f"mask share of the step {100 * sec['mask_share_of_step']['current']:.0f}% vs "
              f"{100 * sec['mask_share_of_step']['former']:.0f}%; maps differ by at most "
              f"{sec['max_abs_map_difference']:.1e}")
    save_json(args.out, {"device": device_name, "torch": torch.__version__, "args": vars(args),
                         "settings": "paper" if args.paper else "small",
                         "load_average_1min": [load_before[0], load_after[0]], "rows": rows,
                         "extremal_perturbation_mask": ep_section})


if __name__ == "__main__":
    main()
