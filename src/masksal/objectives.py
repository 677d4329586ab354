"""The masker's objective terms, each a function on hand-checkable tensors, and their sum.

Every term is a loss to *minimize*; :func:`compute_objectives` returns each term separately
(already weighted) so training logs show which one moves. Definitions follow the paper's
final configuration (Phang et al. 2020) and CASM (Zolna et al. 2020); see docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

MASKED_OUT_KINDS = ("entropy", "ce", "uniform_ce", "none")
AREA_KINDS = ("gated", "l1", "none")


@dataclass
class ObjectiveConfig:
    """Weights and switches of the objective terms (defaults: the paper's final model).

    Attributes:
        masked_in: classify the masked-in image correctly (cross-entropy).
        masked_out: ``"entropy"`` maximizes the entropy of the prediction on the masked-out image
            (only for images the classifier gets right when clean); ``"ce"`` maximizes its
            cross-entropy with the true class (Dabkowski & Gal's adversarial variant);
            ``"uniform_ce"`` pushes it toward a uniform prediction (CE to the uniform prior);
            ``"none"`` turns the term off.
        area: ``"gated"`` (CASM / the paper: ``lambda_out * mean(m)`` only where the masked-out
            objective is already met, plus ``lambda_in * mean(m)`` where the masked-in image is
            classified correctly), ``"l1"`` (plain ``area_l1_weight * mean(m)``), or ``"none"``.
        tv_weight: total variation weight; TV is the per-image sum of squared neighbour
            differences plus ``tv_border`` times the squared border pixels, averaged over the batch.
        infill: what replaces the removed pixels of the masked-in and masked-out images
            (:data:`masksal.masking.INFILLS`; ``"mean"``, the normalization mean colour, is the
            paper's masking in normalized space; ``"learned"``, a trained inpainting network).
        inpainter: the inpainting network's weights for ``infill: learned``
            (:func:`masksal.inpainting.train_inpainter`, ``save_inpainter``).
    """

    masked_in: bool = True
    masked_in_weight: float = 1.0
    masked_out: str = "entropy"
    masked_out_weight: float = 1.0
    area: str = "gated"
    area_in_weight: float = 1.0
    area_out_weight: float = 10.0
    area_l1_weight: float = 1.0
    tv_weight: float = 0.01
    tv_border: float = 0.3
    infill: str = "mean"
    inpainter: str | None = None

    def __post_init__(self) -> None:
        from masksal.masking import INFILLS

        if self.infill not in INFILLS:
            raise ValueError(f"objectives.infill must be one of {INFILLS}, got {self.infill!r}")
        if self.infill == "learned" and not self.inpainter:
            raise ValueError("objectives.infill 'learned' needs objectives.inpainter: the inpainting network's "
                             "weights (masksal.inpainting.save_inpainter)")
        if self.masked_out not in MASKED_OUT_KINDS:
            raise ValueError(f"objectives.masked_out must be one of {MASKED_OUT_KINDS}, got {self.masked_out!r}")
        if self.area not in AREA_KINDS:
            raise ValueError(f"objectives.area must be one of {AREA_KINDS}, got {self.area!r}")


def masked_in_ce(logits_in: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of the masked-in predictions ``(B, C)`` with the labels ``(B,)``."""
    return F.cross_entropy(logits_in, labels)


def entropy(logits: Tensor) -> Tensor:
    """Entropy (nats) of ``softmax(logits)`` per row: ``(B, C) -> (B,)``; ``log C`` when uniform."""
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def masked_out_entropy(logits_out: Tensor, gate: Tensor) -> Tensor:
    """``-mean(gate * H(softmax(logits_out)))``: minimizing it maximizes the entropy.

    ``gate`` ``(B,)`` bool: images the classifier gets right when clean (the others carry no
    signal about what was removed). The mean is over the whole batch.
    """
    return -(entropy(logits_out) * gate.float()).mean()


def masked_out_ce(logits_out: Tensor, labels: Tensor) -> Tensor:
    """``-CE(logits_out, labels)``: removing the object should make the true class unlikely."""
    return -F.cross_entropy(logits_out, labels)


def masked_out_uniform_ce(logits_out: Tensor) -> Tensor:
    """Cross-entropy toward the uniform prior, ``-mean_c log p_c``; minimal (``log C``) when uniform."""
    return -F.log_softmax(logits_out, dim=1).mean(dim=1).mean()


def mask_area(masks: Tensor) -> Tensor:
    """Mean mask value per image: ``(B, 1, H, W)`` or ``(B, H, W)`` -> ``(B,)``."""
    return masks.flatten(1).mean(dim=1)


def gated_area(masks: Tensor, gate: Tensor) -> Tensor:
    """``mean(gate * area(m))`` over the batch; ``gate`` ``(B,)`` bool."""
    return (mask_area(masks) * gate.float()).mean()


def total_variation(masks: Tensor, border: float = 0.3) -> Tensor:
    """Squared total variation per image, summed over pixels, averaged over the batch.

    ``sum (m[i+1,j]-m[i,j])^2 + sum (m[i,j+1]-m[i,j])^2 + border * sum_{border pixels} m^2``.
    The border term discourages masks that touch the image edge. Zero for a constant zero mask.
    """
    m = masks if masks.dim() == 3 else masks[:, 0]
    dy = (m[:, 1:, :] - m[:, :-1, :]).pow(2).sum(dim=(1, 2))
    dx = (m[:, :, 1:] - m[:, :, :-1]).pow(2).sum(dim=(1, 2))
    edge = torch.zeros_like(m)
    edge[:, 0, :] = 1
    edge[:, -1, :] = 1
    edge[:, :, 0] = 1
    edge[:, :, -1] = 1
    b = (m.pow(2) * edge).sum(dim=(1, 2))
    return (dx + dy + border * b).mean()


def compute_objectives(
    cfg: ObjectiveConfig,
    masks: Tensor,
    labels: Tensor,
    logits_clean: Tensor,
    logits_in: Tensor | None,
    logits_out: Tensor | None,
) -> dict[str, Tensor]:
    """All enabled terms, weighted, plus ``"total"``.

    Args:
        masks: ``(B, 1, H, W)`` in [0, 1].
        labels: ``(B,)`` true classes.
        logits_clean: ``(B, C)`` classifier logits on the clean images (for the gates).
        logits_in / logits_out: ``(B, C)`` logits on the masked-in / masked-out images, or
            ``None`` when that side is not needed by the configuration.
    """
    terms: dict[str, Tensor] = {}
    correct_clean = logits_clean.argmax(1) == labels
    if cfg.masked_in:
        assert logits_in is not None
        terms["masked_in_ce"] = cfg.masked_in_weight * masked_in_ce(logits_in, labels)
    if cfg.masked_out != "none":
        assert logits_out is not None
        if cfg.masked_out == "entropy":
            term = masked_out_entropy(logits_out, correct_clean)
        elif cfg.masked_out == "ce":
            term = masked_out_ce(logits_out, labels)
        else:
            term = masked_out_uniform_ce(logits_out)
        terms[f"masked_out_{cfg.masked_out}"] = cfg.masked_out_weight * term
    if cfg.area == "gated":
        area = masks.new_zeros(())
        if logits_out is not None:
            # The masked-out objective is met (prediction already wrong): now shrink the mask.
            area = area + cfg.area_out_weight * gated_area(
                masks, correct_clean & (logits_out.argmax(1) != labels))
        if logits_in is not None:
            area = area + cfg.area_in_weight * gated_area(masks, logits_in.argmax(1) == labels)
        terms["area"] = area
    elif cfg.area == "l1":
        terms["area"] = cfg.area_l1_weight * mask_area(masks).mean()
    if cfg.tv_weight > 0:
        terms["tv"] = cfg.tv_weight * total_variation(masks, cfg.tv_border)
    total = masks.new_zeros(())
    for v in terms.values():
        total = total + v
    terms["total"] = total
    return terms
