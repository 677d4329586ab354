"""Extremal Perturbation: the fixed-area smooth mask that best preserves the class, per image."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from masksal.classifiers import Classifier
from masksal.explainers._common import at_resolution, gaussian_blur
from masksal.explainers.base import ClassifierExplainer, Explanation


class SmoothMaxMask:
    """The smooth max-convolution mask parameterization of Fong, Patrick & Vedaldi (2019).

    The mask covers a canvas: the image plus a margin of ``round(sigma)`` pixels on each side.
    Parameters ``m_i`` in [0, 1] sit on a grid of pitch ``step`` pixels over the canvas. The mask
    at pixel ``u`` is a smooth maximum (softmax pooling of coldness 20) over the grid points ``i``
    near ``u`` of ``k(|u - c_i| / sigma) * m_i``, with ``c_i`` the centre of cell ``i`` and the
    flat-topped kernel ``k(z) = exp(-2 max(z - 1/2, 0)^2)``; grid points within
    ``1 + ceil(sigma / step)`` cells of the pixel's own cell are pooled. Kernel, radius, margin and
    coldness are those of TorchRay's ``MaskGenerator``; this implementation pools at pixel
    resolution. The margin puts the edge of the grid, where grid points have fewer neighbours and
    the optimization treats them differently, outside the image.

    The kernel weight of neighbour ``k`` at a pixel depends only on the pixel's place in its cell,
    so the weights are one ``(K, step, step)`` table, and the pooling runs a few places of the cell
    at a time over all cells (:class:`_SmoothMaxPool`): small temporaries that stay in cache, and
    an analytic backward pass instead of autograd through every intermediate.

    Args:
        height, width: image size in pixels.
        step: grid pitch in pixels.
        sigma: kernel width in pixels.
        device: where the weights live.
        coldness: temperature of the smooth maximum.
    """

    def __init__(self, height: int, width: int, step: int, sigma: float,
                 device: torch.device | str = "cpu", coldness: float = 20.0) -> None:
        if step < 1 or sigma <= 0:
            raise ValueError("step must be >= 1 and sigma > 0")
        self.image_shape = (height, width)
        self.coldness = coldness
        self.step = step
        self.sigma = sigma
        self.margin = round(sigma)
        self.radius = 1 + math.ceil(sigma / step)
        self.canvas_shape = (height + 2 * self.margin, width + 2 * self.margin)
        self.grid_shape = (math.ceil(self.canvas_shape[0] / step), math.ceil(self.canvas_shape[1] / step))
        # weights[k, i, j]: kernel of neighbour cell k (row-major over the (2r + 1)^2 window, as
        # F.unfold orders it) at the pixel (i, j) of a cell.
        offsets = torch.arange(-self.radius, self.radius + 1, device=device)
        place = torch.arange(step, device=device)
        dist = place[None, :] - (offsets[:, None] * step + (step - 1) / 2)  # (2r + 1, step)
        z = (torch.sqrt(dist[:, None, :, None] ** 2 + dist[None, :, None, :] ** 2) / sigma - 0.5).clamp(min=0)
        self.weights = torch.exp(-2 * z**2).reshape(-1, step, step)  # (K, step, step)

    def __call__(self, params: Tensor) -> Tensor:
        """``(N, 1, *grid_shape)`` parameters in [0, 1] -> ``(N, 1, *canvas_shape)`` masks in [0, 1]."""
        n = params.shape[0]
        side = 2 * self.radius + 1
        (gh, gw), s = self.grid_shape, self.step
        neighbours = F.unfold(params, side, padding=self.radius).reshape(n, side * side, gh, gw)
        pooled = _SmoothMaxPool.apply(neighbours, self.weights, self.coldness)  # (N, s, s, gh, gw)
        mask = pooled.permute(0, 3, 1, 4, 2).reshape(n, 1, gh * s, gw * s)
        return mask[..., :self.canvas_shape[0], :self.canvas_shape[1]].clamp(0, 1)

    def crop(self, masks: Tensor) -> Tensor:
        """The image part ``(..., H, W)`` of canvas masks ``(..., *canvas_shape)``."""
        m, (h, w) = self.margin, self.image_shape
        return masks[..., m:m + h, m:m + w]


class _SmoothMaxPool(torch.autograd.Function):
    """Softmax pooling ``sum_k a_k e^(c a_k) / sum_k e^(c a_k)`` with ``a_k = u_k w_k``, per place.

    ``u``: ``(N, K, gh, gw)`` the K neighbour parameters of every cell; ``w``: ``(K, s, s)`` the
    kernel weights at each place ``(i, j)`` of a cell. Output ``(N, s, s, gh, gw)``: the pooled
    value of pixel ``(i, j)`` of every cell. Written by hand (not autograd through the softmax)
    so that the ``K``-fold temporaries exist a few places at a time (about ``_BLOCK`` numbers);
    the backward pass recomputes them from ``u``: ``d out / d a_k = e_k (1 + c (a_k - out)) /
    sum_j e_j``.
    """

    @staticmethod
    def forward(ctx: Any, u: Tensor, w: Tensor, coldness: float) -> Tensor:
        n, _, gh, gw = u.shape
        s = w.shape[1]
        places = w.reshape(w.shape[0], s * s, 1, 1)
        # Exponents shifted by c * max_k u_k >= c * a_k (weights are at most 1, parameters in
        # [0, 1]): no overflow, the same pooled value.
        shift = (u.amax(dim=1) * coldness)[:, None, None]
        out = u.new_empty(n, s * s, gh, gw)
        norm = u.new_empty(n, s * s, gh, gw)
        uu = u[:, :, None]
        for p in _place_blocks(u, s):
            a = uu * places[:, p]  # (N, K, places, gh, gw)
            e = torch.exp(a * coldness - shift)
            norm[:, p] = e.sum(dim=1)
            out[:, p] = (a * e).sum(dim=1) / norm[:, p]
        ctx.save_for_backward(u, w, out, norm, shift)
        ctx.coldness = coldness
        return out.reshape(n, s, s, gh, gw)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        u, w, out, norm, shift = ctx.saved_tensors
        c = ctx.coldness
        s = w.shape[1]
        places = w.reshape(w.shape[0], s * s, 1, 1)
        grad_u = torch.zeros_like(u)
        scale = grad.reshape(out.shape) / norm
        uu = u[:, :, None]
        for p in _place_blocks(u, s):
            wp = places[:, p]
            a = uu * wp
            e = torch.exp(a * c - shift)
            grad_a = e * ((a - out[:, None, p]) * c + 1) * scale[:, None, p]
            grad_u += (grad_a * wp).sum(dim=2)
        return grad_u, None, None


_BLOCK = 1 << 18  # numbers per temporary of the pooling: small enough to stay in cache


def _place_blocks(u: Tensor, s: int) -> list[slice]:
    """Slices of the ``s * s`` places of a cell, each holding about ``_BLOCK`` pooled terms."""
    per_place = u.numel()  # N * K * gh * gw terms per place
    step = max(1, _BLOCK // max(1, per_place))
    return [slice(p, min(p + step, s * s)) for p in range(0, s * s, step)]


def _smooth_max_mask_reference(generator: SmoothMaxMask, params: Tensor) -> Tensor:
    """The former pixel-resolution implementation of :class:`SmoothMaxMask` (autograd through a
    softmax over a ``(N, K, *canvas_shape)`` tensor), kept as the reference for tests and the
    benchmark. Same arguments and result as ``generator(params)``, to float tolerance."""
    step, r = generator.step, generator.radius
    offsets = torch.arange(-r, r + 1, device=params.device)

    def axis(n: int) -> tuple[Tensor, Tensor]:
        pixels = torch.arange(n, device=params.device)
        home = pixels // step  # grid cell holding each pixel
        centres = (home[None, :] + offsets[:, None]) * step + (step - 1) / 2
        return home, pixels[None, :] - centres  # (n,), (2r+1, n) signed distances

    home_y, dist_y = axis(generator.canvas_shape[0])
    home_x, dist_x = axis(generator.canvas_shape[1])
    dist = torch.sqrt(dist_y[:, None, :, None] ** 2 + dist_x[None, :, None, :] ** 2)
    z = (dist / generator.sigma - 0.5).clamp(min=0)
    weights = torch.exp(-2 * z**2).reshape(-1, *generator.canvas_shape)  # (K, Hc, Wc)
    n, side = params.shape[0], 2 * r + 1
    neighbours = F.unfold(params, side, padding=r).reshape(n, side * side, *generator.grid_shape)
    neighbours = neighbours.index_select(2, home_y).index_select(3, home_x)
    a = neighbours * weights
    mask = (a * torch.softmax(generator.coldness * a, dim=1)).sum(dim=1, keepdim=True)
    return mask.clamp(0, 1)


class ExtremalPerturbation(ClassifierExplainer):
    """Extremal Perturbation (preservation game), optimized for all images of a batch at once.

    Fong, Patrick & Vedaldi, "Understanding Deep Networks via Extremal Perturbations and Smooth
    Masks", ICCV 2019.

    For each image and each target area ``a``, a smooth mask ``M`` (:class:`SmoothMaxMask`)
    maximizes the target logit of the image perturbed by ``M`` (1 = keep, 0 = most blurred; a
    pyramid of ``num_levels`` blurs up to ``max_blur`` interpolated linearly) minus the area
    rank loss ``area_weight * mean((sort(M) - r_a)^2)`` over the mask's canvas, where ``r_a`` is
    1 on the ``a H W`` largest values inside the image and 0 on the others and on the margin
    (which the model never sees: mask there would meet the constraint for free); ``area_weight``
    grows by ``area_weight_growth`` per step. SGD with momentum, parameters projected onto
    [0, 1]; ``jitter`` flips the perturbed images horizontally on every other step (this assumes
    a classifier that is roughly invariant to flips). With several areas the map is the mean of
    their masks.

    Defaults are those of the paper's reference implementation (TorchRay): 800 steps, SGD
    learning rate 0.01, momentum 0.9 (dampening 0.9), area weight 300 growing by 1.0035, 8 blur
    levels up to sigma 20, grid step 7 and kernel sigma 21 at 224 px (pixel sizes scale with the
    image). Differences: the area ``a`` is a fraction of the image and the margin is driven to 0
    (TorchRay ranks the margin with the image, so part of its area can sit outside the image),
    and the blur reflects at the borders.
    Each image's loss depends only on its own masks and SGD is elementwise, so an image's map
    does not depend on its batch.

    Maps are ``(B, H, W)`` float32 in [0, 1] (mean over ``areas`` of the preserving masks). The
    classifier's ``.grad`` fields stay untouched (gradients are taken with ``torch.autograd.grad``).

    Args:
        classifier: the model to explain (a ``Classifier`` or an ``nn.Module``).
        areas: target area fraction, or several (their masks are averaged).
        iterations: optimization steps.
        step: mask grid pitch in pixels (default 7 at 224 px).
        sigma: mask kernel width in pixels (default 21 at 224 px).
        max_blur: largest blur sigma in pixels (default 20 at 224 px).
        num_levels: blur levels, the last being the unblurred image.
        lr: SGD learning rate.
        momentum: SGD momentum (also used as dampening).
        area_weight: initial weight of the area rank loss.
        area_weight_growth: factor applied to ``area_weight`` after every step.
        jitter: flip the perturbed images horizontally on even steps (TorchRay's default, made
            for flip-invariant ImageNet classifiers). Turn it off for a classifier that is not
            invariant to flips, such as the built-in benchmark's digits: there it drives the
            optimization toward a mirrored object half of the time (on 16 test images of the
            demo's classifier, LE 93.8 with it and 68.8 without).

    Example:
        >>> import torch, torchvision
        >>> ep = ExtremalPerturbation(torchvision.models.resnet18(num_classes=3), areas=[0.1, 0.2], iterations=4)
        >>> ep.explain(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 32, 32])
    """

    name = "extremal_perturbation"
    TUNING_GRID: ClassVar[dict[str, list[Any]]] = {"areas": [0.1, 0.2, 0.3], "jitter": [True, False]}
    """Settings :func:`masksal.evaluation.tune` tries: the preserved area (the authors' 0.1 and the
    sizes of larger objects) and the flip jitter (made for flip-invariant classifiers)."""
    needs_grad = True

    areas: list[float]
    iterations: int
    step: int | None
    sigma: float | None
    max_blur: float | None
    num_levels: int
    lr: float
    momentum: float
    area_weight: float
    area_weight_growth: float
    jitter: bool

    def __init__(
        self,
        classifier: Classifier | nn.Module,
        areas: float | Sequence[float] = 0.1,
        iterations: int = 800,
        step: int | None = None,
        sigma: float | None = None,
        max_blur: float | None = None,
        num_levels: int = 8,
        lr: float = 0.01,
        momentum: float = 0.9,
        area_weight: float = 300.0,
        area_weight_growth: float = 1.0035,
        jitter: bool = True,
    ) -> None:
        self.areas = [float(areas)] if isinstance(areas, int | float) else [float(a) for a in areas]
        if not self.areas or not all(0.0 < a <= 1.0 for a in self.areas):
            raise ValueError(f"areas must be fractions in (0, 1], got {areas!r}")
        if iterations < 0 or num_levels < 2:
            raise ValueError("iterations must be >= 0 and num_levels >= 2")
        super().__init__(classifier)
        self._keep_options({k: v for k, v in locals().items() if k != "areas"})  # areas: kept as a list above
        self._generators: dict[tuple[int, int, int, float, torch.device], SmoothMaxMask] = {}

    def mask_generator(self, height: int, width: int, device: torch.device) -> SmoothMaxMask:
        """The :class:`SmoothMaxMask` for this image size (built once, kept)."""
        size = min(height, width)
        step = self.step if self.step is not None else max(1, round(at_resolution(7.0, size)))
        sigma = self.sigma if self.sigma is not None else at_resolution(21.0, size)
        key = (height, width, step, sigma, device)
        if key not in self._generators:
            self._generators[key] = SmoothMaxMask(height, width, step, sigma, device)
        return self._generators[key]

    def _blur_pyramid(self, images: Tensor) -> Tensor:
        """``(B, L, 3, H, W)``: level 0 blurred with ``max_blur``, level ``L - 1`` the image."""
        max_blur = self.max_blur if self.max_blur is not None else at_resolution(20.0, min(images.shape[-2:]))
        levels = [gaussian_blur(images, (1 - i / (self.num_levels - 1)) * max_blur)
                  for i in range(self.num_levels)]
        return torch.stack(levels, dim=1)

    def _perturb(self, pyramid: Tensor, masks: Tensor) -> Tensor:
        """Pyramid ``(B, L, 3, H, W)``, masks ``(B, A, 1, H, W)`` -> ``(B, A, 3, H, W)`` images."""
        b, n_areas = masks.shape[:2]
        levels = pyramid.shape[1]
        position = masks * (levels - 1)
        lower = position.detach().floor().clamp(max=levels - 2)
        frac = position - lower
        index = lower.long()[:, :, :, None].expand(b, n_areas, 1, *pyramid.shape[2:])
        source = pyramid[:, None].expand(b, n_areas, *pyramid.shape[1:])
        y0 = torch.gather(source, 2, index)[:, :, 0]
        y1 = torch.gather(source, 2, index + 1)[:, :, 0]
        return y0 + frac * (y1 - y0)

    def _maps(self, images: Tensor, targets: Tensor | None) -> Explanation:
        b, _, h, w = images.shape
        n_areas = len(self.areas)
        t, logits = self.resolve_targets(images, targets)
        t = t.repeat_interleave(n_areas)
        generator = self.mask_generator(h, w, images.device)
        params = torch.ones(b, n_areas, *generator.grid_shape, device=images.device, requires_grad=True)
        opt = torch.optim.SGD([params], lr=self.lr, momentum=self.momentum, dampening=self.momentum)
        n_canvas = generator.canvas_shape[0] * generator.canvas_shape[1]
        reference = torch.zeros(n_areas, h * w, device=images.device)
        for i, a in enumerate(self.areas):
            reference[i, h * w - round(a * h * w):] = 1
        weight = self.area_weight
        pyramid = self._blur_pyramid(images.detach())
        for it in range(self.iterations):
            masks = generator(params.reshape(b * n_areas, 1, *generator.grid_shape))
            image_masks = generator.crop(masks).reshape(b, n_areas, 1, h, w)
            x = self._perturb(pyramid, image_masks).reshape(-1, 3, h, w)
            if self.jitter and it % 2 == 0:
                x = torch.flip(x, dims=(3,))
            reward = self.classifier(x).gather(1, t[:, None])[:, 0]
            ranked = image_masks.reshape(b, n_areas, h * w).sort(dim=2).values
            margin = masks.square().sum(dim=(1, 2, 3)) - image_masks.square().sum(dim=(2, 3, 4)).reshape(-1)
            area_loss = weight * ((ranked - reference).square().sum(dim=2).reshape(-1) + margin) / n_canvas
            loss = (area_loss - reward).sum()
            # autograd.grad, not backward: the classifier's .grad fields stay untouched.
            (params.grad,) = torch.autograd.grad(loss, [params])
            opt.step()
            with torch.no_grad():
                params.clamp_(0, 1)
            weight *= self.area_weight_growth
        with torch.no_grad():
            masks = generator.crop(generator(params.reshape(b * n_areas, 1, *generator.grid_shape)))
            return Explanation(masks.reshape(b, n_areas, h, w).mean(dim=1), logits)
