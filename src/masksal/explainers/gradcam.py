"""Grad-CAM: our fast implementation, and a wrapper of the pytorch-grad-cam package as a yardstick."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masksal.classifiers import Classifier
from masksal.explainers.base import ClassifierExplainer, Explanation
from masksal.taps import family_cam_layer


def layer_name(classifier: Classifier, layer: str | nn.Module) -> str:
    """The dotted name (as in ``model.named_modules()``) of ``layer`` inside the classifier's model.

    Args:
        classifier: the wrapped model.
        layer: a dotted name (``"layer4"``, ``"features.28"``) or the submodule itself.

    Raises:
        ValueError: one line naming the layer and the candidate names next to it.
    """
    model = classifier.model
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer and name:
                return name
        raise ValueError(f"Grad-CAM layer: the given {type(layer).__name__} is not a submodule of the "
                         f"classifier; its top-level modules: {_children(model, '')}")
    names = dict(model.named_modules())
    if layer in names and layer:
        return layer
    # The deepest part of the dotted name that exists: its children are the likely candidates.
    parent = ""
    parts = str(layer).split(".")
    for i in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:i]) in names:
            parent = ".".join(parts[:i])
            break
    where = f"modules inside {parent!r}" if parent else "top-level modules"
    raise ValueError(f"Grad-CAM layer {layer!r} is not a module of the classifier; {where}: "
                     f"{_children(names[parent], parent)}")


def default_layer(classifier: Classifier) -> str:
    """The Grad-CAM layer of a known family (:func:`masksal.taps.family_cam_layer`): ``layer4``
    for ResNets, the last block's first normalization for ViTs, the last ``feature_info`` stage.

    Raises:
        ValueError: another model: name the layer.
    """
    layer = family_cam_layer(classifier.model)
    if layer is None:
        raise ValueError("Grad-CAM: no default layer for this model (not a ResNet, ViT or timm model with "
                         f"feature_info): pass layer=...; its top-level modules: {_children(classifier.model, '')}")
    return layer


def _first_tensor(out: Any) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]  # nn.MultiheadAttention: (output, weights)
    return None


def _children(module: nn.Module, prefix: str) -> str:
    names = [f"{prefix}.{n}" if prefix else n for n, _ in module.named_children()]
    return ", ".join(names) if names else "(none)"


class GradCAM(ClassifierExplainer):
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
    layer's output, and the top-1 class and the logits handed back by ``explain_with_logits``
    come from the same forward pass. The result equals ``LayerGradCam(...,
    relu_attributions=True)`` upsampled bilinearly (tested).

    Transformers: the layer's output may be tokens ``(B, N, K)`` or a channels-last map
    ``(B, h, w, K)`` (Swin): activations and gradients are laid on their ``(B, K, h, w)`` grid by
    the classifier's rules (:meth:`~masksal.classifiers.Classifier.as_map`: class and register
    tokens dropped; a ``reshape=`` hook for other layouts), then weighted as above. The default
    layer of a ViT is the last block's first normalization (``blocks.11.norm1`` in timm): the
    last block's own output reaches a class-token head only through the class token, so its
    patch tokens get a zero gradient and Grad-CAM a blank map there.

    Args:
        classifier: the model to explain (a ``Classifier`` or an ``nn.Module`` taking
            ImageNet-normalized images).
        layer: the layer whose output is weighted: a dotted name (``"layer4"`` for ResNets)
            or the submodule itself (``model.layer4``); ``None``: the family's default
            (:func:`default_layer`). Its output must be a map or tokens (see above) and it must
            run once per forward pass.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(num_classes=3)
        >>> cam = GradCAM(model, layer=model.layer4)
        >>> cam
        GradCAM(layer='layer4')
        >>> cam.explain(torch.rand(2, 3, 64, 64), targets=1).shape
        torch.Size([2, 64, 64])
    """

    name = "gradcam"
    TUNING_GRID: ClassVar[dict[str, list[Any]]] = {"layer": ["layer4", "layer3", "layer2"]}
    """Settings :func:`masksal.evaluation.tune` tries: the layer whose activations and gradients make the map."""

    def __init__(self, classifier: Classifier | nn.Module, layer: str | nn.Module | None = None) -> None:
        super().__init__(classifier)
        self.layer = default_layer(self.classifier) if layer is None else layer_name(self.classifier, layer)

    def _maps(self, images: Tensor, targets: Tensor | None) -> Explanation:
        """``(B, H, W)`` maps ``>= 0`` and the logits of the one forward pass."""
        captured: list[Tensor] = []

        def hook(_m: nn.Module, _i: Any, out: Any) -> Any:
            t = _first_tensor(out)
            if t is None or t.dim() not in (3, 4):
                raise ValueError(f"Grad-CAM layer {self.layer!r} must output a (B, K, h, w) tensor (or tokens "
                                 f"(B, N, K), or a channels-last map), got {type(out).__name__}"
                                 + (f" {tuple(t.shape)}" if t is not None else ""))
            if captured:
                raise ValueError(f"Grad-CAM layer {self.layer!r} runs more than once per forward pass")
            # Start recording the graph here: nothing below the layer is kept for backward.
            torch.set_grad_enabled(True)
            act = t.detach().requires_grad_()
            captured.append(act)
            # A clone: the layers above may modify their input in place.
            return act.clone() if isinstance(out, Tensor) else type(out)([act.clone(), *out[1:]])

        handle = self.classifier.layer(self.layer).register_forward_hook(hook)
        try:
            with torch.no_grad():  # the hook turns recording on at the layer
                logits = self.classifier(images)
        finally:
            handle.remove()
        if not captured:
            raise ValueError(f"Grad-CAM layer {self.layer!r} did not run in the forward pass")
        act = captured[0]
        t = logits.detach().argmax(dim=1) if targets is None else targets
        with torch.enable_grad():
            score = logits.gather(1, t[:, None]).sum()
        (grad,) = torch.autograd.grad(score, act)
        # Tokens and channels-last maps onto their (B, K, h, w) grid; both tensors the same way.
        size, n = (int(images.shape[-2]), int(images.shape[-1])), int(images.shape[0])
        grad = self.classifier.as_map(self.layer, grad, size, batch=n)
        a = self.classifier.as_map(self.layer, act.detach(), size, batch=n)
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * a).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return Explanation(cam[:, 0], logits.detach())


