"""Every registered saliency method through the Explainer base class: inputs, targets, modes, logits.

The same checks run for each name of the registry, the trained masker included (built from a
small checkpoint written here), with few masks / steps / iterations: these tests check the
plumbing a user relies on, not the maps' quality (see test_explainers_toy.py for that).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import Tensor, nn

from masksal.checkpoint import save_checkpoint
from masksal.classifiers import Classifier, create_classifier
from masksal.config import ExperimentConfig
from masksal.explainers import Explainer, available_explainers, create_explainer
from masksal.masker import MaskerConfig, MaskerNet

# Methods for vision transformers only: the same checks on a ViT in test_explainers_rollout.py.
VIT_ONLY = {"rollout", "grad_rollout"}
REGISTERED = [n for n in available_explainers() if n not in VIT_ONLY]

SMALL: dict[str, dict[str, Any]] = {
    "rise": {"n_masks": 40, "batch_size": 32},
    "ig": {"steps": 4, "internal_batch_size": 8},
    "smoothgrad": {"n_samples": 3, "batch_size": 4},
    "meaningful_perturbation": {"iterations": 8},
    "extremal_perturbation": {"iterations": 8, "areas": [0.1, 0.3]},
    "prediction_difference": {"window": 4, "padding": 1, "stride": 4, "samples": 2, "batch_size": 64},
    "fido": {"infill": "mean", "iterations": 3, "samples": 2, "warmup": 1},
}
MODEL_BLIND = {"centre", "random"}
# Classifier forward passes for explain(x, targets) on 2 images with the SMALL settings: RISE 40
# masks, 16 per pass; SmoothGrad 3 samples, 2 per pass; IG 4 steps x 2 images in one pass of 8.
FORWARDS_WITH_TARGETS = {
    "gradcam": 1, "pytorch_grad_cam": 1, "masker": 1, "saliency": 1, "guided_backprop": 1, "ig": 1,
    "smoothgrad": 2, "rise": 3, "meaningful_perturbation": 8, "extremal_perturbation": 8, "centre": 0, "random": 0,
    "prediction_difference": 5, "fido": 3,  # PDA: 1 clean + 64 patched copies in 4 passes; FIDO: 1 per iteration
}
# Methods whose own forward pass, whatever the targets, is on the clean images: its logits are handed back.
CLEAN_FORWARD = {"gradcam", "pytorch_grad_cam", "masker", "saliency", "guided_backprop", "prediction_difference"}
# Methods that take the top-1 class from the forward pass they run anyway.
TOP1_FREE = {"gradcam", "pytorch_grad_cam", "masker", "prediction_difference"}

pytestmark = pytest.mark.usefixtures("one_thread")


def make_classifier(dtype: torch.dtype = torch.float32) -> Classifier:
    torch.manual_seed(0)
    return create_classifier("small_resnet18", 5, width=8).to(dtype)


def images(n: int, dtype: torch.dtype = torch.float32, seed: int = 1, size: int = 32) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.fixture(scope="module")
def masker_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A masker checkpoint of make_classifier() (same weights) with an untrained masker net."""
    clf = make_classifier()
    cfg = ExperimentConfig()
    cfg.data.image_size = 32
    cfg.masker.hidden = 8
    shapes = clf.tap_shapes(32)
    torch.manual_seed(1)
    net = MaskerNet({t: shapes[t][0] for t in clf.taps}, MaskerConfig(hidden=8))
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    path = tmp_path_factory.mktemp("masker") / "m"
    save_checkpoint(path, kind="masker", step=0, cfg=cfg, classifier=clf, masker=net)
    return path


@pytest.fixture(params=REGISTERED)
def factory(request: pytest.FixtureRequest, masker_checkpoint: Path) -> Iterator[Any]:
    """``build(classifier) -> a fresh explainer`` for one registered method (the masker brings its own)."""
    name: str = request.param

    def build(classifier: Classifier | nn.Module | None = None) -> Explainer:
        if name == "masker":
            return create_explainer("masker", checkpoint=masker_checkpoint)
        return create_explainer(name, classifier if classifier is not None else make_classifier(),
                                **SMALL.get(name, {}))

    build.method = name  # type: ignore[attr-defined]
    yield build


def test_every_registered_method_is_covered() -> None:
    assert set(REGISTERED) == set(FORWARDS_WITH_TARGETS)
    assert set(available_explainers()) == set(REGISTERED) | VIT_ONLY
    assert set(SMALL) <= set(REGISTERED)


