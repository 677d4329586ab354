"""Taps on transformers and other backbones: the reshape rules, the family defaults, the masker on them.

Every model here is a tiny random-weight timm / torchvision model built without downloads.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import Tensor, nn

from masksal.checkpoint import load_masker
from masksal.classifiers import Classifier, create_classifier, find_taps
from masksal.data import BenchmarkDataset
from masksal.taps import TokenLayout, family_cam_layer, to_grid, token_grid, token_layout
from masksal.training import fit_masker

pytestmark = pytest.mark.usefixtures("one_thread")

ID = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # no normalization: compare with the model's own calls

VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2)
SWIN = dict(img_size=64, window_size=4, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2))


def tokens_of(grid: Tensor, prefix: int) -> Tensor:
    """``(B, C, h, w)`` -> ``(B, prefix + h*w, C)``: prefix tokens first, patches row by row."""
    b, c = grid.shape[:2]
    return torch.cat([torch.randn(b, prefix, c), grid.flatten(2).transpose(1, 2)], dim=1)


# -- the rules on hand-made tensors ---------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "size", "layout"), [
    (1, (64, 64), TokenLayout(patch_size=(8, 8), num_prefix_tokens=1)),     # ViT: class token
    (5, (64, 64), TokenLayout(patch_size=(8, 8), num_prefix_tokens=5)),     # class + 4 registers
    (2, (64, 64), TokenLayout(patch_size=(8, 8), num_prefix_tokens=2)),     # DeiT: class + distillation
    (0, (64, 64), TokenLayout(patch_size=(8, 8), num_prefix_tokens=1)),     # patch_embed's own output
    (1, (48, 64), TokenLayout(patch_size=(8, 8), num_prefix_tokens=1)),     # not square
    (1, (60, 60), TokenLayout(patch_size=(8, 8), num_prefix_tokens=1, ceil_grid=True)),  # padded patches
    (1, (64, 64), TokenLayout()),                                            # nothing declared: inferred
    (5, (64, 64), TokenLayout()),
    (0, (48, 64), TokenLayout()),
    (5, (48, 64), TokenLayout()),
])
def test_tokens_are_laid_on_their_grid(prefix: int, size: tuple[int, int], layout: TokenLayout) -> None:
    ph = 8
    h, w = -(-size[0] // ph), -(-size[1] // ph)
    grid = torch.randn(2, 6, h, w)
    tokens = tokens_of(grid, prefix)
    assert token_grid(tokens.shape[1], size, layout) == (prefix, h, w)
    out = to_grid(tokens, size, layout)
    assert torch.equal(out, grid)
    assert out.untyped_storage().data_ptr() == tokens.untyped_storage().data_ptr()  # a view, no copy


def test_inference_prefers_a_grid_that_divides_the_image() -> None:
    # 1 class + 4 registers + a 2x2 grid = 9 tokens, also a 3x3 grid with no prefix: 3 does not divide 32.
    assert token_grid(9, (32, 32)) == (5, 2, 2)
    assert token_grid(9, (32, 32), TokenLayout(num_prefix_tokens=5)) == (5, 2, 2)
    assert token_grid(9, (33, 33)) == (0, 3, 3)  # nothing divides exactly: the first approximate fit


def test_channels_last_and_sequence_first() -> None:
    grid = torch.randn(2, 24, 4, 6)  # a 32 x 48 image at stride 8
    assert torch.equal(to_grid(grid, (32, 48)), grid)
    assert torch.equal(to_grid(grid.permute(0, 2, 3, 1), (32, 48)), grid)
    cube = torch.randn(2, 8, 8, 8)  # reads both ways: the model's declared format decides
    assert torch.equal(to_grid(cube, (64, 64)), cube)
    assert torch.equal(to_grid(cube, (64, 64), TokenLayout(channels_last=True)), cube.permute(0, 3, 1, 2))
    seq_first = tokens_of(grid, 1).transpose(0, 1)  # (N, B, C), nn.TransformerEncoderLayer's default
    assert torch.equal(to_grid(seq_first, (32, 48), batch=2), grid)


def test_unreadable_outputs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="cannot tell the patch grid of 3 tokens for a 64x64 image"):
        to_grid(torch.randn(2, 3, 4), (64, 64), TokenLayout(patch_size=(8, 8), num_prefix_tokens=1))
    with pytest.raises(ValueError, match=r"got shape \(2, 10\)"):
        to_grid(torch.randn(2, 10), (64, 64))


# -- real models ----------------------------------------------------------------------------------


def timm_vit(**kw: object) -> nn.Module:
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **{"num_classes": 5, **VIT, **kw}).eval()


def tv_vit(num_classes: int = 5) -> nn.Module:
    """torchvision's ViT class (as vit_b_16), tiny; its head starts at zero: give it weights."""
    from torchvision.models.vision_transformer import VisionTransformer

    m = VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=64,
                          num_classes=num_classes)
    nn.init.normal_(m.heads.head.weight, std=0.5)
    return m.eval()


