"""Deletion and insertion (Petsiuk et al. 2018, RISE): does the map rank the pixels the model uses?"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

from masksal.classifiers import Classifier
from masksal.metrics.base import Metric, check_maps, zeros
from masksal.metrics.saliency_metric import eval_mode, module_device
from masksal.types import Batch

Substrate = Literal["zeros", "mean", "blur"]


class DeletionInsertion(Metric):
    r"""Deletion and insertion AUC of the target class probability.

    Pixels are ranked by decreasing saliency (ties in raster order). At step ``i = 0..S`` the
    first ``n_i = floor(i H W / S)`` pixels of that ranking are

    * deletion: replaced by the deletion substrate in the image (lower AUC is better);
    * insertion: copied from the image into the insertion substrate (higher AUC is better);

    and the classifier's softmax probability of the target class is recorded against the
    fraction ``i / S``. The AUC is the trapezoid rule on that curve,
    ``(sum_i p_i - (p_0 + p_S) / 2) / S``, averaged over images. With ``S`` dividing ``H W`` this
    is RISE's procedure (RISE: 224 pixels a step at 224 px, i.e. ``S = 224``).

    All images of a batch and all steps are batched together: ``batch_size`` perturbed images
    per classifier forward, whatever image or step they belong to.

    Args:
        classifier: a :class:`~masksal.classifiers.Classifier` (images in [0, 1]); used in eval
            mode, gradients off.
        steps: ``S``, the number of steps (the curve has ``S + 1`` points).
        deletion_substrate: what a deleted pixel becomes: ``"mean"`` (the classifier's mean
            colour, i.e. zero after normalization: RISE's deletion), ``"zeros"`` (black) or
            ``"blur"`` (the pixel of a Gaussian-blurred copy).
        insertion_substrate: the image insertion starts from, same choices; ``"blur"`` is RISE's.
        blur_kernel, blur_sigma: the Gaussian blur (RISE: 11 and 5 at 224 px); applied with
            torchvision's ``gaussian_blur`` (reflect padding, where RISE pads with zeros).
        batch_size: perturbed images per classifier forward.

    ``update(maps, batch, targets=None)``: ``maps`` ``(B, H, W)`` float (finite), ``targets``
    ``(B,)`` int64 classes whose probability is tracked (default: ``batch.labels``; RISE uses
    the classifier's top-1 class). ``compute()`` keys: ``deletion_auc``, ``insertion_auc`` in
    [0, 1]. :meth:`curves` gives the mean curves.
    """

    name = "deletion_insertion"

    def __init__(self, classifier: Classifier, *, steps: int = 100, deletion_substrate: Substrate = "mean",
                 insertion_substrate: Substrate = "blur", blur_kernel: int = 11, blur_sigma: float = 5.0,
                 batch_size: int = 64) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        for s in (deletion_substrate, insertion_substrate):
            if s not in ("zeros", "mean", "blur"):
                raise ValueError(f"substrate must be 'zeros', 'mean' or 'blur', got {s!r}")
        if blur_kernel < 1 or blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be a positive odd number, got {blur_kernel}")
        self.classifier = classifier
        self.steps = int(steps)
        self.deletion_substrate: Substrate = deletion_substrate
        self.insertion_substrate: Substrate = insertion_substrate
        self.blur_kernel = int(blur_kernel)
        self.blur_sigma = float(blur_sigma)
        self.batch_size = int(batch_size)
        super().__init__()

    def _config(self) -> tuple[object, ...]:
        return (self.steps, self.deletion_substrate, self.insertion_substrate, self.blur_kernel, self.blur_sigma)

    def _empty_state(self) -> dict[str, np.ndarray]:
        return {"count": zeros(), "deletion_auc_sum": zeros(), "insertion_auc_sum": zeros(),
                "deletion_curve_sum": zeros(self.steps + 1), "insertion_curve_sum": zeros(self.steps + 1)}

    def substrate(self, images: Tensor, kind: Substrate) -> Tensor:
        """The fully removed image: ``(B, 3, H, W)`` in the images' space ([0, 1])."""
        if kind == "zeros":
            return torch.zeros_like(images)
        if kind == "mean":
            mean = self.classifier.mean.to(images.device, images.dtype).reshape(1, 3, 1, 1)
            return mean.expand_as(images).contiguous()
        return gaussian_blur(images, [self.blur_kernel, self.blur_kernel], [self.blur_sigma, self.blur_sigma])

    def pixel_counts(self, num_pixels: int) -> Tensor:
        """``n_i = floor(i * num_pixels / steps)`` for ``i = 0..steps``: ``(steps + 1,)`` int64."""
        return torch.arange(self.steps + 1, dtype=torch.int64) * num_pixels // self.steps

    def scores(self, maps: Tensor, batch: Batch, targets: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Deletion and insertion curves of a batch: two ``(B, steps + 1)`` float64 tensors (CPU)."""
        arr = check_maps(maps, batch, metric=self.name)
        device = module_device(self.classifier)
        x = batch.images.detach().to(device, torch.float32)
        b, _, h, w = x.shape
        tgt = (batch.labels if targets is None else targets).detach().to(device).reshape(-1)
        if tgt.numel() != b:
            raise ValueError(f"{self.name}: {tgt.numel()} targets for {b} images")
        flat = torch.from_numpy(arr.reshape(b, -1)).to(device)
        order = torch.argsort(flat, dim=1, descending=True, stable=True)
        # int32 ranks and counts: half the memory traffic of the per-step comparisons.
        rank = torch.empty(order.shape, dtype=torch.int32, device=device)
        rank.scatter_(1, order, torch.arange(h * w, dtype=torch.int32, device=device).expand(b, -1).contiguous())
        counts = self.pixel_counts(h * w).to(device, torch.int32)
        deleted = self.substrate(x, self.deletion_substrate)
        base = self.substrate(x, self.insertion_substrate)
        with torch.no_grad(), eval_mode(self.classifier):
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
        for key, curve in (("deletion", deletion), ("insertion", insertion)):
            st[f"{key}_auc_sum"] += float(trapezoid_auc(curve).sum())
            st[f"{key}_curve_sum"] += curve.sum(dim=0).numpy()
        st["count"] += deletion.shape[0]

    def curves(self) -> dict[str, np.ndarray]:
        """Mean curves: ``fraction`` ``(S + 1,)`` and ``deletion``, ``insertion`` probabilities."""
        n = max(float(self._state["count"][0]), 1.0)
        return {"fraction": np.arange(self.steps + 1) / self.steps,
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
    """Trapezoid area under ``(B, S + 1)`` curves sampled at ``i / S``: ``(B,)``."""
    s = curves.shape[1] - 1
    return (curves.sum(dim=1) - (curves[:, 0] + curves[:, -1]) / 2) / s