def test_shapes_and_input_kinds(factory: Any) -> None:
    x = images(2)
    u8 = (x * 255).round().to(torch.uint8)
    maps = factory().explain(x)
    assert isinstance(factory(), Explainer)
    assert maps.shape == (2, 32, 32) and maps.dtype == torch.float32 and maps.device == x.device
    assert torch.isfinite(maps).all()
    one = factory().explain(x[0])  # (3, H, W) -> (H, W)
    assert one.shape == (32, 32)
    torch.testing.assert_close(one, maps[0], rtol=1e-4, atol=1e-5)
    reference = factory().explain(u8.float() / 255)
    torch.testing.assert_close(factory().explain(u8), reference)
    pils = [Image.fromarray(u8[i].permute(1, 2, 0).numpy()) for i in range(2)]
    torch.testing.assert_close(factory().explain(pils), reference)
    single = factory().explain(pils[0])
    assert single.shape == (32, 32)
    torch.testing.assert_close(single, reference[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(factory().explain(u8.permute(0, 2, 3, 1).numpy()), reference)  # (B, H, W, 3)


def test_targets_int_list_tensor(factory: Any) -> None:
    x = images(2)
    as_int = factory().explain(x, 1)
    torch.testing.assert_close(factory().explain(x, [1, 1]), as_int)
    torch.testing.assert_close(factory().explain(x, torch.tensor([1, 1])), as_int)
    explainer = factory()
    other = factory().explain(x, 3)
    if explainer.class_specific:
        assert not torch.allclose(other, as_int), "the map must depend on the class explained"
    else:
        torch.testing.assert_close(other, as_int)
    with pytest.raises(ValueError, match="one class per image"):
        explainer.explain(x, [1, 2, 3])


def test_batch_equals_one_by_one(factory: Any) -> None:
    # float64 keeps ReLU kinks from flipping between batched and single-image arithmetic.
    batched_explainer = factory(make_classifier(torch.float64))
    if factory.method == "masker":
        batched_explainer.double()
    x = images(4, torch.float64)
    targets = torch.tensor([0, 4, 2, 2])
    batched = batched_explainer.explain(x, targets)
    one = factory(make_classifier(torch.float64))  # one explainer, images in order (RandomBaseline's stream)
    if factory.method == "masker":
        one.double()
    singles = torch.stack([one.explain(x[i], int(targets[i])) for i in range(4)])
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-6 * float(singles.abs().max()))


def test_normalized_input_is_a_one_line_error(factory: Any) -> None:
    clf = make_classifier()
    x = (images(2) - clf.mean) / clf.std  # what a torchvision transform pipeline hands over
    assert float(x.min()) < -1.5 and float(x.max()) > 1.5
    with pytest.raises(ValueError, match=r"pixel values in \[0, 1\]") as err:
        factory(clf).explain(x)
    assert "\n" not in str(err.value)


def _modules(explainer: Explainer) -> list[nn.Module]:
    return explainer.modules_to_eval()


@pytest.mark.parametrize("fail", [False, True], ids=["ok", "raises"])
def test_modes_weights_and_grads_left_untouched(factory: Any, fail: bool) -> None:
    explainer = factory()
    clf = explainer.classifier
    assert clf is not None
    for m in _modules(explainer):
        m.train()  # explaining must use eval mode, then give the caller's mode back
    clf.layer("layer1").eval()  # a submodule in its own mode must keep it
    before = {k: v.clone() for m in _modules(explainer) for k, v in m.state_dict().items()}
    stale = torch.full_like(clf.model.fc.weight, 7.0)
    clf.model.fc.weight.grad = stale
    handle = None
    if fail:
        def boom(*_: Any) -> None:
            raise RuntimeError("boom")
        handle = clf.layer("layer2").register_forward_hook(boom)
    try:
        if fail and factory.method not in MODEL_BLIND:
            with pytest.raises(RuntimeError, match="boom"):
                explainer.explain(images(2))
        else:
            explainer.explain(images(2))
    finally:
        if handle is not None:
            handle.remove()
    after = {k: v for m in _modules(explainer) for k, v in m.state_dict().items()}
    for k, v in before.items():  # weights and BatchNorm running statistics
        assert torch.equal(v, after[k]), k
    for m in _modules(explainer):
        for pname, p in m.named_parameters():
            assert p.grad is (stale if p is clf.model.fc.weight else None), pname
    assert all(m.training for m in _modules(explainer))
    assert clf.model.layer2.training and not clf.model.layer1.training
    assert torch.is_grad_enabled()


def test_works_inside_no_grad(factory: Any) -> None:
    # Evaluation loops often run under torch.no_grad(); gradient methods must still work there.
    x, t = images(2), torch.tensor([1, 3])
    expected = factory().explain(x, t)
    with torch.no_grad():
        maps = factory().explain(x, t)
    torch.testing.assert_close(maps, expected)


def test_logits_come_from_the_methods_own_forward(factory: Any) -> None:
    explainer = factory()
    clf = explainer.classifier
    assert clf is not None
    x, t = images(2), torch.tensor([1, 3])
    with torch.no_grad():
        expected = clf.eval()(x)
    calls = [0]
    # on the wrapped model: the masker runs it through forward_with_taps, not the wrapper's __call__
    handle = clf.model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))

    def forwards(fn: Any, *args: Any) -> tuple[int, Any]:
        calls[0] = 0
        out = fn(*args)
        return calls[0], out

    try:
        n_targets, _ = forwards(explainer.explain, x, t)
        n_top1, _ = forwards(explainer.explain, x)
        n_logits_targets, with_t = forwards(explainer.explain_with_logits, x, t)
        n_logits_top1, top1 = forwards(explainer.explain_with_logits, x)
    finally:
        handle.remove()
    name = factory.method
    assert n_targets == FORWARDS_WITH_TARGETS[name]
    assert n_top1 == n_targets + (0 if name in TOP1_FREE or name in MODEL_BLIND else 1)
    # explain_with_logits adds a pass only when the method ran none on the clean images.
    assert n_logits_top1 == n_top1 + (1 if name in MODEL_BLIND else 0)
    assert n_logits_targets == n_targets + (0 if name in CLEAN_FORWARD else 1)
    for out in (with_t, top1):
        assert out.logits is not None and not out.logits.requires_grad
        torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(factory().explain_with_logits(x).maps, factory().explain(x))
    single = explainer.explain_with_logits(x[0], 1)
    assert single.maps.shape == (32, 32) and single.logits is not None and single.logits.shape == (5,)


