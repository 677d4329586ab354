"""Deletion and insertion (Petsiuk et al. 2018, RISE): does the map rank the pixels the model uses?"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

from masksal.classifiers import Classifier, eval_mode
from masksal.devices import module_device
from masksal.metrics.base import Metric, check_maps, zeros
from masksal.types import Batch

Substrate = Literal["zeros", "mean", "blur"]
BlurKind = Literal["rise", "gaussian"]
TargetKind = Literal["top1", "label"]
TieOrder = Literal["stable", "numpy"]

RISE_STEPS = 28  # RISE's published batch evaluation: 224 * 8 = 1792 pixels a step at 224 x 224 px


class DeletionInsertion(Metric):
    r"""Deletion and insertion AUC of the tracked class's probability; by default RISE's protocol.

    Pixels are ranked by decreasing saliency. At step ``i = 0..S`` the first ``n_i`` pixels of
    that ranking are

    * deletion: replaced by the deletion substrate in the image (lower AUC is better);
    * insertion: copied from the image into the insertion substrate (higher AUC is better);

    and the classifier's softmax probability of the tracked class is recorded against ``i / S``.
    The AUC is the trapezoid rule on that curve, ``(sum_i p_i - (p_0 + p_S) / 2) / S`` (RISE's
    ``auc``), averaged over images.

    The defaults are the settings of RISE's published evaluation (eclique/RISE,
    ``Evaluation.ipynb`` with ``evaluation.CausalMetric``): the classifier's top-1 class on the
    clean image is tracked; 28 steps (1792 pixels a step at 224 x 224); deletion sets pixels to
    the mean colour (zero after normalization); insertion starts from RISE's blur (below). At
    224 x 224 the result equals ``CausalMetric(model, mode, 1792, substrate_fn)`` up to the order
    of tied pixels: RISE orders them with numpy's default (unstable, platform-dependent) argsort;
    we use a stable sort, ties in raster order (``ties="numpy"`` reproduces RISE's call).

    Args:
        classifier: a :class:`~masksal.classifiers.Classifier` (images in [0, 1]); used in eval
            mode, gradients off.
        steps: ``S``; step ``i`` moves ``n_i = floor(i H W / S)`` pixels (evenly spread; at 224
            px with ``S = 28`` or ``224`` exactly RISE's 1792 or 224 pixels a step). Default 28.
        pixels_per_step: RISE's literal schedule instead of ``steps``: ``p`` pixels a step,
            ``S = ceil(H W / p)``, ``n_i = min(i p, H W)``, so the last step may move fewer pixels
            and still counts as a full ``1 / S`` of the x axis, as in RISE. Exclusive with ``steps``.
        target: the tracked class when ``update`` gets no ``targets``: ``"top1"`` (the
            classifier's top-1 class on the clean image, RISE) or ``"label"`` (``batch.labels``,
            the class the maps were made for in :func:`~masksal.evaluation.evaluate`).
        deletion_substrate: what a deleted pixel becomes: ``"mean"`` (the classifier's mean
            colour, i.e. zero after normalization: RISE), ``"zeros"`` (black) or ``"blur"``.
        insertion_substrate: the image insertion starts from, same choices; ``"blur"`` is RISE's.
        blur: ``"rise"``: RISE's ``gkern``, a ``blur_kernel``-wide kernel obtained by smoothing a
            single bright pixel with ``scipy.ndimage.gaussian_filter(sigma=blur_sigma)`` (reflect
            mode, so the tails fold back: at 11 / 5 the 1-D weights are 0.088-0.094, nearly a box
            filter), convolved with zero padding in normalized space (the border is padded with
            the mean colour). ``"gaussian"``: torchvision's ``gaussian_blur`` (a truncated
            Gaussian, 1-D weights 0.066-0.109 at 11 / 5) with reflect padding.
        blur_kernel, blur_sigma: kernel size and sigma (RISE: 11 and 5 at 224 px).
        ties: order of pixels of equal saliency: ``"stable"`` (raster order, the same on every
            machine) or ``"numpy"`` (``np.flip(np.argsort(map))`` on the map as given, RISE's
            call, whose order of ties depends on numpy's version and the CPU).
        batch_size: perturbed images per classifier forward.

    ``update(maps, batch, targets=None)``: ``maps`` ``(B, H, W)`` float (finite), ``targets``
    ``(B,)`` int64 classes to track (overrides ``target``). ``compute()`` keys:
    ``deletion_auc``, ``insertion_auc`` in [0, 1]. :meth:`curves` gives the mean curves.
    """

    name = "deletion_insertion"

    def __init__(self, classifier: Classifier, *, steps: int | None = None, pixels_per_step: int | None = None,
                 target: TargetKind = "top1", deletion_substrate: Substrate = "mean",
                 insertion_substrate: Substrate = "blur", blur: BlurKind = "rise", blur_kernel: int = 11,
                 blur_sigma: float = 5.0, ties: TieOrder = "stable", batch_size: int = 64) -> None:
        if steps is not None and pixels_per_step is not None:
            raise ValueError("give steps or pixels_per_step, not both")
        if steps is not None and steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if pixels_per_step is not None and pixels_per_step < 1:
            raise ValueError(f"pixels_per_step must be >= 1, got {pixels_per_step}")
        for s in (deletion_substrate, insertion_substrate):
            if s not in ("zeros", "mean", "blur"):
                raise ValueError(f"substrate must be 'zeros', 'mean' or 'blur', got {s!r}")
        if target not in ("top1", "label"):
            raise ValueError(f"target must be 'top1' or 'label', got {target!r}")
        if blur not in ("rise", "gaussian"):
            raise ValueError(f"blur must be 'rise' or 'gaussian', got {blur!r}")
        if ties not in ("stable", "numpy"):
            raise ValueError(f"ties must be 'stable' or 'numpy', got {ties!r}")
        if blur_kernel < 1 or blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be a positive odd number, got {blur_kernel}")
        if not blur_sigma > 0:
            raise ValueError(f"blur_sigma must be > 0, got {blur_sigma}")
        self.classifier = classifier
        self.pixels_per_step = None if pixels_per_step is None else int(pixels_per_step)
        self.steps = RISE_STEPS if steps is None else int(steps)
        self.target: TargetKind = target
        self.deletion_substrate: Substrate = deletion_substrate
        self.insertion_substrate: Substrate = insertion_substrate
        self.blur: BlurKind = blur
        self.blur_kernel = int(blur_kernel)
        self.blur_sigma = float(blur_sigma)
        self.ties: TieOrder = ties
        self.batch_size = int(batch_size)
        super().__init__()

    def _config(self) -> tuple[object, ...]:
        return (self.steps, self.pixels_per_step, self.target, self.deletion_substrate, self.insertion_substrate,
                self.blur, self.blur_kernel, self.blur_sigma, self.ties)

    def _empty_state(self) -> dict[str, np.ndarray]:
        # With pixels_per_step the number of points depends on the image size: the curve sums
        # are sized by the first update.
        n = 0 if self.pixels_per_step is not None else self.steps + 1
        return {"count": zeros(), "deletion_auc_sum": zeros(), "insertion_auc_sum": zeros(),
                "deletion_curve_sum": zeros(n), "insertion_curve_sum": zeros(n)}

    def rise_kernel(self) -> np.ndarray:
        """RISE's blur kernel ``(K, K)`` float32: a centred unit pixel smoothed by ``gaussian_filter``.

        scipy's filter runs in reflect mode with radius ``4 sigma``, wider than the kernel, so the
        Gaussian's tails fold back into it; the weights sum to 1.
        """
        k = self.blur_kernel
        delta = np.zeros((k, k))
        delta[k // 2, k // 2] = 1.0
        return gaussian_filter(delta, self.blur_sigma).astype(np.float32)

    def substrate(self, images: Tensor, kind: Substrate) -> Tensor:
        """The fully removed image: ``(B, 3, H, W)`` in the images' space ([0, 1])."""
        if kind == "zeros":
            return torch.zeros_like(images)
        mean = self.classifier.mean.to(images.device, images.dtype).reshape(1, 3, 1, 1)
        if kind == "mean":
            return mean.expand_as(images).contiguous()
        if self.blur == "gaussian":
            return gaussian_blur(images, [self.blur_kernel, self.blur_kernel], [self.blur_sigma, self.blur_sigma])
        # RISE convolves the normalized image with zero padding; per channel that is the same as
        # convolving (x - mean) and adding the mean back (the std cancels).
        k = torch.from_numpy(self.rise_kernel()).to(images.device, images.dtype)
        weight = k.expand(3, 1, *k.shape).contiguous()
        return F.conv2d(images - mean, weight, padding=self.blur_kernel // 2, groups=3) + mean

    def num_steps(self, num_pixels: int) -> int:
        """``S`` for images of ``num_pixels`` pixels."""
        if self.pixels_per_step is None:
            return self.steps
        return -(-num_pixels // self.pixels_per_step)

    def pixel_counts(self, num_pixels: int) -> Tensor:
        """Pixels moved at each point ``i = 0..S``: ``(S + 1,)`` int64 (see the class docstring)."""
        i = torch.arange(self.num_steps(num_pixels) + 1, dtype=torch.int64)
        if self.pixels_per_step is None:
            return i * num_pixels // self.steps
        return torch.clamp(i * self.pixels_per_step, max=num_pixels)

    def ranking(self, maps: Tensor, arr: np.ndarray) -> Tensor:
        """Pixel indices by decreasing saliency: ``(B, H W)`` int64 (CPU)."""
        b = arr.shape[0]
        if self.ties == "stable":
            flat = torch.from_numpy(arr.reshape(b, -1))
            return torch.argsort(flat, dim=1, descending=True, stable=True)
        # RISE's own call, on the map in its own dtype (numpy's sort of ties differs per dtype).
        raw = maps.detach().cpu().numpy().reshape(b, -1)
        return torch.from_numpy(np.ascontiguousarray(np.flip(np.argsort(raw, axis=1), axis=1)))

    def scores(self, maps: Tensor, batch: Batch, targets: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Deletion and insertion curves of a batch: two ``(B, S + 1)`` float64 tensors (CPU)."""
        arr = check_maps(maps, batch, metric=self.name)
        device = module_device(self.classifier)
        x = batch.images.detach().to(device, torch.float32)
        b, _, h, w = x.shape
        with torch.no_grad(), eval_mode(self.classifier):
            if targets is not None:
                tgt = targets.detach().to(device).reshape(-1)
            elif self.target == "label":
                tgt = batch.labels.detach().to(device).reshape(-1)
            else:
                tgt = torch.cat([self.classifier(x[s:s + self.batch_size]).argmax(dim=1)
                                 for s in range(0, b, self.batch_size)])
            if tgt.numel() != b:
                raise ValueError(f"{self.name}: {tgt.numel()} targets for {b} images")
            order = self.ranking(maps, arr).to(device)
            # int32 ranks and counts: half the memory traffic of the per-step comparisons.
            rank = torch.empty(order.shape, dtype=torch.int32, device=device)
            rank.scatter_(1, order, torch.arange(h * w, dtype=torch.int32, device=device).expand(b, -1).contiguous())
            counts = self.pixel_counts(h * w).to(device, torch.int32)
            deleted = self.substrate(x, self.deletion_substrate)
            base = self.substrate(x, self.insertion_substrate)
            deletion = self._curves(x, deleted, rank, counts, tgt)
            insertion = self._curves(base, x, rank, counts, tgt)
        return deletion, insertion

    def _curves(self, start: Tensor, finish: Tensor, rank: Tensor, counts: Tensor, targets: Tensor) -> Tensor:
        """Target probability after moving the top ``counts[i]`` pixels from ``start`` to ``finish``.

        The (image, step) pairs are taken in order, ``batch_size`` per forward; each image's
        steps are written into one buffer by broadcasting its pixel ranks against the step counts
        (no per-pair gather of images or ranks).
        """
        b, c, h, w = start.shape
        n_steps = len(counts)
        total = b * n_steps
        out = torch.empty(total, dtype=torch.float64)
        buf = torch.empty(min(self.batch_size, total), c, h, w, dtype=start.dtype, device=start.device)
        for s in range(0, total, self.batch_size):
            e = min(s + self.batch_size, total)
            fill, rows = 0, []
            for img in range(s // n_steps, (e - 1) // n_steps + 1):
                lo, hi = max(s - img * n_steps, 0), min(e - img * n_steps, n_steps)
                moved = (rank[img][None] < counts[lo:hi, None]).view(hi - lo, 1, h, w)
                torch.where(moved, finish[img], start[img], out=buf[fill:fill + hi - lo])
                fill += hi - lo
                rows.append(targets[img].expand(hi - lo))
            probs = torch.softmax(self.classifier(buf[:fill]).float(), dim=1)
            out[s:e] = probs.gather(1, torch.cat(rows)[:, None])[:, 0].double().cpu()
        return out.view(b, n_steps)

    def update(self, maps: Tensor, batch: Batch, targets: Tensor | None = None) -> None:
        """Accumulate a batch (see the class docstring for shapes)."""
        deletion, insertion = self.scores(maps, batch, targets)
        st = self._state
        points = deletion.shape[1]
        if st["deletion_curve_sum"].size == 0:
            st["deletion_curve_sum"], st["insertion_curve_sum"] = zeros(points), zeros(points)
        elif st["deletion_curve_sum"].size != points:
            raise ValueError(f"{self.name}: with pixels_per_step all images need the same size; this batch has "
                             f"{points - 1} steps, earlier ones {st['deletion_curve_sum'].size - 1}")
        for key, curve in (("deletion", deletion), ("insertion", insertion)):
            st[f"{key}_auc_sum"] += float(trapezoid_auc(curve).sum())
            st[f"{key}_curve_sum"] += curve.sum(dim=0).numpy()
        st["count"] += deletion.shape[0]

    def merge(self, other: object) -> DeletionInsertion:
        """Add another accumulator's state (see :meth:`Accumulator.merge`)."""
        if isinstance(other, DeletionInsertion) and other._config() == self._config():
            # Under pixels_per_step an accumulator that saw no image has no curve length yet.
            mine, theirs = self._state["deletion_curve_sum"].size, other._state["deletion_curve_sum"].size
            if theirs == 0 and other.num_images == 0:
                return self
            if mine == 0 and self.num_images == 0:
                self._state["deletion_curve_sum"], self._state["insertion_curve_sum"] = zeros(theirs), zeros(theirs)
        super().merge(other)  # type: ignore[arg-type]
        return self

    def curves(self) -> dict[str, np.ndarray]:
        """Mean curves: ``fraction`` ``(S + 1,)`` (``i / S``) and ``deletion``, ``insertion`` probabilities."""
        n = max(float(self._state["count"][0]), 1.0)
        points = self._state["deletion_curve_sum"].size
        return {"fraction": np.arange(points) / max(points - 1, 1),
                "deletion": self._state["deletion_curve_sum"] / n,
                "insertion": self._state["insertion_curve_sum"] / n}

    def compute(self) -> dict[str, float]:
        """Mean deletion and insertion AUC in [0, 1]; NaN before any update."""
        n = float(self._state["count"][0])
        if n == 0:
            return {"deletion_auc": math.nan, "insertion_auc": math.nan}
        return {"deletion_auc": float(self._state["deletion_auc_sum"][0]) / n,
                "insertion_auc": float(self._state["insertion_auc_sum"][0]) / n}


def trapezoid_auc(curves: Tensor) -> Tensor:
    """Trapezoid area under ``(B, S + 1)`` curves sampled at ``i / S``: ``(B,)`` (RISE's ``auc``)."""
    s = curves.shape[1] - 1
    return (curves.sum(dim=1) - (curves[:, 0] + curves[:, -1]) / 2) / s
