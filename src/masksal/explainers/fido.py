"""FIDO: per-image dropout masks optimized with a generative infill (counterfactual saliency)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masksal.classifiers import Classifier
from masksal.explainers.base import ClassifierExplainer, Explanation
from masksal.masking import INFILLS, infill

OBJECTIVES = ("ssr", "sdr")


def log_odds(logits: Tensor, targets: Tensor) -> Tensor:
    """``log p_c - log sum_{j != c} p_j`` per row: the log odds of class ``c`` against the rest."""
    others = logits.scatter(1, targets[:, None], float("-inf"))
    return logits.gather(1, targets[:, None])[:, 0] - torch.logsumexp(others, dim=1)


class FIDO(ClassifierExplainer):
    """FIDO, Chang, Creager, Goldenberg & Duvenaud, "Explaining Image Classifiers by
    Counterfactual Generation", ICLR 2019.

    Each image gets a map of dropout probabilities ``p`` (a grid of ``mask_cells`` cells per side,
    upsampled bilinearly). Each step draws ``samples`` relaxed Bernoulli keep masks
    ``z = 1 - sigmoid((logit p + logit u) / temperature)``, ``u ~ U(0, 1)`` (binary concrete),
    fills the dropped pixels with the infill ``G`` (a learned inpainter, given the rounded mask;
    no gradient flows through it) and classifies ``x z + G (1 - z)``. Objectives (minimized,
    ``LO`` = log odds of the target class against all others, averaged over the samples):

    * ``"ssr"``, smallest sufficient region: ``-LO + w_t * area_coeff * mean(1 - p)``; map ``1 - p``;
    * ``"sdr"``, smallest destroying region: ``LO + w_t * area_coeff * mean(p)``; map ``p``.

    ``w_t`` ramps linearly from 0 to 1 over the first ``warmup`` steps. Adam, learning rate decayed
    linearly to 0. Maps are in [0, 1], larger = more salient.

    Defaults are those of the authors' ImageNet command (github.com/zzzace2000/FIDO-saliency:
    300 steps, Adam lr 0.05, 8 samples per step, a 56 x 56 mask at 224 px initialized at
    ``p = 0.5``, temperature 0.1, regularization ramp over 30 steps, ``reg_coef = 1e-3`` on the
    sum over the 224 x 224 pixels, which is ``area_coeff = 1e-3 * 224 ** 2`` on the mean, the same
    balance at every image size). The mask keeps 56 cells per side at any size (the cell is 4 px at
    224 px and scales with the image), at most one per pixel. The authors' command uses SDR.

    Cost per map: ``iterations * samples`` classifier forward and backward passes, plus as many
    inpainter forward passes with the learned infill (2,400 each with the defaults). An image's
    map does not depend on the rest of its batch (the sampling noise is shared by all images).

    Args:
        classifier: the model to explain.
        inpainter: the generative infill: a network ``(images, holes) -> images`` (see
            :mod:`masksal.inpainting`) or the path of one saved by ``save_inpainter``.
        infill: ``"learned"`` (the default when ``inpainter`` is given) or one of the fixed
            infills of :func:`masksal.masking.infill` (``"mean"``, ``"blur"``...), the paper's
            heuristic baselines.
        objective: ``"ssr"`` or ``"sdr"``.
        iterations: optimization steps.
        lr: Adam learning rate.
        samples: concrete masks drawn per step.
        area_coeff: weight of the mean keep (SSR) or drop (SDR) probability.
        mask_cells: mask cells per side (capped at the image side).
        temperature: of the binary concrete relaxation.
        warmup: steps over which the area weight ramps up from 0.
        seed: seed of the sampling noise.
    """

    name = "fido"
    needs_grad = True

    inpainter: nn.Module | None
    infill: str
    objective: str
    iterations: int
    lr: float
    samples: int
    area_coeff: float
    mask_cells: int
    temperature: float
    warmup: int
    seed: int

    def __init__(
        self,
        classifier: Classifier | nn.Module,
        inpainter: nn.Module | str | Path | None = None,
        infill: str | None = None,
        objective: str = "sdr",
        iterations: int = 300,
        lr: float = 0.05,
        samples: int = 8,
        area_coeff: float = 1e-3 * 224**2,
        mask_cells: int = 56,
        temperature: float = 0.1,
        warmup: int = 30,
        seed: int = 0,
    ) -> None:
        super().__init__(classifier)
        self._inpainter_source = str(inpainter) if isinstance(inpainter, (str, Path)) else (
            type(inpainter).__name__ if inpainter is not None else None)
        if isinstance(inpainter, (str, Path)):
            from masksal.inpainting import load_inpainter

            inpainter = load_inpainter(inpainter, self.device)
        kind = infill or ("learned" if inpainter is not None else None)
        if kind is None:
            raise ValueError("fido needs a generative infill: pass inpainter= (a path or network, see "
                             "masksal.inpainting.train_inpainter) or choose a fixed infill= (mean, blur, ...)")
        if kind not in INFILLS:
            raise ValueError(f"fido: unknown infill {kind!r}; choose one of {', '.join(INFILLS)}")
        if kind == "learned" and inpainter is None:
            raise ValueError("fido: infill 'learned' needs inpainter= (a path or network)")
        if objective not in OBJECTIVES:
            raise ValueError(f"fido: objective must be one of {OBJECTIVES}, got {objective!r}")
        if iterations < 0 or samples < 1 or mask_cells < 1 or warmup < 0 or temperature <= 0:
            raise ValueError("fido: iterations >= 0, samples >= 1, mask_cells >= 1, warmup >= 0 and "
                             "temperature > 0 required")
        infill = kind
        self._keep_options(locals())  # the inpainter as loaded, the infill as resolved

    def options(self) -> dict[str, Any]:
        return {**super().options(), "inpainter": self._inpainter_source}  # a path or class name, not the weights

    def modules_to_eval(self) -> list[nn.Module]:
        return [self.classifier] + ([self.inpainter] if self.inpainter is not None else [])

    def _drop_probability(self, logit_p: Tensor, size: tuple[int, int]) -> Tensor:
        return F.interpolate(torch.sigmoid(logit_p), size=size, mode="bilinear", align_corners=False)

    def _fill(self, x: Tensor, holes: Tensor) -> Tensor:
        if self.infill == "learned":
            return infill(x, "learned", self.classifier.mean, self.classifier.std, holes=holes,
                          inpainter=self.inpainter)
        return infill(x, self.infill, self.classifier.mean, self.classifier.std)

    def _maps(self, images: Tensor, targets: Tensor | None) -> Explanation:
        t, clean_logits = self.resolve_targets(images, targets)
        b, _, h, w = images.shape
        s = self.samples
        cells_h, cells_w = min(self.mask_cells, h), min(self.mask_cells, w)
        logit_p = torch.zeros(b, 1, cells_h, cells_w, device=images.device, requires_grad=True)
        opt = torch.optim.Adam([logit_p], lr=self.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 - k / max(1, self.iterations))
        g = torch.Generator().manual_seed(self.seed)
        x = images.detach()[:, None].expand(b, s, 3, h, w).reshape(b * s, 3, h, w)
        t_rep = t.repeat_interleave(s)
        sign = -1.0 if self.objective == "ssr" else 1.0
        eps = 1e-6
        for step in range(self.iterations):
            p = self._drop_probability(logit_p, (h, w))  # (B, 1, H, W)
            u = torch.rand(1, s, 1, h, w, generator=g).clamp(eps, 1 - eps).to(images.device, images.dtype)
            logit = torch.log(p + eps) - torch.log1p(eps - p)
            drop = torch.sigmoid((logit[:, None] + torch.log(u) - torch.log1p(-u)) / self.temperature)
            keep = (1 - drop).reshape(b * s, 1, h, w)
            fill = self._fill(x, (keep.detach() < 0.5).to(x.dtype))  # the inpainter sees the rounded mask
            lo = log_odds(self.classifier(x * keep + fill * (1 - keep)), t_rep).reshape(b, s).mean(dim=1)
            area = (1 - p if self.objective == "ssr" else p).mean(dim=(1, 2, 3))
            ramp = min(1.0, step / self.warmup) if self.warmup else 1.0
            loss = (sign * lo + ramp * self.area_coeff * area).sum()  # images are independent
            # autograd.grad, not backward: the classifier's .grad fields stay untouched.
            (logit_p.grad,) = torch.autograd.grad(loss, [logit_p])
            opt.step()
            sched.step()
        with torch.no_grad():
            p = self._drop_probability(logit_p, (h, w))[:, 0]
            return Explanation((1 - p if self.objective == "ssr" else p).float(), clean_logits)
