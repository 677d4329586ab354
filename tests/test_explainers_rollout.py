"""Attention rollout and gradient-weighted rollout on tiny random-weight ViTs (timm, torchvision).

The attention matrices are recomputed here from the modules' weights (an independent path), and
the two rules written out with loops over images, in float64.
"""

from __future__ import annotations

from typing import Any

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masksal.classifiers import Classifier
from masksal.explainers import AttentionRollout, GradientRollout, create_explainer
from masksal.explainers.rollout import attention_layers, recorded_attention

pytestmark = pytest.mark.usefixtures("one_thread")

VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=5)


def vit(**kw: Any) -> Classifier:
    torch.manual_seed(0)
    return Classifier(timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**VIT, **kw})).eval()


def deit() -> Classifier:
    torch.manual_seed(0)
    return Classifier(timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, **VIT)).eval()


def tv_vit() -> Classifier:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    m = VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=64,
                          num_classes=5)
    nn.init.normal_(m.heads.head.weight, std=0.5)  # torchvision starts the head at zero
    return Classifier(m).eval()


def timm_attention_by_hand(clf: Classifier, x: Tensor) -> list[Tensor]:
    """softmax(q k^T / sqrt(d)) of every block, from the qkv weights and each attention's input."""
    out: list[Tensor] = []

    def pre(m: nn.Module, args: tuple[Tensor, ...]) -> None:
        t = args[0]
        b, n, c = t.shape
        q, k, _ = m.qkv(t).reshape(b, n, 3, m.num_heads, c // m.num_heads).permute(2, 0, 3, 1, 4)
        out.append(torch.softmax(q @ k.transpose(-2, -1) / (c // m.num_heads) ** 0.5, dim=-1).double())

    handles = [blk.attn.register_forward_pre_hook(pre) for blk in clf.model.blocks]
    with torch.no_grad():
        clf(x)
    for h in handles:
        h.remove()
    return out


def upsample(rows: Tensor, side: int, size: int) -> Tensor:
    return F.interpolate(rows.reshape(-1, 1, side, side).float(), size=(size, size), mode="bilinear",
                         align_corners=False)[:, 0]


@pytest.mark.parametrize("kw", [{}, {"reg_tokens": 4}])
def test_rollout_equals_the_rule_written_out(kw: dict) -> None:
    clf = vit(**kw)
    prefix = 1 + kw.get("reg_tokens", 0)
    x = torch.rand(2, 3, 32, 32)
    attns = timm_attention_by_hand(clf, x)
    expected = []
    for i in range(2):
        joint = torch.eye(attns[0].shape[-1], dtype=torch.float64)
        for a in attns:
            joint = (0.5 * a[i].mean(0) + 0.5 * torch.eye(a.shape[-1], dtype=torch.float64)) @ joint
        expected.append(joint[0, prefix:])  # the class token's row over the 16 patches
    ours = AttentionRollout(clf).explain(x)
    torch.testing.assert_close(ours, upsample(torch.stack(expected), 4, 32), rtol=1e-5, atol=1e-7)
    assert ours.shape == (2, 32, 32)


def test_gradient_rollout_equals_the_rule_written_out() -> None:
    clf = vit()
    x, t = torch.rand(2, 3, 32, 32), torch.tensor([1, 4])
    with recorded_attention(clf.model) as attns:
        logits = clf(x)
    grads = torch.autograd.grad(logits[torch.arange(2), t].sum(), attns)
    expected = []
    for i in range(2):
        r = torch.eye(17, dtype=torch.float64)
        for a, g in zip(attns, grads, strict=True):
            abar = (g[i].double() * a[i].double()).clamp(min=0).mean(0)
            r = r + abar @ r
        expected.append(r[0, 1:])
    ours = GradientRollout(clf).explain(x, t)
    torch.testing.assert_close(ours, upsample(torch.stack(expected), 4, 32), rtol=1e-4, atol=1e-7)
    # Class-specific: another class, another map; rollout itself ignores the target.
    assert not torch.allclose(GradientRollout(clf).explain(x, torch.tensor([0, 0])), ours)
    torch.testing.assert_close(AttentionRollout(clf).explain(x, 0), AttentionRollout(clf).explain(x, 3))


def test_recording_leaves_the_model_as_it_was() -> None:
    clf = vit()
    fused = [blk.attn.fused_attn for blk in clf.model.blocks]
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before = clf(x)
        with recorded_attention(clf.model) as attns:
            during = clf(x)
    assert len(attns) == 3 and attns[0].shape == (2, 2, 17, 17)
    torch.testing.assert_close(during, before)  # the explicit path computes the same function
    assert [blk.attn.fused_attn for blk in clf.model.blocks] == fused
    assert not any(m._forward_hooks for m in clf.model.modules())


@pytest.mark.parametrize("batch_first", [True, False])
def test_explicit_multihead_attention_equals_pytorchs(batch_first: bool) -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    x = torch.randn(3, 7, 16) if batch_first else torch.randn(7, 3, 16)
    with torch.no_grad():
        ref_out, ref_w = mha(x, x, x, need_weights=True, average_attn_weights=False)
        with recorded_attention(mha) as attns:
            out, w = mha(x, x, x, need_weights=True, average_attn_weights=False)
        after, _ = mha(x, x, x)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w, ref_w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attns[0], ref_w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(after, ref_out, rtol=1e-5, atol=1e-6)
    assert "forward" not in mha.__dict__  # the module's own forward is back
    with pytest.raises(ValueError, match="unmasked self-attention"), recorded_attention(mha):
        mha(x, x, x, attn_mask=torch.zeros(7, 7))


def test_torchvision_vit_rollout_reads_multihead_attention() -> None:
    clf = tv_vit()
    x = torch.rand(2, 3, 32, 32)
    assert len(attention_layers(clf.model)) == 3
    out = AttentionRollout(clf).explain_with_logits(x)
    with torch.no_grad():
        torch.testing.assert_close(out.logits, clf(x))
    assert out.maps.shape == (2, 32, 32) and bool((out.maps > 0).all())
    g = GradientRollout(clf).explain(x)
    assert g.shape == (2, 32, 32) and g.abs().max() > 0


@pytest.mark.parametrize("make", [vit, deit, tv_vit])
@pytest.mark.parametrize("method", ["rollout", "grad_rollout"])
def test_batch_equals_one_by_one(make: Any, method: str) -> None:
    clf = make()
    x = torch.rand(3, 3, 32, 32)
    e = create_explainer(method, clf)
    out = e.explain_with_logits(x)
    one = torch.stack([e.explain(x[i]) for i in range(3)])
    torch.testing.assert_close(one, out.maps, rtol=1e-4, atol=1e-7)
    assert out.maps.shape == (3, 32, 32) and out.logits is not None and out.logits.shape == (3, 5)


def test_distilled_deit_reads_both_prefix_tokens() -> None:
    clf = deit()
    x = torch.rand(2, 3, 32, 32)
    attns = timm_attention_by_hand(clf, x)
    joint = torch.eye(18, dtype=torch.float64).expand(2, 18, 18)
    for a in attns:
        joint = (0.5 * a.mean(1) + 0.5 * torch.eye(18, dtype=torch.float64)) @ joint
    expected = upsample(joint[:, :2, 2:].mean(1), 4, 32)  # the head averages the class and distillation tokens
    torch.testing.assert_close(AttentionRollout(clf).explain(x), expected, rtol=1e-5, atol=1e-7)


def test_options_and_refusals() -> None:
    clf = vit()
    assert repr(create_explainer("attention_rollout", clf, head_fusion="max")) == "AttentionRollout(head_fusion='max')"
    with pytest.raises(ValueError, match="head_fusion must be one of"):
        AttentionRollout(clf, head_fusion="median")
    with pytest.raises(ValueError, match="needs a vision transformer"):
        GradientRollout(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)))
    torch.manual_seed(0)
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=64, window_size=4,
                             embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), num_classes=5)
    with pytest.raises(ValueError, match="global self-attention over one token sequence"):
        AttentionRollout(swin).explain(torch.rand(1, 3, 64, 64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", [AttentionRollout, GradientRollout])
def test_on_cuda_matches_cpu(cls: Any) -> None:
    clf = vit()
    x = torch.rand(2, 3, 32, 32)
    cpu = cls(clf).explain(x, 1)
    on_gpu = cls(clf.cuda()).explain(x.cuda(), 1)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), cpu, rtol=1e-3, atol=1e-6)


