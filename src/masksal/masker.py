"""The masker network and the :class:`Masker` explainer (one forward pass per batch of maps).

The masker reads the classifier's tap activations (detached: it never back-propagates into the
classifier through its inputs), projects each with a 1x1 convolution to ``hidden`` channels
(BatchNorm, ReLU), upsamples them to the finest tap's resolution, concatenates, and predicts one
logit per location with a 3x3 convolution. The logits are upsampled to the input resolution and
squashed by a sigmoid (or a binary Gumbel-softmax while training, if enabled).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masksal.classifiers import Classifier

UPSAMPLES = ("bilinear", "nearest")


@dataclass
class MaskerConfig:
    """Architecture of the masker.

    Attributes:
        hidden: channels of each tap's projection (64 in the paper).
        upsample: how logits reach the input resolution: ``"bilinear"`` (default; smooth masks
            at small image sizes) or ``"nearest"`` (the paper's choice at 224 px).
        gumbel: train with a binary Gumbel-softmax (straight-through hard mask in the forward
            pass) instead of a plain sigmoid; maps are then thresholded at 0.5 when explaining.
        gumbel_tau: Gumbel-softmax temperature (0.1 in the paper).
    """

    hidden: int = 64
    upsample: str = "bilinear"
    gumbel: bool = False
    gumbel_tau: float = 0.1

    def __post_init__(self) -> None:
        if self.upsample not in UPSAMPLES:
            raise ValueError(f"masker.upsample must be one of {UPSAMPLES}, got {self.upsample!r}")


class MaskerNet(nn.Module):
    """Maps tap activations to mask logits at the input resolution.

    Args:
        tap_channels: ``{tap name: channels}`` of the classifier's taps.
        cfg: architecture options.
    """

    def __init__(self, tap_channels: Mapping[str, int], cfg: MaskerConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or MaskerConfig()
        self.taps = list(tap_channels)
        h = self.cfg.hidden
        self.project = nn.ModuleDict({
            _key(t): nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(inplace=True))
            for t, c in tap_channels.items()
        })
        self.head = nn.Conv2d(h * len(self.taps), 1, 3, padding=1)

    def forward(self, feats: Mapping[str, Tensor], size: tuple[int, int]) -> Tensor:
        """Mask logits ``(B, 1, H, W)`` at ``size = (H, W)`` from ``{tap: (B, C_t, H_t, W_t)}``."""
        base = max((feats[t].shape[-2], feats[t].shape[-1]) for t in self.taps)
        parts = []
        for t in self.taps:
            p = self.project[_key(t)](feats[t].detach())
            if p.shape[-2:] != base:
                p = F.interpolate(p, size=base, mode="bilinear", align_corners=False)
            parts.append(p)
        logits = self.head(torch.cat(parts, dim=1))
        if self.cfg.upsample == "bilinear":
            return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return F.interpolate(logits, size=size, mode="nearest")

    def mask(self, logits: Tensor) -> Tensor:
        """Mask in [0, 1] from logits: sigmoid, or a straight-through binary Gumbel-softmax sample
        while training when ``gumbel`` is on (hard 0/1 values forward, soft gradients backward)."""
        if not self.cfg.gumbel:
            return torch.sigmoid(logits)
        if not self.training:
            return (logits > 0).to(logits.dtype)
        u = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
        soft = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / self.cfg.gumbel_tau)
        hard = (soft > 0.5).to(soft.dtype)
        return hard + soft - soft.detach()


def _key(tap: str) -> str:
    # ModuleDict keys may not contain dots; tap names often do ("layer4.1").
    return tap.replace(".", "__")


class Masker(nn.Module):
    """A trained masker with its classifier: the explainer of this library.

    ``explain(images)`` returns the masks for a batch in one forward pass of the classifier and
    the masker. The masker is class-agnostic (as in the paper): it shows the evidence the
    classifier uses for its own decision, whatever ``targets`` says.

    Args:
        classifier: the classifier whose taps the masker reads.
        net: the masker network.
    """

    name = "masker"

    def __init__(self, classifier: Classifier, net: MaskerNet) -> None:
        super().__init__()
        self.classifier = classifier
        self.net = net

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(mask logits (B, 1, H, W), classifier logits (B, C))`` for images in [0, 1]."""
        logits, feats = self.classifier.forward_with_taps(images)
        return self.net(feats, (images.shape[-2], images.shape[-1])), logits

    @torch.no_grad()
    def explain(self, images: Tensor, targets: Tensor | None = None, raw: bool = False) -> Tensor:
        """Saliency maps ``(B, H, W)`` in [0, 1] for ``images`` ``(B, 3, H, W)`` in [0, 1].

        Args:
            targets: ignored (the masker is class-agnostic); accepted for the Explainer protocol.
            raw: return the pre-sigmoid logits instead (used by the sanity checks).
        """
        was = self.training
        self.eval()
        mask_logits, _ = self(images)
        self.train(was)
        if raw:
            return mask_logits[:, 0]
        return self.net.mask(mask_logits)[:, 0]
