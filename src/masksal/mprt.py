"""The repaired model parameter randomisation tests: smooth MPRT and efficient MPRT.

Hedström, Weber, Lapuschkin & Höhne, "Sanity Checks Revisited: An Exploration to Repair the Model
Parameter Randomisation Test", XAI in Action workshop, NeurIPS 2023. The original test
(:func:`masksal.randomization.cascading_randomization`, Adebayo et al. 2018) compares maps of the
trained model with maps of models randomized layer by layer; two of its weaknesses have a repair:

* **smooth MPRT** (sMPRT): gradient-like maps are noisy enough that their similarity is low even
  between two runs of the same model; each map is averaged over ``n_samples`` copies of the image
  with Gaussian noise (standard deviation ``noise`` times the image's value range; the last copy is
  the clean image) before the comparison. Layers are randomized **bottom-up** (from the input),
  the order the authors recommend: top-down randomization leaves the lower layers' features, to
  which the maps are sensitive, intact for most of the run.
* **efficient MPRT** (eMPRT): instead of a similarity per layer, the relative rise of the maps'
  complexity from the trained to the fully randomized model, ``(H_random - H_trained) / H_trained``
  per image, ``H`` the discrete entropy of the map's histogram (``n_bins`` equal bins over the
  map's own range; natural logarithm). A map that explains the model becomes more complex (closer
  to noise) when the model is random: a positive score passes; higher is better.

The defaults (50 samples, noise 0.1, 100 bins) are the authors' (ImageNet). These are the
definitions of the Quantus library's ``SmoothMPRT`` and ``EfficientMPRT``, written here so that
they apply to any of masksal's explainers and to the masker's pre-sigmoid maps without a Quantus
model wrapper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

MapFn = Callable[[Tensor, Tensor], Tensor]
"""``(images (B, 3, H, W), labels (B,)) -> maps (B, H, W)``."""


def smooth_maps(fn: MapFn, images: Tensor, labels: Tensor, n_samples: int = 50, noise: float = 0.1,
                seed: int = 0) -> Tensor:
    """The maps of ``fn`` averaged over ``n_samples`` noisy copies of each image (sMPRT's denoising).

    Args:
        fn: the method's map function.
        images: ``(B, 3, H, W)`` in [0, 1].
        labels: ``(B,)`` classes the maps explain.
        n_samples: copies per image; the last one is the clean image (``n_samples = 1``: the plain map).
        noise: standard deviation of the Gaussian noise, as a fraction of each image's value range
            (``max - min`` over the image). The noisy images are clipped to [0, 1], the pixel values
            masksal's explainers take (Quantus does not clip: its inputs are normalized tensors).
        seed: seed of the noise draws (drawn on the CPU, so a seed fixes the maps on any device).

    Returns:
        ``(B, H, W)`` float32 mean maps.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    g = torch.Generator().manual_seed(seed)
    flat = images.flatten(1)
    scale = (noise * (flat.max(dim=1).values - flat.min(dim=1).values)).view(-1, 1, 1, 1)
    total: Tensor | None = None
    for k in range(n_samples):
        if k == n_samples - 1:
            x = images
        else:
            x = (images + torch.randn(images.shape, generator=g).to(images.device, images.dtype) * scale).clamp(0, 1)
        m = fn(x, labels).detach().float()
        total = m if total is None else total + m
    assert total is not None
    return total / n_samples


def discrete_entropy(maps: np.ndarray | Tensor, n_bins: int = 100) -> np.ndarray:
    """Discrete entropy of each map's histogram, ``(B, H, W) -> (B,)`` (natural logarithm).

    ``n_bins`` equal bins over the map's own range (:func:`numpy.histogram`), then the Shannon
    entropy of the bin frequencies: ``log(n_bins)`` at most (a uniform histogram), 0 for a map
    whose values all fall in one bin (a constant map).
    """
    arr = maps.detach().cpu().numpy() if isinstance(maps, Tensor) else np.asarray(maps)
    if arr.ndim != 3:
        raise ValueError(f"expected (B, H, W) maps, got shape {arr.shape}")
    out = np.empty(len(arr))
    for i, m in enumerate(arr.astype(np.float64)):
        counts, _ = np.histogram(m, bins=n_bins)
        p = counts[counts > 0] / counts.sum()
        out[i] = float(-(p * np.log(p)).sum())
    return out


def efficient_mprt(trained: np.ndarray | Tensor, randomized: np.ndarray | Tensor, n_bins: int = 100) -> np.ndarray:
    """eMPRT per image: the relative rise of the maps' entropy from the trained to the fully
    randomized model, ``(H_random - H_trained) / H_trained`` (NaN where ``H_trained`` is 0).

    Args:
        trained, randomized: ``(B, H, W)`` maps of the same images from the two models.
    """
    h0, h1 = discrete_entropy(trained, n_bins), discrete_entropy(randomized, n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(h0 > 0, (h1 - h0) / np.where(h0 > 0, h0, 1.0), np.nan)


def efficient_mprt_summary(trained: dict[str, np.ndarray], full_random: dict[str, np.ndarray],
                           bins: int = 100) -> dict[str, dict[str, float]]:
    """eMPRT of each method: ``method -> {"score", "pass_rate", "entropy_trained", "entropy_random"}``
    (means over the images; ``pass_rate``: the share of images whose score is positive).

    Args:
        trained: ``method -> (B, H, W)`` maps of the trained model.
        full_random: ``method -> (B, H, W)`` maps of the fully randomized model; a method missing
            from ``trained`` whose name ends with ``_retrained`` is compared with the method before
            that suffix (a masker retrained on the randomized model against the original masker).
    """
    out = {}
    for m, maps in full_random.items():
        ref = trained[m if m in trained else m.removesuffix("_retrained")]
        scores = efficient_mprt(ref, maps, bins)
        out[m] = {"score": float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan"),
                  "pass_rate": float(np.mean(scores > 0)),
                  "entropy_trained": float(discrete_entropy(ref, bins).mean()),
                  "entropy_random": float(discrete_entropy(maps, bins).mean())}
    return out


def smooth_mprt(fns: dict[str, MapFn], model: nn.Module, units: Sequence[str], images: Tensor, labels: Tensor,
                n_samples: int = 50, noise: float = 0.1, seed: int = 0, progress: bool = False,
                batch_size: int = 64) -> dict[str, dict[str, dict[str, float]]]:
    """The smooth MPRT: ``unit -> method -> similarity scores`` (:func:`masksal.sanity.map_similarities`)
    between the noise-averaged maps of the trained model and of the model with ``units`` randomized
    bottom-up, cumulatively (the same noise draws for both). ``model`` is restored afterwards.

    Args:
        fns: ``method -> map function`` of methods explaining ``model`` (masker: pre-sigmoid maps).
        model: the classifier's network (randomized in place, then restored).
        units: its parameterized units, input to output (:func:`masksal.randomization.parameterized_units`).
        images, labels: ``(B, 3, H, W)`` in [0, 1] and ``(B,)``.
        n_samples, noise, seed: see :func:`smooth_maps`.
    """
    from masksal.randomization import cascading_randomization
    from masksal.sanity import map_similarities, method_abs_centre

    def smoothed() -> dict[str, np.ndarray]:
        out: dict[str, list[np.ndarray]] = {m: [] for m in fns}
        for s in range(0, len(images), batch_size):
            x, y = images[s:s + batch_size], labels[s:s + batch_size]
            for m, fn in fns.items():
                out[m].append(smooth_maps(fn, x, y, n_samples, noise, seed + s).cpu().numpy())
        return {m: np.concatenate(v) for m, v in out.items()}

    reference = smoothed()
    rows = {}
    for unit in tqdm(cascading_randomization(model, units, seed=seed, order="bottom_up"), total=len(units),
                     desc="smooth MPRT", disable=not progress, dynamic_ncols=True):
        maps = smoothed()
        rows[unit] = {m: map_similarities(reference[m], maps[m], method_abs_centre(m)) for m in fns}
    return rows