@pytest.mark.parametrize("name", [n for n in REGISTERED if n != "masker"])  # the masker brings its own model
def test_raw_torchvision_module(name: str) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3)  # random weights, BatchNorm in train mode
    options = dict(SMALL.get(name, {}))
    if name in ("gradcam", "pytorch_grad_cam"):
        options["layer"] = model.layer4
    explainer = create_explainer(name, model, **options)
    x = images(2, size=64)
    out = explainer.explain_with_logits(x, 2)
    assert out.maps.shape == (2, 64, 64) and torch.isfinite(out.maps).all()
    assert model.training  # given back in its own mode
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():  # the wrapper normalizes with ImageNet's statistics, as torchvision expects
        expected = model.eval()((x - mean) / std)
    torch.testing.assert_close(out.logits, expected, rtol=1e-4, atol=1e-5)


def test_repr_shows_class_and_settings(factory: Any) -> None:
    explainer = factory()
    text = repr(explainer)
    assert text.startswith(type(explainer).__name__ + "(") and text.endswith(")")
    assert "\n" not in text
    for key, value in SMALL.get(factory.method, {}).items():
        assert f"{key}={value!r}" in text


def test_rise_repr_and_gradcam_layer_name() -> None:
    clf = make_classifier()
    assert repr(create_explainer("rise", clf)) == "RISE(n_masks=4000, grid_size=7, p=0.5, batch_size=128, seed=0)"
    assert repr(create_explainer("gradcam", clf, layer=clf.model.layer3)) == "GradCAM(layer='layer3')"


def test_baselines_without_a_classifier() -> None:
    x = images(2)
    for name in sorted(MODEL_BLIND):
        explainer = create_explainer(name)
        assert explainer.classifier is None
        out = explainer.explain_with_logits(x)
        assert out.logits is None and out.maps.shape == (2, 32, 32)
        torch.testing.assert_close(out.maps, create_explainer(name, make_classifier()).explain(x))
        assert explainer.explain(np.zeros((32, 32, 3), np.uint8)).shape == (32, 32)


def test_every_setting_is_kept_under_its_name() -> None:
    """Each registered method keeps every constructor argument it was given (after the
    classifier) under the same name, so ``options()`` and the benchmark tables show what ran."""
    clf = make_classifier()
    given = {"ig": {"steps": 3, "baseline": 0.5}, "smoothgrad": {"n_samples": 2, "noise_level": 0.05},
             "rise": {"n_masks": 8, "p": 0.25}, "mp": {"iterations": 2, "blur_sigma": 6.0},
             "ep": {"iterations": 2, "jitter": False}, "pda": {"window": 4, "stride": 2}}
    for name, options in given.items():
        explainer = create_explainer(name, clf, **options)
        kept = explainer.options()
        for key, value in options.items():
            assert kept[key] == value, (name, key)


def test_a_classifier_explainer_refuses_none_and_keeps_its_options() -> None:
    from masksal.explainers import ClassifierExplainer

    class Shift(ClassifierExplainer):
        name = "shift"
        by: int
        scale: float

        def __init__(self, classifier: Any, by: int = 1, scale: float = 2.0) -> None:
            super().__init__(classifier)
            self._keep_options(locals())

        def _maps(self, images: Tensor, targets: Tensor) -> Tensor:
            return images.mean(1).roll(self.by, -1) * self.scale

    with pytest.raises(ValueError, match="Shift needs a classifier"):
        Shift(None)
    shift = Shift(make_classifier(), by=3)
    assert (shift.by, shift.scale) == (3, 2.0) and repr(shift) == "Shift(by=3, scale=2.0)"
    assert shift.explain(images(2)).shape == (2, 32, 32)
