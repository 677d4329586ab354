import pytest
import torch

from masksal.classifiers import create_classifier
from masksal.masker import Masker, MaskerConfig, MaskerNet
from masksal.masking import compose, infill


def _masker(arch: str, size: int, **kw) -> Masker:
    clf = create_classifier(arch, 5, **kw).eval()
    shapes = clf.tap_shapes(size)
    return Masker(clf, MaskerNet({t: shapes[t][0] for t in clf.taps})).eval()


@pytest.mark.parametrize("size", [32, 48, 64, 97])
def test_masker_output_shape_and_range_for_sizes(size):
    m = _masker("small_resnet18", size, width=8)
    maps = m.explain(torch.rand(3, 3, size, size))
    assert maps.shape == (3, size, size)
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1


@pytest.mark.parametrize("arch", ["resnet18", "timm:resnet18", "timm:mobilenetv3_small_050"])
def test_masker_works_for_other_backbones(arch):
    m = _masker(arch, 64)
    maps = m.explain(torch.rand(2, 3, 64, 64))
    assert maps.shape == (2, 64, 64)
    assert torch.isfinite(maps).all()


def test_masker_reads_taps_it_is_given():
    clf = create_classifier("small_resnet18", 4, taps=["layer2", "layer3", "layer4"], width=8)
    shapes = clf.tap_shapes(32)
    net = MaskerNet({t: shapes[t][0] for t in clf.taps})
    logits, feats = clf.forward_with_taps(torch.rand(2, 3, 32, 32))
    assert set(feats) == {"layer2", "layer3", "layer4"}
    assert net(feats, (32, 32)).shape == (2, 1, 32, 32)


def test_raw_maps_are_pre_sigmoid():
    m = _masker("small_resnet18", 32, width=8)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(torch.sigmoid(m.mask_logits(x)), m.explain(x), atol=1e-6)


def test_gumbel_mask_is_hard_forward_soft_backward():
    net = MaskerNet({"a": 4}, MaskerConfig(gumbel=True, gumbel_tau=0.1)).train()
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    m = net.mask(logits)
    assert ((m - m.round()).abs() < 1e-5).all()  # hard 0/1 up to float rounding
    m.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    net.eval()
    assert torch.equal(net.mask(logits.detach()), (logits.detach() > 0).float())


def test_masker_does_not_backpropagate_into_classifier_features():
    clf = create_classifier("small_resnet18", 4, width=8)
    shapes = clf.tap_shapes(32)
    net = MaskerNet({t: shapes[t][0] for t in clf.taps})
    _, feats = clf.forward_with_taps(torch.rand(2, 3, 32, 32))
    net(feats, (32, 32)).sum().backward()
    assert all(p.grad is None for p in clf.parameters())


@pytest.mark.parametrize("kind", ["mean", "zero", "image_mean", "blur", "noise"])
def test_compose_keeps_and_removes_the_right_pixels(kind):
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1)
    std = torch.full((1, 3, 1, 1), 0.2)
    g = infill(x, kind, mean, std)
    assert g.shape == x.shape
    m = torch.zeros(2, 1, 32, 32)
    m[..., :16, :] = 1
    x_in, x_out = compose(x, m, g)
    assert torch.equal(x_in[..., :16, :], x[..., :16, :])
    assert torch.equal(x_out[..., 16:, :], x[..., 16:, :])
    assert torch.allclose(x_in[..., 16:, :], g[..., 16:, :])
    assert torch.allclose(x_out[..., :16, :], g[..., :16, :])


def test_mean_infill_is_zero_in_normalized_space():
    x = torch.rand(1, 3, 8, 8)
    clf = create_classifier("small_resnet18", 2, width=8)
    g = infill(x, "mean", clf.mean, clf.std)
    assert torch.allclose(clf.normalize(g), torch.zeros_like(g), atol=1e-6)
