"""Grad-CAM: our fast implementation, and a wrapper of the pytorch-grad-cam package as a yardstick."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masksal.classifiers import Classifier
from masksal.explainers._common import check_images, eval_mode, resolve_targets


class GradCAM:
    """Grad-CAM on one layer, computed with one forward pass and a backward pass above the layer.

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", ICCV 2017.

    The map is ``ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of the gradient of
    the target logit with respect to channel ``k`` of the layer's output ``A``, upsampled
    bilinearly to the input size.

    Why not captum's ``LayerGradCam`` (which also takes ``torch.autograd.grad`` to the layer
    only): it needs the target class before its forward pass, so explaining the top-1 class
    costs a second forward, and its forward records the autograd graph of every layer below
    the chosen one. Here the layers below run under ``no_grad``, recording starts at the
    layer's output, and the top-1 class comes from the same forward pass. The result equals
    ``LayerGradCam(..., relu_attributions=True)`` upsampled bilinearly (tested).

    Args:
        classifier: the model to explain.
        layer: name of the submodule whose output is weighted (``"layer4"`` for ResNets); its
            output must be a ``(B, K, h, w)`` tensor and it must run once per forward pass.

    Example:
        >>> clf = create_classifier("small_resnet18", 10, width=8)
        >>> GradCAM(clf).explain(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 32, 32])
    """

    name = "gradcam"

    def __init__(self, classifier: Classifier, layer: str = "layer4") -> None:
        self.classifier = classifier
        self.layer = layer
        classifier.layer(layer)  # fail now, with torch's message, if the layer does not exist

    def explain(self, images: Tensor, targets: Tensor | None = None) -> Tensor:
        """Grad-CAM maps.

        Args:
            images: ``(B, 3, H, W)`` float in [0, 1].
            targets: ``(B,)`` int64 classes, or ``None`` for the top-1 class.

        Returns:
            ``(B, H, W)`` float32 maps, ``>= 0``, on the images' device.
        """
        check_images(images)
        captured: list[Tensor] = []

        def hook(_m: nn.Module, _i: Any, out: Any) -> Tensor:
            if not isinstance(out, Tensor) or out.dim() != 4:
                raise ValueError(f"Grad-CAM layer {self.layer!r} must output a (B, K, h, w) tensor")
            if captured:
                raise ValueError(f"Grad-CAM layer {self.layer!r} runs more than once per forward pass")
            # Start recording the graph here: nothing below the layer is kept for backward.
            torch.set_grad_enabled(True)
            act = out.detach().requires_grad_()
            captured.append(act)
            return act.clone()  # the layers above may modify their input in place

        handle = self.classifier.layer(self.layer).register_forward_hook(hook)
        try:
            with eval_mode(self.classifier), torch.no_grad():
                logits = self.classifier(images)
        finally:
            handle.remove()
        if not captured:
            raise ValueError(f"Grad-CAM layer {self.layer!r} did not run in the forward pass")
        act = captured[0]
        if targets is None:
            t = logits.detach().argmax(dim=1)
        else:
            t = resolve_targets(self.classifier, images, targets)
        with torch.enable_grad():  # the caller may be under no_grad
            score = logits.gather(1, t[:, None]).sum()
        (grad,) = torch.autograd.grad(score, act)
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * act.detach()).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return cam[:, 0].float()


class PytorchGradCamExplainer:
    """Grad-CAM from the pytorch-grad-cam package (``pip install grad-cam``), as a speed yardstick.

    Gildenblat and contributors, "PyTorch library for CAM methods", github.com/jacobgil/pytorch-grad-cam
    (2021), implementing Selvaraju et al., ICCV 2017.

    The package back-propagates through the whole network (``loss.backward()``) and returns maps
    min-max normalized per image; parameter ``.grad`` fields are restored afterwards.

    Args:
        classifier: the model to explain.
        layer: name of the target layer (``"layer4"`` for ResNets).
    """

    name = "pytorch_grad_cam"

    def __init__(self, classifier: Classifier, layer: str = "layer4") -> None:
        try:
            import pytorch_grad_cam  # noqa: F401
        except ImportError:
            raise ImportError("pytorch_grad_cam is not installed: pip install grad-cam "
                              "(or pip install 'masksal[bench]')") from None
        self.classifier = classifier
        self.layer = layer
        classifier.layer(layer)

    def explain(self, images: Tensor, targets: Tensor | None = None) -> Tensor:
        """Grad-CAM maps from pytorch-grad-cam.

        Args:
            images: ``(B, 3, H, W)`` float in [0, 1].
            targets: ``(B,)`` int64 classes, or ``None`` for the top-1 class.

        Returns:
            ``(B, H, W)`` float32 maps in [0, 1] (min-max normalized per image), on the images'
            device.
        """
        from pytorch_grad_cam import GradCAM as PackageGradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        check_images(images)
        params = list(self.classifier.parameters())
        saved = [p.grad for p in params]
        try:
            with eval_mode(self.classifier), torch.enable_grad():
                cam_targets = None  # the package takes the top-1 class itself
                if targets is not None:
                    t = resolve_targets(self.classifier, images, targets)
                    cam_targets = [ClassifierOutputTarget(int(c)) for c in t.tolist()]
                with PackageGradCAM(model=self.classifier,
                                    target_layers=[self.classifier.layer(self.layer)]) as cam:
                    maps = cam(input_tensor=images, targets=cam_targets)
        finally:
            for p, g in zip(params, saved, strict=True):
                p.grad = g
        return torch.from_numpy(maps).to(device=images.device, dtype=torch.float32)