class PytorchGradCamExplainer(ClassifierExplainer):
    """Grad-CAM from the pytorch-grad-cam package (``pip install grad-cam``), as a speed yardstick.

    Gildenblat and contributors, "PyTorch library for CAM methods", github.com/jacobgil/pytorch-grad-cam
    (2021), implementing Selvaraju et al., ICCV 2017.

    The package back-propagates through the whole network (``loss.backward()``) and returns maps
    min-max normalized per image, ``(B, H, W)`` in [0, 1]; parameter ``.grad`` fields are
    restored afterwards. The logits of its forward pass are handed back by ``explain_with_logits``.

    Token and channels-last layers are handed to the package through its ``reshape_transform``,
    with the classifier's rules (as :class:`GradCAM`).

    Args:
        classifier: the model to explain (a ``Classifier`` or an ``nn.Module``).
        layer: the target layer, a dotted name (``"layer4"`` for ResNets) or the submodule;
            ``None``: the family's default (:func:`default_layer`).

    Raises:
        ImportError: the package is not installed.
    """

    name = "pytorch_grad_cam"
    TUNING_GRID: ClassVar[dict[str, list[Any]]] = {"layer": ["layer4", "layer3", "layer2"]}
    """Settings :func:`masksal.evaluation.tune` tries: the target layer."""
    needs_grad = True

    def __init__(self, classifier: Classifier | nn.Module, layer: str | nn.Module | None = None) -> None:
        try:
            import pytorch_grad_cam  # noqa: F401
        except ImportError:
            raise ImportError("pytorch_grad_cam is not installed: pip install grad-cam "
                              "(or pip install 'masksal[bench]')") from None
        super().__init__(classifier)
        self.layer = default_layer(self.classifier) if layer is None else layer_name(self.classifier, layer)

    def _maps(self, images: Tensor, targets: Tensor | None) -> Explanation:
        from pytorch_grad_cam import GradCAM as PackageGradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        params = list(self.classifier.parameters())
        saved = [p.grad for p in params]
        # None: the package takes the top-1 class of its own forward pass.
        cam_targets = None if targets is None else [ClassifierOutputTarget(int(c)) for c in targets.tolist()]
        size, n = (int(images.shape[-2]), int(images.shape[-1])), int(images.shape[0])

        def reshape(t: Tensor) -> Tensor:
            return self.classifier.as_map(self.layer, t, size, batch=n)

        try:
            with PackageGradCAM(model=self.classifier, target_layers=[self.classifier.layer(self.layer)],
                                reshape_transform=reshape) as cam:
                maps = cam(input_tensor=images, targets=cam_targets)
                logits = cam.outputs.detach()
        finally:
            for p, g in zip(params, saved, strict=True):
                p.grad = g
        return Explanation(torch.from_numpy(maps).to(device=images.device, dtype=torch.float32), logits)