@pytest.mark.parametrize(("kw", "prefix"), [({}, 1), ({"reg_tokens": 4}, 5), ({"class_token": False,
                                                                              "global_pool": "avg"}, 0)])
def test_vit_taps_equal_timms_own_intermediates(kw: dict, prefix: int) -> None:
    torch.manual_seed(0)
    model = timm_vit(**kw)
    clf = Classifier(model, taps=["blocks.1", "blocks.2"], **ID)
    assert clf.layout == TokenLayout(patch_size=(8, 8), num_prefix_tokens=prefix)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats = clf.forward_with_taps(x)
        ref = model.forward_intermediates(x, indices=[1, 2], norm=False, intermediates_only=True)
        torch.testing.assert_close(logits, model(x))  # the wrapper's channels-last input: float rounding
    for got, want in zip(feats.values(), ref, strict=True):
        assert got.shape == (2, 32, 4, 4)
        torch.testing.assert_close(got, want)


def test_swin_stages_equal_timms_own_intermediates() -> None:
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=5, **SWIN).eval()
    clf = Classifier(model, taps=["layers.2", "layers.3"], **ID)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        _, feats = clf.forward_with_taps(x)
        ref = model.forward_intermediates(x, indices=[2, 3], norm=False, intermediates_only=True)
    for got, want in zip(feats.values(), ref, strict=True):
        torch.testing.assert_close(got, want)
    assert [tuple(f.shape) for f in feats.values()] == [(2, 64, 4, 4), (2, 128, 2, 2)]


def test_torchvision_vit_taps_drop_the_class_token() -> None:
    torch.manual_seed(0)
    model = tv_vit()
    clf = Classifier(model, taps=["encoder.layers.encoder_layer_2"], **ID)
    assert clf.layout == TokenLayout(patch_size=(8, 8), num_prefix_tokens=1)
    seen: list[Tensor] = []
    h = model.encoder.layers[2].register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        _, feats = clf.forward_with_taps(torch.rand(2, 3, 32, 32))
    h.remove()
    want = seen[0][:, 1:].reshape(2, 4, 4, 32).permute(0, 3, 1, 2)  # row-major patches after the class token
    assert torch.equal(feats["encoder.layers.encoder_layer_2"], want)


