"""Speed of the masker against its classifier, measured side by side in one run.

* explain: masker maps/s vs a plain classifier forward (images/s), same batch and size, and the
  masker network alone on taps computed beforehand (what explain adds to the forward pass); with
  ``--rivals``, Grad-CAM (ours, the family's default layer) and, on a ViT, attention rollout and
  its gradient-weighted form, on the same model and batch;
* training: masker steps/s (FIX and CA) vs classifier training steps/s, same batch and size.

Any classifier ``create_classifier`` builds (``--arch``, ``--kwargs`` as YAML, ``--taps``), e.g. the
small ViT of docs/backbones.md (configs/vit_tiny_benchmark.yaml):

    python benchmarks/bench_masker.py --arch timm:vit_tiny_r_s16_p8_224 --rivals \\
        --kwargs "{img_size: 64, patch_size: 2, embed_dim: 96, depth: 4, num_heads: 3, mlp_ratio: 2}"

``--variant`` (repeatable) times more masker architectures against the same classifier in the same
run, each given as ``KEY=VALUE`` items separated by ``;`` (``decoder``, ``taps``, ``hidden``,
``refine``), e.g. the decoders compared in docs/reproduce.md ("Choosing the decoder"):

    python benchmarks/bench_masker.py --no-training \\
        --variant "decoder=fpn;taps=layer2,layer3,layer4;hidden=32" --variant "refine=8"
    python benchmarks/bench_masker.py --arch resnet50 --classes 1000 --size 224 --batch 8 --no-training \\
        --variant "decoder=fpn;taps=layer2,layer3,layer4;hidden=32"

The explain rows are timed interleaved (one call of each per round, median over rounds), so a
machine whose load changes during the run slows all of them alike. Random weights: speed does not
depend on training. Prints a table and writes JSON.

    python benchmarks/bench_masker.py [--size 64] [--batch 64] [--repeats 20] [--out runs/bench/masker.json]
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from _common import save_json

from masksal.classifiers import Classifier, create_classifier
from masksal.config import load_config
from masksal.explainers import AttentionRollout, GradCAM, GradientRollout
from masksal.explainers.rollout import attention_layers
from masksal.masker import Masker, MaskerConfig, MaskerNet
from masksal.training import MaskerTraining
from masksal.types import Batch


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median seconds per call."""
    return side_by_side({"fn": fn}, repeats, warmup)["fn"]


