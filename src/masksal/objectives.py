"""The masker's objective terms, each a function on hand-checkable tensors, and their sum.

Every term is a loss to *minimize*; :func:`compute_objectives` returns each term separately
(already weighted) so training logs show which one moves. Definitions follow the paper's
final configuration (Phang et al. 2020) and CASM (Zolna et al. 2020); see docs/architecture.md.

``labels`` are the classes the masks were made for: the true label for the paper's masker, the
requested (present) class for a conditional one. A conditional masker also gets the masks of
classes that are *absent* from the image (:func:`absent_area`), pushed toward the empty mask.
With ``multilabel`` (a classifier trained with sigmoid outputs) every term takes its binary form
on the requested label's logit ``z``: masked-in ``-log sigmoid(z)``, masked-out ``-log(1 -
sigmoid(z))`` (``"target"``) or the binary entropy (``"entropy"``); a class counts as predicted
when ``z > 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

MASKED_OUT_KINDS = ("entropy", "ce", "uniform_ce", "target", "none")
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
            ``"target"`` removes the evidence for the requested class only, minimizing
            ``-log(1 - p_y)`` on the masked-out image (what a conditional masker needs on images of
            several objects, where removing one leaves the other confidently predicted);
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
        multilabel: the classifier has sigmoid outputs: every term in its binary form (see the
            module's docstring).
        absent_targets: classes absent from the image whose masks a conditional masker is
            trained on per image (0: none); the rule: a class is absent when it is not among the
            image's labels (all its objects' on multi-object images), and its mask should be empty.
        absent_weight: weight of their mean mask area (``None``: ``area_out_weight``, as strong
            as the push that shrinks a present class's mask once its evidence is removed).
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
    multilabel: bool = False
    absent_targets: int = 1
    absent_weight: float | None = None

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
        if self.absent_targets < 0 or (self.absent_weight is not None and self.absent_weight < 0):
            raise ValueError("objectives.absent_targets and objectives.absent_weight must be >= 0")


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


def masked_out_target(logits_out: Tensor, labels: Tensor) -> Tensor:
    """``-mean log(1 - p_y)`` of the masked-out predictions ``(B, C)``: 0 when the requested class
    ``y`` has no probability left, ``log 2`` at ``p_y = 1/2``; other classes may stay confident."""
    lse = torch.logsumexp(logits_out, dim=1)
    others = logits_out.scatter(1, labels[:, None], float("-inf"))
    return -(torch.logsumexp(others, dim=1) - lse).mean()  # log(1 - p_y) without cancellation


def _chosen(logits: Tensor, labels: Tensor) -> Tensor:
    return logits.gather(1, labels[:, None])[:, 0]


def binary_masked_in(logits_in: Tensor, labels: Tensor) -> Tensor:
    """Binary masked-in term: ``mean -log sigmoid(z_y)`` (BCE toward 1 for the requested label)."""
    return F.softplus(-_chosen(logits_in, labels)).mean()


def binary_entropy(z: Tensor) -> Tensor:
    """Entropy (nats) of ``sigmoid(z)`` elementwise; ``log 2`` at ``z = 0``."""
    p = torch.sigmoid(z)
    return p * F.softplus(-z) + (1 - p) * F.softplus(z)


def binary_masked_out(kind: str, logits_out: Tensor, labels: Tensor, gate: Tensor) -> Tensor:
    """Binary masked-out term on ``z_y`` of the masked-out image: ``"target"`` ``mean -log(1 -
    sigmoid(z))``; ``"entropy"`` ``-mean(gate * H_b(z))``; ``"ce"`` ``mean log sigmoid(z)``;
    ``"uniform_ce"`` BCE toward 1/2."""
    z = _chosen(logits_out, labels)
    if kind == "target":
        return F.softplus(z).mean()
    if kind == "entropy":
        return -(binary_entropy(z) * gate.float()).mean()
    if kind == "ce":
        return -F.softplus(-z).mean()
    return (0.5 * (F.softplus(z) + F.softplus(-z))).mean()


def multilabel_loss(logits: Tensor, positives: Tensor) -> Tensor:
    """A multi-label classifier's loss: binary cross-entropy of ``(B, C)`` logits with multi-hot
    ``positives``, summed over the classes and averaged over the images (the scale of a softmax
    cross-entropy, so learning rates tuned for single-label training carry over; a mean over the
    classes too would make every gradient C times smaller)."""
    return F.binary_cross_entropy_with_logits(logits, positives, reduction="none").sum(dim=1).mean()


def absent_area(masks: Tensor) -> Tensor:
    """Mean area of the masks of absent classes ``(B, A, H, W)``: 0 when every one is empty."""
    return masks.float().mean() if masks.numel() else masks.new_zeros(())


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


def predicted(logits: Tensor, labels: Tensor, multilabel: bool = False) -> Tensor:
    """``(B,)`` bool: the classifier predicts the label: top-1 (softmax) or ``z_y > 0`` (multi-label)."""
    return _chosen(logits, labels) > 0 if multilabel else logits.argmax(1) == labels


def compute_objectives(
    cfg: ObjectiveConfig,
    masks: Tensor,
    labels: Tensor,
    logits_clean: Tensor,
    logits_in: Tensor | None,
    logits_out: Tensor | None,
    absent_masks: Tensor | None = None,
    clean_gate: Tensor | None = None,
) -> dict[str, Tensor]:
    """All enabled terms, weighted, plus ``"total"``.

    Args:
        masks: ``(B, 1, H, W)`` in [0, 1].
        labels: ``(B,)`` the classes the masks are for (true labels, or a conditional masker's
            requested classes).
        logits_clean: ``(B, C)`` classifier logits on the clean images (for the gates).
        logits_in / logits_out: ``(B, C)`` logits on the masked-in / masked-out images, or
            ``None`` when that side is not needed by the configuration.
        absent_masks: ``(B, A, H, W)`` a conditional masker's masks of classes absent from each
            image (term ``"absent"``), or ``None``.
        clean_gate: ``(B,)`` bool, the images whose label the classifier sees on the clean image
            (the masked-out entropy and area gates); default: :func:`predicted` on
            ``logits_clean`` (the training step passes "among the top M classes" for an image of
            M objects).
    """
    terms: dict[str, Tensor] = {}
    ml = cfg.multilabel
    correct_clean = predicted(logits_clean, labels, ml) if clean_gate is None else clean_gate
    if cfg.masked_in:
        assert logits_in is not None
        term = binary_masked_in(logits_in, labels) if ml else masked_in_ce(logits_in, labels)
        terms["masked_in_ce"] = cfg.masked_in_weight * term
    if cfg.masked_out != "none":
        assert logits_out is not None
        if ml:
            term = binary_masked_out(cfg.masked_out, logits_out, labels, correct_clean)
        elif cfg.masked_out == "entropy":
            term = masked_out_entropy(logits_out, correct_clean)
        elif cfg.masked_out == "ce":
            term = masked_out_ce(logits_out, labels)
        elif cfg.masked_out == "target":
            term = masked_out_target(logits_out, labels)
        else:
            term = masked_out_uniform_ce(logits_out)
        terms[f"masked_out_{cfg.masked_out}"] = cfg.masked_out_weight * term
    if cfg.area == "gated":
        area = masks.new_zeros(())
        if logits_out is not None:
            # The masked-out objective is met (the label no longer predicted): now shrink the mask.
            area = area + cfg.area_out_weight * gated_area(
                masks, correct_clean & ~predicted(logits_out, labels, ml))
        if logits_in is not None:
            area = area + cfg.area_in_weight * gated_area(masks, predicted(logits_in, labels, ml))
        terms["area"] = area
    elif cfg.area == "l1":
        terms["area"] = cfg.area_l1_weight * mask_area(masks).mean()
    if cfg.tv_weight > 0:
        terms["tv"] = cfg.tv_weight * total_variation(masks, cfg.tv_border)
    if absent_masks is not None:
        weight = cfg.area_out_weight if cfg.absent_weight is None else cfg.absent_weight
        terms["absent"] = weight * absent_area(absent_masks)
    total = masks.new_zeros(())
    for v in terms.values():
        total = total + v
    terms["total"] = total
    return terms