@pytest.mark.parametrize(("arch", "kw", "taps", "cam"), [
    ("timm:vit_tiny_patch16_224", VIT, ["blocks.1", "blocks.2"], "blocks.2.norm1"),
    ("timm:deit_tiny_distilled_patch16_224", VIT, ["blocks.1", "blocks.2"], "blocks.2.norm1"),
    ("timm:swin_tiny_patch4_window7_224", SWIN, ["layers.2", "layers.3"], "layers.3"),
    ("timm:convnext_atto", {"dims": (8, 16, 24, 32)}, ["stages.2", "stages.3"], "stages.3"),
    ("timm:efficientnet_b0", {}, ["blocks.4", "blocks.6"], "blocks.6"),
    ("vit_b_16", {"image_size": 32}, ["encoder.layers.encoder_layer_10", "encoder.layers.encoder_layer_11"],
     "encoder.layers.encoder_layer_11.ln_1"),
    ("resnet18", {}, ["layer3", "layer4"], "layer4"),
])
def test_family_defaults(arch: str, kw: dict, taps: list[str], cam: str) -> None:
    clf = create_classifier(arch, 5, **kw)
    assert clf.taps == taps
    assert family_cam_layer(clf.model) == cam
    size = 64 if "swin" in arch or "resnet" in arch else 32
    shapes = clf.tap_shapes(size)
    assert all(len(s) == 3 and s[1] >= 1 for s in shapes.values())


def test_find_taps_reads_channels_last_stages() -> None:
    from torchvision.models.swin_transformer import SwinTransformer

    model = SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                            window_size=[2, 2], num_classes=5)
    # Stage 3 (features.5, (B, 4, 4, C) at 64 px) and the last stage after the final norm, permuted.
    assert find_taps(model, 64) == ["features.5", "permute"]
    assert create_classifier("resnet18", 3).taps == ["layer3", "layer4"]


