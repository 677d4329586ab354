"""Input-gradient saliency methods, computed with captum.

Every method here returns a per-pixel map from a ``(B, 3, H, W)`` attribution by taking absolute
values and reducing over the colour channels: ``"abs_max"`` (max over channels, as Simonyan et
al.) or ``"abs_sum"`` (sum over channels).
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from captum import attr as captum_attr
from torch import Tensor

from masksal.classifiers import Classifier
from masksal.explainers._common import check_images, eval_mode, resolve_targets

ChannelReduction = Literal["abs_max", "abs_sum"]


def reduce_channels(attributions: Tensor, reduction: ChannelReduction) -> Tensor:
    """``(B, 3, H, W)`` attributions -> ``(B, H, W)`` float32 map, ``>= 0``."""
    a = attributions.detach().abs()
    if reduction == "abs_max":
        return a.amax(dim=1).float()
    if reduction == "abs_sum":
        return a.sum(dim=1).float()
    raise ValueError(f"unknown channel reduction {reduction!r}: use 'abs_max' or 'abs_sum'")


def _leaf(images: Tensor) -> Tensor:
    # A fresh leaf that already requires grad: captum then leaves the caller's tensor alone.
    return images.detach().requires_grad_()


class VanillaGradients:
    """Gradient of the target logit with respect to the input pixels.

    Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks: Visualising Image
    Classification Models and Saliency Maps", ICLR workshop 2014.

    Args:
        classifier: the model to explain.
        reduction: channel reduction of ``|gradient|`` (the paper's is ``"abs_max"``).
    """

    name = "saliency"

    def __init__(self, classifier: Classifier, reduction: ChannelReduction = "abs_max") -> None:
        self.classifier = classifier
        self.reduction: ChannelReduction = reduction
        reduce_channels(torch.zeros(1, 3, 1, 1), reduction)

    def explain(self, images: Tensor, targets: Tensor | None = None) -> Tensor:
        """``images`` ``(B, 3, H, W)`` in [0, 1], ``targets`` ``(B,)`` or ``None`` (top-1) ->
        ``(B, H, W)`` float32 maps ``>= 0`` on the images' device."""
        check_images(images)
        with eval_mode(self.classifier):
            t = resolve_targets(self.classifier, images, targets)
            grads = captum_attr.Saliency(self.classifier).attribute(_leaf(images), target=t, abs=False)
        return reduce_channels(grads, self.reduction)


class IntegratedGradients:
    """Integrated Gradients from a constant (black by default) baseline image.

    Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017.

    Args:
        classifier: the model to explain.
        steps: number of points on the path (captum's ``n_steps``).
        internal_batch_size: images per forward pass (path points of several images are
            batched together by captum).
        baseline: pixel value in [0, 1] of the constant baseline image.
        method: captum's quadrature rule (``"gausslegendre"``, ``"riemann_trapezoid"``...).
        reduction: channel reduction of ``|attribution|``.
    """

    name = "ig"

    def __init__(
        self,
        classifier: Classifier,
        steps: int = 50,
        internal_batch_size: int = 256,
        baseline: float = 0.0,
        method: str = "gausslegendre",
        reduction: ChannelReduction = "abs_sum",
    ) -> None:
        if steps < 1 or internal_batch_size < 1:
            raise ValueError("steps and internal_batch_size must be >= 1")
        self.classifier = classifier
        self.steps = steps
        self.internal_batch_size = internal_batch_size
        self.baseline = baseline
        self.method = method
        self.reduction: ChannelReduction = reduction
        reduce_channels(torch.zeros(1, 3, 1, 1), reduction)

    def explain(self, images: Tensor, targets: Tensor | None = None) -> Tensor:
        """``images`` ``(B, 3, H, W)`` in [0, 1], ``targets`` ``(B,)`` or ``None`` (top-1) ->
        ``(B, H, W)`` float32 maps ``>= 0`` on the images' device."""
        check_images(images)
        with eval_mode(self.classifier):
            t = resolve_targets(self.classifier, images, targets)
            ig = captum_attr.IntegratedGradients(self.classifier)
            attributions = ig.attribute(_leaf(images), baselines=self.baseline, target=t,
                                        n_steps=self.steps, method=self.method,
                                        internal_batch_size=self.internal_batch_size)
        return reduce_channels(attributions, self.reduction)


class SmoothGrad:
    """SmoothGrad: the input gradient averaged over Gaussian-noised copies of the image.

    Smilkov, Thorat, Kim, Viégas & Wattenberg, "SmoothGrad: removing noise by adding noise",
    ICML workshop 2017.

    The signed gradients (captum's ``Saliency``) are averaged, then reduced over channels. The
    noise samples are drawn once per (image size, seed) from a seeded generator and the same
    samples serve every image: an image's map does not depend on the other images of its batch
    nor on the global random state. (captum's ``NoiseTunnel`` draws per image from the global
    generator, which ties a map to its position in the batch.)

    Args:
        classifier: the model to explain.
        n_samples: number of noisy copies per image (the paper uses 50).
        noise_level: noise standard deviation as a fraction of the [0, 1] pixel range (the
            paper recommends 0.1-0.2).
        batch_size: images per forward pass (at least one noisy copy of each image).
        seed: seed of the noise samples.
        reduction: channel reduction of ``|mean gradient|``.
    """

    name = "smoothgrad"

    def __init__(
        self,
        classifier: Classifier,
        n_samples: int = 50,
        noise_level: float = 0.15,
        batch_size: int = 256,
        seed: int = 0,
        reduction: ChannelReduction = "abs_sum",
    ) -> None:
        if n_samples < 1 or batch_size < 1:
            raise ValueError("n_samples and batch_size must be >= 1")
        self.classifier = classifier
        self.n_samples = n_samples
        self.noise_level = noise_level
        self.batch_size = batch_size
        self.seed = seed
        self.reduction: ChannelReduction = reduction
        reduce_channels(torch.zeros(1, 3, 1, 1), reduction)
        self._noise: dict[tuple[int, int, torch.device], Tensor] = {}

    def noise(self, height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
        """The ``(n_samples, 3, height, width)`` float32 noise samples, drawn once (on the CPU,
        so every device gets the same samples) and kept per device."""
        key = (height, width, torch.device(device))
        if key not in self._noise:
            g = torch.Generator().manual_seed(self.seed)
            eps = torch.randn(self.n_samples, 3, height, width, generator=g) * self.noise_level
            self._noise[key] = eps.to(device)
        return self._noise[key]

    def explain(self, images: Tensor, targets: Tensor | None = None) -> Tensor:
        """``images`` ``(B, 3, H, W)`` in [0, 1], ``targets`` ``(B,)`` or ``None`` (top-1) ->
        ``(B, H, W)`` float32 maps ``>= 0`` on the images' device."""
        check_images(images)
        b = images.shape[0]
        h, w = images.shape[-2:]
        noise = self.noise(h, w, device=images.device).to(images.dtype)
        per_pass = max(1, self.batch_size // b)
        total = torch.zeros_like(images)
        saliency = captum_attr.Saliency(self.classifier)
        with eval_mode(self.classifier):
            t = resolve_targets(self.classifier, images, targets)
            for start in range(0, self.n_samples, per_pass):
                eps = noise[start:start + per_pass]
                k = eps.shape[0]
                noisy = (images.detach()[:, None] + eps[None]).reshape(b * k, *images.shape[1:])
                grads = saliency.attribute(_leaf(noisy), target=t.repeat_interleave(k), abs=False)
                total += grads.reshape(b, k, *images.shape[1:]).sum(dim=1)
        return reduce_channels(total / self.n_samples, self.reduction)


class GuidedBackprop:
    """Guided backpropagation: the input gradient with ReLU backward passes clamped at zero.

    Springenberg, Dosovitskiy, Brox & Riedmiller, "Striving for Simplicity: The All
    Convolutional Net", ICLR workshop 2015.

    captum overrides the backward pass of the model's ``nn.ReLU`` modules (functional ReLUs
    are not seen).

    Args:
        classifier: the model to explain.
        reduction: channel reduction of ``|attribution|``.
    """

    name = "guided_backprop"

    def __init__(self, classifier: Classifier, reduction: ChannelReduction = "abs_sum") -> None:
        self.classifier = classifier
        self.reduction: ChannelReduction = reduction
        reduce_channels(torch.zeros(1, 3, 1, 1), reduction)

    def explain(self, images: Tensor, targets: Tensor | None = None) -> Tensor:
        """``images`` ``(B, 3, H, W)`` in [0, 1], ``targets`` ``(B,)`` or ``None`` (top-1) ->
        ``(B, H, W)`` float32 maps ``>= 0`` on the images' device."""
        check_images(images)
        with eval_mode(self.classifier):
            t = resolve_targets(self.classifier, images, targets)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
                attributions = captum_attr.GuidedBackprop(self.classifier).attribute(_leaf(images), target=t)
        return reduce_channels(attributions, self.reduction)
