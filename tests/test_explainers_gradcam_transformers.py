"""Grad-CAM on transformers: token and channels-last layers, the ViT default layer, exact against
a direct computation with the layout written out by hand. Tiny random-weight models, no downloads."""

from __future__ import annotations

from typing import Any

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masksal.classifiers import Classifier
from masksal.explainers import GradCAM, PytorchGradCamExplainer, create_explainer

pytestmark = pytest.mark.usefixtures("one_thread")

VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=5)
SWIN = dict(img_size=64, window_size=4, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), num_classes=5)


def vit(**kw: Any) -> Classifier:
    torch.manual_seed(0)
    return Classifier(timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**VIT, **kw})).eval()


def swin() -> Classifier:
    torch.manual_seed(0)
    return Classifier(timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, **SWIN)).eval()


def tv_vit() -> Classifier:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    m = VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=64,
                          num_classes=5)
    nn.init.normal_(m.heads.head.weight, std=0.5)  # torchvision starts the head at zero: no gradient at all
    return Classifier(m).eval()


def direct_gradcam(clf: Classifier, x: Tensor, targets: Tensor, layer: str, to_map: Any) -> Tensor:
    """Grad-CAM written out, the layer's output laid on its grid by ``to_map`` (written by hand)."""
    store: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        store["a"] = out if isinstance(out, Tensor) else out[0]

    h = clf.layer(layer).register_forward_hook(hook)
    logits = clf(x)
    h.remove()
    (g,) = torch.autograd.grad(logits[torch.arange(len(x)), targets].sum(), store["a"])
    a, g = to_map(store["a"].detach()), to_map(g)
    cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True))
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def vit_tokens(prefix: int, side: int) -> Any:
    return lambda t: t[:, prefix:].reshape(t.shape[0], side, side, t.shape[-1]).permute(0, 3, 1, 2)


@pytest.mark.parametrize(("kw", "prefix"), [({}, 1), ({"reg_tokens": 4}, 5)])
def test_vit_equals_direct_computation(kw: dict, prefix: int) -> None:
    clf = vit(**kw)
    x, t = torch.rand(3, 3, 32, 32), torch.tensor([0, 4, 2])
    cam = GradCAM(clf)
    assert cam.layer == "blocks.2.norm1"  # the default for a ViT
    ours = cam.explain(x, t)
    expected = direct_gradcam(clf, x, t, "blocks.2.norm1", vit_tokens(prefix, 4))
    assert ours.shape == (3, 32, 32) and expected.abs().amax(dim=(1, 2)).min() > 0
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)
    mid = GradCAM(clf, layer="blocks.1").explain(x, t)
    torch.testing.assert_close(mid, direct_gradcam(clf, x, t, "blocks.1", vit_tokens(prefix, 4)), rtol=1e-5, atol=1e-7)


def test_vit_last_block_output_has_no_gradient_on_patches() -> None:
    # Why the default is norm1 of the last block: after it, the head reads only the class token.
    clf = vit()
    x = torch.rand(2, 3, 32, 32)
    assert GradCAM(clf, layer="blocks.2").explain(x).abs().max() == 0
    assert GradCAM(clf).explain(x).abs().max() > 0


def test_swin_channels_last_equals_direct_computation() -> None:
    clf = swin()
    x, t = torch.rand(2, 3, 64, 64), torch.tensor([1, 3])
    cam = GradCAM(clf)
    assert cam.layer == "layers.3"
    expected = direct_gradcam(clf, x, t, "layers.2", lambda a: a.permute(0, 3, 1, 2))
    torch.testing.assert_close(GradCAM(clf, layer="layers.2").explain(x, t), expected, rtol=1e-5, atol=1e-7)
    assert cam.explain(x, t).shape == (2, 64, 64)


def test_torchvision_vit_through_multihead_attention() -> None:
    clf = tv_vit()
    x, t = torch.rand(2, 3, 32, 32), torch.tensor([0, 3])
    cam = GradCAM(clf)
    assert cam.layer == "encoder.layers.encoder_layer_2.ln_1"
    expected = direct_gradcam(clf, x, t, cam.layer, vit_tokens(1, 4))
    torch.testing.assert_close(cam.explain(x, t), expected, rtol=1e-5, atol=1e-7)
    # The attention module itself returns (output, weights): its output tokens are read.
    attn = "encoder.layers.encoder_layer_1.self_attention"
    torch.testing.assert_close(GradCAM(clf, layer=attn).explain(x, t),
                               direct_gradcam(clf, x, t, attn, vit_tokens(1, 4)), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("make", [vit, swin, tv_vit])
def test_batch_equals_one_by_one_and_logits(make: Any) -> None:
    clf = make()
    size = 64 if make is swin else 32
    x = torch.rand(3, 3, size, size)
    cam = create_explainer("gradcam", clf)
    out = cam.explain_with_logits(x)
    one = torch.stack([cam.explain(x[i]) for i in range(3)])
    torch.testing.assert_close(one, out.maps, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(out.logits, clf(x))


def test_pytorch_grad_cam_reads_tokens_through_our_reshape() -> None:
    pytest.importorskip("pytorch_grad_cam")
    clf = vit()
    x, t = torch.rand(2, 3, 32, 32), torch.tensor([0, 4])
    ours = GradCAM(clf).explain(x, t)
    lo, hi = ours.amin(dim=(1, 2), keepdim=True), ours.amax(dim=(1, 2), keepdim=True)
    reference = PytorchGradCamExplainer(clf).explain(x, t)
    torch.testing.assert_close((ours - lo) / (hi - lo), reference, rtol=0, atol=1e-5)


def test_other_layers_are_refused_with_the_shapes() -> None:
    clf = vit()
    with pytest.raises(ValueError, match=r"\(B, K, h, w\) tensor .* got Tensor \(2, 5\)"):
        GradCAM(clf, layer="head").explain(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="no default layer for this model"):
        GradCAM(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_vit_on_cuda_matches_cpu() -> None:
    clf = vit()
    x, t = torch.rand(2, 3, 32, 32), torch.tensor([0, 4])
    cpu = GradCAM(clf).explain(x, t)
    on_gpu = GradCAM(clf.cuda()).explain(x.cuda(), t)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), cpu, rtol=1e-3, atol=1e-5)