class ChannelsFirstTokens(nn.Module):
    """A toy transformer whose layer emits ``(B, C, N)``: no rule reads it (3 "tokens" of 16
    channels have no grid), a reshape hook does."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 3, 8, stride=8)
        self.mix = nn.Conv1d(3, 3, 1)
        self.fc = nn.Linear(3, 20)  # the benchmark's 20 classes

    def forward(self, x: Tensor) -> Tensor:
        t = self.mix(self.embed(x).flatten(2))  # (B, 3, N)
        return self.fc(t.mean(-1))


def test_reshape_hook_reads_other_layouts_and_survives_a_checkpoint(tmp_path) -> None:
    def reshape(tap: str, out: Tensor, size: tuple[int, int]) -> Tensor | None:
        if out.dim() == 4:
            return None  # the automatic rules (the conv's map)
        return out.reshape(out.shape[0], out.shape[1], size[0] // 8, size[1] // 8)

    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"tap 'mix' \(output \(1, 3, 16\)\).*reshape=fn"):
        Classifier(ChannelsFirstTokens(), taps=["mix"], reshape=lambda t, o, s: None).tap_shapes(32)
    bad = Classifier(ChannelsFirstTokens(), taps=["mix"], reshape=lambda t, o, s: o)
    with pytest.raises(ValueError, match=r"reshape hook returned \(1, 3, 16\) for tap 'mix'"):
        bad.tap_shapes(32)
    clf = Classifier(ChannelsFirstTokens(), taps=["mix", "embed"], reshape=reshape)
    assert clf.tap_shapes(32) == {"mix": (3, 4, 4), "embed": (3, 4, 4)}
    data = BenchmarkDataset("train", n=16, size=32, cache_dir=None)
    masker = fit_masker(clf, data, steps=2, batch_size=8, progress=False, hidden=4)
    x = torch.rand(3, 3, 32, 32)
    maps = masker.explain(x)
    masker.save(tmp_path / "m")
    again = load_masker(tmp_path / "m", model=Classifier(ChannelsFirstTokens(), taps=["mix"], reshape=reshape))
    torch.testing.assert_close(again.explain(x), maps)


def _one_by_one(explain, x: Tensor) -> Tensor:  # noqa: ANN001
    return torch.stack([explain(x[i : i + 1])[0] for i in range(x.shape[0])])


@pytest.mark.parametrize("name", ["vit_registers", "deit", "swin", "tv_vit"])
def test_masker_on_transformers(name: str) -> None:
    torch.manual_seed(0)
    if name == "vit_registers":
        model, size = timm_vit(reg_tokens=2, num_classes=20), 32
    elif name == "deit":
        model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, num_classes=20, **VIT).eval()
        size = 32
    elif name == "swin":
        model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=20, **SWIN).eval()
        size = 64
    else:
        model, size = tv_vit(20), 32
    data = BenchmarkDataset("train", n=16, size=size, cache_dir=None)
    masker = fit_masker(model, data, steps=2, batch_size=8, progress=False, hidden=4)
    x = torch.rand(4, 3, size, size)
    out = masker.explain_with_logits(x)
    assert out.maps.shape == (4, size, size) and out.logits is not None and out.logits.shape == (4, 20)
    assert float(out.maps.min()) >= 0 and float(out.maps.max()) <= 1
    torch.testing.assert_close(_one_by_one(masker.explain, x), out.maps, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(out.logits, masker.classifier(x), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_vit_masker_on_cuda_matches_cpu() -> None:
    torch.manual_seed(0)
    data = BenchmarkDataset("train", n=16, size=32, cache_dir=None)
    masker = fit_masker(timm_vit(reg_tokens=2, num_classes=20), data, steps=2, batch_size=8, progress=False, hidden=4)
    x = torch.rand(4, 3, 32, 32)
    cpu = masker.explain(x)
    masker.classifier.cuda()
    masker.net.cuda()
    on_gpu = masker.explain(x.cuda())
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), cpu, rtol=1e-3, atol=1e-4)


def test_token_layout_of_models() -> None:
    assert token_layout(timm_vit(reg_tokens=4)) == TokenLayout(patch_size=(8, 8), num_prefix_tokens=5)
    # A hybrid ViT takes 2x2 patches of a stride-4 convolutional stem: 8 pixels a token.
    hybrid = timm.create_model("vit_tiny_r_s16_p8_224", pretrained=False, num_classes=5, img_size=32, patch_size=2,
                               embed_dim=32, depth=2, num_heads=2)
    assert token_layout(hybrid) == TokenLayout(patch_size=(8, 8), num_prefix_tokens=1)
    assert Classifier(hybrid, taps=["blocks.1"]).tap_shapes(32) == {"blocks.1": (32, 4, 4)}
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=5, **SWIN)
    assert token_layout(swin).channels_last
    assert token_layout(torchvision.models.resnet18()) == TokenLayout()


def test_tap_shapes_keeps_every_submodule_mode() -> None:
    model = torchvision.models.resnet18(num_classes=20).eval()
    clf = Classifier(model, taps=["layer3", "layer4"])  # a new wrapper is in training mode itself
    assert clf.tap_shapes(32) == {"layer3": (256, 2, 2), "layer4": (512, 1, 1)}
    assert not any(m.training for m in model.modules())  # the dry run left the model as it came
    data = BenchmarkDataset("train", n=16, size=32, cache_dir=None)
    fit_masker(model, data, steps=1, batch_size=8, progress=False, hidden=4)
    assert not any(m.training for m in model.modules())


def test_classifier_training_with_adamw_for_transformers() -> None:
    from masksal.config import ClassifierTrainConfig, build_section
    from masksal.training.classifier import ClassifierTraining
    from masksal.types import collate

    clf = Classifier(timm_vit(num_classes=20))
    cfg = build_section(ClassifierTrainConfig, {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05}, "test")
    training = ClassifierTraining(clf, cfg, total_steps=4, device=torch.device("cpu"))
    assert isinstance(training.opt, torch.optim.AdamW)
    before = clf.model.head.weight.clone()
    data = BenchmarkDataset("train", n=8, size=32, cache_dir=None)
    out = training.step(collate([data[i] for i in range(8)]), 0)
    assert out["loss"] > 0 and not torch.equal(clf.model.head.weight, before)
    with pytest.raises(ValueError, match="expected one of sgd, adamw"):
        build_section(ClassifierTrainConfig, {"optimizer": "adam"}, "test")