# -- what every registered method guarantees (tests/test_explainers.py), here on a ViT ------------


@pytest.mark.parametrize("method", ["rollout", "grad_rollout"])
def test_inputs_targets_modes_and_logits_as_every_method(method: str) -> None:
    from PIL import Image

    clf = vit()
    x = torch.rand(2, 3, 32, 32)
    u8 = (x * 255).round().to(torch.uint8)
    e = create_explainer(method, clf)
    reference = e.explain(u8.float() / 255)
    torch.testing.assert_close(e.explain(u8), reference)
    torch.testing.assert_close(e.explain([Image.fromarray(u8[i].permute(1, 2, 0).numpy()) for i in range(2)]),
                               reference)
    assert e.explain(x[0]).shape == (32, 32)
    torch.testing.assert_close(e.explain(x, [1, 1]), e.explain(x, 1))
    with pytest.raises(ValueError, match="one class per image"):
        e.explain(x, [1, 2, 3])
    with pytest.raises(ValueError, match=r"pixel values in \[0, 1\]"):
        e.explain((x - 0.5) / 0.1)
    with torch.no_grad():
        torch.testing.assert_close(e.explain(x, 2), create_explainer(method, clf).explain(x, 2))
    # Modes, weights and gradients as they came; one forward pass, whose logits come back.
    clf.train()
    clf.model.blocks[0].eval()
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    calls = [0]
    handle = clf.model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        out = e.explain_with_logits(x)
    finally:
        handle.remove()
    assert calls[0] == 1
    assert clf.training and clf.model.blocks[1].training and not clf.model.blocks[0].training
    assert all(torch.equal(v, clf.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in clf.parameters())
    clf.eval()
    with torch.no_grad():
        torch.testing.assert_close(out.logits, clf(x))
    assert out.logits is not None and not out.logits.requires_grad
    assert torch.is_grad_enabled()
