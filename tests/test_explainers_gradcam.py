"""Grad-CAM: exact against a direct computation, captum and pytorch-grad-cam; no backward below the layer."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam
from torch import Tensor, nn

from masksal.classifiers import Classifier, create_classifier
from masksal.explainers import GradCAM, PytorchGradCamExplainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup() -> tuple[Classifier, Tensor, Tensor]:
    torch.manual_seed(0)
    clf = create_classifier("small_resnet18", 6, width=8).eval()
    x = torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    return clf, x, torch.tensor([0, 5, 2, 2])


def direct_gradcam(clf: Classifier, x: Tensor, targets: Tensor, layer: str) -> Tensor:
    """Grad-CAM written out: activations by a forward hook, gradients by autograd, the paper's formula."""
    store: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _i: Any, out: Tensor) -> None:
        store["a"] = out

    h = clf.layer(layer).register_forward_hook(hook)
    logits = clf(x)
    h.remove()
    a = store["a"]
    (g,) = torch.autograd.grad(logits[torch.arange(len(x)), targets].sum(), a)
    alpha = g.mean(dim=(2, 3), keepdim=True)  # global-average-pooled gradients
    cam = F.relu((alpha * a).sum(dim=1, keepdim=True)).detach()
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_equals_direct_computation(setup: tuple[Classifier, Tensor, Tensor], layer: str) -> None:
    clf, x, t = setup
    ours = GradCAM(clf, layer=layer).explain(x, t)
    expected = direct_gradcam(clf, x, t, layer)
    assert expected.abs().max() > 0
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


def test_equals_captum_layer_gradcam(setup: tuple[Classifier, Tensor, Tensor]) -> None:
    clf, x, t = setup
    attr = LayerGradCam(clf, clf.layer("layer4")).attribute(x, target=t, relu_attributions=True)
    expected = LayerAttribution.interpolate(attr, (48, 48), "bilinear")[:, 0]
    torch.testing.assert_close(GradCAM(clf).explain(x, t), expected.detach(), rtol=1e-5, atol=1e-6)


def test_equals_pytorch_grad_cam_up_to_its_normalization(setup: tuple[Classifier, Tensor, Tensor]) -> None:
    clf, x, t = setup
    ours = GradCAM(clf).explain(x, t)
    lo, hi = ours.amin(dim=(1, 2), keepdim=True), ours.amax(dim=(1, 2), keepdim=True)
    reference = PytorchGradCamExplainer(clf).explain(x, t)
    torch.testing.assert_close((ours - lo) / (hi - lo), reference, rtol=0, atol=1e-5)


def test_top1_default(setup: tuple[Classifier, Tensor, Tensor]) -> None:
    clf, x, _ = setup
    with torch.no_grad():
        top1 = clf(x).argmax(dim=1)
    torch.testing.assert_close(GradCAM(clf).explain(x), GradCAM(clf).explain(x, top1))


def test_no_graph_below_the_layer(setup: tuple[Classifier, Tensor, Tensor]) -> None:
    clf, x, t = setup
    seen: dict[str, bool] = {}

    def record(name: str) -> Any:
        def hook(_m: nn.Module, _i: Any, out: Tensor) -> None:
            seen[name] = out.requires_grad
        return hook

    handles = [clf.layer(n).register_forward_hook(record(n)) for n in ("conv1", "layer1", "layer3", "fc")]
    try:
        GradCAM(clf).explain(x, t)
    finally:
        for h in handles:
            h.remove()
    # Below layer4 nothing is recorded for backward (so nothing there gets a backward pass);
    # above it the head is differentiated; the input never requires grad.
    assert seen == {"conv1": False, "layer1": False, "layer3": False, "fc": True}
    assert not x.requires_grad
    assert torch.is_grad_enabled()


def test_layer_errors(setup: tuple[Classifier, Tensor, Tensor]) -> None:
    clf, x, _ = setup
    with pytest.raises(ValueError, match=r"layer 'layer9' is not a module .* top-level modules: conv1, bn1, "
                                         r"relu, layer1, layer2, layer3, layer4, avgpool, fc$"):
        GradCAM(clf, layer="layer9")
    with pytest.raises(ValueError, match=r"'layer4.7' .* modules inside 'layer4': layer4.0, layer4.1$"):
        GradCAM(clf, layer="layer4.7")
    with pytest.raises(ValueError, match="the given Conv2d is not a submodule of the classifier"):
        GradCAM(clf, layer=nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="more than once"):  # a BasicBlock applies its ReLU twice
        GradCAM(clf, layer="layer1.0.relu").explain(x)
    with pytest.raises(ValueError, match=r"\(B, K, h, w\)"):
        GradCAM(clf, layer="fc").explain(x)
    assert torch.is_grad_enabled() and not clf.training


def test_layer_by_module_or_dotted_name(setup: tuple[Classifier, Tensor, Tensor]) -> None:
    clf, x, t = setup
    by_name = GradCAM(clf, layer="layer3.1").explain(x, t)
    by_module = GradCAM(clf, layer=clf.model.layer3[1])
    assert by_module.layer == "layer3.1"
    torch.testing.assert_close(by_module.explain(x, t), by_name)
    torch.testing.assert_close(by_name, direct_gradcam(clf, x, t, "layer3.1"), rtol=1e-5, atol=1e-6)


def test_raw_module_equals_the_wrapped_one(setup: tuple[Classifier, Tensor, Tensor]) -> None:
    clf, x, t = setup
    # A raw module is wrapped with ImageNet normalization: the same as the Classifier built with it.
    raw = GradCAM(clf.model, layer=clf.model.layer4).explain_with_logits(x, t)
    wrapped = GradCAM(clf).explain_with_logits(x, t)
    torch.testing.assert_close(raw.maps, wrapped.maps)
    torch.testing.assert_close(raw.logits, wrapped.logits)


def test_a_target_out_of_the_classifier_range_is_one_line() -> None:
    """Every explainer checks targets against the classifier's classes (the base class), before
    any model work: not an index error from deep inside the method."""
    import torchvision

    from masksal.explainers import create_explainer

    model = torchvision.models.resnet18(num_classes=3)
    cam = create_explainer("gradcam", model, layer=model.layer4)
    with pytest.raises(ValueError, match=r"targets must be class indices in 0\.\.2, got 7\.\.7"):
        cam.explain(torch.rand(3, 32, 32), targets=7)
    assert cam.explain(torch.rand(3, 32, 32), targets=2).shape == (32, 32)