def side_by_side(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each function, the calls interleaved round by round."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            _sync()
            times[k].append(time.perf_counter() - t)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


VARIANT_KEYS = ("decoder", "taps", "hidden", "refine")


def parse_variant(text: str) -> dict[str, Any]:
    """``"decoder=fpn;taps=layer2,layer3;hidden=32;refine=8"`` as ``{key: value}`` (a one-line error
    naming the option otherwise); keys left out keep the base masker's setting."""
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        key, eq, value = (s.strip() for s in item.partition("="))
        if not eq or key not in VARIANT_KEYS or not value:
            raise SystemExit(f"--variant {text!r}: expected KEY=VALUE items separated by ';', KEY one of "
                             f"{', '.join(VARIANT_KEYS)}")
        if key == "taps":
            out[key] = [t.strip() for t in value.split(",") if t.strip()]
        elif key in ("hidden", "refine"):
            try:
                out[key] = int(value)
            except ValueError:
                raise SystemExit(f"--variant {text!r}: {key} must be an integer, got {value!r}") from None
        else:
            out[key] = value
    return out


def build_masker(clf: Classifier, taps: list[str], size: int, cfg: MaskerConfig, dev: torch.device) -> Masker:
    """A masker (random weights) reading ``taps`` of ``clf``'s network: a classifier of its own that
    shares the network, so maskers with different taps can be timed against the same model."""
    own = Classifier(clf.model, taps, clf.spec.mean, clf.spec.std, spec=copy.deepcopy(clf.spec),
                     reshape=clf.reshape)
    shapes = own.tap_shapes(size)
    return Masker(own, MaskerNet({t: shapes[t][0] for t in taps}, cfg).to(dev)).eval()


def variant_label(taps: list[str], cfg: MaskerConfig) -> str:
    refine = f", refine {cfg.refine}" if cfg.refine else ""
    return f"masker {cfg.decoder} {'+'.join(t.replace('layer', 'l') for t in taps)} h{cfg.hidden}{refine}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="small_resnet18",
                    help="any create_classifier name, e.g. timm:vit_tiny_patch16_224")
    ap.add_argument("--kwargs", default="{}", help="constructor options as YAML, e.g. '{img_size: 64, patch_size: 8}'")
    ap.add_argument("--taps", default=None, help="comma-separated tap names (default: the family's)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--width", type=int, default=16, help="small_resnet18's width (unless --kwargs sets it)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--rivals", action="store_true", help="also time Grad-CAM and (on a ViT) rollout")
    ap.add_argument("--variant", action="append", default=[],
                    help="another masker timed in the same run: 'decoder=fpn;taps=layer2,layer3;hidden=32;refine=8'")
    ap.add_argument("--no-training", action="store_true", help="skip the training-step rows")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="runs/bench/masker.json")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)

    kwargs = yaml.safe_load(args.kwargs) or {}
    if not isinstance(kwargs, dict):
        raise SystemExit(f"--kwargs: expected a YAML mapping, got {args.kwargs!r}")
    if args.arch == "small_resnet18":
        kwargs.setdefault("width", args.width)
    taps = [t.strip() for t in args.taps.split(",")] if args.taps else None
    clf = create_classifier(args.arch, args.classes, taps, **kwargs).to(dev)
    shapes = clf.tap_shapes(args.size)
    net = MaskerNet({t: shapes[t][0] for t in clf.taps}).to(dev)
    masker = Masker(clf, net).eval()
    x = torch.rand(args.batch, 3, args.size, args.size, device=dev)
    y = torch.randint(0, args.classes, (args.batch,), device=dev)

    @torch.no_grad()
    def classify() -> None:
        clf.eval()(x)

    with torch.no_grad():
        _, feats = clf.eval().forward_with_taps(x)

    @torch.no_grad()
    def head() -> None:  # the masker's own share of explain: its network on taps already computed
        net.mask(net(feats, (args.size, args.size), x))

    fns: dict[str, Callable[[], object]] = {"classifier forward": classify,
                                            "masker explain": lambda: masker.explain(x),
                                            "masker network alone (on the taps)": head}
    variants: list[dict[str, Any]] = []
    for text in args.variant:
        v = {"decoder": "paper", "taps": list(clf.taps), "hidden": 64, "refine": 0, **parse_variant(text)}
        try:
            mcfg = MaskerConfig(hidden=v["hidden"], decoder=v["decoder"], refine=v["refine"])
            other = build_masker(clf, v["taps"], args.size, mcfg, dev)
        except (ValueError, KeyError) as e:
            raise SystemExit(f"--variant {text!r}: {e}") from None
        label = variant_label(v["taps"], mcfg)
        variants.append({"label": label, **v})
        fns[label] = lambda other=other: other.explain(x)
    if args.rivals:
        cam = GradCAM(clf)
        fns[f"Grad-CAM ({cam.layer})"] = lambda: cam.explain(x)
        if attention_layers(clf.model):
            rollout, grad_rollout = AttentionRollout(clf), GradientRollout(clf)
            fns["attention rollout"] = lambda: rollout.explain(x)
            fns["gradient rollout"] = lambda: grad_rollout.explain(x)
    t = side_by_side(fns, args.repeats)
    t_cls = t["classifier forward"]
    rows: list[dict[str, object]] = [
        {"what": "classifier forward", "per_second": args.batch / t_cls, "unit": "images/s"}]
    for name, secs in t.items():
        if name != "classifier forward":
            rows.append({"what": name, "per_second": args.batch / secs, "unit": "maps/s",
                         "ratio_to_classifier": t_cls / secs, "cost_vs_forward": secs / t_cls})

    if not args.no_training:
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

            secs = timed(m_step, args.repeats)
            rows.append({"what": f"masker training step ({mode.upper()})", "per_second": 1 / secs, "unit": "steps/s",
                         "cost_in_classifier_steps": secs / t_cstep})
        clf.requires_grad_(True)

    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.processor() or 'x86_64'}"
    if dev.type == "cpu":
        device_name += f", {torch.get_num_threads()} thread(s))"
    params = sum(p.numel() for p in clf.model.parameters())
    print(f"device: {device_name}; batch {args.batch}, {args.size} px, {args.arch} {kwargs or ''} "
          f"({params / 1e6:.2f} M parameters), taps {', '.join(clf.taps)}")
    print(f"{'what':42s} {'rate':>12s}  relative")
    for r in rows:
        rel = ""
        if "ratio_to_classifier" in r:
            rel = (f"{r['ratio_to_classifier']:.2f}x classifier forward speed "
                   f"(costs {r['cost_vs_forward']:.2f} forwards)")
        if "cost_in_classifier_steps" in r:
            rel = f"costs {r['cost_in_classifier_steps']:.2f} classifier steps"
        print(f"{r['what']:42s} {r['per_second']:10.1f} {r['unit']:9s} {rel}")
    save_json(args.out, {"device": device_name, "args": vars(args), "taps": clf.taps, "parameters": params,
                         "variants": variants, "rows": rows})


if __name__ == "__main__":
    main()
