"""Input-gradient saliency methods, computed with captum.

Every method here returns a per-pixel map from a ``(B, 3, H, W)`` attribution by taking absolute
values and reducing over the colour channels: ``"abs_max"`` (max over channels, as Simonyan et
al.) or ``"abs_sum"`` (sum over channels). captum is imported when a map is first computed, not
with masksal.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from masksal.classifiers import Classifier
from masksal.explainers.base import ClassifierExplainer, Explanation

ChannelReduction = Literal["abs_max", "abs_sum"]
REDUCTIONS = ("abs_max", "abs_sum")


def reduce_channels(attributions: Tensor, reduction: ChannelReduction) -> Tensor:
    """``(B, 3, H, W)`` attributions -> ``(B, H, W)`` float32 map, ``>= 0``."""
    a = attributions.detach().abs()
    if reduction == "abs_max":
        return a.amax(dim=1).float()
    if reduction == "abs_sum":
        return a.sum(dim=1).float()
    raise ValueError(f"unknown channel reduction {reduction!r}: use 'abs_max' or 'abs_sum'")


class CaptumExplainer(ClassifierExplainer):
    """What the captum-based methods share: the top-1 class, a fresh input leaf, the reduction.

    A subclass implements :meth:`_attribute` (one captum call). ``_maps`` finds the targets
    (the top-1 forward pass when ``targets`` is ``None``, whose logits are handed back), calls
    it on a detached copy of the images that requires grad (captum then leaves the caller's
    tensor alone), and reduces the ``(B, 3, H, W)`` attribution over channels. Gradients
    are taken with ``torch.autograd.grad`` by captum: the model's ``.grad`` fields stay untouched.

    Args:
        classifier: the model to explain (a ``Classifier`` or an ``nn.Module``).
        reduction: channel reduction of ``|attribution|``.
    """

    needs_grad = True
    forward_on_clean_images: ClassVar[bool] = False
    """True when captum's one forward pass is on the clean images (Saliency, GuidedBackprop): its
    logits are then kept for ``explain_with_logits`` instead of running another pass."""

    def __init__(self, classifier: Classifier | nn.Module, reduction: ChannelReduction = "abs_sum") -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown channel reduction {reduction!r}: use 'abs_max' or 'abs_sum'")
        super().__init__(classifier)
        self.reduction: ChannelReduction = reduction

    @abstractmethod
    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """``(B, 3, H, W)`` attributions of ``targets`` ``(B,)`` for ``inputs``, a leaf that
        requires grad."""

    def _maps(self, images: Tensor, targets: Tensor | None) -> Explanation:
        t, logits = self.resolve_targets(images, targets)
        captured: list[Tensor] = []
        handle = None
        if logits is None and self.forward_on_clean_images:
            def keep_first(_m: nn.Module, _i: Any, out: Tensor) -> None:
                if not captured:
                    captured.append(out.detach())
            handle = self.classifier.register_forward_hook(keep_first)
        try:
            attributions = self._attribute(images.detach().requires_grad_(), t)
        finally:
            if handle is not None:
                handle.remove()
        if captured:
            logits = captured[0]
        return Explanation(reduce_channels(attributions, self.reduction), logits)


class VanillaGradients(CaptumExplainer):
    """Gradient of the target logit with respect to the input pixels.

    Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks: Visualising Image
    Classification Models and Saliency Maps", ICLR workshop 2014.

    Args:
        classifier: the model to explain.
        reduction: channel reduction of ``|gradient|`` (the paper's is ``"abs_max"``).

    Example:
        >>> import torch, torchvision
        >>> explainer = VanillaGradients(torchvision.models.resnet18(num_classes=3))
        >>> explainer.explain(torch.rand(3, 32, 32), targets=2).shape
        torch.Size([32, 32])
    """

    name = "saliency"
    TUNING_GRID: ClassVar[dict[str, list[Any]]] = {"reduction": ["abs_max", "abs_sum"]}
    """Settings :func:`masksal.evaluation.tune` tries: how the colour channels are reduced."""
    forward_on_clean_images = True

    def __init__(self, classifier: Classifier | nn.Module, reduction: ChannelReduction = "abs_max") -> None:
        super().__init__(classifier, reduction)

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        from captum.attr import Saliency

        return Saliency(self.classifier).attribute(inputs, target=targets, abs=False)


class IntegratedGradients(CaptumExplainer):
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

    Example:
        >>> import torch, torchvision
        >>> ig = IntegratedGradients(torchvision.models.resnet18(num_classes=3), steps=8)
        >>> ig
        IntegratedGradients(steps=8, internal_batch_size=256, baseline=0.0, method='gausslegendre', reduction='abs_sum')
        >>> ig.explain(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 32, 32])
    """

    name = "ig"
    TUNING_GRID: ClassVar[dict[str, list[Any]]] = {"steps": [20, 50], "baseline": [0.0, 0.5, 1.0]}
    """Settings :func:`masksal.evaluation.tune` tries: path points, and a black, grey or white baseline."""

    steps: int
    internal_batch_size: int
    baseline: float
    method: str

    def __init__(
        self,
        classifier: Classifier | nn.Module,
        steps: int = 50,
        internal_batch_size: int = 256,
        baseline: float = 0.0,
        method: str = "gausslegendre",
        reduction: ChannelReduction = "abs_sum",
    ) -> None:
        if steps < 1 or internal_batch_size < 1:
            raise ValueError("steps and internal_batch_size must be >= 1")
        super().__init__(classifier, reduction)
        self._keep_options(locals())

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        from captum.attr import IntegratedGradients as CaptumIG

        return CaptumIG(self.classifier).attribute(inputs, baselines=self.baseline, target=targets,
                                                    n_steps=self.steps, method=self.method,
                                                    internal_batch_size=self.internal_batch_size)


class SmoothGrad(CaptumExplainer):
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

    Example:
        >>> import torch, torchvision
        >>> sg = SmoothGrad(torchvision.models.resnet18(num_classes=3), n_samples=4)
        >>> sg.explain(torch.rand(2, 3, 32, 32), targets=[0, 2]).shape
        torch.Size([2, 32, 32])
    """

    name = "smoothgrad"
    TUNING_GRID: ClassVar[dict[str, list[Any]]] = {"n_samples": [25, 50], "noise_level": [0.05, 0.15, 0.3]}
    """Settings :func:`masksal.evaluation.tune` tries: samples, and noise below, inside and above the
    paper's recommended 0.1-0.2."""

    n_samples: int
    noise_level: float
    batch_size: int
    seed: int

    def __init__(
        self,
        classifier: Classifier | nn.Module,
        n_samples: int = 50,
        noise_level: float = 0.15,
        batch_size: int = 256,
        seed: int = 0,
        reduction: ChannelReduction = "abs_sum",
    ) -> None:
        if n_samples < 1 or batch_size < 1:
            raise ValueError("n_samples and batch_size must be >= 1")
        super().__init__(classifier, reduction)
        self._keep_options(locals())
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

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """The mean signed gradient over the noisy copies, ``(B, 3, H, W)``."""
        from captum.attr import Saliency

        b, c, h, w = inputs.shape
        noise = self.noise(h, w, device=inputs.device).to(inputs.dtype)
        per_pass = max(1, self.batch_size // b)
        total = torch.zeros_like(inputs)
        saliency = Saliency(self.classifier)
        for start in range(0, self.n_samples, per_pass):
            eps = noise[start:start + per_pass]
            k = eps.shape[0]
            noisy = (inputs.detach()[:, None] + eps[None]).reshape(b * k, c, h, w)
            grads = saliency.attribute(noisy.requires_grad_(), target=targets.repeat_interleave(k), abs=False)
            total += grads.reshape(b, k, c, h, w).sum(dim=1)
        return total / self.n_samples


class GuidedBackprop(CaptumExplainer):
    """Guided backpropagation: the input gradient with ReLU backward passes clamped at zero.

    Springenberg, Dosovitskiy, Brox & Riedmiller, "Striving for Simplicity: The All
    Convolutional Net", ICLR workshop 2015.

    captum overrides the backward pass of the model's ``nn.ReLU`` modules (functional ReLUs
    are not seen).

    Args:
        classifier: the model to explain.
        reduction: channel reduction of ``|attribution|``.

    Example:
        >>> import torch, torchvision
        >>> gbp = GuidedBackprop(torchvision.models.resnet18(num_classes=3))
        >>> gbp.explain(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 32, 32])
    """

    name = "guided_backprop"
    TUNING_GRID: ClassVar[dict[str, list[Any]]] = {"reduction": ["abs_sum", "abs_max"]}
    """Settings :func:`masksal.evaluation.tune` tries: how the colour channels are reduced."""
    forward_on_clean_images = True

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        from captum.attr import GuidedBackprop as CaptumGuidedBackprop

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
            return CaptumGuidedBackprop(self.classifier).attribute(inputs, target=targets)
