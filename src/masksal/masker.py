"""The masker network and the :class:`Masker` explainer (one forward pass per batch of maps).

The masker reads the classifier's tap activations (detached: it never back-propagates into the
classifier through its inputs) and projects each with a 1x1 convolution to ``hidden`` channels
(BatchNorm, ReLU). Two decoders turn them into one logit per location:

* ``"paper"`` (Phang et al.): upsample every projection to the finest tap's resolution,
  concatenate, one 3x3 convolution;
* ``"fpn"``: a top-down path with lateral connections (as a feature pyramid network): from the
  coarsest tap, upsample, add the next finer tap's projection, smooth with a 3x3 convolution,
  and so on down to the finest tap; then the 3x3 convolution to one logit. Reading fine taps
  (``layer1``, ``layer2``) this way gives masks with edges, not blobs.

The logits are upsampled to the input resolution; an optional refinement (``refine`` channels)
then corrects them with a few convolutions that see the image itself, started at zero so a new
masker begins as the plain one. A sigmoid (or a binary Gumbel-softmax while training, if enabled)
gives the mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masksal.classifiers import Classifier
from masksal.explainers.base import Explainer, Explanation, Images, prepare_images

UPSAMPLES = ("bilinear", "nearest")
DECODERS = ("paper", "fpn")


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
        decoder: ``"paper"`` (concatenate the taps at the finest tap's resolution) or ``"fpn"``
            (top-down path with lateral connections; see the module's docstring).
        refine: channels of the image-conditioned refinement at the input resolution (0: none).
        superpixels: restrict masks to superpixels (Fan et al. 2017's adversarial superpixel
            masker): the logits are averaged within each of about this many SLIC segments of
            the image (0: per-pixel masks; :mod:`masksal.superpixels`).
    """

    hidden: int = 64
    upsample: str = "bilinear"
    gumbel: bool = False
    gumbel_tau: float = 0.1
    decoder: str = "paper"
    refine: int = 0
    superpixels: int = 0

    def __post_init__(self) -> None:
        if self.upsample not in UPSAMPLES:
            raise ValueError(f"masker.upsample must be one of {UPSAMPLES}, got {self.upsample!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"masker.decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.refine < 0 or self.hidden < 1 or self.superpixels < 0:
            raise ValueError("masker.hidden must be >= 1, masker.refine and masker.superpixels >= 0")


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
        if self.cfg.decoder == "fpn":
            self.smooth = nn.ModuleDict({_key(t): _conv_bn_relu(h, h, 3) for t in self.taps})
            self.head = nn.Conv2d(h, 1, 3, padding=1)
        else:
            self.head = nn.Conv2d(h * len(self.taps), 1, 3, padding=1)
        r = self.cfg.refine
        if r:
            last = nn.Conv2d(r, 1, 3, padding=1, bias=False)
            nn.init.zeros_(last.weight)  # a new refinement adds nothing: the masker starts as the plain one
            self.refinement = nn.Sequential(_conv_bn_relu(4, r, 3), _conv_bn_relu(r, r, 3), last)
        if self.cfg.superpixels:
            from masksal.superpixels import Superpixels

            self._superpixels = Superpixels(self.cfg.superpixels)

    def forward(self, feats: Mapping[str, Tensor], size: tuple[int, int], images: Tensor | None = None) -> Tensor:
        """Mask logits ``(B, 1, H, W)`` at ``size = (H, W)`` from ``{tap: (B, C_t, H_t, W_t)}``
        (and, with a refinement, the ``(B, 3, H, W)`` images in [0, 1])."""
        projected = {t: self.project[_key(t)](feats[t].detach()) for t in self.taps}
        if self.cfg.decoder == "fpn":
            logits = self.head(self._top_down(projected))
        else:
            base = max(p.shape[-2:] for p in projected.values())
            parts = [p if p.shape[-2:] == base else F.interpolate(p, size=base, mode="bilinear", align_corners=False)
                     for p in projected.values()]
            logits = self.head(torch.cat(parts, dim=1))
        if self.cfg.upsample == "bilinear":
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        else:
            logits = F.interpolate(logits, size=size, mode="nearest")
        if self.cfg.refine:
            if images is None:
                raise ValueError("this masker refines its masks with the image: pass images to MaskerNet.forward")
            logits = logits + self.refinement(torch.cat([logits, images.to(logits.dtype)], dim=1))
        if self.cfg.superpixels:
            if images is None:
                raise ValueError("this masker works on superpixels: pass images to MaskerNet.forward")
            from masksal.superpixels import superpixel_pool

            logits = superpixel_pool(logits, self._superpixels(images))
        return logits

    def _top_down(self, projected: Mapping[str, Tensor]) -> Tensor:
        """Coarsest tap first; each finer tap adds its projection to the upsampled path."""
        order = sorted(projected, key=lambda t: projected[t].shape[-2] * projected[t].shape[-1])
        x = self.smooth[_key(order[0])](projected[order[0]])
        for t in order[1:]:
            lateral = projected[t]
            x = F.interpolate(x, size=lateral.shape[-2:], mode="bilinear", align_corners=False) + lateral
            x = self.smooth[_key(t)](x)
        return x

    def mask(self, logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Mask in [0, 1] from logits: sigmoid, or a straight-through binary Gumbel-softmax sample
        while training when ``gumbel`` is on (hard 0/1 values forward, soft gradients backward;
        the noise is drawn from ``generator``, on the logits' device)."""
        if not self.cfg.gumbel:
            return torch.sigmoid(logits)
        if not self.training:
            return (logits > 0).to(logits.dtype)
        u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
        u = u.clamp(1e-6, 1 - 1e-6)
        soft = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / self.cfg.gumbel_tau)
        hard = (soft > 0.5).to(soft.dtype)
        return hard + soft - soft.detach()


def _conv_bn_relu(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


def _key(tap: str) -> str:
    # ModuleDict keys may not contain dots; tap names often do ("layer4.1").
    return tap.replace(".", "__")


class Masker(Explainer, nn.Module):
    """A trained masker with its classifier: the explainer of this library.

    One forward pass of the classifier and the masker gives both the classifier's logits and
    the masks (:meth:`classify_and_explain`). The masker is class-agnostic (as in the paper): it
    shows the evidence the classifier uses for its own decision, whatever ``targets`` says.

    Args:
        classifier: the classifier whose taps the masker reads (in CA mode, the copy trained
            alongside the masker: see ``info["mode"]``).
        net: the masker network.
        info: what the checkpoint says about the run (``mode``, ``steps``, the fingerprint of
            the classifier the masker started from...), shown by ``repr`` and the CLI.

    Example:
        >>> masker = load_masker("runs/demo/masker_ca")       # doctest: +SKIP
        >>> logits, maps = masker.classify_and_explain(images)  # doctest: +SKIP
    """

    name = "masker"
    class_specific = False
    classifier: Classifier

    def __init__(self, classifier: Classifier | nn.Module, net: MaskerNet,
                 info: Mapping[str, Any] | None = None) -> None:
        nn.Module.__init__(self)
        Explainer.__init__(self, classifier)
        self.net = net
        self.info: dict[str, Any] = dict(info or {})

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(mask logits (B, 1, H, W), classifier logits (B, C))`` for images in [0, 1]."""
        logits, feats = self.classifier.forward_with_taps(images)
        return self.net(feats, (images.shape[-2], images.shape[-1]), images), logits

    @torch.no_grad()
    def classify_and_explain(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Classify and explain in one forward pass: ``(logits (B, C), maps (B, H, W) in [0, 1])``.

        ``images``: ``(B, 3, H, W)`` float in [0, 1] on the model's device. The cost is one
        classifier forward plus the small masker (see ``benchmarks/bench_masker.py``).
        """
        with self._eval():
            mask_logits, logits = self(images)
            return logits, self.net.mask(mask_logits)[:, 0]

    @torch.no_grad()
    def mask_logits(self, images: Images) -> Tensor:
        """Pre-sigmoid maps ``(B, H, W)`` (the sanity checks compare these: a sigmoid saturates)."""
        x, home, single = prepare_images(images, self.device, dtype=next(self.net.parameters()).dtype)
        with self._eval():
            out = self(x)[0][:, 0].to(home)
        return out[0] if single else out

    def _maps(self, images: Tensor, targets: Tensor | None) -> Explanation:
        mask_logits, logits = self(images)
        return Explanation(self.net.mask(mask_logits)[:, 0], logits)

    def modules_to_eval(self) -> list[nn.Module]:
        return [self.classifier, self.net]

    def save(self, directory: str | Path) -> Path:
        """Write the masker and its classifier as a checkpoint directory (the format of
        ``masksal train``: safetensors weights, JSON and YAML, never code), atomically.

        Reload with :func:`masksal.load_masker` (pass ``model=`` for a classifier built from your
        own module). Returns the directory.
        """
        from masksal.checkpoint import save_checkpoint
        from masksal.config import ExperimentConfig, with_overrides

        cfg = self.info.get("config")
        if not isinstance(cfg, ExperimentConfig):
            size = int(self.info.get("image_size", 224))
            cfg = with_overrides(ExperimentConfig(), {"data.image_size": size, "masker.hidden": self.net.cfg.hidden,
                                                      "masker.upsample": self.net.cfg.upsample,
                                                      "masker.gumbel": self.net.cfg.gumbel,
                                                      "masker.gumbel_tau": self.net.cfg.gumbel_tau})
        run: dict[str, Any] = {k: self.info[k] for k in ("mode", "origin_fingerprint") if k in self.info}
        save_checkpoint(directory, kind="masker", step=int(self.info.get("steps", 0)), cfg=cfg,
                        classifier=self.classifier, masker=self.net, classes=list(self.info.get("classes", [])),
                        run=run)
        return Path(directory)

    def options(self) -> dict[str, Any]:
        return {"taps": list(self.net.taps), **{k: self.info[k] for k in ("mode", "steps", "checkpoint")
                                                if k in self.info}}

    __repr__ = Explainer.__repr__
