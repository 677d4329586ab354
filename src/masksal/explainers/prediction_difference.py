"""Prediction difference analysis: how much the class evidence drops when a patch is marginalized out."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masksal.classifiers import Classifier
from masksal.explainers._common import at_resolution
from masksal.explainers.base import ClassifierExplainer, Explanation, Images, prepare_images

SAMPLINGS = ("conditional", "marginal")
LAPLACE_COUNT = 100_000
"""Training-set size in the Laplace correction of the probabilities (the authors' value)."""


@dataclass
class PatchGaussian:
    """A Gaussian model of ``l x l`` image patches, one per colour channel (the channels are
    modelled independently, as in the authors' code).

    Attributes:
        mean: ``(3, l * l)`` float64; cov: ``(3, l * l, l * l)`` float64; side: ``l``.
    """

    mean: Tensor
    cov: Tensor
    side: int

    @classmethod
    def fit(cls, images: Tensor, side: int) -> PatchGaussian:
        """Mean and covariance of every ``side x side`` patch (stride 1) of ``images``
        ``(N, 3, H, W)`` in [0, 1], accumulated in float64, a few images at a time."""
        n_dim = side * side
        s1 = torch.zeros(3, n_dim, dtype=torch.float64)
        s2 = torch.zeros(3, n_dim, n_dim, dtype=torch.float64)
        count = 0
        for chunk in images.split(16):
            p = F.unfold(chunk.detach().cpu().double(), side)  # (B, 3 * L, P)
            p = p.reshape(chunk.shape[0], 3, n_dim, -1).permute(1, 2, 0, 3).reshape(3, n_dim, -1)
            s1 += p.sum(dim=2)
            s2 += p @ p.transpose(1, 2)
            count += p.shape[2]
        if count < 2:
            raise ValueError(f"need at least two {side}x{side} patches to fit the patch statistics")
        mean = s1 / count
        cov = (s2 - count * mean[:, :, None] * mean[:, None, :]) / (count - 1)
        return cls(mean, cov, side)


@dataclass
class _Conditionals:
    """Per window offset inside the frame (``(2p + 1) ** 2`` of them): the regression onto the
    frame ``(O, 3, k2, L)`` (zero on the window's own pixels), the constant ``(O, 3, k2)`` and the
    Cholesky factor of the conditional covariance ``(O, 3, k2, k2)``."""

    regression: Tensor
    constant: Tensor
    chol: Tensor


def _conditionals(stats: PatchGaussian, window: int, padding: int, marginal: bool) -> _Conditionals:
    side, k2 = stats.side, window * window
    regs, consts, chols = [], [], []
    eye = torch.eye(k2, dtype=torch.float64)
    for oy in range(2 * padding + 1):
        for ox in range(2 * padding + 1):
            grid = torch.zeros(side, side, dtype=torch.bool)
            grid[oy:oy + window, ox:ox + window] = True
            inner = grid.flatten().nonzero()[:, 0]
            outer = (~grid.flatten()).nonzero()[:, 0]
            c_ii = stats.cov[:, inner][:, :, inner]
            reg = torch.zeros(3, k2, side * side, dtype=torch.float64)
            const = stats.mean[:, inner].clone()
            cond = c_ii
            if not marginal and outer.numel():
                c_oo = stats.cov[:, outer][:, :, outer]
                c_io = stats.cov[:, inner][:, :, outer]
                # ridge: one image's patches (the default fit) give a singular covariance on flat areas
                ridge = 1e-6 + 1e-4 * c_oo.diagonal(dim1=1, dim2=2).mean(dim=1)
                c_oo = c_oo + ridge[:, None, None] * torch.eye(outer.numel(), dtype=torch.float64)
                r = torch.linalg.solve(c_oo, c_io.transpose(1, 2)).transpose(1, 2)  # C_io C_oo^-1
                reg[:, :, outer] = r
                const = const - (r @ stats.mean[:, outer, None])[..., 0]
                cond = c_ii - r @ c_io.transpose(1, 2)
            cond = 0.5 * (cond + cond.transpose(1, 2))
            jitter = 1e-8 + 1e-6 * cond.diagonal(dim1=1, dim2=2).abs().mean(dim=1)
            chol, info = torch.linalg.cholesky_ex(cond + jitter[:, None, None] * eye)
            if bool((info != 0).any()):  # numerically indefinite: clip the eigenvalues instead
                vals, vecs = torch.linalg.eigh(cond)
                chol = vecs * vals.clamp(min=0).sqrt()[:, None, :]
            regs.append(reg)
            consts.append(const)
            chols.append(chol)
    return _Conditionals(torch.stack(regs).float(), torch.stack(consts).float(), torch.stack(chols).float())


def _positions(size: int, window: int, stride: int) -> list[int]:
    """Window starts along one side: every ``stride`` pixels, plus the last so every pixel is covered."""
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def _weight_of_evidence(p: Tensor, num_classes: int) -> Tensor:
    """``log2 odds`` of probabilities after the authors' Laplace correction ``(p N + 1) / (N + K)``."""
    p = (p.double() * LAPLACE_COUNT + 1) / (LAPLACE_COUNT + num_classes)
    return torch.log2(p / (1 - p))


class PredictionDifference(ClassifierExplainer):
    """Prediction difference analysis with multivariate (patch) conditional sampling.

    Zintgraf, Cohen, Adel & Welling, "Visualizing Deep Neural Network Decisions: Prediction
    Difference Analysis", ICLR 2017.

    For every ``window x window`` patch (a sliding window with ``stride``), ``samples`` copies of
    the image get the patch replaced by draws from a Gaussian model of the patch conditioned on
    the surrounding frame of ``padding`` pixels (the frame slides inside the image at the
    borders, as in the authors' code). The patch's relevance is the weight of evidence

        ``WE = log2 odds p(c | x) - log2 odds mean_s p(c | x with patch s)``

    (probabilities Laplace-corrected as the authors do, with a training-set size of 100,000),
    and a pixel's relevance is the mean over the windows that cover it. Positive = evidence for
    the class (larger = more salient); negative = evidence against it.

    The Gaussian is fitted, per colour channel as in the authors' code, on all ``l x l`` patches
    (``l = window + 2 padding``) of the images passed to :meth:`fit` (training images, as the
    authors do); without a call to :meth:`fit`, each explained image's own patches are used, so a
    map depends on its image only, never on the rest of the batch. ``sampling="marginal"`` draws
    the patch from the same Gaussian without conditioning on the frame (cheaper to fit and to
    sample, the same number of forward passes; the paper's weaker baseline).

    Cost: ``1 + samples * n_y * n_x`` classifier forward passes per map, with
    ``n_y = ceil((H - window) / stride) + 1`` window positions per column (``n_x`` likewise):
    38,441 at 64 px with the defaults (window 3, stride 1, 10 samples), batched ``batch_size``
    copies per forward pass.

    Defaults follow the authors' ImageNet experiments (github.com/lmzintgraf/DeepVis-PredDiff):
    window 10 and padding 2 at 224 px (scaled with the image, at least 1 pixel each), overlapping
    windows (stride 1), 10 samples; samples are clipped to [0, 1] (the authors clip to the data's
    range).

    Args:
        classifier: the model to explain.
        window: patch side in pixels (default ``round(10 * H / 224)``).
        stride: step between windows in pixels (at most the window, so every pixel is covered).
        padding: frame width around the patch for conditional sampling (default
            ``round(2 * H / 224)``, at least 1).
        samples: draws per patch.
        sampling: ``"conditional"`` (the paper's method) or ``"marginal"``.
        batch_size: classifier inputs per forward pass.
        seed: seed of the draws (the same for every image).
    """

    name = "prediction_difference"
    # The window decides the scale of evidence a patch can remove (the authors' 10 px at 224 px is
    # 3 px at 64 px, thinner than a digit stroke, so a conditional sample mostly interpolates it
    # back); the frame decides how much context the conditional sampler sees. The stride is left
    # to the spec: the authors' stride 1 costs about 38,000 forward passes per 64 px map, so tune
    # with e.g. ``pda:stride=3`` (every window here is at least 3 px, so each configuration runs).
    # None is the authors' geometry scaled to the image (window 3, padding 1 at 64 px).
    TUNING_GRID: ClassVar[dict[str, list[Any]]] = {"window": [None, 8, 16], "padding": [None, 2]}

    window: int | None
    stride: int
    padding: int | None
    samples: int
    sampling: str
    batch_size: int
    seed: int

    def __init__(
        self,
        classifier: Classifier | nn.Module,
        window: int | None = None,
        stride: int = 1,
        padding: int | None = None,
        samples: int = 10,
        sampling: str = "conditional",
        batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__(classifier)
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if stride < 1 or samples < 1 or batch_size < 1:
            raise ValueError("stride, samples and batch_size must be >= 1")
        if (window is not None and window < 1) or (padding is not None and padding < 0):
            raise ValueError("window must be >= 1 and padding >= 0")
        self._keep_options(locals())
        self.stats: PatchGaussian | None = None
        self._fitted: dict[tuple[int, int], _Conditionals] = {}

    def _geometry(self, h: int, w: int) -> tuple[int, int]:
        size = min(h, w)
        k = self.window if self.window is not None else max(1, round(at_resolution(10, size)))
        p = self.padding if self.padding is not None else max(1, round(at_resolution(2, size)))
        if k + 2 * p > size:
            raise ValueError(f"window {k} with padding {p} needs images of at least {k + 2 * p} px, got {h}x{w}")
        if self.stride > k:
            raise ValueError(f"stride {self.stride} is larger than the window ({k} px): some pixels would be in no "
                             "window; use stride <= window")
        return k, p

    def fit(self, images: Images) -> PredictionDifference:
        """Fit the patch Gaussian on ``images`` (e.g. a few hundred training images, in [0, 1],
        of the size that will be explained) instead of each explained image's own patches.

        Returns:
            ``self``.
        """
        x, _, _ = prepare_images(images, torch.device("cpu"))
        k, p = self._geometry(*x.shape[-2:])
        self.stats = PatchGaussian.fit(x, k + 2 * p)
        self._fitted.clear()
        return self

    def _conditionals_for(self, image: Tensor, k: int, p: int) -> _Conditionals:
        marginal = self.sampling == "marginal"
        if self.stats is None:
            return _conditionals(PatchGaussian.fit(image[None], k + 2 * p), k, p, marginal)
        if self.stats.side != k + 2 * p:
            raise ValueError(f"the patch statistics were fitted for {self.stats.side}-px frames; images of this "
                             f"size need {k + 2 * p}-px frames: call fit() with images of the explained size")
        key = (k, p)
        if key not in self._fitted:
            self._fitted[key] = _conditionals(self.stats, k, p, marginal)
        return self._fitted[key]

    def _maps(self, images: Tensor, targets: Tensor | None) -> Explanation:
        t, logits = self.resolve_targets(images, targets)
        if logits is None:
            logits = self.classifier(images)
        b, _, h, w = images.shape
        k, p = self._geometry(h, w)
        ys, xs = _positions(h, k, self.stride), _positions(w, k, self.stride)
        wy = torch.tensor(ys).repeat_interleave(len(xs))
        wx = torch.tensor(xs).repeat(len(ys))
        side = k + 2 * p
        oy = wy - (wy - p).clamp(0, h - side)  # window offset inside its frame
        ox = wx - (wx - p).clamp(0, w - side)
        offset = oy * (2 * p + 1) + ox
        clean = _weight_of_evidence(logits.softmax(dim=1).gather(1, t[:, None])[:, 0], logits.shape[1])
        maps = torch.zeros(b, h, w, device=images.device)
        per_pass = max(1, self.batch_size // self.samples)
        for i in range(b):
            cond = self._conditionals_for(images[i].cpu(), k, p)
            reg, const, chol = (c.to(images.device, images.dtype) for c in (cond.regression, cond.constant, cond.chol))
            frames = F.unfold(images[i:i + 1], side).reshape(3, side * side, h - side + 1, w - side + 1)
            g = torch.Generator().manual_seed(self.seed)
            evidence = torch.empty(len(wy), dtype=torch.float64, device=images.device)
            for s in range(0, len(wy), per_pass):
                sl = slice(s, s + per_pass)
                evidence[sl] = self._window_evidence(images[i], int(t[i]), wy[sl], wx[sl], offset[sl],
                                                     frames, reg, const, chol, k, p, g)
            relevance = clean[i] - evidence
            grid = torch.zeros(1, 1, h - k + 1, w - k + 1, dtype=torch.float64, device=images.device)
            hits = torch.zeros_like(grid)
            grid[0, 0, wy, wx] = relevance
            hits[0, 0, wy, wx] = 1
            ones = torch.ones(1, 1, k, k, dtype=torch.float64, device=images.device)
            total = F.conv_transpose2d(grid, ones)[0, 0]  # each window adds its relevance to its pixels
            count = F.conv_transpose2d(hits, ones)[0, 0]
            maps[i] = (total / count).float()
        return Explanation(maps, logits)

    def _window_evidence(self, image: Tensor, target: int, wy: Tensor, wx: Tensor, offset: Tensor,
                         frames: Tensor, reg: Tensor, const: Tensor, chol: Tensor, k: int, p: int,
                         g: torch.Generator) -> Tensor:
        """Weight of evidence of the class with each window marginalized: ``(n,)`` float64."""
        dev = image.device
        n, s_count = len(wy), self.samples
        _, h, w = image.shape
        side = k + 2 * p
        fy, fx = (wy - p).clamp(0, h - side), (wx - p).clamp(0, w - side)
        frame = frames[:, :, fy.to(dev), fx.to(dev)].permute(2, 0, 1)  # (n, 3, L)
        mean = const[offset] + (reg[offset] @ frame[..., None])[..., 0]  # (n, 3, k2)
        z = torch.randn(n, s_count, 3, k * k, 1, generator=g).to(dev, image.dtype)
        patches = (mean[:, None] + (chol[offset][:, None] @ z)[..., 0]).clamp(0, 1)  # (n, S, 3, k2)
        copies = image.expand(n * s_count, 3, h, w).clone()
        rows = (wy.to(dev)[:, None] + torch.arange(k, device=dev)).repeat_interleave(s_count, dim=0)
        cols = (wx.to(dev)[:, None] + torch.arange(k, device=dev)).repeat_interleave(s_count, dim=0)
        idx = torch.arange(n * s_count, device=dev)[:, None, None]
        # advanced indices around a slice: the indexed view is (n * S, k, k, 3)
        copies[idx, :, rows[:, :, None], cols[:, None, :]] = patches.reshape(n * s_count, 3, k, k).permute(0, 2, 3, 1)
        probs = self.classifier(copies).softmax(dim=1)
        return _weight_of_evidence(probs[:, target].reshape(n, s_count).mean(dim=1), probs.shape[1])


def forwards_per_map(height: int, width: int, window: int, stride: int, samples: int) -> int:
    """Classifier forward passes per map: ``1 + samples * n_y * n_x`` (see the class docstring)."""
    n_y = math.ceil((height - window) / stride) + 1
    n_x = math.ceil((width - window) / stride) + 1
    return 1 + samples * n_y * n_x
